"""
Hypothesis strategies for fuzzing code that handles runs (needs ``hypothesis``).

>>> from hypothesis import given
>>> from runflow.testing import strategies as rs
>>> @given(rs.run_objects(status="requires_action"))
... def test_my_handler(run):
...     assert run.required_action is not None
>>> test_my_handler()

Every :class:`~runflow.RunObject` drawn was made by a real :class:`~runflow.Engine`
walking the lifecycle, so it keeps every invariant (stamps, the iff rules, expiry) and
its wire dict validates against the schema and the official SDK.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from runflow._engine import Engine
from runflow._machine import ASSISTANTS_RUN
from runflow._model import RunObject, RunStatus
from runflow.testing._clock import DEFAULT_START, FakeClock
from runflow.testing._script import (
    Complete,
    Fail,
    MarkIncomplete,
    NeverAnswer,
    RequireAction,
    Script,
    ScriptedCall,
    Start,
)

__all__ = [
    "TRIGGERS",
    "create_kwargs",
    "legal_triggers",
    "metadata",
    "run_objects",
    "scripts",
    "tool_calls",
    "tool_outputs",
    "trigger_sequences",
    "usages",
]

#: Every trigger of the run lifecycle, in table order.
TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(t.trigger for t in ASSISTANTS_RUN.transitions))
_TABLE: dict[str, list[tuple[str, str]]] = {}
for _t in ASSISTANTS_RUN.transitions:
    _TABLE.setdefault(str(_t.source), []).append((_t.trigger, str(_t.dest)))
_ID_ALPHABET = string.ascii_letters + string.digits
_NAME_ALPHABET = string.ascii_letters + string.digits + "_-"
_TOOL_NAME = "get_weather"


def _ids(prefix: str) -> st.SearchStrategy[str]:
    return st.text(_ID_ALPHABET, min_size=24, max_size=24).map(lambda s: prefix + s)


def metadata() -> st.SearchStrategy[dict[str, str]]:
    """Metadata within OpenAI's limits: ≤ 16 keys of ≤ 64 chars, values ≤ 512 chars."""
    keys = st.text(min_size=1, max_size=64)
    values = st.text(max_size=512)
    return st.dictionaries(keys, values, max_size=16)


def usages() -> st.SearchStrategy[dict[str, int]]:
    """Token usage dicts whose total is the sum of the two counts."""
    counts = st.integers(min_value=0, max_value=100_000)
    return st.builds(
        lambda p, c: {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        counts,
        counts,
    )


def _function_names() -> st.SearchStrategy[str]:
    return st.text(_NAME_ALPHABET, min_size=1, max_size=64)


def _arguments() -> st.SearchStrategy[str]:
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=8,
    )
    return st.dictionaries(st.text(max_size=10), json_values, max_size=4).map(json.dumps)


def tool_calls(
    names: Sequence[str] | None = None, *, min_size: int = 1, max_size: int = 4
) -> st.SearchStrategy[list[dict[str, Any]]]:
    """
    Lists of function tool calls (wire dicts) with unique ``call_…`` ids, naming
    ``names`` (default: any function names) with JSON-object arguments.
    """
    name = st.sampled_from(list(names)) if names else _function_names()
    call = st.builds(
        lambda call_id, n, args: {
            "id": call_id,
            "type": "function",
            "function": {"name": n, "arguments": args},
        },
        _ids("call_"),
        name,
        _arguments(),
    )
    return st.lists(call, min_size=min_size, max_size=max_size, unique_by=lambda c: c["id"])


def tool_outputs(calls: Sequence[Any]) -> st.SearchStrategy[list[dict[str, str]]]:
    """One output for each call (wire dicts or records), in any order."""
    ids = [c["id"] if isinstance(c, dict) else c.id for c in calls]
    outputs = st.lists(st.text(max_size=200), min_size=len(ids), max_size=len(ids))
    return st.tuples(st.permutations(ids), outputs).map(
        lambda pair: [
            {"tool_call_id": i, "output": o} for i, o in zip(pair[0], pair[1], strict=True)
        ]
    )


