//! The example app (examples/todo.rs) run as an app developer would run
//! it: two replicas, Alice's and Bob's, each a process of the example with
//! a file of its own, against a library relay on 127.0.0.1 that checks
//! their tokens. Alice adds a to-do; Bob adds one, marks Alice's done,
//! likes and tags his; Alice runs again and sees all of it. What is
//! checked is the example's output: the live list as it changes, the
//! sync status reaching idle with nothing pending, and the stop.
//!
//! `cargo test` builds the example before it runs this test; run alone
//! (`cargo test --test example_todo`) the test builds it first.

use meldb::sync::{Grant, Relay, RelayConfig, SharedStore, Tokens};
use meldb::Store;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

/// The example's binary, next to this test's in the target directory.
fn example() -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or("the test binary is not in a target directory")?;
    let path = debug
        .join("examples")
        .join(format!("todo{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", "todo"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()?;
        if !status.success() {
            return Err(format!("cargo build --example todo: {status}").into());
        }
    }
    Ok(path)
}

/// Runs the example with `args`; its stdout, after checking it exited 0.
fn run(bin: &PathBuf, args: &[&str]) -> Result<String, BoxError> {
    let out = Command::new(bin).args(args).output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("todo {args:?}: {}\n{stdout}\n{stderr}", out.status).into());
    }
    Ok(stdout)
}

/// The last list the output showed, as its lines.
fn last_list(output: &str) -> Vec<&str> {
    let lines: Vec<&str> = output.lines().collect();
    let Some(start) = lines.iter().rposition(|l| l.starts_with("list: ")) else {
        return Vec::new();
    };
    lines[start + 1..]
        .iter()
        .take_while(|l| l.starts_with("  ["))
        .copied()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_the_example_app_share_their_list_through_a_relay() -> TestResult {
    let bin = tokio::task::spawn_blocking(example).await??;
    let dir = tempfile::tempdir()?;
    let schema = meldb::Schema::load(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/todo.toml"))?;
    let relay_store = SharedStore::new(Store::open(dir.path().join("relay.db"), &schema)?);
    let mut tokens = Tokens::new();
    tokens.add("alice", "alice-token-0123", Grant::read_write());
    tokens.add("bob", "bob-token-456789", Grant::read_write());
    let relay = Relay::bind(
        relay_store.clone(),
        "127.0.0.1:0",
        RelayConfig::default().tokens(tokens),
    )
    .await?;
    let url = format!("tcp://{}", relay.local_addr()?);
    let (stop, shutdown) = watch::channel(false);
    let served = tokio::spawn(relay.run(shutdown));

    let db = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (alice_db, bob_db, mallory_db) = (db("alice.db"), db("bob.db"), db("mallory.db"));
    let within = "60";

    let alice = {
        let (bin, url, alice_db) = (bin.clone(), url.clone(), alice_db.clone());
        tokio::task::spawn_blocking(move || {
            run(
                &bin,
                &[
                    "--db",
                    &alice_db,
                    "--relay",
                    &url,
                    "--token",
                    "alice-token-0123",
                    "--add",
                    "buy milk",
                    "--until",
                    "1",
                    "--seconds",
                    within,
                ],
            )
        })
        .await??
    };
    assert!(alice.starts_with("replica: site "), "{alice}");
    assert_eq!(last_list(&alice), ["  [ ] buy milk"], "{alice}");
    assert!(
        alice.contains("\nsync: idle, up to date (pending: 0 changes, 0 mutations)\n"),
        "{alice}"
    );
    assert!(alice.contains("\ndone: 1 to-do(s) after "), "{alice}");
    assert!(
        alice.ends_with("sync: stopped (pending: 0 changes, 0 mutations)\n"),
        "{alice}"
    );

    let bob = {
        let (bin, url, bob_db) = (bin.clone(), url.clone(), bob_db.clone());
        tokio::task::spawn_blocking(move || {
            run(
                &bin,
                &[
                    "--db",
                    &bob_db,
                    "--relay",
                    &url,
                    "--token",
                    "bob-token-456789",
                    "--add",
                    "walk the dog",
                    "--done",
                    "buy milk",
                    "--like",
                    "walk the dog",
                    "--tag",
                    "walk the dog=outside",
                    "--until",
                    "2",
                    "--seconds",
                    within,
                ],
            )
        })
        .await??
    };
    // Bob's own to-do is on his list before the relay answers; Alice's
    // arrives live, and his edit of it waits for it.
    assert!(bob.contains("list: 1 to-do\n  [ ] walk the dog\n"), "{bob}");
    assert_eq!(
        last_list(&bob),
        ["  [x] buy milk", "  [ ] walk the dog (1 likes) #outside"],
        "{bob}"
    );
    assert!(
        bob.ends_with("sync: stopped (pending: 0 changes, 0 mutations)\n"),
        "{bob}"
    );

    // Alice, back: what Bob did reaches her replica.
    let again = {
        let (bin, url) = (bin.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            run(
                &bin,
                &[
                    "--db",
                    &alice_db,
                    "--relay",
                    &url,
                    "--token",
                    "alice-token-0123",
                    "--until",
                    "2",
                    "--seconds",
                    within,
                ],
            )
        })
        .await??
    };
    assert_eq!(
        last_list(&again),
        ["  [x] buy milk", "  [ ] walk the dog (1 likes) #outside"],
        "{again}"
    );

    // A wrong token: the example shows the refusal, stays offline and
    // stops at its deadline with its to-do unsent.
    let refused = tokio::task::spawn_blocking(move || {
        run(
            &bin,
            &[
                "--db",
                &mallory_db,
                "--relay",
                &url,
                "--token",
                "not-a-token-0000",
                "--add",
                "steal",
                "--until",
                "1",
                "--seconds",
                "3",
            ],
        )
    })
    .await??;
    assert!(refused.contains("\nsync: offline"), "{refused}");
    assert!(refused.contains("sync: last error: "), "{refused}");
    assert!(
        refused.contains("\ndone: time is up with 1 to-do(s)\n"),
        "{refused}"
    );
    assert!(
        refused.ends_with("sync: stopped (pending: ? changes, 0 mutations)\n"),
        "{refused}"
    );
    #[derive(serde::Deserialize)]
    struct Title {
        title: String,
    }
    let on_relay: Vec<Title> =
        relay_store.read(|r| r.query_as("SELECT title FROM todo ORDER BY title", []))?;
    let titles: Vec<&str> = on_relay.iter().map(|t| t.title.as_str()).collect();
    assert_eq!(
        titles,
        ["buy milk", "walk the dog"],
        "nothing of mallory's reached the relay"
    );

    stop.send(true)?;
    tokio::time::timeout(Duration::from_secs(30), served).await???;
    Ok(())
}
