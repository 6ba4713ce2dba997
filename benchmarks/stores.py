"""
Durable stores: transitions per second and sweep cost, at full durability.

    python benchmarks/stores.py [--lifecycles 3000] [--threads 4,8] [--pg-runs 3000]
                                [--sweep 100000] [--dsn postgresql://...] [--skip-postgres]
                                [--json]

1. SQLite, one process (WAL, ``synchronous=FULL``): full lifecycles through the
   engine (create -> start -> require_action -> submit_tool_outputs -> start ->
   complete), counted in transitions per second (target >= 5,000): driven by one
   thread, then by 4 and 8 threads of the process sharing one engine and one store
   (``--threads``; their changes share group commits). Afterwards the journal is
   checked as for PostgreSQL below.
2. PostgreSQL (default ``synchronous_commit``), 1, 2 and 4 worker processes
   driving full lifecycles from ``engine.claim()``: each run is claimed, asks for a
   tool, gets its output (back to ``queued``), is claimed again and completes. Counted
   in transitions per second (target >= 2,000 at 4 workers); afterwards the journal
   is checked: every run has exactly its six entries, in order, and nothing else is
   there (no lost or doubled transition).
3. ``engine.sweep()`` of 100,000 overdue runs, on SQLite and on PostgreSQL: the
   time, and how much the process's peak memory (max RSS) grew during the sweep:
   the list of expired runs it returns, never all stored runs at once (the store
   hands them over in batches of ``sweep_batch``).

The DSN comes from ``--dsn`` or ``RUNFLOW_POSTGRES_DSN``; each PostgreSQL figure runs
in a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from runflow import Engine, FunctionCall, FunctionDefinition, FunctionTool, ToolCall, ToolOutput
from runflow.stores import Change, Store, StoredRun
from runflow.stores import _sql as sql
from runflow.testing import FakeClock

TOOLS = (FunctionTool(function=FunctionDefinition(name="get_weather")),)
CALLS = [ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments="{}"))]
OUTPUTS = [ToolOutput(tool_call_id="call_1", output="sunny")]
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
#: The statuses of a run's journal, in order, when it was driven from claim().
CLAIMED_PATH = (
    "queued",
    "in_progress",
    "requires_action",
    "queued",
    "in_progress",
    "completed",
)
#: The same statuses when the engine drives a run (create, start, require_action,
#: submit_tool_outputs, start, complete).
DRIVEN_PATH = CLAIMED_PATH
_SPAWN = multiprocessing.get_context("spawn")


def _sqlite(path: str) -> Store:
    try:
        from runflow.stores import SQLiteStore  # type: ignore[attr-defined]  # noqa: PLC0415
    except ImportError:  # until the package exports it
        from runflow.stores._sqlite import SQLiteStore  # noqa: PLC0415
    store: Store = SQLiteStore(path)
    return store


def _postgres(dsn: str, schema: str) -> Store:
    from runflow.stores.postgres import PostgresStore  # noqa: PLC0415

    return PostgresStore(dsn, schema=schema, retry_for=60.0)


def _drop(dsn: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --- 1. SQLite, one process --------------------------------------------------------------------


def lifecycles_of(engine: Engine, first: int, count: int) -> None:
    """Drive ``count`` runs through their whole lifecycle, one after the other."""
    for i in range(first, first + count):
        run = engine.create(thread_id=f"thread_{i}", assistant_id="asst_a", tools=TOOLS)
        engine.start(run)
        engine.require_action(run, tool_calls=CALLS)
        engine.submit_tool_outputs(run, tool_outputs=OUTPUTS)
        engine.start(run)
        engine.complete(run, usage=USAGE)


def bench_sqlite_lifecycles(lifecycles: int, threads: int = 1) -> dict[str, float]:
    """``lifecycles`` full lifecycles on one SQLite store, split over ``threads``."""
    per_thread = lifecycles // threads
    lifecycles = per_thread * threads
    with tempfile.TemporaryDirectory() as tmp:
        store = _sqlite(str(Path(tmp) / "runs.db"))
        engine = Engine(store=store)
        errors: list[BaseException] = []

        def drive(first: int) -> None:
            try:
                lifecycles_of(engine, first, per_thread)
            except BaseException as exc:  # reported below
                errors.append(exc)
                raise

        workers = [threading.Thread(target=drive, args=(t * per_thread,)) for t in range(threads)]
        began = time.perf_counter()
        if threads == 1:
            drive(0)
        else:
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        elapsed = time.perf_counter() - began
        if errors:
            raise errors[0]
        verdict = verify(store, lifecycles, path=DRIVEN_PATH)
        engine.close()
        store.close()
    transitions = 6 * lifecycles
    return {
        "threads": threads,
        "lifecycles": lifecycles,
        "seconds": elapsed,
        "transitions_per_s": transitions / elapsed,
        "lifecycles_per_s": lifecycles / elapsed,
        **verdict,
    }


# --- 2. PostgreSQL, N worker processes ---------------------------------------------------------


def pg_worker(dsn: str, schema: str, worker: str, start: Any, out: Any) -> None:
    """Drain the queue: claim, ask for a tool, answer it; complete runs claimed again."""
    store = _postgres(dsn, schema)
    engine = Engine(store=store)
    transitions = 0
    idle = 0
    start.wait()
    last = time.perf_counter()
    while idle < 5:
        claimed = engine.claim(worker=worker, limit=10, lease=60)
        if not claimed:
            idle += 1
            time.sleep(0.02)
            continue
        last = time.perf_counter()
        idle = 0
        transitions += len(claimed)
        for run in claimed:
            if _answered(store, run.id):
                engine.complete(run, usage=USAGE, worker=worker)
            else:
                engine.require_action(run, tool_calls=CALLS, worker=worker)
                engine.submit_tool_outputs(run, tool_outputs=OUTPUTS, worker=worker)
                transitions += 1
            transitions += 1
    ended = last
    engine.close()
    store.close()
    out.put((worker, transitions, ended))


def _answered(store: Store, run_id: str) -> bool:
    """True on a run's second claim (create, claim, require, submit, claim: version 5)."""
    stored = store.get(run_id)
    return stored is not None and stored.version > 2


