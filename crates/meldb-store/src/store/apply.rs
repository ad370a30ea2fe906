//! Applying a changeset from another replica.
//!
//! Each row is validated against the schema, checked against the clock
//! drift bound, classified against the local row (already seen,
//! fast-forward, concurrent) and merged with `merge_crdt_columns`. Its
//! covers then join the version vector. All of it is one transaction: an
//! invalid row anywhere rejects the whole changeset and changes nothing.
//!
//! A row whose timestamp is more than the drift bound ahead of the local
//! clock is *held*: stored aside in `meldb_held`, reported with its site and
//! offset, not applied, not covered (so peers will offer it again), and
//! never allowed to move the local clock. Held rows are retried at every
//! apply and by [`Store::release_held`] once the local clock has caught up.

use super::feed::Origin;
use super::layout::TableLayout;
use super::resolve::Incoming;
use super::rows::{self, RowWriteError};
use super::write::Transaction;
use super::Store;
use crate::changeset::{Changeset, RowChange, TableChanges};
use crate::clock::SiteId;
use crate::crdt::Causality;
use crate::error::{ApplyError, Result, StorageError};
use crate::merge::{merge_row, RowState};
pub use crate::report::{ApplyReport, HeldChange};
use crate::resolve::Writer;
use crate::value::{Key, Value};
use meldb_core::codec;
use meldb_core::engine::{self, admit, decide, Admission, MappingError};
use rusqlite::params;

impl Store {
    /// Merges a changeset into this replica. Invalid input is an error and
    /// changes nothing; rows too far ahead in time are held (see the report).
    ///
    /// Changesets may arrive in any order, twice, or in pieces: replicas
    /// that have applied each other's changes hold the same rows.
    ///
    /// ```
    /// use meldb_store::store::Store;
    /// # fn main() -> Result<(), meldb_store::error::Error> {
    /// # let schema = meldb_store::schema::Schema::from_toml_str(r#"
    /// #     name = "todo"
    /// #     version = 1
    /// #     [[table]]
    /// #     name = "task"
    /// #     primary_key = ["id"]
    /// #     [[table.column]]
    /// #     name = "id"
    /// #     type = "text"
    /// #     [[table.column]]
    /// #     name = "title"
    /// #     type = "text"
    /// #     [[table.column]]
    /// #     name = "tags"
    /// #     type = "text"
    /// #     kind = "or_set"
    /// # "#, "todo.toml")?;
    /// let mut phone = Store::open_in_memory(&schema)?;
    /// let mut laptop = Store::open_in_memory(&schema)?;
    /// phone.write(|tx| tx.insert("task", &[("id", "t1".into()), ("title", "Call".into())]))?;
    /// laptop.write(|tx| tx.insert("task", &[("id", "t2".into()), ("title", "Pay".into())]))?;
    ///
    /// // Each sends what the other lacks; applying twice changes nothing.
    /// let to_laptop = phone.changes_since(&laptop.version_vector())?;
    /// let to_phone = laptop.changes_since(&phone.version_vector())?;
    /// laptop.apply(&to_laptop)?;
    /// laptop.apply(&to_laptop)?;
    /// let report = phone.apply(&to_phone)?;
    /// assert_eq!(report.applied(), 1);
    /// assert_eq!(phone.digest()?, laptop.digest()?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing of the changeset is applied on any error.
    /// [`Error::Apply`](crate::Error::Apply): it does not fit this schema
    /// or breaks a CRDT invariant (a bad peer, drop it), or a peer has seen
    /// writes of this replica that it lacks
    /// ([`ApplyError::LostHistory`]:
    /// rotate the site id). [`Error::Resolve`](crate::Error::Resolve): a
    /// resolver panicked or decided something that cannot be carried out
    /// (fix the resolver; the same changes fail the same way until then).
    /// [`Error::Storage`](crate::Error::Storage): SQLite failed, or stored
    /// metadata is corrupt.
    pub fn apply(&mut self, changeset: &Changeset) -> Result<ApplyReport> {
        self.apply_from(changeset, &Writer::default())
    }

