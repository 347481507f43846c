//! The `gobuildcache` GOCACHEPROG helper: maps the command line onto the library.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use gobuildcache::config::{env_name, Kind, ENV_PREFIX, SETTINGS};
use gobuildcache::{Cache, Config, Ended};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gobuildcache: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn cli() -> Command {
    let mut cmd = Command::new("gobuildcache")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A GOCACHEPROG helper: a local disk tier shared through object stores.")
        .after_help(env_help())
        .disable_help_subcommand(true)
        .subcommand(Command::new("serve").about("Serve the GOCACHEPROG protocol on stdin/stdout (the default)"))
        .subcommand(Command::new("clear").about("Remove every local entry and, with a remote backend, every remote object under the prefix"))
        .subcommand(Command::new("clear-local").about("Remove every local entry"))
        .subcommand(
            Command::new("clear-remote")
                .about("Remove every remote object under the configured prefix"),
        )
        .subcommand(Command::new("trim").about("Trim the local tier to -max-size now"))
        .subcommand(Command::new("prefetch").about("Fetch the entries recent runs used (the warm-start manifest) into the local tier, then exit"))
        .subcommand(Command::new("help").about("Show this help"))
        .arg(
            Arg::new("force")
                .long("force")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("clear-remote: allow an empty prefix (deletes the whole bucket)"),
        );
    for s in SETTINGS.iter().filter(|s| s.is_flag()) {
        let mut arg = Arg::new(s.key)
            .long(s.key)
            .global(true)
            .help(s.help)
            .action(ArgAction::Set);
        if s.kind == Kind::Bool {
            // Go's flag syntax: -debug, -debug=true, -debug=false.
            arg = arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_name("BOOL");
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

fn env_help() -> String {
    let mut s = String::from(
        "Every flag can also be set in the environment (flags win). Each variable is read\n\
         with the GOBUILDCACHE_ prefix first, then without it; an empty value counts as unset.\n",
    );
    for set in SETTINGS.iter().filter(|s| s.is_flag()) {
        s += &format!("  -{:<15} {}\n", set.key, env_name(set.key));
    }
    s += "\nEnvironment only (never flags: credentials must not show in `ps`):\n";
    for set in SETTINGS.iter().filter(|s| !s.is_flag()) {
        s += &format!("  {ENV_PREFIX}{:<28} {}\n", set.env[0], set.help);
    }
    s += "\nUse with the go command:  GOCACHEPROG=gobuildcache go build ./...";
    s
}

/// The Go original's users write `-cache-dir x`; clap wants `--cache-dir x`.
fn normalise_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = false;
    for a in args {
        if !rest && a == "--" {
            rest = true;
        } else if !rest && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 {
            let name = a[1..].split('=').next().unwrap_or("");
            if name == "force"
                || name == "help"
                || SETTINGS.iter().any(|s| s.is_flag() && s.key == name)
            {
                out.push(format!("-{a}"));
                continue;
            }
        }
        out.push(a);
    }
    out
}

fn config_from(m: &ArgMatches) -> anyhow::Result<Config> {
    let mut b = Config::builder().env(true);
    for s in SETTINGS.iter().filter(|s| s.is_flag()) {
        if m.value_source(s.key) == Some(ValueSource::CommandLine) {
            if let Some(v) = m.get_one::<String>(s.key) {
                b = b.flag(s.key, v);
            }
        }
    }
    Ok(b.build()?)
}

fn run() -> anyhow::Result<ExitCode> {
    let matches = cli().get_matches_from(normalise_args(std::env::args()));
    let sub = matches.subcommand_name().unwrap_or("serve");
    if sub == "help" {
        cli().print_long_help()?;
        return Ok(ExitCode::SUCCESS);
    }
    let m = matches.subcommand_matches(sub).unwrap_or(&matches);
    let config = config_from(m)?;
    gobuildcache::init_logging(config.debug);

    if sub == "serve" && std::io::stdin().is_terminal() {
        eprintln!(
            "gobuildcache: waiting for GOCACHEPROG requests on stdin; \
             set GOCACHEPROG=gobuildcache for the go command instead (see `gobuildcache help`)"
        );
    }
    let cache = Cache::open(config)?;
    match sub {
        "serve" => serve(&cache),
        "clear" => {
            cache.clear_local().context("clearing the local cache")?;
            println!(
                "cleared the local cache in {}",
                cache.config().cache_dir.display()
            );
            if cache.config().remote_prefix().is_some() {
                clear_remote(&cache, m.get_flag("force"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        "clear-local" => {
            cache.clear_local().context("clearing the local cache")?;
            println!(
                "cleared the local cache in {}",
                cache.config().cache_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        "clear-remote" => {
            clear_remote(&cache, m.get_flag("force"))?;
            Ok(ExitCode::SUCCESS)
        }
        "trim" => {
            let r = cache.trim().context("trimming the local cache")?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        "prefetch" => {
            anyhow::ensure!(
                cache.config().remote_prefix().is_some(),
                "prefetch needs a remote: set -backend s3 or gcs, or -remote-dir"
            );
            anyhow::ensure!(cache.config().prefetch, "prefetch is off (-prefetch=false)");
            cache.wait_for_prefetch();
            cache.flush();
            let s = cache.report()?;
            println!(
                "prefetched {} of {} manifest entries ({} were already local, {} are gone from the remote)",
                s.prefetch_fetched, s.manifest_entries, s.prefetch_local, s.prefetch_missing
            );
            cache.close();
            Ok(ExitCode::SUCCESS)
        }
        other => anyhow::bail!("unknown subcommand {other}"),
    }
}

fn clear_remote(cache: &Cache, force: bool) -> anyhow::Result<()> {
    let announce = |count: usize, location: &str| {
        println!("deleting {count} objects under {location}");
    };
    let n = cache.clear_remote(force, &announce)?;
    println!("deleted {n} objects");
    Ok(())
}

fn serve(cache: &Cache) -> anyhow::Result<ExitCode> {
    // Raw descriptors: std's stdout is line-buffered, which would defeat response batching.
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let ended = gobuildcache::serve(cache, stdin, stdout);
    match ended {
        Ok(Ended::Closed) => {
            cache.close();
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ended::Eof) => {
            tracing::debug!("input ended without close");
            cache.flush();
            let _ = cache.report();
            cache.close();
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = cache.report();
            cache.close();
            eprintln!("gobuildcache: fatal: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
