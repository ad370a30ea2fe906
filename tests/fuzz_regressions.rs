//! Fuzz inputs replayed as ordinary tests, through the same checks the
//! cargo-fuzz targets in `fuzz/` run (`meldb::testing::check_*_bytes`):
//! every file under `fuzz/regressions/<target>/` (inputs that once crashed
//! a target, kept so the bug stays fixed) and `fuzz/seeds/<target>/` (the
//! starting corpus), plus hand-made edge cases: empty input, truncated
//! frames, and real changesets with flipped bytes.
//!
//! `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`
//! writes the seed corpus (`fuzz/seeds/<target>/fixture-*`) from the golden
//! fixtures in `tests/fixtures/`, and a test checks the committed seeds are
//! exactly those.

mod common;

use meldb::codec;
use meldb::sync::Message;
use meldb::testing::{
    check_apply_bytes, check_apply_message_bytes, check_compressed_bytes, check_decode_bytes,
    check_message_bytes, check_ops_bytes, check_stored_bytes, seed_messages, seed_payloads,
    seeded_store,
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

/// The fixture directories seeds come from, with the prefix their seeds'
/// names get: `v1/` (the first layouts) and `v4/` (changeset format 2,
/// protocol 3, database format 3: write metadata, notice kinds) and `v5/`
/// (protocol 4: a hello's codecs, a Want's form, bodies).
fn fixture_dirs() -> [(&'static str, PathBuf); 3] {
    let dir = |v: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(v)
    };
    [("", dir("v1")), ("v4-", dir("v4")), ("v5-", dir("v5"))]
}

/// Splits bytes holding frames back to back (changeset files).
fn frames_of(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = bytes.get(..codec::HEADER_LEN).ok_or("a truncated header")?;
        let len = codec::HEADER_LEN
            + u32::from_le_bytes([header[6], header[7], header[8], header[9]]) as usize;
        let frame = bytes.get(..len).ok_or("a truncated frame")?;
        out.push(frame.to_vec());
        bytes = &bytes[len..];
    }
    Ok(out)
}

/// Every blob a fixture database keeps in a meldb layout: packed row
/// metadata (`_meldb_state` of every base table) and undo images.
fn stored_blobs(db: &Path) -> Result<Vec<Vec<u8>>, String> {
    // A copy: even a read-only open of a WAL database leaves -wal and -shm
    // files beside it, and the fixture directory must hold only fixtures.
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let copy = dir.path().join("copy.db");
    fs::copy(db, &copy).map_err(|e| format!("copying {}: {e}", db.display()))?;
    let conn = rusqlite::Connection::open(&copy).map_err(|e| format!("{}: {e}", db.display()))?;
    let sql_err = |e: rusqlite::Error| format!("{}: {e}", db.display());
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%\\_\\_meldb' ESCAPE '\\' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql_err)?;
    let mut queries: Vec<String> = tables
        .drain(..)
        .map(|t| format!("SELECT _meldb_state FROM \"{t}\" ORDER BY _meldb_rid"))
        .collect();
    queries.push("SELECT row FROM meldb_undo WHERE row IS NOT NULL ORDER BY tbl, rid".into());
    let mut out = Vec::new();
    for sql in queries {
        let blobs: Vec<Vec<u8>> = conn
            .prepare(&sql)
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(sql_err)?;
        for blob in blobs {
            if !out.contains(&blob) {
                out.push(blob);
            }
        }
    }
    Ok(out)
}

/// One seed: the fuzz target, the file name, the bytes.
type Seed = (&'static str, String, Vec<u8>);

/// The seed corpus, derived from the golden fixtures: `(target, file name,
/// bytes)`. Real bytes of every format, so each target starts from inputs
/// that decode (and apply) and the fuzzer mutates from there.
fn fixture_seeds() -> Result<Vec<Seed>, String> {
    let mut out = Vec::new();
    for (prefix, dir) in fixture_dirs() {
        let earlier = out.len();
        for seed in fixture_seeds_of(prefix, &dir)? {
            // A layout v4 did not change gives an earlier directory's
            // bytes: seed them once.
            if !out[..earlier]
                .iter()
                .any(|(t, _, b): &Seed| *t == seed.0 && *b == seed.2)
            {
                out.push(seed);
            }
        }
    }
    Ok(out)
}

fn fixture_seeds_of(prefix: &str, dir: &Path) -> Result<Vec<Seed>, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    };
    let mut out = Vec::new();
    for file in ["changes-full", "changes-partial", "changes-frames"] {
        for (i, frame) in frames_of(&read(&format!("{file}.bin"))?)?
            .into_iter()
            .enumerate()
        {
            let name = format!("fixture-{prefix}{file}-{i:02}");
            out.push((
                "apply_changeset",
                name.clone(),
                frame[codec::HEADER_LEN..].to_vec(),
            ));
            out.push(("decode_frame", name, frame));
        }
    }
    for n in 1..=3 {
        let bytes = read(&format!("conversation-{n}.bin"))?;
        for (i, (_, frame)) in common::recorded_frames(&bytes)?.into_iter().enumerate() {
            let frame = frame.to_vec();
            let name = format!("fixture-{prefix}conversation-{n}-{i:02}");
            let message = codec::decode_message(&frame, codec::MAX_MESSAGE_PAYLOAD)
                .map_err(|e| format!("{name}: {e}"))?;
            if matches!(message, Message::Changes(_)) {
                out.push(("apply_message", name.clone(), frame.clone()));
            }
            out.push(("decode_message", name, frame));
        }
    }
    for db in ["booking", "inventory", "todo", "relay-before", "client"] {
        for (i, blob) in stored_blobs(&dir.join(format!("{db}.db")))?
            .into_iter()
            .enumerate()
        {
            out.push((
                "decode_stored",
                format!("fixture-{prefix}{db}-{i:02}"),
                blob,
            ));
        }
    }
    Ok(out)
}

