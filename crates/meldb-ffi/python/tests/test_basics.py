"""Open, write every column kind, read it back in each form, and the
transaction's all-or-nothing rule."""
import json

import meldb
import pytest
from conftest import integer, plain_row, text


def test_the_package_imports_as_meldb():
    assert meldb.Database is not None
    assert meldb.DbSchema.from_toml is not None


def test_a_schema_reports_its_name_and_tables(everything, seats):
    assert everything.name() == "everything"
    assert everything.tables() == ["item"]
    assert seats.tables() == ["seat"]


def test_every_column_kind_is_written_and_read_back(db):
    db.write([
        meldb.WriteOp.INSERT(table="item", values={
            "sku": text("A1"),
            "name": text("Apple"),
            "price": meldb.DbValue.REAL(value=1.25),
            "photo": meldb.DbValue.BLOB(value=b"\x00\xffpng"),
            "active": meldb.DbValue.BOOL(value=True),
            "stock": integer(10),
            "tags": meldb.DbValue.SET(members=["fruit", "red"]),
        }),
    ])
    db.write([
        meldb.WriteOp.INCREMENT(table="item", key=[text("A1")], column="sold", by=3),
        meldb.WriteOp.INCREMENT(table="item", key=[text("A1")], column="stock", by=-4),
        meldb.WriteOp.ADD_TO_SET(table="item", key=[text("A1")], column="tags", element="fresh"),
        meldb.WriteOp.REMOVE_FROM_SET(table="item", key=[text("A1")], column="tags", element="red"),
        meldb.WriteOp.SET(table="item", key=[text("A1")], column="name", value=text("Green apple")),
    ])
    row = db.get("item", [text("A1")])
    assert plain_row(row) == {
        "sku": "A1",
        "name": "Green apple",
        "price": 1.25,
        "photo": b"\x00\xffpng",
        "active": 1,
        "sold": 3,
        "stock": 6,
        "tags": ["fresh", "fruit"],
    }
    # The same row as JSON, for a typed layer of the app's own.
    as_json = json.loads(db.get_json("item", [text("A1")]))
    assert as_json["tags"] == ["fresh", "fruit"]
    assert as_json["stock"] == 6
    assert db.get("item", [text("nope")]) is None
    assert db.get_json("item", [text("nope")]) is None


def test_a_query_returns_rows_by_column_and_as_json(db):
    db.write([
        meldb.WriteOp.INSERT(table="item", values={"sku": text(f"S{i}"), "stock": integer(i)})
        for i in range(5)
    ])
    rows = db.query("SELECT sku, stock FROM item WHERE stock >= ? ORDER BY sku", [integer(3)])
    assert [plain_row(r) for r in rows] == [{"sku": "S3", "stock": 3}, {"sku": "S4", "stock": 4}]
    as_json = json.loads(db.query_json("SELECT count(*) AS n FROM item", []))
    assert as_json == [{"n": 5}]


def test_a_transaction_commits_everything_at_once(db):
    tx = db.begin()
    tx.insert("item", {"sku": text("T1")})
    tx.increment("item", [text("T1")], "stock", 5)
    tx.add_to_set("item", [text("T1")], "tags", "new")
    assert tx.len() == 3
    # Nothing is written before commit.
    assert db.get("item", [text("T1")]) is None
    tx.commit()
    assert plain_row(db.get("item", [text("T1")]))["stock"] == 5


def test_a_failing_operation_fails_the_commit_and_writes_nothing(db):
    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("X")})])
    tx = db.begin()
    tx.insert("item", {"sku": text("Y")})
    tx.insert("item", {"sku": text("X")})  # already there
    with pytest.raises(meldb.MeldbError.Write) as failure:
        tx.commit()
    assert "operation 2" in str(failure.value)
    assert db.get("item", [text("Y")]) is None


def test_a_rolled_back_or_dropped_transaction_writes_nothing(db):
    tx = db.begin()
    tx.insert("item", {"sku": text("R")})
    tx.rollback()
    with pytest.raises(meldb.MeldbError.Closed):
        tx.commit()
    dropped = db.begin()
    dropped.insert("item", {"sku": text("D")})
    del dropped
    assert db.query("SELECT * FROM item", []) == []


