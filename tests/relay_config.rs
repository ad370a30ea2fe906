//! `meldb relay --config FILE`: a relay started from a TOML file of its
//! flags, as a process on 127.0.0.1. The file's relative paths are its
//! own directory's (each relay runs from another directory), the command
//! line overrides it, a typo in it is an error naming the file, the key
//! and the line, and `docs/relay.example.toml` starts a relay as it is.

mod common;
mod tls_kit;

use common::{inventory, site, Listening, TestResult};
use meldb::sync::{sync_once_tcp, sync_once_url, ClientTls, Connector, SessionConfig, SharedStore};
use meldb::StoreOptions;
use std::path::Path;
use tls_kit::Pki;

const TOKENS: &str = r#"
[[token]]
name = "till-1"
token = "till-1-secret"
access = "read-write"
"#;

fn client() -> meldb::Result<SharedStore> {
    Ok(SharedStore::new(
        StoreOptions::new()
            .site_id(site(1))
            .open_in_memory(&inventory())?,
    ))
}

fn with(token: &str) -> SessionConfig {
    SessionConfig::default().token(Some(token.into()))
}

/// `meldb relay --config FILE ARGS`, run from `cwd`.
fn relay(cwd: &Path, file: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = tls_kit::meldb();
    cmd.current_dir(cwd)
        .arg("relay")
        .arg("--config")
        .arg(file)
        .args(args);
    cmd
}

