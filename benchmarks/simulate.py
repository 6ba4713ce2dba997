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
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import structlog

from runflow import Engine
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

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
