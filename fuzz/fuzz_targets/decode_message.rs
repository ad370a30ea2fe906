//! Sync protocol messages from arbitrary bytes: as a whole frame, and
//! wrapped in a valid header and checksum so the payload decoder is
//! reached. Decoding must return an error or a message, never panic, and a
//! decoded message must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meldb::codec::{decode_message, encode_message, frame_message, MAX_MESSAGE_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let _ = decode_message(data, MAX_MESSAGE_PAYLOAD);
    if let Ok(message) = decode_message(&frame_message(data), MAX_MESSAGE_PAYLOAD) {
        let again = decode_message(&encode_message(&message), MAX_MESSAGE_PAYLOAD);
        assert_eq!(again.ok(), Some(message));
    }
});
