"""
The simulation plot: runs per status over virtual time, and time to terminal.

Needs matplotlib (the ``plot`` extra), imported only when a plot is drawn; it draws
with the Agg canvas directly, so no pyplot state or GUI backend is involved.
"""

from __future__ import annotations

import importlib.util
import math
import typing
from array import array
from pathlib import Path
from typing import TYPE_CHECKING

from runflow._events import RunEvent
from runflow.simulation._summary import ACTIVE, TERMINAL

if TYPE_CHECKING:
    from runflow.simulation._driver import Simulation
    from runflow.simulation._summary import Summary

__all__ = ["PlotUnavailableError", "StatusTimeline", "plot_available", "write_plot"]

STATUSES = ACTIVE + TERMINAL
_INDEX = {s: i for i, s in enumerate(STATUSES)}
_NONE = -1
COLORS = {
    "queued": "#9e9e9e",
    "in_progress": "#1f77b4",
    "requires_action": "#ff7f0e",
    "cancelling": "#bcbd22",
    "completed": "#2ca02c",
    "incomplete": "#9467bd",
    "failed": "#d62728",
    "cancelled": "#8c564b",
    "expired": "#e377c2",
}
_GRID_POINTS = 600


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed (install the ``plot`` extra)."""


def plot_available() -> bool:
    """Whether matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


@typing.final
class StatusTimeline:
    """
    A subscriber that keeps every status change with its virtual time, compactly.

    Subscribe it to a :class:`~runflow.simulation.Simulation`'s engine before the
    run (times then come from ``sim.now``, virtual seconds since the start), or
    feed it the events of :meth:`~runflow.simulation.Simulation.replay` with
    :meth:`record`.
    """

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self.times = array("d")
        self.moves = array("b")  # from, to pairs of status indexes (from -1: created)
        self._status: dict[str, int] = {}
        self._born: dict[str, float] = {}
        self.time_to_terminal: dict[str, list[float]] = {s: [] for s in TERMINAL}

    def __call__(self, event: RunEvent) -> None:
        """Record ``event`` at the simulation's current virtual time."""
        self.record(event, self._sim.now)

    def record(self, event: RunEvent, now: float) -> None:
        """Record ``event`` at virtual time ``now`` (events replayed from a journal)."""
        run = event.data
        if event.event == "thread.run.created":
            self._born[run.id] = now
            return
        to = _INDEX[run.status]
        source = self._status.get(run.id, _NONE)
        self.times.append(now)
        self.moves.append(source)
        self.moves.append(to)
        status = STATUSES[to]
        if status in self.time_to_terminal:
            self._status.pop(run.id, None)
            self.time_to_terminal[status].append(now - self._born.pop(run.id))
        else:
            self._status[run.id] = to

    def sampled(self) -> tuple[list[float], list[list[int]]]:
        """The number of runs in each status at evenly spaced virtual times."""
        end = max(self.times) if self.times else 0.0
        step = end / (_GRID_POINTS - 1) if end > 0 else 1.0
        grid = [i * step for i in range(_GRID_POINTS)]
        counts = [0] * len(STATUSES)
        series: list[list[int]] = [[] for _ in STATUSES]
        n, times, moves = len(self.times), self.times, self.moves
        # rounds wider than a second, and worker processes, record out of time order
        order = sorted(range(n), key=times.__getitem__)
        i = 0
        for t in grid:
            while i < n and times[order[i]] <= t:
                j = order[i]
                source, to = moves[2 * j], moves[2 * j + 1]
                if source != _NONE:
                    counts[source] -= 1
                counts[to] += 1
                i += 1
            for k, c in enumerate(counts):
                series[k].append(c)
        return grid, series


def write_plot(timeline: StatusTimeline, summary: Summary, path: str | Path) -> None:
    """
    Draw the simulation's figure as a PNG at ``path``.

    Raises:
        PlotUnavailableError: matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        raise PlotUnavailableError(
            "--plot needs matplotlib: pip install 'runflow-engine[plot]'"
        ) from None

    grid, series = timeline.sampled()
    fig = Figure(figsize=(11, 10), layout="constrained")
    FigureCanvasAgg(fig)
    top, middle, bottom = fig.subplots(3, 1)
    fig.suptitle(
        f"runflow simulate: scenario {summary.scenario}, seed {summary.seed}, "
        f"{summary.runs:,} runs",
        fontsize=13,
    )
    minutes = [t / 60 for t in grid]

    active = list(ACTIVE)
    top.stackplot(
        minutes,
        [series[_INDEX[s]] for s in active],
        labels=active,
        colors=[COLORS[s] for s in active],
        alpha=0.85,
    )
    top.set_title("Active runs by status")
    top.set_ylabel("runs")
    top.legend(loc="upper left", fontsize=8, ncols=4)
    top.margins(x=0)

    ended = list(TERMINAL)
    middle.stackplot(
        minutes,
        [series[_INDEX[s]] for s in ended],
        labels=ended,
        colors=[COLORS[s] for s in ended],
        alpha=0.85,
    )
    middle.set_title("Ended runs by final status (cumulative)")
    middle.set_ylabel("runs")
    middle.set_xlabel("virtual time (minutes)")
    middle.legend(loc="upper left", fontsize=8, ncols=5)
    middle.margins(x=0)

    values = {s: [max(v, 0.5) for v in timeline.time_to_terminal[s]] for s in ended}
    everything = [v for vs in values.values() for v in vs]
    if everything:
        low, high = min(everything), max(everything)
        high = max(high, low * 1.01)
        bins = [low * (high / low) ** (i / 60) for i in range(61)]
        present = [s for s in ended if values[s]]
        bottom.hist(
            [values[s] for s in present],
            bins=bins,
            stacked=True,
            label=present,
            color=[COLORS[s] for s in present],
        )
        bottom.set_xscale("log")
        ttt = summary.time_to_terminal
        for name, x in (("p50", ttt.p50), ("p95", ttt.p95), ("p99", ttt.p99)):
            if x > 0 and math.isfinite(x):
                bottom.axvline(x, color="black", linestyle=":", linewidth=1)
                bottom.annotate(
                    name,
                    (x, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -12),
                    textcoords="offset points",
                    fontsize=8,
                )
        bottom.legend(loc="center right", fontsize=8)
    bottom.set_title("Time to terminal status, by final status")
    bottom.set_xlabel("virtual seconds from creation (log scale)")
    bottom.set_ylabel("runs")
    fig.savefig(str(path), dpi=110)
