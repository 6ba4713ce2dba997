"""
A PostgreSQL restart while worker processes drive runs costs retries, not data.

Slow (about ten seconds) and it restarts the server: it runs only when
``RUNFLOW_POSTGRES_RESTART`` holds the shell command that restarts it (``.ci/run``
sets it to ``pg_ctlcluster ... restart`` where that exists).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
from collections import Counter

import pytest
import store_workers
from store_workers import T0, create, new_run

from runflow import RunStatus

_SPAWN = multiprocessing.get_context("spawn")
RUNS = 3000
WORKERS = 4


@pytest.mark.slow
@pytest.mark.parametrize("target", ["postgres"], indirect=True)
def test_restart_while_workers_run(target: store_workers.Target) -> None:
    """Restart the server mid-run: no transition is lost or doubled, every run completes."""
    command = os.environ.get("RUNFLOW_POSTGRES_RESTART", "")
    if not command:
        pytest.skip("RUNFLOW_POSTGRES_RESTART is not set")
    store = store_workers.open_target(target, retry_for=45.0)
    for i in range(RUNS):
        create(store, new_run(f"run_{i:04d}"), since=T0 + i)
    out = _SPAWN.Queue()
    until = time.time() + 50
    workers = [
        _SPAWN.Process(target=store_workers.lifecycle_worker, args=(target, f"w{i}", until, out))
        for i in range(WORKERS)
    ]
    for p in workers:
        p.start()
    deadline = time.monotonic() + 30
    while len(store.journal(0, RUNS + 500)) < RUNS + 300 and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the workers are well under way
    progress = len(store.journal(0, 1_000_000))
    began = time.monotonic()
    subprocess.run(command, shell=True, check=True, timeout=60)  # noqa: S602 - the CI's own command
    restart = time.monotonic() - began
    results = [out.get(timeout=60) for _ in workers]
    for p in workers:
        p.join(30)
        assert p.exitcode == 0
    done = [rid for _, ids, _ in results for rid in ids]
    assert progress < 3 * RUNS, "the workers finished before the restart"
    assert sorted(done) == [f"run_{i:04d}" for i in range(RUNS)], "lost or doubled completions"
    runs = store.runs()
    assert Counter(r.record.status for r in runs) == {RunStatus.COMPLETED: RUNS}
    triggers = Counter(tuple(e.trigger for e in store.history(r.record.id)) for r in runs)
    assert triggers == {("create", "claim", "completed"): RUNS}
    assert all(r.version == 3 for r in runs)
    journal = store.journal(0, 10 * RUNS)
    assert len(journal) == 3 * RUNS
    print(f"restart took {restart:.1f} s with {progress} of {3 * RUNS} transitions done")  # noqa: T201
    store.close()
