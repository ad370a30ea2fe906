//! Convergence under an unreliable network, checked against a reference
//! model.
//!
//! 3–5 replicas make random writes of every kind on a small key space (so
//! conflicts, deletes, revivals and rejected writes are frequent), with
//! clocks that tie and drift within the bound, and sync by delta with
//! partial batches, reordering, duplicates, stale version vectors and stale
//! re-deliveries. After every step each touched replica must show exactly
//! what the writes it has received give (see `sim/model.rs`); at the end,
//! after full sync, all replicas must have equal digests, rows and version
//! vectors, nothing left to send, and no acknowledged write lost.
//!
//! `MELDB_PROPTEST_CASES=N` raises the number of proptest cases;
//! `MELDB_SEEDS=N` the seeds of the deterministic variant, and
//! `MELDB_SEED=S` replays one seed (print its steps with `--nocapture`).

mod common;
mod sim;

use common::{
    assert_converged, assert_same_state, cases, inventory, replica, sync, todo, Rng, TestResult, T0,
};
use meldb::clock::ManualTime;
use meldb::{Schema, Value};
use proptest::prelude::*;
use sim::model::Stats;
use sim::{random_steps, step, Sim, Step, Topology};

/// Whether the simulations also require equal version vectors at the end
/// (and a complete delivery to leave the receiver with every dot the sender
/// has). Off while `version_vector_hole_after_partial_delivery` fails: the
/// state checks (digest, rows, the model, nothing left to send) still run.
/// `version_vectors_converge` runs everything and is ignored until then.
const CHECK_VERSION_VECTORS: bool = false;

fn schema_for(choice: u8) -> Schema {
    match choice % 3 {
        0 => inventory(),
        1 => todo(),
        _ => common::booking(),
    }
}

fn run(
    schema: &Schema,
    replicas: usize,
    topology: Topology,
    steps: &[Step],
    check_version_vectors: bool,
) -> Result<Stats, TestCaseError> {
    Sim::new(schema, replicas, topology, 7)
        .map(|sim| {
            if check_version_vectors {
                sim
            } else {
                sim.without_version_vector_checks()
            }
        })
        .and_then(|sim| sim.run(steps))
        .map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any replicas, any writes, any lossy delivery: full sync converges and
    /// every replica shows what all writes give.
    #[test]
    fn replicas_converge_and_lose_nothing(
        schema in 0u8..3,
        replicas in 3usize..=5,
        steps in prop::collection::vec(step(), 10..60),
    ) {
        run(&schema_for(schema), replicas, Topology::Mesh, &steps, CHECK_VERSION_VECTORS)?;
    }

    /// A <-> B <-> C: A and C never talk, so everything between them is
    /// forwarded by B, covers included.
    #[test]
    fn relay_topology_converges(
        schema in 0u8..2,
        steps in prop::collection::vec(step(), 10..60),
    ) {
        run(&schema_for(schema), 3, Topology::Relay, &steps, CHECK_VERSION_VECTORS)?;
    }

    /// Everything above, and version vectors must be equal at the end.
    #[test]
    #[ignore = "bug: partial delivery leaves permanent holes in version vectors (see version_vector_hole_after_partial_delivery)"]
    fn version_vectors_converge(
        schema in 0u8..3,
        relay in any::<bool>(),
        steps in prop::collection::vec(step(), 10..60),
    ) {
        let topology = if relay { Topology::Relay } else { Topology::Mesh };
        run(&schema_for(schema), 3, topology, &steps, true)?;
    }
}

/// Minimal reproduction of a version-vector hole that never closes.
///
/// Site 1 writes row a (dot 1) and row b (dot 2). Site 2 receives only the
/// piece carrying row b, so it has dot 2 but not dot 1. Site 1 then writes
/// row a again (dot 3, superseding dot 1 in its dot index). Now a complete
/// sync sends row a with a cover of 3..=3 only: `changes_since` attributes
/// dot 1 to the gap before dot 2, which site 2 already has, so nobody ever
/// covers dot 1 for site 2. State converges, nothing is left to send, yet
/// site 2's version vector keeps the hole {2..=3} forever (and every later
/// `changes_since` for it rescans site 1 from seq 1).
#[test]
#[ignore = "bug: changes_since never covers a superseded dot below one the asker has; version vectors keep holes"]
fn version_vector_hole_after_partial_delivery() -> TestResult {
    let time = ManualTime::new(T0);
    let schema = todo();
    let mut s1 = replica(&schema, 1, &time)?;
    let mut s2 = replica(&schema, 2, &time)?;
    s1.write(|tx| tx.insert("todo", &[("id", "a".into())]))?;
    s1.write(|tx| tx.insert("todo", &[("id", "b".into())]))?;
    let pieces = s1.changes_since(&s2.version_vector())?.split(1);
    let row_b = pieces
        .iter()
        .find(|p| p.tables[0].rows[0].key == [Value::from("b")])
        .ok_or("no piece carries row b")?;
    s2.apply(row_b)?;
    s1.write(|tx| tx.set("todo", "a", "title", "again"))?;
    sync(&s1, &mut s2)?;

    let stores = [s1, s2];
    assert_same_state(&stores)?;
    assert!(stores[0]
        .changes_since(&stores[1].version_vector())?
        .is_empty());
    // Fails: site 2 has {site 1: [(2, 3)]}, site 1 has {site 1: [(1, 3)]}.
    assert_converged(&stores)?;
    Ok(())
}

/// The same simulation from seeded RNGs: deterministic, easy to replay
/// (`MELDB_SEED=17 cargo test --test convergence seeded -- --nocapture`),
/// and it checks that the generator really produces conflicts.
#[test]
fn seeded_simulations_converge() -> TestResult {
    let seeds: Vec<u64> = match std::env::var("MELDB_SEED") {
        Ok(s) => vec![s.parse()?],
        Err(_) => {
            let n = std::env::var("MELDB_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(12);
            (0..n).collect()
        }
    };
    let mut total = Stats::default();
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let schema = schema_for(rng.below(3) as u8);
        let topology = if rng.chance(0.25) {
            Topology::Relay
        } else {
            Topology::Mesh
        };
        let replicas = if topology == Topology::Relay {
            3
        } else {
            3 + rng.below(3) as usize
        };
        let count = 40 + rng.below(60) as usize;
        let steps = random_steps(&mut rng, count);
        if seeds.len() == 1 {
            eprintln!(
                "seed {seed}: {} replicas, {topology:?}, schema {}",
                replicas, schema.name
            );
            for (i, s) in steps.iter().enumerate() {
                eprintln!("  {i}: {s:?}");
            }
        }
        let mut sim = Sim::new(&schema, replicas, topology, seed)?;
        if !CHECK_VERSION_VECTORS {
            sim = sim.without_version_vector_checks();
        }
        let stats = sim.run(&steps).map_err(|e| {
            format!(
                "seed {seed} ({} replicas, {topology:?}, {}): {e}",
                replicas, schema.name
            )
        })?;
        total.add(&stats);
    }
    eprintln!("seeded simulations: {total:?}");
    if seeds.len() >= 8 {
        assert!(
            total.concurrent_rows > 0,
            "no concurrent changes were generated"
        );
        assert!(
            total.rejected_exists > 0 && total.rejected_not_found > 0,
            "no rejected writes"
        );
        assert!(
            total.deletes > 0 && total.revivals > 0,
            "no deletes or revivals"
        );
        assert!(total.rolled_back > 0 && total.stale_deliveries > 0);
    }
    Ok(())
}
