//! The store side of optimistic mutators (see [`crate::mutator`]): the
//! registry, the durable pending queue, the authority's push processing,
//! and the client's pull-and-rebase pipeline.
//!
//! The authority keeps each client's mutation state (the last mutation it
//! processed, the ones it refused) under (token, site): the name of the
//! token the client connected with (`""` for a replica served without
//! tokens) and its site id. No push or pull through one token reads or
//! changes another token's state, so a token that claims another's site
//! id can neither advance its `last_processed` (which would make the real
//! client drop mutations that never ran) nor read its refusals. A row
//! carried over from format 1 has no token; the first token that pushes
//! as its site takes it over (and a pull reads it until then), so an
//! upgrade never runs a processed mutation again.

use super::feed::Origin;
use super::layout::{base_name, quote, TableLayout};
use super::write::Transaction;
use super::{speculate, Store};
use crate::clock::SiteId;
use crate::error::{MutationError, Result};
use crate::mutator::{
    MutationRejection, MutatorError, PendingMutation, PullReport, PullResponse, Push, PushResult,
};
use crate::resolve::{Mode, Outcome, Writer};
use crate::value::{Key, Value};
use crate::version::VersionVector;
use rusqlite::{params, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// The closure a registered mutator runs.
pub(crate) type MutatorFn =
    dyn Fn(&mut Transaction<'_>, &serde_json::Value) -> Result<(), MutatorError> + Send + Sync;

/// A registered mutator.
#[derive(Clone)]
pub(crate) struct Mutator {
    pub name: String,
    pub f: Arc<MutatorFn>,
}

impl fmt::Debug for Mutator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutator")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A change subscription's callback: the keys of a table's rows whose
/// visible values a pull changed.
#[derive(Clone)]
pub(crate) struct Subscriber(Arc<SubscriberFn>);

type SubscriberFn = dyn Fn(&[Key]) + Send + Sync;

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscriber")
    }
}

impl Store {
    /// Registers (or replaces) the mutator `name`. Its arguments travel and
    /// wait as JSON, so `A` is any serde type. Register the same mutators on
    /// clients and on the authority, each time a store is opened.
    ///
    /// A mutator is a business operation that may refuse: here, selling
    /// stock that is not there.
    ///
    /// ```
    /// use meldb_store::mutator::MutatorError;
    /// use meldb_store::schema::Schema;
    /// use meldb_store::store::Store;
    ///
    /// # fn main() -> meldb_store::error::Result<()> {
    /// let schema = Schema::from_toml_str(r#"
    ///     name = "shop"
    ///     version = 1
    ///     [[table]]
    ///     name = "item"
    ///     primary_key = ["sku"]
    ///     [[table.column]]
    ///     name = "sku"
    ///     type = "text"
    ///     [[table.column]]
    ///     name = "stock"
    ///     type = "integer"
    ///     kind = "pn_counter"
    /// "#, "shop.toml")?;
    /// let mut store = Store::open_in_memory(&schema)?;
    /// store.register_mutator("sell", |tx, (sku, n): (String, i64)| {
    ///     let stock = tx
    ///         .get("item", sku.as_str())?
    ///         .and_then(|row| row.into_iter().find(|(c, _)| c == "stock"))
    ///         .and_then(|(_, v)| match v {
    ///             meldb_store::value::Value::Integer(n) => Some(n),
    ///             _ => None,
    ///         })
    ///         .unwrap_or(0);
    ///     if stock < n {
    ///         return Err(MutatorError::app(format!("only {stock} of {sku} left")));
    ///     }
    ///     tx.increment("item", sku.as_str(), "stock", -n)?;
    ///     Ok(())
    /// });
    /// store.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("stock", 3.into())]))?;
    ///
    /// store.mutate("sell", &("A1", 2))?;
    /// let refused = store.mutate("sell", &("A1", 2));
    /// assert!(refused.is_err(), "one left: the second sale changes nothing");
    /// let stock: i64 = store.conn().query_row("SELECT stock FROM item", [], |r| r.get(0))?;
    /// assert_eq!(stock, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn register_mutator<A, F>(&mut self, name: &str, f: F)
    where
        A: DeserializeOwned,
        F: Fn(&mut Transaction<'_>, A) -> Result<(), MutatorError> + Send + Sync + 'static,
    {
        let wrapped = move |tx: &mut Transaction<'_>, args: &serde_json::Value| {
            let args = A::deserialize(args)
                .map_err(|e| MutatorError::app(format!("arguments do not fit the mutator: {e}")))?;
            f(tx, args)
        };
        self.mutators.retain(|m| m.name != name);
        self.mutators.push(Mutator {
            name: name.to_owned(),
            f: Arc::new(wrapped),
        });
    }

