//! Golden fixtures of meldb's byte formats: `v1/` (changeset frames
//! format 1, protocol 1, database format 1), captured before the codec
//! rewrite (issue 9); `v2/` (database format 2: site bindings and
//! mutation state by token and site; the same changeset and protocol
//! bytes); `v3/` (protocol version 2: a hello names its namespace;
//! the same changeset bytes and databases as `v2/`); and `v4/` (per-write
//! metadata and notice kinds: changeset format 2, protocol 3, database
//! format 3). Every check runs on each, so today's build reads all four;
//! the writer is compared with the newest. See `tests/fixtures/README.md` for what each
//! file is and the rule: fixtures of an existing format version are never
//! regenerated; a new format version adds new fixture files.
//!
//! The checks:
//!
//! - every changeset file decodes, and re-encoding gives identical bytes;
//!   applied to a fresh store, each gives the recorded digest;
//! - every recorded protocol frame decodes and re-encodes identically;
//! - every database (a copy: opening may write) opens and reads back the
//!   recorded rows, digest, version vector, clock, held count, conflict log,
//!   pending queue, rejections and mutation failures; the file's raw tables
//!   hold the recorded bytes;
//! - the recorded conversation, replayed against a relay opened from a copy
//!   of the fixture database, gets the recorded answers byte for byte and
//!   leaves the relay in the recorded state;
//! - the digest of a fixed set of rows is the recorded one;
//! - today's writer, run through the same generator, writes every fixture
//!   of the newest version byte for byte (the databases compared through
//!   their dumps);
//! - a format-1 database opened today gets format 2's layout, and every
//!   older database the newest format's layout.
//!
//! Regenerate only into an empty directory (a new format version):
//! `MELDB_FIXTURES_DIR=tests/fixtures/v4 cargo test --test fixtures -- --ignored write_fixtures`.

mod common;

use common::{site, T0};
use meldb::sync::Message;
use meldb::{
    codec::{self, HEADER_LEN, MAX_MESSAGE_PAYLOAD},
    sync::{Access, Authorize, Grant, Session, SessionConfig},
    Changeset, ManualTime, MutatorError, Resolution, Resolver, Schema, Store, StoreOptions,
    Transaction, Value, VersionVector, Writer,
};
use serde::{Deserialize, Serialize};
use std::{
    error::Error,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

type Res<T = ()> = Result<T, Box<dyn Error>>;

/// The fixtures of format version 1.
fn v1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// The fixtures of database format 2 (site bindings, mutation state by
/// token and site); its changeset and protocol files are format 1's and
/// protocol 1's, byte for byte.
fn v2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2")
}

/// The fixtures of protocol version 2 (a hello names its namespace);
/// its changeset files and databases are `v2/`'s, byte for byte and dump
/// for dump.
fn v3() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3")
}

/// The fixtures of per-write metadata and notice kinds: changeset frame
/// format 2 (a row's write metadata), protocol version 3 (metadata on
/// batch rows and pushed mutations, a notice's kind), database format 3
/// (metadata in row blobs, the conflict log and the pending queue; kinds
/// of received notices). The client writes and queues with metadata.
fn v4() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v4")
}

/// The fixtures of protocol version 4 (a hello's codecs, a Want's form,
/// batch and push bodies); every other file is `v4/`'s, byte for byte.
fn v5() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v5")
}

/// What today's writer writes.
fn newest() -> PathBuf {
    v5()
}

/// Every fixture version this build reads: each is checked.
fn fixture_dirs() -> [PathBuf; 5] {
    [v1(), v2(), v3(), v4(), v5()]
}

/// The example schemas with a database fixture each.
const EXAMPLES: [&str; 3] = ["booking", "inventory", "todo"];

/// The recorded sync sessions, in order, against one relay.
const SESSIONS: usize = 3;

/// The line that separates a dump's app-level part from its stored part.
const STORED: &str = "== stored (raw SQLite tables, as written) ==\n";

// ---------------------------------------------------------------------------
// Dumps: one text per database, used by the generator and by the tests.

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => format!("{f:?}"),
        Value::Text(t) => serde_json::to_string(t).unwrap_or_default(),
        Value::Blob(b) => format!("x'{}'", hex(b)),
    }
}

fn values_text(values: &[Value]) -> String {
    values
        .iter()
        .map(value_text)
        .collect::<Vec<_>>()
        .join(" | ")
}

fn row_json(row: Option<&meldb::Row>) -> String {
    row.map_or("none".into(), |r| r.to_json().to_string())
}

fn vv_text(vv: &VersionVector) -> String {
    let mut out = String::new();
    for (site, ranges) in vv.iter() {
        let ranges: Vec<String> = ranges
            .ranges()
            .iter()
            .map(|(a, b)| format!("{a}..={b}"))
            .collect();
        let _ = writeln!(out, "  {site} {}", ranges.join(","));
    }
    out
}

