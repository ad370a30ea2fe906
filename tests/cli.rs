//! The `meldb` binary end to end: each test runs it as a process in a fresh
//! temporary directory and checks exit codes, stdout and stderr.

use std::error::Error;
use std::path::Path;
use std::process::Command;

type TestResult = Result<(), Box<dyn Error>>;

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/inventory.toml");
const SITE_A: &str = "00000000-0000-0000-0000-00000000000a";
const SITE_B: &str = "00000000-0000-0000-0000-00000000000b";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code {} (want {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    fn ok(self) -> Run {
        self.expect_code(0)
    }
}

/// Runs `meldb args...` in `dir`, without `MELDB_SCHEMA` from the caller.
fn meldb(dir: &Path, args: &[&str]) -> Result<Run, Box<dyn Error>> {
    let output = Command::new(env!("CARGO_BIN_EXE_meldb"))
        .args(args)
        .current_dir(dir)
        .env_remove("MELDB_SCHEMA")
        .output()?;
    Ok(Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    })
}

/// Runs a command that opens `db` with the inventory schema.
fn on(dir: &Path, command: &str, db: &str, rest: &[&str]) -> Result<Run, Box<dyn Error>> {
    let mut args = vec![command, "--db", db, "--schema", SCHEMA];
    args.extend_from_slice(rest);
    meldb(dir, &args)
}

fn digest(dir: &Path, db: &str) -> Result<String, Box<dyn Error>> {
    let run = on(dir, "digest", db, &[])?.ok();
    let hex = run.stdout.trim().to_owned();
    assert_eq!(hex.len(), 64, "digest {hex:?}");
    Ok(hex)
}

/// Sends what `to` lacks from `from` through a file, the way a script would.
fn sync(dir: &Path, from: &str, to: &str) -> Result<Run, Box<dyn Error>> {
    let vv = format!("{to}.vv.json");
    let frame = format!("{from}-to-{to}.mldb");
    let run = on(dir, "vv", to, &[])?.ok();
    std::fs::write(dir.join(&vv), run.stdout)?;
    let run = on(dir, "export", from, &["--since", &vv, "--out", &frame])?.ok();
    assert!(run.stdout.starts_with("exported "), "{}", run.stdout);
    Ok(on(dir, "import", to, &[&frame])?.ok())
}

