"""Each kind of error, raised as its own MeldbError subclass with a
message that says what went wrong."""
import math

import meldb
import pytest
from conftest import EVERYTHING, integer, text


def test_a_bad_schema_is_a_schema_error_naming_what(tmp_path):
    with pytest.raises(meldb.MeldbError.Schema) as failure:
        meldb.DbSchema.from_toml(EVERYTHING.replace('kind = "g_counter"', 'kind = "gcounter"'))
    assert "gcounter" in str(failure.value)
    with pytest.raises(meldb.MeldbError.Schema) as missing:
        meldb.DbSchema.from_file(str(tmp_path / "absent.toml"))
    assert "absent.toml" in str(missing.value)


def test_a_file_that_is_not_a_database_is_an_open_error(tmp_path, everything):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not SQLite, " * 100)
    with pytest.raises(meldb.MeldbError) as failure:
        meldb.Database.open(str(path), everything)
    assert isinstance(failure.value, (meldb.MeldbError.Open, meldb.MeldbError.Key))
    assert "notes.txt" in str(failure.value)


def test_a_key_without_encryption_is_a_key_error(tmp_path, everything):
    # This wheel is built without SQLCipher (the `encryption` feature).
    with pytest.raises(meldb.MeldbError.Key):
        meldb.Database.open(str(tmp_path / "secret.db"), everything,
                            meldb.DatabaseOptions(encryption_key="hunter2"))


def test_a_write_that_breaks_a_rule_is_a_write_error(db):
    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("A")})])
    with pytest.raises(meldb.MeldbError.Write) as duplicate:
        db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("A")})])
    assert "item" in str(duplicate.value)
    with pytest.raises(meldb.MeldbError.Write):
        db.write([meldb.WriteOp.INCREMENT(table="item", key=[text("A")], column="sold", by=-1)])
    with pytest.raises(meldb.MeldbError.Write):
        db.write([meldb.WriteOp.INSERT(table="nope", values={"sku": text("A")})])


def test_a_bad_query_is_a_query_error(db):
    with pytest.raises(meldb.MeldbError.Query) as syntax:
        db.query("SELEC nothing", [])
    assert "SELEC" in str(syntax.value)
    with pytest.raises(meldb.MeldbError.Query) as writes:
        db.query("CREATE TABLE scratch (x)", [])
    assert "does not only read" in str(writes.value)


def test_bad_arguments_are_invalid_argument_errors(db):
    with pytest.raises(meldb.MeldbError.InvalidArgument):
        db.write([meldb.WriteOp.INSERT(table="item", values={
            "sku": text("N"), "price": meldb.DbValue.REAL(value=math.nan)})])
    with pytest.raises(meldb.MeldbError.InvalidArgument):
        db.sync_once("gopher://example")
    with pytest.raises(meldb.MeldbError.InvalidArgument):
        db.mutate("anything", "{not json")


def test_an_unreachable_relay_is_a_sync_error(db):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(meldb.MeldbError.Sync):
        db.sync_once(f"tcp://127.0.0.1:{port}")


def test_an_unknown_mutator_is_a_mutation_error(db):
    with pytest.raises(meldb.MeldbError.Mutation) as failure:
        db.mutate("not_registered", "{}")
    assert "not_registered" in str(failure.value)


def test_a_closed_database_refuses_every_call(everything):
    database = meldb.Database.open_in_memory(everything)
    database.close()
    database.close()  # twice is fine
    for call in (lambda: database.get("item", [text("A")]),
                 lambda: database.write([]),
                 lambda: database.query("SELECT 1", []),
                 lambda: database.digest(),
                 lambda: database.begin()):
        with pytest.raises(meldb.MeldbError.Closed):
            call()


def test_errors_are_one_family():
    for kind in ("Schema", "Open", "Key", "Write", "Apply", "Mutation", "Query",
                 "Storage", "Sync", "InvalidArgument", "Reentrant", "Closed"):
        assert issubclass(getattr(meldb.MeldbError, kind), meldb.MeldbError)
