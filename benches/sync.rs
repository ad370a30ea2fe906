//! Sync over loopback TCP through an embedded relay.
//!
//! - `catch_up`: an empty replica syncs once with a relay holding N
//!   changes (N rows inserted by one writer: a 32-character text key, a
//!   16-character text, an integer and a real). Timed from connect to the
//!   last batch committed; every file database is WAL with
//!   `synchronous = FULL`. Baseline: plain SQLite inserting the same rows
//!   into a fresh file in one transaction (what loading them costs with no
//!   sync at all), reported as a ratio.
//! - wire bytes of one catch-up, total and per change, and the metadata per
//!   change: wire bytes minus the keys' and values' own bytes (text at its
//!   length, integers and reals at 8 bytes).
//! - `latency`: two live clients; one writes a row, the clock stops when
//!   the other has applied it (through the relay, which commits it first).
//!
//! `MELDB_BENCH_CHANGES` sets N (default 5 000), `MELDB_BENCH_WRITES` the
//! latency samples (default 200); under `--test` (one run each) the
//! defaults are 200 and 10.

use criterion::Criterion;
use meldb::{
    sync::{
        sync_continuously, sync_once, Backoff, Connection, Relay, RelayConfig, SessionConfig,
        SharedStore, SyncStats,
    },
    Schema, Store, Value,
};
use rusqlite::Connection as Sqlite;
use std::{
    path::Path,
    time::{Duration, Instant},
};
use tempfile::TempDir;
use tokio::{runtime::Runtime, sync::watch};

const SCHEMA: &str = r#"
name = "bench"
version = 1

[[table]]
name = "t"
primary_key = ["id"]

[[table.column]]
name = "id"
type = "text"

[[table.column]]
name = "a"
type = "text"

[[table.column]]
name = "b"
type = "integer"

[[table.column]]
name = "c"
type = "real"
"#;

fn env_usize(name: &str) -> Option<usize> {
    let text = std::env::var(name).ok()?.replace('_', "");
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name} must be a whole number, not {text:?}"),
    }
}

/// splitmix64, so every run moves the same rows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

struct Row {
    id: String,
    a: String,
    b: i64,
    c: f64,
}

fn rows(n: usize) -> Vec<Row> {
    let mut rng = Rng(42);
    (0..n)
        .map(|_| Row {
            id: format!("{:016x}{:016x}", rng.next(), rng.next()),
            a: format!("{:016x}", rng.next()),
            b: (rng.next() % 1_000_000) as i64,
            c: (rng.next() % 1_000_000) as f64 / 100.0,
        })
        .collect()
}

/// The keys' and values' own bytes: text at its length, numbers at 8.
fn raw_bytes(rows: &[Row]) -> usize {
    rows.iter().map(|r| r.id.len() + r.a.len() + 16).sum()
}

fn insert(store: &mut Store, rows: &[Row]) {
    store
        .write(|tx| {
            for r in rows {
                tx.insert(
                    "t",
                    &[
                        ("id", r.id.as_str().into()),
                        ("a", r.a.as_str().into()),
                        ("b", Value::Integer(r.b)),
                        ("c", Value::Real(r.c)),
                    ],
                )?;
            }
            Ok(())
        })
        .expect("insert");
}

fn count(conn: &Sqlite) -> usize {
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        .expect("count") as usize
}

fn open(dir: &Path, name: &str, schema: &Schema) -> Store {
    Store::open(dir.join(name), schema).expect("open")
}

/// A relay on 127.0.0.1 serving a file store of `rows`.
struct Setup {
    rt: Runtime,
    addr: String,
    stop: watch::Sender<bool>,
    dir: TempDir,
    schema: Schema,
}

impl Setup {
    fn new(rows: &[Row]) -> Setup {
        let schema = Schema::from_toml_str(SCHEMA, "bench.toml").expect("schema");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut relay_store = open(dir.path(), "relay.db", &schema);
        insert(&mut relay_store, rows);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, shutdown) = watch::channel(false);
        let addr = rt.block_on(async {
            let relay = Relay::bind(
                SharedStore::new(relay_store),
                "127.0.0.1:0",
                RelayConfig::default(),
            )
            .await
            .expect("bind");
            let addr = relay.local_addr().expect("addr").to_string();
            tokio::spawn(relay.run(shutdown));
            addr
        });
        Setup {
            rt,
            addr,
            stop,
            dir,
            schema,
        }
    }

    /// One catch-up of a fresh, empty client: time, wire bytes, stats.
    fn catch_up(&self, n: usize, run: usize) -> (Duration, u64, SyncStats) {
        let path = self.dir.path().join(format!("client-{run}.db"));
        let store = SharedStore::new(Store::open(&path, &self.schema).expect("client"));
        let (elapsed, bytes, stats) = self.rt.block_on(async {
            let start = Instant::now();
            let mut conn = Connection::tcp(self.addr.as_str(), 64 << 20)
                .await
                .expect("connect");
            let stats = sync_once(&store, &mut conn, SessionConfig::default())
                .await
                .expect("sync")
                .stats;
            let counts = conn.counts();
            (start.elapsed(), counts.sent() + counts.received(), stats)
        });
        assert_eq!(count(store.lock().conn()), n, "the client has every row");
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        (elapsed, bytes, stats)
    }
}

