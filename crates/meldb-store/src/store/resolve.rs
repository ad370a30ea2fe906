//! Running the schema's column policies and the application's resolvers on
//! incoming changes, and writing what they decide (see [`crate::resolve`]).
//!
//! Apply writes the CRDT merge first; then, for a concurrent change (or any
//! change when the table needs it), [`Transaction::resolve_incoming`] shows
//! the versions to the policies and resolvers, writes a correcting local
//! change when the decision differs from the merge, and records the
//! conflict in the log.

use super::correct::{live_row, row_of, target_values, write_correction};
use super::layout::TableLayout;
use super::rows;
use super::write::Transaction;
use super::Store;
use crate::clock::SiteId;
use crate::crdt::ColumnState;
use crate::error::{ResolveError, Result, WriteError};
use crate::merge::RowState;
use crate::resolve::{
    Conflict, Mode, Outcome, Resolution, Resolver, Row, Trigger, Version, Writer,
};
use crate::schema::Policy;
use crate::value::{Key, Value};

impl Store {
    /// Makes this replica the authority (or not) for every table declared
    /// with `authority = true`. Not stored: the process that embeds the
    /// authority says so each time it opens the database.
    pub fn set_authority(&mut self, authority: bool) {
        self.authority = authority;
    }

    /// Whether this replica is the authority for tables that have one.
    pub fn is_authority(&self) -> bool {
        self.authority
    }

    /// Registers a `resolve_conflict` closure for `table`. Resolvers live in
    /// memory: register them each time the store is opened.
    pub fn add_resolver(&mut self, table: &str, resolver: Resolver) -> Result<()> {
        let layout = self.table(table).ok_or_else(|| WriteError::UnknownTable {
            table: table.into(),
        })?;
        let name = layout.name().to_owned();
        self.resolvers.push((name, resolver));
        // Stable: equal priorities keep registration order.
        self.resolvers
            .sort_by_key(|(_, r)| std::cmp::Reverse(r.priority));
        Ok(())
    }

    /// Who decides conflicts of `layout`'s table here.
    pub(super) fn mode(&self, layout: &TableLayout) -> Mode {
        match (layout.table.authority, self.authority) {
            (true, true) => Mode::Authority,
            (true, false) => Mode::Client,
            (false, _) => Mode::Leaderless,
        }
    }

    /// Whether fast-forward changes to this table must be shown to
    /// resolvers or policies too.
    pub(super) fn checks_every_change(&self, layout: &TableLayout) -> bool {
        let mode = self.mode(layout);
        if mode == Mode::Client {
            return false;
        }
        let guards = mode == Mode::Authority
            && layout.table.columns.iter().any(|c| {
                matches!(c.policy, Policy::Immutable)
                    || matches!(&c.policy, Policy::Forward(o) if !o.absorbing().is_empty())
            });
        guards
            || self
                .resolvers
                .iter()
                .any(|(t, r)| t == layout.name() && r.trigger == Trigger::EveryChange)
    }

