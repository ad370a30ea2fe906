//! Row-level rules a schema declares: frozen rows, delete rules, state
//! transitions along declared edges, authority-owned columns and
//! uniqueness over non-key columns; and their validation.
//!
//! Invariant: a [`Table`] built by the parser carries only rules that name
//! columns it declares, of the right shape (a frozen row's state column is
//! a `forward` column with absorbing states, transitions join declared
//! states forward, an owned column is an `lww` value column that clients
//! can leave out, a unique set is not trivially unique), and only on a
//! table with an authority: each rule needs one replica to judge changes
//! in one order, and every refusal says why. Rules name columns, not
//! positions, so they survive an upgrade that appends columns.

use super::{Column, Kind, Policy, SchemaError, Table};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who may delete a table's rows (schema `delete` / `delete_roles`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeleteRule {
    /// Anyone may (the default).
    #[default]
    Anyone,
    /// Nobody: `delete = "never"`.
    Never,
    /// Only writers with one of these roles: `delete_roles = ["admin"]`.
    Roles(Vec<String>),
}

impl DeleteRule {
    fn is_anyone(&self) -> bool {
        *self == DeleteRule::Anyone
    }
}

/// A table's own row-level rules (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRules {
    /// `frozen_when_final = "status"`: once this state column holds an
    /// absorbing state, no column of the row changes and the row is not
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_when_final: Option<String>,
    /// Who may delete rows.
    #[serde(default, skip_serializing_if = "DeleteRule::is_anyone")]
    pub delete: DeleteRule,
    /// `[[table.unique]] columns = [...]`: no two live rows hold the same
    /// values in these columns (a set containing NULL collides with none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique: Vec<Vec<String>>,
}

impl RowRules {
    /// Whether no rule is declared.
    pub fn is_empty(&self) -> bool {
        *self == RowRules::default()
    }
}

/// A column's row-level rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRules {
    /// `transitions = { pending = ["processing"], ... }` on a state
    /// column: the only moves allowed, from each state to the listed ones
    /// (a state not listed as a key has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transitions: Option<BTreeMap<String, Vec<String>>>,
    /// `owner = "authority"`: only the authority writes this column.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authority_owned: bool,
}

impl ColumnRules {
    /// Whether no rule is declared.
    pub fn is_empty(&self) -> bool {
        *self == ColumnRules::default()
    }

    /// Whether a write may move the column from `from` to `to`: always
    /// without declared transitions, when nothing moves, and from NULL (a
    /// new row picks its first state); else only along a declared edge.
    pub fn allows_move(&self, from: &Value, to: &Value) -> bool {
        let Some(edges) = &self.transitions else {
            return true;
        };
        if from == to || *from == Value::Null {
            return true;
        }
        match (from, to) {
            (Value::Text(a), Value::Text(b)) => edges.get(a).is_some_and(|next| next.contains(b)),
            _ => false,
        }
    }
}

/// A table's rules as the file wrote them.
pub(super) struct RawRowRules {
    pub frozen_when_final: Option<String>,
    pub delete: Option<String>,
    pub delete_roles: Option<Vec<String>>,
    pub unique: Vec<Vec<String>>,
}

/// A column's rules as the file wrote them.
pub(super) struct RawColumnRules {
    pub transitions: Option<BTreeMap<String, Vec<String>>>,
    pub owner: Option<String>,
}

/// Checks a column's rules against the column (its kind, policy, states).
pub(super) fn column_rules(
    file: &str,
    table: &str,
    column: &Column,
    raw: RawColumnRules,
) -> Result<ColumnRules, SchemaError> {
    let bad = |problem: String| SchemaError::BadRule {
        file: file.to_owned(),
        place: format!("table {table:?}, column {:?}", column.name),
        problem,
    };
    let authority_owned = match raw.owner.as_deref() {
        None => false,
        Some(owner) if owner.eq_ignore_ascii_case("authority") => {
            if column.kind != Kind::Lww {
                return Err(bad(format!(
                    "an authority-owned column must be lww, not {}",
                    column.kind
                )));
            }
            if !column.nullable && column.default.is_none() {
                return Err(bad(
                    "an authority-owned column must be nullable or have a default: \
                     clients insert rows without it"
                        .into(),
                ));
            }
            true
        }
        Some(other) => {
            return Err(bad(format!(
                "unknown owner {other:?} (the only owner is \"authority\")"
            )))
        }
    };
    let transitions = match raw.transitions {
        None => None,
        Some(edges) => {
            let Policy::Forward(order) = &column.policy else {
                return Err(bad(
                    "`transitions` belong to a state column (policy \"forward\" with `order`)"
                        .into(),
                ));
            };
            for (from, targets) in &edges {
                let state = |s: &str| Value::Text(s.to_owned());
                if !order.is_state(&state(from)) {
                    return Err(bad(format!(
                        "transition from {from:?}, which is not a declared state"
                    )));
                }
                for to in targets {
                    if !order.is_state(&state(to)) {
                        return Err(bad(format!(
                            "transition {from:?} -> {to:?}: {to:?} is not a declared state"
                        )));
                    }
                    if let Err(why) = order.check_move(&state(from), &state(to)) {
                        return Err(bad(format!(
                            "transition {from:?} -> {to:?} goes against the order ({why})"
                        )));
                    }
                }
            }
            Some(edges)
        }
    };
    Ok(ColumnRules {
        transitions,
        authority_owned,
    })
}

