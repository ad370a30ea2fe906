"""Resolvers and mutators written in Python, decided at an authority that
serves its clients as a relay on 127.0.0.1."""
import json
import threading

import meldb
import pytest
from conftest import plain, plain_row, text


class FirstBookingWins(meldb.ConflictResolver):
    def __init__(self):
        self.seen = []

    def resolve(self, conflict):
        self.seen.append(conflict)
        if conflict.local is not None and conflict.incoming is not None:
            holder = plain(conflict.local["booked_by"])
            return meldb.Decision.REJECT(reason=f"seat {plain(conflict.key[0])} is booked by {holder}")
        return meldb.Decision.ACCEPT()


@pytest.fixture
def authority(seats):
    database = meldb.Database.open_in_memory(seats)
    database.set_authority(True)
    yield database
    database.close()


def book(db, seat, who):
    db.write([meldb.WriteOp.INSERT(table="seat", values={"seat": text(seat), "booked_by": text(who)})])


def booked_by(db, seat):
    row = db.get("seat", [text(seat)])
    return None if row is None else plain(row["booked_by"])


def test_a_python_resolver_rejects_the_second_booking_at_the_authority(authority, seats):
    resolver = FirstBookingWins()
    authority.add_resolver("seat", "first booking wins", resolver)
    server = authority.serve("127.0.0.1:0")
    alice = meldb.Database.open_in_memory(seats)
    bob = meldb.Database.open_in_memory(seats)
    book(alice, "A1", "alice")
    book(bob, "A1", "bob")
    alice.sync_once(server.url())
    bob.sync_once(server.url())
    bob.sync_once(server.url())  # hears of the refusal

    assert booked_by(authority, "A1") == "alice"
    assert booked_by(bob, "A1") == "alice"
    refused = bob.rejections()
    assert len(refused) == 1
    assert refused[0].kind == "rejected"
    assert refused[0].reason == "seat A1 is booked by alice"
    assert json.loads(refused[0].rejected_json)["booked_by"] == "bob"
    conflict = [c for c in resolver.seen if c.incoming is not None and c.local is not None][0]
    assert conflict.mode == "authority" and conflict.concurrent
    alice.sync_once(server.url())
    assert alice.digest() == bob.digest() == authority.digest()
    server.stop()


class Raises(meldb.ConflictResolver):
    def resolve(self, conflict):
        raise ValueError("the rules service is down")


def test_a_resolver_that_raises_fails_the_apply_and_changes_nothing(authority, seats):
    book(authority, "A1", "alice")
    before = authority.digest()
    authority.add_resolver("seat", "broken", Raises(), every_change=True)
    server = authority.serve("127.0.0.1:0")
    bob = meldb.Database.open_in_memory(seats)
    book(bob, "A2", "bob")
    with pytest.raises(meldb.MeldbError.Sync):
        bob.sync_once(server.url())
    assert authority.digest() == before
    assert booked_by(authority, "A2") is None
    # With the resolver gone, the same change goes through.
    assert authority.remove_resolver("seat", "broken")
    bob.sync_once(server.url())
    assert booked_by(authority, "A2") == "bob"
    server.stop()


class CallsBack(meldb.ConflictResolver):
    def __init__(self, db):
        self.db = db
        self.error = None

    def resolve(self, conflict):
        try:
            self.db.get("seat", [text("A1")])
        except meldb.MeldbError.Reentrant as e:
            self.error = e
        return meldb.Decision.ACCEPT()


def test_a_resolver_calling_its_own_database_is_refused_not_deadlocked(authority, seats):
    resolver = CallsBack(authority)
    authority.add_resolver("seat", "calls back", resolver, every_change=True)
    server = authority.serve("127.0.0.1:0")
    bob = meldb.Database.open_in_memory(seats)
    book(bob, "A3", "bob")
    bob.sync_once(server.url())
    assert isinstance(resolver.error, meldb.MeldbError.Reentrant)
    assert "resolver" in str(resolver.error)
    assert booked_by(authority, "A3") == "bob"
    server.stop()


