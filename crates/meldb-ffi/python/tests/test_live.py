"""Live queries: the listener hears the result and its diff after each
commit that changes it, may call back into the database, and is released
when its LiveQuery goes."""
import gc
import threading
import weakref

import meldb
from conftest import integer, plain_row, text, wait_until


class Recorder(meldb.QueryListener):
    def __init__(self):
        self.updates = []
        self.lock = threading.Lock()

    def on_update(self, update):
        with self.lock:
            self.updates.append(update)

    def count(self):
        with self.lock:
            return len(self.updates)


def test_a_live_query_hears_its_rows_and_each_diff(db):
    recorder = Recorder()
    live = db.watch("SELECT sku, stock FROM item WHERE stock > ? ORDER BY sku", [integer(0)], recorder)
    assert live.tables() == ["item"]
    wait_until(lambda: recorder.count() == 1, what="the first result")
    assert recorder.updates[0].rows == []

    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("A"), "stock": integer(1)})])
    wait_until(lambda: recorder.count() == 2, what="the insert's update")
    added = recorder.updates[1]
    assert added.columns == ["sku", "stock"]
    assert [plain_row(r) for r in added.added] == [{"sku": "A", "stock": 1}]

    db.write([meldb.WriteOp.INCREMENT(table="item", key=[text("A")], column="stock", by=2)])
    wait_until(lambda: recorder.count() == 3, what="the increment's update")
    changed = recorder.updates[2].changed
    assert len(changed) == 1
    assert (plain_row(changed[0].before)["stock"], plain_row(changed[0].after)["stock"]) == (1, 3)

    # A write the query does not see changes nothing, and calls nothing.
    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("Z"), "stock": integer(0)})])
    db.write([meldb.WriteOp.INCREMENT(table="item", key=[text("A")], column="stock", by=-3)])
    wait_until(lambda: recorder.count() == 4, what="the row leaving the result")
    assert [plain_row(r)["sku"] for r in recorder.updates[3].removed] == ["A"]

    live.cancel()
    db.write([meldb.WriteOp.INCREMENT(table="item", key=[text("A")], column="stock", by=5)])
    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("B"), "stock": integer(1)})])
    assert db.query("SELECT count(*) AS n FROM item", [])[0]["n"].value == 3
    assert recorder.count() == 4


class WritesBack(meldb.QueryListener):
    """Re-entrancy: a listener that reads and writes the same database."""

    def __init__(self, db):
        self.db = db
        self.seen = []

    def on_update(self, update):
        self.seen.append(len(update.rows))
        if len(update.rows) == 1:
            self.db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("echo")})])
            self.seen.append(len(self.db.query("SELECT * FROM item", [])))


def test_a_listener_may_write_to_its_own_database(db):
    listener = WritesBack(db)
    live = db.watch("SELECT sku FROM item ORDER BY sku", [], listener)
    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("first")})])
    wait_until(lambda: 2 in listener.seen, what="the listener's own write to show up")
    assert plain_row(db.get("item", [text("echo")])) is not None
    live.cancel()


class Raises(meldb.QueryListener):
    def on_update(self, update):
        if update.rows:
            raise meldb.CallbackError.Failed(message="the UI is gone")


def test_a_listener_that_raises_is_reported_and_the_write_stands(db):
    live = db.watch("SELECT sku FROM item", [], Raises())
    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("kept")})])
    wait_until(lambda: live.last_error() is not None, what="the listener's error")
    assert "the UI is gone" in live.last_error()
    assert db.get("item", [text("kept")]) is not None
    live.cancel()


class Counted(meldb.QueryListener):
    def on_update(self, update):
        pass


def test_many_live_queries_registered_and_dropped_leave_no_listener_behind(db):
    refs = []
    for _ in range(500):
        listener = Counted()
        refs.append(weakref.ref(listener))
        live = db.watch("SELECT sku FROM item", [], listener)
        del listener
        del live
    # The registry drops a cancelled watch's listener no later than the
    # next commit it would have been told of.
    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text("tick")})])
    gc.collect()
    wait_until(lambda: (gc.collect() or True) and all(r() is None for r in refs),
               what="every dropped listener to be released")