/// Every row of an SQL query, as text lines, with the column names first.
fn sql_rows(conn: &rusqlite::Connection, sql: &str) -> Res<String> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let n = names.len();
    let mut out = format!("  ({})\n", names.join(", "));
    let rows = stmt.query_map([], |r| {
        (0..n)
            .map(|i| r.get_ref(i).map(Value::from))
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    for row in rows {
        let _ = writeln!(out, "  {}", values_text(&row?));
    }
    Ok(out)
}

/// What an app reads back through the API and SQL views: the part of the
/// dump compared after opening a copy with `Store`.
fn app_dump(store: &Store) -> Res<String> {
    let mut out = String::new();
    let schema = store.schema();
    let _ = writeln!(out, "schema {} version {}", schema.name, schema.version);
    let _ = writeln!(out, "site {}", store.site_id());
    let _ = writeln!(out, "clock {}", store.clock());
    let _ = writeln!(out, "digest {}", hex(&store.digest()?));
    let _ = writeln!(out, "version_vector\n{}", vv_text(&store.version_vector()));
    let _ = writeln!(out, "held {}", store.held_count()?);
    for table in &schema.tables {
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
        let _ = write!(
            out,
            "table {}\n{}",
            table.name,
            sql_rows(store.conn(), &sql)?
        );
    }
    out.push_str("conflicts (newest first)\n");
    for c in store.conflicts(None, None, usize::MAX)? {
        let _ = writeln!(
            out,
            "  #{} at_ms={} table={} key={} outcome={} resolver={:?} reason={:?} writer={} \
             writer_site={} open={}",
            c.id,
            c.at_ms,
            c.table,
            values_text(c.key.values()),
            c.outcome,
            c.resolver,
            c.reason,
            serde_json::to_string(&c.writer)?,
            c.writer_site,
            c.open,
        );
        let _ = writeln!(out, "    local {}", row_json(c.local.as_ref()));
        let _ = writeln!(out, "    incoming {}", row_json(c.incoming.as_ref()));
        let _ = writeln!(out, "    merged {}", row_json(c.merged.as_ref()));
        let _ = writeln!(out, "    result {}", row_json(c.result.as_ref()));
        // Only when present, so the dumps of databases before format 3 read
        // as they were recorded.
        for (side, meta) in [
            ("local", &c.local_metadata),
            ("incoming", &c.incoming_metadata),
        ] {
            if let Some(meta) = meta {
                let _ = writeln!(out, "    {side}_metadata {:?}", meta.as_str());
            }
        }
    }
    out.push_str("pending mutations\n");
    for m in store.pending_mutations()? {
        let _ = write!(out, "  {} {} {}", m.id, m.name, m.args);
        if let Some(meta) = &m.meta {
            let _ = write!(out, " metadata={:?}", meta.as_str());
        }
        out.push('\n');
    }
    out.push_str("rejections\n");
    for r in store.rejections()? {
        let _ = writeln!(
            out,
            "  authority={} seq={} writer={} table={} key={} reason={:?} at_ms={}\n    rejected {}",
            r.authority,
            r.seq,
            r.writer,
            r.table,
            values_text(r.key.values()),
            r.reason,
            r.at_ms,
            r.rejected,
        );
        if r.kind != meldb::NoticeKind::Rejected {
            let _ = writeln!(out, "    kind {:?}", r.kind);
        }
    }
    out.push_str("mutation failures\n");
    for f in store.mutation_failures()? {
        let _ = writeln!(out, "  {} {} {:?}", f.id, f.name, f.error);
    }
    Ok(out)
}

/// Every table and index definition and every row of every table (meta
/// data, base tables with their metadata blobs, undo images, the held and
/// pending queues) as plain SQLite reads them, without meldb.
fn stored_dump(conn: &rusqlite::Connection) -> Res<String> {
    let mut out = String::from("sqlite_master\n");
    out.push_str(&sql_rows(
        conn,
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
    )?);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in tables {
        let width = conn
            .prepare(&format!("SELECT * FROM \"{table}\""))?
            .column_count();
        let order: Vec<String> = (1..=width).map(|i| i.to_string()).collect();
        let sql = format!("SELECT * FROM \"{table}\" ORDER BY {}", order.join(", "));
        let _ = write!(out, "table {table}\n{}", sql_rows(conn, &sql)?);
    }
    Ok(out)
}

/// Copies `file` into a fresh temporary directory (fixtures are never
/// opened in place: opening may write).
fn copy_to_temp(file: &Path) -> Res<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let name = file.file_name().ok_or("a fixture path without a name")?;
    let copy = dir.path().join(name);
    fs::copy(file, &copy).map_err(|e| format!("copying {}: {e}", file.display()))?;
    Ok((dir, copy))
}

/// Opens a copy of a database fixture with `Store` (reading time from a
/// fixed clock) and returns its app-level dump.
fn app_dump_of_file(db: &Path, schema: &Schema) -> Res<String> {
    let (_dir, copy) = copy_to_temp(db)?;
    let store = StoreOptions::new()
        .time_source(Arc::new(ManualTime::new(T0)))
        .open(&copy, schema)?;
    app_dump(&store)
}

/// Opens a copy of a database fixture with plain SQLite (no meldb code
/// runs) and returns its stored dump.
fn stored_dump_of_file(db: &Path) -> Res<String> {
    let (_dir, copy) = copy_to_temp(db)?;
    stored_dump(&rusqlite::Connection::open(&copy)?)
}

/// The whole expected text of a database fixture.
fn expect_text(db: &Path, schema: &Schema) -> Res<String> {
    Ok(format!(
        "{}{STORED}{}",
        app_dump_of_file(db, schema)?,
        stored_dump_of_file(db)?
    ))
}

fn read_text(path: &Path) -> Res<String> {
    fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()).into())
}

fn read_bytes(path: &Path) -> Res<Vec<u8>> {
    fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()).into())
}

fn split_expect(text: &str) -> Res<(&str, &str)> {
    text.split_once(STORED)
        .ok_or_else(|| "an expect file without its stored part".into())
}

// ---------------------------------------------------------------------------
// Replicas and scenarios.

fn schema_of(name: &str) -> Res<Schema> {
    if name == "box_office" {
        Ok(Schema::load(v1().join("box_office.toml"))?)
    } else {
        Ok(common::load_schema(name))
    }
}

fn file_replica(path: &Path, schema: &Schema, n: u8, time: &ManualTime) -> meldb::Result<Store> {
    Ok(StoreOptions::new()
        .site_id(site(n))
        .time_source(Arc::new(time.clone()))
        .open(path, schema)?)
}

fn tick(time: &ManualTime) {
    time.advance(Duration::from_secs(1));
}

/// Closes a file store and checks the database file alone is complete.
fn close(store: Store) -> Res {
    let path = PathBuf::from(store.path());
    drop(store);
    for suffix in ["-wal", "-journal"] {
        let mut side = path.clone().into_os_string();
        side.push(suffix);
        if Path::new(&side).exists() {
            return Err(format!("{} left a {suffix} file", path.display()).into());
        }
    }
    Ok(())
}

fn key2(a: &str, b: &str) -> Vec<Value> {
    vec![a.into(), b.into()]
}

/// A resolver that accepts the merge: its decision is logged as `accepted`.
fn accept_all() -> Resolver {
    Resolver::new("fixture accepts", |_| Resolution::Accept)
}

/// Site ids: 1 and 2 are two replicas that edit concurrently, 3 is a peer
/// whose clock is an hour ahead (its rows are held).
const AHEAD_MS: u64 = 3_600_000;

/// Seats and bookings: rows of every kind the schema has (lww, or_set),
/// concurrent edits (seat: auto-merged; booking: a resolver accepts),
/// deletes, a re-insert after delete, a deleted remote row, a held row.
fn build_booking(path: &Path) -> Res {
    let schema = common::booking();
    let time = ManualTime::new(T0);
    let ahead = ManualTime::new(T0 + AHEAD_MS);
    let mut a = file_replica(path, &schema, 1, &time)?;
    let mut b = common::replica(&schema, 2, &time)?;
    let mut f = common::replica(&schema, 3, &ahead)?;
    a.add_resolver("booking", accept_all())?;
    a.write(|tx| {
        tx.insert(
            "seat",
            &[
                ("show", "S1".into()),
                ("seat", "A1".into()),
                ("status", "held".into()),
                ("booked_by", "ann".into()),
                ("hold_expires", (T0 as i64 + 600_000).into()),
            ],
        )?;
        tx.insert("seat", &[("show", "S1".into()), ("seat", "A2".into())])?;
        tx.insert(
            "booking",
            &[
                ("id", "b1".into()),
                ("show", "S1".into()),
                ("seat", "A1".into()),
                ("customer", "ann".into()),
            ],
        )?;
        tx.add_to_set("booking", "b1", "guests", "ann")?;
        tx.add_to_set("booking", "b1", "guests", "bob")
    })?;
    tick(&time);
    b.write(|tx| {
        tx.insert(
            "seat",
            &[
                ("show", "S1".into()),
                ("seat", "B1".into()),
                ("status", "booked".into()),
                ("booked_by", "bea".into()),
            ],
        )?;
        tx.insert(
            "booking",
            &[
                ("id", "b2".into()),
                ("show", "S1".into()),
                ("seat", "B1".into()),
                ("customer", "bea".into()),
                ("expires_at", (T0 as i64 + 86_400_000).into()),
                ("notes", "aisle, please".into()),
            ],
        )?;
        tx.add_to_set("booking", "b2", "guests", "bea")
    })?;
    tick(&time);
    common::sync(&a, &mut b)?;
    common::sync(&b, &mut a)?;
    tick(&time);
    a.write(|tx| {
        tx.set("seat", key2("S1", "A1"), "status", "booked")?;
        tx.remove_from_set("booking", "b1", "guests", "bob")?;
        tx.set("booking", "b1", "notes", "window")
    })?;
    b.write(|tx| {
        tx.set("seat", key2("S1", "A1"), "booked_by", "bea")?;
        tx.add_to_set("booking", "b1", "guests", "cy")?;
        tx.set("booking", "b1", "notes", "front row")
    })?;
    tick(&time);
    a.write(|tx| tx.delete("seat", key2("S1", "A2")))?;
    tick(&time);
    a.write(|tx| {
        tx.insert(
            "seat",
            &[
                ("show", "S1".into()),
                ("seat", "A2".into()),
                ("status", "held".into()),
            ],
        )?;
        tx.delete("booking", "b2")
    })?;
    tick(&time);
    let report = common::sync(&b, &mut a)?;
    assert_eq!(report.concurrent, 2, "booking: two concurrent rows");
    f.write(|tx| {
        tx.insert(
            "seat",
            &[
                ("show", "S2".into()),
                ("seat", "C1".into()),
                ("status", "booked".into()),
            ],
        )
    })?;
    let report = common::sync(&f, &mut a)?;
    assert_eq!(report.held.len(), 1, "booking: one held row");
    close(a)
}

