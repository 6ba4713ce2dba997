"""
What a simulation found: the :class:`Summary` record, its JSON form and its table.

Everything but :attr:`Summary.wall` follows from the scenario, the number of runs
and the seed alone, so it is the same, byte for byte, every time; the wall-clock
figures stand apart (the ``wall`` object of the JSON, the last section of the table).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from runflow.simulation._scenario import FAILURE_CODES

if TYPE_CHECKING:
    from runflow.simulation._driver import Simulation

__all__ = ["Percentiles", "Section", "Summary", "ToolRounds", "Wall", "render_text", "sections"]

TERMINAL = ("completed", "incomplete", "failed", "cancelled", "expired")
ACTIVE = ("queued", "in_progress", "requires_action", "cancelling")
REASONS = ("max_prompt_tokens", "max_completion_tokens")


@typing.final
@attrs.frozen(kw_only=True)
class Percentiles:
    """
    Time to terminal, in virtual seconds: from creation to the terminal status.

    Percentiles are nearest-rank. All figures are 0 when no run ended.

    .. versionadded:: 0.1.0
    """

    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        """The percentiles of ``values`` (rounded to milliseconds)."""
        if not values:
            return cls(p50=0.0, p95=0.0, p99=0.0, mean=0.0, max=0.0)
        ordered = sorted(values)
        n = len(ordered)

        def rank(q: float) -> float:
            return round(ordered[max(0, math.ceil(q * n) - 1)], 3)

        return cls(
            p50=rank(0.50),
            p95=rank(0.95),
            p99=rank(0.99),
            mean=round(math.fsum(ordered) / n, 3),
            max=round(ordered[-1], 3),
        )


@typing.final
@attrs.frozen(kw_only=True)
class ToolRounds:
    """
    Tool-call rounds (``requires_action`` episodes) over all runs.

    Attributes:
        rounds: Rounds in all runs.
        calls: Tool calls in all rounds.
        runs_with_tools: Runs with at least one round.
        mean_per_run: ``rounds / runs``.
        max_per_run: The most rounds one run had.
        histogram: Number of rounds -> number of runs that had that many.

    .. versionadded:: 0.1.0
    """

    rounds: int
    calls: int
    runs_with_tools: int
    mean_per_run: float
    max_per_run: int
    histogram: Mapping[int, int]


@typing.final
@attrs.frozen(kw_only=True)
class Wall:
    """
    The wall-clock figures: the only ones that differ between two identical runs.

    .. versionadded:: 0.1.0
    """

    seconds: float
    runs_per_s: float
    transitions_per_s: float

    @classmethod
    def of(cls, seconds: float, runs: int, transitions: int) -> Wall:
        """Rates from an elapsed time."""
        spent = max(seconds, 1e-9)
        return cls(
            seconds=round(seconds, 3),
            runs_per_s=round(runs / spent, 1),
            transitions_per_s=round(transitions / spent, 1),
        )


@typing.final
@attrs.frozen(kw_only=True)
class Summary:
    """
    The result of a simulation.

    Attributes:
        scenario: The scenario's name.
        seed: The seed.
        runs: Runs simulated.
        virtual_seconds: Virtual time from the first arrival to the last run's end.
        transitions: Status changes the engine made (creation included).
        statuses: Final status -> runs, for the five terminal statuses.
        time_to_terminal: Virtual seconds from creation to the terminal status.
        tool_rounds: Tool-call rounds.
        expired_from: Status a run was in when it expired -> runs.
        incomplete_by_reason: ``incomplete_details.reason`` -> runs.
        failed_by_code: ``last_error.code`` -> runs.
        cancellations: ``requested`` (cancel calls), ``accepted`` (the run went
            ``cancelling``), ``cancelled``, of those ``cancelled_by_sweep`` (stuck
            past the cancel grace), ``lost_race`` (ended otherwise from
            ``cancelling``), ``refused`` (the run had already ended).
        refused_calls: Engine method -> calls it refused (late tool outputs,
            cancels of ended runs).
        wall: The wall-clock figures (not deterministic).

    .. versionadded:: 0.1.0
    """

    scenario: str
    seed: int
    runs: int
    virtual_seconds: float
    transitions: int
    statuses: Mapping[str, int]
    time_to_terminal: Percentiles
    tool_rounds: ToolRounds
    expired_from: Mapping[str, int]
    incomplete_by_reason: Mapping[str, int]
    failed_by_code: Mapping[str, int]
    cancellations: Mapping[str, int]
    refused_calls: Mapping[str, int]
    wall: Wall

    @property
    def expired_waiting_for_outputs(self) -> int:
        """Runs that expired in ``requires_action``: their tool outputs came too late."""
        return self.expired_from.get("requires_action", 0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``runflow simulate --json`` (``wall`` last)."""
        runs = self.runs
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "runs": runs,
            "virtual_seconds": self.virtual_seconds,
            "transitions": self.transitions,
            "statuses": {
                s: {"count": c, "percent": _percent(c, runs)} for s, c in self.statuses.items()
            },
            "time_to_terminal": attrs.asdict(self.time_to_terminal),
            "tool_rounds": {
                **attrs.asdict(self.tool_rounds, filter=lambda a, _: a.name != "histogram"),
                "histogram": {str(k): v for k, v in self.tool_rounds.histogram.items()},
            },
            "expired_waiting_for_outputs": self.expired_waiting_for_outputs,
            "expired_from": dict(self.expired_from),
            "incomplete_by_reason": dict(self.incomplete_by_reason),
            "failed_by_code": dict(self.failed_by_code),
            "cancellations": dict(self.cancellations),
            "refused_calls": dict(self.refused_calls),
            "wall": attrs.asdict(self.wall),
        }


