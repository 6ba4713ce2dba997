"""
What one transition costs, piece by piece, against the floor's whole transition.

    python benchmarks/components.py [--number 200000] [--rounds 5] [--json]

``benchmarks/lifecycle.py`` says how far the engine is from the hand-written floor;
this says where the distance comes from. Each piece of work an engine transition
does (``start`` on the default journaled ``MemoryStore``) is timed on its own, in a
loop, best of ``--rounds`` taken in turns, and reported in nanoseconds and as a
fraction of the floor's average operation (a sixth of its create -> ... -> complete
lifecycle): a piece at 1.0 alone costs as much as the floor's whole transition, so a
transition within 5x of the floor has a budget of 5.0 for all its pieces together. Everything
is timed with the cyclic garbage collector off (as ``timeit`` does), so the figures
are the pieces' own work.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from lifecycle import TOOLS, Floor

from runflow import Engine, RunStatus
from runflow._engine import _STRIPES
from runflow._machine import ASSISTANTS_LIFECYCLE, Step
from runflow._model import evolve_run
from runflow.stores import MemoryStore, StoredRun
from runflow.stores._base import Change
from runflow.testing import FakeClock

_tuple_new = tuple.__new__


def pieces() -> dict[str, Callable[[], Any]]:
    """Each piece of a ``start`` transition, as a call that does it once."""
    clock = FakeClock()
    engine = Engine(clock=clock)
    run = engine.create(thread_id="thread_a", assistant_id="asst_a", tools=TOOLS)
    run_id = run.id
    stored = engine.store.get(run_id)
    assert stored is not None
    locks = engine._locks  # noqa: SLF001 - the engine's own stripes
    event = ASSISTANTS_LIFECYCLE.events["start"]
    changes = {"status": RunStatus.IN_PROGRESS, "started_at": 1}
    started = evolve_run(run, changes)
    queued, in_progress = RunStatus.QUEUED, RunStatus.IN_PROGRESS

    def lock() -> None:
        stripe = locks[hash(run_id) % _STRIPES]
        stripe.acquire()
        stripe.release()

    def machine() -> None:
        event.fire(Step(queued, 1, {}))

    def stored_run() -> None:
        _tuple_new(StoredRun, (started, 2, None, False, 1, None, None))

    def change() -> None:
        _tuple_new(Change, (run_id, 1, "start", queued, in_progress, None, changes, started))

    # a store write: a run moved queued -> in_progress and back (journaled as a submit)
    store = MemoryStore()
    back = {"status": queued}
    there = (
        _tuple_new(StoredRun, (started, 2, None, False, 1, None, None)),
        Change(run_id, 1, "start", queued, in_progress, None, changes, started),
    )
    again = (
        _tuple_new(StoredRun, (run, 3, None, False, 1, None, None)),
        Change(run_id, 1, "submit_tool_outputs", in_progress, queued, None, back, run),
    )
    state = [stored]
    store.insert(stored, Change(run_id, 0, "create", None, queued, None, {}, run))

    def commit() -> None:
        old = state[0]
        new, entry = there if old[0] is run else again
        store.commit(old, new, entry)  # the same two versions: the identity check passes
        state[0] = new

    def call() -> None:
        pass

    return {
        "a Python function call (for scale)": call,
        "run lock (stripe + acquire + release)": lock,
        "store read (MemoryStore.get)": lambda: engine.store.get(run_id),
        "clock read (FakeClock.now)": clock.now,
        "machine: Step + fire('start') + entry effects": machine,
        "new frozen record (evolve_run, 2 fields)": lambda: evolve_run(run, changes),
        "StoredRun named tuple": stored_run,
        "Change named tuple": change,
        "store write (MemoryStore.commit: compare-and-set, indexes, journal)": commit,
    }


def engine_start(clock: FakeClock, number: int) -> float:
    """Nanoseconds of ``engine.start`` on a queued run, in a fresh engine."""
    engine = Engine(clock=clock)
    ids = [
        engine.create(thread_id=f"thread_{i}", assistant_id="asst_a", tools=TOOLS).id
        for i in range(number)
    ]
    start = engine.start
    gc.disable()  # as timeit does for the others
    try:
        t0 = time.perf_counter()
        for run_id in ids:
            start(run_id)
        return (time.perf_counter() - t0) / number * 1e9
    finally:
        gc.enable()


def measure(number: int, rounds: int) -> dict[str, float]:
    """
    Best nanoseconds a call of each contender. They take turns round by round, so
    that a machine whose speed drifts shifts them alike.
    """
    clock = FakeClock()
    floor = Floor(clock).lifecycle
    contenders: dict[str, Callable[[], float]] = {
        "floor: one operation (a sixth of its lifecycle)": lambda: (
            timeit.timeit(floor, number=number // 6) / (number // 6) * 1e9 / 6
        ),
        "engine: one start transition, all of it": lambda: engine_start(clock, number // 10),
    }
    for name, func in pieces().items():
        contenders[name] = lambda func=func: timeit.timeit(func, number=number) / number * 1e9
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, run in contenders.items():
            best[name] = min(best[name], run())
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    measured = measure(args.number, args.rounds)
    floor_op = measured["floor: one operation (a sixth of its lifecycle)"]
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in measured.items()}, indent=2))
        return 0
    width = max(map(len, measured))
    print(f"{'piece':<{width}}  {'ns':>7}  {'x floor op':>10}")
    for name, ns in measured.items():
        print(f"{name:<{width}}  {ns:7.0f}  {ns / floor_op:10.2f}")
    print(f"\npython {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
