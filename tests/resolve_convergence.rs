//! Leaderless replicas converge in any delivery order with a forward-only
//! state column (a merge rule) and with conforming custom resolvers
//! (deterministic functions of the versions' values: the later expiry, the
//! union of a cart's items).
//!
//! 3–4 replicas make random writes on a small key space and sync in random
//! pairwise orders, with duplicate and stale re-deliveries; after a final
//! full sync every replica must have equal digests, rows and version
//! vectors. `MELDB_PROPTEST_CASES=N` raises the number of cases.

mod common;

use common::{assert_converged, cases, site, sync_all, T0};
use meldb::{
    Changeset, Error, ManualTime, Resolution, Resolver, Row, Schema, Store, StoreOptions, Value,
    Version, WriteError,
};
use proptest::prelude::*;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

const SCHEMA: &str = r#"
name = "holds"
version = 1
[[table]]
name = "hold"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "integer"
[[table.column]]
name = "status"
type = "text"
nullable = false
default = "active"
order = ["active < confirmed"]
absorbing = ["confirmed", "released"]
[[table.column]]
name = "expires_at"
type = "integer"
[[table]]
name = "cart"
primary_key = ["id"]
[[table.column]]
name = "id"
type = "integer"
[[table.column]]
name = "items"
type = "text"
nullable = false
default = "[]"
"#;

const STATES: [&str; 3] = ["active", "confirmed", "released"];
const ITEMS: [&str; 4] = ["apple", "bread", "eggs", "milk"];

#[derive(Clone, Debug)]
enum Op {
    /// Upsert a hold: a state (or none), an expiry (or none).
    Hold {
        at: usize,
        key: i64,
        state: Option<usize>,
        expires: Option<i64>,
    },
    DeleteHold {
        at: usize,
        key: i64,
    },
    /// Add an item to a cart (read, union, write back).
    AddItem {
        at: usize,
        key: i64,
        item: usize,
    },
    DeleteCart {
        at: usize,
        key: i64,
    },
    /// Sync `from` → `to`, applying the changeset twice if `twice`.
    Sync {
        from: usize,
        to: usize,
        twice: bool,
    },
    /// Both replicas send before either receives: each sees the other's
    /// change as a conflict and runs the resolvers on its own.
    Swap {
        a: usize,
        b: usize,
    },
    /// Re-deliver a changeset sent earlier (stale) to `to`.
    Redeliver {
        index: usize,
        to: usize,
    },
    Tick(u64),
}

fn op(replicas: usize, carts: bool) -> impl Strategy<Value = Op> {
    let at = 0..replicas;
    let key = 0..3i64;
    let hold = (
        at.clone(),
        key.clone(),
        proptest::option::of(0..STATES.len()),
        proptest::option::of(0..50i64),
    )
        .prop_map(|(at, key, state, expires)| Op::Hold {
            at,
            key,
            state,
            expires,
        });
    let delete_hold = (at.clone(), key.clone()).prop_map(|(at, key)| Op::DeleteHold { at, key });
    let add = (at.clone(), key.clone(), 0..ITEMS.len()).prop_map(|(at, key, item)| Op::AddItem {
        at,
        key,
        item,
    });
    let delete_cart = (at.clone(), key).prop_map(|(at, key)| Op::DeleteCart { at, key });
    let sync = (at.clone(), at.clone(), any::<bool>())
        .prop_filter("distinct replicas", |(f, t, _)| f != t)
        .prop_map(|(from, to, twice)| Op::Sync { from, to, twice });
    let swap = (at.clone(), at.clone())
        .prop_filter("distinct replicas", |(a, b)| a != b)
        .prop_map(|(a, b)| Op::Swap { a, b });
    let redeliver = (any::<usize>(), at).prop_map(|(index, to)| Op::Redeliver { index, to });
    let tick = (0..3u64).prop_map(Op::Tick);
    let cart_weight = if carts { 3 } else { 0 };
    prop_oneof![
        4 => hold,
        1 => delete_hold,
        cart_weight => add,
        cart_weight.min(1) => delete_cart,
        4 => sync,
        2 => swap,
        1 => redeliver,
        2 => tick,
    ]
}