    /// Whether `mutate` queues mutations for an authority: this replica is
    /// not the authority and some table has one.
    pub fn queues_mutations(&self) -> bool {
        !self.authority && self.schema.tables.iter().any(|t| t.authority)
    }

    /// Runs mutator `name` now against the local state and, on a client of
    /// an authority, queues the call durably (same transaction) for the
    /// authority; returns its id. A mutator that fails here changes and
    /// queues nothing, and its error is returned.
    ///
    /// # Errors
    ///
    /// [`Error::Mutation`](crate::Error::Mutation): no mutator of that
    /// name, arguments that do not encode, or the mutator failed or
    /// panicked; [`Error::Write`](crate::Error::Write) from a write it
    /// made; [`Error::Storage`](crate::Error::Storage). Nothing is written
    /// or queued on any of them.
    pub fn mutate<A: Serialize>(&mut self, name: &str, args: &A) -> Result<u64> {
        self.mutate_queued(name, args, None)
    }

    /// [`Store::mutate`] with client-asserted app metadata (at most 1 KiB,
    /// usually JSON): the mutator's writes carry it, it is queued with the
    /// call and pushed with it, and while the authority runs the mutation
    /// `Transaction::metadata` returns it. It never changes the `Writer`
    /// the authority runs it as.
    ///
    /// # Errors
    ///
    /// As [`Store::mutate`]; metadata over the bound is
    /// [`WriteError::MetadataTooLarge`](crate::error::WriteError) and
    /// nothing is run or queued.
    pub fn mutate_with<A: Serialize>(
        &mut self,
        name: &str,
        args: &A,
        meta: impl Into<String>,
    ) -> Result<u64> {
        let meta = crate::resolve::WriteMetadata::new(meta).map_err(|e| {
            crate::error::WriteError::MetadataTooLarge {
                len: e.len,
                limit: e.limit,
            }
        })?;
        self.mutate_queued(name, args, Some(meta))
    }

