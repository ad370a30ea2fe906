//! Who decides an incoming row, and what they decide.
//!
//! Invariant: the deciders see a row only when it is concurrent with the
//! local one, or is a fast-forward of a table that checks every change
//! ([`shows_deciders`], [`checks_every_change`]). A client of an authority
//! never decides: the merge stands. Elsewhere the schema's policies run
//! first ([`super::policy`]), then the table's resolvers in priority order
//! until one answers something other than [`Resolution::Pass`]; a resolver
//! that panics fails the decision ([`DecideError::Panicked`]), and a
//! leaderless resolver may not keep one side or reject
//! ([`DecideError::NeedsAuthority`]). If no resolver decides, the policies'
//! note (or the merge) stands.
//!
//! What follows from a decision is decided here too: whether the conflict
//! log records it ([`Decision::is_logged`]) and whether a correcting write
//! must make the stored row equal to it ([`correction`]).

use crate::clock::SiteId;
use crate::crdt::Causality;
use crate::merge::RowState;
use crate::resolve::{Conflict, Mode, Outcome, ReadView, Resolution, Resolver, Row, Trigger};
use crate::resolve::{Version, Writer};
use crate::schema::Table;
use crate::value::Value;
use std::fmt;

use super::policy::{apply_policies, fresh_registers, guards_fast_forwards, PolicyNote};
use super::rules;
use super::TableShape;

/// Who decides conflicts of `table` on a replica that is (or is not) the
/// authority.
pub fn mode(table: &Table, authority: bool) -> Mode {
    match (table.authority, authority) {
        (true, true) => Mode::Authority,
        (true, false) => Mode::Client,
        (false, _) => Mode::Leaderless,
    }
}

/// The resolvers registered on a replica, by table, in the order they run:
/// highest priority first, equal priorities in registration order.
pub struct Resolvers<E> {
    by_table: Vec<(String, Resolver<E>)>,
}

impl<E> Resolvers<E> {
    /// No resolvers.
    pub fn new() -> Self {
        Resolvers {
            by_table: Vec::new(),
        }
    }

    /// Registers `resolver` for the table named `table` (as the schema
    /// spells it: names compare exactly). A resolver of the same name on
    /// that table is replaced: the new one runs at its own priority, in the
    /// old one's place among equal priorities.
    pub fn add(&mut self, table: &str, resolver: Resolver<E>) {
        match self.position(table, &resolver.name) {
            Some(i) => self.by_table[i].1 = resolver,
            None => self.by_table.push((table.to_owned(), resolver)),
        }
        // Stable: equal priorities keep registration order.
        self.by_table
            .sort_by_key(|(_, r)| std::cmp::Reverse(r.priority));
    }

    /// Unregisters the resolver called `name` from `table`; returns whether
    /// there was one.
    pub fn remove(&mut self, table: &str, name: &str) -> bool {
        let found = self.position(table, name);
        if let Some(i) = found {
            self.by_table.remove(i);
        }
        found.is_some()
    }

    fn position(&self, table: &str, name: &str) -> Option<usize> {
        self.by_table
            .iter()
            .position(|(t, r)| t == table && &*r.name == name)
    }

    /// The resolvers that run on a change to `table`: all of them on a
    /// concurrent change, those that asked for every change otherwise.
    pub fn running<'s>(
        &'s self,
        table: &'s str,
        concurrent: bool,
    ) -> impl Iterator<Item = &'s Resolver<E>> + 's {
        self.by_table
            .iter()
            .filter(move |(t, r)| t == table && (concurrent || r.trigger == Trigger::EveryChange))
            .map(|(_, r)| r)
    }

    /// Whether some resolver of `table` runs on every change.
    pub fn any_on_every_change(&self, table: &str) -> bool {
        self.by_table
            .iter()
            .any(|(t, r)| t == table && r.trigger == Trigger::EveryChange)
    }
}

