"""
SQLiteStore's group commit: the changes that threads of one store write at the same
time share one transaction and one sync, and each keeps its own outcome.

The tests hold the store's write turn (a ``_write()`` transaction) while threads queue
their changes, so what gets grouped is decided, not timed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_workers import check_consistent, create, move, new_run

from runflow import RunStatus, StoreError, ThreadBusyError
from runflow.stores import StoredRun
from runflow.stores._sqlite import SQLiteStore

S = RunStatus
_TIMEOUT = 10.0


@pytest.fixture(name="store")
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStore]:
    """A SQLiteStore whose connections count the transactions they commit."""
    connect = SQLiteStore._connect

    def counting(self: SQLiteStore) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(lambda sql: COMMITS.append(sql) if sql == "COMMIT" else None)
        return conn

    monkeypatch.setattr(SQLiteStore, "_connect", counting)
    store = SQLiteStore(tmp_path / "runs.db")
    COMMITS.clear()
    yield store
    store.close()


COMMITS: list[str] = []


class _Writers:
    """Threads that each make one write, queued in order behind a held write turn."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.results: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def add(self, name: str, write: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                self.results[name] = write()
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                self.results[name] = exc

        thread = threading.Thread(target=run, name=name)
        self.threads.append(thread)
        thread.start()
        self._wait_queued(len(self.threads))

    def _wait_queued(self, count: int) -> None:
        deadline = time.monotonic() + _TIMEOUT
        while len(self.store._queue) < count:
            assert time.monotonic() < deadline, "the writes never queued"
            time.sleep(0.001)

    def join(self) -> dict[str, Any]:
        for thread in self.threads:
            thread.join(_TIMEOUT)
            assert not thread.is_alive()
        return self.results


def _version_seen_by_a_new_connection(store: SQLiteStore, run_id: str) -> int:
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        row = conn.execute("SELECT version FROM runflow_runs WHERE id = ?", (run_id,)).fetchone()
    return int(row[0])


def test_changes_waiting_together_share_one_commit(store: SQLiteStore) -> None:
    """Six threads' changes queued behind a writer are committed in one transaction."""
    runs = [create(store, new_run(f"run_{i}"))[0] for i in range(6)]
    seen: dict[str, int] = {}

    def commit(old: StoredRun) -> int | None:
        new, change = move(old, S.IN_PROGRESS, worker="w")
        sequence = store.commit(old, new, change)
        # returned: the change is committed, so every other connection sees it
        seen[old.record.id] = _version_seen_by_a_new_connection(store, old.record.id)
        return sequence

    writers = _Writers(store)
    COMMITS.clear()
    with store._write():  # hold the write turn while they queue
        for run in runs:
            writers.add(run.record.id, lambda run=run: commit(run))
    results = writers.join()
    assert len(COMMITS) == 2  # the held transaction, then the six changes at once
    sequences = [results[r.record.id] for r in runs]
    assert all(isinstance(s, int) for s in sequences)
    assert len(set(sequences)) == 6
    assert seen == {r.record.id: 2 for r in runs}
    assert check_consistent(store) == 6


def test_a_refused_change_leaves_the_others_of_its_commit_alone(store: SQLiteStore) -> None:
    """
    In one group commit: a compare-and-set that loses, a run refused on a busy
    thread and a duplicate id fail alone, writing nothing; the other changes stand.
    """
    run_a, _ = create(store, new_run("run_a"))
    run_d, _ = create(store, new_run("run_d"))
    create(store, new_run("run_busy", thread_id="thread_t"))
    journal_before = len(store.journal(0, 1000))

    def commit(old: StoredRun, worker: str) -> int | None:
        new, change = move(old, S.IN_PROGRESS, worker=worker)
        return store.commit(old, new, change)

    writers = _Writers(store)
    COMMITS.clear()
    with store._write():
        writers.add("first", lambda: commit(run_a, "w1"))
        writers.add("stale", lambda: commit(run_a, "w2"))  # same version: loses
        writers.add("busy", lambda: create(store, new_run("run_b", thread_id="thread_t")))
        writers.add("taken", lambda: create(store, new_run("run_d", thread_id="thread_x")))
        writers.add("other", lambda: commit(run_d, "w3"))
    results = writers.join()
    assert len(COMMITS) == 2
    assert isinstance(results["first"], int)
    assert results["stale"] is None
    assert isinstance(results["busy"], ThreadBusyError)
    assert str(results["busy"]) == "Thread thread_t already has an active run run_busy."
    assert isinstance(results["taken"], ValueError)
    assert isinstance(results["other"], int)
    assert results["other"] == results["first"] + 1  # the refused ones left no sequence
    assert store.get("run_a").worker == "w1"  # type: ignore[union-attr]
    assert store.get("run_d").worker == "w3"  # type: ignore[union-attr]
    assert store.get("run_b") is None
    assert len(store.journal(0, 1000)) == journal_before + 2
    assert check_consistent(store) == 3


def test_a_write_inside_a_write_of_the_same_thread_is_refused(store: SQLiteStore) -> None:
    """A claim step that writes to the store raises instead of waiting for itself."""
    run, _ = create(store, new_run("run_a"))
    other, _ = create(store, new_run("run_b"))

    def step(old: StoredRun) -> Any:
        new, change = move(other, S.IN_PROGRESS)
        store.commit(other, new, change)
        return move(old, S.IN_PROGRESS)

    with pytest.raises(StoreError, match="a write inside a write"):
        store.claim(limit=1, now=0, step=step)
    assert store.get("run_a") == run
    assert store.get("run_b") == other


def test_many_threads_many_runs_lose_nothing(store: SQLiteStore) -> None:
    """Eight threads drive their own runs through five changes each, unsynchronized."""

    def drive(t: int) -> None:
        for i in range(5):
            run, _ = create(store, new_run(f"run_{t}_{i}"))
            for status in (S.IN_PROGRESS, S.REQUIRES_ACTION, S.QUEUED, S.IN_PROGRESS):
                new, change = move(run, status)
                assert store.commit(run, new, change) is not None
                run = new

    threads = [threading.Thread(target=drive, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(_TIMEOUT)
    assert check_consistent(store) == 40
    entries = store.journal(0, 10_000)
    assert [e.sequence for e in entries] == list(range(1, 201))


def test_an_interrupted_waiter_leaves_the_queue_and_the_turn(store: SQLiteStore) -> None:
    """A write interrupted (SIGINT) while it waits is never written, and others go on."""
    run, _ = create(store, new_run("run_a"))
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store._write():
            holding.set()
            release.wait(_TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(_TIMEOUT)
    new, change = move(run, S.IN_PROGRESS)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store.commit(run, new, change)  # waits behind the holder
    finally:
        release.set()
        holder.join(_TIMEOUT)
        timer.cancel()
    assert store._queue == []
    assert store.get("run_a") == run  # never written
    assert store.commit(run, new, change) is not None  # the turn was not lost
    assert check_consistent(store) == 1