    fn mutate_queued<A: Serialize>(
        &mut self,
        name: &str,
        args: &A,
        meta: Option<crate::resolve::WriteMetadata>,
    ) -> Result<u64> {
        let mutator = self.mutator(name)?;
        let json = serde_json::to_value(args).map_err(|e| MutationError::BadArguments {
            name: name.to_owned(),
            problem: e.to_string(),
        })?;
        let queue = self.queues_mutations();
        let mut tx = self.transaction()?;
        tx.speculative = queue;
        tx.meta = meta.clone();
        let outcome = run(&mutator, &mut tx, &json);
        tx.speculative = false;
        tx.meta = None;
        match outcome {
            Ok(()) => {}
            Err(MutatorError::Failed(error)) => {
                return Err(MutationError::Failed {
                    name: name.to_owned(),
                    error,
                }
                .into())
            }
            Err(MutatorError::Storage(e)) => return Err(e.into()),
        }
        let now = tx.store.clock.now_ms() as i64;
        tx.store.conn.execute(
            "INSERT INTO meldb_pending (name, args, at_ms, meta) VALUES (?1, ?2, ?3, ?4)",
            params![
                name,
                json.to_string(),
                now,
                meta.as_ref().map(|m| m.as_str())
            ],
        )?;
        let id = tx.store.conn.last_insert_rowid();
        if !queue {
            // Ordinary changes: nothing waits; the id is still unique.
            tx.store
                .conn
                .execute("DELETE FROM meldb_pending WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(id as u64)
    }

    /// The mutations waiting for the authority, oldest first.
    pub fn pending_mutations(&self) -> Result<Vec<PendingMutation>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, args, meta FROM meldb_pending ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                PendingMutation {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    args: r.get(2)?,
                    meta: None,
                },
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut m, meta) = row?;
            m.meta = meta
                .map(crate::resolve::WriteMetadata::new)
                .transpose()
                .map_err(|e| crate::error::StorageError::Corrupt {
                    what: "meldb_pending".into(),
                    problem: format!("mutation {}: {e}", m.id),
                })?;
            out.push(m);
        }
        Ok(out)
    }

    /// What to send the authority: every pending mutation, in order.
    pub fn push_request(&self) -> Result<Push> {
        Ok(Push {
            client: self.local,
            mutations: self.pending_mutations()?,
        })
    }

    /// What to ask the authority for: this replica's version vector and its
    /// oldest pending mutation (rejections from there on are wanted).
    pub fn pull_request(&self) -> Result<(VersionVector, u64)> {
        let first: Option<i64> =
            self.conn
                .query_row("SELECT min(id) FROM meldb_pending", [], |r| r.get(0))?;
        Ok((
            self.version_vector(),
            first.map_or(u64::MAX, |id| id as u64),
        ))
    }

    /// At the authority: runs a client's pushed mutations that it has not
    /// processed yet, in order, on the canonical state, in one transaction.
    /// A mutator that fails (or is unknown, or panics) is rejected with its
    /// error and the next one still runs. The client is anonymous (a
    /// replica served without tokens); see [`Store::process_push_from`].
    ///
    /// Each mutation runs in a savepoint, and then every row it wrote is
    /// judged as an incoming change from the pushing client: the schema's
    /// policies, then the table's resolvers by priority (all of them,
    /// whatever their trigger; [`Conflict::mutation`](crate::resolve::Conflict::mutation)
    /// names the mutator), with the row before the mutation as `local` and
    /// the row it produced as `incoming`. A rejection of any effect, by a
    /// resolver or a policy, rolls the whole mutation back and refuses it
    /// with that reason; `Merge` and `KeepLocal` stand as corrections.
    pub fn process_push(&mut self, push: &Push) -> Result<PushResult> {
        self.process_push_from("", &Writer::default(), push)
    }

    /// [`Store::process_push`] for a client that connected with the token
    /// named `token`: its state is kept under (`token`, `push.client`),
    /// apart from every other token's. The writer is anonymous; see
    /// [`Store::process_push_from`].
    pub fn process_push_as(&mut self, token: &str, push: &Push) -> Result<PushResult> {
        self.process_push_from(token, &Writer::default(), push)
    }

    /// [`Store::process_push_as`] for a client the token describes as
    /// `writer` (the relay passes what the token vouches for): mutators see
    /// it as [`Transaction::writer`], and resolvers judging their effects as
    /// the conflict's writer.
    pub fn process_push_from(
        &mut self,
        token: &str,
        writer: &Writer,
        push: &Push,
    ) -> Result<PushResult> {
        let mut tx = self.transaction()?;
        tx.writer = Some(writer.clone());
        let client = push.client.as_bytes().to_vec();
        claim_format_1_state(&tx.store.conn, token, &client)?;
        let mut last = last_processed(&tx.store.conn, token, &client)?;
        let mut result = PushResult::default();
        // The effects are the pushing client's: remote to this replica. A
        // failure rolls the transaction back, and with it the origin.
        tx.store.feed.set_origin(Origin::Remote);
        for m in &push.mutations {
            if m.id <= last {
                result.duplicates += 1;
                continue;
            }
            let outcome = run_pending(&mut tx, m, false)?;
            match outcome {
                Ok(()) => result.applied.push(m.id),
                Err(error) => {
                    tx.store.conn.execute(
                        "INSERT OR REPLACE INTO meldb_mutation_rejects \
                         (token, client, id, name, error) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![token, client, m.id as i64, m.name, error],
                    )?;
                    result.rejected.push(MutationRejection {
                        id: m.id,
                        name: m.name.clone(),
                        error,
                    });
                }
            }
            last = m.id;
        }
        tx.store.conn.execute(
            "INSERT INTO meldb_clients (token, client, last_processed) VALUES (?1, ?2, ?3) \
             ON CONFLICT (token, client) DO UPDATE SET last_processed = excluded.last_processed",
            params![token, client, last as i64],
        )?;
        result.last_processed = last;
        tx.commit()?;
        Ok(result)
    }

    /// At the authority: what `client` (with version vector `vv`, oldest
    /// pending mutation `first_pending`) should pull. Read in one go, so
    /// `last_processed` matches the effects in `changes`. The client is
    /// anonymous; see [`Store::pull_for_as`].
    pub fn pull_for(
        &self,
        client: SiteId,
        vv: &VersionVector,
        first_pending: u64,
    ) -> Result<PullResponse> {
        self.pull_for_as("", client, vv, first_pending)
    }

    /// [`Store::pull_for`] for a client that connected with the token named
    /// `token`: only the state kept under (`token`, `client`) is read.
    pub fn pull_for_as(
        &self,
        token: &str,
        client: SiteId,
        vv: &VersionVector,
        first_pending: u64,
    ) -> Result<PullResponse> {
        let key = client.as_bytes().to_vec();
        let changes = self.changes_since(vv)?;
        let last = last_processed(&self.conn, token, &key)?;
        let first = i64::try_from(first_pending).unwrap_or(i64::MAX);
        // A format-1 row nobody has claimed yet is this client's too.
        let unclaimed = !has_state(&self.conn, token, &key)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, error FROM meldb_mutation_rejects \
             WHERE (token = ?1 OR (?4 AND token IS NULL)) AND client = ?2 AND id >= ?3 \
             ORDER BY id",
        )?;
        let rejected = stmt
            .query_map(params![token, key, first, unclaimed], |r| {
                Ok(MutationRejection {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    error: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(PullResponse {
            changes,
            last_processed: last,
            rejected,
            notices: self.rejections_for(client, vv)?,
        })
    }

    /// On a client: the pull pipeline, in one SQLite transaction. Takes the
    /// speculative effects off, applies the canonical changes (merge, then
    /// resolvers), keeps the rejection notices, drops the mutations the
    /// authority processed (reporting the refused ones), and replays the
    /// remaining pending mutations on top. Subscribers hear of the rows
    /// whose visible values changed, after the commit.
    ///
    /// # Errors
    ///
    /// As [`Store::apply`] for the canonical changes; the whole pull
    /// (merge, rejections, acknowledgements, replay) is rolled back on any
    /// error. A pending mutation that fails on replay is not an error: it
    /// stays pending (the authority decides) and is reported in the
    /// [`PullReport`].
    pub fn apply_pull(&mut self, response: &PullResponse) -> Result<PullReport> {
        let watched: BTreeSet<String> = self.subscribers.iter().map(|(t, _)| t.clone()).collect();
        let mut tx = self.transaction()?;
        let mut report = PullReport::default();

        // Rows whose visible values may change, and those values now.
        // By (table, key text): keys hold values, which have no total order.
        type Before = BTreeMap<(String, String), (Key, Option<Vec<(String, Value)>>)>;
        let mut before: Before = BTreeMap::new();
        if !watched.is_empty() {
            let mut candidates = touched_keys(tx.store)?;
            for t in &response.changes.tables {
                for row in &t.rows {
                    if let Some(layout) = tx.store.table(&t.table) {
                        candidates.push((layout.name().to_owned(), Key(row.key.clone())));
                    }
                }
            }
            for (table, key) in candidates {
                let id = (table.clone(), key.to_string());
                if watched.contains(&table) && !before.contains_key(&id) {
                    let value = tx.store.get(&table, key.clone())?;
                    before.insert(id, (key, value));
                }
            }
        }

        // The rows whose speculative effects come off change as a rebase.
        if tx.store.feed_listening() {
            for (table, key) in touched_keys(tx.store)? {
                let store = &mut *tx.store;
                store
                    .feed
                    .record_named(&store.tables, &table, &key, Origin::Rebase);
            }
        }
        speculate::restore_all(&tx.store.conn, &tx.store.tables)?;
        report.apply = tx.apply(&response.changes)?;
        super::conflicts::store_notices(&tx.store.conn, tx.store.local, &response.notices)?;

        let pending = tx.store.pending_mutations()?;
        let refused: BTreeMap<u64, &MutationRejection> =
            response.rejected.iter().map(|r| (r.id, r)).collect();
        for m in &pending {
            if m.id > response.last_processed {
                continue;
            }
            tx.store
                .conn
                .execute("DELETE FROM meldb_pending WHERE id = ?1", [m.id as i64])?;
            report.acknowledged += 1;
            if let Some(r) = refused.get(&m.id) {
                tx.store.conn.execute(
                    "INSERT OR IGNORE INTO meldb_mutation_failures (id, name, error) \
                     VALUES (?1, ?2, ?3)",
                    params![m.id as i64, m.name, r.error],
                )?;
                report.rejected.push((*r).clone());
            }
        }

        let origin = tx.store.feed.set_origin(Origin::Rebase);
        for m in pending.iter().filter(|m| m.id > response.last_processed) {
            let replayed = run_pending(&mut tx, m, true);
            let replayed = match replayed {
                Ok(replayed) => replayed,
                Err(e) => {
                    tx.store.feed.set_origin(origin);
                    return Err(e);
                }
            };
            match replayed {
                Ok(()) => report.replayed += 1,
                Err(error) => report.failed_replays.push(MutationRejection {
                    id: m.id,
                    name: m.name.clone(),
                    error,
                }),
            }
        }

        tx.store.feed.set_origin(origin);
        if !watched.is_empty() {
            for (table, key) in touched_keys(tx.store)? {
                if watched.contains(&table)
                    && !before.contains_key(&(table.clone(), key.to_string()))
                {
                    // First touched by this replay: it changed.
                    report.changed.push((table, key));
                }
            }
            for ((table, _), (key, value)) in before {
                if tx.store.get(&table, key.clone())? != value {
                    report.changed.push((table, key));
                }
            }
            report
                .changed
                .sort_by(|a, b| (&a.0, a.1.to_string()).cmp(&(&b.0, b.1.to_string())));
        }
        tx.commit()?;

        for (table, callback) in &self.subscribers {
            let keys: Vec<Key> = report
                .changed
                .iter()
                .filter(|(t, _)| t == table)
                .map(|(_, k)| k.clone())
                .collect();
            if !keys.is_empty() {
                (callback.0)(&keys);
            }
        }
        Ok(report)
    }

    /// Calls `callback` after each pull with the keys of `table`'s rows
    /// whose visible values changed (the canonical changes, and pending
    /// mutations replayed differently on top of them).
    pub fn subscribe(
        &mut self,
        table: &str,
        callback: impl Fn(&[Key]) + Send + Sync + 'static,
    ) -> Result<()> {
        let layout = self
            .table(table)
            .ok_or_else(|| crate::error::WriteError::UnknownTable {
                table: table.into(),
            })?;
        let name = layout.name().to_owned();
        self.subscribers
            .push((name, Subscriber(Arc::new(callback))));
        Ok(())
    }

    /// Mutations of this replica that the authority refused, with its
    /// error, not yet acknowledged.
    pub fn mutation_failures(&self) -> Result<Vec<MutationRejection>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, error FROM meldb_mutation_failures WHERE acknowledged = 0 ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(MutationRejection {
                id: r.get::<_, i64>(0)? as u64,
                name: r.get(1)?,
                error: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks a refused mutation as seen by the user.
    pub fn acknowledge_mutation_failure(&mut self, id: u64) -> Result<()> {
        let tx = self.transaction()?;
        tx.store.conn.execute(
            "UPDATE meldb_mutation_failures SET acknowledged = 1 WHERE id = ?1",
            [id as i64],
        )?;
        tx.commit()
    }

    fn mutator(&self, name: &str) -> Result<Mutator> {
        self.mutators
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .ok_or_else(|| {
                MutationError::UnknownMutator {
                    name: name.to_owned(),
                }
                .into()
            })
    }
}

/// Runs a mutator with panics caught (a panic is its failure, and is not
/// printed: `meldb_core::app_panic`).
fn run(
    mutator: &Mutator,
    tx: &mut Transaction<'_>,
    args: &serde_json::Value,
) -> Result<(), MutatorError> {
    meldb_core::app_panic::catch(|| (mutator.f)(tx, args))
        .unwrap_or_else(|message| Err(MutatorError::Failed(format!("panicked: {message}"))))
}

/// Runs a queued mutation in a savepoint (speculatively on a client).
/// `Ok(Err(error))`: it failed (unknown mutator, arguments that do not
/// parse, its own error, a panic) and left no trace. `Err`: SQLite failed,
/// and nothing may be decided.
fn run_pending(
    tx: &mut Transaction<'_>,
    m: &PendingMutation,
    speculative: bool,
) -> Result<Result<(), String>> {
    let mutator = match tx.store.mutator(&m.name) {
        Ok(mutator) => mutator,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let args = match serde_json::from_str::<serde_json::Value>(&m.args) {
        Ok(args) => args,
        Err(e) => return Ok(Err(format!("arguments are not JSON: {e}"))),
    };
    let mut failure = None;
    tx.speculative = speculative;
    tx.meta = m.meta.clone();
    // At the authority every row the mutation writes is judged.
    let judged = !speculative && tx.store.authority;
    tx.effects = judged.then(Vec::new);
    let ran = tx.savepoint(|tx| {
        let refusal = match run(&mutator, tx, &args) {
            Ok(()) if judged => judge_effects(tx, &m.name)?,
            Ok(()) => None,
            Err(MutatorError::Failed(error)) => Some(error),
            Err(MutatorError::Storage(e)) => return Err(e.into()),
        };
        match refusal {
            None => Ok(()),
            Some(error) => {
                failure = Some(error.clone());
                // Any error rolls the savepoint back.
                Err(MutationError::Failed {
                    name: m.name.clone(),
                    error,
                }
                .into())
            }
        }
    });
    tx.speculative = false;
    tx.effects = None;
    tx.meta = None;
    match (ran, failure) {
        (Ok(()), _) => Ok(Ok(())),
        (Err(_), Some(error)) => Ok(Err(error)),
        (Err(e), None) => Err(e),
    }
}

/// At the authority, after a mutation ran: judges each row it wrote as an
/// incoming change from the transaction's writer (see
/// [`Store::process_push`]). Returns the refusal's reason if a policy or
/// resolver rejected one of them (the caller rolls the mutation back);
/// otherwise every decision is carried out.
fn judge_effects(tx: &mut Transaction<'_>, mutation: &str) -> Result<Option<String>> {
    let effects = tx.effects.take().unwrap_or_default();
    let writer = tx.writer().clone();
    // One copy of a table's layout per run of its effects, not per row
    // (deciding borrows the transaction mutably).
    let mut layout: Option<TableLayout> = None;
    for effect in &effects {
        if layout.as_ref().map(|l| l.id) != Some(tx.store.tables[effect.table].id) {
            layout = Some(tx.store.tables[effect.table].clone());
        }
        let Some(layout) = layout.as_ref() else {
            continue;
        };
        if tx.store.mode(layout) != Mode::Authority {
            continue; // leaderless tables: the merge decides, everywhere
        }
        let Some(after) =
            super::rows::load_by_key(&tx.store.conn, layout, &tx.store.sites, &effect.key)?
        else {
            continue;
        };
        if effect.before.as_ref() == Some(&after.state) {
            continue; // rolled back inside the mutation, or no change
        }
        let change = super::resolve::Incoming {
            rid: after.rid,
            key: &effect.key,
            local: effect.before.as_ref(),
            incoming: &after.state,
            merged: after.state.clone(),
            concurrent: false,
            writer: &writer,
            mutation: Some(mutation),
        };
        let decided = tx.decide_incoming(layout, &change)?;
        if decided.decision.outcome == Outcome::Rejected {
            let reason = decided.decision.reason.clone().unwrap_or_else(|| {
                format!(
                    "{} refused the change to {} {}",
                    decided
                        .decision
                        .decider
                        .as_deref()
                        .unwrap_or("the authority"),
                    layout.name(),
                    Key(effect.key.clone())
                )
            });
            return Ok(Some(reason));
        }
        tx.carry_out(layout, &change, decided)?;
    }
    Ok(None)
}

/// The last mutation processed for (`token`, `client`): its own row, or
/// else a format-1 row of the site that no token has claimed yet.
fn last_processed(conn: &rusqlite::Connection, token: &str, client: &[u8]) -> Result<u64> {
    let last: Option<i64> = conn
        .prepare_cached(
            "SELECT last_processed FROM meldb_clients WHERE client = ?2 \
             AND (token = ?1 OR token IS NULL) ORDER BY token IS NULL LIMIT 1",
        )?
        .query_row(params![token, client], |r| r.get(0))
        .optional()?;
    Ok(last.map_or(0, |n| n as u64))
}

/// Whether (`token`, `client`) has a state row of its own.
fn has_state(conn: &rusqlite::Connection, token: &str, client: &[u8]) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM meldb_clients WHERE token = ?1 AND client = ?2)",
        )?
        .query_row(params![token, client], |r| r.get(0))?)
}

/// Gives (`token`, `client`) the format-1 state of the site, if it has
/// none of its own and no token claimed that state yet (inside the push's
/// transaction).
fn claim_format_1_state(conn: &rusqlite::Connection, token: &str, client: &[u8]) -> Result<()> {
    if has_state(conn, token, client)? {
        return Ok(());
    }
    conn.prepare_cached("UPDATE meldb_clients SET token = ?1 WHERE token IS NULL AND client = ?2")?
        .execute(params![token, client])?;
    conn.prepare_cached(
        "UPDATE meldb_mutation_rejects SET token = ?1 WHERE token IS NULL AND client = ?2",
    )?
    .execute(params![token, client])?;
    Ok(())
}

/// The (table, key) of every row speculative effects touched.
fn touched_keys(store: &Store) -> Result<Vec<(String, Key)>> {
    let mut out = Vec::new();
    for (tbl, rid) in speculate::touched(&store.conn)? {
        let Some(layout) = store.tables.iter().find(|t| t.id == tbl) else {
            continue;
        };
        if let Some(key) = key_of(store, layout, rid)? {
            out.push((layout.name().to_owned(), key));
        }
    }
    Ok(out)
}

fn key_of(store: &Store, layout: &TableLayout, rid: i64) -> Result<Option<Key>> {
    let keys: Vec<String> = layout
        .table
        .primary_key
        .iter()
        .map(|&i| quote(&layout.table.columns[i].name))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE _meldb_rid = ?1",
        keys.join(", "),
        quote(&base_name(layout.name()))
    );
    let n = keys.len();
    Ok(store
        .conn
        .prepare_cached(&sql)?
        .query_row([rid], |r| {
            (0..n)
                .map(|i| r.get_ref(i).map(Value::from))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?
        .map(Key))
}
