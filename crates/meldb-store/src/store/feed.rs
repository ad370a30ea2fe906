//! The changes feed: which rows each commit changed, and who changed them.
//!
//! Every row write of a transaction (a local write or mutation, a row an
//! apply wrote or merged, a correction, a speculative effect taken off or
//! replayed on a pull) is recorded here with the origin the store is
//! working under ([`Origin`]). Invariant: the record is published only
//! after the SQLite `COMMIT` succeeded; a rolled-back transaction or
//! savepoint truncates it to where it began (`Snapshot::changes`), so no
//! receiver hears of a change that was not kept. A row counts as changed
//! when meldb wrote it, even if its visible values ended up the same (a
//! live query compares its results; see `watch`).

use super::layout::TableLayout;
use crate::value::{Key, Value};
use std::sync::mpsc::{self, Receiver};

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// A write, mutation or local bookkeeping through this handle.
    Local,
    /// Another replica's change: an apply, a sync batch, or (at the
    /// authority) a client's pushed mutation.
    Remote,
    /// A pull that took this replica's speculative effects off and replayed
    /// its pending mutations on top of the authority's state.
    Rebase,
}

/// One table's rows that one commit changed, with their origin. A commit
/// that changed several tables, or one table under several origins (a pull:
/// rebase and remote), is several `Change`s, in the order first written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Change {
    /// The schema table's name.
    pub table: String,
    /// The keys of the rows changed, each once, in the order first written.
    pub keys: Vec<Key>,
    /// Who changed them.
    pub origin: Origin,
}

/// Where the feed delivers: a channel's sender, or an app's function
/// (`Store::changes_to`). It answers `false` once nobody listens, and is
/// then dropped.
type Sink = Box<dyn FnMut(&Change) -> bool + Send>;

/// What the current transaction changed, and the feed's receivers.
pub(super) struct ChangeLog {
    /// The origin recorded with the next writes.
    origin: Origin,
    /// (table id, key, origin) of every row written since the transaction
    /// began, repeats included.
    pending: Vec<(i64, Vec<Value>, Origin)>,
    senders: Vec<Sink>,
    /// Whether anyone listens beyond the feed (live queries): set by the
    /// store, which owns them.
    watched: bool,
}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeLog")
            .field("origin", &self.origin)
            .field("pending", &self.pending)
            .field("sinks", &self.senders.len())
            .field("watched", &self.watched)
            .finish()
    }
}

impl Default for ChangeLog {
    fn default() -> Self {
        ChangeLog {
            origin: Origin::Local,
            pending: Vec::new(),
            senders: Vec::new(),
            watched: false,
        }
    }
}

impl ChangeLog {
    /// A new receiver of every later commit's changes.
    pub fn subscribe(&mut self) -> Receiver<Change> {
        let (tx, rx) = mpsc::channel();
        self.senders
            .push(Box::new(move |c| tx.send(c.clone()).is_ok()));
        rx
    }

    /// A new sink of every later commit's changes, until it answers
    /// `false`.
    pub fn subscribe_with(&mut self, sink: impl FnMut(&Change) -> bool + Send + 'static) {
        self.senders.push(Box::new(sink));
    }

    /// Whether writes need recording: without receivers or live queries
    /// a write costs no key copy.
    fn listening(&self) -> bool {
        self.watched || !self.senders.is_empty()
    }

    pub fn set_watched(&mut self, watched: bool) {
        self.watched = watched;
    }

    /// Sets the origin of the writes that follow; returns the one before,
    /// for the caller to put back.
    pub fn set_origin(&mut self, origin: Origin) -> Origin {
        std::mem::replace(&mut self.origin, origin)
    }

    /// Records a write of row `key` of table `table` (a layout id).
    pub fn record(&mut self, table: i64, key: &[Value]) {
        if !self.senders.is_empty() {
            self.pending.push((table, key.to_vec(), self.origin));
        } else if self.watched {
            // Live queries need only the tables: no key copy. (No receiver
            // can be added while a transaction holds the store.)
            self.pending.push((table, Vec::new(), self.origin));
        }
    }

    /// Records writes of `keys` of the table named `table` under `origin`.
    pub fn record_named(&mut self, tables: &[TableLayout], table: &str, key: &Key, origin: Origin) {
        if !self.listening() {
            return;
        }
        if let Some(layout) = tables.iter().find(|t| t.name() == table) {
            self.pending.push((layout.id, key.0.clone(), origin));
        }
    }

    /// Whether writes are being recorded.
    pub fn is_listening(&self) -> bool {
        self.listening()
    }

