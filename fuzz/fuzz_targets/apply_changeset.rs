//! Hostile changesets: the input is decoded as a frame and, wrapped in a
//! valid header and checksum, as a payload, so the fuzzer reaches the
//! payload decoder and `Store::apply`. A failed apply must change nothing;
//! a successful one must be idempotent. The logic is
//! `meldb::testing::check_apply_bytes`, which `tests/fuzz_regressions.rs`
//! replays on committed inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = meldb::testing::check_apply_bytes(data) {
        panic!("{violation}");
    }
});
