"""A Rust replica (the `meldb` command line) and a Python replica syncing
through a relay the Python side serves converge: equal digests."""
import subprocess

import meldb
from conftest import EVERYTHING, integer, plain_row, text


def run(meldb_bin, *args, env=None):
    done = subprocess.run([meldb_bin, *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"meldb {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_rust_replica_and_a_python_replica_converge(meldb_bin, tmp_path):
    schema_path = tmp_path / "everything.toml"
    schema_path.write_text(EVERYTHING)
    schema = meldb.DbSchema.from_file(str(schema_path))
    relay = meldb.Database.open(str(tmp_path / "relay.db"), schema)
    server = relay.serve("127.0.0.1:0")
    python_side = meldb.Database.open(str(tmp_path / "python.db"), schema)
    rust_db = str(tmp_path / "rust.db")
    common = ["--schema", str(schema_path), "--db", rust_db]

    run(meldb_bin, "init", *common)
    run(meldb_bin, "insert", *common, "item", "sku=R1", "name=from rust", "stock=4", 'tags=["rust"]')
    python_side.write([
        meldb.WriteOp.INSERT(table="item", values={
            "sku": text("P1"), "name": text("from python"), "stock": integer(7),
            "tags": meldb.DbValue.SET(members=["python"])}),
    ])
    python_side.sync_once(server.url())
    run(meldb_bin, "sync", *common, "--peer", server.url())
    python_side.sync_once(server.url())
    # Both edit the same row concurrently.
    run(meldb_bin, "increment", *common, "item", "--key", "P1", "stock", "-2")
    python_side.write([meldb.WriteOp.INCREMENT(table="item", key=[text("P1")], column="stock", by=10)])
    run(meldb_bin, "sync", *common, "--peer", server.url())
    python_side.sync_once(server.url())
    run(meldb_bin, "sync", *common, "--peer", server.url())

    rust_digest = run(meldb_bin, "digest", *common).strip()
    assert rust_digest == python_side.digest() == relay.digest()
    assert plain_row(python_side.get("item", [text("P1")]))["stock"] == 15
    assert plain_row(python_side.get("item", [text("R1")]))["tags"] == ["rust"]
    server.stop()
    python_side.close()
    relay.close()
