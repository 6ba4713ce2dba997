"""
The engine calls of a simulation, as small picklable work items.

The driver decides *what* happens to a run (every random draw is made there); an
:class:`Executor` carries it out on an engine and reports the outcome. The same
executor runs in the driver's own process (in-process mode) and in each worker
process of the distributed mode, so both modes make exactly the same engine calls.

An item is ``(op, run_id, clock, a, b)``: the operation, the run, the virtual clock
reading (integer Unix seconds) to make it at, and two operation arguments. An
outcome is ``(status, detail, refused)``: the run's status afterwards, the
``incomplete_details.reason`` or ``last_error.code`` when it ended so, and the
refused trigger (None when the call was accepted; ``status`` is then the status
that refused it, ``expired`` when the engine's expiry rule got there first).

The one item that names no run is ``("claim", "", clock, k, None)``:
:meth:`runflow.Engine.claim` of up to ``k`` queued runs, longest waiting first, for
the executor's worker; its outcome is the tuple of the claimed runs' ids.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from runflow._engine import Engine
from runflow._model import (
    FunctionCall,
    FunctionDefinition,
    FunctionTool,
    RunObject,
    RunStatus,
    ToolCall,
    ToolOutput,
    Usage,
)
from runflow.exceptions import InvalidTransitionError
from runflow.simulation._scenario import Scenario
from runflow.testing import FakeClock

__all__ = [
    "CODE_MESSAGES",
    "IN_PROCESS_WORKER",
    "Claimed",
    "Executor",
    "Item",
    "Outcome",
    "detail_of",
]

#: ``(op, run_id, clock, a, b)``.
Item = tuple[str, str, int, Any, Any]
#: ``(status, detail, refused_trigger)``.
Outcome = tuple[RunStatus, str | None, str | None]
#: The outcome of a ``claim``: the ids of the claimed runs, longest waiting first.
Claimed = tuple[str, ...]
#: The ``worker=`` of every call of an in-process simulation.
IN_PROCESS_WORKER = "sim-in-process"

_STATUS: dict[str, RunStatus] = {s.value: s for s in RunStatus}
_INCOMPLETE, _FAILED = RunStatus.INCOMPLETE, RunStatus.FAILED

#: ``last_error.message`` of each failure code the simulation draws.
CODE_MESSAGES = {
    "server_error": "The server had an error while processing your request.",
    "rate_limit_exceeded": "Rate limit reached for requests.",
    "invalid_prompt": "Invalid prompt: the prompt was flagged.",
}


def detail_of(record: RunObject) -> str | None:
    """The reason of an ``incomplete`` run, the error code of a ``failed`` one."""
    status = record.status
    if status is _INCOMPLETE and record.incomplete_details is not None:
        return record.incomplete_details.reason
    if status is _FAILED and record.last_error is not None:
        return record.last_error.code
    return None


def round_calls(scenario: Scenario) -> list[tuple[tuple[ToolCall, ...], tuple[ToolOutput, ...]]]:
    """The tool calls and outputs of a round of ``k`` calls, at index ``k``."""
    names = scenario.runs.tools
    rounds: list[tuple[tuple[ToolCall, ...], tuple[ToolOutput, ...]]] = [((), ())]
    for k in range(1, scenario.tools.max_calls + 1):
        calls = tuple(
            ToolCall(
                id=f"call_{i}",
                function=FunctionCall(
                    name=names[(i - 1) % len(names)] if names else "tool",
                    arguments='{"n": %d}' % i,  # noqa: UP031 - braces in the text
                ),
            )
            for i in range(1, k + 1)
        )
        outputs = tuple(ToolOutput(tool_call_id=c.id, output="ok") for c in calls)
        rounds.append((calls, outputs))
    return rounds


@typing.final
class Executor:
    """
    Carries out work items on one engine, at the clock reading each item names.

    Args:
        engine: The engine; its ``id_factory`` must return :attr:`next_id`.
        clock: The engine's clock, set to each item's reading.
        scenario: Where the runs' model, tools and budgets come from.
        worker: Passed as ``worker=`` to every call: a worker process's name, or
            :data:`IN_PROCESS_WORKER` in the driver's own process.
        lease: Seconds of the lease a ``claim`` takes for ``worker``.
    """

    def __init__(
        self,
        engine: Engine,
        clock: FakeClock,
        scenario: Scenario,
        *,
        worker: str = IN_PROCESS_WORKER,
        lease: int | None = None,
    ) -> None:
        self.engine = engine
        self.next_id = ""
        self._clock = clock
        self._worker = worker
        self._lease = lease
        runs = scenario.runs
        self._model = runs.model
        self._parallel = runs.parallel_tool_calls
        self._tools = tuple(FunctionTool(function=FunctionDefinition(name=n)) for n in runs.tools)
        self._budget = (runs.max_prompt_tokens or None, runs.max_completion_tokens or None)
        self._rounds = round_calls(scenario)
        self._ops: dict[str, Callable[[str, Any, Any], RunObject]] = {
            "create": self._create,
            "tools": self._tools_round,
            "complete": self._complete,
            "fail": self._fail,
            "incomplete": self._incomplete,
            "submit": self._submit,
            "cancel": self._cancel,
            "finish_cancel": self._finish_cancel,
        }

    def __call__(self, item: Item) -> Outcome | Claimed:
        """Carry out one item and report its outcome."""
        op, run_id, now, a, b = item
        clock = self._clock
        if clock.now() != now:
            clock.set(now)
        if op == "claim":
            claimed = self.engine.claim(self._worker, limit=a, lease=self._lease)
            return tuple(record.id for record in claimed)
        try:
            record = self._ops[op](run_id, a, b)
        except InvalidTransitionError as err:
            return _STATUS[err.status], None, err.trigger
        status = record.status
        if status is _INCOMPLETE or status is _FAILED:
            return status, detail_of(record), None
        return status, None, None

    # --- the operations --------------------------------------------------------------------

    def _create(self, run_id: str, thread_id: str, budget: bool) -> RunObject:
        prompt, completion = self._budget if budget else (None, None)
        self.next_id = run_id
        return self.engine.create(
            thread_id=thread_id,
            assistant_id="asst_sim",
            model=self._model,
            tools=self._tools,
            parallel_tool_calls=self._parallel,
            max_prompt_tokens=prompt,
            max_completion_tokens=completion,
        )

    def _tools_round(self, run_id: str, tokens: tuple[int, int], k: int) -> RunObject:
        """A turn that asks for ``k`` tool calls: add its tokens, then require action."""
        engine, worker = self.engine, self._worker
        record = engine.add_usage(
            run_id, prompt_tokens=tokens[0], completion_tokens=tokens[1], worker=worker
        )
        if record.status is _INCOMPLETE:  # a budget crossed
            return record
        return engine.require_action(run_id, self._rounds[k][0], worker=worker)

    def _complete(self, run_id: str, tokens: tuple[int, int], _: object) -> RunObject:
        usage = Usage.of(tokens[0], tokens[1])
        return self.engine.complete(run_id, usage=usage, worker=self._worker)

    def _fail(self, run_id: str, code: str, _: object) -> RunObject:
        return self.engine.fail(
            run_id,
            code=code,
            message=CODE_MESSAGES[code],
            worker=self._worker,
        )

    def _incomplete(self, run_id: str, tokens: tuple[int, int], _: object) -> RunObject:
        return self.engine.mark_incomplete(
            run_id,
            reason="max_completion_tokens",
            usage=Usage.of(tokens[0], tokens[1]),
            worker=self._worker,
        )

    def _submit(self, run_id: str, k: int, _: object) -> RunObject:
        return self.engine.submit_tool_outputs(run_id, self._rounds[k][1], worker=self._worker)

    def _cancel(self, run_id: str, _: object, __: object) -> RunObject:
        return self.engine.cancel(run_id, worker=self._worker)

    def _finish_cancel(self, run_id: str, _: object, __: object) -> RunObject:
        return self.engine.finish_cancel(run_id, worker=self._worker)
