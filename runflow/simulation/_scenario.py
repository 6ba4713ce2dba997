"""
Scenarios: what a simulation draws its runs from, read from TOML and validated.

Every field has a default (the values of the built-in ``default`` scenario), so a
scenario file states only what it changes. Each field carries its own parser and its
documentation in its attrs metadata: the loader walks the fields, so a key that is
not a field is refused by name, and the docs test checks that every field is
documented.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from random import Random
from typing import Any

import attrs

from runflow.exceptions import RunflowError

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
    "Queue",
    "Runs",
    "Scenario",
    "ScenarioError",
    "Sweep",
    "Tools",
    "Uniform",
    "builtin_scenarios",
    "load_scenario",
    "scenario_fields",
]

#: The built-in scenarios, shipped as package data in ``runflow/simulation/scenarios``.
BUILTIN_SCENARIOS = ("default", "tool-heavy", "flaky", "deadline-pressure")

FAILURE_CODES = ("server_error", "rate_limit_exceeded", "invalid_prompt")
LOST_RACE_OUTCOMES = ("completed", "failed", "incomplete", "expired")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MIN_TOKEN_BUDGET = 256  # the create-run request's minimum for a token budget
_MAX_TOOLS = 20  # the create-run request's maximum number of tools
_MAX_CALLS = 64


class ScenarioError(RunflowError, ValueError):
    """
    A scenario could not be read: it is not TOML, or a key is unknown or invalid.

    The message names the file (or built-in), the key and why:
    ``busy.toml: tools.latency.median: expected a number > 0, got 'fast'``.

    Attributes:
        source: The file path, or ``built-in scenario 'NAME'``.
        key: The dotted key path (``tools.latency``), or None for the whole file.
        reason: Why it was refused.

    .. versionadded:: 0.1.0
    """

    def __init__(self, source: str, key: str | None, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


class _BadValueError(Exception):
    """A parser's refusal: ``key`` is relative to the value being parsed."""

    def __init__(self, reason: str, key: str = "") -> None:
        self.reason = reason
        self.key = key
        super().__init__(reason)


# --- distributions ---------------------------------------------------------------------------

Sampler = Callable[[], float]


@typing.final
@attrs.frozen
class Constant:
    """
    Always ``value`` seconds (or tokens). In TOML: a bare number, or
    ``{ dist = "constant", value = 3 }``.

    .. versionadded:: 0.1.0
    """

    value: float

    def sampler(self, rng: Random) -> Sampler:  # noqa: ARG002 - same signature as the others
        """A function that draws from this distribution."""
        value = self.value
        return lambda: value

    @property
    def mean(self) -> float:
        """The distribution's mean."""
        return self.value


@typing.final
@attrs.frozen
class Exponential:
    """
    Exponential with this ``mean``: ``{ dist = "exponential", mean = 2.0 }``.

    .. versionadded:: 0.1.0
    """

    mean: float

    def sampler(self, rng: Random) -> Sampler:
        """A function that draws from this distribution."""
        draw, rate = rng.expovariate, 1.0 / self.mean
        return lambda: draw(rate)


@typing.final
@attrs.frozen
class Uniform:
    """
    Uniform between ``low`` and ``high``: ``{ dist = "uniform", low = 1, high = 3 }``.

    .. versionadded:: 0.1.0
    """

    low: float
    high: float

    def sampler(self, rng: Random) -> Sampler:
        """A function that draws from this distribution."""
        draw, low, high = rng.uniform, self.low, self.high
        return lambda: draw(low, high)

    @property
    def mean(self) -> float:
        """The distribution's mean."""
        return (self.low + self.high) / 2


@typing.final
@attrs.frozen
class LogNormal:
    """
    Log-normal with this ``median`` and shape ``sigma`` (of the underlying normal):
    ``{ dist = "lognormal", median = 2.0, sigma = 0.5 }``. A long right tail, as
    latencies and token counts have.

    .. versionadded:: 0.1.0
    """

    median: float
    sigma: float

    def sampler(self, rng: Random) -> Sampler:
        """A function that draws from this distribution."""
        draw, mu, sigma = rng.lognormvariate, math.log(self.median), self.sigma
        return lambda: draw(mu, sigma)

    @property
    def mean(self) -> float:
        """The distribution's mean."""
        return self.median * math.exp(self.sigma**2 / 2)