#[test]
fn demo_converges_with_no_arguments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let run = meldb(dir.path(), &["demo"])?.ok();
    let out = &run.stdout;
    assert!(out.contains("all 3 tills converged"), "{out}");
    let digests: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(" digest ").map(|(_, d)| d))
        .collect();
    assert_eq!(digests.len(), 3, "{out}");
    assert!(digests.iter().all(|d| *d == digests[0]));
    // Every sale counts: 10 - 6 sold + 6 restocked; the last two mugs were
    // sold twice, and last-writer-wins would have hidden it.
    assert!(
        out.contains("meldb   10 = 10 seeded - 6 sold + 6 restocked"),
        "{out}"
    );
    assert!(
        out.contains("meldb   -2 = 2 seeded - 4 sold: oversold by 2"),
        "{out}"
    );
    assert!(out.contains("LWW     15   till 3 wrote last"), "{out}");
    assert!(
        out.contains(r#"every till shows ["coffee","sale"]"#),
        "{out}"
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    // Fixed site ids and clock: the output is the same every run.
    assert_eq!(meldb(dir.path(), &["demo"])?.ok().stdout, run.stdout);
    Ok(())
}

#[test]
fn demo_with_files_and_more_replicas() -> TestResult {
    let dir = tempfile::tempdir()?;
    let run = meldb(dir.path(), &["demo", "--dir", "shop", "--replicas", "4"])?.ok();
    assert!(
        run.stdout.contains("all 4 tills converged"),
        "{}",
        run.stdout
    );
    assert!(dir.path().join("shop/till-4.meldb").exists());
    // The files are real replicas the other commands can open.
    let till = "shop/till-2.meldb";
    let run = on(
        dir.path(),
        "query",
        till,
        &["SELECT stock FROM item WHERE sku = 'MUG-white'"],
    )?;
    assert!(run.ok().stdout.contains("-4"));
    // A second run refuses to reuse them.
    let run = meldb(dir.path(), &["demo", "--dir", "shop"])?.expect_code(1);
    assert!(run.stderr.contains("exist already"), "{}", run.stderr);
    Ok(())
}

#[test]
fn init_insert_query_round_trip() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let run = on(d, "init", "shop.db", &["--site-id", SITE_A])?.ok();
    assert!(run.stdout.starts_with("created shop.db"), "{}", run.stdout);
    assert!(run.stdout.contains(SITE_A));
    let run = on(d, "init", "shop.db", &[])?.ok();
    assert!(run.stdout.starts_with("opened shop.db"), "{}", run.stdout);

    let values = ["item", "sku=BEAN", "name=Beans", "price=18.5", "stock=10"];
    let run = on(d, "insert", "shop.db", &values)?.ok();
    assert_eq!(run.stdout, "", "writes are silent without --verbose");
    on(
        d,
        "increment",
        "shop.db",
        &["item", "--key", "BEAN", "stock", "-3"],
    )?
    .ok();
    on(
        d,
        "set-add",
        "shop.db",
        &["item", "--key", "BEAN", "tags", "coffee"],
    )?
    .ok();
    let run = meldb(
        d,
        &[
            "--verbose",
            "update",
            "--db",
            "shop.db",
            "--schema",
            SCHEMA,
            "item",
            "--key",
            "BEAN",
            "price=19.9",
        ],
    )?
    .ok();
    assert!(run.stdout.contains("price=19.9"), "{}", run.stdout);

    let sql = "SELECT sku, price, stock, tags FROM item";
    let run = on(d, "query", "shop.db", &[sql])?.ok();
    let expected = "\
sku   price  stock  tags
----  -----  -----  ----------
BEAN   19.9      7  [\"coffee\"]
(1 row)
";
    assert_eq!(run.stdout, expected);
    let run = on(d, "query", "shop.db", &["--json", sql])?.ok();
    assert_eq!(
        run.stdout,
        "{\"sku\":\"BEAN\",\"price\":19.9,\"stock\":7,\"tags\":\"[\\\"coffee\\\"]\"}\n"
    );

    on(d, "delete", "shop.db", &["item", "--key", "BEAN"])?.ok();
    let run = on(d, "query", "shop.db", &["SELECT count(*) AS n FROM item"])?.ok();
    assert!(run.stdout.contains("0\n(1 row)"), "{}", run.stdout);
    Ok(())
}

#[test]
fn two_replicas_sync_through_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    on(d, "init", "a.db", &["--site-id", SITE_A])?.ok();
    on(d, "init", "b.db", &["--site-id", SITE_B])?.ok();
    on(d, "insert", "a.db", &["item", "sku=BEAN", "stock=10"])?.ok();
    on(d, "insert", "b.db", &["item", "sku=MUG", "stock=2"])?.ok();

    // B's version vector from `info --json`, then A exports what B lacks.
    let info: serde_json::Value =
        serde_json::from_str(&on(d, "info", "b.db", &["--json"])?.ok().stdout)?;
    assert_eq!(info["site"], SITE_B);
    // The packed clock is above 2^53, where JSON numbers lose precision:
    // it is a decimal string, and its parts are numbers.
    let hlc: u64 = info["clock"]["hlc"]
        .as_str()
        .ok_or("clock.hlc is not a string")?
        .parse()?;
    let physical = info["clock"]["physical_ms"].as_u64().ok_or("physical_ms")?;
    let logical = info["clock"]["logical"].as_u64().ok_or("logical")?;
    assert!(hlc > 1 << 53, "{hlc}");
    assert_eq!(hlc, physical << 16 | logical, "{info}");
    assert_eq!(
        (info["pending"].clone(), info["deferred"].clone()),
        (0.into(), 0.into())
    );
    std::fs::write(d.join("b.vv"), info["version_vector"].to_string())?;
    let run = on(d, "export", "a.db", &["--since", "b.vv", "--out", "a.mldb"])?.ok();
    assert!(run.stdout.starts_with("exported 1 row ("), "{}", run.stdout);
    let run = on(d, "import", "b.db", &["a.mldb"])?.ok();
    assert!(run.stdout.contains("fast-forward  1"), "{}", run.stdout);
    // And the other way, with `vv`.
    sync(d, "b.db", "a.db")?;
    assert_eq!(digest(d, "a.db")?, digest(d, "b.db")?);

    // Concurrent sales of the same item, and an or_set add/remove race.
    on(
        d,
        "set-add",
        "a.db",
        &["item", "-k", "BEAN", "tags", "sale"],
    )?
    .ok();
    sync(d, "a.db", "b.db")?;
    on(
        d,
        "increment",
        "a.db",
        &["item", "-k", "BEAN", "stock", "-3"],
    )?
    .ok();
    on(
        d,
        "set-remove",
        "a.db",
        &["item", "-k", "BEAN", "tags", "sale"],
    )?
    .ok();
    on(
        d,
        "increment",
        "b.db",
        &["item", "-k", "BEAN", "stock", "-4"],
    )?
    .ok();
    on(
        d,
        "set-add",
        "b.db",
        &["item", "-k", "BEAN", "tags", "sale"],
    )?
    .ok();
    assert_ne!(digest(d, "a.db")?, digest(d, "b.db")?);
    let run = sync(d, "a.db", "b.db")?;
    assert!(run.stdout.contains("concurrent    1"), "{}", run.stdout);
    assert!(
        run.stdout.contains("conflicts     auto_merged 1"),
        "{}",
        run.stdout
    );
    // The conflict is in b's log: counted, listed, and not deferred.
    let counts = on(d, "conflicts", "b.db", &[])?.ok().stdout;
    assert!(counts.contains("item   auto_merged      1"), "{counts}");
    let list = on(d, "conflicts", "b.db", &["--list", "5", "--json"])?
        .ok()
        .stdout;
    let entry: serde_json::Value = serde_json::from_str(list.trim())?;
    assert_eq!(entry["table"], "item");
    assert_eq!(entry["outcome"], "auto_merged");
    let deferred = on(d, "conflicts", "b.db", &["--deferred"])?.ok().stdout;
    assert_eq!(deferred.trim(), "no conflicts");
    let run = on(d, "conflicts", "b.db", &["--outcome", "won"])?.expect_code(1);
    assert!(
        run.stderr.contains("unknown outcome \"won\""),
        "{}",
        run.stderr
    );
    sync(d, "b.db", "a.db")?;
    assert_eq!(digest(d, "a.db")?, digest(d, "b.db")?);
    let sql = "SELECT sku, stock, tags FROM item ORDER BY sku";
    let a = on(d, "query", "a.db", &[sql])?.ok().stdout;
    assert_eq!(a, on(d, "query", "b.db", &[sql])?.ok().stdout);
    assert!(a.contains("BEAN      3  [\"sale\"]"), "{a}");

    // Nothing left to send; importing a frame twice changes nothing.
    let run = sync(d, "a.db", "b.db")?;
    assert!(run.stdout.starts_with("imported 0 rows"), "{}", run.stdout);
    let run = on(d, "import", "b.db", &["a.mldb"])?.ok();
    assert!(run.stdout.contains("already seen  1"), "{}", run.stdout);
    assert_eq!(digest(d, "a.db")?, digest(d, "b.db")?);
    Ok(())
}