#[test]
fn decode_stored_inputs_hold() -> Result<(), String> {
    let n = replay("decode_stored", check_stored_bytes)?;
    if n == 0 {
        return Err("no files under fuzz/seeds/decode_stored".into());
    }
    // Real blobs, cut short and with flipped bytes.
    let mut inputs = vec![Vec::new(), vec![0xff; 9], vec![253; 32]];
    for (target, _, blob) in fixture_seeds()? {
        if target != "decode_stored" {
            continue;
        }
        for cut in 0..blob.len() {
            inputs.push(blob[..cut].to_vec());
        }
        for at in 0..blob.len() {
            let mut bad = blob.clone();
            bad[at] ^= 0x81;
            inputs.push(bad);
        }
    }
    run_all("stored", check_stored_bytes, &inputs)
}

/// The committed seeds are exactly what the fixtures give, so a format
/// change that breaks the fixtures cannot leave a stale corpus behind.
#[test]
fn the_seed_corpus_is_derived_from_the_fixtures() -> Result<(), String> {
    let seeds = fixture_seeds()?;
    for target in [
        "apply_changeset",
        "decode_frame",
        "decode_message",
        "apply_message",
        "decode_stored",
    ] {
        if !seeds.iter().any(|(t, _, _)| *t == target) {
            return Err(format!("the fixtures give no seed for {target}"));
        }
    }
    // No stale fixture seed either: every committed `fixture-*` file is one
    // the fixtures give.
    for target in [
        "apply_changeset",
        "decode_frame",
        "decode_message",
        "apply_message",
        "decode_stored",
    ] {
        let dir = fuzz_dir().join("seeds").join(target);
        for entry in fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))? {
            let name = entry
                .map_err(|e| format!("listing {}: {e}", dir.display()))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.starts_with("fixture-")
                && !seeds.iter().any(|(t, n, _)| *t == target && *n == name)
            {
                return Err(format!("{}/{name} is not derived from the fixtures (remove it, or run write_seed_corpus)", dir.display()));
            }
        }
    }
    for (target, name, bytes) in &seeds {
        let path = fuzz_dir().join("seeds").join(target).join(name);
        let committed = fs::read(&path)
            .map_err(|e| format!("{}: {e} (run write_seed_corpus)", path.display()))?;
        if &committed != bytes {
            return Err(format!(
                "{} differs from the fixtures (run write_seed_corpus)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Writes the seed corpus from the golden fixtures (see `fixture_seeds`);
/// run after adding fixtures of a new format version.
#[test]
#[ignore = "writes files under fuzz/seeds"]
fn write_seed_corpus() -> Result<(), String> {
    for (target, name, bytes) in fixture_seeds()? {
        let dir = fuzz_dir().join("seeds").join(target);
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let file = dir.join(name);
        fs::write(&file, bytes).map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    Ok(())
}

/// Seeds of the `decode_compressed` target: the bodies of the fixtures'
/// batches in protocol 4, plain and compressed, and the inner bytes
/// themselves (which the target also compresses whole).
fn compressed_seeds() -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for (_, name, frame) in fixture_seeds()?
        .into_iter()
        .filter(|(target, _, _)| *target == "apply_message")
    {
        let Ok(Message::Changes(batch)) = codec::decode_message(&frame, codec::MAX_MESSAGE_PAYLOAD)
        else {
            continue;
        };
        let plain = codec::encode_batch_body(&batch.changes, false);
        out.push((
            format!("{name}-packed"),
            codec::encode_batch_body(&batch.changes, true),
        ));
        out.push((format!("{name}-inner"), plain[1..].to_vec()));
        out.push((format!("{name}-plain"), plain));
    }
    Ok(out)
}

#[test]
#[ignore = "writes files under fuzz/seeds"]
fn write_compressed_seeds() -> Result<(), String> {
    let dir = fuzz_dir().join("seeds").join("decode_compressed");
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (name, bytes) in compressed_seeds()? {
        let file = dir.join(name);
        fs::write(&file, bytes).map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    Ok(())
}

/// The seeds and the bombs: a body claiming 4 GiB, one claiming less than
/// it holds, one more, an unknown encoding, and a zstd frame cut short.
#[test]
fn decode_compressed_inputs_hold() -> Result<(), String> {
    let n = replay("decode_compressed", check_compressed_bytes)?;
    if n == 0 {
        return Err("no decode_compressed seeds: run write_compressed_seeds".into());
    }
    let mut hand: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![1],
        vec![2, 0],
        vec![1, 253, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0x28, 0xb5, 0x2f, 0xfd],
        vec![1, 252, 0, 0, 0, 1, 3, 1, 2, 3],
    ];
    for (_, body) in compressed_seeds()?
        .into_iter()
        .filter(|(n, _)| n.ends_with("-packed"))
    {
        if body.len() > 12 {
            hand.push(body[..body.len() - 5].to_vec());
        }
        let mut longer = body.clone();
        longer[1] = longer[1].wrapping_add(1);
        hand.push(longer);
        hand.push(body);
    }
    run_all("hand-made body", check_compressed_bytes, &hand)?;
    // The bombs the target checks are refused outright.
    for (claimed, plain) in [(4u64 << 30, vec![0u8; 16]), (10, vec![0u8; 100_000])] {
        let frame = codec::frame_compressed_batch(1, claimed, &plain);
        if codec::decode_message(&frame, 1 << 20).is_ok() {
            return Err(format!(
                "a body claiming {claimed} bytes of {} decoded",
                plain.len()
            ));
        }
    }
    Ok(())
}
