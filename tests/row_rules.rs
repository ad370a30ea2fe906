//! Row-level rules in the schema, over real sync between clients and the
//! authority: a frozen row, delete rules (refused for a non-admin, standing
//! for an admin), transitions along declared edges, authority-owned
//! columns (refused locally, stamped by the authority, reaching every
//! client with no conflict logged), uniqueness over non-key columns (the
//! later writer refused with a notice naming the row it collides with),
//! and a rule added by a schema upgrade.
//!
//! "Old clients" run the same schema without its rules: they write what a
//! current client refuses locally, so the authority's side is seen too.

mod common;

use common::{replica_as as open, tick};

use common::{assert_converged, TestResult, T0};
use meldb::{
    Error, ManualTime, Outcome, Row, Schema, Store, StoreOptions, Value, WriteError, Writer,
};

const SHOP: &str = r#"
name = "shop"
version = 1

[[table]]
name = "orders"
primary_key = ["id"]
authority = true
frozen_when_final = "status"
delete_roles = ["admin"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "status"
type = "text"
nullable = false
default = "pending"
order = ["pending < processing < shipped", "pending < cancelled"]
absorbing = ["shipped", "cancelled"]
transitions = { pending = ["processing", "cancelled"], processing = ["shipped"] }
[[table.column]]
name = "note"
type = "text"
[[table.column]]
name = "updated_at"
type = "integer"
owner = "authority"
[[table.column]]
name = "updated_by"
type = "text"
owner = "authority"

[[table]]
name = "booking"
primary_key = ["id"]
authority = true
[[table.unique]]
columns = ["user", "day"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "user"
type = "text"
[[table.column]]
name = "day"
type = "text"

[[table]]
name = "ledger"
primary_key = ["id"]
authority = true
delete = "never"
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "amount"
type = "integer"
"#;

/// The same tables without any row-level rule: what an old client runs.
fn old_schema() -> Schema {
    let text = SHOP
        .replace("frozen_when_final = \"status\"\n", "")
        .replace("delete_roles = [\"admin\"]\n", "")
        .replace("delete = \"never\"\n", "")
        .replace("[[table.unique]]\ncolumns = [\"user\", \"day\"]\n", "")
        .replace(
            "transitions = { pending = [\"processing\", \"cancelled\"], processing = [\"shipped\"] }\n",
            "",
        )
        .replace("owner = \"authority\"\n", "");
    parse(&text)
}

fn parse(text: &str) -> Schema {
    match Schema::from_toml_str(text, "shop.toml") {
        Ok(s) => s,
        Err(e) => panic!("test schema must parse: {e}"),
    }
}

struct Shop {
    time: ManualTime,
    server: Store,
    alice: Store,
    bob: Store,
}

/// The authority stamps who changed an order and when.
fn stamp(server: &mut Store) -> meldb::Result<()> {
    server.add_stamp("orders", "updated", |c| {
        vec![
            ("updated_at".into(), Value::Integer(c.now_ms as i64)),
            (
                "updated_by".into(),
                c.writer.user.clone().map_or(Value::Null, Value::Text),
            ),
        ]
    })
}

fn shop() -> meldb::Result<Shop> {
    let schema = parse(SHOP);
    let time = ManualTime::new(T0);
    let mut server = open(&schema, 1, &time, true)?;
    stamp(&mut server)?;
    Ok(Shop {
        alice: open(&schema, 2, &time, false)?,
        bob: open(&schema, 3, &time, false)?,
        server,
        time,
    })
}

/// A client's sync with the authority: push (as `writer`), then pull the
/// authority's changes and the notices addressed to the client.
fn sync_with(server: &mut Store, client: &mut Store, writer: &Writer) -> meldb::Result<()> {
    let push = client.changes_since(&server.version_vector())?;
    server.apply_from(&push, writer)?;
    let vv = client.version_vector();
    let notices = server.rejections_for(client.site_id(), &vv)?;
    client.apply(&server.changes_since(&vv)?)?;
    client.receive_rejections(&notices)?;
    Ok(())
}

fn alice() -> Writer {
    Writer::user("alice")
}

fn bob() -> Writer {
    Writer::user("bob")
}

fn admin() -> Writer {
    Writer::user("root").with_role("admin")
}

fn live(store: &Store, table: &str, key: &str) -> meldb::Result<Row> {
    Ok(store
        .get(table, key)?
        .map(Row::from)
        .unwrap_or_else(|| panic!("{table} row {key} must be live")))
}

fn order(id: &str) -> Vec<(&str, Value)> {
    vec![("id", id.into()), ("note", "new".into())]
}

/// The one notice a client holds, which must mention every needle.
fn one_notice(client: &Store, needles: &[&str]) -> meldb::Result<meldb::Rejection> {
    let notices = client.rejections()?;
    assert_eq!(notices.len(), 1, "{notices:?}");
    for needle in needles {
        assert!(
            notices[0].reason.contains(needle),
            "{:?} lacks {needle:?}",
            notices[0].reason
        );
    }
    Ok(notices[0].clone())
}

#[test]
fn a_frozen_row_refuses_edits_locally_and_at_the_authority() -> TestResult {
    let Shop {
        time,
        mut server,
        mut alice,
        mut bob,
    } = shop()?;
    alice.write(|tx| tx.insert("orders", &order("o1")))?;
    sync_with(&mut server, &mut alice, &self::alice())?;
    sync_with(&mut server, &mut bob, &self::bob())?;

    // Bob edits the note offline while the shop ships the order.
    tick(&time);
    bob.write(|tx| tx.set("orders", "o1", "note", "leave at door"))?;
    server.write(|tx| tx.set("orders", "o1", "status", "processing"))?;
    server.write(|tx| tx.set("orders", "o1", "status", "shipped"))?;
    sync_with(&mut server, &mut alice, &self::alice())?;

    // Alice has seen it shipped: her edit fails here, writing nothing.
    let refused = alice.write(|tx| tx.set("orders", "o1", "note", "oops"));
    match refused {
        Err(Error::Write(WriteError::Frozen {
            table,
            column,
            state,
            ..
        })) => {
            assert_eq!((table.as_str(), column.as_str()), ("orders", "status"));
            assert_eq!(state, "\"shipped\"");
        }
        other => panic!("expected Frozen, got {other:?}"),
    }
    let refused = alice.write(|tx| tx.delete("orders", "o1"));
    assert!(
        matches!(refused, Err(Error::Write(WriteError::Frozen { .. }))),
        "{refused:?}"
    );

    // Bob's edit, written before he saw it shipped, is refused whole.
    sync_with(&mut server, &mut bob, &self::bob())?;
    let notice = one_notice(&bob, &["frozen", "shipped"])?;
    assert_eq!(notice.table, "orders");
    let row = live(&server, "orders", "o1")?;
    assert_eq!(row.text("note"), Some("new"));
    assert_eq!(row.text("status"), Some("shipped"));
    let log = server.conflicts(Some("orders"), Some(Outcome::Rejected), 10)?;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0].resolver.as_deref(),
        Some("rule frozen_when_final (status)")
    );
    sync_with(&mut server, &mut alice, &self::alice())?;
    assert_converged(&[server, alice, bob])?;
    Ok(())
}

