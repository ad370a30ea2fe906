//! What a database keeps, from arbitrary bytes: each input is decoded as
//! packed row metadata and as an undo image (no frame: these live inside
//! SQLite pages). The logic is `meldb::testing::check_stored_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = meldb::testing::check_stored_bytes(data) {
        panic!("{violation}");
    }
});
