//! Running the schema's column policies and the application's resolvers on
//! incoming changes, and writing what they decide (see [`crate::resolve`]).
//!
//! Apply writes the CRDT merge first; then, for a concurrent change (or any
//! change when the table needs it), [`Transaction::resolve_incoming`] asks
//! the engine (`meldb_core::engine::decide`) what the policies and
//! resolvers decide, and carries it out: completes a resolver's row against
//! the schema, writes a correcting local change when the decision differs
//! from the merge, and records the conflict in the log. The rules are the
//! engine's; this file reads rows and writes.

use super::correct::{live_row, row_of, target_values, write_correction};
use super::layout::TableLayout;
use super::rows;
use super::write::Transaction;
use super::Store;
use crate::error::{ResolveError, Result, WriteError};
use crate::merge::RowState;
use crate::resolve::{Mode, Outcome, Resolver, Row, Writer};
use crate::value::{Key, Value};
use meldb_core::engine::{self, decide, Case, DecideError, Decision, Target};

impl Store {
    /// Makes this replica the authority (or not) for every table declared
    /// with `authority = true`. Not stored: the process that embeds the
    /// authority says so each time it opens the database.
    pub fn set_authority(&mut self, authority: bool) {
        self.authority = authority;
    }

    /// Says who writes through this handle: mutators running here see it as
    /// [`Transaction::writer`](super::Transaction::writer), so a rule such
    /// as "only admins may cancel" written in a mutator holds on the
    /// client's optimistic run too, and row-level rules that name roles
    /// (`delete_roles`) judge local writes by it (a delete the authority
    /// would refuse fails here first with `WriteError::DeleteRefused`; the
    /// authority's own deletes are not held to roles). It is the application's own claim and
    /// never travels: the authority judges a pushed mutation by what the
    /// client's token vouches for
    /// ([`Store::process_push_from`](Store::process_push_from)).
    pub fn set_writer(&mut self, writer: Writer) {
        self.writer = writer;
    }

    /// Whether this replica is the authority for tables that have one.
    pub fn is_authority(&self) -> bool {
        self.authority
    }

    /// Registers a `resolve_conflict` closure for `table`. Resolvers live in
    /// memory: register them each time the store is opened.
    ///
    /// Two replicas change an item's price at the same time; a resolver
    /// keeps the higher price instead of the later write:
    ///
    /// ```
    /// use meldb_store::resolve::{Resolution, Resolver};
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
    ///     name = "price"
    ///     type = "integer"
    /// "#, "shop.toml")?;
    /// let (mut a, mut b) = (Store::open_in_memory(&schema)?, Store::open_in_memory(&schema)?);
    /// for store in [&mut a, &mut b] {
    ///     store.add_resolver("item", Resolver::new("highest price", |c| {
    ///         let price = |row: Option<&meldb_store::resolve::Row>| {
    ///             row.and_then(|r| r.integer("price")).unwrap_or(0)
    ///         };
    ///         let highest = price(c.local()).max(price(c.incoming()));
    ///         match c.merged() {
    ///             Some(merged) => Resolution::Merge(merged.clone().with("price", highest)),
    ///             None => Resolution::Accept,
    ///         }
    ///     }))?;
    /// }
    /// a.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("price", 10.into())]))?;
    /// b.apply(&a.changes_since(&b.version_vector())?)?;
    ///
    /// a.write(|tx| tx.set("item", "A1", "price", 30))?; // offline, both
    /// b.write(|tx| tx.set("item", "A1", "price", 20))?; // write after a
    /// b.apply(&a.changes_since(&b.version_vector())?)?;
    /// a.apply(&b.changes_since(&a.version_vector())?)?;
    ///
    /// for store in [&a, &b] {
    ///     let price: i64 = store.conn().query_row("SELECT price FROM item", [], |r| r.get(0))?;
    ///     assert_eq!(price, 30);
    /// }
    /// assert_eq!(a.digest()?, b.digest()?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Adding a resolver with the name of one already registered on the
    /// table replaces it (the new one runs at its own priority); names are
    /// per table and compare exactly.
    pub fn add_resolver(&mut self, table: &str, resolver: Resolver) -> Result<()> {
        let name = self.table_name(table)?;
        self.resolvers.add(&name, resolver);
        Ok(())
    }