impl<E> Default for Resolvers<E> {
    fn default() -> Self {
        Resolvers::new()
    }
}

impl<E> fmt::Debug for Resolvers<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.by_table).finish()
    }
}

/// Whether fast-forward changes to `table` must be shown to its policies
/// or resolvers too, on a replica in `mode`.
pub fn checks_every_change<E>(table: &Table, mode: Mode, resolvers: &Resolvers<E>) -> bool {
    if mode == Mode::Client {
        return false;
    }
    guards_fast_forwards(table, mode)
        || rules::checks_every_change(table, mode)
        || resolvers.any_on_every_change(&table.name)
}

/// Whether an incoming row, classified as `causality` against the local
/// one, goes to the deciders (`every_change` from [`checks_every_change`]).
pub fn shows_deciders(causality: Causality, every_change: bool) -> bool {
    causality == Causality::Concurrent || (causality == Causality::FastForward && every_change)
}

/// One incoming row after the merge, as the deciders see it: the states,
/// and the rows users would read from them (the store materializes those).
#[derive(Clone, Debug)]
pub struct Case<'a> {
    /// The table.
    pub shape: TableShape<'a>,
    /// The row's key.
    pub key: &'a [Value],
    /// Who decides here ([`mode`]).
    pub mode: Mode,
    /// Whether the incoming state is concurrent with the local one.
    pub concurrent: bool,
    /// The local state before the merge (`None`: the row is new here).
    pub local: Option<&'a RowState>,
    /// The incoming state.
    pub incoming: &'a RowState,
    /// Who wrote the incoming change.
    pub writer: &'a Writer,
    /// The mutator, when the incoming row is a pushed mutation's effect at
    /// the authority (`local`: the row before it ran): every resolver of
    /// the table sees it, whatever its trigger.
    pub mutation: Option<&'a str>,
    /// The local row (`None`: absent or deleted).
    pub local_row: Option<Row>,
    /// The incoming row (`None`: a delete).
    pub incoming_row: Option<Row>,
    /// The merged row (`None`: the merge deletes it).
    pub merged_row: Option<Row>,
}

/// What a decision makes the row.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// This row (`None`: deleted).
    Row(Option<Row>),
    /// A resolver's row: the columns it leaves out take `base`'s values
    /// (or the schema's defaults), and the whole must fit the table. The
    /// store completes and checks it, with the defaults as it materializes
    /// them.
    Merge {
        /// The resolver's row.
        row: Row,
        /// The row it amends: the merged row (after the policies), else the
        /// local, else the incoming one.
        base: Option<Row>,
    },
}

/// What the policies and resolvers decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// How the conflict ended.
    pub outcome: Outcome,
    /// The resolver or policy that decided, as the log names it.
    pub decider: Option<String>,
    /// Why, if the decider said.
    pub reason: Option<String>,
    /// What the row becomes.
    pub target: Target,
}

impl Decision {
    fn merge_stands(target: Option<Row>) -> Decision {
        Decision {
            outcome: Outcome::AutoMerged,
            decider: None,
            reason: None,
            target: Target::Row(target),
        }
    }

    /// Whether the conflict log records this decision: every conflict, and
    /// a fast-forward only when a decider did more than accept.
    pub fn is_logged(&self, concurrent: bool) -> bool {
        concurrent || !matches!(self.outcome, Outcome::AutoMerged | Outcome::Accepted)
    }
}

/// A decision the resolvers could not make. Exhaustive, unlike the public
/// error enums: the store names each case in its `ResolveError`, with the
/// table and key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// A resolver panicked.
    #[error("resolver {resolver:?} panicked: {message}")]
    Panicked {
        /// The resolver.
        resolver: String,
        /// The panic message.
        message: String,
    },
    /// A leaderless resolver answered what only an authority may.
    #[error("resolver {resolver:?} answered {answer} without an authority")]
    NeedsAuthority {
        /// The resolver.
        resolver: String,
        /// What it answered (`KeepLocal`, `Reject`).
        answer: &'static str,
    },
    /// A row-level rule could not read what it needs (a unique set's
    /// other rows).
    #[error("{rule} could not read the table: {message}")]
    RuleRead {
        /// The rule.
        rule: String,
        /// What the read failed with.
        message: String,
    },
}