/// Items and shelf locations: lww text and real, pn and g counters, an
/// or_set; concurrent sales, price edits and tag edits (item: auto-merged;
/// location: a resolver accepts), deletes, a re-insert, a held row.
fn build_inventory(path: &Path) -> Res {
    let schema = common::inventory();
    let time = ManualTime::new(T0);
    let ahead = ManualTime::new(T0 + AHEAD_MS);
    let mut a = file_replica(path, &schema, 1, &time)?;
    let mut b = common::replica(&schema, 2, &time)?;
    let mut f = common::replica(&schema, 3, &ahead)?;
    a.add_resolver("location", accept_all())?;
    a.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "A1".into()),
                ("name", "Apple".into()),
                ("price", 0.5.into()),
                ("stock", 10.into()),
            ],
        )?;
        tx.increment("item", "A1", "sold", 2)?;
        tx.add_to_set("item", "A1", "tags", "fresh")?;
        tx.add_to_set("item", "A1", "tags", "red")?;
        tx.insert("item", &[("sku", "C3".into()), ("name", "Cherry".into())])?;
        tx.insert(
            "location",
            &[
                ("warehouse", "north".into()),
                ("sku", "A1".into()),
                ("shelf", "top".into()),
                ("quantity", 6.into()),
            ],
        )
    })?;
    tick(&time);
    b.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "B2".into()),
                ("name", "Banana".into()),
                ("price", 0.25.into()),
                ("stock", 40.into()),
            ],
        )?;
        tx.add_to_set("item", "B2", "tags", "yellow")
    })?;
    tick(&time);
    common::sync(&a, &mut b)?;
    common::sync(&b, &mut a)?;
    tick(&time);
    a.write(|tx| {
        tx.increment("item", "A1", "stock", -1)?;
        tx.increment("item", "A1", "sold", 1)?;
        tx.set("item", "A1", "price", 0.55)?;
        tx.remove_from_set("item", "A1", "tags", "red")?;
        tx.increment("location", key2("north", "A1"), "quantity", -1)
    })?;
    b.write(|tx| {
        tx.increment("item", "A1", "stock", -2)?;
        tx.increment("item", "A1", "sold", 2)?;
        tx.set("item", "A1", "price", 0.6)?;
        tx.add_to_set("item", "A1", "tags", "sale")?;
        tx.increment("location", key2("north", "A1"), "quantity", -2)?;
        tx.set("location", key2("north", "A1"), "shelf", "bottom")
    })?;
    tick(&time);
    a.write(|tx| {
        tx.delete("item", "C3")?;
        tx.delete("item", "B2")
    })?;
    tick(&time);
    a.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "C3".into()),
                ("name", "Cherry (new crop)".into()),
                ("stock", 5.into()),
            ],
        )
    })?;
    tick(&time);
    let report = common::sync(&b, &mut a)?;
    assert_eq!(report.concurrent, 2, "inventory: two concurrent rows");
    f.write(|tx| tx.insert("item", &[("sku", "Z9".into()), ("name", "Future".into())]))?;
    let report = common::sync(&f, &mut a)?;
    assert_eq!(report.held.len(), 1, "inventory: one held row");
    close(a)
}

/// Todos and lists: lww text and integers, a g_counter, or_sets;
/// concurrent edits (todo: auto-merged; list: a resolver accepts),
/// deletes, a re-insert, a held row.
fn build_todo(path: &Path) -> Res {
    let schema = common::todo();
    let time = ManualTime::new(T0);
    let ahead = ManualTime::new(T0 + AHEAD_MS);
    let mut a = file_replica(path, &schema, 1, &time)?;
    let mut b = common::replica(&schema, 2, &time)?;
    let mut f = common::replica(&schema, 3, &ahead)?;
    a.add_resolver("list", accept_all())?;
    a.write(|tx| {
        tx.insert(
            "todo",
            &[
                ("id", "t1".into()),
                ("title", "Buy milk".into()),
                ("note", "oat".into()),
            ],
        )?;
        tx.increment("todo", "t1", "likes", 1)?;
        tx.add_to_set("todo", "t1", "tags", "shopping")?;
        tx.insert("todo", &[("id", "t2".into()), ("title", "Call mum".into())])?;
        tx.insert("list", &[("id", "home".into()), ("name", "Home".into())])?;
        tx.add_to_set("list", "home", "members", "t1")?;
        tx.add_to_set("list", "home", "members", "t2")
    })?;
    tick(&time);
    b.write(|tx| {
        tx.insert(
            "todo",
            &[
                ("id", "t3".into()),
                ("title", "Fix bike".into()),
                ("urgent", 1.into()),
            ],
        )
    })?;
    tick(&time);
    common::sync(&a, &mut b)?;
    common::sync(&b, &mut a)?;
    tick(&time);
    a.write(|tx| {
        tx.set("todo", "t1", "title", "Buy oat milk")?;
        tx.increment("todo", "t1", "likes", 2)?;
        tx.remove_from_set("todo", "t1", "tags", "shopping")?;
        tx.remove_from_set("list", "home", "members", "t2")
    })?;
    b.write(|tx| {
        tx.set("todo", "t1", "done", 1)?;
        tx.increment("todo", "t1", "likes", 3)?;
        tx.add_to_set("todo", "t1", "tags", "today")?;
        tx.add_to_set("list", "home", "members", "t3")?;
        tx.set("list", "home", "name", "Home stuff")
    })?;
    tick(&time);
    a.write(|tx| {
        tx.delete("todo", "t2")?;
        tx.delete("todo", "t3")
    })?;
    tick(&time);
    a.write(|tx| {
        tx.insert(
            "todo",
            &[("id", "t2".into()), ("title", "Call mum back".into())],
        )
    })?;
    tick(&time);
    let report = common::sync(&b, &mut a)?;
    assert_eq!(report.concurrent, 2, "todo: two concurrent rows");
    f.write(|tx| {
        tx.insert(
            "todo",
            &[("id", "t9".into()), ("title", "From the future".into())],
        )
    })?;
    let report = common::sync(&f, &mut a)?;
    assert_eq!(report.held.len(), 1, "todo: one held row");
    close(a)
}