class Book(meldb.Mutator):
    """book({"seat", "who"}): refused when someone else holds the seat."""

    def __init__(self):
        self.runs = []
        self.lock = threading.Lock()

    def run(self, tx, args_json):
        args = json.loads(args_json)
        row = tx.get("seat", [text(args["seat"])])
        holder = None if row is None else plain(row["booked_by"])
        with self.lock:
            self.runs.append(holder)
        if holder is not None and holder != args["who"]:
            raise meldb.CallbackError.Failed(message=f"seat {args['seat']} is taken by {holder}")
        tx.write(meldb.WriteOp.UPSERT(table="seat", values={
            "seat": text(args["seat"]), "booked_by": text(args["who"])}))


def test_a_python_mutator_is_replayed_after_a_pull_and_refused_at_the_authority(authority, seats):
    authority.register_mutator("book", Book())
    server = authority.serve("127.0.0.1:0")
    alice = meldb.Database.open_in_memory(seats)
    bob = meldb.Database.open_in_memory(seats)
    bob_book = Book()
    alice.register_mutator("book", Book())
    bob.register_mutator("book", bob_book)

    alice.mutate("book", json.dumps({"seat": "B7", "who": "alice"}))
    bob.mutate("book", json.dumps({"seat": "B7", "who": "bob"}))
    # Bob sees his own booking at once, speculatively, pending.
    assert booked_by(bob, "B7") == "bob"
    assert [m.name for m in bob.pending_mutations()] == ["book"]
    assert bob_book.runs == [None]

    alice.sync_once(server.url())
    assert booked_by(authority, "B7") == "alice"
    summary = bob.sync_once(server.url())
    assert summary.mutations_pushed == 1
    # Alice's booking came under Bob's pending one, which was replayed on
    # top of it: the Python function ran again and saw her there.
    assert "alice" in bob_book.runs[1:]
    assert booked_by(bob, "B7") == "alice"
    assert bob.pending_mutations() == []
    failures = bob.mutation_failures()
    assert len(failures) == 1 and "taken by alice" in failures[0].error
    bob.sync_once(server.url())
    assert bob.digest() == authority.digest()
    server.stop()


def test_a_mutator_that_raises_writes_nothing_and_says_why(seats):
    db = meldb.Database.open_in_memory(seats)
    db.set_authority(True)
    db.register_mutator("book", Book())
    db.mutate("book", json.dumps({"seat": "C1", "who": "carol"}))
    with pytest.raises(meldb.MeldbError.Mutation) as failure:
        db.mutate("book", json.dumps({"seat": "C1", "who": "dave"}))
    assert "taken by carol" in str(failure.value)
    assert booked_by(db, "C1") == "carol"
    db.close()


class Reenters(meldb.Mutator):
    def __init__(self, db):
        self.db = db
        self.error = None
        self.late_tx = None

    def run(self, tx, args_json):
        try:
            self.db.digest()
        except meldb.MeldbError.Reentrant as e:
            self.error = e
        self.late_tx = tx
        tx.write(meldb.WriteOp.UPSERT(table="seat", values={"seat": text("D1"), "booked_by": text("x")}))


def test_a_mutator_calling_its_own_database_is_refused_and_its_handle_dies_with_it(seats):
    db = meldb.Database.open_in_memory(seats)
    mutator = Reenters(db)
    db.register_mutator("reenter", mutator)
    db.mutate("reenter", "null")
    assert isinstance(mutator.error, meldb.MeldbError.Reentrant)
    assert booked_by(db, "D1") == "x"
    # The handle kept past its mutation writes nothing.
    with pytest.raises(meldb.MeldbError.Closed):
        mutator.late_tx.write(meldb.WriteOp.DELETE(table="seat", key=[text("D1")]))
    assert booked_by(db, "D1") == "x"
    db.close()
