"""
Helpers of the store tests that child processes import too (multiprocessing, spawn):
building runs and transitions at store level, opening a test store from a picklable
description, and the worker loops of the concurrency, crash and restart tests.

The store tests put this folder on ``sys.path``; spawned children inherit it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from typing import Any

import attrs
import pytest

from runflow import RunObject, RunStatus
from runflow.stores import Change, MemoryStore, Store, StoredRun

#: The fake clock of the store tests.
T0 = 1_700_000_000

#: A store description children can rebuild: ("memory", "") | ("sqlite", path) |
#: ("postgres", "dsn|schema").
Target = tuple[str, str]


def new_run(
    run_id: str,
    *,
    thread_id: str | None = None,
    status: RunStatus = RunStatus.QUEUED,
    created_at: int = T0,
    expires_at: int | None = T0 + 600,
    **fields: Any,
) -> RunObject:
    """A run record (its own thread unless told)."""
    return RunObject(
        id=run_id,
        created_at=created_at,
        thread_id=thread_id or f"thread_{run_id}",
        assistant_id="asst_a",
        status=status,
        expires_at=expires_at if status.is_active else None,
        **fields,
    )


def create(store: Store, record: RunObject, **stored: Any) -> tuple[StoredRun, int]:
    """Insert ``record`` as a new stored run with its ``create`` entry."""
    run = StoredRun(record, since=stored.pop("since", record.created_at), **stored)
    change = Change(record.id, record.created_at, "create", None, record.status, None, {}, record)
    return run, store.insert(run, change)


def move(
    old: StoredRun,
    status: RunStatus,
    *,
    at: int | None = None,
    trigger: str | None = None,
    worker: str | None = None,
    lease_until: int | None = None,
    **fields: Any,
) -> tuple[StoredRun, Change]:
    """The next version of ``old`` in ``status`` (and ``fields``), and its change."""
    at = old.since + 1 if at is None else at
    changes: dict[str, Any] = {"status": status, **fields}
    if not status.is_active:
        changes["expires_at"] = None
    record = attrs.evolve(old.record, **changes)
    new = StoredRun(
        record,
        old.version + 1,
        old.accrued,
        old.observed,
        at if status is not old.record.status else old.since,
        worker,
        lease_until,
    )
    change = Change(
        record.id, at, trigger or status.value, old.record.status, status, worker, changes, record
    )
    return new, change


def claim_step(worker: str, now: int, lease: int = 30) -> Any:
    """A claim step: queued -> in_progress, leased to ``worker``."""

    def step(old: StoredRun) -> tuple[StoredRun, Change]:
        return move(
            old,
            RunStatus.IN_PROGRESS,
            at=now,
            trigger="claim",
            worker=worker,
            lease_until=now + lease,
            started_at=now,
        )

    return step


def open_target(target: Target, **options: Any) -> Store:
    """Open (a new handle on) the store ``target`` describes."""
    kind, where = target
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return sqlite_store(where, **options)
    from runflow.stores.postgres import PostgresStore  # noqa: PLC0415

    dsn, _, schema = where.partition("|")
    return PostgresStore(dsn, schema=schema, **options)


def sqlite_store(path: str, **options: Any) -> Store:
    """A SQLiteStore (from runflow.stores once the package exports it)."""
    try:
        from runflow.stores import SQLiteStore  # type: ignore[attr-defined]  # noqa: PLC0415
    except ImportError:
        from runflow.stores._sqlite import SQLiteStore  # noqa: PLC0415
    store: Store = SQLiteStore(path, **options)
    return store


def postgres_dsn() -> str:
    """The DSN of the test server; skip (outside CI) or fail (in CI) without one."""
    dsn = os.environ.get("RUNFLOW_POSTGRES_DSN", "")
    if dsn:
        return dsn
    if os.environ.get("CI"):
        pytest.fail("RUNFLOW_POSTGRES_DSN is not set: CI must run the PostgreSQL tests")
    pytest.skip("RUNFLOW_POSTGRES_DSN is not set")


# --- worker loops (run in child processes) -----------------------------------------------


def claim_worker(target: Target, worker: str, start: Any, out: Any) -> None:
    """Claim (3 at a time) until the queue stays empty; report every claimed id."""
    store = open_target(target)
    start.wait()
    claimed: list[str] = []
    idle = 0
    while idle < 3:
        got = store.claim(limit=3, now=T0 + 10, step=claim_step(worker, T0 + 10))
        claimed.extend(s.record.id for s, _ in got)
        idle = 0 if got else idle + 1
    store.close()
    out.put((worker, claimed))


def race_worker(target: Target, run_id: str, worker: str, start: Any, out: Any) -> None:
    """Read one run, wait for every racer, then try to start it: report won or lost."""
    store = open_target(target)
    old = store.get(run_id)
    assert old is not None
    new, change = move(old, RunStatus.IN_PROGRESS, worker=worker, started_at=old.since + 1)
    start.wait()
    sequence = store.commit(old, new, change)
    store.close()
    out.put((worker, sequence))


def churn_worker(target: Target, worker: str, ready: Any) -> None:
    """Drive runs round and round (queued -> in_progress -> queued ...) until killed."""
    store = open_target(target)
    ready.set()
    at = T0 + 1
    while True:
        for old in store.runs(limit=50):
            at += 1
            status = RunStatus.QUEUED
            if old.record.status is RunStatus.QUEUED:
                status = RunStatus.IN_PROGRESS
            new, change = move(old, status, at=at, worker=worker)
            store.commit(old, new, change)
        got = store.claim(limit=5, now=at, step=claim_step(worker, at))
        del got


def lifecycle_worker(target: Target, worker: str, until: float, out: Any) -> None:
    """
    Claim runs and complete them (claim, then complete) until none is left or
    ``until`` (a time.time()) passes; report what this worker did.
    """
    store = open_target(target, retry_for=45.0)
    done: list[str] = []
    idle = 0
    while time.time() < until and idle < 20:
        now = T0 + 10
        got = store.claim(limit=5, now=now, step=claim_step(worker, now))
        if not got:
            idle += 1
            time.sleep(0.05)
            continue
        idle = 0
        for run, _ in got:
            new, change = move(run, RunStatus.COMPLETED, at=now + 1, worker=worker)
            if store.commit(run, new, change) is not None:
                done.append(run.record.id)
    store.close()
    out.put((worker, done, os.getpid()))


def journal_counts(store: Store, run_ids: list[str]) -> dict[str, list[str]]:
    """Each run's journal as its list of triggers."""
    return {rid: [e.trigger for e in store.history(rid)] for rid in run_ids}


def check_consistent(store: Store) -> int:
    """
    Every run agrees with its journal: as many entries as its version (every write
    in these tests journals), the last entry's snapshot is the stored record, and
    each entry starts where the previous one ended. Returns the number of runs.
    """
    runs = store.runs()
    for run in runs:
        entries = store.history(run.record.id)
        assert len(entries) == run.version, (run.record.id, run.version, len(entries))
        assert entries[-1].run == run.record
        for before, after in itertools.pairwise(entries):
            assert after.from_status == before.to_status
            assert after.sequence > before.sequence
    return len(runs)


def wire(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of a journal entry's changes."""
    return dict(changes)