fn build_example(name: &str, path: &Path) -> Res {
    match name {
        "booking" => build_booking(path),
        "inventory" => build_inventory(path),
        "todo" => build_todo(path),
        other => Err(format!("no scenario for {other}").into()),
    }
}

// ---------------------------------------------------------------------------
// Changesets (from the inventory scenario) and the fixed-rows digest.

/// The non-empty version vector of the partial export.
fn partial_since() -> VersionVector {
    common::vv_of(&[(1, 11), (2, 8)])
}

const CHANGESET_FILES: [&str; 3] = [
    "changes-full.bin",
    "changes-partial.bin",
    "changes-frames.bin",
];

/// A fresh inventory replica (site 0x77) whose clock is a day past the
/// scenarios, so nothing it applies is held.
fn fresh_inventory() -> meldb::Result<Store> {
    Ok(StoreOptions::new()
        .site_id(site(0x77))
        .time_source(Arc::new(ManualTime::new(T0 + 86_400_000)))
        .open_in_memory(&common::inventory())?)
}

/// One line per changeset file: frames, rows, and the digest a fresh store
/// reaches after applying it.
fn changes_summary(dir: &Path) -> Res<String> {
    let mut out = String::new();
    for name in CHANGESET_FILES {
        let bytes = read_bytes(&dir.join(name))?;
        let frames = codec::decode_changeset_frames(&bytes)?;
        let rows: usize = frames.iter().map(Changeset::len).sum();
        let mut store = fresh_inventory()?;
        store.apply_bytes(&bytes)?;
        let _ = writeln!(
            out,
            "{name} frames={} rows={rows} digest_after_apply={}",
            frames.len(),
            hex(&store.digest()?)
        );
    }
    Ok(out)
}

fn write_changesets(inventory_db: &Path, out: &Path) -> Res {
    let (_dir, copy) = copy_to_temp(inventory_db)?;
    let store = StoreOptions::new()
        .time_source(Arc::new(ManualTime::new(T0)))
        .open(&copy, &common::inventory())?;
    let full = store.changes_since(&VersionVector::new())?;
    let partial = store.changes_since(&partial_since())?;
    assert!(
        !partial.is_empty() && partial.len() < full.len(),
        "the partial export is a proper part"
    );
    fs::write(
        out.join("changes-full.bin"),
        codec::encode_changeset_frames(&full),
    )?;
    fs::write(
        out.join("changes-partial.bin"),
        codec::encode_changeset_frames(&partial),
    )?;
    let pieces = full.split(1);
    assert!(pieces.len() >= 3, "several frames");
    let frames: Vec<u8> = pieces.iter().flat_map(codec::encode_changeset).collect();
    fs::write(out.join("changes-frames.bin"), frames)?;
    Ok(())
}

/// The digests of an empty inventory store and of a fixed set of rows
/// (every column kind, a deleted row), written by site 5 at T0.
fn fixed_digests() -> Res<String> {
    let schema = common::inventory();
    let time = ManualTime::new(T0);
    let mut store = common::replica(&schema, 5, &time)?;
    let empty = store.digest()?;
    store.write(|tx| {
        tx.insert(
            "item",
            &[
                ("sku", "A1".into()),
                ("name", "Apple".into()),
                ("price", 0.5.into()),
                ("stock", 10.into()),
            ],
        )?;
        tx.increment("item", "A1", "stock", -3)?;
        tx.increment("item", "A1", "sold", 3)?;
        tx.add_to_set("item", "A1", "tags", "fresh")?;
        tx.insert("item", &[("sku", "B2".into())])?;
        tx.insert(
            "location",
            &[
                ("warehouse", "north".into()),
                ("sku", "A1".into()),
                ("quantity", 7.into()),
            ],
        )
    })?;
    tick(&time);
    store.write(|tx| tx.delete("item", "B2"))?;
    Ok(format!(
        "empty inventory {}\nfixed rows {}\n",
        hex(&empty),
        hex(&store.digest()?)
    ))
}

// ---------------------------------------------------------------------------
// The conversation: a client of an authority relay, three sessions.

#[derive(Serialize, Deserialize)]
struct Book {
    show: String,
    seat: String,
    customer: String,
    booking: String,
}

fn book(show: &str, seat: &str, booking: &str) -> Book {
    Book {
        show: show.into(),
        seat: seat.into(),
        customer: "carol".into(),
        booking: booking.into(),
    }
}

/// The `book` mutator: takes a free seat (or one the customer holds) and
/// records the booking; a seat someone else booked is an error.
fn register(store: &mut Store) {
    store.register_mutator("book", |tx: &mut Transaction<'_>, b: Book| {
        let key = key2(&b.show, &b.seat);
        match tx.get("seat", key.clone())? {
            Some(row) => {
                if let Some((_, Value::Text(by))) = row.iter().find(|(c, _)| c == "booked_by") {
                    if *by != b.customer {
                        return Err(MutatorError::app(format!(
                            "seat {}/{} is taken by {by}",
                            b.show, b.seat
                        )));
                    }
                }
                tx.update(
                    "seat",
                    key,
                    &[
                        ("status", "booked".into()),
                        ("booked_by", b.customer.as_str().into()),
                    ],
                )?;
            }
            None => tx.insert(
                "seat",
                &[
                    ("show", b.show.as_str().into()),
                    ("seat", b.seat.as_str().into()),
                    ("status", "booked".into()),
                    ("booked_by", b.customer.as_str().into()),
                ],
            )?,
        }
        tx.insert(
            "booking",
            &[
                ("id", b.booking.into()),
                ("show", b.show.into()),
                ("seat", b.seat.into()),
                ("customer", b.customer.into()),
            ],
        )?;
        Ok(())
    });
}

/// The relay's clock never moves during the conversation.
const RELAY_MS: u64 = T0 + 60_000;
const RELAY_SITE: u8 = 0x10;
const CLIENT_SITE: u8 = 0x22;

/// The relay: the authority, with the `book` mutator and a resolver that
/// refuses a second booker.
fn open_relay(path: &Path, schema: &Schema) -> meldb::Result<Store> {
    let mut store = StoreOptions::new()
        .site_id(site(RELAY_SITE))
        .time_source(Arc::new(ManualTime::new(RELAY_MS)))
        .authority(true)
        .open(path, schema)?;
    register(&mut store);
    store.add_resolver(
        "seat",
        Resolver::new("one booking per seat", |c| {
            match (c.local().and_then(|r| r.text("booked_by")), c.incoming()) {
                (Some(first), Some(new)) if new.text("booked_by") != Some(first) => {
                    Resolution::Reject(format!("already booked by {first}"))
                }
                _ => Resolution::Accept,
            }
        }),
    )?;
    Ok(store)
}

