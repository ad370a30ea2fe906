//! meldb against plain SQLite doing the same work, in the same run.
//!
//! Every group times one whole job on a fresh file database (WAL,
//! `synchronous = FULL` on both sides; meldb opened with `Store::open`
//! defaults), once through meldb and once through rusqlite on a plain table.
//! Opening the database and any pre-filling happen in the untimed setup;
//! dropping it happens after the clock stops.
//!
//! Criterion's absolute times are noisy on a shared machine, so after each
//! group the job is run again a few times alternating meldb and plain, and
//! the median of the per-pair time ratios is printed (`meldb/plain = 1.83x`
//! means meldb took 1.83 times as long). All ratio lines are repeated at the
//! end. `MELDB_BENCH_ROWS` sets N (default 10 000), `MELDB_BENCH_PAIRS` the
//! number of alternating pairs (default 7; 1 under `--test`).

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use meldb::{Changeset, Schema, Store, Value, VersionVector};
use rusqlite::Connection;
use std::{
    cell::{Cell, OnceCell},
    hint::black_box,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tempfile::TempDir;

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

[[table]]
name = "counter"
primary_key = ["id"]

[[table.column]]
name = "id"
type = "text"

[[table.column]]
name = "n"
type = "integer"
kind = "pn_counter"
"#;

const PLAIN_SCHEMA: &str = "
    CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT, b INTEGER, c REAL);
    CREATE TABLE counter (id TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0);
";

/// The PRAGMAs `Store::open` sets on file databases by default, cache size
/// included, so both sides run with the same settings.
fn plain_pragmas() -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{};",
        meldb::DEFAULT_CACHE_KIB
    )
}

const DB_FILE: &str = "bench.db";

// ---------------------------------------------------------------- data

/// splitmix64: a deterministic stream, so every run writes the same rows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn hex32(&mut self) -> String {
        format!("{:016x}{:016x}", self.next(), self.next())
    }

    fn hex16(&mut self) -> String {
        format!("{:016x}", self.next())
    }
}

/// A row of `t` as plain SQLite reads it back.
type PlainRow = (String, String, i64, f64);

struct Row {
    id: String,
    a: String,
    b: i64,
    c: f64,
}

/// The rows every job works on, and the new `a` values the update writes.
struct Data {
    rows: Vec<Row>,
    new_a: Vec<String>,
}