    /// Unregisters the resolver called `name` from `table`, effective from
    /// the next apply; returns whether one was registered. An unknown table
    /// is a [`WriteError::UnknownTable`].
    ///
    /// ```
    /// use meldb_store::resolve::{Resolution, Resolver};
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
    /// "#, "shop.toml")?;
    /// let mut store = Store::open_in_memory(&schema)?;
    /// store.add_resolver("item", Resolver::new("audit", |_| Resolution::Pass))?;
    /// assert!(store.remove_resolver("item", "audit")?);
    /// assert!(!store.remove_resolver("item", "audit")?);
    /// assert!(store.remove_resolver("nope", "audit").is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn remove_resolver(&mut self, table: &str, name: &str) -> Result<bool> {
        let table = self.table_name(table)?;
        Ok(self.resolvers.remove(&table, name))
    }

    /// The schema's spelling of the table named `table`, or the error
    /// naming it.
    fn table_name(&self, table: &str) -> Result<String> {
        let layout = self.table(table).ok_or_else(|| WriteError::UnknownTable {
            table: table.into(),
        })?;
        Ok(layout.name().to_owned())
    }

    /// Who decides conflicts of `layout`'s table here.
    pub(super) fn mode(&self, layout: &TableLayout) -> Mode {
        engine::mode(&layout.table, self.authority)
    }

    /// Whether fast-forward changes to this table must be shown to
    /// resolvers or policies too.
    pub(super) fn checks_every_change(&self, layout: &TableLayout) -> bool {
        decide::checks_every_change(&layout.table, self.mode(layout), &self.resolvers)
    }
}

/// One incoming row, after the CRDT merge was written.
pub(super) struct Incoming<'a> {
    pub rid: i64,
    pub key: &'a [Value],
    pub local: Option<&'a RowState>,
    pub incoming: &'a RowState,
    pub merged: RowState,
    pub concurrent: bool,
    pub writer: &'a Writer,
    /// The mutator, when the row is a pushed mutation's effect at the
    /// authority (`local`: before it ran; `incoming` and `merged`: after).
    pub mutation: Option<&'a str>,
}

/// What the deciders made of one incoming row, completed against the
/// schema: not yet carried out.
pub(super) struct Decided {
    pub decision: Decision,
    /// The row the decision makes it (`None`: deleted).
    pub target: Option<Row>,
    pub local_row: Option<Row>,
    pub incoming_row: Option<Row>,
    pub merged_row: Option<Row>,
}