    /// Where the record stands (a transaction's or savepoint's start).
    pub fn mark(&self) -> (usize, Origin) {
        (self.pending.len(), self.origin)
    }

    /// Back to `mark` (rolled back): the writes after it are forgotten and
    /// its origin is restored.
    pub fn rewind(&mut self, mark: (usize, Origin)) {
        self.pending.truncate(mark.0);
        self.origin = mark.1;
    }

    /// After a commit: the changes, grouped by table and origin, keys
    /// deduplicated. Empties the record.
    pub fn take(&mut self, tables: &[TableLayout]) -> Vec<Change> {
        let pending = std::mem::take(&mut self.pending);
        self.origin = Origin::Local;
        let mut out: Vec<(i64, Change, std::collections::HashSet<String>)> = Vec::new();
        for (table, key, origin) in pending {
            let at = match out
                .iter()
                .position(|(t, c, _)| *t == table && c.origin == origin)
            {
                Some(at) => at,
                None => {
                    let Some(layout) = tables.iter().find(|t| t.id == table) else {
                        continue;
                    };
                    out.push((
                        table,
                        Change {
                            table: layout.name().to_owned(),
                            keys: Vec::new(),
                            origin,
                        },
                        Default::default(),
                    ));
                    out.len() - 1
                }
            };
            let (_, change, seen) = &mut out[at];
            if self.senders.is_empty() {
                continue;
            }
            // Values have no total order or hash; their debug text tells
            // every distinct key apart (types included).
            if seen.insert(format!("{key:?}")) {
                change.keys.push(Key(key));
            }
        }
        out.into_iter().map(|(_, c, _)| c).collect()
    }

    /// Sends `changes` to every receiver; a dropped receiver is pruned,
    /// and so is a sink that panicked (caught: the commit is done and the
    /// other receivers still hear of it).
    pub fn publish(&mut self, changes: &[Change]) {
        self.senders.retain_mut(|sink| {
            changes
                .iter()
                .all(|c| meldb_core::app_panic::catch(|| sink(c)).unwrap_or(false))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::test_schema;
    use crate::store::Store;

    fn key(s: &str) -> Vec<Value> {
        vec![Value::Text(s.into())]
    }

    #[test]
    fn a_rewind_forgets_the_writes_after_its_mark_and_restores_the_origin() -> crate::Result<()> {
        let store = Store::open_in_memory(&test_schema())?;
        let id = store.tables[0].id;
        let mut log = ChangeLog::default();
        let feed = log.subscribe();
        log.record(id, &key("a"));
        let mark = log.mark();
        log.set_origin(Origin::Remote);
        log.record(id, &key("b"));
        log.rewind(mark);
        log.record(id, &key("a"));
        log.record(id, &key("c"));
        let changes = log.take(&store.tables);
        assert_eq!(
            changes,
            vec![Change {
                table: "item".into(),
                keys: vec![Key(key("a")), Key(key("c"))],
                origin: Origin::Local,
            }]
        );
        log.publish(&changes);
        assert_eq!(feed.try_recv().ok(), changes.into_iter().next());
        Ok(())
    }

    #[test]
    fn writes_are_grouped_by_origin_and_dropped_receivers_pruned() -> crate::Result<()> {
        let store = Store::open_in_memory(&test_schema())?;
        let id = store.tables[0].id;
        let mut log = ChangeLog::default();
        let kept = log.subscribe();
        drop(log.subscribe());
        log.record(id, &key("a"));
        log.set_origin(Origin::Rebase);
        log.record(id, &key("a"));
        let changes = log.take(&store.tables);
        let origins: Vec<Origin> = changes.iter().map(|c| c.origin).collect();
        assert_eq!(origins, [Origin::Local, Origin::Rebase]);
        log.publish(&changes);
        assert_eq!(log.senders.len(), 1);
        assert_eq!(kept.try_iter().count(), 2);
        // After a commit the origin is local again.
        log.record(id, &key("b"));
        assert_eq!(log.take(&store.tables)[0].origin, Origin::Local);
        Ok(())
    }

    #[test]
    fn nothing_is_recorded_without_a_listener() -> crate::Result<()> {
        let store = Store::open_in_memory(&test_schema())?;
        let mut log = ChangeLog::default();
        log.record(store.tables[0].id, &key("a"));
        assert_eq!(log.mark().0, 0);
        log.set_watched(true);
        log.record(store.tables[0].id, &key("a"));
        assert_eq!(log.mark().0, 1);
        Ok(())
    }
}