/// Decides `case`: a client's merge stands; elsewhere the policies run,
/// then the row-level rules ([`super::rules`]), then `resolvers` (those
/// [`Resolvers::running`] on this change) in order until one decides.
/// Rules and resolvers read through `view`.
pub fn decide<E: fmt::Display>(
    case: &Case<'_>,
    resolvers: &Resolvers<E>,
    view: &dyn ReadView<Error = E>,
) -> Result<Decision, DecideError> {
    if case.mode == Mode::Client {
        return Ok(Decision::merge_stands(case.merged_row.clone()));
    }
    let fresh = fresh_registers(case.local, case.incoming);
    let (target, note) = apply_policies(
        case.shape,
        case.mode,
        case.concurrent,
        case.local_row.as_ref(),
        case.incoming_row.as_ref(),
        &fresh,
        case.merged_row.clone(),
    );
    let (target, rule_note) = rules::apply_rules(case, target, view)?;
    let note = rules::join_notes(note, rule_note);
    let ctx = Conflict {
        table: case.shape.name(),
        key: case.key,
        local: Version {
            row: case.local_row.clone(),
            hlc: case.local.map(|s| s.hlc).unwrap_or_default(),
            site: case.local.map_or(SiteId(uuid::Uuid::nil()), |s| s.writer),
            metadata: case.local.and_then(|s| s.meta.clone()),
        },
        incoming: Version {
            row: case.incoming_row.clone(),
            hlc: case.incoming.hlc,
            site: case.incoming.writer,
            metadata: case.incoming.meta.clone(),
        },
        merged: target,
        concurrent: case.concurrent,
        mode: case.mode,
        writer: case.writer,
        mutation: case.mutation,
        view,
    };
    let every = case.concurrent || case.mutation.is_some();
    run(&ctx, resolvers.running(case.shape.name(), every), note)
        .map(|decision| super::defer::shown_while_waiting(case, decision))
}

/// Runs the resolvers until one decides, then holds the answer to what the
/// policies decided (see [`tighten`]).
fn run<'r, E: 'r>(
    ctx: &Conflict<'_, E>,
    resolvers: impl IntoIterator<Item = &'r Resolver<E>>,
    note: Option<PolicyNote>,
) -> Result<Decision, DecideError> {
    for resolver in resolvers {
        let answer = call(ctx, resolver).map_err(|message| DecideError::Panicked {
            resolver: resolver.name.to_string(),
            message,
        })?;
        let named = |outcome, reason: Option<String>, target: Target| Decision {
            outcome,
            decider: Some(resolver.name.to_string()),
            reason,
            target,
        };
        let needs_authority = |answer: &'static str| DecideError::NeedsAuthority {
            resolver: resolver.name.to_string(),
            answer,
        };
        let merged = || Target::Row(ctx.merged.clone());
        let local = || Target::Row(ctx.local().cloned());
        let decision = match answer {
            Resolution::Pass => continue,
            Resolution::Accept => named(Outcome::Accepted, None, merged()),
            Resolution::Defer(reason) => named(Outcome::Deferred, Some(reason), merged()),
            Resolution::Merge(row) => {
                let base = ctx.merged.as_ref().or(ctx.local()).or(ctx.incoming());
                let base = base.cloned();
                named(Outcome::Merged, None, Target::Merge { row, base })
            }
            Resolution::KeepLocal if ctx.mode == Mode::Leaderless => {
                return Err(needs_authority("KeepLocal"))
            }
            Resolution::Reject(_) if ctx.mode == Mode::Leaderless => {
                return Err(needs_authority("Reject"))
            }
            Resolution::KeepLocal => named(
                Outcome::KeptLocal,
                Some(format!(
                    "resolver {:?} kept the authority's row",
                    resolver.name
                )),
                local(),
            ),
            Resolution::Reject(reason) => named(Outcome::Rejected, Some(reason), local()),
        };
        return Ok(match note {
            Some(note) => tighten(decision, note),
            None => decision,
        });
    }
    Ok(match note {
        Some(note) => Decision {
            outcome: note.outcome,
            decider: Some(note.policy),
            reason: Some(note.reason),
            target: Target::Row(ctx.merged.clone()),
        },
        None => Decision::merge_stands(ctx.merged.clone()),
    })
}