#[test]
fn deletes_follow_the_delete_rules() -> TestResult {
    let Shop {
        time: _,
        mut server,
        mut alice,
        mut bob,
    } = shop()?;
    alice.write(|tx| {
        tx.insert("orders", &order("o1"))?;
        tx.insert("orders", &order("o2"))?;
        tx.insert("ledger", &[("id", "l1".into()), ("amount", 5.into())])
    })?;
    sync_with(&mut server, &mut alice, &self::alice())?;
    sync_with(&mut server, &mut bob, &self::bob())?;

    // Without the role, a delete fails locally, naming the role.
    let refused = bob.write(|tx| tx.delete("orders", "o1"));
    match &refused {
        Err(Error::Write(WriteError::DeleteRefused { table, problem, .. })) => {
            assert_eq!(table, "orders");
            assert!(problem.contains("\"admin\""), "{problem}");
        }
        other => panic!("expected DeleteRefused, got {other:?}"),
    }
    // Nobody deletes the ledger, not even the authority.
    for store in [&mut bob, &mut server] {
        let refused = store.write(|tx| tx.delete("ledger", "l1"));
        assert!(
            matches!(&refused, Err(Error::Write(WriteError::DeleteRefused { problem, .. })) if problem.contains("may not be deleted")),
            "{refused:?}"
        );
    }

    // Bob claims the role locally, but his token does not: the authority
    // refuses with his real roles and puts the row back.
    bob.set_writer(Writer::user("bob").with_role("admin"));
    bob.write(|tx| tx.delete("orders", "o1"))?;
    sync_with(&mut server, &mut bob, &self::bob())?;
    one_notice(&bob, &["\"admin\""])?;
    assert_eq!(live(&bob, "orders", "o1")?.text("note"), Some("new"));

    // An admin's delete stands everywhere.
    alice.set_writer(admin());
    alice.write(|tx| tx.delete("orders", "o2"))?;
    sync_with(&mut server, &mut alice, &admin())?;
    sync_with(&mut server, &mut bob, &self::bob())?;
    for store in [&server, &alice, &bob] {
        assert!(store.get("orders", "o2")?.is_none());
        assert!(store.get("orders", "o1")?.is_some());
    }
    assert!(alice.rejections()?.is_empty());

    // An old client's delete of the ledger is refused at the authority.
    let mut old = open(&old_schema(), 9, &ManualTime::new(T0), false)?;
    sync_with(&mut server, &mut old, &admin())?;
    old.write(|tx| tx.delete("ledger", "l1"))?;
    sync_with(&mut server, &mut old, &admin())?;
    one_notice(&old, &["may not be deleted"])?;
    assert_eq!(live(&old, "ledger", "l1")?.integer("amount"), Some(5));
    sync_with(&mut server, &mut alice, &admin())?;
    sync_with(&mut server, &mut bob, &self::bob())?;
    assert_converged(&[server, alice, bob, old])?;
    Ok(())
}