#[test]
fn bad_arguments_exit_2_with_usage() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    for args in [
        &[][..],
        &["frobnicate"],
        &["insert", "--db", "x.db", "--schema", SCHEMA],
        &[
            "increment",
            "--db",
            "x.db",
            "--schema",
            SCHEMA,
            "item",
            "-k",
            "A",
            "stock",
            "many",
        ],
        &["digest", "--db", "x.db"],
        &[
            "init",
            "--db",
            "x.db",
            "--schema",
            SCHEMA,
            "--site-id",
            "not-a-uuid",
        ],
        &["demo", "--replicas", "1"],
        &[
            "relay",
            "--db",
            "x.db",
            "--schema",
            SCHEMA,
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "t.toml",
            "--handshake-timeout",
            "ten",
        ],
        &[
            "relay",
            "--db",
            "x.db",
            "--schema",
            SCHEMA,
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "t.toml",
            "--namespace-quota",
            "5PB",
        ],
    ] {
        let run = meldb(d, args)?.expect_code(2);
        assert!(
            run.stderr.contains("Usage: meldb") || run.stderr.contains("try '--help'"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(!d.join("x.db").exists());
    // The schema can come from the environment instead.
    let run = Command::new(env!("CARGO_BIN_EXE_meldb"))
        .args(["init", "--db", "x.db"])
        .current_dir(d)
        .env("MELDB_SCHEMA", SCHEMA)
        .output()?;
    assert!(run.status.success());

    let run = meldb(d, &["--help"])?.ok();
    for command in [
        "init",
        "insert",
        "increment",
        "query",
        "export",
        "import",
        "digest",
        "demo",
    ] {
        assert!(
            run.stdout.contains(command),
            "{command} missing from --help"
        );
    }
    let run = meldb(d, &["increment", "--help"])?.ok();
    assert!(run.stdout.contains("negative"), "{}", run.stdout);
    Ok(())
}

#[test]
fn runtime_errors_exit_1_and_name_the_problem() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    on(d, "init", "a.db", &[])?.ok();
    let before = digest(d, "a.db")?;

    let run = on(d, "insert", "a.db", &["item", "sku=A", "stock=abc"])?.expect_code(1);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("column \"stock\""), "{}", run.stderr);
    assert!(run.stderr.contains("\"abc\""), "{}", run.stderr);

    let run = on(d, "insert", "a.db", &["nosuch", "sku=A"])?.expect_code(1);
    assert!(
        run.stderr.contains("unknown table \"nosuch\""),
        "{}",
        run.stderr
    );
    let run = on(d, "update", "a.db", &["item", "-k", "A", "price=1"])?.expect_code(1);
    assert!(run.stderr.contains("no row with key"), "{}", run.stderr);
    let run = on(d, "update", "a.db", &["location", "-k", "north", "shelf=B"])?.expect_code(1);
    assert!(run.stderr.contains("primary key has 2"), "{}", run.stderr);
    on(d, "insert", "a.db", &["item", "sku=A"])?.ok();
    let run = on(d, "increment", "a.db", &["item", "-k", "A", "sold", "-1"])?.expect_code(1);
    assert!(
        run.stderr.contains("g_counter only grows"),
        "{}",
        run.stderr
    );
    let run = on(d, "digest", "missing.db", &[])?.expect_code(1);
    assert!(
        run.stderr.contains("no database at missing.db"),
        "{}",
        run.stderr
    );
    assert!(!d.join("missing.db").exists());
    let run = on(d, "export", "a.db", &["--since", "nope.json", "--out", "x"])?.expect_code(1);
    assert!(run.stderr.contains("nope.json"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
    on(d, "delete", "a.db", &["item", "-k", "A"])?.ok();
    assert_ne!(digest(d, "a.db")?, before, "the delete is a change too");
    Ok(())
}

#[test]
fn importing_garbage_fails_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    on(d, "init", "a.db", &[])?.ok();
    on(d, "init", "b.db", &[])?.ok();
    on(d, "insert", "a.db", &["item", "sku=A", "stock=5"])?.ok();
    on(d, "insert", "b.db", &["item", "sku=B", "stock=1"])?.ok();
    on(d, "export", "a.db", &["--out", "good.mldb"])?.ok();
    let good = std::fs::read(d.join("good.mldb"))?;
    std::fs::write(
        d.join("junk.mldb"),
        b"this is not a changeset frame at all, only some words",
    )?;
    std::fs::write(d.join("cut.mldb"), &good[..good.len() - 7])?;
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    std::fs::write(d.join("flipped.mldb"), flipped)?;

    let before = digest(d, "b.db")?;
    for (file, message) in [
        ("junk.mldb", "not a meldb frame"),
        ("cut.mldb", "truncated frame"),
        ("flipped.mldb", "checksum mismatch"),
    ] {
        let run = on(d, "import", "b.db", &[file])?.expect_code(1);
        assert!(run.stderr.contains(file), "{}", run.stderr);
        assert!(run.stderr.contains(message), "{file}: {}", run.stderr);
        assert_eq!(digest(d, "b.db")?, before, "{file} changed the replica");
    }
    on(d, "import", "b.db", &["good.mldb"])?.ok();
    assert_ne!(digest(d, "b.db")?, before);
    Ok(())
}

#[test]
fn query_refuses_statements_that_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    on(d, "init", "a.db", &[])?.ok();
    on(d, "insert", "a.db", &["item", "sku=A", "stock=5"])?.ok();
    let before = digest(d, "a.db")?;
    for sql in [
        "DELETE FROM meldb_meta",
        "CREATE TABLE t (x)",
        "PRAGMA user_version = 7",
        "ATTACH 'other.db' AS other",
        "UPDATE item SET stock = 0",
        "SELECT 1; DELETE FROM meldb_meta",
    ] {
        let run = on(d, "query", "a.db", &[sql])?.expect_code(1);
        assert!(run.stderr.starts_with("error: "), "{sql}: {}", run.stderr);
    }
    let run = on(d, "query", "a.db", &["CREATE TABLE t (x)"])?.expect_code(1);
    assert!(run.stderr.contains("reads only"), "{}", run.stderr);
    assert!(!d.join("other.db").exists());
    assert_eq!(digest(d, "a.db")?, before);
    let run = on(d, "query", "a.db", &["PRAGMA user_version"])?.ok();
    assert!(run.stdout.contains("user_version"), "{}", run.stdout);
    Ok(())
}

