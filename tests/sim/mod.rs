//! A multi-replica simulation: random local writes of every kind on a small
//! key space, clocks that tie and drift, and sync over an unreliable network
//! (partial batches, reordering, duplicates, stale version vectors, stale
//! re-deliveries). Every step is checked against the reference model in
//! [`model`]; every run ends with "all replicas equal".
//!
//! Steps are plain data ([`Step`]) so proptest can generate and shrink them,
//! and a seeded generator ([`random_steps`]) replays the same distribution
//! deterministically.

mod gen;
pub mod model;
mod ops;

pub use gen::{random_steps, step};
pub use ops::RawOp;

use crate::common::{
    assert_same_state, assert_same_version_vectors, row_values, site, view_rows, Rng, T0,
};
use meldb::{
    crdt::ColumnState, Changeset, Error, Hlc, Kind, ManualTime, Schema, Store, StoreOptions,
    TimeSource, Value, VersionVector, WriteError,
};
use model::{Effect, EventId, Model, RowId, Spec, Stats};
use ops::{execute, predict, resolve, Expect};
use std::{
    collections::{BTreeMap, BTreeSet},
    rc::Rc,
    sync::Arc,
};

/// Boxed errors, so meldb errors and model mismatches both fit.
pub type SimResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Where the replicas keep their databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast; `Step::Reopen` does nothing.
    Memory,
    /// Files in a temporary directory; `Step::Reopen` closes and reopens.
    Files,
}

/// Which replicas talk to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every pair.
    Mesh,
    /// A chain 0 <-> 1 <-> 2 <-> ...: ends reach each other only through
    /// intermediaries, which forward what they received.
    Relay,
}

/// Which version vector a sync asks with.
#[derive(Clone, Copy, Debug)]
pub enum VvPick {
    Current,
    /// One the receiver had earlier.
    Stale(u16),
    Empty,
}

/// One step of a simulation.
#[derive(Clone, Debug)]
pub enum Step {
    /// One transaction on `replica`: committed, or dropped.
    Write {
        replica: u8,
        ops: Vec<RawOp>,
        commit: bool,
    },
    /// `from` computes what `to` lacks (by `vv`), splits it into pieces of
    /// at most `max_rows` rows, and a lossy network delivers some of them
    /// (chosen by `seed`) in random order with duplicates.
    Sync {
        from: u8,
        to: u8,
        vv: VvPick,
        max_rows: u8,
        seed: u64,
    },
    /// An old piece arrives again.
    Redeliver { to: u8, pick: u16 },
    /// Shared wall time moves forward.
    Advance { ms: u16 },
    /// One replica's clock runs this far ahead of the shared time (it may
    /// also move back towards 0). Mostly well inside the drift bound (5
    /// minutes); sometimes beyond it, so that receivers hold its rows.
    Skew { replica: u8, offset_ms: u32 },
    /// The replica's process restarts: close the store and open it again
    /// (file storage only).
    Reopen { replica: u8 },
}

/// The drift bound of the simulated stores (the default).
const MAX_DRIFT_MS: u64 = 300_000;

/// A row a replica holds back because its clock is too far ahead: what its
/// sender knew of the row, and its timestamp's physical time.
/// A held row: what it carries, when it may apply, and what makes meldb
/// store it once (the same row state from the same sender with the same
/// covers is one held row, however often it is offered).
type HeldRow = (RowId, BTreeSet<EventId>, u64, String);

/// A delivered piece, kept for stale re-delivery with what its sender knew.
struct Batch {
    piece: Changeset,
    target: usize,
    snapshot: Rc<BTreeMap<RowId, BTreeSet<EventId>>>,
}

