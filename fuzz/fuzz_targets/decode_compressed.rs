//! Protocol-4 bodies from arbitrary bytes: as the body of a `Changes` and
//! of a `Push` (plain or a claimed length and a zstd frame), and
//! compressed into a batch body with a true and a short claim. The logic
//! is `meldb::testing::check_compressed_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = meldb::testing::check_compressed_bytes(data) {
        panic!("{violation}");
    }
});
