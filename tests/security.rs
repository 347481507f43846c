//! Security: hostile IDs never reach a path, no secret is ever printed or written, read-only
//! and clear-remote stay in their lane (see `remote.rs`), and S3 credentials come from the
//! SDK's default chain when none are given.

use std::path::Path;

use gobuildcache::{ActionId, Config, OutputId};

use crate::fake_gcs::FakeGcs;
use crate::moto::{Moto, REGION};
use crate::robust::{get_raw, good_put, responses};
use crate::util::*;

/// IDs that try to leave the cache dir or have the wrong length, in every form an entry point
/// takes: raw bytes (protocol after base64, C ABI, Go) and hex (the library's text form).
const HOSTILE: &[&[u8]] = &[
    b"",
    b"../../etc/passwd",
    b"a/b",
    b"/etc/passwd",
    b"..\0/..",
    b"\0",
    "ünïcödé/../..".as_bytes(),
    &[b'a'; 31],
    &[b'a'; 33],
    &[b'a'; 64],
];

/// Every file in a cache dir is one of ours: lowercase hex names under the known subdirs.
fn assert_only_cache_files(dir: &Path) {
    for f in files_under(dir) {
        let rel = f.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let hex = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(
            hex || !rel.starts_with("v1/a/") && !rel.starts_with("v1/o/"),
            "unexpected file {rel}"
        );
        assert!(!rel.contains(".."), "{rel}");
    }
}

#[test]
fn hostile_ids_are_refused_by_the_library_before_any_path() {
    let t = TestDir::new();
    let dir = t.path("cache");
    let cache = crate::hostile::open_cache(&dir);
    for bad in HOSTILE {
        assert!(ActionId::from_bytes(bad).is_err(), "{bad:?}");
        assert!(OutputId::from_bytes(bad).is_err(), "{bad:?}");
        let s = String::from_utf8_lossy(bad);
        if s.len() != 64 {
            assert!(ActionId::from_hex(&s).is_err(), "{s:?}");
            assert!(OutputId::from_hex(&s).is_err(), "{s:?}");
        }
    }
    for s in [
        "../../../../etc/passwd",
        &format!("{}/..", "a".repeat(61)),
        &"g".repeat(64),
    ] {
        assert!(ActionId::from_hex(s).is_err(), "{s}");
    }
    // 32 bytes that spell a path are a valid ID: they reach the disk only as hex.
    let sneaky = ActionId::from_bytes(b"../../../../../../../etc/passwd\0").unwrap();
    let e = cache.put_bytes(&sneaky, &OutputId::of(b"x"), b"x").unwrap();
    assert!(e.path.starts_with(&dir), "{}", e.path.display());
    assert_eq!(cache.get(&sneaky).unwrap().unwrap().path, e.path);
    assert_only_cache_files(&dir);
    assert_eq!(
        std::fs::read_dir(t.dir.path()).unwrap().count(),
        1,
        "only the cache dir"
    );
}

#[test]
fn hostile_ids_are_refused_at_the_protocol_before_any_path() {
    let t = TestDir::new();
    let dir = t.path("cache");
    let mut input = String::new();
    for (i, bad) in HOSTILE.iter().enumerate() {
        let id = i as i64 * 3 + 1;
        let b = crate::hostile::b64(bad);
        input += &get_raw(id, &format!("\"{b}\""));
        input += &crate::robust::put(
            id + 1,
            bad,
            OutputId::of(b"x").as_bytes(),
            "1",
            Some("eA=="),
        );
        input += &crate::robust::put(id + 2, &[1; 32], bad, "1", Some("eA=="));
    }
    input += "{\"ID\":9999,\"Command\":\"close\"}\n";
    let out = run_helper(
        &["-cache-dir", dir.to_str().unwrap(), "-stats=false"],
        &[],
        input.into_bytes(),
    );
    assert!(out.status.success());
    let r = responses(&out.stdout);
    for i in 0..HOSTILE.len() as i64 * 3 {
        let msg = r[&(i + 1)][0]["Err"]
            .as_str()
            .unwrap_or_else(|| panic!("{:?}", r[&(i + 1)]));
        assert!(msg.contains("must be 32 bytes"), "{msg}");
    }
    assert!(files_under(&dir.join("v1/o")).is_empty());
    assert!(files_under(&dir.join("v1/a")).is_empty());
    assert_only_cache_files(&dir);
}

