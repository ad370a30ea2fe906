//! Hostile sync batches: the input is decoded as a protocol message (raw,
//! and wrapped in a valid header and checksum, so the compact batch
//! decoder is reached); a batch of changes is applied to a store. A failed
//! apply must change nothing; a successful one must be idempotent. The
//! logic is `meldb::testing::check_apply_message_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = meldb::testing::check_apply_message_bytes(data) {
        panic!("{violation}");
    }
});