/// Checks a table's rules against its columns, and that it has an
/// authority if it has any rule.
pub(super) fn table_rules(
    file: &str,
    table: &Table,
    raw: RawRowRules,
) -> Result<RowRules, SchemaError> {
    let bad = |problem: String| SchemaError::BadRule {
        file: file.to_owned(),
        place: format!("table {:?}", table.name),
        problem,
    };
    let frozen_when_final = match raw.frozen_when_final {
        None => None,
        Some(name) => {
            let Some((_, column)) = table.column(&name) else {
                return Err(bad(format!(
                    "frozen_when_final names column {name:?}, which the table does not declare"
                )));
            };
            match &column.policy {
                Policy::Forward(order) if !order.absorbing().is_empty() => {}
                _ => {
                    return Err(bad(format!(
                        "frozen_when_final names column {name:?}, which is not a state column \
                         with absorbing states (policy \"forward\" with `absorbing`)"
                    )))
                }
            }
            Some(column.name.clone())
        }
    };
    let delete = match (raw.delete.as_deref(), raw.delete_roles) {
        (None | Some("anyone"), None) => DeleteRule::Anyone,
        (Some("never"), None) => DeleteRule::Never,
        (Some("never"), Some(_)) => {
            return Err(bad(
                "delete = \"never\" and delete_roles contradict each other (keep one)".into(),
            ))
        }
        (None | Some("anyone"), Some(roles)) => {
            if roles.is_empty() || roles.iter().any(|r| r.trim().is_empty()) {
                return Err(bad(
                    "delete_roles needs at least one non-empty role (or write delete = \"never\")"
                        .into(),
                ));
            }
            DeleteRule::Roles(roles)
        }
        (Some(other), _) => {
            return Err(bad(format!(
                "unknown delete rule {other:?} (expected \"never\" or \"anyone\", \
                 or delete_roles = [...])"
            )))
        }
    };
    let mut unique = Vec::with_capacity(raw.unique.len());
    for columns in raw.unique {
        if columns.is_empty() {
            return Err(bad("a [[table.unique]] needs at least one column".into()));
        }
        let mut names: Vec<String> = Vec::with_capacity(columns.len());
        let mut indexes = Vec::with_capacity(columns.len());
        for name in &columns {
            let Some((i, column)) = table.column(name) else {
                return Err(bad(format!(
                    "unique names column {name:?}, which the table does not declare"
                )));
            };
            if indexes.contains(&i) {
                return Err(bad(format!("unique lists column {name:?} twice")));
            }
            if column.kind != Kind::Lww {
                return Err(bad(format!(
                    "unique column {name:?} is {}; only lww columns can be unique",
                    column.kind
                )));
            }
            indexes.push(i);
            names.push(column.name.clone());
        }
        if table.primary_key.iter().all(|k| indexes.contains(k)) {
            return Err(bad(format!(
                "unique ({}) includes the whole primary key, so every row already is",
                names.join(", ")
            )));
        }
        unique.push(names);
    }
    let rules = RowRules {
        frozen_when_final,
        delete,
        unique,
    };
    if !table.authority {
        let why = if rules.frozen_when_final.is_some() {
            Some((
                "frozen_when_final",
                "replicas reach the final state at different times and would keep different edits",
            ))
        } else if rules.delete != DeleteRule::Anyone {
            Some((
                "delete rules",
                "a merged delete cannot be refused without one replica to refuse it",
            ))
        } else if !rules.unique.is_empty() {
            Some((
                "unique",
                "two replicas can each accept a colliding row offline, and only one replica \
                 that sees every row first can refuse the later one",
            ))
        } else {
            table.columns.iter().find_map(|c| {
                if c.rules.transitions.is_some() {
                    Some((
                        "transitions",
                        "concurrent moves merge by rank, which can land on a move that is no edge",
                    ))
                } else if c.rules.authority_owned {
                    Some((
                        "owner = \"authority\"",
                        "without an authority nobody owns it",
                    ))
                } else {
                    None
                }
            })
        };
        if let Some((rule, why)) = why {
            return Err(bad(format!(
                "{rule}: needs an authority to converge ({why}); add `authority = true` to the table"
            )));
        }
    }
    Ok(rules)
}