def _percent(count: int, total: int) -> float:
    return round(100.0 * count / total, 2) if total else 0.0


def summarize(sim: Simulation, wall: Wall) -> Summary:
    """Build the summary of a finished simulation."""
    rounds = sim._rounds  # noqa: SLF001 - the driver and its summary are one unit
    total_rounds = sum(k * v for k, v in rounds.items())
    cancels = sim._cancels  # noqa: SLF001
    final = sim._final  # noqa: SLF001
    return Summary(
        scenario=sim.scenario.name,
        seed=sim.seed,
        runs=sim.runs,
        virtual_seconds=round(sim.now, 3),
        transitions=sim.transitions,
        statuses={s: final[s] for s in TERMINAL},
        time_to_terminal=Percentiles.of(sim._ttt),  # noqa: SLF001
        tool_rounds=ToolRounds(
            rounds=total_rounds,
            calls=sim._calls,  # noqa: SLF001
            runs_with_tools=sum(v for k, v in rounds.items() if k),
            mean_per_run=round(total_rounds / sim.runs, 3) if sim.runs else 0.0,
            max_per_run=max((k for k, v in rounds.items() if v), default=0),
            histogram={k: rounds[k] for k in sorted(rounds)},
        ),
        expired_from={s: sim._expired_from[s] for s in ACTIVE},  # noqa: SLF001
        incomplete_by_reason={r: sim._reasons[r] for r in REASONS},  # noqa: SLF001
        failed_by_code={c: sim._codes[c] for c in FAILURE_CODES},  # noqa: SLF001
        cancellations={
            "requested": cancels["requested"],
            "accepted": cancels["accepted"],
            "cancelled": final["cancelled"],
            "cancelled_by_sweep": cancels["cancelled_by_sweep"],
            "lost_race": cancels["lost_race"],
            "refused": cancels["requested"] - cancels["accepted"],
        },
        refused_calls=dict(sorted(sim._refused.items())),  # noqa: SLF001
        wall=wall,
    )


# --- the table -------------------------------------------------------------------------------


