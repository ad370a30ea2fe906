//! Local writes decoded from the input, run on a store and on the reference
//! model side by side; any disagreement in accept/reject or in the rows SQL
//! shows is a crash. The logic is `meldb::testing::check_ops_bytes`, which
//! `tests/fuzz_regressions.rs` replays on committed inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(disagreement) = meldb::testing::check_ops_bytes(data) {
        panic!("{disagreement}");
    }
});