/// The running simulation.
pub struct Sim {
    schema: Schema,
    dir: Option<tempfile::TempDir>,
    /// The greatest timestamp each replica stamped a committed write with.
    own_stamp: Vec<Hlc>,
    pub spec: Spec,
    pub stores: Vec<Store>,
    pub model: Model,
    pub stats: Stats,
    topology: Topology,
    times: Vec<ManualTime>,
    base_ms: u64,
    offsets: Vec<u64>,
    vv_history: Vec<Vec<VersionVector>>,
    batches: Vec<Batch>,
    /// Rows each replica holds, in the order they were held.
    held: Vec<Vec<HeldRow>>,
    /// Whether a delivery of the current step held rows back.
    held_now: bool,
    last_clock: Vec<Hlc>,
    rng: Rng,
    check_version_vectors: bool,
}

/// Every row's causal length and column states (in spec order), as the
/// store would send them to a replica that has nothing.
type RowStates = BTreeMap<RowId, RowSummary>;

/// What the simulation reads of one row's CRDT state.
struct RowSummary {
    cl: u64,
    hlc: Hlc,
    writer: meldb::SiteId,
    cols: Vec<Option<ColumnState>>,
}

fn row_states(spec: &Spec, store: &Store) -> SimResult<RowStates> {
    let mut out = BTreeMap::new();
    for table in store.changes_since(&VersionVector::new())?.tables {
        let t = spec
            .tables
            .iter()
            .position(|s| s.name == table.table)
            .ok_or("unknown table in changeset")?;
        let positions: Vec<usize> = table
            .columns
            .iter()
            .map(|name| {
                spec.tables[t]
                    .cols
                    .iter()
                    .position(|c| &c.name == name)
                    .ok_or_else(|| format!("column {name} outside the spec"))
            })
            .collect::<Result<_, _>>()?;
        for row in table.rows {
            let id = spec.row_id(&table.table, &row.key);
            let mut cols = vec![None; spec.tables[t].cols.len()];
            for (state, &j) in row.state.columns.into_iter().zip(&positions) {
                cols[j] = state;
            }
            out.insert(
                id,
                RowSummary {
                    cl: row.state.cl,
                    hlc: row.state.hlc,
                    writer: row.state.writer,
                    cols,
                },
            );
        }
    }
    Ok(out)
}

/// Opens (or creates) replica `r`: site `r + 1`, in `dir` or in memory.
fn open_replica(
    schema: &Schema,
    dir: Option<&tempfile::TempDir>,
    r: usize,
    time: &ManualTime,
) -> meldb::Result<Store> {
    let options = StoreOptions::new()
        .site_id(site(r as u8 + 1))
        .time_source(Arc::new(time.clone()))
        .durability(meldb::Durability::Normal);
    match dir {
        Some(dir) => Ok(options.open(dir.path().join(format!("replica{r}.db")), schema)?),
        None => Ok(options.open_in_memory(schema)?),
    }
}

impl Sim {
    /// `replicas` stores of `schema` with sites 1..=n, all at `T0`.
    pub fn new(
        schema: &Schema,
        replicas: usize,
        topology: Topology,
        storage: Storage,
        seed: u64,
    ) -> SimResult<Sim> {
        let dir = match storage {
            Storage::Memory => None,
            Storage::Files => Some(tempfile::tempdir()?),
        };
        let mut stores = Vec::new();
        let mut times = Vec::new();
        for r in 0..replicas {
            let time = ManualTime::new(T0);
            stores.push(open_replica(schema, dir.as_ref(), r, &time)?);
            times.push(time);
        }
        Ok(Sim {
            schema: schema.clone(),
            dir,
            own_stamp: vec![Hlc(0); replicas],
            spec: Spec::new(schema),
            model: Model::new(replicas),
            stats: Stats::default(),
            topology,
            times,
            base_ms: T0,
            offsets: vec![0; replicas],
            vv_history: vec![vec![VersionVector::new()]; replicas],
            batches: Vec::new(),
            held: vec![Vec::new(); replicas],
            held_now: false,
            last_clock: vec![Hlc(0); replicas],
            rng: Rng::new(seed),
            check_version_vectors: true,
            stores,
        })
    }

    /// Skips the version-vector checks (equal at the end; a full delivery
    /// leaves the receiver with every dot the sender has), to look for other
    /// problems while a version-vector bug is open.
    pub fn without_version_vector_checks(mut self) -> Self {
        self.check_version_vectors = false;
        self
    }

