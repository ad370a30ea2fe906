//! What stays visible while a conflict waits for a person.
//!
//! Invariant: a deferred decision makes the row one the deciders had in
//! hand, chosen by the table's `deferred_shows`
//! ([`crate::schema::Table::shown_while_deferred`]): the local row as it
//! stood before the conflicting change arrived, the incoming row, or the
//! merged row after the column policies. Nothing here invents a row, and
//! decisions other than a deferral pass through unchanged.

use super::decide::{Case, Decision, Target};
use crate::resolve::Outcome;
use crate::schema::DeferredShows;

/// `decision` with, if it defers, the row the table shows while it waits.
pub fn shown_while_waiting(case: &Case<'_>, decision: Decision) -> Decision {
    if decision.outcome != Outcome::Deferred {
        return decision;
    }
    let target = match case.shape.table.shown_while_deferred() {
        DeferredShows::Local => Target::Row(case.local_row.clone()),
        DeferredShows::Incoming => Target::Row(case.incoming_row.clone()),
        // The deciders' merged row: the merge after the policies.
        DeferredShows::Merged => decision.target,
    };
    Decision { target, ..decision }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::decide::{decide, Resolvers};
    use crate::engine::tests::{lww, parts, row, state, PLAIN};
    use crate::resolve::{Mode, ReadView, Resolution, Resolver, Row, Writer};
    use crate::value::{Key, Value};

    struct NoRows;

    impl ReadView for NoRows {
        type Error = String;

        fn get_row(&self, _: &str, _: &Key) -> Result<Option<Row>, String> {
            Ok(None)
        }

        fn query_rows(&self, _: &str, sql: &str, _: &[Value]) -> Result<Vec<Vec<Value>>, String> {
            Err(format!("no SQL in the core: {sql}"))
        }
    }

    /// `PLAIN`'s table, with an authority if `authority`, and `lines`.
    fn schema(authority: bool, lines: &str) -> String {
        let authority = if authority { "authority = true\n" } else { "" };
        PLAIN.replace(
            "primary_key = [\"id\"]\n",
            &format!("primary_key = [\"id\"]\n{authority}{lines}\n"),
        )
    }

    /// What a conflict on `doc` "d" (local title "mine", incoming
    /// "theirs", merged "both") shows when a resolver answers `answer`.
    fn shown(toml: &str, mode: Mode, answer: Resolution) -> Option<Row> {
        let parts = parts(toml);
        let key = vec![Value::from("d")];
        let local = state(&[(1, 1)], 3, 1, vec![lww("mine", 3, 1), None, None]);
        let incoming = state(&[(2, 1)], 4, 2, vec![lww("theirs", 4, 2), None, None]);
        let writer = Writer::user("bob");
        let case = Case {
            shape: parts.shape(),
            key: &key,
            mode,
            concurrent: true,
            local: Some(&local),
            incoming: &incoming,
            writer: &writer,
            mutation: None,
            local_row: Some(row(&[("id", "d"), ("title", "mine")])),
            incoming_row: Some(row(&[("id", "d"), ("title", "theirs")])),
            merged_row: Some(row(&[("id", "d"), ("title", "both")])),
        };
        let mut resolvers = Resolvers::new();
        resolvers.add("doc", Resolver::new("r", move |_| answer.clone()));
        match decide(&case, &resolvers, &NoRows) {
            Ok(Decision {
                target: Target::Row(row),
                ..
            }) => row,
            other => panic!("expected a row, got {other:?}"),
        }
    }

    fn title(row: Option<Row>) -> Option<String> {
        row.and_then(|r| r.text("title").map(str::to_owned))
    }

    fn defer() -> Resolution {
        Resolution::Defer("a person decides".into())
    }

    #[test]
    fn a_deferral_shows_the_row_the_table_names() {
        for (shows, expected) in [
            ("local", "mine"),
            ("incoming", "theirs"),
            ("merged", "both"),
        ] {
            let toml = schema(true, &format!("deferred_shows = \"{shows}\""));
            let row = shown(&toml, Mode::Authority, defer());
            assert_eq!(title(row).as_deref(), Some(expected), "{shows}");
        }
    }

    #[test]
    fn by_default_an_authority_shows_the_local_row_and_leaderless_the_merge() {
        let row = shown(&schema(true, ""), Mode::Authority, defer());
        assert_eq!(title(row).as_deref(), Some("mine"));
        let row = shown(&schema(false, ""), Mode::Leaderless, defer());
        assert_eq!(title(row).as_deref(), Some("both"));
    }

    #[test]
    fn decisions_other_than_a_deferral_pass_through() {
        let toml = schema(true, "deferred_shows = \"incoming\"");
        let row = shown(&toml, Mode::Authority, Resolution::Accept);
        assert_eq!(title(row).as_deref(), Some("both"));
        let row = shown(&toml, Mode::Authority, Resolution::KeepLocal);
        assert_eq!(title(row).as_deref(), Some("mine"));
    }

    #[test]
    fn an_authoritys_deferral_always_tells_its_writer() {
        use crate::engine::decide::{correction, Correction};
        let same = row(&[("id", "d"), ("title", "both")]);
        let notice = Some(Correction {
            mode: Mode::Authority,
            notice: true,
        });
        // Even when the row shown is the merge: the correction carries the
        // notice.
        let c = |mode| {
            correction(
                mode,
                Outcome::Deferred,
                Some(&same),
                Some(&same),
                Some(&same),
            )
        };
        assert_eq!(c(Mode::Authority), notice);
        assert_eq!(c(Mode::Leaderless), None);
    }
}
