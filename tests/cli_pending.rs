//! `meldb pending` and the counts in `meldb info` on a client of an
//! authority: the library queues mutations in a database file (the command
//! line cannot run app mutators), an in-memory authority refuses one, and
//! the binary, run as a process, lists what waits and what was refused.

mod common;

use common::{site, TestResult, T0};
use meldb::{ManualTime, MutatorError, Schema, Store, StoreOptions, Transaction};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// Slots one person books at a time; the authority decides who got one.
const SLOTS: &str = r#"
name = "slots"
version = 1
[[table]]
name = "slot"
primary_key = ["time"]
authority = true
[[table.column]]
name = "time"
type = "text"
[[table.column]]
name = "booked_by"
type = "text"
"#;

#[derive(Serialize, Deserialize)]
struct Book {
    time: String,
    user: String,
}

fn book(time: &str, user: &str) -> Book {
    Book {
        time: time.into(),
        user: user.into(),
    }
}

fn open(path: Option<&Path>, n: u8, time: &ManualTime, authority: bool) -> meldb::Result<Store> {
    let schema = Schema::from_toml_str(SLOTS, "slots.toml")?;
    let options = StoreOptions::new()
        .site_id(site(n))
        .time_source(Arc::new(time.clone()))
        .authority(authority);
    let mut store = match path {
        Some(path) => options.open(path, &schema)?,
        None => options.open_in_memory(&schema)?,
    };
    store.register_mutator("book", |tx: &mut Transaction<'_>, b: Book| {
        if tx.get("slot", b.time.as_str())?.is_some() {
            return Err(MutatorError::app(format!("slot {} is taken", b.time)));
        }
        tx.insert(
            "slot",
            &[("time", b.time.into()), ("booked_by", b.user.into())],
        )?;
        Ok(())
    });
    Ok(store)
}

fn push(server: &mut Store, client: &Store) -> meldb::Result<()> {
    server.process_push(&client.push_request()?)?;
    Ok(())
}

fn pull(server: &Store, client: &mut Store) -> meldb::Result<()> {
    let (vv, first) = client.pull_request()?;
    let response = server.pull_for(client.site_id(), &vv, first)?;
    client.apply_pull(&response)?;
    Ok(())
}

/// Runs `meldb COMMAND --db client.db --schema slots.toml ARGS...` in `dir`
/// and returns its stdout; panics with both streams unless it exits 0.
fn meldb(dir: &Path, command: &str, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let output = Command::new(env!("CARGO_BIN_EXE_meldb"))
        .args([command, "--db", "client.db", "--schema", "slots.toml"])
        .args(args)
        .current_dir(dir)
        .env_remove("MELDB_SCHEMA")
        .output()?;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(
        output.status.success(),
        "meldb {command} {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// A client whose first booking the authority refused (someone else got
/// the slot first), whose second it accepted, and whose third waits.
fn client_with_a_refusal(dir: &Path) -> TestResult {
    std::fs::write(dir.join("slots.toml"), SLOTS)?;
    let time = ManualTime::new(T0);
    let mut server = open(None, 1, &time, true)?;
    let mut other = open(None, 3, &time, false)?;
    let mut client = open(Some(&dir.join("client.db")), 2, &time, false)?;
    other.mutate("book", &book("09:00", "bea"))?;
    push(&mut server, &other)?;
    client.mutate("book", &book("09:00", "ann"))?;
    client.mutate("book", &book("10:00", "ann"))?;
    push(&mut server, &client)?;
    pull(&server, &mut client)?;
    client.mutate("book", &book("11:00", "ann"))?;
    assert_eq!(client.pending_mutations()?.len(), 1);
    assert_eq!(client.mutation_failures()?.len(), 1);
    Ok(())
}

#[test]
fn pending_lists_waiting_and_refused_mutations() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    client_with_a_refusal(d)?;

    let text = meldb(d, "pending", &[])?;
    assert_eq!(
        text,
        concat!(
            "id  state    name  args                           reason\n",
            "--  -------  ----  -----------------------------  -------------------\n",
            " 1  refused  book  NULL                           slot 09:00 is taken\n",
            " 3  pending  book  {\"time\":\"11:00\",\"user\":\"ann\"}  NULL\n",
        ),
        "{text}"
    );

    let json = meldb(d, "pending", &["--json"])?;
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"id": 1, "state": "refused", "name": "book", "args": null,
                               "reason": "slot 09:00 is taken"}),
            serde_json::json!({"id": 3, "state": "pending", "name": "book",
                               "args": {"time": "11:00", "user": "ann"}, "reason": null}),
        ],
        "{json}"
    );
    Ok(())
}

#[test]
fn info_counts_what_waits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    client_with_a_refusal(d)?;

    let text = meldb(d, "info", &[])?;
    for line in ["pending   1\n", "refused   1\n", "deferred  0\n"] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    let info: serde_json::Value = serde_json::from_str(&meldb(d, "info", &["--json"])?)?;
    assert_eq!(info["pending"], 1, "{info}");
    assert_eq!(info["refused"], 1, "{info}");
    assert_eq!(info["deferred"], 0, "{info}");
    Ok(())
}

#[test]
fn pending_on_a_replica_with_nothing_waiting() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("slots.toml"), SLOTS)?;
    drop(open(
        Some(&d.join("client.db")),
        2,
        &ManualTime::new(T0),
        false,
    )?);
    assert_eq!(
        meldb(d, "pending", &[])?,
        "no pending or refused mutations\n"
    );
    assert_eq!(meldb(d, "pending", &["--json"])?, "");
    Ok(())
}
