//! Frame decoding on raw bytes: `unframe` and `decode_changeset` must
//! return errors, never panic, and agree with each other. The logic is
//! `meldb::testing::check_decode_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = meldb::testing::check_decode_bytes(data) {
        panic!("{violation}");
    }
});
