"""Shared schemas and helpers for the meldb Python tests.

These tests run against the installed wheel (`import meldb`), never the
source tree: .ci/run builds the wheel, installs it into a fresh virtual
environment and runs pytest there.
"""
import os
import time

import meldb
import pytest

# Every column kind, and every lww type.
EVERYTHING = """
name = "everything"
version = 1

[[table]]
name = "item"
primary_key = ["sku"]

[[table.column]]
name = "sku"
type = "text"

[[table.column]]
name = "name"
type = "text"
nullable = false
default = ""

[[table.column]]
name = "price"
type = "real"

[[table.column]]
name = "photo"
type = "blob"

[[table.column]]
name = "active"
type = "integer"

[[table.column]]
name = "sold"
type = "integer"
kind = "g_counter"

[[table.column]]
name = "stock"
type = "integer"
kind = "pn_counter"

[[table.column]]
name = "tags"
type = "text"
kind = "or_set"
"""

# Seats decided by one authority (the replica that serves the others).
SEATS = """
name = "seats"
version = 1

[[table]]
name = "seat"
primary_key = ["seat"]
authority = true

[[table.column]]
name = "seat"
type = "text"

[[table.column]]
name = "booked_by"
type = "text"
"""


def text(value):
    return meldb.DbValue.TEXT(value=value)


def integer(value):
    return meldb.DbValue.INTEGER(value=value)


def plain(value):
    """A DbValue as a plain Python value, for comparisons."""
    if value.is_NULL():
        return None
    if value.is_SET():
        return sorted(value.members)
    return value.value


def plain_row(row):
    return None if row is None else {k: plain(v) for k, v in row.items()}


def wait_until(predicate, timeout=10.0, what="the condition"):
    """Polls `predicate` until it is true; fails the test after `timeout`
    seconds, naming `what` it waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    if predicate():  # a last look, for a test descheduled past its deadline
        return
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def everything():
    return meldb.DbSchema.from_toml(EVERYTHING)


@pytest.fixture
def seats():
    return meldb.DbSchema.from_toml(SEATS)


@pytest.fixture
def db(everything):
    database = meldb.Database.open_in_memory(everything)
    yield database
    database.close()


@pytest.fixture
def meldb_bin():
    """The `meldb` command line (MELDB_BIN), for the Rust side of a test."""
    path = os.environ.get("MELDB_BIN")
    if not path:
        pytest.skip("MELDB_BIN is not set (.ci/run sets it to the built `meldb`)")
    return path