fn expiry(v: &Version) -> Option<i64> {
    v.row.as_ref().and_then(|r| r.integer("expires_at"))
}

/// The later expiry (a missing one counts as earliest): a function of the
/// versions' values only.
fn latest_expiry() -> Resolver {
    Resolver::new("latest expiry", |c| {
        let [a, b] = c.versions();
        match expiry(a).max(expiry(b)) {
            Some(latest) => Resolution::Merge(Row::new(vec![]).with("expires_at", latest)),
            None => Resolution::Pass,
        }
    })
}

/// The union of both carts' items.
fn union_items() -> Resolver {
    Resolver::new("union items", |c| {
        let mut items = BTreeSet::new();
        for v in c.versions() {
            match &v.row {
                Some(row) => items.extend(row.set("items")),
                None => return Resolution::Pass,
            }
        }
        let items: Vec<String> = items.into_iter().collect();
        Resolution::Merge(Row::new(vec![]).with_set("items", &items))
    })
}

/// A local write the schema's policy refuses (a state moving back) is
/// fine; anything else is a failure.
fn allow_refusal(result: meldb::Result<()>) -> meldb::Result<()> {
    match result {
        Err(Error::Write(WriteError::Policy { .. })) => Ok(()),
        other => other,
    }
}

/// Deletes the row if this replica has it; returns whether it did.
fn delete(store: &mut Store, table: &str, key: i64) -> meldb::Result<bool> {
    if store.get(table, key)?.is_none() {
        return Ok(false);
    }
    store.write(|tx| tx.delete(table, key))?;
    Ok(true)
}

/// What the writes promise whatever the delivery order, for keys never
/// deleted: a confirmed hold stays confirmed; with the resolvers, a hold
/// keeps the latest expiry any replica gave it (writes only extend) and a
/// cart holds every item any replica added.
#[derive(Default)]
struct Promises {
    confirmed: BTreeSet<i64>,
    deleted_holds: BTreeSet<i64>,
    latest_expiry: BTreeMap<i64, i64>,
    items: BTreeMap<i64, BTreeSet<String>>,
    deleted_carts: BTreeSet<i64>,
}

impl Promises {
    fn check(&self, store: &Store, resolvers: bool) -> meldb::Result<()> {
        for key in self.confirmed.difference(&self.deleted_holds) {
            let row = store.get("hold", *key)?.map(Row::from);
            let status = row.as_ref().and_then(|r| r.text("status"));
            assert_eq!(
                status,
                Some("confirmed"),
                "hold {key} was confirmed: {row:?}"
            );
        }
        if !resolvers {
            return Ok(());
        }
        for (key, latest) in &self.latest_expiry {
            if self.deleted_holds.contains(key) {
                continue;
            }
            let row = store.get("hold", *key)?.map(Row::from);
            let expiry = row.as_ref().and_then(|r| r.integer("expires_at"));
            assert_eq!(expiry, Some(*latest), "hold {key}'s latest expiry: {row:?}");
        }
        for (key, items) in &self.items {
            if self.deleted_carts.contains(key) {
                continue;
            }
            let row = store.get("cart", *key)?.map(Row::from);
            let got: BTreeSet<String> = row.iter().flat_map(|r| r.set("items")).collect();
            assert_eq!(
                &got, items,
                "cart {key} must hold every item added: {row:?}"
            );
        }
        Ok(())
    }
}