const PRICES: &str = r#"
name = "prices"
version = 1
[[table]]
name = "item"
primary_key = ["sku"]
authority = true
[[table.column]]
name = "sku"
type = "text"
[[table.column]]
name = "price"
type = "integer"
"#;

/// An authority's database `prices.db` in `dir` (schema `prices.toml`)
/// with one deferred conflict: bob's price 99 for A1 against its own 12,
/// held for review by an app's resolver (the command line has none).
fn deferred_price(dir: &Path) -> TestResult {
    use meldb::{Resolution, Resolver, StoreOptions, Writer};
    std::fs::write(dir.join("prices.toml"), PRICES)?;
    let schema = meldb::Schema::from_toml_str(PRICES, "prices.toml")?;
    let mut authority = StoreOptions::new()
        .authority(true)
        .open(dir.join("prices.db"), &schema)?;
    authority.add_resolver(
        "item",
        Resolver::new("review prices", |c| {
            Resolution::Defer(format!("price of {} needs approval", c.key()))
        }),
    )?;
    let mut client = meldb::Store::open_in_memory(&schema)?;
    authority.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("price", 10.into())]))?;
    client.apply(&authority.changes_since(&client.version_vector())?)?;
    authority.write(|tx| tx.set("item", "A1", "price", 12))?;
    client.write(|tx| tx.set("item", "A1", "price", 99))?;
    let push = client.changes_since(&authority.version_vector())?;
    authority.apply_from(&push, &Writer::user("bob"))?;
    Ok(())
}

