//! Generating steps: proptest strategies, and the same distribution from a
//! seeded RNG.

use super::ops::{OpKind, RawOp};
use super::{Step, VvPick};
use crate::common::Rng;
use proptest::prelude::*;

fn op_kind(n: u64) -> OpKind {
    match n % 20 {
        0..=4 => OpKind::Insert,
        5..=7 => OpKind::Upsert,
        8..=9 => OpKind::Update,
        10..=11 => OpKind::Set,
        12..=14 => OpKind::Increment,
        15..=16 => OpKind::AddToSet,
        17..=18 => OpKind::RemoveFromSet,
        _ => OpKind::Delete,
    }
}

/// Mostly small clock offsets; one in five beyond the drift bound.
fn skew_ms() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..1500, 1 => 300_500u32..360_500]
}

fn advance_ms(n: u64) -> u16 {
    [0, 0, 1, 2, 30][n as usize % 5]
}

/// A proptest strategy for one local write.
pub fn raw_op() -> impl Strategy<Value = RawOp> {
    (
        0u64..20,
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec((any::<u8>(), any::<u8>()), 0..3),
        -5i8..=5,
        any::<u8>(),
    )
        .prop_map(|(kind, table, key, cols, amount, elem)| RawOp {
            kind: op_kind(kind),
            table,
            key,
            cols,
            amount,
            elem,
        })
}

/// A proptest strategy for one step.
pub fn step() -> impl Strategy<Value = Step> {
    let vv = prop_oneof![
        6 => Just(VvPick::Current),
        2 => any::<u16>().prop_map(VvPick::Stale),
        1 => Just(VvPick::Empty),
    ];
    prop_oneof![
        10 => (any::<u8>(), prop::collection::vec(raw_op(), 1..4), prop::bool::weighted(0.9))
            .prop_map(|(replica, ops, commit)| Step::Write { replica, ops, commit }),
        5 => (any::<u8>(), any::<u8>(), vv, 1u8..5, any::<u64>())
            .prop_map(|(from, to, vv, max_rows, seed)| Step::Sync { from, to, vv, max_rows, seed }),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(to, pick)| Step::Redeliver { to, pick }),
        1 => any::<u8>().prop_map(|replica| Step::Reopen { replica }),
        4 => (0u64..5).prop_map(|n| Step::Advance { ms: advance_ms(n) }),
        1 => (any::<u8>(), skew_ms()).prop_map(|(replica, offset_ms)| Step::Skew { replica, offset_ms }),
    ]
}

/// The same distribution as [`step`], from a seeded RNG.
pub fn random_steps(rng: &mut Rng, count: usize) -> Vec<Step> {
    let byte = |rng: &mut Rng| rng.below(256) as u8;
    (0..count)
        .map(|_| match rng.below(22) {
            0..=9 => Step::Write {
                replica: byte(rng),
                ops: (0..1 + rng.below(3))
                    .map(|_| RawOp {
                        kind: op_kind(rng.below(20)),
                        table: byte(rng),
                        key: byte(rng),
                        cols: (0..rng.below(3)).map(|_| (byte(rng), byte(rng))).collect(),
                        amount: rng.below(11) as i8 - 5,
                        elem: byte(rng),
                    })
                    .collect(),
                commit: rng.chance(0.9),
            },
            10..=14 => Step::Sync {
                from: byte(rng),
                to: byte(rng),
                vv: match rng.below(9) {
                    0..=5 => VvPick::Current,
                    6..=7 => VvPick::Stale(rng.below(1 << 16) as u16),
                    _ => VvPick::Empty,
                },
                max_rows: 1 + rng.below(4) as u8,
                seed: rng.next_u64(),
            },
            15 => Step::Redeliver {
                to: byte(rng),
                pick: rng.below(1 << 16) as u16,
            },
            16..=19 => Step::Advance {
                ms: advance_ms(rng.below(5)),
            },
            21 => Step::Reopen { replica: byte(rng) },
            _ => Step::Skew {
                replica: byte(rng),
                offset_ms: if rng.chance(0.2) {
                    300_500 + rng.below(60_000) as u32
                } else {
                    rng.below(1500) as u32
                },
            },
        })
        .collect()
}