/// Small batches and a window of one, so answers take several batches and
/// acknowledgements.
fn session_config() -> SessionConfig {
    SessionConfig::default().batch_rows(2).window(1)
}

fn authorize() -> Authorize {
    Arc::new(|token| {
        (token == Some("carol-token")).then(|| Grant {
            access: Access::ReadWrite,
            writer: Writer::user("carol"),
            ..Grant::read_write()
        })
    })
}

/// The relay before the conversation: three seats (one booked by bea) and
/// her booking, written by the relay itself.
fn build_relay(path: &Path, schema: &Schema) -> Res {
    let mut relay = open_relay(path, schema)?;
    relay.write(|tx| {
        tx.insert("seat", &[("show", "S1".into()), ("seat", "A1".into())])?;
        tx.insert("seat", &[("show", "S1".into()), ("seat", "A2".into())])?;
        tx.insert(
            "seat",
            &[
                ("show", "S1".into()),
                ("seat", "A3".into()),
                ("status", "booked".into()),
                ("booked_by", "bea".into()),
            ],
        )?;
        tx.insert(
            "booking",
            &[
                ("id", "r1".into()),
                ("show", "S1".into()),
                ("seat", "A3".into()),
                ("customer", "bea".into()),
            ],
        )?;
        tx.add_to_set("booking", "r1", "guests", "bea")
    })?;
    close(relay)
}

/// Delivers every message both ways until neither side has anything to
/// say, each through the codec, appending each frame to `record` after its
/// direction byte (`C`: client to relay, `R`: relay to client). Errors are
/// part of the story (a refused token): they close a session, whose notice
/// is then recorded like any message.
fn pump_recorded(
    client: &mut Session,
    cs: &mut Store,
    relay: &mut Session,
    rs: &mut Store,
    record: &mut Vec<u8>,
    log: &mut String,
) -> Res {
    loop {
        let mut moved = false;
        while let Some(m) = client.poll_message() {
            moved = true;
            let frame = codec::encode_message(&m);
            record.push(b'C');
            record.extend_from_slice(&frame);
            let _ = writeln!(log, "C {}", m.name());
            let _ = relay.receive(rs, codec::decode_message(&frame, MAX_MESSAGE_PAYLOAD)?);
        }
        while let Some(m) = relay.poll_message() {
            moved = true;
            let frame = codec::encode_message(&m);
            record.push(b'R');
            record.extend_from_slice(&frame);
            let _ = writeln!(log, "R {}", m.name());
            let _ = client.receive(cs, codec::decode_message(&frame, MAX_MESSAGE_PAYLOAD)?);
        }
        if !moved {
            return Ok(());
        }
    }
}

/// Records the conversation into `out/conversation-<n>.bin`, leaving the
/// client's database in `out/client.db` and the relay's final state in
/// `out/relay-after.expect.txt`. The relay is opened from a copy of
/// `out/relay-before.db`, as the replay does.
///
/// Before session 1 the client (site 0x22) books seat A3 by a plain write
/// (bea has it at the relay: refused) and queues `book` A1 (accepted) and
/// `book` A3 (refused). Session 1: Hello both ways, Want both ways, Push,
/// PushAck, batches with acks, Sent (with the processed mutations),
/// Caught. Then the client queues `book` A2. Session 2: the relay's answer
/// starts with the Rejections of the A3 write, then the corrections.
/// Session 3: a wrong token, answered by a Notice. After it the client
/// queues two more bookings, which stay pending in `client.db`.
fn record_conversation(out: &Path, schema: &Schema) -> Res {
    let (_relay_dir, relay_copy) = copy_to_temp(&out.join("relay-before.db"))?;
    let mut rs = open_relay(&relay_copy, schema)?;
    let client_time = ManualTime::new(T0 + 30_000);
    let mut cs = file_replica(&out.join("client.db"), schema, CLIENT_SITE, &client_time)?;
    register(&mut cs);
    // Format 2 / protocol 3 on: the plain write and the first booking
    // carry write metadata (the relay's log keeps the refused write's).
    cs.write_with(r#"{"device":"till-7"}"#, |tx| {
        tx.insert(
            "seat",
            &[
                ("show", "S1".into()),
                ("seat", "A3".into()),
                ("status", "booked".into()),
                ("booked_by", "carol".into()),
            ],
        )
    })?;
    tick(&client_time);
    cs.mutate_with("book", &book("S1", "A1", "c1"), r#"{"screen":"seat-map"}"#)?;
    tick(&client_time);
    cs.mutate("book", &book("S1", "A3", "c2"))?;
    tick(&client_time);

    let mut log = String::new();
    for n in 1..=SESSIONS {
        if n == 2 {
            cs.mutate("book", &book("S1", "A2", "c3"))?;
            tick(&client_time);
        }
        let token = if n == 3 { "wrong" } else { "carol-token" };
        let _ = writeln!(log, "session {n}");
        let mut client = Session::initiator(&cs, session_config().token(Some(token.into())));
        let mut relay = Session::responder(&rs, session_config(), authorize());
        let mut record = Vec::new();
        pump_recorded(
            &mut client,
            &mut cs,
            &mut relay,
            &mut rs,
            &mut record,
            &mut log,
        )?;
        fs::write(out.join(format!("conversation-{n}.bin")), record)?;
    }
    fs::write(out.join("conversation.txt"), log)?;
    fs::write(out.join("relay-after.expect.txt"), app_dump(&rs)?)?;
    drop(rs);

    cs.mutate("book", &book("S2", "B1", "c4"))?;
    tick(&client_time);
    cs.mutate("book", &book("S1", "A2", "c5"))?;
    assert_eq!(
        cs.pending_mutations()?.len(),
        2,
        "two bookings stay pending"
    );
    assert_eq!(cs.rejections()?.len(), 1, "the client heard of its refusal");
    assert_eq!(
        cs.mutation_failures()?.len(),
        1,
        "and of its refused booking"
    );
    close(cs)
}

/// One recorded session: (direction byte, frame) in order.
fn records(bytes: &[u8]) -> Res<Vec<(u8, &[u8])>> {
    Ok(common::recorded_frames(bytes)?)
}

// ---------------------------------------------------------------------------
// The generator.

