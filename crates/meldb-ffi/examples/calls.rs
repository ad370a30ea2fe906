//! The Rust side of the bindings' per-call benchmark
//! (crates/meldb-ffi/python/bench/calls.py runs it): N single-row writes,
//! then N point reads of those rows, on an in-memory database with the
//! bench's schema, twice: through the library (`SharedStore`, what a Rust
//! app calls) and through this crate's FFI-shaped API called from Rust
//! (the same work the Python bindings do, minus the language boundary),
//! with typed values and with JSON (`write_json`, `get_json_by_key`).
//! Prints one JSON object of nanoseconds per call.
//!
//! `cargo run -p meldb-ffi --profile wheel --example calls -- SCHEMA N`

use meldb::sync::SharedStore;
use meldb::{Schema, StoreOptions, Value};
use meldb_ffi::{Database, DbSchema, DbValue, WriteOp};
use std::collections::HashMap;
use std::time::Instant;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn per_call(start: Instant, n: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / n as f64
}

fn library(schema: &Schema, n: u64) -> BenchResult<(f64, f64)> {
    let shared = SharedStore::new(StoreOptions::new().open_in_memory(schema)?);
    let start = Instant::now();
    for i in 0..n {
        let sku = format!("sku-{i}");
        shared.write(|tx| {
            tx.insert(
                "item",
                &[
                    ("sku", Value::from(sku.as_str())),
                    ("stock", Value::from(i as i64)),
                ],
            )
        })?;
    }
    let writes = per_call(start, n);
    let start = Instant::now();
    for i in 0..n {
        if shared.get("item", format!("sku-{i}").as_str())?.is_none() {
            return Err(format!("row sku-{i} missing").into());
        }
    }
    Ok((writes, per_call(start, n)))
}

fn ffi_api(text: &str, n: u64) -> BenchResult<(f64, f64)> {
    let db = Database::open_in_memory(DbSchema::from_toml(text.to_owned())?, None)?;
    let start = Instant::now();
    for i in 0..n {
        db.write(vec![WriteOp::Insert {
            table: "item".into(),
            values: HashMap::from([
                (
                    "sku".to_owned(),
                    DbValue::Text {
                        value: format!("sku-{i}"),
                    },
                ),
                ("stock".to_owned(), DbValue::Integer { value: i as i64 }),
            ]),
        }])?;
    }
    let writes = per_call(start, n);
    let start = Instant::now();
    for i in 0..n {
        let key = vec![DbValue::Text {
            value: format!("sku-{i}"),
        }];
        if db.get("item".into(), key)?.is_none() {
            return Err(format!("row sku-{i} missing").into());
        }
    }
    Ok((writes, per_call(start, n)))
}

fn ffi_json(text: &str, n: u64) -> BenchResult<(f64, f64)> {
    let db = Database::open_in_memory(DbSchema::from_toml(text.to_owned())?, None)?;
    let start = Instant::now();
    for i in 0..n {
        db.write_json(format!(
            r#"[{{"op": "insert", "table": "item", "values": {{"sku": "sku-{i}", "stock": {i}}}}}]"#
        ))?;
    }
    let writes = per_call(start, n);
    let start = Instant::now();
    for i in 0..n {
        if db
            .get_json_by_key("item".into(), format!(r#""sku-{i}""#))?
            .is_none()
        {
            return Err(format!("row sku-{i} missing").into());
        }
    }
    Ok((writes, per_call(start, n)))
}

fn main() -> BenchResult<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(n)) = (args.next(), args.next()) else {
        return Err("usage: calls SCHEMA.toml N".into());
    };
    let n: u64 = n.parse().map_err(|e| format!("N {n:?}: {e}"))?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let schema = Schema::from_toml_str(&text, &path)?;
    let (lib_w, lib_r) = library(&schema, n)?;
    let (ffi_w, ffi_r) = ffi_api(&text, n)?;
    let (json_w, json_r) = ffi_json(&text, n)?;
    println!(
        "{{\"n\": {n}, \"library_write_ns\": {lib_w:.0}, \"library_read_ns\": {lib_r:.0}, \
         \"ffi_api_write_ns\": {ffi_w:.0}, \"ffi_api_read_ns\": {ffi_r:.0}, \
         \"ffi_json_write_ns\": {json_w:.0}, \"ffi_json_read_ns\": {json_r:.0}}}"
    );
    Ok(())
}
