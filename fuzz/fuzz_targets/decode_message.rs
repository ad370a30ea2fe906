//! Sync protocol messages from arbitrary bytes, as a whole frame and
//! wrapped in a valid header and checksum so the payload decoder is
//! reached. The logic is `meldb::testing::check_message_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = meldb::testing::check_message_bytes(data) {
        panic!("{violation}");
    }
});