// Fake credentials, each a distinctive string that must never show up in anything the helper
// writes. None of them is real.
const AKID: &str = "AKIAFAKELEAKCHECK777";
const SECRET: &str = "fakeSecretKey/LeakCheck+0123456789abcdef";
const TOKEN: &str = "FakeSessionTokenLeakCheck0123456789";
const PLAIN_TOKEN: &str = "FakePlainSessionTokenLeakCheck9876";
const URL_PASSWORD: &str = "FakeUrlPasswordLeakCheck";
const URL_SIGNATURE: &str = "FakeSignatureLeakCheck";
const KEY_ID: &str = "fake-gcs-key-id-leakcheck";
const KEY_BODY: &str = "FAKEPRIVATEKEYLEAKCHECK";

fn secrets() -> Vec<&'static str> {
    vec![
        SECRET,
        TOKEN,
        PLAIN_TOKEN,
        URL_PASSWORD,
        URL_SIGNATURE,
        KEY_ID,
        KEY_BODY,
        AKID,
    ]
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The AWS variables with fake secrets, for `endpoint`.
fn aws_env(endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    env(&[
        ("GOBUILDCACHE_BACKEND", "s3"),
        ("GOBUILDCACHE_S3_BUCKET", bucket),
        ("GOBUILDCACHE_AWS_ENDPOINT_URL_S3", endpoint),
        ("GOBUILDCACHE_AWS_S3_USE_PATH_STYLE", "true"),
        ("GOBUILDCACHE_AWS_REGION", REGION),
        ("GOBUILDCACHE_AWS_ACCESS_KEY_ID", AKID),
        ("GOBUILDCACHE_AWS_SECRET_ACCESS_KEY", SECRET),
        ("GOBUILDCACHE_AWS_SESSION_TOKEN", TOKEN),
        ("AWS_SESSION_TOKEN", PLAIN_TOKEN),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ])
}

/// A service-account key file with a fake key; `token_uri` points at a closed local port.
fn gcs_key_file(t: &TestDir, pem_body: &str) -> String {
    let path = t.path(&format!("gcs-key-{}.json", unique()));
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "leak-check",
        "private_key_id": KEY_ID,
        "private_key": format!("-----BEGIN PRIVATE KEY-----\n{pem_body}\n-----END PRIVATE KEY-----\n"),
        "client_email": "leak-check@leak-check.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": format!("http://127.0.0.1:{}/token", free_port()),
    });
    std::fs::write(&path, key.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// A session that puts, misses and gets, so every remote path runs.
fn busy_session() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..4u8 {
        s += &good_put(i as i64 + 1, i, format!("leak check body {i}").as_bytes());
    }
    s += &get_raw(10, &format!("\"{}\"", crate::hostile::b64([42u8; 32])));
    s += &get_raw(11, &format!("\"{}\"", crate::hostile::b64([1u8; 32])));
    s += "{\"ID\":99,\"Command\":\"close\"}\n";
    s.into_bytes()
}

/// Gets of what [`busy_session`] put: remote hits on a fresh local dir.
fn gets_session() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..4u8 {
        s += &get_raw(
            i as i64 + 1,
            &format!("\"{}\"", crate::hostile::b64([i; 32])),
        );
    }
    s += "{\"ID\":99,\"Command\":\"close\"}\n";
    s.into_bytes()
}

/// Runs the helper with `-debug` and `-stats-json` on a fresh cache dir; returns what it
/// wrote (stdout, stderr, the stats file and every file in its cache dir) as one text, and
/// the stats.
fn everything_written(
    t: &TestDir,
    extra_args: &[&str],
    env: &[(String, String)],
    input: Vec<u8>,
) -> (String, gobuildcache::StatsSnapshot) {
    let dir = t.path(&format!("cache-{}", unique()));
    let stats_path = t.path(&format!("stats-{}.json", unique()));
    let mut args = vec![
        "-debug",
        "-cache-dir",
        dir.to_str().unwrap(),
        "-stats-json",
        stats_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra_args);
    let out = run_helper(&args, env, input);
    let mut all = Vec::new();
    all.extend_from_slice(&out.stdout);
    all.extend_from_slice(&out.stderr);
    all.extend(std::fs::read(&stats_path).unwrap_or_default());
    for f in files_under(&dir) {
        all.extend(std::fs::read(&f).unwrap());
        all.extend(f.to_string_lossy().as_bytes());
    }
    let st = std::fs::read_to_string(&stats_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    (String::from_utf8_lossy(&all).into_owned(), st)
}

fn assert_no_secret(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what}: {s} leaked:\n{text}");
    }
    // Not even in part (a secret cut by a truncation, or URL-encoded).
    for s in [&SECRET[..16], "LeakCheck", "leakcheck"] {
        assert!(!text.contains(s), "{what}: {s} leaked:\n{text}");
    }
}

