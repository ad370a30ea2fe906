//! A store and the model side by side.

use super::*;

// ---------------------------------------------------------------------------
// Store and model side by side
// ---------------------------------------------------------------------------

/// Compares the model's verdict on an op with the store's.
fn agree(
    step: usize,
    op: &Op,
    model: &Result<(), ModelError>,
    store: &crate::Result<()>,
) -> Result<(), String> {
    match (model, store) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(m), Err(e)) => match rejection_of(e) {
            Some(r) if r == m.rejection => Ok(()),
            Some(r) => Err(format!(
                "step {step}: {op:?}: both reject it, but the model says {m} and the store says {r:?}: {e}"
            )),
            None => Err(format!(
                "step {step}: {op:?}: the store failed outside the write rules: {e}"
            )),
        },
        (Ok(()), Err(e)) => Err(format!(
            "step {step}: {op:?}: the model accepts it, the store rejects it: {e}"
        )),
        (Err(m), Ok(())) => Err(format!(
            "step {step}: {op:?}: the model rejects it ({m}), the store accepts it"
        )),
    }
}

/// A store and a [`Model`] receiving the same ops; every method returns
/// the first disagreement as a message.
#[derive(Debug)]
pub struct Harness {
    /// The store under test.
    pub store: Store,
    /// The reference.
    pub model: Model,
    steps: usize,
}

impl Harness {
    /// A fresh in-memory store ([`fixed_store`]) and an empty model.
    pub fn new() -> Result<Self, String> {
        let store = fixed_store(1).map_err(|e| format!("opening the store: {e}"))?;
        Ok(Harness {
            model: Model::new(store.schema()),
            store,
            steps: 0,
        })
    }

    /// How many ops have been run.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Runs `op` in its own transaction on both sides, then compares every
    /// table.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        self.steps += 1;
        let expected = self.model.apply(op);
        let actual = run_op(&mut self.store, op);
        agree(self.steps, op, &expected, &actual)?;
        self.check_tables()
    }

    /// Runs `ops` in one transaction, carrying on past rejected ones (a
    /// rejected write leaves no trace), comparing each op's row as the
    /// transaction sees it; then commits, or rolls back and expects the
    /// state from before, and compares every table.
    pub fn batch(&mut self, ops: &[Op], commit: bool) -> Result<(), String> {
        let before = self.model.clone();
        let schema = self.model.schema().clone();
        let mut tx = self
            .store
            .transaction()
            .map_err(|e| format!("starting a transaction: {e}"))?;
        for op in ops {
            self.steps += 1;
            let expected = self.model.apply(op);
            let actual = run_op_in(&mut tx, &schema, op);
            agree(self.steps, op, &expected, &actual)?;
            let Some(table) = schema.table(op.table()) else {
                continue;
            };
            if op.key().len() != table.primary_key.len() {
                continue;
            }
            let seen = tx
                .get(op.table(), op.key().to_vec())
                .map_err(|e| format!("step {}: reading back {op:?}: {e}", self.steps))?
                .map(|row| row.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
            let want = self.model.row(op.table(), op.key());
            let same = match (&seen, &want) {
                (Some(a), Some(b)) => cmp_values(a, b).is_eq(),
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Err(format!(
                    "step {}: after {op:?} inside a transaction the row reads {seen:?}, the model has {want:?}",
                    self.steps
                ));
            }
        }
        if commit {
            tx.commit().map_err(|e| format!("committing: {e}"))?;
        } else {
            tx.rollback();
            self.model = before;
        }
        self.check_tables()
    }

    /// Compares every table as SQL shows it with the model.
    pub fn check_tables(&self) -> Result<(), String> {
        compare_tables(
            &self.store,
            &self.model,
            &format!("after step {}", self.steps),
        )
    }

    /// Exports everything (`changes_since` an empty version vector) through
    /// the codec into a fresh replica, which must end with the same digest
    /// and show the same rows.
    pub fn check_export(&self) -> Result<(), String> {
        let copy = export_to_fresh(&self.store)?;
        compare_tables(
            &copy,
            &self.model,
            "in a replica that applied a full export",
        )
    }
}

fn compare_tables(store: &Store, model: &Model, when: &str) -> Result<(), String> {
    for table in &model.schema().tables {
        let sql =
            sql_rows(store, &table.name).map_err(|e| format!("reading {}: {e}", table.name))?;
        let want = model.rows(&table.name);
        if !same_rows(&sql, &want) {
            return Err(format!(
                "{when}: table {:?} differs\n  sql:   {sql:?}\n  model: {want:?}",
                table.name
            ));
        }
    }
    Ok(())
}

/// Applies `changes_since(empty)` of `store`, encoded and decoded, to a
/// fresh replica and checks that the digests match.
pub fn export_to_fresh(store: &Store) -> Result<Store, String> {
    let changes = store
        .changes_since(&VersionVector::new())
        .map_err(|e| format!("changes_since: {e}"))?;
    // A random site id: a fixed one can appear in fuzzed input, and a
    // replica rightly refuses rows claiming writes of its own it lacks.
    let mut copy = StoreOptions::new()
        .time_source(Arc::new(ManualTime::new(START_MS)))
        .open_in_memory(inventory())
        .map_err(|e| format!("opening a replica: {e}"))?;
    copy.apply_bytes(&codec::encode_changeset(&changes))
        .map_err(|e| format!("applying a full export: {e}"))?;
    let (a, b) = (digest(store)?, digest(&copy)?);
    if a != b {
        return Err(format!(
            "a replica that applied a full export has digest {} instead of {}",
            hex(&b),
            hex(&a)
        ));
    }
    Ok(copy)
}

pub(super) fn digest(store: &Store) -> Result<[u8; 32], String> {
    store.digest().map_err(|e| format!("digest: {e}"))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