#[test]
fn states_move_only_along_declared_transitions() -> TestResult {
    let Shop {
        time: _,
        mut server,
        mut alice,
        bob: _,
    } = shop()?;
    alice.write(|tx| tx.insert("orders", &order("o1")))?;
    let refused = alice.write(|tx| tx.set("orders", "o1", "status", "shipped"));
    match refused {
        Err(Error::Write(WriteError::Transition {
            column, problem, ..
        })) => {
            assert_eq!(column, "status");
            assert!(
                problem.contains("from \"pending\" to \"shipped\"")
                    && problem.contains("may move to \"processing\", \"cancelled\""),
                "{problem}"
            );
        }
        other => panic!("expected Transition, got {other:?}"),
    }
    alice.write(|tx| tx.set("orders", "o1", "status", "processing"))?;
    sync_with(&mut server, &mut alice, &self::alice())?;

    // An old client jumps pending -> shipped; the authority refuses it.
    let mut old = open(&old_schema(), 9, &ManualTime::new(T0), false)?;
    old.write(|tx| tx.insert("orders", &order("o2")))?;
    sync_with(&mut server, &mut old, &self::bob())?;
    old.write(|tx| tx.set("orders", "o2", "status", "shipped"))?;
    sync_with(&mut server, &mut old, &self::bob())?;
    one_notice(&old, &["from \"pending\" to \"shipped\""])?;
    for store in [&server, &old] {
        assert_eq!(live(store, "orders", "o2")?.text("status"), Some("pending"));
    }
    sync_with(&mut server, &mut alice, &self::alice())?;
    assert_eq!(
        live(&alice, "orders", "o1")?.text("status"),
        Some("processing")
    );
    assert_converged(&[server, alice, old])?;
    Ok(())
}