/// A config directory with a tokens file, and another to run from.
fn dirs() -> Result<(tempfile::TempDir, tempfile::TempDir), Box<dyn std::error::Error>> {
    let config = tempfile::tempdir()?;
    std::fs::write(config.path().join("tokens.toml"), TOKENS)?;
    Ok((config, tempfile::tempdir()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_from_a_config_file_serves_with_paths_from_its_directory() -> TestResult {
    let (config, elsewhere) = dirs()?;
    let file = config.path().join("relay.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:0\"]\ndb = \"relay.db\"\ntokens = \"tokens.toml\"\n\
         max_connections = 8\nhandshake-timeout = \"5s\"\n",
    )?;
    // Run from a directory without tokens.toml: the file's directory's is used.
    let server = Listening::start(relay(elsewhere.path(), &file, &[]))?;
    sync_once_tcp(&client()?, &server.addr, with("till-1-secret")).await?;
    assert!(config.path().join("relay.db").exists());
    assert!(!elsewhere.path().join("relay.db").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_line_flag_overrides_the_files() -> TestResult {
    let (config, elsewhere) = dirs()?;
    let file = config.path().join("relay.toml");
    // Port 1 cannot be bound by a test, and "lots" is no number: both
    // would fail, and the command line replaces both.
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\ndb = \"relay.db\"\n\
         tokens = \"tokens.toml\"\nmax_connections = \"lots\"\n",
    )?;
    let server = Listening::start(relay(
        elsewhere.path(),
        &file,
        &["--listen", "127.0.0.1:0", "--max-connections", "4"],
    ))?;
    sync_once_tcp(&client()?, &server.addr, with("till-1-secret")).await?;
    Ok(())
}

#[test]
fn an_unknown_key_or_a_bad_value_names_the_file_the_key_and_the_line() -> TestResult {
    let (config, elsewhere) = dirs()?;
    let file = config.path().join("relay.toml");
    let shown = file.display().to_string();
    for (text, needles) in [
        (
            "listen = [\"127.0.0.1:0\"]\ndb = \"relay.db\"\nmax_conections = 8\n",
            &["line 3", "`max_conections`", "unknown key"][..],
        ),
        (
            "listen = [\"127.0.0.1:0\"]\ndb = \"relay.db\"\ntokens = \"tokens.toml\"\n\
             max_connections = \"lots\"\n",
            &["line 4", "`max_connections`", "invalid value 'lots'"][..],
        ),
        (
            "listen = \"127.0.0.1:0\"\ndb = \"relay.db\"\ntokens = \"tokens.toml\"\n\
             handshake_timeout = \"soon\"\n",
            &["line 4", "`handshake_timeout`", "not a duration"][..],
        ),
        (
            "listen = [\"127.0.0.1:0\"]\ndb = \"relay.db\"\ntokens = \"tokens.toml\"\n\
             max_connections = -3\n",
            &["line 4", "`max_connections`", "invalid value '-3'"][..],
        ),
        ("listen = [\"127.0.0.1:0\"\n", &["TOML parse error"][..]),
    ] {
        std::fs::write(&file, text)?;
        let out = relay(elsewhere.path(), &file, &[]).output()?;
        assert_eq!(out.status.code(), Some(2), "{text:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr)?;
        assert!(stderr.contains(&shown), "{text:?}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{text:?}: {needle:?} in {stderr}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_starts_a_relay() -> TestResult {
    let (config, elsewhere) = dirs()?;
    let d = config.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/relay.example.toml");
    let file = d.join("relay.toml");
    std::fs::copy(&example, &file)?;
    // The files it names, beside it.
    let pki = Pki::new(d, "relay", &["127.0.0.1"])?;
    std::fs::copy(&pki.cert, d.join("cert.pem"))?;
    std::fs::copy(&pki.key, d.join("key.pem"))?;
    std::fs::copy(tls_kit::schema_path(), d.join("schema.toml"))?;
    // Only the addresses change, to a free port of this machine.
    let mut cmd = relay(
        elsewhere.path(),
        &file,
        &["--listen", "tls://127.0.0.1:0", "--admin", "127.0.0.1:0"],
    );
    cmd.env_remove("MELDB_SCHEMA");
    let server = Listening::start(cmd)?;
    let connector = Connector::new().tls(ClientTls::with_ca_file(&pki.ca)?);
    sync_once_url(
        &client()?,
        &server.addr.parse()?,
        with("till-1-secret"),
        &connector,
    )
    .await?;
    assert!(d.join("data").join("default.db").exists());
    Ok(())
}

/// `meldb relay --check` (systemd's `ExecStartPre`): a good config says so
/// and starts nothing (no database file appears); a config that would
/// not start (a tls:// listener without a certificate, a tokens file
/// with one secret twice, a namespace with capitals) fails, naming what.
#[test]
fn check_reports_what_would_stop_the_relay_and_starts_nothing() -> TestResult {
    let (config, elsewhere) = dirs()?;
    let d = config.path();
    let schema = tls_kit::schema_path();
    let run = |body: &str| -> Result<std::process::Output, Box<dyn std::error::Error>> {
        let file = d.join("relay.toml");
        std::fs::write(
            &file,
            format!(
                "schema = {:?}\ntokens = \"tokens.toml\"\ndata_dir = \"data\"\n{body}",
                schema.display().to_string()
            ),
        )?;
        let mut cmd = relay(elsewhere.path(), &file, &["--check"]);
        cmd.env_remove("MELDB_SCHEMA");
        Ok(cmd.output()?)
    };
    let good = run("listen = [\"127.0.0.1:0\"]\nnamespace = [\"shop-7\"]\n")?;
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{good:?}");
    assert!(stdout.contains("config ok: 1 tokens"), "{stdout}");
    assert!(
        !d.join("data").exists(),
        "--check created the data directory"
    );

    let no_cert = run("listen = [\"tls://127.0.0.1:0\"]\n")?;
    assert!(!no_cert.status.success());
    let stderr = String::from_utf8_lossy(&no_cert.stderr);
    assert!(stderr.contains("needs a certificate and key"), "{stderr}");

    let capital = run("listen = [\"127.0.0.1:0\"]\nnamespace = [\"Shop\"]\n")?;
    assert!(!capital.status.success());
    let stderr = String::from_utf8_lossy(&capital.stderr);
    assert!(stderr.contains("\"Shop\""), "{stderr}");

    std::fs::write(
        d.join("tokens.toml"),
        format!("{TOKENS}[[token]]\nname = \"till-2\"\ntoken = \"till-1-secret\"\naccess = \"read-only\"\n"),
    )?;
    let twice = run("listen = [\"127.0.0.1:0\"]\n")?;
    assert!(!twice.status.success());
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(stderr.contains("the same secret"), "{stderr}");
    Ok(())
}