def create_kwargs(*, tools: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """
    Keyword arguments :meth:`runflow.Engine.create` accepts (thread and assistant
    ids, model, instructions, metadata, budgets, sampling), all within the request
    limits. With ``tools``, the run has the ``get_weather`` function tool.
    """
    optional: dict[str, st.SearchStrategy[Any]] = {
        "metadata": metadata(),
        "max_prompt_tokens": st.none() | st.integers(256, 1_000_000),
        "max_completion_tokens": st.none() | st.integers(256, 1_000_000),
        "temperature": st.none() | st.floats(0, 2),
        "top_p": st.none() | st.floats(0, 1),
        "parallel_tool_calls": st.booleans(),
        "instructions": st.text(max_size=200),
        "model": st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4.1"]),
    }
    required: dict[str, st.SearchStrategy[Any]] = {
        "thread_id": _ids("thread_"),
        "assistant_id": _ids("asst_"),
    }
    if tools:
        tool = {
            "type": "function",
            "function": {"name": _TOOL_NAME, "parameters": {"type": "object"}},
        }
        required["tools"] = st.just([tool])
    return st.fixed_dictionaries(required, optional=optional)


def legal_triggers(
    start: str = RunStatus.QUEUED.value, *, max_size: int = 12
) -> st.SearchStrategy[list[str]]:
    """A walk of the lifecycle from ``start``: every trigger legal where it fires."""

    @st.composite
    def walk(draw: st.DrawFn) -> list[str]:
        status, out = start, []
        for _ in range(max_size):
            moves = _TABLE.get(status)
            if not moves or not draw(st.booleans()):
                break
            trigger, status = draw(st.sampled_from(moves))
            out.append(trigger)
        return out

    return walk()


def trigger_sequences(*, min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[list[str]]:
    """Any sequence of trigger names, legal and illegal mixed."""
    return st.lists(st.sampled_from(TRIGGERS), min_size=min_size, max_size=max_size)


_COUNTER = itertools.count()


def _arguments_for(trigger: str, run: RunObject, draw: st.DrawFn) -> dict[str, Any]:
    if trigger == "require_action":
        calls = draw(tool_calls([_TOOL_NAME], max_size=1 if not run.parallel_tool_calls else 3))
        return {"tool_calls": calls}
    if trigger == "submit_tool_outputs":
        return {"tool_outputs": draw(tool_outputs(run.tool_calls))}
    if trigger == "complete":
        return {"usage": draw(st.none() | usages())}
    if trigger == "fail":
        code = draw(st.sampled_from(["server_error", "rate_limit_exceeded", "invalid_prompt"]))
        return {"code": code, "message": draw(st.text(min_size=1, max_size=100))}
    if trigger == "mark_incomplete":
        reason = draw(st.sampled_from(["max_prompt_tokens", "max_completion_tokens"]))
        return {"reason": reason, "usage": draw(st.none() | usages())}
    return {}


def run_objects(
    status: str | RunStatus | None = None, *, max_steps: int = 10
) -> st.SearchStrategy[RunObject]:
    """
    Valid runs, each made by a real engine walking a random legal path (with time
    passing between steps); ``status`` keeps only runs that end there.
    """
    wanted = None if status is None else RunStatus(status)

    @st.composite
    def build(draw: st.DrawFn) -> RunObject:
        clock = FakeClock(draw(st.integers(DEFAULT_START, DEFAULT_START + 10**8)))
        engine = Engine(clock=clock, id_factory=lambda: f"run_{next(_COUNTER):024d}")
        run = engine.create(**draw(create_kwargs()))
        target = wanted
        for _ in range(max_steps):
            if target is not None and run.status is target:
                break
            moves = _TABLE.get(run.status.value)
            if not moves:
                break
            if target is None and draw(st.integers(0, 3)) == 0:
                break  # stop here a quarter of the time
            trigger, _dest = draw(st.sampled_from(moves))
            if trigger == "expire" and target not in {None, RunStatus.EXPIRED}:
                continue
            clock.advance(draw(st.integers(0, 59)))
            run = getattr(engine, trigger)(run.id, **_arguments_for(trigger, run, draw))
        if target is not None and run.status is not target:
            run = _force(engine, run, target, draw)
        return run

    return build()


def _force(engine: Engine, run: RunObject, target: RunStatus, draw: st.DrawFn) -> RunObject:
    """Finish a walk that missed ``target``: a fresh run along the shortest path."""
    kwargs = {
        **draw(create_kwargs()),
        "thread_id": f"thread_force_{run.id}",
        "max_prompt_tokens": None,  # a drawn usage must not end it incomplete
        "max_completion_tokens": None,
    }
    fresh = engine.create(**kwargs)
    for trigger in engine.lifecycle.paths.get((RunStatus.QUEUED.value, target.value), ()):
        fresh = getattr(engine, trigger)(fresh.id, **_arguments_for(trigger, fresh, draw))
    return fresh


def scripts(*, tools: Sequence[str] = (_TOOL_NAME,)) -> st.SearchStrategy[Script]:
    """
    Playable scripts: some tool rounds (naming ``tools``), polls and virtual latency,
    then an end (a reply, a failure, a budget, silence until expiry), and sometimes a
    cancel that loses the race or an HTTP fault.
    """
    timing = {"polls": st.integers(0, 3), "after": st.integers(0, 120)}
    call = st.builds(ScriptedCall, name=st.sampled_from(list(tools)), arguments=_arguments())
    start = st.builds(Start, **timing)
    ask = st.builds(
        RequireAction, tool_calls=st.lists(call, min_size=1, max_size=2).map(tuple), **timing
    )
    reply = st.text(min_size=1, max_size=60)
    end = st.one_of(
        st.builds(Complete, reply=reply, **timing),
        st.builds(Fail, code=st.sampled_from(["server_error", "rate_limit_exceeded"]), **timing),
        st.builds(
            MarkIncomplete,
            reason=st.sampled_from(["max_prompt_tokens", "max_completion_tokens"]),
            reply=st.none() | reply,
            **timing,
        ),
        st.builds(NeverAnswer, polls=st.integers(0, 2)),
    )

    @st.composite
    def build(draw: st.DrawFn) -> Script:
        steps = [*draw(st.lists(start | ask, max_size=3)), draw(end)]
        script = Script(steps=steps)
        if draw(st.booleans()):
            script = script.cancel_loses(draw(reply))
        if draw(st.integers(0, 4)) == 0:
            script = script.http_error(
                draw(st.sampled_from([429, 500, 503])),
                on=draw(st.sampled_from(["retrieve", "submit_tool_outputs", "cancel"])),
                skip=draw(st.integers(0, 2)),
            )
        return script.check()

    return build()
