use std::fs::{self, File};
use std::io::Write;
use std::time::{Duration, SystemTime};

use super::*;

fn aid(n: u8) -> ActionId {
    ActionId::from_bytes(&[n; 32]).unwrap()
}

fn put(t: &LocalTier, a: &ActionId, body: &[u8]) -> Entry {
    let mut p = t.begin_put().unwrap();
    p.write_all(body).unwrap();
    p.commit(a, &OutputId::of(body), Some(body.len() as u64))
        .unwrap()
}

fn hit(t: &LocalTier, a: &ActionId) -> Entry {
    match t.get(a).unwrap() {
        Lookup::Hit(e) => e,
        other => panic!("expected a hit, got {other:?}"),
    }
}

fn age(path: &Path, by: Duration) {
    let f = File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

fn temp_files(t: &LocalTier) -> Vec<String> {
    fs::read_dir(t.root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn put_then_get() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    assert!(matches!(t.get(&aid(1)).unwrap(), Lookup::Miss));
    let e = put(&t, &aid(1), b"body one");
    let h = hit(&t, &aid(1));
    assert_eq!(h, e);
    assert!(h.path.is_absolute());
    assert_eq!(fs::read(&h.path).unwrap(), b"body one");
    assert_eq!(h.size, 8);
    assert!(temp_files(&t).is_empty());
    // The empty body is a body like any other.
    let e = put(&t, &aid(2), b"");
    assert_eq!(hit(&t, &aid(2)).size, 0);
    assert_eq!(fs::read(e.path).unwrap(), b"");
}

#[test]
fn identical_outputs_share_one_file() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    let a = put(&t, &aid(1), b"same");
    let b = put(&t, &aid(2), b"same");
    assert_eq!(a.path, b.path);
}

#[test]
fn a_new_body_for_an_existing_action_is_what_is_served() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    let old = put(&t, &aid(1), b"old output");
    let new = put(&t, &aid(1), b"new output");
    assert_ne!(old.path, new.path);
    assert_eq!(fs::read(&new.path).unwrap(), b"new output");
    let h = hit(&t, &aid(1));
    assert_eq!(h.output_id, OutputId::of(b"new output"));
    assert_eq!(fs::read(&h.path).unwrap(), b"new output");
}

#[test]
fn a_body_that_does_not_match_is_not_stored() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    let mut p = t.begin_put().unwrap();
    p.write_all(b"actual").unwrap();
    let err = p
        .commit(&aid(1), &OutputId::of(b"claimed"), Some(6))
        .unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    let mut p = t.begin_put().unwrap();
    p.write_all(b"actual").unwrap();
    let err = p
        .commit(&aid(1), &OutputId::of(b"actual"), Some(7))
        .unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    assert!(matches!(t.get(&aid(1)).unwrap(), Lookup::Miss));
    assert!(!Path::new(&t.body_path(&OutputId::of(b"actual"))).exists());
    assert!(temp_files(&t).is_empty());
    // Abandoned puts leave nothing either.
    let mut p = t.begin_put().unwrap();
    p.write_all(b"half").unwrap();
    drop(p);
    assert!(temp_files(&t).is_empty());
}

#[test]
fn torn_and_damaged_entries_are_misses_and_removed() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    let e = put(&t, &aid(1), b"0123456789");
    // Truncated body (as after a crash without fsync, or tampering).
    fs::write(&e.path, b"01234").unwrap();
    assert!(matches!(t.get(&aid(1)).unwrap(), Lookup::Corrupt(_)));
    assert!(matches!(t.get(&aid(1)).unwrap(), Lookup::Miss));
    assert!(!e.path.exists());

    put(&t, &aid(2), b"abc");
    let rec = t.record_path(&aid(2));
    let mut bytes = fs::read(&rec).unwrap();
    bytes[20] ^= 1;
    fs::write(&rec, &bytes).unwrap();
    assert!(matches!(t.get(&aid(2)).unwrap(), Lookup::Corrupt(_)));
    assert!(!rec.exists());

    put(&t, &aid(3), b"abc");
    fs::write(t.record_path(&aid(3)), b"short").unwrap();
    assert!(matches!(t.get(&aid(3)).unwrap(), Lookup::Corrupt(_)));

    // A record whose body was trimmed is a plain miss.
    let e = put(&t, &aid(4), b"gone");
    fs::remove_file(&e.path).unwrap();
    assert!(matches!(t.get(&aid(4)).unwrap(), Lookup::Miss));
    assert!(!t.record_path(&aid(4)).exists());
}

#[test]
fn contains_neither_touches_nor_removes() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    assert!(!t.contains(&aid(1)));
    let e = put(&t, &aid(1), b"0123456789");
    age(&e.path, GRACE * 2);
    let old = fs::metadata(&e.path).unwrap().modified().unwrap();
    assert!(t.contains(&aid(1)));
    assert_eq!(fs::metadata(&e.path).unwrap().modified().unwrap(), old);

    // A body of the wrong size, a damaged record, a body gone: not here, and left for a
    // get to deal with.
    fs::write(&e.path, b"01234").unwrap();
    assert!(!t.contains(&aid(1)));
    assert!(e.path.exists() && t.record_path(&aid(1)).exists());
    put(&t, &aid(2), b"abc");
    let rec = t.record_path(&aid(2));
    let mut bytes = fs::read(&rec).unwrap();
    bytes[20] ^= 1;
    fs::write(&rec, &bytes).unwrap();
    assert!(!t.contains(&aid(2)));
    assert!(rec.exists());
    let e = put(&t, &aid(3), b"gone");
    fs::remove_file(&e.path).unwrap();
    assert!(!t.contains(&aid(3)));
}

