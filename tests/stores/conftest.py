"""
Fixtures of the store tests: one ``store`` fixture parametrized over MemoryStore,
SQLiteStore and PostgresStore, and the PostgreSQL connection they need.

PostgreSQL tests read ``RUNFLOW_POSTGRES_DSN``. Without it they skip, except in CI
(``CI`` set), where they fail: CI must run them. Every PostgreSQL test gets a fresh
schema of its own, dropped afterwards.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # store_workers, also for spawned children

import store_workers
from store_workers import postgres_dsn

from runflow.stores import Store
from tests.conftest import drop_schema

STORE_KINDS = ("memory", "sqlite", "postgres")


@pytest.fixture(name="pg_dsn")
def _pg_dsn() -> str:
    return postgres_dsn()


@pytest.fixture(name="pg_schema")
def _pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh, random PostgreSQL schema name, dropped after the test."""
    schema = f"runflow_test_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(pg_dsn, schema)


@pytest.fixture(name="target", params=STORE_KINDS)
def _target(request: pytest.FixtureRequest, tmp_path: Path) -> store_workers.Target:
    """Where the test's store lives, as a picklable description."""
    kind: str = request.param
    if kind == "sqlite":
        return ("sqlite", str(tmp_path / "runs.db"))
    if kind == "postgres":
        schema = request.getfixturevalue("pg_schema")
        return ("postgres", f"{request.getfixturevalue('pg_dsn')}|{schema}")
    return ("memory", "")


@pytest.fixture(name="open_store")
def _open_store(target: store_workers.Target) -> Iterator[Callable[..., Store]]:
    """``open_store(**options)``: a new handle on the test's store, closed afterwards."""
    opened: list[Store] = []

    def make(**options: Any) -> Store:
        if target[0] == "memory" and opened:  # a memory store has one handle only
            return opened[0]
        store = store_workers.open_target(target, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(name="store")
def _store(open_store: Callable[..., Store]) -> Store:
    """The store under test (memory, SQLite or PostgreSQL)."""
    return open_store()


@pytest.fixture(name="kind")
def _kind(target: store_workers.Target) -> str:
    return target[0]