    /// [`Store::apply`], telling resolvers who wrote the changes (for an
    /// authority: what the connection authenticated).
    pub fn apply_from(&mut self, changeset: &Changeset, writer: &Writer) -> Result<ApplyReport> {
        let mut tx = self.transaction()?;
        let report = tx.apply_from(changeset, writer)?;
        tx.commit()?;
        Ok(report)
    }

    /// Decodes one or more changeset frames (as
    /// [`codec::encode_changeset_frames`] writes them) and applies them all
    /// in one transaction. Nothing is applied unless every frame decodes.
    pub fn apply_bytes(&mut self, bytes: &[u8]) -> Result<ApplyReport> {
        let changesets = codec::decode_changeset_frames(bytes)?;
        let mut tx = self.transaction()?;
        let mut report = ApplyReport::default();
        for changeset in &changesets {
            report.add(tx.apply_from(changeset, &Writer::default())?);
        }
        tx.commit()?;
        Ok(report)
    }

    /// Applies held rows whose clock the local clock has caught up with.
    pub fn release_held(&mut self) -> Result<ApplyReport> {
        let mut tx = self.transaction()?;
        // Held rows are other replicas' changes (the commit, or a
        // rollback, puts the origin back).
        tx.store.feed.set_origin(Origin::Remote);
        let report = tx.release_held()?;
        tx.commit()?;
        Ok(report)
    }

    /// How many rows are held back.
    pub fn held_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM meldb_held", [], |r| r.get(0))?;
        Ok(n as usize)
    }
}

