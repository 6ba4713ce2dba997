"""
Several processes on one SQLite file or one PostgreSQL schema (multiprocessing,
spawn): exclusive claims, one winner per race, and crash safety under SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import store_workers
from store_workers import T0, check_consistent, create, new_run

from runflow import RunStatus
from runflow.stores import Store

SQL = pytest.mark.parametrize("target", ["sqlite", "postgres"], indirect=True)
_SPAWN = multiprocessing.get_context("spawn")
_TIMEOUT = 60


def _collect(out: Any, count: int) -> list[Any]:
    return [out.get(timeout=_TIMEOUT) for _ in range(count)]


def _join(processes: list[Any]) -> None:
    for p in processes:
        p.join(_TIMEOUT)
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


@SQL
def test_processes_never_claim_a_run_twice(store: Store, target: store_workers.Target) -> None:
    """Four processes drain one queue of 300 runs: every run is claimed exactly once."""
    for i in range(300):
        create(store, new_run(f"run_{i:03d}"), since=T0 + i)
    start = _SPAWN.Event()
    out = _SPAWN.Queue()
    workers = [
        _SPAWN.Process(
            target=store_workers.claim_worker, args=(target, f"w{i}", start, out), name=f"w{i}"
        )
        for i in range(4)
    ]
    for p in workers:
        p.start()
    start.set()
    results = _collect(out, 4)
    _join(workers)
    claimed = [rid for _, ids in results for rid in ids]
    assert sorted(claimed) == [f"run_{i:03d}" for i in range(300)]
    by_worker = {w: set(ids) for w, ids in results}
    for run in store.runs():
        assert run.worker is not None
        assert run.record.id in by_worker[run.worker]
    assert check_consistent(store) == 300


@SQL
def test_processes_racing_on_one_run_one_wins(store: Store, target: store_workers.Target) -> None:
    """Four processes commit the same version of one run: exactly one succeeds."""
    create(store, new_run("run_a"))
    start = _SPAWN.Barrier(4)
    out = _SPAWN.Queue()
    racers = [
        _SPAWN.Process(
            target=store_workers.race_worker, args=(target, "run_a", f"w{i}", start, out)
        )
        for i in range(4)
    ]
    for p in racers:
        p.start()
    results = dict(_collect(out, 4))
    _join(racers)
    winners = [w for w, sequence in results.items() if sequence is not None]
    assert len(winners) == 1
    run = store.get("run_a")
    assert run is not None
    assert run.worker == winners[0]
    assert len(store.history("run_a")) == 2


@SQL
def test_sigkill_mid_transition_leaves_record_and_journal_agreeing(
    open_store: Callable[..., Store], target: store_workers.Target
) -> None:
    """
    Two processes drive runs as fast as they can and are killed with SIGKILL: every
    run's version still equals its journal length, and its last entry is its record.
    """
    store = open_store()
    for i in range(40):
        create(store, new_run(f"run_{i:02d}"))
    workers = []
    for i in range(2):
        ready = _SPAWN.Event()
        p = _SPAWN.Process(target=store_workers.churn_worker, args=(target, f"w{i}", ready))
        p.start()
        workers.append((p, ready))
    for _, ready in workers:
        assert ready.wait(_TIMEOUT)
    before = len(store.journal(0, 1_000_000))
    time.sleep(1.5)
    for p, _ in workers:
        os.kill(p.pid, signal.SIGKILL)
    for p, _ in workers:
        p.join(_TIMEOUT)
        assert p.exitcode == -signal.SIGKILL
    store.close()
    after = open_store()  # a fresh handle, as a restarted worker would open
    assert len(after.journal(0, 1_000_000)) > before + 50  # they really were working
    assert check_consistent(after) == 40
    # the store still takes writes after the crash
    old = after.get("run_00")
    assert old is not None
    new, change = store_workers.move(old, RunStatus.CANCELLED, at=T0 + 999_999)
    assert after.commit(old, new, change) is not None
    assert check_consistent(after) == 40