    /// The resolvers for a table, in the order they run.
    fn resolvers_for(&self, table: &str, concurrent: bool) -> Vec<Resolver> {
        self.resolvers
            .iter()
            .filter(|(t, r)| t == table && (concurrent || r.trigger == Trigger::EveryChange))
            .map(|(_, r)| r.clone())
            .collect()
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
}

/// What policies and resolvers decided.
struct Decision {
    outcome: Outcome,
    resolver: Option<String>,
    reason: Option<String>,
    target: Option<Row>,
}

impl Transaction<'_> {
    /// Decides an incoming row (see the module docs); returns the outcome
    /// if the conflict was logged.
    pub(super) fn resolve_incoming(
        &mut self,
        layout: &TableLayout,
        change: Incoming<'_>,
    ) -> Result<Option<Outcome>> {
        let store = &*self.store;
        let mode = store.mode(layout);
        if mode == Mode::Client && !change.concurrent {
            return Ok(None);
        }
        let local_row = change
            .local
            .filter(|s| s.is_live())
            .map(|s| row_of(layout, change.key, s));
        let incoming_row = live_row(layout, change.key, change.incoming);
        let merged_row = live_row(layout, change.key, &change.merged);
        let decision = if mode == Mode::Client {
            Decision {
                outcome: Outcome::AutoMerged,
                resolver: None,
                reason: None,
                target: merged_row.clone(),
            }
        } else {
            let fresh = fresh_registers(change.local, change.incoming);
            let (target, note) = apply_policies(
                layout,
                mode,
                change.concurrent,
                local_row.as_ref(),
                incoming_row.as_ref(),
                &fresh,
                merged_row.clone(),
            );
            let ctx = Conflict {
                table: layout.name(),
                key: change.key,
                local: Version {
                    row: local_row.clone(),
                    hlc: change.local.map(|s| s.hlc).unwrap_or_default(),
                    site: change.local.map_or(SiteId(uuid::Uuid::nil()), |s| s.writer),
                },
                incoming: Version {
                    row: incoming_row.clone(),
                    hlc: change.incoming.hlc,
                    site: change.incoming.writer,
                },
                merged: target,
                concurrent: change.concurrent,
                mode,
                writer: change.writer,
                view: store,
            };
            let resolvers = store.resolvers_for(layout.name(), change.concurrent);
            decide(layout, &ctx, &resolvers, note)?
        };
        if !change.concurrent && matches!(decision.outcome, Outcome::AutoMerged | Outcome::Accepted)
        {
            return Ok(None);
        }
        let rejected = decision.outcome == Outcome::Rejected && mode == Mode::Authority;
        let mut notice_seq = None;
        if decision.target != merged_row || rejected {
            let target = decision
                .target
                .as_ref()
                .map(|row| target_values(layout, change.key, row, "resolver"))
                .transpose()?;
            let correction_mode = if rejected { Mode::Authority } else { mode };
            let seq = write_correction(
                self.store,
                layout,
                change.rid,
                change.key,
                &change.merged,
                target.as_deref(),
                correction_mode,
            )?;
            notice_seq = rejected.then_some(seq);
        }
        let store = &*self.store;
        store.log_conflict(&super::conflicts::LogEntry {
            table: layout.name(),
            key: change.key,
            local: local_row.as_ref(),
            incoming: incoming_row.as_ref(),
            merged: merged_row.as_ref(),
            result: decision.target.as_ref(),
            outcome: decision.outcome,
            resolver: decision.resolver.as_deref(),
            reason: decision.reason.as_deref(),
            writer: change.writer,
            writer_site: change.incoming.writer,
            notice_seq,
        })?;
        Ok(Some(decision.outcome))
    }
}

