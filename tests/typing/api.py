"""
User-style calls of runflow's public API, checked by ``mypy --strict`` (not run by pytest).

Every value is annotated with the type a user would expect; a wrong annotation in the
library shows up here as a mypy error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import runflow
from runflow import (
    ACTIVE_STATUSES,
    ASSISTANTS_RUN,
    TERMINAL_STATUSES,
    CodeInterpreterTool,
    Engine,
    FunctionCall,
    FunctionDefinition,
    FunctionTool,
    IncompleteDetails,
    InvalidTransitionError,
    LastError,
    LifecycleProfile,
    RequiredAction,
    RunEvent,
    RunflowError,
    RunNotFoundError,
    RunObject,
    RunStatus,
    SystemClock,
    Tool,
    ToolCall,
    ToolOutput,
    ToolOutputsError,
    TransitionSpec,
    Usage,
    ValidationError,
)
from runflow.hooks import IncompleteReasonHook, RequiredActionHook
from runflow.testing import EventRecorder, FakeClock


class UpperArguments:
    """A required-action hook written by a user."""

    def validate_tool_calls(
        self, run: RunObject, tool_calls: Sequence[ToolCall]
    ) -> Sequence[ToolCall]:
        return [
            ToolCall(
                id=c.id,
                function=FunctionCall(name=c.function.name, arguments=c.function.arguments.upper()),
            )
            for c in tool_calls
        ]

    def validate_tool_outputs(self, run: RunObject, tool_outputs: Sequence[ToolOutput]) -> None:
        if any(not o.output for o in tool_outputs):
            raise ValidationError("$.tool_outputs", "outputs must not be empty")


class TinyBudget:
    """An incomplete-reason hook written by a user."""

    def incomplete_reason(
        self, run: RunObject, usage: Usage
    ) -> Literal["max_completion_tokens", "max_prompt_tokens"] | None:
        return "max_completion_tokens" if usage.completion_tokens > 10_000 else None


def lifecycle() -> None:
    clock = FakeClock(1_700_000_000)
    now: int = clock.now()
    later: int = clock.advance(5)
    clock.set(now)
    action_hook: RequiredActionHook = UpperArguments()
    engine = Engine(
        clock=clock,
        id_factory=lambda: "run_typed",
        expires_after=600,
        required_action_hooks=[action_hook],
    )
    recorder = EventRecorder()
    unsubscribe: Callable[[], None] = engine.subscribe(recorder)

    def on_event(event: RunEvent) -> None:
        name: str = event.event
        sequence: int = event.sequence
        data: RunObject = event.data
        print(name, sequence, data.status)  # noqa: T201

    engine.subscribe(on_event)
    tools: list[Tool] = [
        CodeInterpreterTool(),
        FunctionTool(function=FunctionDefinition(name="get_weather", strict=True)),
    ]
    run: RunObject = engine.create(
        thread_id="thread_a",
        assistant_id="asst_a",
        model="gpt-4o",
        instructions="Be brief.",
        tools=tools,
        metadata={"owner": "me"},
        max_prompt_tokens=1000,
        max_completion_tokens=None,
        temperature=0.5,
        top_p=None,
        parallel_tool_calls=True,
        expires_after=120,
    )
    status: RunStatus = run.status
    assert status in ACTIVE_STATUSES
    assert not status.is_terminal
    run = engine.start(run.id)
    run = engine.require_action(
        run,
        tool_calls=[
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"},
            }
        ],
    )
    action: RequiredAction | None = run.required_action
    pending: tuple[ToolCall, ...] = run.tool_calls
    run = engine.submit_tool_outputs(
        run, tool_outputs=[ToolOutput(tool_call_id=c.id, output="sunny") for c in pending]
    )
    run = engine.start(run)
    run = engine.add_usage(run, prompt_tokens=10, completion_tokens=2)
    run = engine.complete(run, usage=Usage.of(9, 4))
    usage: Usage | None = run.usage
    wire: dict[str, object] = run.to_dict()
    again: RunObject = RunObject.from_dict(wire)
    assert again == run
    assert run.status in TERMINAL_STATUSES
    print(action, usage, later)  # noqa: T201
    unsubscribe()


def errors(engine: Engine) -> None:
    try:
        engine.get("run_missing")
    except RunNotFoundError as e:
        missing: str = e.run_id
        print(missing)  # noqa: T201
    try:
        engine.cancel("run_x")
    except InvalidTransitionError as e:
        trigger: str = e.trigger
        was: str = e.status
        allowed: frozenset[str] = e.allowed
        print(trigger, was, allowed)  # noqa: T201
    try:
        engine.submit_tool_outputs("run_x", tool_outputs=[{"tool_call_id": "a", "output": "b"}])
    except ToolOutputsError as e:
        expected: tuple[str, ...] = e.expected
        got: tuple[str, ...] = e.got
        print(expected, got, e.missing, e.unknown, e.duplicates)  # noqa: T201
    except ValidationError as e:
        path: str = e.path
        rule: str = e.rule
        print(path, rule, e.errors)  # noqa: T201
    except RunflowError as e:
        print(e.message)  # noqa: T201


def other_calls(engine: Engine) -> None:
    run = engine.create(thread_id="t", assistant_id="a")
    run = engine.fail(engine.start(run), code="server_error", message="upstream 500")
    error: LastError | None = run.last_error
    other = engine.mark_incomplete(
        engine.start(engine.create(thread_id="t", assistant_id="a")),
        reason="max_prompt_tokens",
        usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    )
    details: IncompleteDetails | None = other.incomplete_details
    cancelled = engine.finish_cancel(engine.cancel(engine.create(thread_id="t", assistant_id="a")))
    expired: RunObject = engine.expire(engine.create(thread_id="t", assistant_id="a"))
    swept: list[RunObject] = engine.sweep()
    listed: list[RunObject] = engine.runs(thread_id="t", status=RunStatus.FAILED)
    listed = engine.runs(status="completed")
    observed: RunObject = engine.observe(
        {
            "id": "run_remote",
            "object": "thread.run",
            "created_at": 1,
            "thread_id": "t",
            "assistant_id": "a",
            "status": "queued",
        }
    )
    observed = engine.observe(observed)
    engine.discard(cancelled)
    diagram: str = runflow.lifecycle_diagram()
    version: str = runflow.__version__
    profile: LifecycleProfile = ASSISTANTS_RUN
    specs: tuple[TransitionSpec, ...] = profile.transitions
    reason_hook: IncompleteReasonHook = TinyBudget()
    clock = SystemClock()
    seconds: int = clock.now()
    print(error, details, expired, swept, listed, diagram, version, specs, reason_hook, seconds)  # noqa: T201


def misuse(engine: Engine, run: RunObject) -> None:
    """Calls mypy must refuse: each ignore is needed (``warn_unused_ignores`` is strict)."""
    engine.create(thread_id=1, assistant_id="a")  # type: ignore[arg-type]
    engine.create(assistant_id="a")  # type: ignore[call-arg]
    engine.fail(run, code="server_error")  # type: ignore[call-arg]
    engine.start(42)  # type: ignore[arg-type]
    run.status = RunStatus.FAILED  # type: ignore[misc]
    engine.mark_incomplete(run, reason="too_long")  # type: ignore[arg-type]
    flag: bool = run.usage  # type: ignore[assignment]
    print(flag)  # noqa: T201


async def async_user_code(engine: runflow.AsyncEngine) -> runflow.RunObject:
    """The coroutine API keeps the engine's signatures."""
    run = await engine.create(thread_id="thread_a", assistant_id="asst_a", model="gpt-4o")
    claimed: list[runflow.RunObject] = await engine.claim("w1", limit=2)
    del claimed
    await engine.start(run, worker="w1", lease=30)
    await engine.start(run, worker=1)  # type: ignore[arg-type]
    return await engine.complete(run.id, {"prompt_tokens": 1, "completion_tokens": 2})
