"""
Simulate many runs through the real engine on virtual time.

A :class:`Scenario` (read from TOML with :func:`load_scenario`) says how runs arrive,
how long queues, model turns and tool calls take, how many tokens turns use, how
often runs fail or are cancelled. A :class:`Simulation` drives that many runs through
a real :class:`runflow.Engine` over a :class:`runflow.testing.FakeClock`, with one
seeded :class:`random.Random`, and returns a :class:`Summary`:

>>> from runflow.simulation import load_scenario, simulate
>>> summary = simulate(load_scenario("default"), runs=200, seed=1)
>>> sum(summary.statuses.values())
200

``runflow simulate`` is the command-line face of this module (see the CLI docs).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from runflow.simulation._driver import Progress, Simulation, shared_store_url, simulate
from runflow.simulation._pool import WorkerError
from runflow.simulation._scenario import (
    BUILTIN_SCENARIOS,
    Arrivals,
    Cancellations,
    Constant,
    Distribution,
    Exponential,
    Failures,
    LogNormal,
    Model,
    Queue,
    Runs,
    Scenario,
    ScenarioError,
    Sweep,
    Tools,
    Uniform,
    builtin_scenarios,
    load_scenario,
    scenario_fields,
)
from runflow.simulation._summary import (
    Percentiles,
    Section,
    Summary,
    ToolRounds,
    Wall,
    render_text,
    sections,
)

__all__ = [
    "BUILTIN_SCENARIOS",
    "Arrivals",
    "Cancellations",
    "Constant",
    "Distribution",
    "Exponential",
    "Failures",
    "LogNormal",
    "Model",
    "Percentiles",
    "Progress",
    "Queue",
    "Runs",
    "Scenario",
    "ScenarioError",
    "Section",
    "Simulation",
    "Summary",
    "Sweep",
    "ToolRounds",
    "Tools",
    "Uniform",
    "Wall",
    "WorkerError",
    "builtin_scenarios",
    "load_scenario",
    "render_text",
    "scenario_fields",
    "sections",
    "shared_store_url",
    "simulate",
]