/// Writes every fixture of format version 1 into `out`:
///
/// - `<schema>.db` for each example schema: two file-less replicas (sites 1
///   and 2, one manual clock starting at T0, one second per step) write
///   rows of every column kind, sync, edit the same rows concurrently, site
///   1 deletes, re-inserts and deletes a row site 2 wrote, then applies
///   site 2's concurrent edits (one table's conflicts auto-merged, the
///   other's decided by a resolver that accepts) and a row from site 3,
///   whose clock is an hour ahead (held). Site 1's database is closed (no
///   WAL left) and kept. `<schema>.expect.txt` is its dump.
/// - `changes-full.bin`, `changes-partial.bin` (since
///   [`partial_since`]), `changes-frames.bin` (the full export split into
///   frames of one row, back to back): exports of `inventory.db`;
///   `changes.expect.txt`: what a fresh store reaches applying each.
/// - `digest.txt`: [`fixed_digests`].
/// - `relay-before.db` (+ `.expect.txt`), `conversation-<n>.bin`,
///   `conversation.txt`, `relay-after.expect.txt`, `client.db` (+
///   `.expect.txt`): [`record_conversation`], schema `box_office.toml`.
fn generate(out: &Path) -> Res {
    for name in EXAMPLES {
        let db = out.join(format!("{name}.db"));
        build_example(name, &db)?;
        fs::write(
            out.join(format!("{name}.expect.txt")),
            expect_text(&db, &schema_of(name)?)?,
        )?;
    }
    write_changesets(&out.join("inventory.db"), out)?;
    fs::write(out.join("changes.expect.txt"), changes_summary(out)?)?;
    fs::write(out.join("digest.txt"), fixed_digests()?)?;

    let schema = schema_of("box_office")?;
    build_relay(&out.join("relay-before.db"), &schema)?;
    fs::write(
        out.join("relay-before.expect.txt"),
        expect_text(&out.join("relay-before.db"), &schema)?,
    )?;
    record_conversation(out, &schema)?;
    fs::write(
        out.join("client.expect.txt"),
        expect_text(&out.join("client.db"), &schema)?,
    )?;
    Ok(())
}

/// Writes the fixtures (see [`generate`]) into `MELDB_FIXTURES_DIR`
/// (default `tests/fixtures/v1`). Refuses a directory that already holds
/// any `.bin`, `.db` or `.txt` file: fixtures of a format version are never
/// regenerated; a new version gets a new directory.
#[test]
#[ignore = "writes the golden fixtures; run once per new format version"]
fn write_fixtures() -> Res {
    let out = std::env::var_os("MELDB_FIXTURES_DIR").map_or_else(v1, PathBuf::from);
    fs::create_dir_all(&out)?;
    for entry in fs::read_dir(&out)? {
        let path = entry?.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("bin" | "db" | "txt")
        ) {
            return Err(format!(
                "{} exists: fixtures are never regenerated (write a new version's into a new directory)",
                path.display()
            )
            .into());
        }
    }
    generate(&out)
}

// ---------------------------------------------------------------------------
// The checks.

