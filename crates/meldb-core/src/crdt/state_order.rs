//! Forward-only state columns: a declared partial order of states.
//!
//! A schema may declare that a text column's values move only forward, as
//! chains such as `pending < processing < shipped`, and that some states are
//! absorbing (nothing leaves them). Merging must converge without an
//! authority, so the partial order is turned into a *rank* (the length of
//! the longest chain of declared states below a value; values that no chain
//! mentions rank 0), and a state column merges by `(rank, timestamp, site)`:
//! a later state always wins over an earlier one, and two states of equal
//! rank fall back to last-writer-wins. Ranking is a total preorder, so the
//! merge is a join.

use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A declared order of states. Build it with [`StateOrder::new`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateOrder {
    /// Each chain lists states from earliest to latest.
    chains: Vec<Vec<String>>,
    /// States nothing may leave.
    absorbing: Vec<String>,
    /// Each mentioned state's rank.
    ranks: BTreeMap<String, u32>,
}

impl StateOrder {
    /// Builds the order from chains (earliest first) and absorbing states.
    /// Fails with a description if the chains contradict each other (a
    /// cycle such as `a < b` and `b < a`) or a chain is shorter than two.
    pub fn new(chains: Vec<Vec<String>>, absorbing: Vec<String>) -> Result<StateOrder, String> {
        for chain in &chains {
            if chain.len() < 2 {
                return Err(format!(
                    "an order needs at least two states, got {:?}",
                    chain.join(" < ")
                ));
            }
        }
        let mut order = StateOrder {
            chains,
            absorbing,
            ranks: BTreeMap::new(),
        };
        let states: Vec<String> = order
            .chains
            .iter()
            .flatten()
            .chain(&order.absorbing)
            .cloned()
            .collect();
        for state in &states {
            if order.before(state, state) {
                return Err(format!("the order has a cycle through {state:?}"));
            }
        }
        for state in &states {
            let rank = order.depth(state, states.len());
            order.ranks.insert(state.clone(), rank);
        }
        Ok(order)
    }

    /// The chains as declared.
    pub fn chains(&self) -> &[Vec<String>] {
        &self.chains
    }

    /// The absorbing states as declared.
    pub fn absorbing(&self) -> &[String] {
        &self.absorbing
    }

    /// Whether `value` is a declared state (in a chain or absorbing).
    pub fn is_state(&self, value: &Value) -> bool {
        match value {
            Value::Text(s) => self.ranks.contains_key(s),
            _ => false,
        }
    }

    /// The rank a value merges by: 0 for anything no chain ranks.
    pub fn rank(&self, value: &Value) -> u32 {
        match value {
            Value::Text(s) => self.ranks.get(s).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether nothing may leave `value`.
    pub fn is_absorbing(&self, value: &Value) -> bool {
        matches!(value, Value::Text(s) if self.absorbing.iter().any(|a| a == s))
    }

    /// Whether a write may move the column from `from` to `to`; if not, why.
    pub fn check_move(&self, from: &Value, to: &Value) -> Result<(), String> {
        if from == to {
            return Ok(());
        }
        if self.is_absorbing(from) {
            return Err(format!("{} is a final state", describe(from)));
        }
        if let (Value::Text(a), Value::Text(b)) = (from, to) {
            if self.before(b, a) {
                return Err(format!(
                    "{} comes before {}; states only move forward",
                    describe(to),
                    describe(from)
                ));
            }
        }
        Ok(())
    }

    /// Whether `a < b` follows from the chains (transitively).
    fn before(&self, a: &str, b: &str) -> bool {
        let mut frontier = vec![a.to_owned()];
        let mut seen: Vec<String> = Vec::new();
        while let Some(s) = frontier.pop() {
            for next in self.successors(&s) {
                if next == b {
                    return true;
                }
                if !seen.contains(&next) {
                    seen.push(next.clone());
                    frontier.push(next);
                }
            }
        }
        false
    }

    fn successors(&self, state: &str) -> Vec<String> {
        self.chains
            .iter()
            .flat_map(|c| c.windows(2))
            .filter(|w| w[0] == state)
            .map(|w| w[1].clone())
            .collect()
    }

    /// The longest chain below `state` (bounded by `limit`, the number of
    /// states, which no acyclic chain exceeds).
    fn depth(&self, state: &str, limit: usize) -> u32 {
        let preds: Vec<&str> = self
            .chains
            .iter()
            .flat_map(|c| c.windows(2))
            .filter(|w| w[1] == state)
            .map(|w| w[0].as_str())
            .collect();
        if limit == 0 {
            return 0;
        }
        preds
            .into_iter()
            .map(|p| self.depth(p, limit - 1) + 1)
            .max()
            .unwrap_or(0)
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Text(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(chains: &[&[&str]], absorbing: &[&str]) -> StateOrder {
        StateOrder::new(
            chains
                .iter()
                .map(|c| c.iter().map(|s| s.to_string()).collect())
                .collect(),
            absorbing.iter().map(|s| s.to_string()).collect(),
        )
        .expect("valid order")
    }

    #[test]
    fn ranks_follow_the_longest_chain() {
        let o = order(
            &[
                &["pending", "processing", "shipped"],
                &["pending", "cancelled"],
            ],
            &["shipped", "cancelled"],
        );
        assert_eq!(o.rank(&"pending".into()), 0);
        assert_eq!(o.rank(&"processing".into()), 1);
        assert_eq!(o.rank(&"shipped".into()), 2);
        assert_eq!(o.rank(&"cancelled".into()), 1);
        assert_eq!(o.rank(&"unknown".into()), 0);
    }

    #[test]
    fn moves_go_forward_and_never_leave_absorbing_states() {
        let o = order(&[&["active", "confirmed"]], &["confirmed", "released"]);
        assert!(o.check_move(&"active".into(), &"confirmed".into()).is_ok());
        assert!(o.check_move(&"active".into(), &"released".into()).is_ok());
        let back = o.check_move(&"confirmed".into(), &"active".into());
        assert!(matches!(back, Err(e) if e.contains("final state")));
        assert!(o.check_move(&"released".into(), &"active".into()).is_err());
        let o = order(&[&["a", "b", "c"]], &[]);
        let err = o.check_move(&"c".into(), &"a".into());
        assert!(
            matches!(&err, Err(e) if e.contains("only move forward")),
            "{err:?}"
        );
    }

    #[test]
    fn cycles_and_short_chains_are_refused() {
        let cyc = StateOrder::new(
            vec![vec!["a".into(), "b".into()], vec!["b".into(), "a".into()]],
            vec![],
        );
        assert!(matches!(cyc, Err(e) if e.contains("cycle")));
        assert!(StateOrder::new(vec![vec!["a".into()]], vec![]).is_err());
    }
}