impl Data {
    fn new(n: usize) -> Data {
        let mut rng = Rng(0x6d65_6c64_6221);
        let rows = (0..n)
            .map(|_| Row {
                id: rng.hex32(),
                a: rng.hex16(),
                b: (rng.next() >> 1) as i64,
                c: (rng.next() >> 11) as f64 / (1u64 << 53) as f64,
            })
            .collect();
        let new_a = (0..n).map(|_| rng.hex16()).collect();
        Data { rows, new_a }
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

// ---------------------------------------------------------------- databases

/// A database in its own temporary directory, removed on drop.
struct Fresh<D> {
    db: D,
    _dir: TempDir,
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("meldb-bench-")
        .tempdir()
        .expect("create a temporary directory")
}

fn open_meldb(path: &Path, schema: &Schema) -> Store {
    Store::open(path, schema).expect("open meldb store")
}

fn open_plain(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open sqlite database");
    conn.execute_batch(&plain_pragmas()).expect("set pragmas");
    conn
}

fn fresh_meldb(schema: &Schema) -> Fresh<Store> {
    let dir = temp_dir();
    let db = open_meldb(&dir.path().join(DB_FILE), schema);
    Fresh { db, _dir: dir }
}

fn fresh_plain() -> Fresh<Connection> {
    let dir = temp_dir();
    let db = open_plain(&dir.path().join(DB_FILE));
    db.execute_batch(PLAIN_SCHEMA).expect("create plain tables");
    Fresh { db, _dir: dir }
}

/// A closed, checkpointed database file that setups copy, so a pre-filled
/// database costs a file copy per iteration rather than a rebuild.
struct Template {
    path: PathBuf,
    _dir: TempDir,
}

impl Template {
    fn meldb(schema: &Schema, fill: impl FnOnce(&mut Store)) -> Template {
        let Fresh { mut db, _dir } = fresh_meldb(schema);
        fill(&mut db);
        checkpoint(db.conn());
        let path = PathBuf::from(db.path());
        drop(db);
        Template { path, _dir }
    }

    fn plain(fill: impl FnOnce(&Connection)) -> Template {
        let Fresh { db, _dir } = fresh_plain();
        fill(&db);
        checkpoint(&db);
        let path = PathBuf::from(db.path().expect("file database"));
        drop(db);
        Template { path, _dir }
    }

    /// A copy of the template in a new directory.
    fn copy(&self) -> (TempDir, PathBuf) {
        let dir = temp_dir();
        let path = dir.path().join(DB_FILE);
        std::fs::copy(&self.path, &path).expect("copy template database");
        (dir, path)
    }

    fn open_meldb(&self, schema: &Schema) -> Fresh<Store> {
        let (dir, path) = self.copy();
        Fresh {
            db: open_meldb(&path, schema),
            _dir: dir,
        }
    }

    fn open_plain(&self) -> Fresh<Connection> {
        let (dir, path) = self.copy();
        Fresh {
            db: open_plain(&path),
            _dir: dir,
        }
    }
}

fn checkpoint(conn: &Connection) {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count query")
}

// ---------------------------------------------------------------- the work

fn meldb_insert(store: &mut Store, rows: &[Row]) {
    let mut tx = store.transaction().expect("begin");
    for r in rows {
        tx.insert(
            "t",
            &[
                ("id", Value::from(r.id.as_str())),
                ("a", Value::from(r.a.as_str())),
                ("b", Value::from(r.b)),
                ("c", Value::from(r.c)),
            ],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

fn plain_insert(conn: &Connection, rows: &[Row]) {
    let tx = conn.unchecked_transaction().expect("begin");
    {
        let mut stmt = tx
            .prepare_cached("INSERT INTO t (id, a, b, c) VALUES (?1, ?2, ?3, ?4)")
            .expect("prepare");
        for r in rows {
            stmt.execute((&r.id, &r.a, r.b, r.c)).expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn meldb_insert_counters<'k>(store: &mut Store, keys: impl Iterator<Item = &'k str>) {
    let mut tx = store.transaction().expect("begin");
    for key in keys {
        tx.insert("counter", &[("id", Value::from(key))])
            .expect("insert counter");
    }
    tx.commit().expect("commit");
}

fn plain_insert_counters<'k>(conn: &Connection, keys: impl Iterator<Item = &'k str>) {
    let tx = conn.unchecked_transaction().expect("begin");
    {
        let mut stmt = tx
            .prepare_cached("INSERT INTO counter (id) VALUES (?1)")
            .expect("prepare");
        for key in keys {
            stmt.execute([key]).expect("insert counter");
        }
    }
    tx.commit().expect("commit");
}

fn meldb_increment<'k>(store: &mut Store, keys: impl Iterator<Item = &'k str>) {
    let mut tx = store.transaction().expect("begin");
    for key in keys {
        tx.increment("counter", key, "n", 1).expect("increment");
    }
    tx.commit().expect("commit");
}

fn plain_increment<'k>(conn: &Connection, keys: impl Iterator<Item = &'k str>) {
    let tx = conn.unchecked_transaction().expect("begin");
    {
        let mut stmt = tx
            .prepare_cached("UPDATE counter SET n = n + 1 WHERE id = ?1")
            .expect("prepare");
        for key in keys {
            assert_eq!(stmt.execute([key]).expect("increment"), 1);
        }
    }
    tx.commit().expect("commit");
}

// ---------------------------------------------------------------- harness

struct Config {
    rows: usize,
    pairs: usize,
    test_mode: bool,
}

impl Config {
    fn from_env() -> Config {
        let args: Vec<String> = std::env::args().collect();
        // As criterion decides: without `--bench` (cargo test) or with
        // `--test`, each benchmark runs once as a smoke test.
        let test_mode = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
        let rows = env_usize("MELDB_BENCH_ROWS").unwrap_or(10_000).max(1);
        let pairs = env_usize("MELDB_BENCH_PAIRS")
            .unwrap_or(if test_mode { 1 } else { 7 })
            .max(1);
        Config {
            rows,
            pairs,
            test_mode,
        }
    }
}

fn env_usize(name: &str) -> Option<usize> {
    let text = std::env::var(name).ok()?;
    let text = text.replace('_', "");
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name} must be a whole number, not {text:?}"),
    }
}

/// One engine's side of a job: an untimed setup giving a fresh state, the
/// timed work, and an untimed check whose result must match the other side.
struct Side<Setup, Run, Check> {
    setup: Setup,
    run: Run,
    check: Check,
}

fn side<S, Setup, Run, Check>(setup: Setup, run: Run, check: Check) -> Side<Setup, Run, Check>
where
    Setup: Fn() -> S,
    Run: Fn(&mut S),
    Check: Fn(&mut S) -> i64,
{
    Side { setup, run, check }
}

/// What a job is called and how its throughput is worded.
struct Job {
    name: &'static str,
    /// What the two sides are called (`["meldb", "plain"]` for most jobs).
    sides: [&'static str; 2],
    /// Units of work per run (rows, increments, changes).
    units: usize,
    plain_rate: &'static str,
    meldb_rate: &'static str,
}

/// Runs one side once outside criterion: setup, timed work, the check if
/// asked, drop.
fn time_once<S>(
    side: &Side<impl Fn() -> S, impl Fn(&mut S), impl Fn(&mut S) -> i64>,
    check: bool,
) -> (Duration, Option<i64>) {
    let mut state = (side.setup)();
    let start = Instant::now();
    (side.run)(&mut state);
    let elapsed = start.elapsed();
    let checked = check.then(|| (side.check)(&mut state));
    drop(black_box(state));
    (elapsed, checked)
}

/// Runs the criterion group `meldb` vs `plain` for one job, then the
/// alternating pairs; returns the ratio line if the group was not filtered
/// out.
fn compare<M, P>(
    c: &mut Criterion,
    config: &Config,
    job: &Job,
    meldb: Side<impl Fn() -> M, impl Fn(&mut M), impl Fn(&mut M) -> i64>,
    plain: Side<impl Fn() -> P, impl Fn(&mut P), impl Fn(&mut P) -> i64>,
) -> Option<String> {
    let ran = Cell::new(false);
    let mut group = c.benchmark_group(job.name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(job.units as u64));
    let [left, right] = job.sides;
    group.bench_function(BenchmarkId::new(left, config.rows), |b| {
        b.iter_batched_ref(
            || {
                ran.set(true);
                (meldb.setup)()
            },
            |state| (meldb.run)(state),
            BatchSize::PerIteration,
        )
    });
    group.bench_function(BenchmarkId::new(right, config.rows), |b| {
        b.iter_batched_ref(
            || {
                ran.set(true);
                (plain.setup)()
            },
            |state| (plain.run)(state),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    if !ran.get() {
        return None;
    }

    let mut meldb_times = Vec::with_capacity(config.pairs);
    let mut plain_times = Vec::with_capacity(config.pairs);
    let mut ratios = Vec::with_capacity(config.pairs);
    for pair in 0..config.pairs {
        let first = pair == 0;
        // Alternate which side goes first, so a drift in machine load
        // favours neither.
        let ((m, m_check), (p, p_check)) = if pair % 2 == 0 {
            let m = time_once(&meldb, first);
            (m, time_once(&plain, first))
        } else {
            let p = time_once(&plain, first);
            (time_once(&meldb, first), p)
        };
        assert_eq!(
            m_check, p_check,
            "{}: meldb and plain did different work",
            job.name
        );
        meldb_times.push(m);
        plain_times.push(p);
        ratios.push(m.as_secs_f64() / p.as_secs_f64());
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let rate = |times: &mut Vec<Duration>| {
        times.sort();
        job.units as f64 / median_duration(times).as_secs_f64()
    };
    let spread = if config.pairs == 1 {
        "1 pair".to_owned()
    } else {
        format!("median of {} pairs, range {lo:.2}-{hi:.2}x", config.pairs)
    };
    let line = format!(
        "{}: {left}/{right} = {:.2}x ({right} {} {}/s, {left} {} {}/s; N={}, {spread})",
        job.name,
        median(&mut ratios),
        si(rate(&mut plain_times)),
        job.plain_rate,
        si(rate(&mut meldb_times)),
        job.meldb_rate,
        config.rows,
    );
    println!("{line}");
    Some(line)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn median_duration(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

/// 158000.0 -> "158k".
fn si(rate: f64) -> String {
    if rate >= 10e6 {
        format!("{:.0}M", rate / 1e6)
    } else if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.0}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

// ---------------------------------------------------------------- jobs

fn insert(c: &mut Criterion, config: &Config, schema: &Schema, data: &Data) -> Option<String> {
    let count_rows = |conn: &Connection| count(conn, "SELECT count(*) FROM t");
    compare(
        c,
        config,
        &Job {
            sides: ["meldb", "plain"],
            name: "insert",
            units: data.len(),
            plain_rate: "rows",
            meldb_rate: "rows",
        },
        side(
            || fresh_meldb(schema),
            |f| meldb_insert(&mut f.db, &data.rows),
            |f| count_rows(f.db.conn()),
        ),
        side(
            fresh_plain,
            |f| plain_insert(&f.db, &data.rows),
            |f| count_rows(&f.db),
        ),
    )
}

fn update(c: &mut Criterion, config: &Config, schema: &Schema, data: &Data) -> Option<String> {
    let meldb_template = OnceCell::new();
    let plain_template = OnceCell::new();
    let updated = |conn: &Connection| {
        let mut stmt = conn
            .prepare("SELECT a FROM t WHERE id = ?1")
            .expect("prepare");
        let mut same = 0;
        for (r, a) in data.rows.iter().zip(&data.new_a) {
            let got: String = stmt.query_row([&r.id], |row| row.get(0)).expect("read a");
            same += i64::from(&got == a);
        }
        same
    };
    compare(
        c,
        config,
        &Job {
            sides: ["meldb", "plain"],
            name: "update",
            units: data.len(),
            plain_rate: "rows",
            meldb_rate: "rows",
        },
        side(
            || {
                meldb_template
                    .get_or_init(|| Template::meldb(schema, |s| meldb_insert(s, &data.rows)))
                    .open_meldb(schema)
            },
            |f| {
                let mut tx = f.db.transaction().expect("begin");
                for (r, a) in data.rows.iter().zip(&data.new_a) {
                    tx.set("t", r.id.as_str(), "a", a.as_str()).expect("set");
                }
                tx.commit().expect("commit");
            },
            |f| updated(f.db.conn()),
        ),
        side(
            || {
                plain_template
                    .get_or_init(|| Template::plain(|conn| plain_insert(conn, &data.rows)))
                    .open_plain()
            },
            |f| {
                let tx = f.db.unchecked_transaction().expect("begin");
                {
                    let mut stmt = tx
                        .prepare_cached("UPDATE t SET a = ?1 WHERE id = ?2")
                        .expect("prepare");
                    for (r, a) in data.rows.iter().zip(&data.new_a) {
                        assert_eq!(stmt.execute((a, &r.id)).expect("update"), 1);
                    }
                }
                tx.commit().expect("commit");
            },
            |f| updated(&f.db),
        ),
    )
}

fn counter_hot(c: &mut Criterion, config: &Config, schema: &Schema, data: &Data) -> Option<String> {
    let hot = data.rows[0].id.as_str();
    let total = |conn: &Connection| count(conn, "SELECT sum(n) FROM counter");
    compare(
        c,
        config,
        &Job {
            sides: ["meldb", "plain"],
            name: "counter_hot",
            units: data.len(),
            plain_rate: "increments",
            meldb_rate: "increments",
        },
        side(
            || {
                let mut f = fresh_meldb(schema);
                meldb_insert_counters(&mut f.db, std::iter::once(hot));
                f
            },
            |f| meldb_increment(&mut f.db, std::iter::repeat_n(hot, data.len())),
            |f| total(f.db.conn()),
        ),
        side(
            || {
                let f = fresh_plain();
                plain_insert_counters(&f.db, std::iter::once(hot));
                f
            },
            |f| plain_increment(&f.db, std::iter::repeat_n(hot, data.len())),
            |f| total(&f.db),
        ),
    )
}

fn counter_many(
    c: &mut Criterion,
    config: &Config,
    schema: &Schema,
    data: &Data,
) -> Option<String> {
    let keys = || data.rows.iter().map(|r| r.id.as_str());
    let meldb_template = OnceCell::new();
    let plain_template = OnceCell::new();
    let total = |conn: &Connection| count(conn, "SELECT sum(n) FROM counter WHERE n = 1");
    compare(
        c,
        config,
        &Job {
            sides: ["meldb", "plain"],
            name: "counter_many",
            units: data.len(),
            plain_rate: "increments",
            meldb_rate: "increments",
        },
        side(
            || {
                meldb_template
                    .get_or_init(|| Template::meldb(schema, |s| meldb_insert_counters(s, keys())))
                    .open_meldb(schema)
            },
            |f| meldb_increment(&mut f.db, keys()),
            |f| total(f.db.conn()),
        ),
        side(
            || {
                plain_template
                    .get_or_init(|| Template::plain(|conn| plain_insert_counters(conn, keys())))
                    .open_plain()
            },
            |f| plain_increment(&f.db, keys()),
            |f| total(&f.db),
        ),
    )
}

/// A meldb replica holding every row, shared by `apply` and `changes_since`.
struct Source {
    store: Store,
    _dir: TempDir,
}

fn source<'a>(cell: &'a OnceCell<Source>, schema: &Schema, data: &Data) -> &'a Source {
    cell.get_or_init(|| {
        let Fresh { mut db, _dir } = fresh_meldb(schema);
        meldb_insert(&mut db, &data.rows);
        Source { store: db, _dir }
    })
}

fn apply(
    c: &mut Criterion,
    config: &Config,
    schema: &Schema,
    data: &Data,
    replica: &OnceCell<Source>,
) -> Option<String> {
    let changeset: OnceCell<Changeset> = OnceCell::new();
    let count_rows = |conn: &Connection| count(conn, "SELECT count(*) FROM t");
    compare(
        c,
        config,
        &Job {
            sides: ["meldb", "plain"],
            name: "apply",
            units: data.len(),
            plain_rate: "rows inserted",
            meldb_rate: "changes applied",
        },
        side(
            || {
                let changeset = changeset.get_or_init(|| {
                    let cs = source(replica, schema, data)
                        .store
                        .changes_since(&VersionVector::new())
                        .expect("changes_since");
                    assert_eq!(cs.len(), data.len());
                    cs
                });
                (fresh_meldb(schema), changeset, 0)
            },
            |(f, changeset, applied)| {
                *applied = f.db.apply(changeset).expect("apply").applied();
            },
            |(f, _, applied)| {
                assert_eq!(*applied, data.len(), "every change applies");
                count_rows(f.db.conn())
            },
        ),
        side(
            fresh_plain,
            |f| plain_insert(&f.db, &data.rows),
            |f| count_rows(&f.db),
        ),
    )
}

fn changes_since(
    c: &mut Criterion,
    config: &Config,
    schema: &Schema,
    data: &Data,
    replica: &OnceCell<Source>,
) -> Option<String> {
    let plain_db = OnceCell::new();
    let everything = VersionVector::new();
    compare(
        c,
        config,
        &Job {
            sides: ["meldb", "plain"],
            name: "changes_since",
            units: data.len(),
            plain_rate: "rows selected",
            meldb_rate: "rows",
        },
        side(
            || (source(replica, schema, data), None),
            |(source, out): &mut (&Source, Option<Changeset>)| {
                *out = Some(source.store.changes_since(&everything).expect("changes"));
            },
            |(_, out)| out.as_ref().map_or(0, |cs| cs.len() as i64),
        ),
        side(
            || {
                let f = plain_db.get_or_init(|| {
                    let f = fresh_plain();
                    plain_insert(&f.db, &data.rows);
                    f
                });
                (f, Vec::new())
            },
            |(f, out): &mut (&Fresh<Connection>, Vec<PlainRow>)| {
                let mut stmt =
                    f.db.prepare_cached("SELECT id, a, b, c FROM t")
                        .expect("prepare");
                *out = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .expect("select")
                    .collect::<Result<_, _>>()
                    .expect("read rows");
            },
            |(_, out)| out.len() as i64,
        ),
    )
}

/// A replica that updated column `a` of every row while another replica
/// updated column `b` of the same rows: applying the other's changes gives
/// one real conflict per row. The template holds the first replica; the
/// changeset holds the second's updates.
struct Conflicts {
    template: Template,
    changeset: Changeset,
}

fn conflicts_fixture(schema: &Schema, data: &Data) -> Conflicts {
    let mut other = Store::open_in_memory(schema).expect("open the other replica");
    let mut changeset = None;
    let template = Template::meldb(schema, |store| {
        meldb_insert(store, &data.rows);
        other
            .apply(&store.changes_since(&VersionVector::new()).expect("changes"))
            .expect("apply base");
        let mut tx = store.transaction().expect("begin");
        for (r, a) in data.rows.iter().zip(&data.new_a) {
            tx.set("t", r.id.as_str(), "a", a.as_str()).expect("set a");
        }
        tx.commit().expect("commit");
        let mut tx = other.transaction().expect("begin");
        for r in &data.rows {
            tx.set("t", r.id.as_str(), "b", r.b + 1).expect("set b");
        }
        tx.commit().expect("commit");
        changeset = Some(
            other
                .changes_since(&store.version_vector())
                .expect("changes"),
        );
    });
    let changeset = changeset.expect("the fill ran");
    assert_eq!(changeset.len(), data.len());
    Conflicts {
        template,
        changeset,
    }
}

/// Rows whose `b` the other replica's update reached.
fn bumped(conn: &Connection, data: &Data) -> i64 {
    let mut stmt = conn
        .prepare("SELECT b FROM t WHERE id = ?1")
        .expect("prepare");
    data.rows
        .iter()
        .map(|r| {
            let b: i64 = stmt.query_row([&r.id], |row| row.get(0)).expect("read b");
            i64::from(b == r.b + 1)
        })
        .sum()
}

/// How a conflict job's replica is set up before it applies.
#[derive(Clone, Copy)]
enum Resolving {
    /// No resolver: the CRDT merge stands and is logged.
    None,
    /// A resolver that looks at both versions and accepts the merge.
    Accept,
    /// A resolver that builds its own row: a correcting write per row.
    Merge,
}

/// A conflict job's state: the replica, and the changes it will apply.
type ConflictState<'a> = (Fresh<Store>, &'a Changeset);

fn conflict_side<'a>(
    fixture: &'a OnceCell<Conflicts>,
    schema: &'a Schema,
    data: &'a Data,
    resolving: Resolving,
) -> Side<
    impl Fn() -> ConflictState<'a> + 'a,
    impl Fn(&mut ConflictState<'a>),
    impl Fn(&mut ConflictState<'a>) -> i64 + 'a,
> {
    side(
        move || {
            let fixture = fixture.get_or_init(|| conflicts_fixture(schema, data));
            let mut f = fixture.template.open_meldb(schema);
            let resolver = match resolving {
                Resolving::None => None,
                Resolving::Accept => Some(meldb::Resolver::new("accept", |c| {
                    if c.local().is_some() && c.incoming().is_some() {
                        meldb::Resolution::Accept
                    } else {
                        meldb::Resolution::Pass
                    }
                })),
                Resolving::Merge => Some(meldb::Resolver::new("merge", |c| match c.merged() {
                    Some(row) => meldb::Resolution::Merge(row.clone().with("c", 1.5)),
                    None => meldb::Resolution::Pass,
                })),
            };
            if let Some(r) = resolver {
                f.db.add_resolver("t", r).expect("add resolver");
            }
            (f, &fixture.changeset)
        },
        |(f, changeset)| {
            let report = f.db.apply(changeset).expect("apply");
            assert_eq!(report.concurrent, changeset.len());
        },
        move |(f, _)| bumped(f.db.conn(), data),
    )
}

fn conflicts(
    c: &mut Criterion,
    config: &Config,
    schema: &Schema,
    data: &Data,
    fixture: &OnceCell<Conflicts>,
) -> Option<String> {
    let plain_template = OnceCell::new();
    compare(
        c,
        config,
        &Job {
            sides: ["meldb", "plain"],
            name: "conflicts",
            units: data.len(),
            plain_rate: "rows updated",
            meldb_rate: "conflicts merged",
        },
        conflict_side(fixture, schema, data, Resolving::None),
        side(
            || {
                plain_template
                    .get_or_init(|| Template::plain(|conn| plain_insert(conn, &data.rows)))
                    .open_plain()
            },
            |f| {
                let tx = f.db.unchecked_transaction().expect("begin");
                {
                    let mut stmt = tx
                        .prepare_cached("UPDATE t SET b = ?1 WHERE id = ?2")
                        .expect("prepare");
                    for r in &data.rows {
                        assert_eq!(stmt.execute((r.b + 1, &r.id)).expect("update"), 1);
                    }
                }
                tx.commit().expect("commit");
            },
            |f| bumped(&f.db, data),
        ),
    )
}

fn resolver_overhead(
    c: &mut Criterion,
    config: &Config,
    schema: &Schema,
    data: &Data,
    fixture: &OnceCell<Conflicts>,
    resolving: Resolving,
) -> Option<String> {
    let (name, left) = match resolving {
        Resolving::Accept => ("resolver_accept", "accept"),
        _ => ("resolver_merge", "merge"),
    };
    compare(
        c,
        config,
        &Job {
            sides: [left, "none"],
            name,
            units: data.len(),
            plain_rate: "conflicts",
            meldb_rate: "conflicts",
        },
        conflict_side(fixture, schema, data, resolving),
        conflict_side(fixture, schema, data, Resolving::None),
    )
}

fn main() {
    let config = Config::from_env();
    let schema = Schema::from_toml_str(SCHEMA, "bench.toml").expect("bench schema");
    let data = Data::new(config.rows);
    let mut c = Criterion::default().configure_from_args();
    if !config.test_mode {
        println!(
            "meldb vs plain SQLite: N = {} rows, {} alternating pair(s) per ratio",
            config.rows, config.pairs
        );
    }

    let replica = OnceCell::new();
    let fixture = OnceCell::new();
    let lines: Vec<String> = [
        insert(&mut c, &config, &schema, &data),
        update(&mut c, &config, &schema, &data),
        counter_hot(&mut c, &config, &schema, &data),
        counter_many(&mut c, &config, &schema, &data),
        apply(&mut c, &config, &schema, &data, &replica),
        changes_since(&mut c, &config, &schema, &data, &replica),
        conflicts(&mut c, &config, &schema, &data, &fixture),
        resolver_overhead(&mut c, &config, &schema, &data, &fixture, Resolving::Accept),
        resolver_overhead(&mut c, &config, &schema, &data, &fixture, Resolving::Merge),
    ]
    .into_iter()
    .flatten()
    .collect();

    if !lines.is_empty() {
        println!();
        if config.test_mode {
            println!("ratio summary (smoke test: one pair, not a measurement):");
        } else {
            println!("ratio summary (time of the left side / the right side, same run):");
        }
        for line in &lines {
            println!("  {line}");
        }
    }
    c.final_summary();
}
