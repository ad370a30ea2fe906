//! The schema's row-level rules (`schema::RowRules`, `schema::ColumnRules`):
//! what a local write may do ([`check_local_write`]) and what the authority
//! does with an incoming change that breaks one ([`apply_rules`]).
//!
//! Invariant: the same rule judges a local write and an incoming change.
//! A local write that breaks a rule is refused before anything changes
//! (the store turns the [`Violation`] into a `WriteError`). At the
//! authority, an incoming change that breaks a rule is refused whole (the
//! local row stays, the outcome is `Rejected`, its writer gets a notice),
//! except a write to an authority-owned column, which only has that column
//! put back. Rules act only on the authority (tables with rules always
//! have one); clients accept what the authority sends. Nothing here runs
//! SQL: uniqueness asks the [`ReadView`] the resolvers read through.

use crate::resolve::{Mode, Outcome, ReadView, Row, Writer};
use crate::schema::{Column, DeleteRule, Policy, Table};
use crate::value::{Key, Value};
use std::fmt;

use super::decide::{Case, DecideError};
use super::policy::PolicyNote;

/// Whether, on a replica in `mode`, every change to `table` (fast-forwards
/// too) must be judged by its row-level rules: on the authority of a table
/// that declares any.
pub fn checks_every_change(table: &Table, mode: Mode) -> bool {
    mode == Mode::Authority && table.has_row_rules()
}

/// A write a row-level rule refuses.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Violation {
    /// The row is frozen: its state column `column` holds the final state
    /// `state` (`frozen_when_final`).
    Frozen {
        /// The state column.
        column: String,
        /// Its final state.
        state: Value,
    },
    /// The table's rows may not be deleted (`delete = "never"`).
    Undeletable,
    /// Only writers with one of `roles` may delete (`delete_roles`).
    DeleteNeedsRole {
        /// The roles that may.
        roles: Vec<String>,
    },
    /// A state move that is not a declared edge (`transitions`).
    Transition {
        /// The state column.
        column: String,
        /// The state it holds.
        from: Value,
        /// The state written.
        to: Value,
        /// The states `from` may move to, as declared.
        allowed: Vec<String>,
    },
    /// Only the authority writes this column (`owner = "authority"`).
    AuthorityOwned {
        /// The column.
        column: String,
    },
}

