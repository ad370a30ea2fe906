//! Crash safety of the mutator queue and the pull pipeline: a client
//! process that makes mutations and pushes and pulls them through an
//! authority (both file databases) is killed with SIGKILL at arbitrary
//! points; after each kill no acknowledged mutation is lost (it is pending
//! on the client or processed by the authority), and once everything is
//! pushed and pulled the client equals the authority.
//!
//! The test binary re-runs itself as the worker (`MELDB_CRASH_DIR` set).

#[path = "common/kill.rs"]
mod kill;

use meldb::{MutatorError, Schema, Store, StoreOptions, Transaction};
use std::{io::Write, path::Path};

const SCHEMA: &str = r#"
name = "ticks"
version = 1
[[table]]
name = "item"
primary_key = ["id"]
authority = true
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "n"
type = "integer"
kind = "pn_counter"
"#;

fn schema() -> Schema {
    match Schema::from_toml_str(SCHEMA, "ticks.toml") {
        Ok(s) => s,
        Err(e) => panic!("test schema must parse: {e}"),
    }
}

fn register(store: &mut Store) {
    store.register_mutator("tick", |tx: &mut Transaction<'_>, n: u64| {
        tx.upsert("item", &[("id", "counter".into())])?;
        tx.increment("item", "counter", "n", 1)?;
        tx.insert("item", &[("id", format!("m{n}").into())])?;
        Ok::<(), MutatorError>(())
    });
}

fn open(dir: &Path, name: &str, authority: bool) -> meldb::Result<Store> {
    let mut store = StoreOptions::new()
        .authority(authority)
        .open(dir.join(name), &schema())?;
    register(&mut store);
    Ok(store)
}

fn push_pull(server: &mut Store, client: &mut Store) -> meldb::Result<()> {
    server.process_push(&client.push_request()?)?;
    let (vv, first) = client.pull_request()?;
    let response = server.pull_for(client.site_id(), &vv, first)?;
    client.apply_pull(&response)?;
    Ok(())
}

/// The worker's loop: a mutation per round, a push and pull every third.
fn worker(dir: &Path, start: u64) -> meldb::Result<()> {
    let mut server = open(dir, "server.db", true)?;
    let mut client = open(dir, "client.db", false)?;
    let stdout = std::io::stdout();
    for round in start.. {
        client.mutate("tick", &round)?;
        {
            let mut out = stdout.lock();
            let _ = writeln!(out, "ack {round}");
            let _ = out.flush();
        }
        if round % 3 == 0 {
            push_pull(&mut server, &mut client)?;
        }
    }
    Ok(())
}

#[test]
fn killed_clients_lose_no_acknowledged_mutation() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = std::env::var_os("MELDB_CRASH_DIR") {
        let start = std::env::var("MELDB_CRASH_START")?.parse()?;
        worker(Path::new(&dir), start)?;
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut next = 0u64;
    for kill_after in [2usize, 9, 4, 17, 1, 30] {
        let acks = kill::acks_until_killed(
            "killed_clients_lose_no_acknowledged_mutation",
            &[
                ("MELDB_CRASH_DIR", dir.path().display().to_string()),
                ("MELDB_CRASH_START", next.to_string()),
            ],
            kill_after,
        )?;
        next = acks.last().map_or(next, |last| last + 1);
        acknowledged.extend(acks);

        let server = open(dir.path(), "server.db", true)?;
        let client = open(dir.path(), "client.db", false)?;
        // Every acknowledged mutation shows on the client (pending or
        // pulled back from the authority).
        for round in &acknowledged {
            assert!(
                client.get("item", format!("m{round}"))?.is_some(),
                "mutation {round} lost"
            );
        }
        // Ids continue after the kill; an unacknowledged round may have
        // committed just before it.
        if client.get("item", format!("m{next}"))?.is_some() {
            acknowledged.push(next);
            next += 1;
        }
        drop((server, client));
    }
    // Everything pushed and pulled: the client equals the authority, and
    // each mutation ran exactly once.
    let mut server = open(dir.path(), "server.db", true)?;
    let mut client = open(dir.path(), "client.db", false)?;
    push_pull(&mut server, &mut client)?;
    assert!(client.pending_mutations()?.is_empty());
    assert_eq!(client.digest()?, server.digest()?);
    let n: i64 = server
        .conn()
        .query_row("SELECT n FROM item WHERE id = 'counter'", [], |r| r.get(0))?;
    assert_eq!(n as usize, acknowledged.len(), "each mutation counted once");
    Ok(())
}