def bench_postgres_workers(dsn: str, runs: int, workers: int) -> dict[str, float]:
    schema = f"runflow_bench_{uuid.uuid4().hex[:10]}"
    store = _postgres(dsn, schema)
    try:
        engine = Engine(store=store)
        for i in range(runs):
            engine.create(thread_id=f"thread_{i}", assistant_id="asst_a", tools=TOOLS)
        start = _SPAWN.Event()
        out = _SPAWN.Queue()
        procs = [
            _SPAWN.Process(target=pg_worker, args=(dsn, schema, f"w{i}", start, out))
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        time.sleep(2.0)  # let every worker import and connect before the clock starts
        began = time.perf_counter()
        start.set()
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(60)
        ended = max(r[2] for r in results)
        reported = sum(r[1] for r in results)
        elapsed = ended - began  # until the last worker's last successful claim
        verdict = verify(store, runs)
        engine.close()
    finally:
        store.close()
        _drop(dsn, schema)
    transitions = 5 * runs
    assert reported == transitions, (reported, transitions)
    return {
        "workers": workers,
        "runs": runs,
        "seconds": elapsed,
        "transitions_per_s": transitions / elapsed,
        **verdict,
    }


def verify(store: Store, runs: int, path: tuple[str, ...] = CLAIMED_PATH) -> dict[str, float]:
    """Check the whole journal: every run has exactly its six entries, in order."""
    entries = []
    after = 0
    while page := store.journal(after, 10_000):
        entries.extend(page)
        after = page[-1].sequence
    sequences = [e.sequence for e in entries]
    assert sequences == sorted(set(sequences)), "journal sequences repeat or go back"
    paths: dict[str, list[str]] = {}
    for e in entries:
        paths.setdefault(e.run_id, []).append(e.to_status.value)
    shapes = Counter(tuple(p) for p in paths.values())
    lost_or_doubled = sum(n for shape, n in shapes.items() if shape != path)
    assert len(paths) == runs, (len(paths), runs)
    assert lost_or_doubled == 0, shapes
    stored = store.runs()
    assert all(r.record.status == "completed" and r.version == 6 for r in stored)
    return {"journal_entries": len(entries), "lost_or_doubled": lost_or_doubled}


# --- 3. sweeping 100,000 overdue runs ------------------------------------------------------


def bulk_load(store: Store, count: int, now: int) -> None:
    """Write ``count`` queued runs, overdue at ``now``, straight into the tables."""
    from runflow import RunObject, RunStatus  # noqa: PLC0415

    def rows() -> Any:
        for i in range(count):
            record = RunObject(
                id=f"run_{i:024d}",
                created_at=now - 700,
                thread_id=f"thread_{i}",
                assistant_id="asst_a",
                status=RunStatus.QUEUED,
                expires_at=now - 100,
                tools=TOOLS,
            )
            run = StoredRun(record, since=record.created_at)
            change = Change(
                record.id, record.created_at, "create", None, record.status, None, {}, record
            )
            yield record, run, change

    if type(store).__name__ == "SQLiteStore":
        from runflow.stores import _sqlite  # noqa: PLC0415

        with store._write() as conn:  # type: ignore[attr-defined]  # noqa: SLF001
            for record, run, change in rows():
                text = sql.record_json(record)
                # observed 0, active 1: a local queued run
                head = (record.id, record.thread_id, record.assistant_id, record.created_at)
                cur = conn.execute(
                    _sqlite._INSERT_RUN,  # noqa: SLF001
                    (*head, 0, 1, *sql.run_params(run, text)),
                )
                entry = (cur.lastrowid, *sql.journal_params(change, text))
                conn.execute(_sqlite._INSERT_FIRST, entry)  # noqa: SLF001
        return
    from runflow.stores import postgres  # noqa: PLC0415

    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        with store._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:  # type: ignore[attr-defined]  # noqa: SLF001
            cur.executemany(store._s.insert_same, batch)  # type: ignore[attr-defined]  # noqa: SLF001
        batch.clear()

    for record, run, change in rows():
        text = sql.record_json(record)
        entry = sql.journal_params(change, text)
        tail = (record.thread_id, record.assistant_id, record.created_at, False)
        batch.append((*entry, record.id, *tail, *sql.run_params(run, text)[:-1]))
        if len(batch) == 5000:
            flush()
    if batch:
        flush()
    del postgres


def bench_sweep(store: Store, count: int) -> dict[str, float]:
    clock = FakeClock(1_700_000_000)
    began = time.perf_counter()
    bulk_load(store, count, clock.now())
    loaded = time.perf_counter() - began
    engine = Engine(store=store, clock=clock)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    began = time.perf_counter()
    expired = engine.sweep()
    elapsed = time.perf_counter() - began
    peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before)
    assert len(expired) == count, len(expired)
    assert engine.sweep() == []
    assert len(store.runs(status="expired", limit=count + 1)) == count
    engine.close()
    return {
        "runs": count,
        "load_seconds": loaded,
        "sweep_seconds": elapsed,
        "runs_per_s": count / elapsed,
        "peak_mib": peak / 2**20,
        "peak_bytes_per_run": peak / count,
    }


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lifecycles", type=int, default=3000)
    parser.add_argument(
        "--threads",
        type=lambda text: [int(t) for t in text.split(",") if t],
        default=[4, 8],
        help="thread counts of the SQLite figure after one thread (comma-separated)",
    )
    parser.add_argument("--pg-runs", type=int, default=3000)
    parser.add_argument("--sweep", type=int, default=100_000)
    parser.add_argument("--dsn", default=os.environ.get("RUNFLOW_POSTGRES_DSN", ""))
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}

    report["sqlite_lifecycles"] = []
    for threads in (1, *args.threads):
        sqlite = bench_sqlite_lifecycles(args.lifecycles, threads)
        report["sqlite_lifecycles"].append(sqlite)
        who = "1 thread" if threads == 1 else f"{threads} threads"
        print(
            f"SQLite, 1 process, {who}: {sqlite['transitions_per_s']:,.0f} transitions/s "
            f"({sqlite['lifecycles_per_s']:,.0f} full lifecycles/s), "
            f"{sqlite['journal_entries']:,} journal entries checked, "
            f"{sqlite['lost_or_doubled']} lost or doubled  target >= 5,000: "
            f"{'met' if sqlite['transitions_per_s'] >= 5000 else 'MISSED'}",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as tmp:
        store = _sqlite(str(Path(tmp) / "sweep.db"))
        sweep = bench_sweep(store, args.sweep)
        store.close()
    report["sqlite_sweep"] = sweep
    print(
        f"SQLite sweep of {sweep['runs']:,} overdue runs: {sweep['sweep_seconds']:.1f} s "
        f"({sweep['runs_per_s']:,.0f} runs/s), peak memory +{sweep['peak_mib']:.0f} MiB "
        f"({sweep['peak_bytes_per_run']:,.0f} B/run, mostly the returned list)",
        flush=True,
    )

    if args.skip_postgres or not args.dsn:
        print("PostgreSQL: skipped (no --dsn / RUNFLOW_POSTGRES_DSN)")
    else:
        report["postgres_workers"] = []
        for workers in (1, 2, 4):
            figures = bench_postgres_workers(args.dsn, args.pg_runs, workers)
            report["postgres_workers"].append(figures)
            target = ""
            if workers == 4:
                met = figures["transitions_per_s"] >= 2000
                target = f"  target >= 2,000: {'met' if met else 'MISSED'}"
            print(
                f"PostgreSQL, {workers} worker process(es): "
                f"{figures['transitions_per_s']:,.0f} transitions/s, "
                f"{figures['journal_entries']:,} journal entries checked, "
                f"{figures['lost_or_doubled']} lost or doubled{target}",
                flush=True,
            )
        schema = f"runflow_bench_{uuid.uuid4().hex[:10]}"
        store = _postgres(args.dsn, schema)
        try:
            sweep = bench_sweep(store, args.sweep)
        finally:
            store.close()
            _drop(args.dsn, schema)
        report["postgres_sweep"] = sweep
        print(
            f"PostgreSQL sweep of {sweep['runs']:,} overdue runs: "
            f"{sweep['sweep_seconds']:.1f} s ({sweep['runs_per_s']:,.0f} runs/s), "
            f"peak memory +{sweep['peak_mib']:.0f} MiB ({sweep['peak_bytes_per_run']:,.0f} B/run)",
            flush=True,
        )
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
