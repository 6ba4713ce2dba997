"""
A custom scenario, simulated from Python: slow tools, short deadlines, no sweeps.

    python examples/simulate_custom.py

Writes a scenario file, loads it (keys left out take the default scenario's values),
watches the engine's events while 2,000 runs go through it on virtual time, and prints
the summary.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from runflow import RunEvent
from runflow.simulation import Simulation, load_scenario, render_text

SCENARIO = """
name = "slow-tools"
description = "Slow tools against 3-minute deadlines"

[runs]
expires_after = 180

[tools]
call_probability = 0.7
latency = { dist = "lognormal", median = 30, sigma = 1.0 }

[sweep]
interval = 0   # no sweeps: overdue runs expire on their next call
"""

with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "slow-tools.toml"
    path.write_text(SCENARIO, encoding="utf-8")
    scenario = load_scenario(path)

sim = Simulation(scenario, runs=2_000, seed=42)
expired_at: Counter[int] = Counter()


def watch(event: RunEvent) -> None:
    """Count expiries per virtual minute."""
    if event.event == "thread.run.expired":
        expired_at[int(sim.now // 60)] += 1


sim.engine.subscribe(watch)
summary = sim.run()
print(render_text(summary))
print("expired runs per virtual minute:", dict(sorted(expired_at.items())))
assert sum(expired_at.values()) == summary.statuses["expired"]
assert summary.expired_waiting_for_outputs > 0