    fn n(&self) -> usize {
        self.stores.len()
    }

    /// Whether `from` may send to `to`.
    pub fn linked(&self, from: usize, to: usize) -> bool {
        from != to
            && match self.topology {
                Topology::Mesh => true,
                Topology::Relay => from.abs_diff(to) == 1,
            }
    }

    fn pair(&self, from: u8, to: u8) -> (usize, usize) {
        let pairs: Vec<(usize, usize)> = (0..self.n())
            .flat_map(|x| (0..self.n()).map(move |y| (x, y)))
            .filter(|&(x, y)| self.linked(x, y))
            .collect();
        pairs[(from as usize * 7 + to as usize) % pairs.len()]
    }

    /// Runs every step, then syncs to quiescence and checks convergence.
    pub fn run(mut self, steps: &[Step]) -> SimResult<Stats> {
        for (i, step) in steps.iter().enumerate() {
            self.step(step)
                .map_err(|e| format!("step {i} ({step:?}) failed: {e}"))?;
            for r in 0..self.n() {
                self.times[r].set_ms(self.base_ms + self.offsets[r]);
                let clock = self.stores[r].clock();
                assert!(
                    clock >= self.last_clock[r],
                    "replica {r}'s clock went back from {} to {clock} at step {i}",
                    self.last_clock[r]
                );
                self.last_clock[r] = clock;
            }
        }
        self.finish()
    }

    fn step(&mut self, step: &Step) -> SimResult<()> {
        let n = self.n();
        match step {
            Step::Write {
                replica,
                ops,
                commit,
            } => self.write(*replica as usize % n, ops, *commit),
            Step::Sync {
                from,
                to,
                vv,
                max_rows,
                seed,
            } => {
                let (x, y) = self.pair(*from, *to);
                self.sync(x, y, *vv, *max_rows as usize, *seed)
            }
            Step::Redeliver { to, pick } => {
                if self.batches.is_empty() {
                    return Ok(());
                }
                let i = *pick as usize % self.batches.len();
                let target = match self.topology {
                    Topology::Mesh => *to as usize % n,
                    Topology::Relay => self.batches[i].target,
                };
                let piece = self.batches[i].piece.clone();
                let snapshot = self.batches[i].snapshot.clone();
                self.stats.stale_deliveries += 1;
                self.deliver(target, &piece, &snapshot)?;
                self.check_replica(target, false)
            }
            Step::Advance { ms } => {
                self.base_ms += u64::from(*ms);
                Ok(())
            }
            Step::Skew { replica, offset_ms } => {
                self.offsets[*replica as usize % n] = u64::from(*offset_ms);
                Ok(())
            }
            Step::Reopen { replica } => self.reopen(*replica as usize % n),
        }
    }