Distribution = Constant | Exponential | Uniform | LogNormal


# --- parsers -----------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


_SHOWN = 40  # longest value quoted in an error message


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _number(value: object, *, low: float = 0.0, strict: bool = False) -> float:
    if type(value) not in (int, float) or not math.isfinite(typing.cast("float", value)):
        raise _BadValueError(f"expected a number, got {_json_type(value)} {_show(value)}")
    number = float(typing.cast("float", value))
    if number < low or (strict and number == low):
        op = ">" if strict else ">="
        raise _BadValueError(f"expected a number {op} {low:g}, got {_show(value)}")
    return number


def _nonnegative(value: object) -> float:
    return _number(value)


def _positive(value: object) -> float:
    return _number(value, strict=True)


def _probability(value: object) -> float:
    number = _number(value)
    if number > 1:
        raise _BadValueError(f"expected a probability between 0 and 1, got {_show(value)}")
    return number


def _integer(low: int, high: int | None = None) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if type(value) is not int:
            raise _BadValueError(f"expected an integer, got {_json_type(value)} {_show(value)}")
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise _BadValueError(f"expected an integer {bound}, got {value}")
        return value

    return parse


def _budget(value: object) -> int:
    number = _integer(0)(value)
    if 0 < number < _MIN_TOKEN_BUDGET:
        raise _BadValueError(
            f"a token budget is 0 (no budget) or at least {_MIN_TOKEN_BUDGET}, got {number}"
        )
    return number


def _grace(value: object) -> int | None:
    if value == "never":
        return None
    if type(value) is not int or value < 0:
        raise _BadValueError(
            f'expected an integer >= 0 or "never", got {_json_type(value)} {_show(value)}'
        )
    return value


def _string(value: object) -> str:
    if type(value) is not str:
        raise _BadValueError(f"expected a string, got {_json_type(value)} {_show(value)}")
    return value


def _boolean(value: object) -> bool:
    if type(value) is not bool:
        raise _BadValueError(f"expected true or false, got {_json_type(value)} {_show(value)}")
    return value


def _tool_names(value: object) -> tuple[str, ...]:
    if type(value) is not list:
        raise _BadValueError(f"expected an array of names, got {_json_type(value)}")
    names = typing.cast("list[object]", value)
    if len(names) > _MAX_TOOLS:
        raise _BadValueError(f"at most {_MAX_TOOLS} tools, got {len(names)}")
    for i, name in enumerate(names):
        if type(name) is not str or not _TOOL_NAME.match(name):
            raise _BadValueError(
                f"expected a function name (1-64 letters, digits, _ or -), got {_show(name)}",
                f"[{i}]",
            )
    if len(set(names)) != len(names):
        raise _BadValueError("tool names must be unique")
    return tuple(typing.cast("list[str]", names))


#: distribution name -> (its record, its parameters and how each is read)
_DISTRIBUTIONS: dict[
    str, tuple[Callable[..., Any], tuple[tuple[str, Callable[[object], float]], ...]]
] = {
    "constant": (Constant, (("value", _nonnegative),)),
    "exponential": (Exponential, (("mean", _positive),)),
    "uniform": (Uniform, (("low", _nonnegative), ("high", _nonnegative))),
    "lognormal": (LogNormal, (("median", _positive), ("sigma", _nonnegative))),
}


def _distribution(value: object) -> Distribution:
    if type(value) in (int, float):
        return Constant(_nonnegative(value))
    if type(value) is not dict:
        raise _BadValueError(
            f"expected a number or a distribution table such as "
            f'{{ dist = "exponential", mean = 2.0 }}, got {_json_type(value)} {_show(value)}'
        )
    table = typing.cast("dict[str, object]", value)
    kind = table.get("dist")
    if not isinstance(kind, str) or kind not in _DISTRIBUTIONS:
        names = ", ".join(map(repr, _DISTRIBUTIONS))
        raise _BadValueError(f"expected one of {names}, got {_show(kind)}", ".dist")
    make, params = _DISTRIBUTIONS[kind]
    wanted = [name for name, _ in params]
    for key in table:
        if key != "dist" and key not in wanted:
            raise _BadValueError(
                f"unknown key for a {kind} distribution (it takes {', '.join(wanted)})",
                f".{key}",
            )
    numbers: list[float] = []
    for key, parse in params:
        if key not in table:
            raise _BadValueError(f"missing: a {kind} distribution needs {key}", f".{key}")
        try:
            numbers.append(parse(table[key]))
        except _BadValueError as err:
            raise _BadValueError(err.reason, f".{key}") from None
    if kind == "uniform" and numbers[1] < numbers[0]:
        raise _BadValueError(f"high ({numbers[1]:g}) is below low ({numbers[0]:g})", ".high")
    distribution: Distribution = make(*numbers)
    return distribution