impl Transaction<'_> {
    /// Applies a changeset inside this transaction (see [`Store::apply`]).
    /// All or nothing: if it fails, the transaction is as it was before the
    /// call, and may still be committed with its other writes.
    pub fn apply(&mut self, changeset: &Changeset) -> Result<ApplyReport> {
        self.apply_from(changeset, &Writer::default())
    }

    /// [`Transaction::apply`] with the changes' writer (see
    /// [`Store::apply_from`]).
    pub fn apply_from(&mut self, changeset: &Changeset, writer: &Writer) -> Result<ApplyReport> {
        let before = self.store.feed.set_origin(Origin::Remote);
        let applied = self.savepoint(|tx| {
            let mut report = tx.release_held()?;
            report.add(tx.apply_tables(changeset, writer)?);
            Ok(report)
        });
        self.store.feed.set_origin(before);
        applied
    }

    /// Runs `f` in a savepoint: if it fails, SQLite and this store's
    /// in-memory state are as they were before, and the enclosing
    /// transaction can go on.
    pub(super) fn savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.store.conn.execute_batch("SAVEPOINT meldb_apply")?;
        let before = self.store.snapshot();
        match f(self) {
            Ok(value) => {
                self.store.conn.execute_batch("RELEASE meldb_apply")?;
                Ok(value)
            }
            Err(e) => {
                self.store
                    .conn
                    .execute_batch("ROLLBACK TO meldb_apply; RELEASE meldb_apply")?;
                self.store.restore(before);
                Err(e)
            }
        }
    }

    fn apply_tables(&mut self, changeset: &Changeset, writer: &Writer) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        for table in &changeset.tables {
            report.add(self.apply_table(changeset.origin, table, writer)?);
        }
        Ok(report)
    }

    fn release_held(&mut self) -> Result<ApplyReport> {
        let store = &mut *self.store;
        let horizon = store
            .clock
            .now_ms()
            .saturating_add(store.clock.max_drift_ms());
        let held: Vec<(i64, Vec<u8>)> = {
            let mut stmt = store.conn.prepare_cached(
                "SELECT id, frame FROM meldb_held WHERE physical_ms <= ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([horizon as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut report = ApplyReport::default();
        for (id, frame) in held {
            let changeset = codec::decode_changeset(&frame).map_err(|e| StorageError::Corrupt {
                what: format!("meldb_held row {id}"),
                problem: e.to_string(),
            })?;
            self.store
                .conn
                .execute("DELETE FROM meldb_held WHERE id = ?1", [id])?;
            // Each held row in its own savepoint: one that no longer applies
            // (it was checked against the schema, but e.g. claims a dot that
            // another row has since taken) is dropped and reported, instead
            // of failing every apply from now on.
            // The writer of a held row is not kept; resolvers see an
            // unknown writer.
            match self.savepoint(|tx| tx.apply_tables(&changeset, &Writer::default())) {
                Ok(released) => {
                    report.released += released.applied() + released.already_seen;
                    report.held.extend(released.held);
                }
                Err(crate::Error::Apply(e)) => report.discarded.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// One table's rows: localize each, ask the engine whether it may be
    /// applied now, write or merge it, count how it classified, and show it
    /// to the deciders when the engine says so.
    fn apply_table(
        &mut self,
        origin: SiteId,
        changes: &TableChanges,
        writer: &Writer,
    ) -> Result<ApplyReport> {
        let store = &mut *self.store;
        let layout =
            store
                .table(&changes.table)
                .cloned()
                .ok_or_else(|| ApplyError::UnknownTable {
                    origin,
                    table: changes.table.clone(),
                })?;
        let mapping =
            engine::column_mapping(layout.shape(), &changes.columns).map_err(|e| match e {
                MappingError::Unknown(column) => ApplyError::UnknownColumn {
                    origin,
                    table: changes.table.clone(),
                    column,
                },
                MappingError::Twice(column) => ApplyError::DuplicateColumn {
                    origin,
                    table: changes.table.clone(),
                    column,
                },
            })?;
        let every_change = store.checks_every_change(&layout);
        let mut report = ApplyReport::default();
        // Whether the previous row of this table was already here: rows of
        // one batch tend to be all new (a catch-up) or all known (an
        // exchange after both sides edited), so the next row is probed the
        // way that fitted the last one.
        let mut expect_known = false;
        for row in &changes.rows {
            let invalid = |problem: String| ApplyError::InvalidRow {
                origin,
                table: changes.table.clone(),
                key: Key(row.key.clone()),
                problem,
            };
            let state = engine::localize(layout.shape(), &mapping, row).map_err(invalid)?;
            let store = &mut *self.store;
            let admission = engine::admit(
                &state,
                &row.covers,
                store.local,
                store.replica.last_seq,
                &store.clock,
            )
            .map_err(|lost| ApplyError::LostHistory {
                site: store.local,
                last: lost.last,
                seen: lost.seen,
            })?;
            if let Admission::Hold(ahead) = admission {
                store.hold(origin, &layout, row, &state)?;
                report.held.push(HeldChange {
                    table: changes.table.clone(),
                    key: Key(row.key.clone()),
                    site: admit::held_site(origin, &state),
                    offset_ms: ahead.offset_ms,
                });
                continue;
            }
            let merge = store.write_or_merge(&layout, &row.key, &state, expect_known, invalid)?;
            expect_known = merge.local.is_some();
            match merge.causality {
                Causality::Duplicate => report.already_seen += 1,
                Causality::FastForward => report.fast_forward += 1,
                Causality::Concurrent => report.concurrent += 1,
            }
            // Admitted above, within the drift bound, so this cannot fail.
            let _ = store.clock.observe(state.hlc);
            for cover in &row.covers {
                if cover.site != store.local {
                    store
                        .replica
                        .coverage
                        .insert(cover.site, cover.first, cover.last);
                    store.replica.coverage_dirty.insert(cover.site);
                }
            }
            if decide::shows_deciders(merge.causality, every_change) {
                let change = Incoming {
                    rid: merge.rid,
                    key: &row.key,
                    local: merge.local.as_ref(),
                    incoming: &state,
                    merged: merge.merged.unwrap_or_else(|| state.clone()),
                    concurrent: merge.causality == Causality::Concurrent,
                    writer,
                    mutation: None,
                };
                if let Some(outcome) = self.resolve_incoming(&layout, change)? {
                    *report.outcomes.entry(outcome).or_default() += 1;
                    *report
                        .table_outcomes
                        .entry(changes.table.clone())
                        .or_default()
                        .entry(outcome)
                        .or_default() += 1;
                }
            }
        }
        Ok(report)
    }
}

/// What writing one admitted row did.
struct Merged {
    rid: i64,
    causality: Causality,
    /// The local state it met (`None`: the row was new here).
    local: Option<RowState>,
    /// The merge of the two (`None`: the row was new here).
    merged: Option<RowState>,
}

impl Store {
    /// Keeps a row the engine held for clock skew in `meldb_held`.
    fn hold(
        &mut self,
        origin: SiteId,
        layout: &TableLayout,
        row: &RowChange,
        state: &RowState,
    ) -> Result<()> {
        let held = admit::held_changeset(origin, layout.shape(), row, state);
        // The row is not covered while held, so peers offer it again on
        // every sync; keep one copy.
        self.conn.execute(
            "INSERT INTO meldb_held (physical_ms, frame) SELECT ?1, ?2 \
             WHERE NOT EXISTS (SELECT 1 FROM meldb_held WHERE frame = ?2)",
            params![
                state.hlc.physical_ms() as i64,
                codec::encode_changeset(&held)
            ],
        )?;
        Ok(())
    }

    /// Writes an admitted row: as new if the key is free, else merged with
    /// the local state (`merge_row` classifies; a duplicate writes nothing).
    ///
    /// `expect_known` says how to probe: `false` tries the row as new first
    /// (a replica catching up mostly receives rows it lacks, and the insert
    /// probes the key anyway), `true` reads the local row first (a failed
    /// insert costs an encoded state and a statement rolled back).
    fn write_or_merge(
        &mut self,
        layout: &TableLayout,
        key: &[Value],
        state: &RowState,
        expect_known: bool,
        invalid: impl Fn(String) -> ApplyError,
    ) -> Result<Merged> {
        let mut causality = Causality::FastForward;
        let mut local = None;
        let mut merged = None;
        let known = if expect_known {
            rows::load_by_key(&self.conn, layout, &self.sites, key)?
        } else {
            None
        };
        let mut outcome = match known {
            Some(_) => Err(RowWriteError::KeyExists),
            None => rows::write_row(&self.conn, layout, &mut self.sites, key, None, state),
        };
        if let Err(RowWriteError::KeyExists) = outcome {
            let existing = match known {
                Some(existing) => existing,
                None => rows::load_by_key(&self.conn, layout, &self.sites, key)?
                    .ok_or_else(|| invalid("key collides with a row that cannot be read".into()))?,
            };
            let (kind, state) = merge_row(Some(&existing.state), state, &layout.rules);
            causality = kind;
            outcome = if kind == Causality::Duplicate {
                Ok(existing.rid)
            } else {
                let previous = Some((existing.rid, &existing.state.clock));
                rows::write_row(&self.conn, layout, &mut self.sites, key, previous, &state)
            };
            local = Some(existing.state);
            merged = Some(state);
        }
        let rid = match outcome {
            Ok(rid) => rid,
            Err(RowWriteError::DotTaken(site, seq)) => {
                return Err(invalid(format!(
                    "dot ({site}, {seq}) already belongs to another row"
                ))
                .into())
            }
            Err(RowWriteError::KeyExists) => {
                return Err(invalid("key collides with an existing row".into()).into())
            }
            Err(RowWriteError::Sqlite(e)) => return Err(e.into()),
        };
        if causality != Causality::Duplicate {
            self.feed.record(layout.id, key);
        }
        Ok(Merged {
            rid,
            causality,
            local,
            merged,
        })
    }
}
