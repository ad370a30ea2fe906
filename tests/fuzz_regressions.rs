//! Fuzz inputs replayed as ordinary tests, through the same checks the
//! cargo-fuzz targets in `fuzz/` run (`meldb::testing::check_*_bytes`):
//! every file under `fuzz/regressions/<target>/` (inputs that once crashed
//! a target, kept so the bug stays fixed) and `fuzz/seeds/<target>/` (the
//! starting corpus), plus hand-made edge cases: empty input, truncated
//! frames, and real changesets with flipped bytes.
//!
//! `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`
//! rewrites `fuzz/seeds/` from `meldb::testing::seed_payloads`.

use meldb::codec;
use meldb::sync::Message;
use meldb::testing::{
    check_apply_bytes, check_apply_message_bytes, check_decode_bytes, check_message_bytes,
    check_ops_bytes, seed_messages, seed_payloads, seeded_store,
};
use std::fs;
use std::path::{Path, PathBuf};

type Check = fn(&[u8]) -> Result<(), String>;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs `check` on every committed input of `target`; returns how many.
fn replay(target: &str, check: Check) -> Result<usize, String> {
    let mut count = 0;
    for kind in ["regressions", "seeds"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files = entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("listing {}: {e}", dir.display()))?;
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            let data = fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            check(&data).map_err(|e| format!("{}: {e}", file.display()))?;
            count += 1;
        }
    }
    Ok(count)
}

fn run_all(name: &str, check: Check, inputs: &[Vec<u8>]) -> Result<(), String> {
    for (i, data) in inputs.iter().enumerate() {
        check(data).map_err(|e| format!("{name} input {i} ({} bytes): {e}", data.len()))?;
    }
    Ok(())
}

/// Frames of real changesets, whole, cut short and with flipped bytes.
fn damaged_frames() -> Result<Vec<Vec<u8>>, String> {
    let mut out = vec![Vec::new(), b"MLDB".to_vec(), vec![0; codec::HEADER_LEN]];
    for payload in seed_payloads()? {
        let frame = codec::frame(&payload);
        out.push(frame[..codec::HEADER_LEN - 1].to_vec());
        out.push(frame[..frame.len() - 1].to_vec());
        for at in (0..frame.len()).step_by(11) {
            let mut flipped = frame.clone();
            flipped[at] ^= 0x40;
            out.push(flipped);
        }
        out.push(frame);
    }
    Ok(out)
}

#[test]
fn ops_vs_model_inputs_hold() -> Result<(), String> {
    replay("ops_vs_model", check_ops_bytes)?;
    let hand: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![0xff; 64],
        // Control 2 then one op: insert item k0; delete it; insert it again
        // with tags ["a","b","c"]; increment its stock by 1.
        [
            2, 0, 0, 0, 0, 0, 0, //
            2, 13, 0, 0, 0, //
            2, 0, 0, 0, 0, 1, 4, 7, //
            2, 8, 0, 0, 0, 0, 1,
        ]
        .to_vec(),
        // A committed batch (control 0x00: insert k0, delete it) and a
        // rolled-back one (0x80: insert k1, increment it, delete it).
        [
            0x00, 0, 0, 0, 0, 0, 0, 13, 0, 0, 0, //
            0x80, 0, 0, 1, 0, 0, 0, 8, 0, 1, 0, 0, 1, 13, 0, 1, 0,
        ]
        .to_vec(),
        (0..=255).collect(),
    ];
    run_all("ops_vs_model", check_ops_bytes, &hand)
}