def test_a_transaction_left_open_is_rolled_back_when_its_database_closes(everything):
    database = meldb.Database.open_in_memory(everything)
    tx = database.begin()
    tx.insert("item", {"sku": text("open")})
    database.close()
    with pytest.raises(meldb.MeldbError.Closed):
        tx.commit()
    assert database.is_closed()


def test_a_file_database_keeps_its_rows_across_reopen(tmp_path, everything):
    path = str(tmp_path / "shop.db")
    first = meldb.Database.open(path, everything)
    site = first.site_id()
    first.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("K"), "stock": integer(2)})])
    digest = first.digest()
    first.close()
    again = meldb.Database.open(path, everything, meldb.DatabaseOptions(readers=2))
    assert again.site_id() == site
    assert again.digest() == digest
    assert plain_row(again.get("item", [text("K")]))["stock"] == 2
    again.close()


def test_upsert_update_and_delete(db):
    db.write([meldb.WriteOp.UPSERT(table="item", values={"sku": text("U"), "name": text("one")})])
    db.write([meldb.WriteOp.UPSERT(table="item", values={"sku": text("U"), "name": text("two")})])
    db.write([meldb.WriteOp.UPDATE(table="item", key=[text("U")], values={"price": meldb.DbValue.REAL(value=2.5)})])
    row = plain_row(db.get("item", [text("U")]))
    assert (row["name"], row["price"]) == ("two", 2.5)
    db.write([meldb.WriteOp.DELETE(table="item", key=[text("U")])])
    assert db.get("item", [text("U")]) is None


def test_json_writes_and_reads_take_every_column_kind_and_round_trip(db):
    db.write_json(json.dumps([
        {"op": "insert", "table": "item", "values": {
            "sku": "J1", "name": "Jam", "price": 3, "photo": [1, 2, 255],
            "active": True, "stock": 5, "tags": ["sweet"]}},
        {"op": "increment", "table": "item", "key": ["J1"], "column": "sold", "by": 2},
        {"op": "add_to_set", "table": "item", "key": "J1", "column": "tags", "element": "red"},
    ]))
    row = json.loads(db.get_json_by_key("item", '"J1"'))
    assert row == {"sku": "J1", "name": "Jam", "price": 3.0, "photo": [1, 2, 255], "active": 1,
                   "sold": 2, "stock": 5, "tags": ["red", "sweet"]}
    assert db.get_json_by_key("item", '["J1"]') == db.get_json("item", [text("J1")])
    # What a read returns can be written back as it is.
    row["sku"] = "J2"
    db.write_json(json.dumps({"op": "upsert", "table": "item", "values": {
        k: v for k, v in row.items() if k not in ("sold", "stock")}}))
    assert json.loads(db.get_json_by_key("item", '"J2"'))["photo"] == [1, 2, 255]
    assert db.get_json_by_key("item", '"nope"') is None


def test_a_json_write_of_the_wrong_shape_writes_nothing_and_says_where(db):
    with pytest.raises(meldb.MeldbError.InvalidArgument) as failure:
        db.write_json(json.dumps([
            {"op": "insert", "table": "item", "values": {"sku": "ok"}},
            {"op": "insert", "table": "item", "values": {"sku": "bad", "tags": "not a list"}},
        ]))
    assert "operation 2" in str(failure.value) and '"tags"' in str(failure.value)
    assert db.get_json_by_key("item", '"ok"') is None
    with pytest.raises(meldb.MeldbError.Write) as duplicate:
        db.write_json('[{"op": "insert", "table": "item", "values": {"sku": "d"}},'
                      ' {"op": "insert", "table": "item", "values": {"sku": "d"}}]')
    assert "operation 2" in str(duplicate.value)
    assert db.get_json_by_key("item", '"d"') is None
    with pytest.raises(meldb.MeldbError.InvalidArgument):
        db.get_json_by_key("item", "{")