#[test]
fn no_secret_in_logs_stats_or_files() {
    let t = TestDir::new();
    let moto = Moto::start();
    moto.create_bucket("gbc");
    let gcs_env = |key: &str| {
        (
            "GOBUILDCACHE_GOOGLE_APPLICATION_CREDENTIALS".to_string(),
            key.to_string(),
        )
    };

    // S3 that works: uploads, then a fresh dir's remote hits.
    let mut e = aws_env(&moto.endpoint(), "gbc");
    e.push(gcs_env(&gcs_key_file(&t, KEY_BODY)));
    let (text, st) = everything_written(&t, &[], &e, busy_session());
    assert!(st.uploads > 0, "{st:?}\n{text}");
    assert_no_secret("s3 on moto", &text);
    let (text, st) = everything_written(&t, &[], &e, gets_session());
    assert!(st.remote_hits > 0, "{st:?}\n{text}");
    assert_no_secret("s3 remote hits", &text);

    // Refused credentials (moto checking against its empty IAM): service errors.
    let denying = Moto::start_with_auth();
    let (text, st) = everything_written(
        &t,
        &[],
        &aws_env(&denying.endpoint(), "gbc"),
        busy_session(),
    );
    assert!(st.remote_errors > 0, "{st:?}\n{text}");
    assert_no_secret("s3 denied", &text);

    // A stopped server behind an endpoint with a password in it.
    let dead = format!("http://leak:{URL_PASSWORD}@127.0.0.1:{}", free_port());
    let (text, st) = everything_written(&t, &[], &aws_env(&dead, "gbc"), busy_session());
    assert!(st.remote_errors > 0, "{st:?}\n{text}");
    assert!(text.contains("not usable"), "{text}");
    assert_no_secret("s3 stopped", &text);

    // An endpoint with credentials in its query, like a pre-signed URL: refused at start-up.
    let signed = format!(
        "http://127.0.0.1:{}/?X-Amz-Signature={URL_SIGNATURE}&X-Amz-Credential={AKID}",
        free_port()
    );
    let (text, _) = everything_written(&t, &[], &aws_env(&signed, "gbc"), busy_session());
    assert!(text.contains("must not have a query"), "{text}");
    assert_no_secret("s3 pre-signed endpoint", &text);

    // clear-remote prints what it deletes.
    let (text, _) = everything_written(
        &t,
        &["clear-remote"],
        &aws_env(&moto.endpoint(), "gbc"),
        Vec::new(),
    );
    assert!(text.contains("deleted"), "{text}");
    assert_no_secret("clear-remote", &text);

    // GCS with a key file: a malformed key, then a well-formed one (made here, for this test)
    // whose token request fails against a closed port.
    for key in [
        gcs_key_file(&t, KEY_BODY),
        gcs_key_file(&t, &generated_pem_body(&t)),
    ] {
        let e = vec![
            ("GOBUILDCACHE_BACKEND".into(), "gcs".into()),
            ("GOBUILDCACHE_GCS_BUCKET".into(), "gbc".into()),
            ("HOME".into(), t.path("home").to_str().unwrap().into()),
            gcs_env(&key),
        ];
        let (text, st) = everything_written(&t, &[], &e, busy_session());
        assert!(
            st.remote_errors > 0 && text.contains("credentials"),
            "{st:?}\n{text}"
        );
        assert_no_secret("gcs key file", &text);
        let body = std::fs::read_to_string(&key).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let pem = v["private_key"].as_str().unwrap();
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
        {
            assert!(!text.contains(line), "private key material leaked:\n{text}");
        }
    }

    // GCS on the emulator, a key file lying around.
    let gcs = FakeGcs::start();
    gcs.create_bucket("gbc");
    let mut e = gcs.env("gbc");
    e.push(gcs_env(&gcs_key_file(&t, KEY_BODY)));
    e.extend(
        aws_env(&moto.endpoint(), "gbc")
            .into_iter()
            .filter(|(k, _)| k.contains("AWS")),
    );
    let (text, st) = everything_written(&t, &[], &e, busy_session());
    assert!(st.uploads > 0, "{st:?}\n{text}");
    assert_no_secret("gcs on the emulator", &text);
}