/// Plain SQLite inserting the same rows into a fresh file, one transaction.
fn plain_insert(dir: &Path, rows: &[Row], run: usize) -> Duration {
    let path = dir.join(format!("plain-{run}.db"));
    let conn = Sqlite::open(&path).expect("plain");
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -{};
         CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT, b INTEGER, c REAL);",
        meldb::DEFAULT_CACHE_KIB
    ))
    .expect("plain schema");
    let start = Instant::now();
    conn.execute_batch("BEGIN").expect("begin");
    {
        let mut stmt = conn
            .prepare("INSERT INTO t (id, a, b, c) VALUES (?1, ?2, ?3, ?4)")
            .expect("prepare");
        for r in rows {
            stmt.execute(rusqlite::params![r.id, r.a, r.b, r.c])
                .expect("insert");
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
    let elapsed = start.elapsed();
    assert_eq!(count(&conn), rows.len());
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn catch_up(c: &mut Criterion, test_mode: bool, report: &mut Vec<String>) {
    let n = env_usize("MELDB_BENCH_CHANGES")
        .unwrap_or(if test_mode { 200 } else { 5_000 })
        .max(1);
    let data = rows(n);
    let setup = Setup::new(&data);
    let mut run = 0;
    let mut group = c.benchmark_group("catch_up");
    group.sample_size(10);
    group.bench_function(format!("meldb/{n}"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    setup.catch_up(n, run).0
                })
                .sum()
        })
    });
    group.bench_function(format!("plain/{n}"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    run += 1;
                    plain_insert(setup.dir.path(), &data, run)
                })
                .sum()
        })
    });
    group.finish();

    // Alternating pairs for the ratio, and the byte counts of one run.
    let pairs = if test_mode { 1 } else { 5 };
    let (mut times, mut ratios) = (Vec::new(), Vec::new());
    let mut wire = (0, SyncStats::default());
    for _ in 0..pairs {
        run += 1;
        let (t, bytes, stats) = setup.catch_up(n, run);
        run += 1;
        let plain = plain_insert(setup.dir.path(), &data, run);
        times.push(t.as_secs_f64());
        ratios.push(t.as_secs_f64() / plain.as_secs_f64());
        wire = (bytes, stats);
    }
    let (bytes, stats) = wire;
    assert_eq!(stats.rows_received as usize, n);
    let raw = raw_bytes(&data);
    let per_change = bytes as f64 / n as f64;
    let metadata = (bytes as f64 - raw as f64) / n as f64;
    report.push(format!(
        "catch-up of {n} changes: {:.0} ms (median of {pairs}), {:.2}x plain SQLite inserting them, \
         {:.0} changes/s",
        median(times.clone()) * 1000.0,
        median(ratios),
        n as f64 / median(times)
    ));
    report.push(format!(
        "wire: {bytes} bytes = {per_change:.1} bytes/change; keys and values {:.1} bytes/change; \
         metadata {metadata:.1} bytes/change ({:.1} per column change, 3 columns)",
        raw as f64 / n as f64,
        metadata / 3.0
    ));
    let _ = setup.stop.send(true);
}

fn latency(c: &mut Criterion, test_mode: bool, report: &mut Vec<String>) {
    let writes = env_usize("MELDB_BENCH_WRITES")
        .unwrap_or(if test_mode { 10 } else { 200 })
        .max(1);
    let setup = Setup::new(&[]);
    let client = |name: &str| SharedStore::new(open(setup.dir.path(), name, &setup.schema));
    let (a, b) = (client("a.db"), client("b.db"));
    let (stop, shutdown) = watch::channel(false);
    for store in [&a, &b] {
        setup.rt.spawn(sync_continuously(
            store.clone(),
            setup.addr.clone(),
            SessionConfig::default(),
            Backoff::default(),
            shutdown.clone(),
        ));
    }
    let mut next = 0usize;
    let mut one = |a: &SharedStore, b: &SharedStore| -> Duration {
        next += 1;
        let key = format!("row-{next}");
        setup.rt.block_on(async {
            let mut arrived = b.subscribe();
            let start = Instant::now();
            a.write(|tx| tx.insert("t", &[("id", key.as_str().into()), ("b", 1.into())]))
                .expect("write");
            loop {
                let found: i64 = b
                    .lock()
                    .conn()
                    .query_row("SELECT count(*) FROM t WHERE id = ?1", [&key], |r| r.get(0))
                    .expect("probe");
                if found == 1 {
                    return start.elapsed();
                }
                tokio::time::timeout(Duration::from_secs(10), arrived.changed())
                    .await
                    .expect("the write never arrived")
                    .expect("store dropped");
            }
        })
    };
    // Let both sessions connect and catch up.
    one(&a, &b);
    let mut group = c.benchmark_group("latency");
    group.sample_size(10);
    group.bench_function("write_to_arrival", |bench| {
        bench.iter_custom(|iters| (0..iters).map(|_| one(&a, &b)).sum())
    });
    group.finish();
    let mut samples: Vec<f64> = (0..writes)
        .map(|_| one(&a, &b).as_secs_f64() * 1000.0)
        .collect();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    report.push(format!(
        "write-to-arrival latency over {writes} writes: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    ));
    let _ = stop.send(true);
    let _ = setup.stop.send(true);
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    let mut c = Criterion::default().configure_from_args();
    let mut report = Vec::new();
    catch_up(&mut c, test_mode, &mut report);
    latency(&mut c, test_mode, &mut report);
    c.final_summary();
    println!();
    for line in report {
        println!("{line}");
    }
}
