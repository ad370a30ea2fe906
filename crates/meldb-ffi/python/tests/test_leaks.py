"""Callback handles are released: a resolver or mutator replaced or
removed, and a database closed, let go of the Python objects they held."""
import gc
import weakref

import meldb
from conftest import wait_until


class Accepts(meldb.ConflictResolver):
    def resolve(self, conflict):
        return meldb.Decision.ACCEPT()


class DoesNothing(meldb.Mutator):
    def run(self, tx, args_json):
        pass


def released(refs):
    gc.collect()
    return all(r() is None for r in refs)


def test_replaced_and_removed_resolvers_are_released(seats):
    db = meldb.Database.open_in_memory(seats)
    refs = []
    for _ in range(300):
        resolver = Accepts()
        refs.append(weakref.ref(resolver))
        db.add_resolver("seat", "same name", resolver)
        del resolver
    # All but the registered one are gone already.
    gc.collect()
    assert sum(r() is not None for r in refs) == 1
    assert db.remove_resolver("seat", "same name")
    wait_until(lambda: released(refs), what="the removed resolver to be released")
    db.close()


def test_mutators_are_released_when_replaced_and_when_the_database_closes(seats):
    db = meldb.Database.open_in_memory(seats)
    refs = []
    for _ in range(300):
        mutator = DoesNothing()
        refs.append(weakref.ref(mutator))
        db.register_mutator("noop", mutator)
        del mutator
    db.mutate("noop", "null")
    gc.collect()
    assert sum(r() is not None for r in refs) == 1
    db.close()
    del db
    wait_until(lambda: released(refs), what="the last mutator to be released with its database")