#[test]
fn conflicts_lists_deferred_conflicts_and_settles_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    deferred_price(d)?;
    let prices = |rest: &[&str]| {
        let mut args = vec!["conflicts", "--db", "prices.db", "--schema", "prices.toml"];
        args.extend_from_slice(rest);
        meldb(d, &args)
    };
    let price = || -> Result<String, Box<dyn Error>> {
        let sql = "SELECT price FROM item";
        let args = ["query", "--db", "prices.db", "--schema", "prices.toml", sql];
        Ok(meldb(d, &args)?.ok().stdout)
    };
    // While it waits, the authority shows its own price.
    assert!(price()?.contains("12"), "{}", price()?);

    let table = prices(&["--deferred"])?.ok().stdout;
    for needle in [
        "review prices",
        "price of (\"A1\") needs approval",
        "bob",
        r#"{"price":12,"sku":"A1"}"#,
        r#"{"price":99,"sku":"A1"}"#,
    ] {
        assert!(table.contains(needle), "{needle:?} in\n{table}");
    }
    let line = prices(&["--deferred", "--json"])?.ok().stdout;
    let entry: serde_json::Value = serde_json::from_str(line.trim())?;
    assert_eq!(entry["outcome"], "deferred");
    assert_eq!(entry["writer"], "bob");
    assert_eq!(entry["resolver"], "review prices");
    let id = entry["id"].as_i64().ok_or("no id")?.to_string();
    let incoming: serde_json::Value =
        serde_json::from_str(entry["incoming"].as_str().ok_or("no incoming")?)?;
    assert_eq!(incoming["price"], 99);

    // Settling needs a version, and a known one.
    let run = prices(&["--resolve", &id])?.expect_code(2);
    assert!(run.stderr.contains("--keep"), "{}", run.stderr);
    let run = prices(&["--resolve", &id, "--keep", "theirs"])?.expect_code(2);
    assert!(run.stderr.contains("incoming"), "{}", run.stderr);

    let run = prices(&["--resolve", &id, "--keep", "incoming"])?.ok();
    assert!(
        run.stdout.contains(&format!(
            "settled conflict {id}: item (\"A1\") keeps the incoming"
        )),
        "{}",
        run.stdout
    );
    assert!(price()?.contains("99"), "{}", price()?);
    assert_eq!(prices(&["--deferred"])?.ok().stdout.trim(), "no conflicts");
    // Settled once; an unknown id is named.
    let run = prices(&["--resolve", &id, "--keep", "local"])?.expect_code(1);
    assert!(
        run.stderr.contains("is not waiting for a decision"),
        "{}",
        run.stderr
    );
    let run = prices(&["--resolve", "999", "--keep", "local", "--json"])?.expect_code(1);
    assert!(run.stderr.contains("999"), "{}", run.stderr);
    Ok(())
}
