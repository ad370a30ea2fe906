"""Two Python databases syncing through a relay on 127.0.0.1, once and
continuously, and calls from several Python threads at once."""
import threading

import meldb
from conftest import integer, plain_row, text, wait_until


def insert(db, sku, stock=0):
    db.write([meldb.WriteOp.INSERT(table="item", values={"sku": text(sku), "stock": integer(stock)})])


def test_two_databases_converge_through_a_relay(everything, tmp_path):
    relay = meldb.Database.open(str(tmp_path / "relay.db"), everything)
    server = relay.serve("127.0.0.1:0")
    assert server.url().startswith("tcp://127.0.0.1:")
    a = meldb.Database.open(str(tmp_path / "a.db"), everything)
    b = meldb.Database.open_in_memory(everything)
    insert(a, "A", 1)
    insert(b, "B", 2)
    # Concurrent edits of one row: both increments count, both tags stay.
    insert(a, "shared")
    a.sync_once(server.url())
    b.sync_once(server.url())
    a.write([meldb.WriteOp.INCREMENT(table="item", key=[text("shared")], column="stock", by=5),
             meldb.WriteOp.ADD_TO_SET(table="item", key=[text("shared")], column="tags", element="a")])
    b.write([meldb.WriteOp.INCREMENT(table="item", key=[text("shared")], column="stock", by=-2),
             meldb.WriteOp.ADD_TO_SET(table="item", key=[text("shared")], column="tags", element="b")])
    summary = a.sync_once(server.url())
    assert summary.sessions == 1 and summary.rows_sent >= 1
    b.sync_once(server.url())
    a.sync_once(server.url())
    assert a.digest() == b.digest() == relay.digest()
    shared = plain_row(a.get("item", [text("shared")]))
    assert (shared["stock"], shared["tags"]) == (3, ["a", "b"])
    server.stop()
    server.stop()  # a no-op the second time
    for db in (a, b, relay):
        db.close()


class Statuses(meldb.SyncListener):
    """Records each state, and calls into its database from the callback
    (re-entrancy: a sync listener runs with no lock held)."""

    def __init__(self, db):
        self.db = db
        self.seen = []  # (state, digest) pairs, appended whole
        self.states = []

    def on_status(self, status):
        self.seen.append((status.state, self.db.digest()))
        self.states.append(status.state)


def test_a_continuous_sync_carries_writes_both_ways_and_reports_status(everything):
    relay = meldb.Database.open_in_memory(everything)
    server = relay.serve("127.0.0.1:0")
    a = meldb.Database.open_in_memory(everything)
    b = meldb.Database.open_in_memory(everything)
    statuses = Statuses(a)
    sync_a = a.start_sync(server.url(), listener=statuses)
    sync_b = b.start_sync(server.url())
    insert(a, "from-a", 1)
    wait_until(lambda: b.get("item", [text("from-a")]) is not None, what="a's write at b")
    insert(b, "from-b", 2)
    wait_until(lambda: a.get("item", [text("from-b")]) is not None, what="b's write at a")
    wait_until(lambda: "idle" in statuses.states, what="a status of idle")
    assert all(len(digest) == 64 for _, digest in statuses.seen)
    summary = sync_a.stop()
    assert summary.rows_sent >= 1 and summary.rows_received >= 1
    assert sync_a.status().state == "stopped"
    sync_b.stop()
    assert a.digest() == b.digest()
    for db in (a, b, relay):
        db.close()


def test_closing_a_database_stops_its_syncs_and_servers(everything):
    relay = meldb.Database.open_in_memory(everything)
    server = relay.serve("127.0.0.1:0")
    a = meldb.Database.open_in_memory(everything)
    session = a.start_sync(server.url())
    insert(a, "before-close")
    wait_until(lambda: relay.get("item", [text("before-close")]) is not None,
               what="the sync to carry a write before the close")
    a.close()
    assert session.status().state == "stopped"
    # Stopped for real: what the sync carried is reported, and a second
    # stop says the same.
    assert session.stop() == session.stop()
    relay.close()
    b = meldb.Database.open_in_memory(everything)
    try:
        b.sync_once(server.url())
        raise AssertionError("the closed relay still answered")
    except meldb.MeldbError.Sync:
        pass
    b.close()


def test_several_python_threads_write_and_read_at_once(tmp_path, everything):
    db = meldb.Database.open(str(tmp_path / "threads.db"), everything)
    insert(db, "counter")
    errors = []

    def work(n):
        try:
            for i in range(50):
                insert(db, f"t{n}-{i}", i)
                db.write([meldb.WriteOp.INCREMENT(table="item", key=[text("counter")], column="sold", by=1)])
                assert db.get("item", [text(f"t{n}-{i}")]) is not None
                db.query("SELECT count(*) FROM item", [])
        except Exception as e:  # reported below, with the thread's number
            errors.append((n, e))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert plain_row(db.get("item", [text("counter")]))["sold"] == 400
    assert db.query("SELECT count(*) AS n FROM item", [])[0]["n"].value == 401
    db.close()


def test_a_dropped_session_stops_syncing(everything):
    import gc
    import time
    relay = meldb.Database.open_in_memory(everything)
    server = relay.serve("127.0.0.1:0")
    a = meldb.Database.open_in_memory(everything)
    session = a.start_sync(server.url())
    insert(a, "while-held")
    wait_until(lambda: relay.get("item", [text("while-held")]) is not None,
               what="the held session to carry a write")
    del session
    gc.collect()
    time.sleep(0.5)  # the stop runs in the background
    insert(a, "after-drop")
    time.sleep(1.5)
    assert relay.get("item", [text("after-drop")]) is None
    a.sync_once(server.url())  # nothing is lost: the next sync carries it
    assert relay.get("item", [text("after-drop")]) is not None
    for db in (a, relay):
        db.close()


class StopsFromInside(meldb.Mutator):
    """Stops its database's sync and closes the database from inside a
    mutation, which holds the lock that sync may be waiting for."""

    def __init__(self):
        self.db = None
        self.session = None
        self.error = None

    def run(self, tx, args_json):
        try:
            self.session.stop()
        except meldb.MeldbError.Reentrant as e:
            self.error = e
        tx.write(meldb.WriteOp.INSERT(table="item", values={"sku": text("last")}))
        self.db.close()


def test_stop_and_close_from_inside_a_mutator_do_not_wait_for_themselves(everything):
    relay = meldb.Database.open_in_memory(everything)
    server = relay.serve("127.0.0.1:0")
    a = meldb.Database.open_in_memory(everything)
    mutator = StopsFromInside()
    mutator.db = a
    mutator.session = a.start_sync(server.url())
    a.register_mutator("stop_inside", mutator)
    insert(a, "first")
    wait_until(lambda: relay.get("item", [text("first")]) is not None, what="the sync to run")
    a.mutate("stop_inside", "null")
    assert isinstance(mutator.error, meldb.MeldbError.Reentrant)
    assert a.is_closed()
    wait_until(lambda: mutator.session.status().state == "stopped", what="the sync to stop")
    mutator.db = mutator.session = None
    relay.close()