#[test]
fn changeset_files_decode_and_reencode_to_identical_bytes() -> Res {
    for dir in fixture_dirs() {
        changeset_files_decode_and_reencode_to_identical_bytes_in(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn changeset_files_decode_and_reencode_to_identical_bytes_in(dir: &Path) -> Res {
    for name in CHANGESET_FILES {
        let bytes = read_bytes(&dir.join(name))?;
        let frames = codec::decode_changeset_frames(&bytes)?;
        // Each frame in the format version it was written in.
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        let mut again = Vec::new();
        for frame in &frames {
            again.extend(codec::encode_changeset_as(frame, version)?);
        }
        assert!(again == bytes, "{name}: re-encoding changed the bytes");
        if frames.len() == 1 && version == codec::FORMAT_VERSION {
            assert!(
                codec::encode_changeset_frames(&frames[0]) == bytes,
                "{name}"
            );
        }
    }
    Ok(())
}

#[test]
fn changeset_files_bring_a_fresh_store_to_the_recorded_digest() -> Res {
    for dir in fixture_dirs() {
        changeset_files_bring_a_fresh_store_to_the_recorded_digest_in(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn changeset_files_bring_a_fresh_store_to_the_recorded_digest_in(dir: &Path) -> Res {
    let expected = read_text(&dir.join("changes.expect.txt"))?;
    assert_eq!(changes_summary(dir)?, expected);
    Ok(())
}

#[test]
fn every_recorded_frame_decodes_and_reencodes_to_identical_bytes() -> Res {
    for dir in fixture_dirs() {
        every_recorded_frame_decodes_and_reencodes_to_identical_bytes_in(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn every_recorded_frame_decodes_and_reencodes_to_identical_bytes_in(dir: &Path) -> Res {
    let mut names = String::new();
    for n in 1..=SESSIONS {
        let bytes = read_bytes(&dir.join(format!("conversation-{n}.bin")))?;
        let _ = writeln!(names, "session {n}");
        for (i, (dir, frame)) in records(&bytes)?.into_iter().enumerate() {
            let (version, message) = codec::decode_message_versioned(frame, MAX_MESSAGE_PAYLOAD)
                .map_err(|e| format!("session {n} frame {i}: {e}"))?;
            assert!(
                codec::encode_message_as(&message, version) == frame,
                "session {n} frame {i} ({}) re-encodes differently",
                message.name()
            );
            let _ = writeln!(names, "{} {}", dir as char, message.name());
        }
    }
    assert_eq!(names, read_text(&dir.join("conversation.txt"))?);
    Ok(())
}

#[test]
fn the_conversation_covers_every_message_kind() -> Res {
    for dir in fixture_dirs() {
        the_conversation_covers_every_message_kind_in(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn the_conversation_covers_every_message_kind_in(dir: &Path) -> Res {
    let log = read_text(&dir.join("conversation.txt"))?;
    for kind in [
        "Hello",
        "Want",
        "Changes",
        "Ack",
        "Sent",
        "Caught",
        "Notice",
        "Rejections",
        "Push",
        "PushAck",
    ] {
        assert!(
            log.lines().any(|l| l.ends_with(&format!(" {kind}"))),
            "no {kind} in the conversation"
        );
    }
    Ok(())
}

#[test]
fn the_client_side_replays_against_a_relay_opened_from_the_fixture() -> Res {
    for dir in fixture_dirs() {
        the_client_side_replays_against_a_relay_opened_from_the_fixture_in(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn the_client_side_replays_against_a_relay_opened_from_the_fixture_in(dir: &Path) -> Res {
    let schema = schema_of("box_office")?;
    let (_dir, copy) = copy_to_temp(&dir.join("relay-before.db"))?;
    let mut rs = open_relay(&copy, &schema)?;
    for n in 1..=SESSIONS {
        let bytes = read_bytes(&dir.join(format!("conversation-{n}.bin")))?;
        let mut relay = Session::responder(&rs, session_config(), authorize());
        for (i, (dir, frame)) in records(&bytes)?.into_iter().enumerate() {
            if dir == b'C' {
                let message = codec::decode_message(frame, MAX_MESSAGE_PAYLOAD)?;
                // An error (the refused token of session 3) closes the
                // session; its notice is compared below like any answer.
                let _ = relay.receive(&mut rs, message);
            } else {
                let answer = relay
                    .poll_message()
                    .ok_or_else(|| format!("session {n} frame {i}: the relay said nothing"))?;
                // The relay answers in the version the client spoke.
                let (version, recorded) =
                    codec::decode_message_versioned(frame, MAX_MESSAGE_PAYLOAD)?;
                // Before protocol 4 a hello offers no codecs.
                let answer = match answer {
                    Message::Hello(mut h) if version.number() < 4 => {
                        h.compression.clear();
                        Message::Hello(h)
                    }
                    other => other,
                };
                assert_eq!(answer, recorded, "session {n} frame {i}");
                assert!(
                    codec::encode_message_as(&answer, version) == frame,
                    "session {n} frame {i} ({}): same message, different bytes",
                    answer.name()
                );
            }
        }
        assert_eq!(
            relay.poll_message().map(|m| m.name()),
            None,
            "session {n}: the relay says more than it did"
        );
    }
    assert_eq!(
        app_dump(&rs)?,
        read_text(&dir.join("relay-after.expect.txt"))?
    );
    Ok(())
}

fn database_fixtures() -> Res<Vec<(String, Schema)>> {
    let mut out: Vec<(String, Schema)> = Vec::new();
    for name in EXAMPLES {
        out.push((name.into(), schema_of(name)?));
    }
    for name in ["relay-before", "client"] {
        out.push((name.into(), schema_of("box_office")?));
    }
    Ok(out)
}

#[test]
fn databases_open_and_read_back_the_recorded_state() -> Res {
    for dir in fixture_dirs() {
        databases_open_and_read_back_the_recorded_state_in(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn databases_open_and_read_back_the_recorded_state_in(dir: &Path) -> Res {
    for (name, schema) in database_fixtures()? {
        let expected = read_text(&dir.join(format!("{name}.expect.txt")))?;
        let (app, _) = split_expect(&expected)?;
        let got = app_dump_of_file(&dir.join(format!("{name}.db")), &schema)?;
        assert_eq!(got, app, "{name}.db reads back differently");
    }
    Ok(())
}

#[test]
fn database_files_hold_the_recorded_stored_bytes() -> Res {
    for dir in fixture_dirs() {
        database_files_hold_the_recorded_stored_bytes_in(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn database_files_hold_the_recorded_stored_bytes_in(dir: &Path) -> Res {
    for (name, _) in database_fixtures()? {
        let expected = read_text(&dir.join(format!("{name}.expect.txt")))?;
        let (_, stored) = split_expect(&expected)?;
        let got = stored_dump_of_file(&dir.join(format!("{name}.db")))?;
        assert_eq!(got, stored, "{name}.db");
    }
    Ok(())
}

#[test]
fn the_digest_of_fixed_rows_is_the_recorded_one() -> Res {
    for dir in fixture_dirs() {
        the_digest_of_fixed_rows_is_the_recorded_one_in(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn the_digest_of_fixed_rows_is_the_recorded_one_in(dir: &Path) -> Res {
    assert_eq!(fixed_digests()?, read_text(&dir.join("digest.txt"))?);
    Ok(())
}

/// Today's writer, run through the generator again, writes the same
/// bytes: the same stored rows and metadata blobs, the same changeset
/// files, the same conversation (the databases are compared through their
/// dumps; SQLite's page layout is not a meldb format).
#[test]
fn todays_writer_rebuilds_every_fixture_byte_for_byte() -> Res {
    let dir = tempfile::tempdir()?;
    // The schema lives in v1/ (every version's generator reads it there).
    fs::copy(
        v1().join("box_office.toml"),
        dir.path().join("box_office.toml"),
    )?;
    generate(dir.path())?;
    let mut compared = 0;
    for entry in fs::read_dir(newest())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("a fixture name")?
            .to_owned();
        if name.ends_with(".db") || name == "README.md" {
            continue;
        }
        let rebuilt = dir.path().join(&name);
        let (want, got) = (read_bytes(&path)?, read_bytes(&rebuilt)?);
        if want != got {
            match (String::from_utf8(want), String::from_utf8(got)) {
                (Ok(want), Ok(got)) => assert_eq!(got, want, "{name} rebuilt differently"),
                _ => panic!("{name} rebuilt differently"),
            }
        }
        compared += 1;
    }
    assert!(compared >= 15, "only {compared} fixture files compared");
    Ok(())
}

/// Every older database, opened by today's build, gets the newest
/// format's layout (format 3: the metadata and notice-kind columns, added
/// where `ALTER TABLE` puts them, which is where a new database has them),
/// and keeps its rows: the app-level dump reads back as recorded.
#[test]
fn older_databases_upgrade_to_the_newest_layout_and_keep_their_data() -> Res {
    fn master(stored: &str) -> Res<&str> {
        let end = stored
            .find("\ntable ")
            .ok_or("no table after sqlite_master")?;
        Ok(&stored[..end])
    }
    for dir in [v1(), v2(), v3()] {
        for (name, schema) in database_fixtures()? {
            let db = dir.join(format!("{name}.db"));
            let (_dir, copy) = copy_to_temp(&db)?;
            let store = StoreOptions::new()
                .time_source(Arc::new(ManualTime::new(T0)))
                .open(&copy, &schema)?;
            let expect = read_text(&dir.join(format!("{name}.expect.txt")))?;
            let (recorded, _) = split_expect(&expect)?;
            assert_eq!(app_dump(&store)?, recorded, "{}", db.display());
            drop(store);
            let upgraded = stored_dump(&rusqlite::Connection::open(&copy)?)?;
            let expected = read_text(&v4().join(format!("{name}.expect.txt")))?;
            let (_, newest_stored) = split_expect(&expected)?;
            assert_eq!(
                master(&upgraded)?,
                master(newest_stored)?,
                "{}",
                db.display()
            );
        }
    }
    Ok(())
}

/// Reads one whole message frame from a raw stream.
async fn read_raw_frame<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> Res<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut frame = vec![0u8; HEADER_LEN];
    reader.read_exact(&mut frame).await?;
    let len = codec::message_payload_len(&frame, MAX_MESSAGE_PAYLOAD)?;
    frame.resize(HEADER_LEN + len, 0);
    reader.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(frame)
}

/// A client that speaks only the fixtures' protocol version (it sends the
/// recorded version-1 frames, byte for byte, and nothing else) syncs with
/// today's relay through the real transport and driver: every answer comes
/// back in version 1 and equals a recorded one, and the relay ends in the
/// recorded state. The driver may order the messages of one turn (what the
/// relay says between two of the client's) differently from the recording
/// (a batch before the acknowledgement of the client's), so each turn is
/// compared as a set of frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_speaking_only_protocol_v1_syncs_with_todays_relay() -> Res {
    use meldb::sync::{accept_once, Connection, SharedStore};
    use tokio::io::AsyncWriteExt;
    let schema = schema_of("box_office")?;
    let (_dir, copy) = copy_to_temp(&v1().join("relay-before.db"))?;
    let relay = SharedStore::new(open_relay(&copy, &schema)?);
    for n in 1..=SESSIONS {
        let bytes = read_bytes(&v1().join(format!("conversation-{n}.bin")))?;
        let (client_end, relay_end) = tokio::io::duplex(1 << 20);
        let served = {
            let relay = relay.clone();
            tokio::spawn(async move {
                let mut conn = Connection::new(relay_end, MAX_MESSAGE_PAYLOAD);
                let result = accept_once(&relay, &mut conn, session_config(), authorize()).await;
                (result, conn.protocol_version())
            })
        };
        let (mut from_relay, mut to_relay) = tokio::io::split(client_end);
        let records = records(&bytes)?;
        let mut turns: Vec<(u8, Vec<&[u8]>)> = Vec::new();
        for (dir, frame) in records {
            match turns.last_mut() {
                Some((d, frames)) if *d == dir => frames.push(frame),
                _ => turns.push((dir, vec![frame])),
            }
        }
        for (t, (dir, frames)) in turns.into_iter().enumerate() {
            if dir == b'C' {
                for frame in frames {
                    assert_eq!(
                        frame[4..6],
                        1u16.to_le_bytes(),
                        "the recording is version 1"
                    );
                    to_relay.write_all(frame).await?;
                }
                continue;
            }
            let mut got = Vec::new();
            for _ in 0..frames.len() {
                let frame =
                    tokio::time::timeout(Duration::from_secs(10), read_raw_frame(&mut from_relay))
                        .await
                        .map_err(|_| format!("session {n} turn {t}: no answer within 10 s"))??;
                assert_eq!(
                    frame[4..6],
                    1u16.to_le_bytes(),
                    "session {n} turn {t}: version 1"
                );
                got.push(frame);
            }
            let mut expected: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
            got.sort();
            expected.sort();
            let names = |fs: &[Vec<u8>]| -> Res<Vec<&'static str>> {
                fs.iter()
                    .map(|f| Ok(codec::decode_message(f, MAX_MESSAGE_PAYLOAD)?.name()))
                    .collect()
            };
            assert!(
                got == expected,
                "session {n} turn {t}: the relay said {:?}, the recording has {:?}",
                names(&got)?,
                names(&expected)?
            );
        }
        to_relay.shutdown().await?;
        let (result, version) = served.await?;
        assert_eq!(version.number(), 1, "session {n} agreed on version 1");
        if n < SESSIONS {
            result?;
        } else {
            assert!(result.is_err(), "session 3 presents a wrong token");
        }
    }
    assert_eq!(
        app_dump(&relay.lock())?,
        read_text(&v1().join("relay-after.expect.txt"))?
    );
    Ok(())
}

/// Protocol version 2 changed the hello alone: `v3/` holds `v2/`'s
/// changeset files and database dumps byte for byte, and the same
/// conversation, each frame the same message (a hello naming no
/// namespace) in the newer version.
#[test]
fn v3_changes_only_the_protocol_version_and_the_hello() -> Res {
    for entry in fs::read_dir(v2())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("a fixture name")?
            .to_owned();
        if name.ends_with(".db") || name == "README.md" || name.starts_with("conversation-") {
            continue;
        }
        assert!(
            read_bytes(&path)? == read_bytes(&v3().join(&name))?,
            "{name} differs between v2/ and v3/"
        );
    }
    for n in 1..=SESSIONS {
        let old = read_bytes(&v2().join(format!("conversation-{n}.bin")))?;
        let new = read_bytes(&v3().join(format!("conversation-{n}.bin")))?;
        let (old, new) = (records(&old)?, records(&new)?);
        assert_eq!(old.len(), new.len(), "session {n}");
        for (i, ((d1, f1), (d2, f2))) in old.into_iter().zip(new).enumerate() {
            let (v1, m1) = codec::decode_message_versioned(f1, MAX_MESSAGE_PAYLOAD)?;
            let (v2, m2) = codec::decode_message_versioned(f2, MAX_MESSAGE_PAYLOAD)?;
            assert_eq!(
                (d1, v1.number(), v2.number()),
                (d2, 1, 2),
                "session {n} frame {i}"
            );
            assert_eq!(m1, m2, "session {n} frame {i}");
        }
    }
    Ok(())
}

/// `message` without what protocol version 3 added: write metadata on
/// batch rows and pushed mutations, a notice's kind (a rejection's).
fn without_v3_fields(mut message: meldb::sync::Message) -> meldb::sync::Message {
    use meldb::sync::Message;
    match &mut message {
        Message::Changes(b) => {
            for row in b.changes.tables.iter_mut().flat_map(|t| t.rows.iter_mut()) {
                row.state.meta = None;
            }
        }
        Message::Push(p) => {
            for m in &mut p.mutations {
                m.meta = None;
            }
        }
        Message::Rejections(rs) => {
            for r in rs {
                r.kind = meldb::NoticeKind::Rejected;
            }
        }
        _ => {}
    }
    message
}

/// Protocol version 3 added write metadata and notice kinds: `v4/`'s
/// conversation is `v3/`'s, message for message, once the metadata `v4/`'s
/// client attached is taken off; and it does carry some.
#[test]
fn v4_changes_only_metadata_and_notice_kinds_in_the_conversation() -> Res {
    let mut carried = 0;
    for n in 1..=SESSIONS {
        let old = read_bytes(&v3().join(format!("conversation-{n}.bin")))?;
        let new = read_bytes(&v4().join(format!("conversation-{n}.bin")))?;
        let (old, new) = (records(&old)?, records(&new)?);
        assert_eq!(old.len(), new.len(), "session {n}");
        for (i, ((d1, f1), (d2, f2))) in old.into_iter().zip(new).enumerate() {
            let (v1, m1) = codec::decode_message_versioned(f1, MAX_MESSAGE_PAYLOAD)?;
            let (v2, m2) = codec::decode_message_versioned(f2, MAX_MESSAGE_PAYLOAD)?;
            assert_eq!(
                (d1, v1.number(), v2.number()),
                (d2, 2, 3),
                "session {n} frame {i}"
            );
            let stripped = without_v3_fields(m2.clone());
            if stripped != m2 {
                carried += 1;
            }
            assert_eq!(m1, stripped, "session {n} frame {i}");
        }
    }
    assert!(carried > 0, "the v4 conversation carries metadata");
    Ok(())
}

/// Protocol version 4 changed the conversation alone: every other file of
/// `v5/` is `v4/`'s byte for byte, and its conversation is `v4/`'s message
/// for message, every frame in version 4, once the hello's codecs are
/// taken off (the recorded batches are small, so their bodies are plain).
#[test]
fn v5_changes_only_the_protocol_version_the_hellos_codecs_and_bodies() -> Res {
    for entry in fs::read_dir(v5())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("a fixture name")?
            .to_owned();
        if name.starts_with("conversation-") || name == "README.md" {
            continue;
        }
        assert!(
            read_bytes(&path)? == read_bytes(&v4().join(&name))?,
            "{name} differs between v4/ and v5/"
        );
    }
    let mut offered = 0;
    for n in 1..=SESSIONS {
        let old = read_bytes(&v4().join(format!("conversation-{n}.bin")))?;
        let new = read_bytes(&v5().join(format!("conversation-{n}.bin")))?;
        let (old, new) = (records(&old)?, records(&new)?);
        assert_eq!(old.len(), new.len(), "session {n}");
        for (i, ((d1, f1), (d2, f2))) in old.into_iter().zip(new).enumerate() {
            let (v1, m1) = codec::decode_message_versioned(f1, MAX_MESSAGE_PAYLOAD)?;
            let (v2, m2) = codec::decode_message_versioned(f2, MAX_MESSAGE_PAYLOAD)?;
            assert_eq!(
                (d1, v1.number(), v2.number()),
                (d2, 3, 4),
                "session {n} frame {i}"
            );
            let stripped = match m2.clone() {
                Message::Hello(mut h) => {
                    if !h.compression.is_empty() {
                        offered += 1;
                    }
                    h.compression.clear();
                    Message::Hello(h)
                }
                other => other,
            };
            assert_eq!(m1, stripped, "session {n} frame {i}");
        }
    }
    assert!(offered > 0, "the v5 conversation's hellos offer a codec");
    Ok(())
}
