//! `meldb token add`: the operator adds a client; the file keeps only the
//! secret's hash and the secret is printed once. Who could read the file
//! (a backup, a support bundle) learns no secret; the relay still accepts
//! the client that holds it; a mistake leaves the file as it was.

mod common;

use common::{inventory, site, Listening};
use meldb::sync::{sync_once_tcp, SessionConfig, SharedStore};
use meldb::StoreOptions;
use std::path::Path;
use std::process::Command;

fn meldb() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meldb"));
    cmd.env_remove("MELDB_LOG");
    cmd
}

fn token_add(tokens: &Path, args: &[&str]) -> TestResult<std::process::Output> {
    Ok(meldb()
        .args(["token", "add", "--tokens"])
        .arg(tokens)
        .args(args)
        .output()?)
}

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_token_is_kept_as_a_hash_and_its_secret_syncs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    let added = token_add(&tokens, &["--name", "till-1", "--role", "clerk"])?;
    assert!(added.status.success(), "{added:?}");
    let secret = String::from_utf8(added.stdout)?.trim().to_string();
    assert_eq!(secret.len(), 64, "{secret:?}");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));

    let file = std::fs::read_to_string(&tokens)?;
    assert!(
        !file.contains(&secret),
        "the file holds the secret:\n{file}"
    );
    assert!(file.contains("token_hash = \"blake3:"), "{file}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&tokens)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a new tokens file is its owner's only");
    }

    // The same name again, or a namespace that is a path: refused, and the
    // file is byte for byte as it was.
    for args in [
        &["--name", "till-1"][..],
        &["--name", "till-2", "--namespace", "../up"][..],
    ] {
        let refused = token_add(&tokens, args)?;
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            refused.stdout.is_empty(),
            "no secret is printed for a refusal"
        );
        assert_eq!(std::fs::read_to_string(&tokens)?, file);
    }
    let second = token_add(&tokens, &["--name", "dashboard", "--access", "read-only"])?;
    assert!(second.status.success(), "{second:?}");

    // A relay over that file accepts the client holding the secret.
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/inventory.toml");
    let mut cmd = meldb();
    cmd.args(["relay", "--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("relay.db"))
        .arg("--schema")
        .arg(&schema)
        .arg("--tokens")
        .arg(&tokens);
    let relay = Listening::start(cmd)?;
    let client = SharedStore::new(
        StoreOptions::new()
            .site_id(site(1))
            .open_in_memory(&inventory())?,
    );
    client.write(|tx| tx.insert("item", &[("sku", "A1".into())]))?;
    let report = sync_once_tcp(
        &client,
        &relay.addr,
        SessionConfig::default().token(Some(secret.clone())),
    )
    .await?;
    assert_eq!(report.stats.rows_sent, 1);
    // The hash itself is not a token.
    let hash = meldb::sync::Tokens::hash_line(&secret);
    let refused = sync_once_tcp(
        &client,
        &relay.addr,
        SessionConfig::default().token(Some(hash)),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    Ok(())
}

/// `meldb token remove`: the operator revokes a client. Its entry goes,
/// the rest of the file (comments, other clients) stays byte for byte; a
/// name that is not there is an error that changes nothing. A token with
/// several namespaces is added with `--namespace` repeated.
#[test]
fn a_removed_token_leaves_the_rest_of_the_file_as_it_was() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "# hand-written header\n")?;
    for (name, extra) in [
        ("till-1", &["--namespace", "shop-7"][..]),
        ("office", &["--access", "read-only"][..]),
        (
            "hub",
            &["--namespace", "shop-7", "--namespace", "shop-9"][..],
        ),
    ] {
        let added = token_add(&tokens, &[&["--name", name][..], extra].concat())?;
        assert!(added.status.success(), "{added:?}");
    }
    let before = std::fs::read_to_string(&tokens)?;
    assert!(
        before.contains("namespaces = [\"shop-7\", \"shop-9\"]"),
        "{before}"
    );

    let removed = meldb()
        .args(["token", "remove", "--name", "office", "--tokens"])
        .arg(&tokens)
        .output()?;
    assert!(removed.status.success(), "{removed:?}");
    let after = std::fs::read_to_string(&tokens)?;
    assert!(!after.contains("office"), "{after}");
    // What is left is what was there, less the one table.
    let start = before
        .find("\n[[token]]\nname = \"office\"")
        .ok_or("office's table")?;
    let end = before[start + 1..]
        .find("\n[[token]]")
        .map_or(before.len(), |at| start + 1 + at);
    assert_eq!(after, format!("{}{}", &before[..start], &before[end..]));
    assert!(after.starts_with("# hand-written header\n"));
    let loaded = meldb::sync::Tokens::from_toml_str(&after, "tokens.toml")?;
    assert_eq!(loaded.len(), 2);

    let missing = meldb()
        .args(["token", "remove", "--name", "office", "--tokens"])
        .arg(&tokens)
        .output()?;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no token named \"office\""), "{stderr}");
    assert_eq!(std::fs::read_to_string(&tokens)?, after);
    Ok(())
}