/// A local write that must fail.
type Attempt = Box<dyn Fn(&mut meldb::Transaction<'_>) -> meldb::Result<()>>;

#[test]
fn owned_columns_are_the_authoritys_and_its_stamp_reaches_every_client() -> TestResult {
    let Shop {
        time,
        mut server,
        mut alice,
        mut bob,
    } = shop()?;
    // Every local write path refuses the owned column, writing nothing.
    let attempts: [(&str, Attempt); 3] = [
        (
            "insert",
            Box::new(|tx| tx.insert("orders", &[("id", "o1".into()), ("updated_at", 1.into())])),
        ),
        (
            "upsert",
            Box::new(|tx| {
                tx.upsert(
                    "orders",
                    &[("id", "o1".into()), ("updated_by", "me".into())],
                )
            }),
        ),
        (
            "set",
            Box::new(|tx| {
                tx.insert("orders", &order("o1"))?;
                tx.set("orders", "o1", "updated_at", 2)
            }),
        ),
    ];
    for (what, attempt) in &attempts {
        let refused = alice.write(|tx| attempt(tx));
        match refused {
            Err(Error::Write(WriteError::AuthorityOwned { table, column })) => {
                assert_eq!(table, "orders", "{what}");
                assert!(column.starts_with("updated_"), "{what}: {column}");
            }
            other => panic!("{what}: expected AuthorityOwned, got {other:?}"),
        }
        assert!(
            alice.get("orders", "o1")?.is_none(),
            "{what} wrote something"
        );
    }

    // A plain change is stamped by the authority, and the stamp reaches
    // every client; nobody logs a conflict for it.
    tick(&time);
    alice.write(|tx| tx.insert("orders", &order("o1")))?;
    sync_with(&mut server, &mut alice, &self::alice())?;
    sync_with(&mut server, &mut bob, &self::bob())?;
    let stamped = T0 as i64 + 10;
    for store in [&server, &alice, &bob] {
        let row = live(store, "orders", "o1")?;
        assert!(
            row.integer("updated_at").is_some_and(|t| t >= stamped),
            "{row:?}"
        );
        assert_eq!(row.text("updated_by"), Some("alice"));
    }
    tick(&time);
    bob.write(|tx| tx.set("orders", "o1", "note", "ring twice"))?;
    sync_with(&mut server, &mut bob, &self::bob())?;
    sync_with(&mut server, &mut alice, &self::alice())?;
    let row = live(&alice, "orders", "o1")?;
    assert_eq!(row.text("updated_by"), Some("bob"));
    assert_eq!(row.text("note"), Some("ring twice"));
    for store in [&server, &alice, &bob] {
        assert!(store.conflicts(None, None, 10)?.is_empty());
        assert!(store.rejections()?.is_empty());
    }

    // An old client writes the owned column: it is put back (and stamped
    // again), its other column stands, and it is told.
    let mut old = open(&old_schema(), 9, &time, false)?;
    sync_with(&mut server, &mut old, &self::bob())?;
    tick(&time);
    old.write(|tx| {
        tx.update(
            "orders",
            "o1",
            &[
                ("note", "from old".into()),
                ("updated_by", "mallory".into()),
            ],
        )
    })?;
    sync_with(&mut server, &mut old, &self::bob())?;
    one_notice(&old, &["\"updated_by\"", "authority only"])?;
    let row = live(&old, "orders", "o1")?;
    assert_eq!(row.text("note"), Some("from old"));
    assert_eq!(row.text("updated_by"), Some("bob"));
    sync_with(&mut server, &mut alice, &self::alice())?;
    sync_with(&mut server, &mut bob, &self::bob())?;
    assert_converged(&[server, alice, bob, old])?;
    Ok(())
}

#[test]
fn stamps_set_only_owned_columns() -> TestResult {
    let Shop {
        time: _,
        mut server,
        mut alice,
        bob: _,
    } = shop()?;
    // A table without owned columns takes no stamp.
    let refused = server.add_stamp("booking", "nope", |_| Vec::new());
    assert!(
        matches!(&refused, Err(Error::Resolve(meldb::ResolveError::Stamp { problem, .. })) if problem.contains("no authority-owned column")),
        "{refused:?}"
    );
    server.add_stamp("orders", "bad", |_| vec![("note".into(), "x".into())])?;
    alice.write(|tx| tx.insert("orders", &order("o1")))?;
    let push = alice.changes_since(&server.version_vector())?;
    let failed = server.apply_from(&push, &self::alice());
    match failed {
        Err(Error::Resolve(meldb::ResolveError::Stamp { stamp, problem, .. })) => {
            assert_eq!(stamp, "bad");
            assert!(problem.contains("\"note\""), "{problem}");
        }
        other => panic!("expected a stamp error, got {other:?}"),
    }
    // Nothing of the changeset was applied.
    assert!(server.get("orders", "o1")?.is_none());
    Ok(())
}

#[test]
fn a_unique_collision_refuses_the_later_writer_naming_the_row() -> TestResult {
    let Shop {
        time,
        mut server,
        mut alice,
        mut bob,
    } = shop()?;
    let book = |id: &str, user: &str| {
        vec![
            ("id", Value::from(id)),
            ("user", user.into()),
            ("day", "mon".into()),
        ]
    };
    // Both book "carol" on Monday offline.
    alice.write(|tx| tx.insert("booking", &book("b1", "carol")))?;
    tick(&time);
    bob.write(|tx| tx.insert("booking", &book("b2", "carol")))?;
    bob.write(|tx| tx.insert("booking", &book("b3", "dave")))?;
    sync_with(&mut server, &mut alice, &self::alice())?;
    sync_with(&mut server, &mut bob, &self::bob())?;
    let notice = one_notice(
        &bob,
        &["(user, day)", "(\"carol\", \"mon\")", "row (\"b1\")"],
    )?;
    assert_eq!(notice.key, meldb::Key::from("b2"));
    assert!(alice.rejections()?.is_empty());
    sync_with(&mut server, &mut alice, &self::alice())?;
    for store in [&server, &alice, &bob] {
        assert!(store.get("booking", "b1")?.is_some());
        assert!(store.get("booking", "b2")?.is_none());
        assert!(store.get("booking", "b3")?.is_some());
    }
    // Moving a booking onto a taken slot is refused too, and the row keeps
    // its values.
    tick(&time);
    bob.write(|tx| tx.set("booking", "b3", "user", "carol"))?;
    sync_with(&mut server, &mut bob, &self::bob())?;
    assert_eq!(bob.rejections()?.len(), 2);
    assert_eq!(live(&bob, "booking", "b3")?.text("user"), Some("dave"));
    sync_with(&mut server, &mut alice, &self::alice())?;
    assert_converged(&[server, alice, bob])?;
    Ok(())
}

#[test]
fn a_rule_added_by_an_upgrade_judges_new_writes_and_reports_old_rows() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("server.db");
    let old = old_schema();
    {
        let mut server = Store::open(&path, &old)?;
        server.write(|tx| {
            for (id, user) in [("b1", "carol"), ("b2", "carol"), ("b3", "dave")] {
                tx.insert(
                    "booking",
                    &[
                        ("id", id.into()),
                        ("user", user.into()),
                        ("day", "mon".into()),
                    ],
                )?;
            }
            Ok(())
        })?;
        assert!(server.rule_violations()?.is_empty());
    }
    let new = parse(SHOP);
    let upgrade = old.check_upgrade(&new, "server.db")?;
    assert_eq!(upgrade.changed_rules, ["orders", "booking", "ledger"]);
    let mut server = StoreOptions::new().authority(true).open(&path, &new)?;
    // The old rows stay; the collision is reported.
    let violations = server.rule_violations()?;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].table, "booking");
    assert_eq!(violations[0].rule, "rule unique (user, day)");
    assert_eq!(
        violations[0].keys,
        [meldb::Key::from("b1"), meldb::Key::from("b2")]
    );
    assert!(server.get("booking", "b2")?.is_some());
    // New writes meet the rule.
    let mut client = StoreOptions::new().open_in_memory(&new)?;
    client.write(|tx| {
        tx.insert(
            "booking",
            &[
                ("id", "b4".into()),
                ("user", "dave".into()),
                ("day", "mon".into()),
            ],
        )
    })?;
    sync_with(&mut server, &mut client, &self::bob())?;
    one_notice(&client, &["row (\"b3\")"])?;
    assert!(server.get("booking", "b4")?.is_none());
    Ok(())
}