def _weights(names: tuple[str, ...]) -> Callable[[object], Mapping[str, float]]:
    def parse(value: object) -> Mapping[str, float]:
        if type(value) is not dict:
            raise _BadValueError(
                f"expected a table of weights over {', '.join(names)}, got {_json_type(value)}"
            )
        table = typing.cast("dict[str, object]", value)
        out = dict.fromkeys(names, 0.0)
        for key, weight in table.items():
            if key not in out:
                raise _BadValueError(f"unknown; expected one of {', '.join(names)}", f".{key}")
            try:
                out[key] = _nonnegative(weight)
            except _BadValueError as err:
                raise _BadValueError(err.reason, f".{key}") from None
        if not any(out.values()):
            raise _BadValueError("at least one weight must be > 0")
        return out

    return parse


# --- the scenario records ----------------------------------------------------------------------


def _meta(parse: Callable[[object], Any], doc: str) -> dict[str, Any]:
    """A field's metadata: how to read it from TOML, and its documentation."""
    return {"parse": parse, "doc": doc}


def _section(cls: type[Any], doc: str) -> dict[str, Any]:
    """A section's metadata: its record class, and its documentation."""
    return {"section": cls, "doc": doc}


@typing.final
@attrs.frozen(kw_only=True)
class Arrivals:
    """
    How runs arrive.

    .. versionadded:: 0.1.0
    """

    rate: float = attrs.field(
        default=2.0,
        metadata=_meta(
            _positive,
            "Runs created per virtual second, on average. Arrivals are a Poisson process: "
            "the gaps between them are exponential with mean 1/rate.",
        ),
    )


@typing.final
@attrs.frozen(kw_only=True)
class Runs:
    """
    How each run is created.

    .. versionadded:: 0.1.0
    """

    model: str = attrs.field(default="gpt-4o", metadata=_meta(_string, "The `model` of every run."))
    tools: tuple[str, ...] = attrs.field(
        default=("get_weather", "search_docs", "run_sql"),
        metadata=_meta(
            _tool_names,
            "Names of the function tools every run has (at most 20). Tool calls name "
            "these, in turn.",
        ),
    )
    parallel_tool_calls: bool = attrs.field(
        default=True,
        metadata=_meta(
            _boolean,
            "`parallel_tool_calls` of every run. When false, each tool round has exactly "
            "one call, so `tools.max_calls` must be 1.",
        ),
    )
    expires_after: int = attrs.field(
        default=600,
        metadata=_meta(
            _integer(1),
            "Seconds from creation to `expires_at` (the API's 10 minutes). A run still active "
            "then expires.",
        ),
    )
    budget_share: float = attrs.field(
        default=0.25,
        metadata=_meta(
            _probability,
            "Share of runs created with the token budgets below; the others have none.",
        ),
    )
    max_prompt_tokens: int = attrs.field(
        default=8000,
        metadata=_meta(
            _budget,
            "`max_prompt_tokens` of the budgeted runs; 0 for none. Otherwise at least 256, "
            "as the API requires.",
        ),
    )
    max_completion_tokens: int = attrs.field(
        default=1000,
        metadata=_meta(
            _budget,
            "`max_completion_tokens` of the budgeted runs; 0 for none. Otherwise at least 256.",
        ),
    )


