//! Live queries: what a watch costs a write.
//!
//! - `commit_to_callback`: a live query returning 100 rows (at N = 10 000)
//!   filtered from an N-row table; each iteration is one single-row local
//!   write that changes its result, and the time measured runs from the end
//!   of the write's closure (before `COMMIT`) to the callback's first line:
//!   the commit, the re-run of the query, the diff and the call.
//! - `write_one_row`: a one-row write with no live query, and with 100 live
//!   queries registered on another table (never re-run: the write touches
//!   none of their tables). The ratio of their medians is printed.
//!
//! File databases with `Durability::Normal` (no fsync per commit: the
//! figures are the store's work, not the disk's). `MELDB_BENCH_ROWS` sets N
//! (default 10 000); `MELDB_BENCH_SAMPLES` the timed iterations of the
//! median lines (default 300; 3 under `--test`, criterion's smoke mode).

use criterion::Criterion;
use meldb::{Durability, Schema, Store, StoreOptions, Value, WatchHandle};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const SCHEMA: &str = r#"
name = "live"
version = 1
[[table]]
name = "t"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "integer"
[[table.column]]
name = "a"
type = "text"
[[table.column]]
name = "b"
type = "integer"
[[table]]
name = "other"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "integer"
[[table.column]]
name = "b"
type = "integer"
"#;

struct Config {
    rows: i64,
    samples: usize,
}

fn env_usize(name: &str) -> Option<usize> {
    let text = std::env::var(name).ok()?;
    match text.replace('_', "").trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name} must be a whole number, not {text:?}"),
    }
}

impl Config {
    fn from_env() -> Config {
        let args: Vec<String> = std::env::args().collect();
        let test_mode = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
        Config {
            rows: env_usize("MELDB_BENCH_ROWS").unwrap_or(10_000).max(100) as i64,
            samples: env_usize("MELDB_BENCH_SAMPLES")
                .unwrap_or(if test_mode { 3 } else { 300 })
                .max(1),
        }
    }
}

/// A file store with `rows` rows in `t` (`b = id % 100`: each `b` selects
/// a hundredth of them) and as many in `other`.
fn filled(rows: i64) -> (Store, TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("meldb-bench-live-")
        .tempdir()
        .expect("temporary directory");
    let schema = Schema::from_toml_str(SCHEMA, "live.toml").expect("bench schema");
    let mut store = StoreOptions::new()
        .durability(Durability::Normal)
        .open(dir.path().join("live.db"), &schema)
        .expect("open store");
    store
        .write(|tx| {
            for id in 0..rows {
                tx.insert(
                    "t",
                    &[
                        ("id", id.into()),
                        ("a", format!("row {id}").into()),
                        ("b", (id % 100).into()),
                    ],
                )?;
                tx.insert("other", &[("id", id.into()), ("b", (id % 100).into())])?;
            }
            Ok(())
        })
        .expect("fill");
    (store, dir)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// One write to a row of `t` the live query selects (`b = 7`).
fn write_selected(store: &mut Store, n: u64, closed: &Mutex<Option<Instant>>) {
    store
        .write(|tx| {
            tx.set("t", 7, "a", Value::Text(format!("write {n}")))?;
            *closed.lock().expect("clock") = Some(Instant::now());
            Ok(())
        })
        .expect("write");
}

fn commit_to_callback(c: &mut Criterion, config: &Config) -> String {
    let (mut store, _dir) = filled(config.rows);
    let closed = Arc::new(Mutex::new(None::<Instant>));
    let lag = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let (watch_closed, watch_lag) = (closed.clone(), lag.clone());
    let rows = Arc::new(Mutex::new(0usize));
    let watch_rows = rows.clone();
    let _watch = store
        .watch(
            "SELECT id, a, b FROM t WHERE b = 7",
            &[],
            move |_, update| {
                let now = Instant::now();
                if let Some(start) = watch_closed.lock().expect("clock").take() {
                    watch_lag.lock().expect("lag").push(now - start);
                }
                *watch_rows.lock().expect("rows") = update.rows.len();
                assert!(!update.diff.is_empty());
            },
        )
        .expect("watch");
    let mut n = 0u64;
    c.bench_function("live/commit_to_callback", |b| {
        b.iter_custom(|iters| {
            let before = lag.lock().expect("lag").len();
            for _ in 0..iters {
                n += 1;
                write_selected(&mut store, n, &closed);
            }
            lag.lock().expect("lag")[before..].iter().sum()
        })
    });
    lag.lock().expect("lag").clear();
    for _ in 0..config.samples {
        n += 1;
        write_selected(&mut store, n, &closed);
    }
    let lags = std::mem::take(&mut *lag.lock().expect("lag"));
    assert_eq!(lags.len(), config.samples, "one callback per write");
    format!(
        "live query of {} rows from {} (b = 7): commit-to-callback median {:?} over {} writes",
        rows.lock().expect("rows"),
        config.rows,
        median(lags),
        config.samples
    )
}

fn write_other(store: &mut Store, n: i64) {
    store
        .write(|tx| tx.set("t", n % 100, "a", Value::Text(format!("w {n}"))))
        .expect("write");
}

/// Median time of a one-row write to `t`.
fn write_median(store: &mut Store, samples: usize, n: &mut i64) -> Duration {
    let times = (0..samples)
        .map(|_| {
            *n += 1;
            let start = Instant::now();
            write_other(store, *n);
            start.elapsed()
        })
        .collect();
    median(times)
}

fn watches_elsewhere(c: &mut Criterion, config: &Config) -> String {
    let (mut plain, _plain_dir) = filled(config.rows);
    let (mut watched, _watched_dir) = filled(config.rows);
    let _watches: Vec<WatchHandle> = (0..100)
        .map(|i| {
            watched
                .watch(
                    "SELECT id, b FROM other WHERE b = ?1",
                    &[Value::Integer(i)],
                    |_, update| {
                        black_box(update);
                    },
                )
                .expect("watch")
        })
        .collect();
    let mut n = 0i64;
    let mut group = c.benchmark_group("live/write_one_row");
    group.bench_function("no_watches", |b| {
        b.iter(|| {
            n += 1;
            write_other(&mut plain, n)
        })
    });
    group.bench_function("100_watches_elsewhere", |b| {
        b.iter(|| {
            n += 1;
            write_other(&mut watched, n)
        })
    });
    group.finish();
    // Alternating rounds, so drift on a shared machine hits both sides.
    let (mut none, mut hundred) = (Vec::new(), Vec::new());
    for _ in 0..config.samples.div_ceil(50).max(1) {
        none.push(write_median(&mut plain, 50.min(config.samples), &mut n));
        hundred.push(write_median(&mut watched, 50.min(config.samples), &mut n));
    }
    let (none, hundred) = (median(none), median(hundred));
    format!(
        "one-row write: no live query {none:?}, 100 live queries on another table {hundred:?} \
         (ratio {:.3}x)",
        hundred.as_secs_f64() / none.as_secs_f64()
    )
}

fn main() {
    let config = Config::from_env();
    let mut c = Criterion::default().configure_from_args();
    let lines = [
        commit_to_callback(&mut c, &config),
        watches_elsewhere(&mut c, &config),
    ];
    c.final_summary();
    for line in lines {
        println!("{line}");
    }
}
