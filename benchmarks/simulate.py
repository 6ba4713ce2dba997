"""
Simulation speed: ``runflow simulate`` against the engine-only lifecycle benchmark.

    python benchmarks/simulate.py [--runs 100000] [--scenario default] [--json]

Times, on this machine and in this order:

1. the engine alone driving ``--runs`` full lifecycles (create -> start ->
   require_action -> submit_tool_outputs -> start -> complete), as
   ``benchmarks/lifecycle.py`` does;
2. ``runflow simulate --runs N --json`` as a real subprocess, end to end (interpreter
   start, imports, scenario, simulation, summary), and the simulation loop alone as
   the command reports it (its ``wall.seconds``).

Target (issue 4): the command within 4x the engine-only time for the same runs.

With ``--stores`` it also times the simulation on durable stores (the driver's own
clock, not process start-up): in-process (``workers 0``) and with 1, 2 and 4 worker
processes, on SQLite (a temporary file) and on PostgreSQL (``--postgres DSN`` or
``RUNFLOW_POSTGRES_DSN``; a fresh schema, dropped afterwards), at ``--window 1`` and
``--window 60``. Every summary must equal the in-memory one for the same window.

    python benchmarks/simulate.py --stores --store-runs 2000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import structlog

from runflow import Engine
from runflow.simulation import Simulation, load_scenario, simulate
from runflow.testing import FakeClock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lifecycle import runflow_lifecycle

TARGET = 4.0


def engine_only(runs: int) -> float:
    """Seconds the engine takes for ``runs`` full lifecycles (concrete logger)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    step = runflow_lifecycle(
        Engine(clock=FakeClock(), logger=structlog.get_logger("runflow").bind())
    )
    t0 = time.perf_counter()
    for _ in range(runs):
        step()
    return time.perf_counter() - t0


def command() -> list[str]:
    """The installed ``runflow`` script, or ``python -m runflow.cli``."""
    script = Path(sys.executable).with_name("runflow")
    if script.exists():
        return [str(script)]
    found = shutil.which("runflow")
    return [found] if found else [sys.executable, "-m", "runflow.cli"]


def simulate_cli(runs: int, scenario: str) -> tuple[float, dict[str, object]]:
    """Seconds ``runflow simulate`` takes end to end, and its JSON summary."""
    t0 = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own command
        [*command(), "simulate", "--runs", str(runs), "--scenario", scenario, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - t0, json.loads(done.stdout)


def deterministic(summary: object) -> str:
    doc = summary.to_dict()  # type: ignore[attr-defined]
    doc.pop("wall")
    return json.dumps(doc)


def store_figures(
    url: str, runs: int, scenario: str, workers: list[int], windows: list[int]
) -> list[dict[str, object]]:
    """runs/s and transitions/s on the store at ``url``, per window and worker count."""
    rows: list[dict[str, object]] = []
    for window in windows:
        expected = deterministic(simulate(load_scenario(scenario), runs=runs, window=window))
        for n in workers:
            with Simulation(
                load_scenario(scenario), runs=runs, store=url, workers=n, window=window
            ) as sim:
                summary = sim.run()
            same = deterministic(summary) == expected
            assert same, f"{url} workers={n} window={window}: the summary differs"
            rows.append(
                {
                    "store": url.split(":", 1)[0],
                    "window": window,
                    "workers": n,
                    "runs_per_s": round(summary.wall.runs_per_s),
                    "transitions_per_s": round(summary.wall.transitions_per_s),
                    "seconds": summary.wall.seconds,
                    "same_summary_as_memory": same,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def stores(args: argparse.Namespace) -> list[dict[str, object]]:
    workers = [int(w) for w in args.workers.split(",")]
    windows = [int(w) for w in args.windows.split(",")]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'sim.db'}"
        rows += store_figures(url, args.store_runs, args.scenario, workers, windows)
    dsn = args.postgres or os.environ.get("RUNFLOW_POSTGRES_DSN", "")
    if dsn:
        import psycopg  # noqa: PLC0415 - the postgres extra, only with a DSN

        schema = f"runflow_bench_{uuid.uuid4().hex[:8]}"
        url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
        try:
            rows += store_figures(url, args.store_runs, args.scenario, workers, windows)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stores", action="store_true", help="also time durable stores")
    parser.add_argument("--store-runs", type=int, default=2000)
    parser.add_argument("--workers", default="0,1,2,4")
    parser.add_argument("--windows", default="1,60")
    parser.add_argument("--postgres", default="", metavar="DSN")
    args = parser.parse_args()
    if args.stores:
        rows = stores(args)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(f"{'store':<11}{'window':>7}{'workers':>8}{'runs/s':>9}{'transitions/s':>15}")
            for r in rows:
                print(
                    f"{r['store']:<11}{r['window']:>7}{r['workers']:>8}"
                    f"{r['runs_per_s']:>9}{r['transitions_per_s']:>15}"
                )
        return 0

    engine_s = engine_only(args.runs)
    cli_s, summary = simulate_cli(args.runs, args.scenario)
    wall = summary["wall"]
    assert isinstance(wall, dict)
    loop_s = float(wall["seconds"])
    transitions = int(str(summary["transitions"]))
    result = {
        "runs": args.runs,
        "scenario": args.scenario,
        "engine_only_seconds": round(engine_s, 3),
        "engine_only_transitions_per_run": 6,
        "simulate_command_seconds": round(cli_s, 3),
        "simulate_loop_seconds": round(loop_s, 3),
        "simulate_transitions_per_run": round(transitions / args.runs, 2),
        "simulate_runs_per_s": round(args.runs / loop_s),
        "simulate_transitions_per_s": round(transitions / loop_s),
        "ratio_command_to_engine": round(cli_s / engine_s, 2),
        "ratio_loop_to_engine": round(loop_s / engine_s, 2),
        "target_ratio": TARGET,
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = "target met (command <= 4x engine)"
        width = max(len(verdict), *map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
        print(f"{verdict:<{width}}  {cli_s / engine_s <= TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