    /// Closes and reopens a file replica: everything must be as before.
    fn reopen(&mut self, r: usize) -> SimResult<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        let old = &self.stores[r];
        let before = (
            old.digest()?,
            old.version_vector(),
            view_rows(old)?,
            old.held_count()?,
        );
        let clock = old.clock();
        drop(self.stores.remove(r));
        let store = open_replica(&self.schema, self.dir.as_ref(), r, &self.times[r])?;
        let after = (
            store.digest()?,
            store.version_vector(),
            view_rows(&store)?,
            store.held_count()?,
        );
        assert_eq!(after, before, "replica {r} is not the same after reopening");
        // Ticks of writes that failed or rolled back may be forgotten;
        // timestamps of committed writes may not.
        assert!(store.clock() <= clock);
        assert!(
            store.clock() >= self.own_stamp[r],
            "replica {r}'s clock went back from {} to {} over a reopen",
            self.own_stamp[r],
            store.clock()
        );
        self.last_clock[r] = store.clock();
        self.stores.insert(r, store);
        self.check_replica(r, false)
    }

    fn write(&mut self, r: usize, ops: &[RawOp], commit: bool) -> SimResult<()> {
        let before = if commit {
            None
        } else {
            Some((self.stores[r].digest()?, view_rows(&self.stores[r])?))
        };
        let vv_before = self.stores[r].version_vector();
        let clock_before = self.stores[r].clock();
        let first_event = self.model.events.len();
        let known_before = self.model.known[r].clone();
        // The last register write per (row, column) in this transaction.
        let mut last_lww: BTreeMap<(RowId, usize), (EventId, usize)> = BTreeMap::new();
        {
            let mut tx = self.stores[r].transaction()?;
            for raw in ops {
                let (row, op) = resolve(&self.spec, raw);
                let expect = predict(&self.spec, &self.model, r, row, &op);
                let table = &self.spec.tables[row.table];
                let key = &table.keys[row.key];
                let result = execute(&mut tx, table, key, &op);
                let mismatch = |got: &dyn std::fmt::Debug| {
                    format!(
                        "replica {r}: {op:?} on {}{key:?}: the model expected {expect:?}, meldb gave {got:?}",
                        table.name
                    )
                };
                match (&expect, result) {
                    (Expect::Event { cl, effects }, Ok(())) => {
                        let id = self.model.record(r, row, *cl, effects.clone());
                        for (i, effect) in effects.iter().enumerate() {
                            if let Effect::Lww { col, .. } = effect {
                                last_lww.insert((row, *col), (id, i));
                            }
                        }
                    }
                    (Expect::NoChange, Ok(())) => {}
                    (Expect::Exists, Err(Error::Write(WriteError::RowExists { .. }))) => {
                        self.stats.rejected_exists += 1;
                    }
                    (Expect::NotFound, Err(Error::Write(WriteError::RowNotFound { .. }))) => {
                        self.stats.rejected_not_found += 1;
                    }
                    (Expect::Missing, Err(Error::Write(WriteError::MissingValue { .. }))) => {
                        self.stats.rejected_missing += 1;
                    }
                    (_, got) => return Err(mismatch(&got).into()),
                }
            }
            if commit {
                tx.commit()?;
            }
        }
        let store = &self.stores[r];
        if let Some((digest, rows)) = before {
            self.model.events.truncate(first_event);
            self.model.known[r] = known_before;
            self.stats.rolled_back += 1;
            assert_eq!(
                store.digest()?,
                digest,
                "a dropped transaction changed the digest"
            );
            assert_eq!(
                view_rows(store)?,
                rows,
                "a dropped transaction changed rows"
            );
            assert_eq!(
                store.version_vector(),
                vv_before,
                "a dropped transaction changed the version vector"
            );
            return Ok(());
        }
        let written = self.model.events.len() - first_event;
        self.stats.committed_writes += written;
        for ev in &self.model.events[first_event..] {
            let before = self.model.cl(&ev.seen);
            if ev.cl > before && before % 2 == 1 {
                self.stats.deletes += 1;
            } else if ev.cl > before && before > 0 {
                self.stats.revivals += 1;
            }
        }
        // Seq numbers: one per write, contiguous, never reused.
        let me = site(r as u8 + 1);
        let last = |vv: &VersionVector| vv.site(&me).map_or(0, |s| s.max());
        let vv_after = store.version_vector();
        assert_eq!(
            last(&vv_after),
            last(&vv_before) + written as u64,
            "replica {r}: {written} writes should use the next {written} seq numbers"
        );
        assert_eq!(
            vv_after.site(&me).map_or(0, |s| s.ranges().len()),
            usize::from(last(&vv_after) > 0)
        );
        // Stamp register writes that are the transaction's last for their
        // column in the row's current life: their (hlc, site) is in the state.
        let states = row_states(&self.spec, store)?;
        // Every row written carries this write's timestamp: after all the
        // replica issued or saw before, and stamped by this site.
        let touched: BTreeSet<RowId> = self.model.events[first_event..]
            .iter()
            .map(|ev| ev.row)
            .collect();
        let prior = self.own_stamp[r];
        for row in touched {
            let Some(state) = states.get(&row) else {
                return Err(format!("replica {r}: written row {row:?} has no state").into());
            };
            assert_eq!(
                state.writer, me,
                "replica {r}: row {row:?} not stamped by its writer"
            );
            assert!(
                state.hlc > clock_before && state.hlc > prior,
                "replica {r}: row {row:?} written at {} (clock before {clock_before}, last own stamp {prior})",
                state.hlc,
            );
            self.own_stamp[r] = self.own_stamp[r].max(state.hlc);
        }
        for ((row, col), (id, i)) in last_lww {
            let life = self.model.cl(self.model.known(r, row));
            if self.model.events[id].cl != life {
                continue;
            }
            let stored = states.get(&row).and_then(|s| s.cols[col].as_ref());
            let Some(ColumnState::Lww(lww)) = stored else {
                return Err(format!("replica {r}: row {row:?} column {col} has no register state after a write: {stored:?}").into());
            };
            let Effect::Lww { value, stamp, .. } = &mut self.model.events[id].effects[i] else {
                unreachable!()
            };
            assert_eq!(
                &lww.value, value,
                "replica {r}: the register holds another value than written"
            );
            assert_eq!(
                lww.site, me,
                "replica {r}: a local write is stamped with another site"
            );
            assert!(
                lww.hlc > clock_before,
                "replica {r}: write stamped {} not after the clock {clock_before}",
                lww.hlc
            );
            *stamp = Some((lww.hlc, lww.site));
            // Causality: a write is stamped after everything its writer saw.
            let seen_max = self.model.events[id]
                .seen
                .iter()
                .flat_map(|&e| self.model.events[e].effects.iter())
                .filter_map(|e| match e {
                    Effect::Lww {
                        stamp: Some((h, _)),
                        ..
                    } => Some(*h),
                    _ => None,
                })
                .max();
            if let Some(seen) = seen_max {
                assert!(
                    lww.hlc > seen,
                    "replica {r}: write stamped {} not after a write it had seen ({seen})",
                    lww.hlc
                );
            }
        }
        self.check_states(r, &states, false)
    }

    fn sync(
        &mut self,
        x: usize,
        y: usize,
        pick: VvPick,
        max_rows: usize,
        seed: u64,
    ) -> SimResult<()> {
        let current = self.stores[y].version_vector();
        let history = &mut self.vv_history[y];
        let (vv, is_current) = match pick {
            VvPick::Current => (current.clone(), true),
            VvPick::Stale(i) => (history[i as usize % history.len()].clone(), false),
            VvPick::Empty => (VersionVector::new(), false),
        };
        if history.len() < 12 {
            history.push(current);
        } else {
            let i = self.rng.below(12) as usize;
            history[i] = current;
        }
        let changes = self.stores[x].changes_since(&vv)?;
        let snapshot = Rc::new(self.snapshot(x, &changes));
        self.held_now = false;
        let pieces = changes.split(max_rows.max(1));
        let mut rng = Rng::new(seed);
        let everything = rng.chance(0.5);
        let mut order: Vec<usize> = (0..pieces.len())
            .filter(|_| everything || rng.chance(0.6))
            .collect();
        let dups: Vec<usize> = order.iter().copied().filter(|_| rng.chance(0.2)).collect();
        order.extend(dups);
        rng.shuffle(&mut order);
        for &i in &order {
            self.deliver(y, &pieces[i], &snapshot)?;
        }
        for piece in pieces {
            let batch = Batch {
                piece,
                target: y,
                snapshot: snapshot.clone(),
            };
            if self.batches.len() < 48 {
                self.batches.push(batch);
            } else {
                let i = self.rng.below(48) as usize;
                self.batches[i] = batch;
            }
        }
        if everything && is_current && self.check_version_vectors && !self.held_now {
            let (vx, vy) = (
                self.stores[x].version_vector(),
                self.stores[y].version_vector(),
            );
            assert!(
                vx.le(&vy),
                "replica {y} applied all of changes_since(its own version vector) from replica {x} \
                 but still lacks dots {x} has:\n  {x}: {vx:?}\n  {y}: {vy:?}"
            );
        }
        self.check_replica(y, false)
    }

    /// What the sender knew of every row in `changes`.
    fn snapshot(&self, x: usize, changes: &Changeset) -> BTreeMap<RowId, BTreeSet<EventId>> {
        changes
            .tables
            .iter()
            .flat_map(|t| t.rows.iter().map(move |r| (t.table.as_str(), &r.key)))
            .map(|(table, key)| {
                let row = self.spec.row_id(table, key);
                (row, self.model.known(x, row).clone())
            })
            .collect()
    }

    fn deliver(
        &mut self,
        y: usize,
        piece: &Changeset,
        snapshot: &BTreeMap<RowId, BTreeSet<EventId>>,
    ) -> SimResult<()> {
        // Held rows whose time has come are applied first, then the piece's
        // rows, except those too far ahead of y's clock, which wait.
        let horizon = self.times[y].now_ms() + MAX_DRIFT_MS;
        let released = self.release(y, horizon);
        let mut held = 0;
        for table in &piece.tables {
            for row in &table.rows {
                let id = self.spec.row_id(&table.table, &row.key);
                let events = snapshot.get(&id).cloned().unwrap_or_default();
                let physical = row.state.hlc.physical_ms();
                if physical > horizon {
                    // The row's content is its events; the column list it
                    // travels with does not matter (meldb stores it in the
                    // local layout).
                    let identity = format!("{} {:?} {:?}", piece.origin, events, row.covers);
                    if !self.held[y].iter().any(|h| h.0 == id && h.3 == identity) {
                        self.held[y].push((id, events, physical, identity));
                    }
                    held += 1;
                } else {
                    self.model.deliver(y, id, &events);
                }
            }
        }
        let report = self.stores[y].apply(piece)?;
        assert_eq!(
            (report.held.len(), report.released),
            (held, released),
            "replica {y}: rows held and released (meldb, then the model)"
        );
        for h in &report.held {
            assert!(h.offset_ms > MAX_DRIFT_MS, "held within the bound: {h:?}");
        }
        self.held_now |= held > 0;
        self.stats.deliveries += 1;
        self.stats.held_rows += held;
        self.stats.concurrent_rows += report.concurrent;
        self.stats.duplicate_rows += report.already_seen;
        Ok(())
    }

    /// The model's side of releasing held rows up to `horizon`.
    fn release(&mut self, y: usize, horizon: u64) -> usize {
        let (ready, wait): (Vec<HeldRow>, Vec<HeldRow>) = std::mem::take(&mut self.held[y])
            .into_iter()
            .partition(|(_, _, physical, _)| *physical <= horizon);
        self.held[y] = wait;
        for (id, events, _, _) in &ready {
            self.model.deliver(y, *id, events);
        }
        ready.len()
    }

    /// Replica `r` must show what the model computes from the events it
    /// knows (or from all events, once everything is synced).
    fn check_replica(&self, r: usize, all: bool) -> SimResult<()> {
        let states = row_states(&self.spec, &self.stores[r])?;
        self.check_states(r, &states, all)
    }

    fn check_states(&self, r: usize, states: &RowStates, all: bool) -> SimResult<()> {
        for row in self.spec.rows() {
            let events = if all {
                self.model.all_events(row)
            } else {
                self.model.known(r, row).clone()
            };
            let table = &self.spec.tables[row.table];
            let key = &table.keys[row.key];
            let (expected, _) = self.model.expected_row(&self.spec, row, &events);
            let actual = row_values(&self.stores[r], &table.name, key.clone())?;
            if actual != expected {
                return Err(format!(
                    "replica {r}, {}{key:?}: SQL shows {actual:?}, but the writes it {} give {expected:?}\n{}",
                    table.name,
                    if all { "should have after full sync" } else { "has received" },
                    self.describe(row, &events)
                )
                .into());
            }
            let cl = states.get(&row).map_or(0, |s| s.cl);
            if cl != self.model.cl(&events) {
                return Err(format!(
                    "replica {r}, {}{key:?}: causal length {cl}, the model says {}",
                    table.name,
                    self.model.cl(&events)
                )
                .into());
            }
        }
        Ok(())
    }

    fn describe(&self, row: RowId, events: &BTreeSet<EventId>) -> String {
        events
            .iter()
            .map(|&e| {
                let ev = &self.model.events[e];
                format!(
                    "  event {e} by replica {} at cl {} (saw {:?}): {:?}",
                    ev.replica, ev.cl, ev.seen, ev.effects
                )
            })
            .chain(std::iter::once(format!("  ({row:?})")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Full sync rounds until nothing moves, then: every replica shows what
    /// all writes give (nothing lost), and all replicas are equal.
    fn finish(mut self) -> SimResult<Stats> {
        let n = self.n();
        // Clocks agree again and wall time passes every timestamp written,
        // so every held row can be applied.
        let latest = self
            .stores
            .iter()
            .map(|s| s.clock().physical_ms())
            .max()
            .unwrap_or(0);
        self.base_ms = self.base_ms.max(latest) + 1;
        for r in 0..n {
            self.offsets[r] = 0;
            self.times[r].set_ms(self.base_ms);
            let released = self.release(r, self.base_ms + MAX_DRIFT_MS);
            let report = self.stores[r].release_held()?;
            assert_eq!(report.released, released, "replica {r}: rows released");
            assert_eq!(self.stores[r].held_count()?, 0);
        }
        let mut quiet = false;
        for _ in 0..12 {
            let mut moved = false;
            for x in 0..n {
                for y in 0..n {
                    if !self.linked(x, y) {
                        continue;
                    }
                    let changes = self.stores[x].changes_since(&self.stores[y].version_vector())?;
                    if !changes.is_empty() {
                        moved = true;
                        let snapshot = self.snapshot(x, &changes);
                        self.deliver(y, &changes, &snapshot)?;
                    }
                }
            }
            if !moved {
                quiet = true;
                break;
            }
        }
        assert!(
            quiet,
            "replicas still exchanging changes after 12 full sync rounds"
        );
        for r in 0..n {
            self.check_replica(r, true)?;
        }
        assert_same_state(&self.stores)?;
        if self.check_version_vectors {
            assert_same_version_vectors(&self.stores);
        }
        self.check_counters_of_rows_never_deleted()?;
        for row in self.spec.rows() {
            let (_, tie) = self
                .model
                .expected_row(&self.spec, row, &self.model.all_events(row));
            self.stats.lww_ties += usize::from(tie);
        }
        Ok(self.stats)
    }

    /// The plainest "nothing lost" check, independent of the model's rules
    /// for lives: a row that was never deleted shows, on every replica, the
    /// sum of every increment any replica made to it.
    fn check_counters_of_rows_never_deleted(&self) -> SimResult<()> {
        for row in self.spec.rows() {
            let events = self.model.all_events(row);
            if events.is_empty() || events.iter().any(|&e| self.model.events[e].cl != 1) {
                continue;
            }
            let table = &self.spec.tables[row.table];
            for (j, col) in table.cols.iter().enumerate() {
                if !matches!(col.kind, Kind::GCounter | Kind::PnCounter) {
                    continue;
                }
                let sum: i64 = events
                    .iter()
                    .flat_map(|&e| &self.model.events[e].effects)
                    .map(|effect| match effect {
                        Effect::Count { col, amount } if *col == j => *amount,
                        _ => 0,
                    })
                    .sum();
                for (r, store) in self.stores.iter().enumerate() {
                    let key = table.keys[row.key].clone();
                    let shown = crate::common::column(store, &table.name, key, &col.name)?;
                    if shown != Some(Value::Integer(sum)) {
                        return Err(format!(
                            "replica {r}, {}{:?}.{}: shows {shown:?}, but its increments add up to {sum}",
                            table.name, table.keys[row.key], col.name
                        )
                        .into());
                    }
                }
            }
        }
        Ok(())
    }
}