impl Transaction<'_> {
    /// Decides an incoming row and carries the decision out (see the
    /// module docs); returns the outcome if the conflict was logged.
    pub(super) fn resolve_incoming(
        &mut self,
        layout: &TableLayout,
        change: Incoming<'_>,
    ) -> Result<Option<Outcome>> {
        let decided = self.decide_incoming(layout, &change)?;
        self.carry_out(layout, &change, decided)
    }

    /// What the policies and resolvers decide for `change`, with a
    /// resolver's row completed and checked; writes nothing.
    pub(super) fn decide_incoming(
        &self,
        layout: &TableLayout,
        change: &Incoming<'_>,
    ) -> Result<Decided> {
        let store = &*self.store;
        let case = Case {
            shape: layout.shape(),
            key: change.key,
            mode: store.mode(layout),
            concurrent: change.concurrent,
            local: change.local,
            incoming: change.incoming,
            writer: change.writer,
            mutation: change.mutation,
            local_row: change
                .local
                .filter(|s| s.is_live())
                .map(|s| row_of(layout, change.key, s)),
            incoming_row: live_row(layout, change.key, change.incoming),
            merged_row: live_row(layout, change.key, &change.merged),
        };
        let decision = engine::decide(&case, &store.resolvers, store)
            .map_err(|e| decide_error(layout, change.key, e))?;
        let target = match &decision.target {
            Target::Row(row) => row.clone(),
            Target::Merge { row, base } => {
                let resolver = decision.decider.as_deref().unwrap_or_default();
                Some(complete(
                    layout,
                    change.key,
                    base.as_ref(),
                    row.clone(),
                    resolver,
                )?)
            }
        };
        Ok(Decided {
            decision,
            target,
            local_row: case.local_row,
            incoming_row: case.incoming_row,
            merged_row: case.merged_row,
        })
    }

    /// Carries out a decision: the correcting write when it differs from
    /// the merge (with a notice to the writer when part of its change was
    /// dropped; never for a mutation's effect, whose outcome the mutation
    /// reports), and the conflict log's record. Returns the outcome if
    /// logged.
    pub(super) fn carry_out(
        &mut self,
        layout: &TableLayout,
        change: &Incoming<'_>,
        decided: Decided,
    ) -> Result<Option<Outcome>> {
        let Decided {
            decision,
            mut target,
            local_row,
            incoming_row,
            merged_row,
        } = decided;
        let logged = decision.is_logged(change.concurrent);
        let stamping = self.store.stamps_table(layout);
        if !logged && !stamping {
            return Ok(None);
        }
        let mode = self.store.mode(layout);
        // The authority stamps what it accepted (see `stamp`); the stamp
        // rides on the decision's correction and is never logged itself.
        if let Some(row) = target
            .as_mut()
            .filter(|r| stamping && Some(&**r) != local_row.as_ref())
        {
            self.store
                .stamp_row(layout, change.key, row, change.writer)?;
        }
        let correction = decide::correction(
            mode,
            decision.outcome,
            target.as_ref(),
            merged_row.as_ref(),
            incoming_row.as_ref(),
        );
        let mut notice_seq = None;
        if let Some(correction) = correction {
            let values = target
                .as_ref()
                .map(|row| target_values(layout, change.key, row, "resolver"))
                .transpose()?;
            let seq = write_correction(
                self.store,
                layout,
                change.rid,
                change.key,
                &change.merged,
                values.as_deref(),
                correction.mode,
            )?;
            notice_seq = (correction.notice && change.mutation.is_none()).then_some(seq);
        }
        if !logged {
            return Ok(None);
        }
        let store = &*self.store;
        store.log_conflict(&super::conflicts::LogEntry {
            table: layout.name(),
            key: change.key,
            local: local_row.as_ref(),
            incoming: incoming_row.as_ref(),
            merged: merged_row.as_ref(),
            result: target.as_ref(),
            outcome: decision.outcome,
            resolver: decision.decider.as_deref(),
            reason: decision.reason.as_deref(),
            writer: change.writer,
            writer_site: change.incoming.writer,
            notice_seq,
            local_meta: change.local.and_then(|s| s.meta.as_ref()),
            incoming_meta: change.incoming.meta.as_ref(),
        })?;
        Ok(Some(decision.outcome))
    }
}

/// The engine's refusal, with the table and key it was deciding.
fn decide_error(layout: &TableLayout, key: &[Value], e: DecideError) -> crate::Error {
    let key = Key(key.to_vec());
    let table = layout.name().to_owned();
    match e {
        DecideError::Panicked { resolver, message } => ResolveError::Panicked {
            resolver,
            table,
            key,
            message,
        },
        DecideError::NeedsAuthority { resolver, answer } => ResolveError::NeedsAuthority {
            resolver,
            table,
            key,
            answer,
        },
        DecideError::RuleRead { rule, message } => ResolveError::RuleRead {
            table,
            key,
            rule,
            message,
        },
    }
    .into()
}

/// A resolver's row with the columns it left out filled from `base` (or
/// the schema defaults), checked against the table.
fn complete(
    layout: &TableLayout,
    key: &[Value],
    base: Option<&Row>,
    row: Row,
    resolver: &str,
) -> Result<Row> {
    let invalid = |problem: String| ResolveError::InvalidRow {
        resolver: resolver.into(),
        table: layout.name().into(),
        key: Key(key.to_vec()),
        problem,
    };
    for (name, _) in row.columns() {
        if layout.table.column(name).is_none() {
            return Err(invalid(format!("the table has no column {name:?}")).into());
        }
    }
    let mut out = Vec::with_capacity(layout.table.columns.len());
    for (i, col) in layout.table.columns.iter().enumerate() {
        let value = if let Some(n) = layout.table.primary_key.iter().position(|&k| k == i) {
            if let Some(v) = row.get(&col.name) {
                if *v != key[n] {
                    return Err(invalid(format!("key column {:?} cannot change", col.name)).into());
                }
            }
            key[n].clone()
        } else {
            row.get(&col.name)
                .or_else(|| base.and_then(|b| b.get(&col.name)))
                .cloned()
                .unwrap_or_else(|| rows::materialize(col, None))
        };
        out.push((col.name.clone(), value));
    }
    let row = Row::new(out);
    target_values(layout, key, &row, resolver)?;
    Ok(row)
}