/// The schema's column policies that need a decider: each one that acts
/// puts the local value back, and says so.
/// For each value column, whether the incoming row's register was written
/// by a write the local row has not seen: the incoming row's latest write
/// set it (same timestamp and site), and the local row lacks that write.
/// Such a write was made against an older version, so a policy that guards
/// the column must judge it even when the register merge drops it. (A
/// register written by an earlier unseen write of the same site is not
/// recognised: registers keep the timestamp and site of their write, not
/// its dot.)
fn fresh_registers(local: Option<&RowState>, incoming: &RowState) -> Vec<bool> {
    let unseen =
        local.is_none_or(|l| l.clock.get(&incoming.writer) < incoming.clock.get(&incoming.writer));
    incoming
        .columns
        .iter()
        .map(|col| {
            unseen
                && matches!(col, Some(ColumnState::Lww(w))
                    if (w.hlc, w.site) == (incoming.hlc, incoming.writer))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn apply_policies(
    layout: &TableLayout,
    mode: Mode,
    concurrent: bool,
    local: Option<&Row>,
    incoming: Option<&Row>,
    fresh: &[bool],
    merged: Option<Row>,
) -> (Option<Row>, Option<(Outcome, String, String)>) {
    let Some(local) = local else {
        return (merged, None);
    };
    let Some(mut target) = merged else {
        return (None, None);
    };
    if mode != Mode::Authority {
        return (Some(target), None);
    }
    let mut note: Option<(Outcome, String, String)> = None;
    for (j, &i) in layout.value_cols.iter().enumerate() {
        let col = &layout.table.columns[i];
        let (Some(lv), Some(tv)) = (local.get(&col.name), target.get(&col.name)) else {
            continue;
        };
        // An incoming value the merge may already have dropped, but that
        // was still written against the local one, so its writer must be
        // told: any value for an immutable column that is set here, and a
        // new write (one the local row has not seen) of a conditional
        // column. (A state column's merge keeping the later state is the
        // designed outcome, not a refusal.)
        let incoming_value = incoming.and_then(|r| r.get(&col.name));
        let attempted = incoming_value.is_some_and(|iv| iv != lv)
            && match col.policy {
                Policy::Immutable => incoming_value != Some(&Value::Null),
                Policy::Conditional => fresh.get(j).copied().unwrap_or(false),
                _ => false,
            };
        if lv == tv && !attempted {
            continue;
        }
        let verdict = match &col.policy {
            Policy::AuthorityWins if concurrent => Some((
                Outcome::KeptLocal,
                format!("column {:?} keeps the authority's value", col.name),
            )),
            Policy::Conditional if concurrent => Some((
                Outcome::Rejected,
                format!(
                    "{:?} was changed by someone else since the version you saw",
                    col.name
                ),
            )),
            Policy::Immutable if *lv != Value::Null => Some((
                Outcome::Rejected,
                format!("{:?} is already set to {lv} and cannot change", col.name),
            )),
            Policy::Forward(order) if order.is_absorbing(lv) => Some((
                Outcome::Rejected,
                format!("{:?} is {lv}, a final state", col.name),
            )),
            _ => None,
        };
        if let Some((outcome, reason)) = verdict {
            let lv = lv.clone();
            target.set_value(&col.name, lv);
            let policy = format!("policy {} ({})", col.policy.name(), col.name);
            note = match note {
                // A rejection outranks keeping a column; reasons add up.
                Some((o, p, r)) => Some((o.max(outcome), p, format!("{r}; {reason}"))),
                None => Some((outcome, policy, reason)),
            };
        }
    }
    (Some(target), note)
}

/// Runs the resolvers until one decides.
fn decide(
    layout: &TableLayout,
    ctx: &Conflict<'_>,
    resolvers: &[Resolver],
    note: Option<(Outcome, String, String)>,
) -> Result<Decision> {
    let key = || Key(ctx.key.to_vec()).to_string();
    for resolver in resolvers {
        let answer = call(ctx, resolver).map_err(|message| ResolveError::Panicked {
            resolver: resolver.name.to_string(),
            table: layout.name().into(),
            key: key(),
            message,
        })?;
        let named = |outcome, reason: Option<String>, target: Option<Row>| Decision {
            outcome,
            resolver: Some(resolver.name.to_string()),
            reason,
            target,
        };
        let needs_authority = |answer: &'static str| ResolveError::NeedsAuthority {
            resolver: resolver.name.to_string(),
            table: layout.name().into(),
            key: key(),
            answer,
        };
        return Ok(match answer {
            Resolution::Pass => continue,
            Resolution::Accept => named(Outcome::Accepted, None, ctx.merged.clone()),
            Resolution::Defer(reason) => named(Outcome::Deferred, Some(reason), ctx.merged.clone()),
            Resolution::Merge(row) => {
                let base = ctx.merged.as_ref().or(ctx.local()).or(ctx.incoming());
                let row = complete(layout, ctx.key, base, row, &resolver.name)?;
                named(Outcome::Merged, None, Some(row))
            }
            Resolution::KeepLocal if ctx.mode == Mode::Leaderless => {
                return Err(needs_authority("KeepLocal").into())
            }
            Resolution::Reject(_) if ctx.mode == Mode::Leaderless => {
                return Err(needs_authority("Reject").into())
            }
            Resolution::KeepLocal => named(Outcome::KeptLocal, None, ctx.local().cloned()),
            Resolution::Reject(reason) => {
                named(Outcome::Rejected, Some(reason), ctx.local().cloned())
            }
        });
    }
    Ok(match note {
        Some((outcome, policy, reason)) => Decision {
            outcome,
            resolver: Some(policy),
            reason: Some(reason),
            target: ctx.merged.clone(),
        },
        None => Decision {
            outcome: Outcome::AutoMerged,
            resolver: None,
            reason: None,
            target: ctx.merged.clone(),
        },
    })
}

/// Calls a resolver with panics caught.
fn call(ctx: &Conflict<'_>, resolver: &Resolver) -> Result<Resolution, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (resolver.f)(ctx)))
        .map_err(|payload| super::panic_message(payload.as_ref()))
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
        key: Key(key.to_vec()).to_string(),
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