/// Outcome precedence: a resolver may tighten what the policies decided,
/// never loosen it. Its row keeps every column a policy put back (the
/// policies' row is what it was shown as merged, so `Accept` keeps them
/// already; a `Merge` row loses its values for them), and a policy's
/// refusal stays a refusal, with its reason, so the writer is told: an
/// `Accept`, `Merge` or `KeepLocal` over a refused change ends `Rejected`.
/// `Reject` and `Defer` stand as the resolver answered them, with the
/// policies' reason added.
fn tighten(mut decision: Decision, note: PolicyNote) -> Decision {
    if let Target::Merge { row, .. } = &mut decision.target {
        *row = Row::new(
            row.columns()
                .iter()
                .filter(|(name, _)| !note.columns.contains(name))
                .cloned()
                .collect(),
        );
    }
    let reason = match decision.reason.take() {
        Some(own) if decision.outcome >= Outcome::Rejected => format!("{own}; {}", note.reason),
        _ => note.reason.clone(),
    };
    if note.outcome == Outcome::Rejected && decision.outcome < Outcome::Rejected {
        decision.outcome = Outcome::Rejected;
    } else if decision.outcome == Outcome::Accepted {
        // Accepting over a policy is the policy's decision.
        decision.outcome = note.outcome;
        decision.decider = Some(note.policy);
    }
    decision.reason = Some(reason);
    decision
}

/// Calls a resolver with panics caught, and not printed
/// ([`crate::app_panic`]).
fn call<E>(ctx: &Conflict<'_, E>, resolver: &Resolver<E>) -> Result<Resolution, String> {
    crate::app_panic::catch(|| (resolver.f)(ctx))
}

/// The correcting write a logged decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Correction {
    /// The mode the correction is written in (an authority's may move
    /// counters; a leaderless one may not).
    pub mode: Mode,
    /// Whether the incoming change's writer is sent a notice (its change
    /// was rejected, or waits for review), identified by the correction's
    /// sequence number.
    pub notice: bool,
}

/// Whether a decision ending in `outcome` with the row `target` (completed)
/// needs a correcting write on top of the `merged` row: when they differ,
/// and always for the authority's rejection or deferral, whose writer
/// receives the correction with the notice. At the authority the writer is
/// also told when a decision that is not a rejection (`KeepLocal`, a
/// `Merge`) drops part of its change: a column the merge took from the
/// `incoming` row that the target sets otherwise, or a delete the target
/// undoes.
pub fn correction(
    mode: Mode,
    outcome: Outcome,
    target: Option<&Row>,
    merged: Option<&Row>,
    incoming: Option<&Row>,
) -> Option<Correction> {
    let authority = mode == Mode::Authority;
    // A deferral's writer is told too: its change waits for review.
    let rejected = matches!(outcome, Outcome::Rejected | Outcome::Deferred) && authority;
    if target == merged && !rejected {
        return None;
    }
    let overruled = authority && drops_part_of(target, merged, incoming);
    Some(Correction {
        mode: if rejected { Mode::Authority } else { mode },
        notice: rejected || overruled,
    })
}