#[test]
fn trim_removes_least_recently_used_first() {
    let d = tempfile::tempdir().unwrap();
    let old = LocalTier::open(d.path(), u64::MAX).unwrap();
    let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 400]).collect();
    let entries: Vec<Entry> = (0..5u8)
        .map(|i| put(&old, &aid(i), &bodies[i as usize]))
        .collect();
    old.close();
    for (i, e) in entries.iter().enumerate() {
        // Body 0 is the least recently used.
        age(
            &e.path,
            2 * GRACE + Duration::from_secs(60 * (10 - i as u64)),
        );
    }
    let t = LocalTier::open(d.path(), 1000).unwrap();
    // Using body 0 makes it the most recently used.
    assert_eq!(hit(&t, &aid(0)).path, entries[0].path);
    let r = t.trim().unwrap();
    assert!(r.ran);
    assert_eq!(r.bytes_before, 2000);
    assert_eq!(r.bodies_removed, 3, "{r:?}");
    assert_eq!(r.bytes_after, 800);
    assert_eq!(r.records_removed, 3);
    assert!(entries[0].path.exists());
    for e in &entries[1..4] {
        assert!(!e.path.exists());
    }
    assert!(entries[4].path.exists());
    assert!(matches!(t.get(&aid(2)).unwrap(), Lookup::Miss));
    assert_eq!(hit(&t, &aid(4)).size, 400);
}

#[test]
fn bodies_used_within_the_grace_are_not_touched_again() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    let e = put(&t, &aid(1), b"x");
    age(&e.path, GRACE / 2);
    let before = fs::metadata(&e.path).unwrap().modified().unwrap();
    hit(&t, &aid(1));
    assert_eq!(fs::metadata(&e.path).unwrap().modified().unwrap(), before);
    age(&e.path, GRACE * 2);
    hit(&t, &aid(1));
    let after = fs::metadata(&e.path).unwrap().modified().unwrap();
    assert!(after.elapsed().unwrap() < Duration::from_secs(60));
}

#[test]
fn trim_never_removes_bodies_a_live_process_handed_out() {
    let d = tempfile::tempdir().unwrap();
    let live = LocalTier::open(d.path(), u64::MAX).unwrap();
    let entries: Vec<Entry> = (0..3u8).map(|i| put(&live, &aid(i), &[i; 500])).collect();
    let trimmer = LocalTier::open(d.path(), 100).unwrap();
    let r = trimmer.trim().unwrap();
    assert_eq!(r.bodies_removed, 0, "{r:?}");
    assert_eq!(r.bodies_kept_in_use, 3);
    assert!(entries.iter().all(|e| e.path.exists()));

    // Once that process is gone and the bodies are old, they can go.
    live.close();
    for e in &entries {
        age(&e.path, 2 * GRACE);
    }
    let r = trimmer.trim().unwrap();
    assert_eq!(r.bodies_removed, 3, "{r:?}");
}

#[test]
fn trim_sweeps_what_dead_processes_left_behind() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    // A process that was SIGKILLed: its live file is unlocked, its temp files remain.
    fs::write(t.root.join("live").join("4242-dead"), b"1").unwrap();
    fs::write(t.root.join("tmp").join("4242-dead-0"), b"half a body").unwrap();
    fs::write(t.root.join("live").join("4343-dead.new"), b"").unwrap();
    let mut mine = t.begin_put().unwrap();
    mine.write_all(b"in progress").unwrap();
    let r = t.trim().unwrap();
    assert_eq!(r.stale_owners_removed, 2, "{r:?}");
    assert_eq!(r.temp_files_removed, 1);
    let left = temp_files(&t);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&t.owner));
    mine.commit(&aid(1), &OutputId::of(b"in progress"), None)
        .unwrap();
    assert!(temp_files(&t).is_empty());
}

#[test]
fn only_one_trim_runs_at_a_time() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    assert!(t.trim_due());
    let holder = open_lock_file(&t.root.join("trim.run")).unwrap();
    holder.lock().unwrap();
    assert!(!t.trim().unwrap().ran);
    holder.unlock().unwrap();
    assert!(t.trim().unwrap().ran);
    assert!(!t.trim_due());
}

#[test]
fn clear_removes_entries_and_the_tier_keeps_working() {
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    let e = put(&t, &aid(1), b"x");
    t.clear().unwrap();
    assert!(!e.path.exists());
    assert!(matches!(t.get(&aid(1)).unwrap(), Lookup::Miss));
    put(&t, &aid(1), b"y");
    assert_eq!(fs::read(hit(&t, &aid(1)).path).unwrap(), b"y");
}

#[cfg(unix)]
#[test]
fn files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let t = LocalTier::open(d.path(), u64::MAX).unwrap();
    let e = put(&t, &aid(1), b"secret-ish");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&e.path), 0o600);
    assert_eq!(mode(&t.record_path(&aid(1))), 0o600);
    assert_eq!(mode(&t.root.join("o")), 0o700);
}

#[test]
fn an_unwritable_cache_dir_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = LocalTier::open(&file, u64::MAX).err().expect("must fail");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
