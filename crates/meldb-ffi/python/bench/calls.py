"""The bindings' per-call benchmark: N single-row writes and N point reads
through Python (the installed wheel), against the same through Rust in the
same run (examples/calls.rs: the library, and this crate's API called from
Rust), on in-memory databases with one schema. Reports each as µs per call
and Python's overhead per call over each Rust figure.

    python calls.py --rust-bin PATH [--n 10000] [--rounds 3]

The figures are the best of `rounds` (the least disturbed by the machine);
nothing here asserts a time: .ci/run runs it at a smoke size.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import meldb

SCHEMA = """
name = "bench"
version = 1

[[table]]
name = "item"
primary_key = ["sku"]

[[table.column]]
name = "sku"
type = "text"

[[table.column]]
name = "stock"
type = "integer"
"""


def python_round(n):
    db = meldb.Database.open_in_memory(meldb.DbSchema.from_toml(SCHEMA))
    Text, Integer, Insert = meldb.DbValue.TEXT, meldb.DbValue.INTEGER, meldb.WriteOp.INSERT
    start = time.perf_counter_ns()
    for i in range(n):
        db.write([Insert(table="item", values={"sku": Text(value=f"sku-{i}"), "stock": Integer(value=i)})])
    writes = (time.perf_counter_ns() - start) / n
    start = time.perf_counter_ns()
    for i in range(n):
        if db.get("item", [Text(value=f"sku-{i}")]) is None:
            sys.exit(f"row sku-{i} missing")
    reads = (time.perf_counter_ns() - start) / n
    # The same rows again (new keys), 100 per write call: what batching
    # saves of the boundary's cost per row.
    start = time.perf_counter_ns()
    for first in range(0, n, 100):
        db.write([Insert(table="item", values={"sku": Text(value=f"batch-{i}"), "stock": Integer(value=i)})
                  for i in range(first, min(first + 100, n))])
    batched = (time.perf_counter_ns() - start) / n
    db.close()
    # The JSON path: one string across the boundary per call.
    db = meldb.Database.open_in_memory(meldb.DbSchema.from_toml(SCHEMA))
    start = time.perf_counter_ns()
    for i in range(n):
        db.write_json(f'[{{"op": "insert", "table": "item", "values": {{"sku": "sku-{i}", "stock": {i}}}}}]')
    json_writes = (time.perf_counter_ns() - start) / n
    start = time.perf_counter_ns()
    for i in range(n):
        if db.get_json_by_key("item", f'"sku-{i}"') is None:
            sys.exit(f"row sku-{i} missing")
    json_reads = (time.perf_counter_ns() - start) / n
    db.close()
    return writes, reads, batched, json_writes, json_reads


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rust-bin", required=True, help="the built examples/calls binary")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        schema = os.path.join(tmp, "bench.toml")
        with open(schema, "w") as f:
            f.write(SCHEMA)
        rust = []
        py = []
        for _ in range(args.rounds):
            out = subprocess.run([args.rust_bin, schema, str(args.n)], check=True,
                                 capture_output=True, text=True).stdout
            rust.append(json.loads(out))
            py.append(python_round(args.n))
    best = lambda xs: min(xs) / 1000  # µs
    figures = {
        "write": (best([r["library_write_ns"] for r in rust]),
                  best([r["ffi_api_write_ns"] for r in rust]),
                  best([p[0] for p in py])),
        "read": (best([r["library_read_ns"] for r in rust]),
                 best([r["ffi_api_read_ns"] for r in rust]),
                 best([p[1] for p in py])),
    }
    json_figures = {
        "write": (best([r["library_write_ns"] for r in rust]),
                  best([r["ffi_json_write_ns"] for r in rust]),
                  best([p[3] for p in py])),
        "read": (best([r["library_read_ns"] for r in rust]),
                 best([r["ffi_json_read_ns"] for r in rust]),
                 best([p[4] for p in py])),
    }
    print(f"{args.n} single-row writes and {args.n} point reads, in-memory, best of {args.rounds} rounds (µs per call)")
    print(f"{'':6} {'Rust library':>13} {'Rust, FFI API':>14} {'Python':>8} {'Python − library':>17} {'Python − FFI API':>17}")
    for what, (lib, api, python) in figures.items():
        print(f"{what:6} {lib:13.2f} {api:14.2f} {python:8.2f} {python - lib:17.2f} {python - api:17.2f}")
    print("The same through JSON (write_json, get_json_by_key):")
    for what, (lib, api, python) in json_figures.items():
        print(f"{what:6} {lib:13.2f} {api:14.2f} {python:8.2f} {python - lib:17.2f} {python - api:17.2f}")
    print(f"Python, 100 rows per write call: {best([p[2] for p in py]):.2f} µs per row")


if __name__ == "__main__":
    main()