@typing.final
@attrs.frozen(kw_only=True)
class Queue:
    """
    The start slots of the queue: each entry into ``queued`` (a creation, a tool-output
    submission) adds one, after a wait; at a slot, :meth:`runflow.Engine.claim`
    starts the run that has waited longest.

    .. versionadded:: 0.1.0
    """

    delay: Distribution = attrs.field(
        default=Exponential(0.8),
        metadata=_meta(
            _distribution,
            "Seconds from a run's entry into `queued` (its creation, or a tool-output "
            "submission) to the start slot that entry adds. The slot starts the run that "
            "has waited longest (`Engine.claim`), not necessarily this one.",
        ),
    )
    stall_probability: float = attrs.field(
        default=0.002,
        metadata=_meta(
            _probability,
            "Chance that a start slot stalls: `queue.stall` seconds are added to its wait.",
        ),
    )
    stall: Distribution = attrs.field(
        default=Uniform(600.0, 900.0),
        metadata=_meta(
            _distribution,
            "Extra seconds of a stalled slot. Meanwhile the queue is one start short: "
            "every queued run waits a little longer, none in particular (the longest "
            "waiting goes first).",
        ),
    )


@typing.final
@attrs.frozen(kw_only=True)
class Model:
    """
    One model turn: a stay in ``in_progress``, and the tokens it uses.

    .. versionadded:: 0.1.0
    """

    latency: Distribution = attrs.field(
        default=LogNormal(3.0, 0.5),
        metadata=_meta(_distribution, "Seconds of one model turn in `in_progress`."),
    )
    stall_probability: float = attrs.field(
        default=0.002,
        metadata=_meta(
            _probability, "Chance that a model turn stalls: `model.stall` seconds are added to it."
        ),
    )
    stall: Distribution = attrs.field(
        default=Uniform(600.0, 900.0),
        metadata=_meta(
            _distribution,
            "Extra seconds of a stalled turn (long ones make the run expire `in_progress`).",
        ),
    )
    prompt_tokens: Distribution = attrs.field(
        default=LogNormal(1500.0, 0.4),
        metadata=_meta(
            _distribution,
            "Prompt tokens of one turn (rounded, at least 1). Turns that end in tool calls "
            "add theirs with `Engine.add_usage`, the last turn passes its usage to "
            "`Engine.complete`: a run over its budget ends `incomplete`.",
        ),
    )
    completion_tokens: Distribution = attrs.field(
        default=LogNormal(200.0, 0.8),
        metadata=_meta(_distribution, "Completion tokens of one turn (rounded, at least 1)."),
    )


@typing.final
@attrs.frozen(kw_only=True)
class Tools:
    """
    Tool-call rounds: ``requires_action``, the client's tool work, then its outputs.

    .. versionadded:: 0.1.0
    """

    call_probability: float = attrs.field(
        default=0.5,
        metadata=_meta(
            _probability,
            "Chance that a model turn ends asking for tool calls (`requires_action`) rather "
            "than completing, while the run has rounds left.",
        ),
    )
    max_rounds: int = attrs.field(
        default=4, metadata=_meta(_integer(0), "Most tool-call rounds in one run.")
    )
    min_calls: int = attrs.field(
        default=1, metadata=_meta(_integer(1, _MAX_CALLS), "Fewest tool calls in one round.")
    )
    max_calls: int = attrs.field(
        default=3,
        metadata=_meta(
            _integer(1, _MAX_CALLS),
            "Most tool calls in one round (the number is uniform between min and max).",
        ),
    )
    latency: Distribution = attrs.field(
        default=LogNormal(1.5, 1.0),
        metadata=_meta(
            _distribution,
            "Seconds the client takes for one tool call. A round's outputs are submitted "
            "together once its slowest call is done.",
        ),
    )
    late_probability: float = attrs.field(
        default=0.01,
        metadata=_meta(
            _probability, "Chance that a round's outputs are late: `tools.late` seconds are added."
        ),
    )
    late: Distribution = attrs.field(
        default=Uniform(600.0, 1200.0),
        metadata=_meta(
            _distribution,
            "Extra seconds of late outputs. Past `expires_at`, the run expires waiting for "
            "them (by a sweep, or by the engine's expiry rule when the late submission "
            "arrives, which the engine then refuses).",
        ),
    )
    rescue_probability: float = attrs.field(
        default=0.5,
        metadata=_meta(
            _probability,
            "Chance that a client whose outputs would come after `expires_at` (late ones, "
            "mostly) submits what it has in the last second before it instead. The run is "
            "back in `queued` with under a second left: unless a start slot takes it within "
            "that second, it expires there.",
        ),
    )