fn run(replicas: usize, resolvers: bool, ops: &[Op]) -> meldb::Result<()> {
    let schema = match Schema::from_toml_str(SCHEMA, "holds.toml") {
        Ok(s) => s,
        Err(e) => panic!("test schema must parse: {e}"),
    };
    let time = ManualTime::new(T0);
    let mut stores: Vec<Store> = Vec::new();
    for n in 0..replicas {
        let mut store = StoreOptions::new()
            .site_id(site(n as u8 + 1))
            .time_source(Arc::new(time.clone()))
            .open_in_memory(&schema)?;
        if resolvers {
            store.add_resolver("hold", latest_expiry())?;
            store.add_resolver("cart", union_items())?;
        }
        stores.push(store);
    }
    let mut sent: Vec<Changeset> = Vec::new();
    let mut promises = Promises::default();
    for op in ops {
        match *op {
            Op::Hold {
                at,
                key,
                state,
                expires,
            } => {
                let mut values = vec![("id", Value::from(key))];
                if let Some(s) = state {
                    values.push(("status", STATES[s].into()));
                }
                let current = stores[at]
                    .get("hold", key)?
                    .and_then(|r| Row::from(r).integer("expires_at"));
                // With the resolvers, writes only extend a hold.
                let expires = if resolvers {
                    expires.max(current)
                } else {
                    expires
                };
                if let Some(e) = expires {
                    values.push(("expires_at", e.into()));
                }
                let written = stores[at].write(|tx| tx.upsert("hold", &values));
                if written.is_ok() {
                    if state == Some(1) {
                        promises.confirmed.insert(key);
                    }
                    if let Some(e) = expires {
                        let latest = promises.latest_expiry.entry(key).or_insert(e);
                        *latest = (*latest).max(e);
                    }
                }
                allow_refusal(written)?;
            }
            Op::DeleteHold { at, key } => {
                if delete(&mut stores[at], "hold", key)? {
                    promises.deleted_holds.insert(key);
                }
            }
            Op::AddItem { at, key, item } => {
                let mut items = stores[at]
                    .get("cart", key)?
                    .map(|r| Row::from(r).set("items"))
                    .unwrap_or_default();
                items.push(ITEMS[item].to_owned());
                promises
                    .items
                    .entry(key)
                    .or_default()
                    .insert(ITEMS[item].to_owned());
                let row = Row::new(vec![]).with_set("items", &items);
                let value = row.get("items").cloned().unwrap_or(Value::Null);
                stores[at]
                    .write(|tx| tx.upsert("cart", &[("id", key.into()), ("items", value)]))?;
            }
            Op::DeleteCart { at, key } => {
                if delete(&mut stores[at], "cart", key)? {
                    promises.deleted_carts.insert(key);
                }
            }
            Op::Sync { from, to, twice } => {
                let changes = stores[from].changes_since(&stores[to].version_vector())?;
                stores[to].apply(&changes)?;
                if twice {
                    stores[to].apply(&changes)?;
                }
                sent.push(changes);
            }
            Op::Swap { a, b } => {
                let to_b = stores[a].changes_since(&stores[b].version_vector())?;
                let to_a = stores[b].changes_since(&stores[a].version_vector())?;
                stores[b].apply(&to_b)?;
                stores[a].apply(&to_a)?;
                sent.push(to_b);
                sent.push(to_a);
            }
            Op::Redeliver { index, to } => {
                if !sent.is_empty() {
                    let changes = &sent[index % sent.len()];
                    stores[to].apply(changes)?;
                }
            }
            Op::Tick(ms) => time.advance(Duration::from_millis(ms)),
        }
    }
    sync_all(&mut stores)?;
    assert_converged(&stores)?;
    promises.check(&stores[0], resolvers)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The forward-only state column needs no resolver and no authority.
    #[test]
    fn forward_state_column_converges_in_any_delivery_order(
        (replicas, ops) in (3usize..=4).prop_flat_map(|n| {
            (Just(n), proptest::collection::vec(op(n, false), 1..40))
        })
    ) {
        run(replicas, false, &ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }

    /// Conforming resolvers (later expiry, union of items) converge too.
    #[test]
    fn conforming_resolvers_converge_in_any_delivery_order(
        (replicas, ops) in (3usize..=4).prop_flat_map(|n| {
            (Just(n), proptest::collection::vec(op(n, true), 1..40))
        })
    ) {
        run(replicas, true, &ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

/// The schema's row-level rules at an authority: one authority and two or
/// three clients (the last an "old client" running the schema without its
/// rules, so the authority sees changes a current client refuses) write
/// at random and sync with the authority in random orders, with duplicate
/// and stale re-deliveries. After a final sync every replica must be
/// equal, and the authority's rows must keep the rules: no two live
/// bookings share a (user, day), an order that reached a final state never
/// changed again, and owned columns hold only the authority's stamps.
mod row_rules {
    use super::common::{assert_converged, cases, site, T0};
    use meldb::{
        Changeset, Error, ManualTime, Row, Schema, Store, StoreOptions, Value, WriteError, Writer,
    };
    use proptest::prelude::*;
    use std::{collections::BTreeMap, sync::Arc, time::Duration};

    const SCHEMA: &str = r#"
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
type = "integer"
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
type = "integer"
[[table.column]]
name = "updated_at"
type = "integer"
owner = "authority"
[[table]]
name = "booking"
primary_key = ["id"]
authority = true
[[table.unique]]
columns = ["user", "day"]
[[table.column]]
name = "id"
type = "integer"
[[table.column]]
name = "user"
type = "integer"
[[table.column]]
name = "day"
type = "integer"
"#;

    const STATES: [&str; 4] = ["pending", "processing", "shipped", "cancelled"];

    fn parse(text: &str) -> Schema {
        match Schema::from_toml_str(text, "shop.toml") {
            Ok(s) => s,
            Err(e) => panic!("test schema must parse: {e}"),
        }
    }

    fn old_schema() -> Schema {
        parse(
            &SCHEMA
                .replace("frozen_when_final = \"status\"\n", "")
                .replace("delete_roles = [\"admin\"]\n", "")
                .replace("[[table.unique]]\ncolumns = [\"user\", \"day\"]\n", "")
                .replace(
                    "transitions = { pending = [\"processing\", \"cancelled\"], processing = [\"shipped\"] }\n",
                    "",
                )
                .replace("owner = \"authority\"\n", ""),
        )
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A client upserts an order's state and note.
        Order {
            at: usize,
            key: i64,
            state: usize,
            note: i64,
        },
        /// A client writes an owned column (refused unless it is old).
        Owned {
            at: usize,
            key: i64,
            value: i64,
        },
        /// A client deletes an order.
        DeleteOrder {
            at: usize,
            key: i64,
        },
        /// A client books (user, day) under a key.
        Book {
            at: usize,
            key: i64,
            user: i64,
            day: i64,
        },
        DeleteBooking {
            at: usize,
            key: i64,
        },
        /// The authority moves an order's state.
        Ship {
            key: i64,
            state: usize,
        },
        /// Client `at` pushes to the authority (twice if `twice`).
        Push {
            at: usize,
            twice: bool,
        },
        /// Client `at` pulls from the authority (twice if `twice`).
        Pull {
            at: usize,
            twice: bool,
        },
        /// A changeset sent earlier, delivered again where it went.
        Redeliver {
            index: usize,
        },
        Tick(u64),
    }

    fn op(clients: usize) -> impl Strategy<Value = Op> {
        let at = 0..clients;
        let key = 0..3i64;
        prop_oneof![
            3 => (at.clone(), key.clone(), 0..STATES.len(), 0..5i64)
                .prop_map(|(at, key, state, note)| Op::Order { at, key, state, note }),
            1 => (at.clone(), key.clone(), 0..5i64)
                .prop_map(|(at, key, value)| Op::Owned { at, key, value }),
            1 => (at.clone(), key.clone()).prop_map(|(at, key)| Op::DeleteOrder { at, key }),
            3 => (at.clone(), key.clone(), 0..2i64, 0..2i64)
                .prop_map(|(at, key, user, day)| Op::Book { at, key, user, day }),
            1 => (at.clone(), key.clone()).prop_map(|(at, key)| Op::DeleteBooking { at, key }),
            1 => (key, 0..STATES.len()).prop_map(|(key, state)| Op::Ship { key, state }),
            4 => (at.clone(), any::<bool>()).prop_map(|(at, twice)| Op::Push { at, twice }),
            4 => (at, any::<bool>()).prop_map(|(at, twice)| Op::Pull { at, twice }),
            1 => any::<usize>().prop_map(|index| Op::Redeliver { index }),
            2 => (0..3u64).prop_map(Op::Tick),
        ]
    }

    /// A local write a row-level rule (or a column policy) refuses, or one
    /// of a row this replica lacks, is fine; anything else fails the case.
    fn allow_refusal(result: meldb::Result<()>) -> meldb::Result<()> {
        match result {
            Err(Error::Write(
                WriteError::Frozen { .. }
                | WriteError::Transition { .. }
                | WriteError::DeleteRefused { .. }
                | WriteError::Policy { .. }
                | WriteError::RowNotFound { .. },
            )) => Ok(()),
            other => other,
        }
    }

    /// Client 0 is an admin; the others are not.
    fn writer(at: usize) -> Writer {
        if at == 0 {
            Writer::user("ann").with_role("admin")
        } else {
            Writer::user(&format!("user{at}"))
        }
    }

    /// A changeset sent earlier: to the authority (`None`) or a client.
    struct Sent {
        to: Option<usize>,
        changes: Changeset,
    }

    /// The authority's pull for client `at`: its changes and the notices.
    fn pull(server: &Store, client: &mut Store) -> meldb::Result<Changeset> {
        let vv = client.version_vector();
        let notices = server.rejections_for(client.site_id(), &vv)?;
        let changes = server.changes_since(&vv)?;
        client.apply(&changes)?;
        client.receive_rejections(&notices)?;
        Ok(changes)
    }

    /// Checks that no order the authority holds in a final state changed
    /// since it first did, and notes the orders newly final.
    fn note_frozen(server: &Store, frozen: &mut BTreeMap<i64, Row>) -> meldb::Result<()> {
        for key in 0..3i64 {
            let row = server.get("orders", key)?.map(Row::from);
            match (frozen.get(&key), row) {
                (Some(was), now) => assert_eq!(
                    now.as_ref(),
                    Some(was),
                    "order {key} changed after it became final"
                ),
                (None, Some(row))
                    if matches!(row.text("status"), Some("shipped" | "cancelled")) =>
                {
                    frozen.insert(key, row);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn run(clients: usize, ops: &[Op]) -> meldb::Result<()> {
        let time = ManualTime::new(T0);
        let open = |schema: &Schema, n: u8, authority: bool| {
            StoreOptions::new()
                .site_id(site(n))
                .time_source(Arc::new(time.clone()))
                .authority(authority)
                .open_in_memory(schema)
        };
        let schema = parse(SCHEMA);
        let mut server = open(&schema, 1, true)?;
        server.add_stamp("orders", "updated_at", |c| {
            vec![("updated_at".into(), Value::Integer(c.now_ms as i64))]
        })?;
        let mut stores: Vec<Store> = Vec::new();
        let old = old_schema();
        for n in 0..clients {
            let is_old = n + 1 == clients;
            let mut store = open(if is_old { &old } else { &schema }, n as u8 + 2, false)?;
            store.set_writer(writer(n));
            stores.push(store);
        }
        let mut sent: Vec<Sent> = Vec::new();
        // The authority's row of each order when it first saw it final.
        let mut frozen: BTreeMap<i64, Row> = BTreeMap::new();
        for op in ops {
            match *op {
                Op::Order {
                    at,
                    key,
                    state,
                    note,
                } => {
                    let values = [
                        ("id", Value::from(key)),
                        ("status", STATES[state].into()),
                        ("note", note.into()),
                    ];
                    allow_refusal(stores[at].write(|tx| tx.upsert("orders", &values)))?;
                }
                Op::Owned { at, key, value } => {
                    let written = stores[at].write(|tx| tx.set("orders", key, "updated_at", value));
                    match written {
                        Err(Error::Write(WriteError::AuthorityOwned { .. }))
                            if at + 1 != clients => {}
                        other => allow_refusal(other)?,
                    }
                }
                Op::DeleteOrder { at, key } => {
                    allow_refusal(stores[at].write(|tx| tx.delete("orders", key)))?;
                }
                Op::Book { at, key, user, day } => {
                    let values = [
                        ("id", Value::from(key)),
                        ("user", user.into()),
                        ("day", day.into()),
                    ];
                    allow_refusal(stores[at].write(|tx| tx.upsert("booking", &values)))?;
                }
                Op::DeleteBooking { at, key } => {
                    allow_refusal(stores[at].write(|tx| tx.delete("booking", key)))?;
                }
                Op::Ship { key, state } => {
                    let state = STATES[state];
                    allow_refusal(server.write(|tx| tx.set("orders", key, "status", state)))?;
                }
                Op::Push { at, twice } => {
                    let changes = stores[at].changes_since(&server.version_vector())?;
                    server.apply_from(&changes, &writer(at))?;
                    if twice {
                        server.apply_from(&changes, &writer(at))?;
                    }
                    sent.push(Sent { to: None, changes });
                }
                Op::Pull { at, twice } => {
                    let changes = pull(&server, &mut stores[at])?;
                    if twice {
                        stores[at].apply(&changes)?;
                    }
                    sent.push(Sent {
                        to: Some(at),
                        changes,
                    });
                }
                Op::Redeliver { index } => {
                    if !sent.is_empty() {
                        let s = &sent[index % sent.len()];
                        match s.to {
                            // Who wrote a stale changeset is not known: no roles.
                            None => {
                                server.apply_from(&s.changes, &Writer::default())?;
                            }
                            Some(at) => {
                                stores[at].apply(&s.changes)?;
                            }
                        }
                    }
                }
                Op::Tick(ms) => time.advance(Duration::from_millis(ms)),
            }
            note_frozen(&server, &mut frozen)?;
        }
        // Star sync until quiet: every client pushes, then pulls.
        for _ in 0..6 {
            for (at, client) in stores.iter_mut().enumerate() {
                let changes = client.changes_since(&server.version_vector())?;
                server.apply_from(&changes, &writer(at))?;
                pull(&server, client)?;
            }
            note_frozen(&server, &mut frozen)?;
        }
        let mut all = vec![server];
        all.extend(stores);
        assert_converged(&all)?;
        let server = &all[0];
        // No two live bookings share a slot.
        let mut slots = BTreeMap::new();
        for key in 0..3i64 {
            if let Some(row) = server.get("booking", key)?.map(Row::from) {
                let slot = (row.integer("user"), row.integer("day"));
                if let Some(other) = slots.insert(slot, key) {
                    panic!("bookings {other} and {key} share {slot:?}");
                }
            }
        }
        // Owned columns hold only stamps (clients wrote 0..5).
        for key in 0..3i64 {
            if let Some(row) = server.get("orders", key)?.map(Row::from) {
                let at = row.integer("updated_at");
                assert!(
                    at.is_none_or(|t| t >= T0 as i64),
                    "order {key}'s updated_at is a client's value: {row:?}"
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        /// Row-level rules at an authority converge in any delivery order.
        #[test]
        fn row_rules_at_an_authority_converge_in_any_delivery_order(
            (clients, ops) in (2usize..=3).prop_flat_map(|n| {
                (Just(n), proptest::collection::vec(op(n), 1..50))
            })
        ) {
            run(clients, &ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }
}