/// Whether `target` takes away something of `incoming` that the `merged`
/// row had kept.
pub fn drops_part_of(target: Option<&Row>, merged: Option<&Row>, incoming: Option<&Row>) -> bool {
    match (incoming, merged, target) {
        // A delete the merge kept, undone.
        (None, None, Some(_)) => true,
        (Some(_), _, None) => true,
        (Some(incoming), Some(merged), Some(target)) => {
            incoming.columns().iter().any(|(name, value)| {
                merged.get(name) == Some(value) && target.get(name) != Some(value)
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{lww, parts, row, state, Parts, GUARDED, PLAIN};
    use crate::value::Key;

    /// A view with one other row, `("doc", "other")`, and no SQL.
    struct OneRow;

    impl ReadView for OneRow {
        type Error = String;

        fn get_row(&self, table: &str, key: &Key) -> Result<Option<Row>, String> {
            let other = Key::from("other");
            Ok((table == "doc" && *key == other).then(|| row(&[("id", "other")])))
        }

        fn query_rows(&self, _: &str, sql: &str, _: &[Value]) -> Result<Vec<Vec<Value>>, String> {
            Err(format!("no SQL in the core: {sql}"))
        }
    }

    struct Fixture {
        parts: Parts,
        key: Vec<Value>,
        local: RowState,
        incoming: RowState,
        writer: Writer,
    }

    fn fixture(toml: &str) -> Fixture {
        Fixture {
            parts: parts(toml),
            key: vec!["d".into()],
            local: state(&[(1, 1)], 3, 1, vec![lww("mine", 3, 1), None, None]),
            incoming: state(&[(2, 1)], 4, 2, vec![lww("theirs", 4, 2), None, None]),
            writer: Writer::user("bob"),
        }
    }

    /// A conflict on `doc` "d": the local title "mine", the incoming and
    /// merged "theirs".
    fn case(f: &Fixture, mode: Mode) -> Case<'_> {
        Case {
            shape: f.parts.shape(),
            key: &f.key,
            mode,
            concurrent: true,
            local: Some(&f.local),
            incoming: &f.incoming,
            writer: &f.writer,
            mutation: None,
            local_row: Some(row(&[("id", "d"), ("title", "mine")])),
            incoming_row: Some(row(&[("id", "d"), ("title", "theirs")])),
            merged_row: Some(row(&[("id", "d"), ("title", "theirs")])),
        }
    }

    fn resolvers(list: Vec<Resolver<String>>) -> Resolvers<String> {
        let mut all = Resolvers::new();
        for r in list {
            all.add("doc", r);
        }
        all
    }

    fn answering(name: &str, answer: Resolution) -> Resolver<String> {
        Resolver::new(name, move |_| answer.clone())
    }

    fn decided(case: &Case<'_>, list: Vec<Resolver<String>>) -> Result<Decision, DecideError> {
        decide(case, &resolvers(list), &OneRow)
    }

    #[test]
    fn the_mode_follows_the_table_and_the_replica() {
        let guarded = parts(GUARDED).table;
        let plain = parts(PLAIN).table;
        assert_eq!(mode(&guarded, true), Mode::Authority);
        assert_eq!(mode(&guarded, false), Mode::Client);
        assert_eq!(mode(&plain, true), Mode::Leaderless);
        assert_eq!(mode(&plain, false), Mode::Leaderless);
    }

    #[test]
    fn accept_keeps_the_merge_and_names_the_resolver() -> Result<(), DecideError> {
        let f = fixture(PLAIN);
        let case = case(&f, Mode::Leaderless);
        let d = decided(&case, vec![answering("ok", Resolution::Accept)])?;
        assert_eq!(d.outcome, Outcome::Accepted);
        assert_eq!(d.decider.as_deref(), Some("ok"));
        assert_eq!(d.target, Target::Row(case.merged_row.clone()));
        Ok(())
    }

    #[test]
    fn reject_keeps_the_local_row_with_the_reason() -> Result<(), DecideError> {
        let f = fixture(PLAIN);
        let case = case(&f, Mode::Authority);
        let d = decided(
            &case,
            vec![answering("no", Resolution::Reject("taken".into()))],
        )?;
        assert_eq!(d.outcome, Outcome::Rejected);
        assert_eq!(d.reason.as_deref(), Some("taken"));
        assert_eq!(d.target, Target::Row(case.local_row.clone()));
        Ok(())
    }

    #[test]
    fn only_an_authority_may_keep_one_side_or_reject() {
        let f = fixture(PLAIN);
        let case = case(&f, Mode::Leaderless);
        for (answer, name) in [
            (Resolution::Reject("taken".into()), "Reject"),
            (Resolution::KeepLocal, "KeepLocal"),
        ] {
            assert_eq!(
                decided(&case, vec![answering("r", answer)]),
                Err(DecideError::NeedsAuthority {
                    resolver: "r".into(),
                    answer: name,
                })
            );
        }
    }

    #[test]
    fn pass_hands_on_to_the_next_resolver_by_priority() -> Result<(), DecideError> {
        let f = fixture(PLAIN);
        let case = case(&f, Mode::Authority);
        let list = vec![
            answering("late", Resolution::KeepLocal),
            answering("first", Resolution::Pass).priority(5),
            answering("second", Resolution::Defer("ask".into())).priority(1),
        ];
        let d = decided(&case, list)?;
        assert_eq!(
            (d.outcome, d.decider.as_deref()),
            (Outcome::Deferred, Some("second"))
        );
        // Nobody decides: the merge stands.
        let d = decided(&case, vec![answering("quiet", Resolution::Pass)])?;
        assert_eq!(d.outcome, Outcome::AutoMerged);
        assert_eq!(d.decider, None);
        Ok(())
    }

    #[test]
    fn a_panicking_resolver_fails_the_decision_with_its_message() {
        let f = fixture(PLAIN);
        let case = case(&f, Mode::Authority);
        let boom = Resolver::new("boom", |_: &Conflict<'_, String>| panic!("kaboom"));
        let later = answering("never", Resolution::Accept).priority(-1);
        assert_eq!(
            decided(&case, vec![boom, later]),
            Err(DecideError::Panicked {
                resolver: "boom".into(),
                message: "kaboom".into(),
            })
        );
    }

    #[test]
    fn a_merge_row_is_returned_with_the_row_it_amends() -> Result<(), DecideError> {
        let f = fixture(PLAIN);
        let case = case(&f, Mode::Leaderless);
        let given = row(&[("note", "both")]);
        let d = decided(
            &case,
            vec![answering("m", Resolution::Merge(given.clone()))],
        )?;
        assert_eq!(d.outcome, Outcome::Merged);
        assert_eq!(
            d.target,
            Target::Merge {
                row: given,
                base: case.merged_row.clone(),
            }
        );
        Ok(())
    }

    #[test]
    fn resolvers_see_both_versions_and_read_through_the_view() -> Result<(), DecideError> {
        let f = fixture(PLAIN);
        let case = case(&f, Mode::Leaderless);
        let reader = Resolver::new("reader", |c: &Conflict<'_, String>| {
            let seen = (
                c.table(),
                c.local().and_then(|r| r.text("title")),
                c.incoming().and_then(|r| r.text("title")),
                c.is_concurrent(),
                c.writer().user.as_deref(),
                c.versions()[1].hlc,
            );
            let found = c.get("doc", "other").ok().flatten().is_some();
            let missing = c.get("doc", "gone").ok().flatten().is_none();
            let refused = c.query("DELETE FROM doc", &[]).is_err();
            let expected = (
                "doc",
                Some("mine"),
                Some("theirs"),
                true,
                Some("bob"),
                crate::clock::Hlc(4),
            );
            if seen == expected && found && missing && refused {
                Resolution::Accept
            } else {
                Resolution::Reject(format!("{seen:?} {found} {missing} {refused}"))
            }
        });
        assert_eq!(decided(&case, vec![reader])?.outcome, Outcome::Accepted);
        Ok(())
    }

    #[test]
    fn a_client_never_asks_its_resolvers() -> Result<(), DecideError> {
        let f = fixture(GUARDED);
        let case = case(&f, Mode::Client);
        let d = decided(&case, vec![answering("boom", Resolution::KeepLocal)])?;
        assert_eq!(d.outcome, Outcome::AutoMerged);
        assert_eq!(d.target, Target::Row(case.merged_row.clone()));
        Ok(())
    }

    #[test]
    fn a_policy_note_stands_when_no_resolver_decides() -> Result<(), DecideError> {
        let f = fixture(GUARDED);
        let case = case(&f, Mode::Authority);
        let d = decided(&case, vec![answering("quiet", Resolution::Pass)])?;
        assert_eq!(d.outcome, Outcome::KeptLocal);
        assert_eq!(d.decider.as_deref(), Some("policy authority_wins (title)"));
        // The policies' row is what resolvers see as merged, and what stands.
        assert_eq!(d.target, Target::Row(case.local_row.clone()));
        Ok(())
    }

    #[test]
    fn a_resolver_tightens_a_policy_refusal_but_never_loosens_it() -> Result<(), DecideError> {
        // GUARDED: title is authority_wins, so on this conflict the policy
        // keeps "mine"; an Accept does not bring "theirs" back.
        let f = fixture(GUARDED);
        let case = case(&f, Mode::Authority);
        let d = decided(&case, vec![answering("yes", Resolution::Accept)])?;
        assert_eq!(d.outcome, Outcome::KeptLocal);
        assert_eq!(d.decider.as_deref(), Some("policy authority_wins (title)"));
        assert_eq!(d.target, Target::Row(case.local_row.clone()));
        // A Merge row loses its value for the guarded column.
        let d = decided(
            &case,
            vec![answering(
                "m",
                Resolution::Merge(row(&[("title", "theirs"), ("note", "n")])),
            )],
        )?;
        assert_eq!(d.outcome, Outcome::Merged);
        match d.target {
            Target::Merge { row, .. } => {
                assert_eq!(row.get("title"), None);
                assert_eq!(row.text("note"), Some("n"));
            }
            other => panic!("not a merge: {other:?}"),
        }
        // A rejection tightens, with both reasons.
        let d = decided(
            &case,
            vec![answering("no", Resolution::Reject("closed".into()))],
        )?;
        assert_eq!(d.outcome, Outcome::Rejected);
        let reason = d.reason.unwrap_or_default();
        assert!(reason.starts_with("closed; "), "{reason}");
        Ok(())
    }

    #[test]
    fn a_policy_rejection_stays_a_rejection_under_accept() -> Result<(), DecideError> {
        let policy = PolicyNote {
            outcome: Outcome::Rejected,
            policy: "policy conditional (note)".into(),
            reason: "changed since".into(),
            columns: vec!["note".into()],
        };
        let accepted = Decision {
            outcome: Outcome::Accepted,
            decider: Some("yes".into()),
            reason: None,
            target: Target::Row(None),
        };
        let d = tighten(accepted, policy.clone());
        assert_eq!(d.outcome, Outcome::Rejected);
        assert_eq!(d.reason.as_deref(), Some("changed since"));
        let kept = Decision {
            outcome: Outcome::KeptLocal,
            ..d.clone()
        };
        assert_eq!(tighten(kept, policy).outcome, Outcome::Rejected);
        Ok(())
    }

    #[test]
    fn a_mutation_effect_reaches_every_resolver() -> Result<(), DecideError> {
        let f = fixture(PLAIN);
        let mut case = case(&f, Mode::Authority);
        case.concurrent = false;
        case.mutation = Some("book");
        let seen = Resolver::new("conflicts only", |c: &Conflict<'_, String>| {
            match (c.mutation(), c.is_concurrent()) {
                (Some("book"), false) => Resolution::Reject("seat taken".into()),
                other => Resolution::Defer(format!("{other:?}")),
            }
        });
        let d = decided(&case, vec![seen])?;
        assert_eq!(d.outcome, Outcome::Rejected);
        assert_eq!(d.reason.as_deref(), Some("seat taken"));
        Ok(())
    }

    #[test]
    fn fast_forwards_reach_only_resolvers_that_ask_for_every_change() -> Result<(), DecideError> {
        let f = fixture(PLAIN);
        let mut case = case(&f, Mode::Leaderless);
        case.concurrent = false;
        let all = resolvers(vec![
            answering("conflicts only", Resolution::Defer("no".into())).priority(9),
            answering("every change", Resolution::Accept).on_every_change(),
        ]);
        let d = decide(&case, &all, &OneRow)?;
        assert_eq!(d.decider.as_deref(), Some("every change"));
        assert!(all.any_on_every_change("doc"));
        assert!(!all.any_on_every_change("other"));
        let table = &f.parts.table;
        assert!(checks_every_change(table, Mode::Leaderless, &all));
        assert!(!checks_every_change(table, Mode::Client, &all));
        let none: Resolvers<String> = Resolvers::new();
        assert!(!checks_every_change(table, Mode::Leaderless, &none));
        Ok(())
    }

    #[test]
    fn deciders_see_conflicts_and_fast_forwards_when_asked() {
        assert!(shows_deciders(Causality::Concurrent, false));
        assert!(shows_deciders(Causality::FastForward, true));
        assert!(!shows_deciders(Causality::FastForward, false));
        assert!(!shows_deciders(Causality::Duplicate, true));
    }

    #[test]
    fn a_fast_forward_is_logged_only_when_a_decider_did_more_than_accept() {
        let decision = |outcome| Decision {
            outcome,
            decider: None,
            reason: None,
            target: Target::Row(None),
        };
        for outcome in Outcome::ALL {
            assert!(decision(outcome).is_logged(true));
            let quiet = matches!(outcome, Outcome::AutoMerged | Outcome::Accepted);
            assert_eq!(decision(outcome).is_logged(false), !quiet, "{outcome}");
        }
    }

    #[test]
    fn a_correction_follows_a_changed_row_and_every_rejection() {
        let merged = row(&[("id", "d"), ("title", "theirs")]);
        let local = row(&[("id", "d"), ("title", "mine")]);
        let c = |mode, outcome, target: &Row| {
            correction(mode, outcome, Some(target), Some(&merged), Some(&merged))
        };
        assert_eq!(c(Mode::Leaderless, Outcome::Accepted, &merged), None);
        assert_eq!(
            c(Mode::Leaderless, Outcome::Merged, &local),
            Some(Correction {
                mode: Mode::Leaderless,
                notice: false,
            })
        );
        // The authority's rejection goes out with a notice, even when the
        // row already is what it decided.
        let notice = Some(Correction {
            mode: Mode::Authority,
            notice: true,
        });
        assert_eq!(c(Mode::Authority, Outcome::Rejected, &merged), notice);
        assert_eq!(c(Mode::Authority, Outcome::Rejected, &local), notice);
        assert_eq!(
            correction(
                Mode::Authority,
                Outcome::KeptLocal,
                None,
                Some(&merged),
                None
            ),
            Some(Correction {
                mode: Mode::Authority,
                notice: false,
            })
        );
        // Keeping the local row over a change the merge had taken tells
        // its writer; without an authority nobody is told.
        let told = correction(
            Mode::Authority,
            Outcome::KeptLocal,
            Some(&local),
            Some(&merged),
            Some(&merged),
        );
        assert_eq!(told.map(|c| c.notice), Some(true));
        let quiet = correction(
            Mode::Leaderless,
            Outcome::Merged,
            Some(&local),
            Some(&merged),
            Some(&merged),
        );
        assert_eq!(quiet.map(|c| c.notice), Some(false));
    }
}