@typing.final
@attrs.frozen(kw_only=True)
class Failures:
    """
    Model turns that end the run ``failed``.

    .. versionadded:: 0.1.0
    """

    probability: float = attrs.field(
        default=0.01, metadata=_meta(_probability, "Chance that a model turn fails the run.")
    )
    codes: Mapping[str, float] = attrs.field(
        default={"server_error": 6.0, "rate_limit_exceeded": 3.0, "invalid_prompt": 1.0},
        metadata=_meta(
            _weights(FAILURE_CODES),
            "Relative weights of the `last_error.code` of a failure: any of `server_error`, "
            "`rate_limit_exceeded`, `invalid_prompt` (missing ones weigh 0).",
        ),
    )


@typing.final
@attrs.frozen(kw_only=True)
class Cancellations:
    """
    Clients that cancel, and cancels that lose the race.

    .. versionadded:: 0.1.0
    """

    probability: float = attrs.field(
        default=0.03, metadata=_meta(_probability, "Chance that the client cancels a run (once).")
    )
    after: Distribution = attrs.field(
        default=Exponential(10.0),
        metadata=_meta(
            _distribution,
            "Seconds after creation at which the client cancels. If the run has already "
            "ended, the engine refuses the cancel (`Cannot cancel run with status ...`).",
        ),
    )
    finish: Distribution = attrs.field(
        default=Exponential(2.0),
        metadata=_meta(
            _distribution, "Seconds a run stays `cancelling` before the server settles it."
        ),
    )
    lose_race: float = attrs.field(
        default=0.3,
        metadata=_meta(
            _probability,
            "Chance that the cancel loses the race: the run ends another way (below) "
            "instead of `cancelled`.",
        ),
    )
    lost_to: Mapping[str, float] = attrs.field(
        default={"completed": 4.0, "failed": 2.0, "incomplete": 2.0, "expired": 2.0},
        metadata=_meta(
            _weights(LOST_RACE_OUTCOMES),
            "Relative weights of how a lost cancel ends: `completed`, `failed`, "
            "`incomplete`, or `expired`: the server never settles the cancel, so the run "
            "stays `cancelling` until its deadline (or until a sweep cancels it, see "
            "`sweep.cancel_grace`).",
        ),
    )


@typing.final
@attrs.frozen(kw_only=True)
class Sweep:
    """
    The periodic :meth:`runflow.Engine.sweep`.

    .. versionadded:: 0.1.0
    """

    interval: float = attrs.field(
        default=60.0,
        metadata=_meta(
            _nonnegative,
            "Virtual seconds between two `Engine.sweep()` calls, which expire every run "
            "past its deadline (and cancel the runs `cancelling` for longer than "
            "`sweep.cancel_grace`). 0: no sweeps; overdue runs then expire by the "
            "engine's expiry rule on their next call or read (the simulation reads each "
            "remaining run at its deadline at the end).",
        ),
    )
    cancel_grace: int | None = attrs.field(
        default=None,
        metadata=_meta(
            _grace,
            "Seconds a run may stay `cancelling` before a sweep ends it `cancelled` (the "
            'engine\'s `cancel_grace`), or `"never"`: a cancel the server never settles '
            "then runs to its deadline and expires (LIFECYCLE T10).",
        ),
    )


@typing.final
@attrs.frozen(kw_only=True)
class Scenario:
    """
    Everything a simulation draws its runs from.

    Build one with :func:`load_scenario`, or directly: ``Scenario()`` is the built-in
    ``default``; ``attrs.evolve`` changes a copy.

    .. versionadded:: 0.1.0
    """

    name: str = attrs.field(
        default="default", metadata=_meta(_string, "The scenario's name, shown in the summary.")
    )
    description: str = attrs.field(
        default="", metadata=_meta(_string, "One line saying what the scenario is for.")
    )
    arrivals: Arrivals = attrs.field(
        factory=Arrivals, metadata=_section(Arrivals, "How runs arrive.")
    )
    runs: Runs = attrs.field(factory=Runs, metadata=_section(Runs, "How each run is created."))
    queue: Queue = attrs.field(factory=Queue, metadata=_section(Queue, "Waits in `queued`."))
    model: Model = attrs.field(
        factory=Model, metadata=_section(Model, "Model turns in `in_progress` and their tokens.")
    )
    tools: Tools = attrs.field(factory=Tools, metadata=_section(Tools, "Tool-call rounds."))
    failures: Failures = attrs.field(
        factory=Failures, metadata=_section(Failures, "Failed model turns.")
    )
    cancellations: Cancellations = attrs.field(
        factory=Cancellations, metadata=_section(Cancellations, "Cancels, won and lost.")
    )
    sweep: Sweep = attrs.field(
        factory=Sweep, metadata=_section(Sweep, "Periodic sweeps for overdue runs.")
    )

    def __attrs_post_init__(self) -> None:
        """Check what no single field can: the fields' agreement with each other."""
        for key, reason in _inconsistencies(self):
            raise ScenarioError(f"scenario {self.name!r}", key, reason)