/// The body of a fresh RSA key in PKCS#8 PEM, so the GCS client gets as far as signing and
/// sending its token request.
fn generated_pem_body(t: &TestDir) -> String {
    let path = t.path("generated.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output()
        .expect("the GCS key test needs openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&path).unwrap();
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn config_debug_shows_no_secret() {
    let endpoint =
        format!("https://leak:{URL_PASSWORD}@s3.example/?X-Amz-Signature={URL_SIGNATURE}");
    let vars = aws_env(&endpoint, "gbc");
    let c = Config::builder()
        .env(true)
        .build_with_env(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .unwrap();
    assert_eq!(c.aws.secret_access_key.as_ref().unwrap().expose(), SECRET);
    let dbg = format!("{c:?} {c:#?} {:?}", c.aws);
    assert_no_secret("Config Debug", &dbg);
    assert!(dbg.contains("https://s3.example/"), "{dbg}");
}

/// Creates, through moto's IAM in its unchecked window, a bucket and a user allowed to use
/// it; returns the user's keys. boto3 comes with moto.
fn iam_user_keys(moto: &Moto) -> (String, String) {
    let script = r#"
import boto3, json, sys
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1",
          aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
boto3.client("s3", **kw).create_bucket(Bucket="gbc")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="ci")
iam.put_user_policy(UserName="ci", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="ci")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &moto.endpoint()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut w = text.split_whitespace();
    (w.next().unwrap().to_string(), w.next().unwrap().to_string())
}

/// S3 settings without keys: whatever the SDK's default chain finds.
fn chain_env(moto: &Moto, home: &Path) -> Vec<(String, String)> {
    env(&[
        ("GOBUILDCACHE_BACKEND", "s3"),
        ("GOBUILDCACHE_S3_BUCKET", "gbc"),
        ("GOBUILDCACHE_AWS_ENDPOINT_URL_S3", &moto.endpoint()),
        ("GOBUILDCACHE_AWS_S3_USE_PATH_STYLE", "true"),
        ("GOBUILDCACHE_AWS_REGION", REGION),
        ("HOME", home.to_str().unwrap()),
        // No instance metadata probe: nothing beyond 127.0.0.1.
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ])
}

#[test]
fn without_static_keys_the_sdk_chain_reads_the_profile() {
    let t = TestDir::new();
    // Every request is checked against moto's IAM once the bucket and user exist.
    let moto = Moto::start_with_auth_after(4);
    let (akid, secret) = iam_user_keys(&moto);
    let creds = t.path("credentials");
    let profile = |secret: &str| {
        std::fs::write(
            &creds,
            format!("[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[gbc-ci]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
    };
    let mut e = chain_env(&moto, &t.path("home"));
    e.extend(env(&[
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
        ("AWS_CONFIG_FILE", t.path("no-config").to_str().unwrap()),
        ("AWS_PROFILE", "gbc-ci"),
    ]));

    profile(&secret);
    let (text, st) = everything_written(&t, &[], &e, busy_session());
    assert!(
        st.uploads > 0,
        "the profile's keys were accepted: {st:?}\n{text}"
    );
    assert_eq!(st.remote_errors + st.upload_failures, 0, "{st:?}\n{text}");
    assert!(!text.contains(&secret), "{text}");
    let (_, st) = everything_written(&t, &[], &e, gets_session());
    assert_eq!(st.remote_hits, 4, "{st:?}");

    // The same profile with a wrong secret is refused: the profile is what signed.
    profile("wrong-secret");
    let (text, st) = everything_written(&t, &[], &e, busy_session());
    assert_eq!(st.uploads + st.remote_hits, 0, "{st:?}\n{text}");
    assert!(text.contains("not usable"), "{text}");
}

#[test]
fn without_any_credentials_the_build_is_local_only_with_one_warning() {
    let moto = Moto::start();
    moto.create_bucket("gbc");
    let r = crate::remote::Run::new();
    let stats_path = r.t.path("stats.json");
    let mut go = GoEnv::ours(&r.t, &r.module, &r.t.path("local"), &stats_path);
    go.extra_env = chain_env(&moto, &r.t.path("home"));
    go.extra_env.extend(env(&[
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            r.t.path("none").to_str().unwrap(),
        ),
        ("AWS_CONFIG_FILE", r.t.path("none").to_str().unwrap()),
    ]));
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    let warns: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warns.len(), 1, "{err}");
    assert!(
        warns[0].contains("not usable") && warns[0].contains("credentials"),
        "{err}"
    );
    let st = stats(&stats_path);
    assert_eq!(st.remote_hits + st.uploads, 0, "{st:?}");
    assert!(st.puts > 0 && st.misses > 0, "{st:?}");
    assert!(moto.keys("gbc", "").is_empty());
}

// Azure and HTTP credentials: each fake, each distinctive.
const AZURE_SAS_SIG: &str = "FakeAzureSasSigLeakCheck";
const AZURE_CONN_SAS_SIG: &str = "FakeConnStringSigLeakCheck";
const HTTP_TOKEN: &str = "FakeHttpBearerLeakCheck";
const HTTP_PASSWORD: &str = "FakeHttpBasicPasswordLeakCheck";

/// SAS tokens and connection strings (refused by Azurite), a bearer token and a basic-auth
/// password (sent to a WebDAV server, and to one that is gone): none shows in anything the
/// helper writes, even with -debug.
#[test]
fn no_azure_or_http_secret_in_logs_stats_or_files() {
    use crate::azurite::Azurite;
    use crate::webdav::WebDav;
    let t = TestDir::new();
    let az = Azurite::start();
    az.create_container("gbc");
    let check = |what: &str, text: &str| {
        assert_no_secret(what, text);
        for s in [AZURE_SAS_SIG, AZURE_CONN_SAS_SIG, HTTP_TOKEN, HTTP_PASSWORD] {
            assert!(!text.contains(s), "{what}: {s} leaked:\n{text}");
        }
    };
    let sas =
        format!("sv=2021-08-06&ss=b&srt=sco&sp=rwdl&se=2099-01-01T00:00:00Z&sig={AZURE_SAS_SIG}");
    let e = env(&[
        ("GOBUILDCACHE_BACKEND", "azure"),
        ("GOBUILDCACHE_AZURE_CONTAINER", "gbc"),
        (
            "GOBUILDCACHE_AZURE_STORAGE_ENDPOINT",
            &Azurite::endpoint_for(az.port()),
        ),
        ("GOBUILDCACHE_AZURE_STORAGE_SAS_TOKEN", &sas),
    ]);
    let (text, st) = everything_written(&t, &[], &e, busy_session());
    assert!(
        st.remote_errors > 0 || text.contains("not usable"),
        "{st:?}\n{text}"
    );
    check("azure sas token", &text);

    let conn = format!(
        "BlobEndpoint={};SharedAccessSignature=sv=2021-08-06&sp=rwdl&sig={AZURE_CONN_SAS_SIG}",
        Azurite::endpoint_for(az.port())
    );
    let e = env(&[
        ("GOBUILDCACHE_BACKEND", "azure"),
        ("GOBUILDCACHE_AZURE_CONTAINER", "gbc"),
        ("GOBUILDCACHE_AZURE_STORAGE_CONNECTION_STRING", &conn),
    ]);
    let (text, _) = everything_written(&t, &[], &e, busy_session());
    assert!(text.contains("not usable"), "{text}");
    check("azure connection string", &text);

    // Azurite with its (public) development key: works, and prints no key either.
    let (text, st) = everything_written(&t, &[], &az.env("gbc"), busy_session());
    assert!(st.uploads > 0, "{st:?}\n{text}");
    assert!(!text.contains(crate::azurite::KEY), "{text}");
    assert!(!text.contains("AccountKey"), "{text}");

    let dav = WebDav::start();
    for (k, v) in [
        ("GOBUILDCACHE_HTTP_TOKEN", HTTP_TOKEN),
        ("GOBUILDCACHE_HTTP_PASSWORD", HTTP_PASSWORD),
    ] {
        let mut e = dav.env();
        e.push((k.into(), v.into()));
        if k.ends_with("PASSWORD") {
            e.push(("GOBUILDCACHE_HTTP_USERNAME".into(), "ci".into()));
        }
        let (text, st) = everything_written(&t, &[], &e, busy_session());
        assert!(st.uploads + st.uploads_existing > 0, "{st:?}\n{text}");
        check("http credentials", &text);
        let mut dead = WebDav::env_via(free_port());
        dead.extend(
            e.into_iter()
                .filter(|(k, _)| !k.contains("URL") && !k.contains("BACKEND")),
        );
        let (text, _) = everything_written(&t, &[], &dead, busy_session());
        assert!(text.contains("not usable"), "{text}");
        check("http credentials, server gone", &text);
    }
}