#[test]
fn apply_changeset_inputs_hold() -> Result<(), String> {
    replay("apply_changeset", check_apply_bytes)?;
    run_all("damaged frame", check_apply_bytes, &damaged_frames()?)?;

    // Seeds must reach the deep end: decode, apply, re-apply.
    let payloads = seed_payloads()?;
    if payloads.len() < 3 {
        return Err(format!("only {} seed payloads", payloads.len()));
    }
    for (i, payload) in payloads.iter().enumerate() {
        let changeset = codec::decode_changeset(&codec::frame(payload))
            .map_err(|e| format!("seed {i} does not decode: {e}"))?;
        let mut store = seeded_store()?;
        store
            .apply(&changeset)
            .map_err(|e| format!("seed {i} does not apply: {e}"))?;
    }
    run_all("seed payload", check_apply_bytes, &payloads)?;

    // Payloads with one flipped byte, framed by the check: decodable ones
    // reach apply with hostile content.
    let mut flipped = Vec::new();
    for payload in &payloads {
        for at in (0..payload.len()).step_by(5) {
            let mut p = payload.clone();
            p[at] = p[at].wrapping_add(1);
            flipped.push(p);
        }
    }
    run_all("flipped payload", check_apply_bytes, &flipped)
}

#[test]
fn decode_frame_inputs_hold() -> Result<(), String> {
    replay("decode_frame", check_decode_bytes)?;
    run_all("damaged frame", check_decode_bytes, &damaged_frames()?)?;
    let mut huge = codec::frame(&[]);
    huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    run_all("hostile header", check_decode_bytes, &[huge])
}

#[test]
fn decode_message_inputs_hold() -> Result<(), String> {
    let n = replay("decode_message", check_message_bytes)?;
    if n == 0 {
        return Err("no files under fuzz/regressions/decode_message".into());
    }
    // Real messages, whole, cut short and with flipped bytes, and payloads
    // of changeset seeds framed as messages.
    let mut inputs = Vec::new();
    for payload in seed_payloads()? {
        inputs.push(codec::frame_message(&payload));
        inputs.push(payload);
    }
    let caught = codec::encode_message(&Message::Caught(7));
    for cut in 0..caught.len() {
        inputs.push(caught[..cut].to_vec());
    }
    for at in 0..caught.len() {
        let mut bad = caught.clone();
        bad[at] ^= 0x5a;
        inputs.push(bad);
    }
    run_all("message", check_message_bytes, &inputs)
}

#[test]
fn apply_message_inputs_hold() -> Result<(), String> {
    let n = replay("apply_message", check_apply_message_bytes)?;
    if n == 0 {
        return Err("no files under fuzz/seeds/apply_message".into());
    }
    // Real batches, whole, cut short and with flipped bytes.
    let mut inputs = Vec::new();
    for message in seed_messages()? {
        for cut in (0..message.len()).step_by(7) {
            inputs.push(message[..cut].to_vec());
        }
        for at in (0..message.len()).step_by(3) {
            let mut bad = message.clone();
            bad[at] ^= 0x21;
            inputs.push(bad);
        }
        inputs.push(message);
    }
    run_all("apply_message", check_apply_message_bytes, &inputs)
}

#[test]
fn committed_seeds_are_replayed() -> Result<(), String> {
    let n = replay("apply_changeset", check_apply_bytes)?;
    if n == 0 {
        return Err("no files under fuzz/seeds/apply_changeset".into());
    }
    Ok(())
}

/// Rewrites the seed corpus; run by hand after the changeset format changes.
#[test]
#[ignore = "writes files under fuzz/seeds"]
fn write_seed_corpus() -> Result<(), String> {
    let payloads = seed_payloads()?;
    for (target, framed) in [("apply_changeset", false), ("decode_frame", true)] {
        let dir = fuzz_dir().join("seeds").join(target);
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for (i, payload) in payloads.iter().enumerate() {
            let data = if framed {
                codec::frame(payload)
            } else {
                payload.clone()
            };
            let file = dir.join(format!("seed-{i:02}"));
            fs::write(&file, data).map_err(|e| format!("writing {}: {e}", file.display()))?;
        }
    }
    let dir = fuzz_dir().join("seeds").join("apply_message");
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (i, message) in seed_messages()?.iter().enumerate() {
        let file = dir.join(format!("seed-{i:02}"));
        fs::write(&file, message).map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    Ok(())
}