def _inconsistencies(s: Scenario) -> Iterator[tuple[str, str]]:
    if s.tools.min_calls > s.tools.max_calls:
        yield (
            "tools.min_calls",
            f"is {s.tools.min_calls}, above tools.max_calls ({s.tools.max_calls})",
        )
    if not s.runs.parallel_tool_calls and s.tools.max_calls != 1:
        yield (
            "tools.max_calls",
            (
                f"is {s.tools.max_calls}, but runs.parallel_tool_calls is false: "
                "a round then has exactly one call (set it to 1)"
            ),
        )
    if not s.runs.tools and s.tools.call_probability > 0 and s.tools.max_rounds > 0:
        yield "runs.tools", "is empty, but tools.call_probability asks for tool calls"


# --- loading -----------------------------------------------------------------------------------


def scenario_fields() -> Iterator[tuple[str, attrs.Attribute[Any]]]:
    """
    Every scenario key as a dotted path (``tools.latency``) with its attrs field.

    .. versionadded:: 0.1.0
    """
    for field in attrs.fields(Scenario):
        section = field.metadata.get("section")
        if section is None:
            yield field.name, field
            continue
        for sub in attrs.fields(section):
            yield f"{field.name}.{sub.name}", sub


def _build(cls: type[Any], table: Mapping[str, object], prefix: str, source: str) -> Any:
    fields = {f.name: f for f in attrs.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        field = fields.get(key)
        if field is None:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(fields)
            raise ScenarioError(source, path, f"unknown key{hint} (known here: {known})")
        section = field.metadata.get("section")
        if section is not None:
            if type(value) is not dict:
                raise ScenarioError(source, path, f"expected a table, got {_json_type(value)}")
            values[key] = _build(section, value, f"{path}.", source)
            continue
        try:
            values[key] = field.metadata["parse"](value)
        except _BadValueError as err:
            raise ScenarioError(source, path + err.key, err.reason) from None
    try:
        return cls(**values)
    except ScenarioError as err:
        raise ScenarioError(source, err.key, err.reason) from None


def _from_toml(text: str, source: str, default_name: str) -> Scenario:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(source, None, f"not valid TOML: {err}") from None
    table.setdefault("name", default_name)
    scenario: Scenario = _build(Scenario, table, "", source)
    return scenario


def builtin_scenarios() -> tuple[str, ...]:
    """
    The names of the built-in scenarios.

    .. versionadded:: 0.1.0
    """
    return BUILTIN_SCENARIOS


def _builtin_text(name: str) -> str:
    folder = resources.files("runflow.simulation").joinpath("scenarios")
    return folder.joinpath(f"{name}.toml").read_text(encoding="utf-8")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """
    Load a built-in scenario by name, or a scenario file.

    A string that names a built-in (``"flaky"``) loads it; anything else is read as
    a path to a TOML file. Keys the file leaves out take the built-in ``default``
    values. A file without ``name`` is named after its stem.

    Raises:
        ScenarioError: the file is missing, unreadable or not TOML, a key is
            unknown, or a value is invalid (the message names file, key and why).

    .. versionadded:: 0.1.0
    """
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_SCENARIOS:
        text = _builtin_text(name_or_path)
        return _from_toml(text, f"built-in scenario {name_or_path!r}", name_or_path)
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        raise ScenarioError(
            f"scenario {str(path)!r}",
            None,
            f"no such built-in scenario or file (built-ins: {', '.join(BUILTIN_SCENARIOS)})",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(path), None, "no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(str(path), None, f"cannot be read: {err}") from None
    return _from_toml(text, str(path), path.stem)
