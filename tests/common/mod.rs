//! Helpers shared by the integration tests: the example schemas, replicas
//! with fixed site ids on a manual clock, reading rows back with plain SQL,
//! syncing, and the "all replicas equal" check every multi-replica test ends
//! with.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use meldb::{ApplyReport, ManualTime, Schema, SiteId, Store, StoreOptions, Value, VersionVector};
use std::{collections::BTreeMap, sync::Arc};

/// What tests return.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fixed wall-clock start for manual clocks (2023-11-14, in ms).
pub const T0: u64 = 1_700_000_000_000;

/// Number of proptest cases: small by default so `cargo test` stays quick;
/// `MELDB_PROPTEST_CASES=1000 cargo test --release` digs deeper.
pub fn cases() -> u32 {
    std::env::var("MELDB_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// The schema file `schema/<name>.toml` of this crate.
pub fn load_schema(name: &str) -> Schema {
    let path = format!("{}/schema/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    match Schema::load(&path) {
        Ok(schema) => schema,
        Err(e) => panic!("example schema {path} must load: {e}"),
    }
}

pub fn inventory() -> Schema {
    load_schema("inventory")
}

pub fn todo() -> Schema {
    load_schema("todo")
}

pub fn booking() -> Schema {
    load_schema("booking")
}

/// A site id whose 16 bytes are all `n`: site ids order like their `n`.
pub fn site(n: u8) -> SiteId {
    SiteId::from_bytes([n; 16])
}

/// An in-memory replica with site id `site(n)` reading time from `time`.
pub fn replica(schema: &Schema, n: u8, time: &ManualTime) -> meldb::Result<Store> {
    replica_as(schema, n, time, false)
}

/// [`replica`], the authority for tables that have one when `authority`.
pub fn replica_as(
    schema: &Schema,
    n: u8,
    time: &ManualTime,
    authority: bool,
) -> meldb::Result<Store> {
    Ok(StoreOptions::new()
        .site_id(site(n))
        .time_source(Arc::new(time.clone()))
        .authority(authority)
        .open_in_memory(schema)?)
}

/// Moves a manual clock on by 10 ms, so the next write is later.
pub fn tick(time: &ManualTime) {
    time.advance(std::time::Duration::from_millis(10));
}

/// Runs a query with plain SQL and returns every row.
pub fn query(store: &Store, sql: &str) -> meldb::Result<Vec<Vec<Value>>> {
    let mut stmt = store.conn().prepare(sql)?;
    let n = stmt.column_count();
    let rows = stmt.query_map([], |r| {
        (0..n)
            .map(|i| r.get_ref(i).map(Value::from))
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// One value by plain SQL (the first column of the first row).
pub fn query_one(store: &Store, sql: &str) -> meldb::Result<Value> {
    Ok(query(store, sql)?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .unwrap_or(Value::Null))
}

/// Every user table's rows as apps see them (`SELECT * FROM <view> ORDER BY
/// <key>`), by table name.
pub fn view_rows(store: &Store) -> meldb::Result<BTreeMap<String, Vec<Vec<Value>>>> {
    let mut out = BTreeMap::new();
    for table in &store.schema().tables {
        let keys: Vec<String> = table
            .primary_key
            .iter()
            .map(|&i| format!("\"{}\"", table.columns[i].name))
            .collect();
        let sql = format!(
            "SELECT * FROM \"{}\" ORDER BY {}",
            table.name,
            keys.join(", ")
        );
        out.insert(table.name.clone(), query(store, &sql)?);
    }
    Ok(out)
}

/// A live row's values (schema order), without the column names.
pub fn row_values(
    store: &Store,
    table: &str,
    key: impl Into<meldb::Key>,
) -> meldb::Result<Option<Vec<Value>>> {
    Ok(store
        .get(table, key)?
        .map(|cols| cols.into_iter().map(|(_, v)| v).collect()))
}

/// One column of a live row.
pub fn column(
    store: &Store,
    table: &str,
    key: impl Into<meldb::Key>,
    column: &str,
) -> meldb::Result<Option<Value>> {
    Ok(store
        .get(table, key)?
        .and_then(|cols| cols.into_iter().find(|(c, _)| c == column))
        .map(|(_, v)| v))
}

/// Sends `to` everything `from` has that `to` lacks, in one changeset.
pub fn sync(from: &Store, to: &mut Store) -> meldb::Result<ApplyReport> {
    let changes = from.changes_since(&to.version_vector())?;
    to.apply(&changes)
}

/// Syncs every ordered pair allowed by `link` until a whole round moves
/// nothing; fails if that takes more than `max_rounds` rounds.
pub fn sync_until_quiet(
    stores: &mut [Store],
    link: impl Fn(usize, usize) -> bool,
    max_rounds: usize,
) -> meldb::Result<usize> {
    for round in 1..=max_rounds {
        let mut moved = false;
        for from in 0..stores.len() {
            for to in 0..stores.len() {
                if from == to || !link(from, to) {
                    continue;
                }
                let changes = stores[from].changes_since(&stores[to].version_vector())?;
                if !changes.is_empty() {
                    moved = true;
                    stores[to].apply(&changes)?;
                }
            }
        }
        if !moved {
            return Ok(round);
        }
    }
    panic!("replicas still exchanging changes after {max_rounds} full sync rounds");
}

/// Syncs every pair in both directions until nothing moves.
pub fn sync_all(stores: &mut [Store]) -> meldb::Result<()> {
    sync_until_quiet(stores, |_, _| true, 8).map(|_| ())
}

/// The end of every multi-replica test: equal digests, equal rows in every
/// table, equal version vectors, and nothing left to send between any pair.
pub fn assert_converged(stores: &[Store]) -> meldb::Result<()> {
    assert_same_state(stores)?;
    assert_same_version_vectors(stores);
    Ok(())
}

/// Equal digests, equal rows, and nothing left to send between any pair.
pub fn assert_same_state(stores: &[Store]) -> meldb::Result<()> {
    let Some(first) = stores.first() else {
        return Ok(());
    };
    let digest = first.digest()?;
    let rows = view_rows(first)?;
    for (i, store) in stores.iter().enumerate().skip(1) {
        assert_eq!(
            view_rows(store)?,
            rows,
            "replica {i} shows different rows than replica 0"
        );
        assert_eq!(
            store.digest()?,
            digest,
            "replica {i} has a different digest than replica 0 (same rows: the hidden CRDT state differs)"
        );
    }
    for (i, a) in stores.iter().enumerate() {
        for (j, b) in stores.iter().enumerate() {
            if i != j {
                let left = a.changes_since(&b.version_vector())?;
                assert!(
                    left.is_empty(),
                    "replica {i} still has {} rows for replica {j} after convergence",
                    left.len()
                );
            }
        }
    }
    Ok(())
}

/// All version vectors equal.
pub fn assert_same_version_vectors(stores: &[Store]) {
    for (i, store) in stores.iter().enumerate().skip(1) {
        assert_eq!(
            store.version_vector(),
            stores[0].version_vector(),
            "replica {i} has a different version vector than replica 0"
        );
    }
}

/// A version vector holding exactly `site: 1..=last` for each entry.
pub fn vv_of(entries: &[(u8, u64)]) -> VersionVector {
    let mut vv = VersionVector::new();
    for &(n, last) in entries {
        vv.insert(site(n), 1, last);
    }
    vv
}

/// A tiny deterministic RNG (xorshift64*) for seeded simulations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Spread small seeds and never start at 0 (a fixed point).
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Shuffles in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Splits a recorded sync conversation (`tests/fixtures/*/conversation-*.bin`:
/// a direction byte, `C` or `R`, then one whole message frame, repeated)
/// into its records, in order.
pub fn recorded_frames(bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    use meldb::codec::{message_payload_len, HEADER_LEN, MAX_MESSAGE_PAYLOAD};
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((&dir, after)) = rest.split_first() {
        if dir != b'C' && dir != b'R' {
            return Err(format!("bad direction byte {dir:#04x}"));
        }
        let header = after.get(..HEADER_LEN).ok_or("a truncated frame header")?;
        let len = HEADER_LEN
            + message_payload_len(header, MAX_MESSAGE_PAYLOAD).map_err(|e| e.to_string())?;
        let frame = after.get(..len).ok_or("a truncated frame")?;
        out.push((dir, frame));
        rest = &after[len..];
    }
    Ok(out)
}

/// A relay listener that accepts the server ends of in-memory pipes
/// handed to it through the channel (the relay tests' transport).
pub struct Memory(pub tokio::sync::mpsc::Receiver<tokio::io::DuplexStream>);

impl meldb::sync::Listener for Memory {
    type Stream = tokio::io::DuplexStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Stream, meldb::sync::Peer)> {
        match self.0.recv().await {
            Some(stream) => Ok((stream, meldb::sync::Peer::at("memory"))),
            // No more connections will come: wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn describe(&self) -> String {
        "in-memory pipes".into()
    }
}

/// A `meldb` server process (`relay` or `serve`) that printed
/// `listening on ADDR` as its first line; killed when dropped.
pub struct Listening {
    child: std::process::Child,
    /// What it printed after `listening on `.
    pub addr: String,
}

impl Listening {
    /// Starts `cmd` with stdout piped and waits for its first line.
    pub fn start(mut cmd: std::process::Command) -> Result<Listening, Box<dyn std::error::Error>> {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_string);
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("unexpected first line {line:?}").into());
        };
        Ok(Listening { child, addr })
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