impl Violation {
    /// The rule as the conflict log names it (`rule frozen_when_final
    /// (status)`).
    pub fn rule(&self) -> String {
        match self {
            Violation::Frozen { column, .. } => format!("rule frozen_when_final ({column})"),
            Violation::Undeletable => "rule delete".into(),
            Violation::DeleteNeedsRole { .. } => "rule delete_roles".into(),
            Violation::Transition { column, .. } => format!("rule transitions ({column})"),
            Violation::AuthorityOwned { column } => format!("rule owner ({column})"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Frozen { column, state } => {
                write!(f, "the row is frozen: {column:?} is {state}, a final state")
            }
            Violation::Undeletable => f.write_str("rows of this table may not be deleted"),
            Violation::DeleteNeedsRole { roles } => write!(
                f,
                "only a writer with role {} may delete rows of this table",
                roles
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Violation::Transition {
                column,
                from,
                to,
                allowed,
            } => {
                write!(
                    f,
                    "{column:?} may not move from {from} to {to}: not a declared transition"
                )?;
                if allowed.is_empty() {
                    write!(f, " ({from} has none)")
                } else {
                    let allowed: Vec<String> = allowed.iter().map(|s| format!("{s:?}")).collect();
                    write!(f, " ({from} may move to {})", allowed.join(", "))
                }
            }
            Violation::AuthorityOwned { column } => {
                write!(f, "column {column:?} is written by the authority only")
            }
        }
    }
}

/// The state column and its final state, if `row` is frozen.
fn frozen(table: &Table, row: &Row) -> Option<Violation> {
    let name = table.rules.frozen_when_final.as_deref()?;
    let (_, column) = table.column(name)?;
    let Policy::Forward(order) = &column.policy else {
        return None;
    };
    let state = row.get(&column.name)?;
    order.is_absorbing(state).then(|| Violation::Frozen {
        column: column.name.clone(),
        state: state.clone(),
    })
}

/// Whether `writer` may delete rows of `table` (`None`: roles are not
/// checked here).
fn delete_refusal(table: &Table, writer: Option<&Writer>) -> Option<Violation> {
    match &table.rules.delete {
        DeleteRule::Never => Some(Violation::Undeletable),
        DeleteRule::Roles(roles) => match writer {
            Some(w) if !roles.iter().any(|r| w.has_role(r)) => Some(Violation::DeleteNeedsRole {
                roles: roles.clone(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// The first state column whose move from `before` to `after` is no edge.
fn transition_refusal(table: &Table, before: &Row, after: &Row) -> Option<Violation> {
    table.columns.iter().find_map(|c| {
        let (from, to) = (before.get(&c.name)?, after.get(&c.name)?);
        (!c.rules.allows_move(from, to)).then(|| Violation::Transition {
            column: c.name.clone(),
            from: from.clone(),
            to: to.clone(),
            allowed: match (from, &c.rules.transitions) {
                (Value::Text(state), Some(edges)) => edges.get(state).cloned().unwrap_or_default(),
                _ => Vec::new(),
            },
        })
    })
}

/// What a column reads when nothing wrote it.
fn unset(column: &Column) -> Value {
    column.kind.unset(column.default.as_ref())
}

/// Checks a local write to `table`: the row as it was (`before`, `None`:
/// absent or deleted), as the write leaves it (`after`, `None`: deleted),
/// and the columns the write names (`written`). `authority`: this replica
/// is the authority, which may write owned columns and whose own deletes
/// are not held to `delete_roles` (it judges its clients' deletes with
/// their authenticated roles); elsewhere roles are `writer`'s.
pub fn check_local_write(
    table: &Table,
    authority: bool,
    writer: &Writer,
    before: Option<&Row>,
    after: Option<&Row>,
    written: &[&str],
) -> Result<(), Violation> {
    if !authority {
        for name in written {
            if let Some((_, c)) = table.column(name) {
                if c.rules.authority_owned {
                    return Err(Violation::AuthorityOwned {
                        column: c.name.clone(),
                    });
                }
            }
        }
    }
    let Some(before) = before else {
        return Ok(());
    };
    if after != Some(before) {
        if let Some(v) = frozen(table, before) {
            return Err(v);
        }
    }
    match after {
        None => match delete_refusal(table, (!authority).then_some(writer)) {
            Some(v) => Err(v),
            None => Ok(()),
        },
        Some(after) => match transition_refusal(table, before, after) {
            Some(v) => Err(v),
            None => Ok(()),
        },
    }
}

/// Joins two decisions' notes: the greater outcome, the first decider,
/// every reason.
pub fn join_notes(a: Option<PolicyNote>, b: Option<PolicyNote>) -> Option<PolicyNote> {
    match (a, b) {
        (Some(a), Some(mut b)) => Some(PolicyNote {
            outcome: a.outcome.max(b.outcome),
            policy: a.policy,
            reason: format!("{}; {}", a.reason, b.reason),
            columns: {
                let mut columns = a.columns;
                b.columns.retain(|c| !columns.contains(c));
                columns.append(&mut b.columns);
                columns
            },
        }),
        (a, b) => a.or(b),
    }
}

/// Runs the row-level rules of `case`'s table at the authority on
/// `target`, the row the column policies left (`None`: deleted). Returns
/// the row the rules leave and what they decided, if any acted: owned
/// columns put back to the local values (or what they read unset), or the
/// whole change refused (the local row stays) for a frozen row, a refused
/// delete, a move that is no edge, or a collision on a unique set (the
/// reason names the row it collides with, read through `view`).
pub fn apply_rules<E: fmt::Display>(
    case: &Case<'_>,
    target: Option<Row>,
    view: &dyn ReadView<Error = E>,
) -> Result<(Option<Row>, Option<PolicyNote>), DecideError> {
    let table = case.shape.table;
    if !checks_every_change(table, case.mode) {
        return Ok((target, None));
    }
    let local = case.local_row.as_ref();
    let mut target = target;
    let mut note: Option<PolicyNote> = None;
    // The columns a refusal keeps: a resolver's row may not set them
    // (outcome precedence); a refusal of the whole change keeps them all.
    let every: Vec<String> = case
        .shape
        .value_cols
        .iter()
        .map(|&i| table.columns[i].name.clone())
        .collect();
    let add = |note: &mut Option<PolicyNote>, policy: String, reason: String, columns| {
        *note = join_notes(
            note.take(),
            Some(PolicyNote {
                outcome: Outcome::Rejected,
                policy,
                reason,
                columns,
            }),
        );
    };

    // An old client's write to an owned column: put back, the rest stands.
    if let Some(row) = target.as_mut() {
        for c in table.columns.iter().filter(|c| c.rules.authority_owned) {
            let kept = local
                .and_then(|l| l.get(&c.name))
                .cloned()
                .unwrap_or_else(|| unset(c));
            if row.get(&c.name) != Some(&kept) {
                row.set_value(&c.name, kept);
                let v = Violation::AuthorityOwned {
                    column: c.name.clone(),
                };
                let reason = format!("{v}; your value was put back");
                add(&mut note, v.rule(), reason, vec![c.name.clone()]);
            }
        }
    }

    // Refusals of the whole change.
    let refusal = match (local, target.as_ref()) {
        (Some(before), None) => {
            frozen(table, before).or_else(|| delete_refusal(table, Some(case.writer)))
        }
        (Some(before), Some(after)) if after != before => {
            frozen(table, before).or_else(|| transition_refusal(table, before, after))
        }
        _ => None,
    };
    if let Some(v) = refusal {
        add(&mut note, v.rule(), v.to_string(), every);
        return Ok((local.cloned(), note));
    }

    if let Some(after) = target.as_ref() {
        if let Some((columns, reason)) = collision(case, after, view)? {
            add(
                &mut note,
                format!("rule unique ({})", columns.join(", ")),
                reason,
                every,
            );
            return Ok((local.cloned(), note));
        }
    }
    Ok((target, note))
}

/// The first unique set `after` collides on with another live row: the
/// set, and a reason naming the values and that row's key. Sets holding
/// NULL, or unchanged from the local row, are not checked.
fn collision<E: fmt::Display>(
    case: &Case<'_>,
    after: &Row,
    view: &dyn ReadView<Error = E>,
) -> Result<Option<(Vec<String>, String)>, DecideError> {
    let table = case.shape.table;
    for columns in &table.rules.unique {
        let values: Vec<Value> = columns
            .iter()
            .map(|c| after.get(c).cloned().unwrap_or(Value::Null))
            .collect();
        if values.contains(&Value::Null) {
            continue;
        }
        let unchanged = case.local_row.as_ref().is_some_and(|l| {
            columns
                .iter()
                .zip(&values)
                .all(|(c, v)| l.get(c) == Some(v))
        });
        if unchanged {
            continue;
        }
        let (sql, params) = collision_query(table, columns, &values, case.key);
        let rows =
            view.query_rows(&table.name, &sql, &params)
                .map_err(|e| DecideError::RuleRead {
                    rule: format!("rule unique ({})", columns.join(", ")),
                    message: e.to_string(),
                })?;
        if let Some(other) = rows.into_iter().next() {
            let shown = Key(values).to_string();
            let reason = format!(
                "({}) = {shown} is already taken by row {}",
                columns.join(", "),
                Key(other)
            );
            return Ok(Some((columns.clone(), reason)));
        }
    }
    Ok(None)
}

/// A read-only query for the key of another live row of `table` holding
/// `values` in `columns`, and its parameters.
fn collision_query(
    table: &Table,
    columns: &[String],
    values: &[Value],
    key: &[Value],
) -> (String, Vec<Value>) {
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let key_names: Vec<&str> = table
        .primary_key
        .iter()
        .map(|&i| table.columns[i].name.as_str())
        .collect();
    let matches = columns
        .iter()
        .enumerate()
        .map(|(n, c)| format!("{} = ?{}", quote(c), n + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let same_key = key_names
        .iter()
        .enumerate()
        .map(|(n, k)| format!("{} = ?{}", quote(k), columns.len() + n + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!(
        "SELECT {} FROM {} WHERE {matches} AND NOT ({same_key}) ORDER BY 1 LIMIT 1",
        key_names
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", "),
        quote(&table.name),
    );
    let params = values.iter().chain(key).cloned().collect();
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{lww, parts, row, state, Parts};
    use crate::merge::RowState;
    use crate::schema::{Schema, SchemaError};

    /// An order table with every rule: `status` frozen when final with
    /// declared transitions, admin-only deletes, an owned `stamped_at`,
    /// and one order per (customer, day).
    const RULED: &str = r#"
name = "t"
version = 1
[[table]]
name = "orders"
primary_key = ["id"]
authority = true
frozen_when_final = "status"
delete_roles = ["admin"]
[[table.unique]]
columns = ["customer", "day"]
[[table.column]]
name = "id"
type = "text"
[[table.column]]
name = "status"
type = "text"
default = "pending"
order = ["pending < processing < shipped", "pending < cancelled"]
absorbing = ["shipped", "cancelled"]
transitions = { pending = ["processing", "cancelled"], processing = ["shipped"] }
[[table.column]]
name = "customer"
type = "text"
[[table.column]]
name = "day"
type = "text"
[[table.column]]
name = "stamped_at"
type = "integer"
owner = "authority"
"#;

    /// A view answering every query with `rows`, recording nothing.
    struct Answer(Vec<Vec<Value>>);

    impl ReadView for Answer {
        type Error = String;

        fn get_row(&self, _: &str, _: &Key) -> Result<Option<Row>, String> {
            Ok(None)
        }

        fn query_rows(&self, _: &str, sql: &str, _: &[Value]) -> Result<Vec<Vec<Value>>, String> {
            if sql.starts_with("SELECT \"id\" FROM \"orders\" WHERE \"customer\" = ?1") {
                Ok(self.0.clone())
            } else {
                Err(format!("unexpected query {sql}"))
            }
        }
    }

    fn order(status: &str) -> Row {
        row(&[
            ("id", "o1"),
            ("status", status),
            ("customer", "ann"),
            ("day", "mon"),
        ])
        .with("stamped_at", Value::Null)
    }

    struct Fixture {
        parts: Parts,
        key: Vec<Value>,
        local: RowState,
        incoming: RowState,
        writer: Writer,
    }

    fn fixture(writer: Writer) -> Fixture {
        Fixture {
            parts: parts(RULED),
            key: vec!["o1".into()],
            local: state(
                &[(1, 1)],
                3,
                1,
                vec![lww("pending", 3, 1), None, None, None],
            ),
            incoming: state(&[(1, 1), (2, 1)], 4, 2, vec![None, None, None, None]),
            writer,
        }
    }

    fn case<'a>(f: &'a Fixture, mode: Mode, local: Option<Row>, incoming: Option<Row>) -> Case<'a> {
        Case {
            shape: f.parts.shape(),
            key: &f.key,
            mode,
            concurrent: false,
            local: Some(&f.local),
            incoming: &f.incoming,
            writer: &f.writer,
            mutation: None,
            local_row: local,
            incoming_row: incoming.clone(),
            merged_row: incoming,
        }
    }

    fn judged(
        f: &Fixture,
        local: Option<Row>,
        incoming: Option<Row>,
        taken: Vec<Vec<Value>>,
    ) -> (Option<Row>, Option<PolicyNote>) {
        let c = case(f, Mode::Authority, local, incoming);
        match apply_rules(&c, c.merged_row.clone(), &Answer(taken)) {
            Ok(result) => result,
            Err(e) => panic!("rules failed: {e}"),
        }
    }

    fn refused(note: Option<PolicyNote>, rule: &str, needle: &str) {
        let note = note.unwrap_or_else(|| panic!("nothing refused; expected {rule}"));
        assert_eq!(note.outcome, Outcome::Rejected);
        assert_eq!(note.policy, rule);
        assert!(note.reason.contains(needle), "{:?}", note.reason);
    }

    #[test]
    fn a_frozen_row_refuses_every_change_and_its_delete() {
        let f = fixture(Writer::user("ann").with_role("admin"));
        let shipped = order("shipped");
        let edited = shipped.clone().with("day", "tue");
        let (target, note) = judged(&f, Some(shipped.clone()), Some(edited), vec![]);
        assert_eq!(target, Some(shipped.clone()));
        refused(note, "rule frozen_when_final (status)", "\"shipped\"");
        // Even an admin's delete.
        let (target, note) = judged(&f, Some(shipped.clone()), None, vec![]);
        assert_eq!(target, Some(shipped));
        refused(note, "rule frozen_when_final (status)", "final state");
    }

    #[test]
    fn the_move_into_a_final_state_itself_is_allowed() {
        let f = fixture(Writer::user("ann"));
        let (target, note) = judged(
            &f,
            Some(order("processing")),
            Some(order("shipped")),
            vec![],
        );
        assert_eq!((target, note), (Some(order("shipped")), None));
    }

    #[test]
    fn a_delete_needs_a_listed_role() {
        let plain = fixture(Writer::user("bob"));
        let (target, note) = judged(&plain, Some(order("pending")), None, vec![]);
        assert_eq!(target, Some(order("pending")));
        refused(note, "rule delete_roles", "\"admin\"");
        let admin = fixture(Writer::user("ann").with_role("admin"));
        let (target, note) = judged(&admin, Some(order("pending")), None, vec![]);
        assert_eq!((target, note), (None, None));
    }

    #[test]
    fn a_move_that_is_no_edge_is_refused() {
        let f = fixture(Writer::user("ann"));
        let (target, note) = judged(&f, Some(order("pending")), Some(order("shipped")), vec![]);
        assert_eq!(target, Some(order("pending")));
        refused(
            note,
            "rule transitions (status)",
            "from \"pending\" to \"shipped\"",
        );
        let (_, note) = judged(
            &f,
            Some(order("pending")),
            Some(order("processing")),
            vec![],
        );
        assert_eq!(note, None);
    }

    #[test]
    fn an_owned_column_is_put_back_and_the_rest_stands() {
        let f = fixture(Writer::user("ann"));
        let incoming = order("processing").with("stamped_at", 99);
        let (target, note) = judged(&f, Some(order("pending")), Some(incoming), vec![]);
        assert_eq!(target, Some(order("processing")));
        refused(note, "rule owner (stamped_at)", "put back");
        // A new row's owned column reads what it reads unset.
        let (target, note) = judged(
            &f,
            None,
            Some(order("pending").with("stamped_at", 5)),
            vec![],
        );
        assert_eq!(target, Some(order("pending")));
        refused(note, "rule owner (stamped_at)", "authority only");
    }

    #[test]
    fn a_collision_on_a_unique_set_refuses_the_later_row_naming_the_other() {
        let f = fixture(Writer::user("ann"));
        let taken = vec![vec![Value::from("o0")]];
        let (target, note) = judged(&f, None, Some(order("pending")), taken.clone());
        assert_eq!(target, None);
        refused(
            note,
            "rule unique (customer, day)",
            "(\"ann\", \"mon\") is already taken by row (\"o0\")",
        );
        // Free: it stands. Unchanged from the local row: not asked.
        let (target, note) = judged(&f, None, Some(order("pending")), vec![]);
        assert_eq!((target, note), (Some(order("pending")), None));
        let edited = order("processing");
        let (target, note) = judged(&f, Some(order("pending")), Some(edited.clone()), taken);
        assert_eq!((target, note), (Some(edited), None));
    }

    #[test]
    fn a_failed_read_is_an_error_naming_the_rule() {
        let f = fixture(Writer::user("ann"));
        struct Broken;
        impl ReadView for Broken {
            type Error = String;
            fn get_row(&self, _: &str, _: &Key) -> Result<Option<Row>, String> {
                Ok(None)
            }
            fn query_rows(&self, _: &str, _: &str, _: &[Value]) -> Result<Vec<Vec<Value>>, String> {
                Err("disk on fire".into())
            }
        }
        let c = case(&f, Mode::Authority, None, Some(order("pending")));
        assert_eq!(
            apply_rules(&c, c.merged_row.clone(), &Broken),
            Err(DecideError::RuleRead {
                rule: "rule unique (customer, day)".into(),
                message: "disk on fire".into(),
            })
        );
    }

    #[test]
    fn only_the_authority_applies_rules() {
        let f = fixture(Writer::user("bob"));
        let c = case(&f, Mode::Client, Some(order("shipped")), None);
        assert_eq!(apply_rules(&c, None, &Answer(vec![])), Ok((None, None)));
        let table = &f.parts.table;
        assert!(checks_every_change(table, Mode::Authority));
        assert!(!checks_every_change(table, Mode::Client));
    }

    #[test]
    fn local_writes_meet_the_same_rules() {
        let parts = parts(RULED);
        let t = &parts.table;
        let bob = Writer::user("bob");
        let check = |authority, before: Option<Row>, after: Option<Row>, written: &[&str]| {
            check_local_write(t, authority, &bob, before.as_ref(), after.as_ref(), written)
        };
        assert_eq!(
            check(false, None, Some(order("pending")), &["stamped_at"]),
            Err(Violation::AuthorityOwned {
                column: "stamped_at".into()
            })
        );
        assert_eq!(
            check(true, None, Some(order("pending")), &["stamped_at"]),
            Ok(())
        );
        assert!(matches!(
            check(
                false,
                Some(order("shipped")),
                Some(order("shipped").with("day", "x")),
                &["day"]
            ),
            Err(Violation::Frozen { .. })
        ));
        // Writing what is already there changes nothing, frozen or not.
        assert_eq!(
            check(
                false,
                Some(order("shipped")),
                Some(order("shipped")),
                &["day"]
            ),
            Ok(())
        );
        assert!(matches!(
            check(
                false,
                Some(order("pending")),
                Some(order("shipped")),
                &["status"]
            ),
            Err(Violation::Transition { .. })
        ));
        assert!(matches!(
            check(false, Some(order("pending")), None, &[]),
            Err(Violation::DeleteNeedsRole { .. })
        ));
        // The authority's own deletes are not held to roles.
        assert_eq!(check(true, Some(order("pending")), None, &[]), Ok(()));
    }

    fn bad(text: &str, needles: &[&str]) {
        match Schema::from_toml_str(text, "r.toml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e @ SchemaError::BadRule { .. }) => {
                let message = e.to_string();
                for needle in needles.iter().chain(&["r.toml"]) {
                    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
                }
            }
            Err(e) => panic!("wrong error: {e}"),
        }
    }

    #[test]
    fn the_ruled_schema_parses_with_every_rule() -> Result<(), SchemaError> {
        let schema = Schema::from_toml_str(RULED, "r.toml")?;
        let t = &schema.tables[0];
        assert_eq!(t.rules.frozen_when_final.as_deref(), Some("status"));
        assert_eq!(t.rules.delete, DeleteRule::Roles(vec!["admin".into()]));
        assert_eq!(
            t.rules.unique,
            vec![vec!["customer".to_owned(), "day".to_owned()]]
        );
        assert!(t.columns[4].rules.authority_owned);
        assert!(t.columns[1].rules.transitions.is_some());
        assert!(t.has_row_rules());
        Ok(())
    }

    #[test]
    fn each_rule_is_validated_naming_what_and_where() {
        let with = |from: &str, to: &str| RULED.replacen(from, to, 1);
        bad(
            &with(
                "frozen_when_final = \"status\"",
                "frozen_when_final = \"nope\"",
            ),
            &["table \"orders\"", "\"nope\"", "does not declare"],
        );
        bad(
            &with(
                "frozen_when_final = \"status\"",
                "frozen_when_final = \"day\"",
            ),
            &["\"day\"", "absorbing"],
        );
        bad(
            &with("delete_roles = [\"admin\"]", "delete = \"sometimes\""),
            &["\"sometimes\"", "never"],
        );
        bad(
            &with("delete_roles = [\"admin\"]", "delete_roles = []"),
            &["delete_roles", "at least one"],
        );
        bad(
            &with(
                "delete_roles = [\"admin\"]",
                "delete = \"never\"\ndelete_roles = [\"a\"]",
            ),
            &["contradict"],
        );
        bad(
            &with(
                "columns = [\"customer\", \"day\"]",
                "columns = [\"customer\", \"nope\"]",
            ),
            &["unique", "\"nope\""],
        );
        bad(
            &with(
                "columns = [\"customer\", \"day\"]",
                "columns = [\"id\", \"day\"]",
            ),
            &["whole primary key"],
        );
        bad(
            &with(
                "columns = [\"customer\", \"day\"]",
                "columns = [\"day\", \"DAY\"]",
            ),
            &["twice"],
        );
        bad(
            &with("processing = [\"shipped\"]", "processing = [\"lost\"]"),
            &["column \"status\"", "\"lost\"", "not a declared state"],
        );
        bad(
            &with("processing = [\"shipped\"]", "processing = [\"pending\"]"),
            &["\"processing\" -> \"pending\"", "against the order"],
        );
        bad(
            &with("processing = [\"shipped\"]", "shipped = [\"pending\"]"),
            &["\"shipped\"", "against the order"],
        );
        bad(
            &with("owner = \"authority\"", "owner = \"me\""),
            &["column \"stamped_at\"", "\"me\""],
        );
        bad(
            &with(
                "type = \"integer\"\nowner = \"authority\"",
                "type = \"integer\"\nnullable = false\nowner = \"authority\"",
            ),
            &["nullable or have a default"],
        );
        bad(
            &RULED.replacen(
                "order = [\"pending < processing < shipped\", \"pending < cancelled\"]\n\
                 absorbing = [\"shipped\", \"cancelled\"]\n",
                "",
                1,
            ),
            &["column \"status\"", "transitions", "state column"],
        );
    }

    #[test]
    fn owned_key_columns_are_refused() {
        let text = RULED.replacen(
            "name = \"id\"\ntype = \"text\"",
            "name = \"id\"\ntype = \"text\"\nowner = \"authority\"",
            1,
        );
        match Schema::from_toml_str(&text, "r.toml") {
            Err(e @ SchemaError::BadKeyColumn { .. }) => {
                assert!(e.to_string().contains("authority"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_rule_needs_an_authority_and_says_why() {
        let plain = RULED.replacen("authority = true\n", "", 1);
        let strip = |text: &str, line: &str| text.replacen(line, "", 1);
        bad(
            &plain,
            &[
                "frozen_when_final",
                "needs an authority",
                "authority = true",
            ],
        );
        let t = strip(&plain, "frozen_when_final = \"status\"\n");
        bad(&t, &["delete rules", "needs an authority"]);
        let t = strip(&t, "delete_roles = [\"admin\"]\n");
        bad(&t, &["unique", "offline"]);
        let t = strip(&t, "[[table.unique]]\ncolumns = [\"customer\", \"day\"]\n");
        bad(&t, &["transitions", "rank"]);
        let t = strip(
            &t,
            "transitions = { pending = [\"processing\", \"cancelled\"], processing = [\"shipped\"] }\n",
        );
        bad(&t, &["owner", "nobody owns it"]);
        let t = strip(&t, "owner = \"authority\"\n");
        assert!(Schema::from_toml_str(&t, "r.toml").is_ok());
    }

    #[test]
    fn rules_change_the_fingerprint_only_when_set() -> Result<(), SchemaError> {
        let ruled = Schema::from_toml_str(RULED, "r.toml")?;
        let mut bare = ruled.clone();
        bare.tables[0].rules = Default::default();
        for c in &mut bare.tables[0].columns {
            c.rules = Default::default();
        }
        assert_ne!(ruled.fingerprint(), bare.fingerprint());
        // And the upgrade that adds them is allowed and reported.
        let upgrade = bare.check_upgrade(&ruled, "db")?;
        assert_eq!(upgrade.changed_rules, ["orders"]);
        // Stored without rules, a table's JSON is what it always was.
        let json = serde_json::to_string(&bare.tables[0]).map_err(|e| SchemaError::Syntax {
            file: "json".into(),
            message: e.to_string(),
        })?;
        assert!(!json.contains("rules"), "{json}");
        Ok(())
    }
}