@typing.final
@attrs.frozen
class Section:
    """
    One block of the summary table: a title, column headers and rows of text.

    The first column holds labels (left-aligned) when ``labels`` is true; the
    others hold figures. ``wall`` marks the wall-clock block, which is not
    deterministic.

    .. versionadded:: 0.1.0
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    labels: bool = True
    wall: bool = False


_EXPIRED_LABELS = {"requires_action": "requires_action (waiting for tool outputs)"}


def _n(value: int) -> str:
    return f"{value:,}"


def _s(value: float) -> str:
    return f"{value:,.3f}"


def sections(summary: Summary) -> list[Section]:
    """
    The summary as table sections, the wall-clock one last.

    .. versionadded:: 0.1.0
    """
    runs = summary.runs
    ttt = summary.time_to_terminal
    tr = summary.tool_rounds
    out = [
        Section(
            f"runflow simulate: scenario {summary.scenario}, seed {summary.seed}",
            ("", ""),
            (
                ("runs", _n(runs)),
                ("virtual time (s)", _s(summary.virtual_seconds)),
                ("transitions", _n(summary.transitions)),
            ),
        ),
        Section(
            "Runs by final status",
            ("status", "runs", "%"),
            (
                *((s, _n(c), f"{_percent(c, runs):.2f}") for s, c in summary.statuses.items()),
                ("total", _n(sum(summary.statuses.values())), f"{_percent(runs, runs):.2f}"),
            ),
        ),
        Section(
            "Time to terminal (virtual seconds)",
            ("p50", "p95", "p99", "mean", "max"),
            ((_s(ttt.p50), _s(ttt.p95), _s(ttt.p99), _s(ttt.mean), _s(ttt.max)),),
            labels=False,
        ),
        Section(
            "Tool-call rounds",
            ("", ""),
            (
                ("rounds", _n(tr.rounds)),
                ("tool calls", _n(tr.calls)),
                ("runs with tool calls", _n(tr.runs_with_tools)),
                ("rounds per run (mean)", f"{tr.mean_per_run:.3f}"),
                ("rounds in one run (max)", _n(tr.max_per_run)),
            ),
        ),
        Section(
            "Expired, by the status they expired in",
            ("status", "runs"),
            tuple((_EXPIRED_LABELS.get(s, s), _n(c)) for s, c in summary.expired_from.items()),
        ),
        Section(
            "Incomplete by reason",
            ("reason", "runs"),
            tuple((r, _n(c)) for r, c in summary.incomplete_by_reason.items()),
        ),
        Section(
            "Failed by code",
            ("code", "runs"),
            tuple((c, _n(n)) for c, n in summary.failed_by_code.items()),
        ),
        Section(
            "Cancellations",
            ("", "runs"),
            tuple((k.replace("_", " "), _n(v)) for k, v in summary.cancellations.items()),
        ),
        Section(
            "Calls the engine refused",
            ("method", "calls"),
            tuple((k, _n(v)) for k, v in summary.refused_calls.items()) or (("none", "0"),),
        ),
    ]
    wall = summary.wall
    out.append(
        Section(
            "Wall clock (differs from run to run)",
            ("", ""),
            (
                ("seconds", f"{wall.seconds:.3f}"),
                ("runs/s", f"{wall.runs_per_s:,.0f}"),
                ("transitions/s", f"{wall.transitions_per_s:,.0f}"),
            ),
            wall=True,
        )
    )
    return out


def render_text(summary: Summary) -> str:
    """
    The summary as plain text (what ``runflow simulate`` prints when piped).

    .. versionadded:: 0.1.0
    """
    lines: list[str] = []
    for section in sections(summary):
        lines.append(section.title)
        rows = [section.columns, *section.rows] if any(section.columns) else list(section.rows)
        widths = [max(len(r[i]) for r in rows) for i in range(len(section.columns))]
        for row in rows:
            cells = [
                cell.ljust(w) if i == 0 and section.labels else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  " + "  ".join(cells).rstrip())
        lines.append("")
    return "\n".join(lines)
