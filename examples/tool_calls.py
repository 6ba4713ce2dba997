"""
Tool calls with hooks and events, on a fake clock.

* A required-action hook checks each call's arguments against its function's JSON
  Schema ``required`` list (and rewrites them to a canonical form), and refuses empty
  tool outputs.
* An incomplete-reason hook ends a run ``incomplete`` when the reply looks cut off.
* A subscriber prints every event as it happens.

Four runs show: parallel tool calls and a submit that misses one, a refused tool call
that leaves the run unchanged, outputs that come too late (the run expires), and token
budgets. Run it with ``python examples/tool_calls.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from runflow import (
    Engine,
    FunctionCall,
    IncompleteDetails,
    InvalidTransitionError,
    RunEvent,
    RunObject,
    ToolCall,
    ToolOutput,
    ToolOutputsError,
    Usage,
    ValidationError,
)
from runflow.testing import FakeClock

T0 = 1_700_000_000


class CheckedArguments:
    """A required-action hook: arguments must be a JSON object with the required keys."""

    def validate_tool_calls(
        self, run: RunObject, tool_calls: Sequence[ToolCall]
    ) -> Sequence[ToolCall]:
        schemas: dict[str, Mapping[str, Any]] = {
            tool.function.name: tool.function.parameters or {}
            for tool in run.tools
            if tool.type == "function"
        }
        checked = []
        for i, call in enumerate(tool_calls):
            path = f"$.tool_calls[{i}].function.arguments"
            try:
                arguments = json.loads(call.function.arguments)
            except ValueError:
                raise ValidationError(path, "expected JSON") from None
            if not isinstance(arguments, dict):
                raise ValidationError(path, "expected a JSON object")
            missing = [
                k for k in schemas[call.function.name].get("required", ()) if k not in arguments
            ]
            if missing:
                raise ValidationError(path, f"missing required argument(s) {missing}")
            canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"))
            function = FunctionCall(name=call.function.name, arguments=canonical)
            checked.append(ToolCall(id=call.id, function=function))
        return checked

    def validate_tool_outputs(self, run: RunObject, tool_outputs: Sequence[ToolOutput]) -> None:
        for i, output in enumerate(tool_outputs):
            if not output.output.strip():
                raise ValidationError(f"$.tool_outputs[{i}].output", f"empty output for {run.id}")


class CutOffReply:
    """An incomplete-reason hook: a reply that used up 1000 completion tokens was cut off."""

    def incomplete_reason(
        self, run: RunObject, usage: Usage
    ) -> Literal["max_completion_tokens"] | None:
        if run.max_completion_tokens is None and usage.completion_tokens >= 1000:
            return "max_completion_tokens"
        return None


def print_event(event: RunEvent) -> None:
    """A subscriber: one line per event."""
    run = event.data
    print(f"    event {event.sequence:>2}  {event.event:<28} {run.id}  t+{clock.now() - T0}s")


def say(text: str) -> None:
    print(f"  - {text}")


def tokens(usage: Usage | None) -> str:
    """Usage in words (the wire's ``usage`` is null while a run is active)."""
    if usage is None:
        return "null"
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    return f"{usage.total_tokens} ({prompt} prompt + {completion} completion)"


def reason(details: IncompleteDetails | None) -> str | None:
    """Why a run ended incomplete."""
    return None if details is None else details.reason


def function(name: str, *required: str) -> dict[str, Any]:
    """A function tool in wire form."""
    properties = {key: {"type": "string"} for key in required}
    parameters = {"type": "object", "properties": properties, "required": list(required)}
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def call(call_id: str, name: str, **arguments: str) -> dict[str, Any]:
    """A tool call in wire form."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


clock = FakeClock(T0)
run_numbers = iter(range(1, 100))
engine = Engine(
    clock=clock,
    id_factory=lambda: f"run_{next(run_numbers)}",
    required_action_hooks=[CheckedArguments()],
    incomplete_reason_hooks=[CutOffReply()],
)
engine.subscribe(print_event)
tools = [function("get_weather", "city"), function("get_time", "timezone")]

print("1. Two tool calls at once; all outputs must come in one submit")
run = engine.start(engine.create(thread_id="thread_1", assistant_id="asst_a", tools=tools))
run = engine.require_action(
    run,
    tool_calls=[
        call("call_w", "get_weather", city="Paris"),
        call("call_t", "get_time", timezone="Europe/Paris"),
    ],
)
for pending in run.tool_calls:
    say(f"pending {pending.id}: {pending.function.name}({pending.function.arguments})")
clock.advance(2)
try:
    engine.submit_tool_outputs(run, tool_outputs=[{"tool_call_id": "call_w", "output": "sunny"}])
except ToolOutputsError as error:
    say(f"refused: {error} (missing {list(error.missing)})")
run = engine.submit_tool_outputs(
    run,
    tool_outputs=[
        {"tool_call_id": "call_w", "output": "sunny"},
        {"tool_call_id": "call_t", "output": "14:05"},
    ],
)
run = engine.start(run)
clock.advance(3)
run = engine.complete(run, usage=Usage.of(120, 30))
say(f"{run.status.value}, usage {tokens(run.usage)}")

print("\n2. A hook refuses a tool call; the run does not change")
run = engine.start(engine.create(thread_id="thread_2", assistant_id="asst_a", tools=tools))
try:
    engine.require_action(run, tool_calls=[call("call_x", "get_weather", town="Paris")])
except ValidationError as error:
    say(f"refused: {error}")
say(f"still {engine.get(run).status.value}")
run = engine.require_action(run, tool_calls=[call("call_x", "get_weather", city="Lyon")])
try:
    engine.submit_tool_outputs(run, tool_outputs=[{"tool_call_id": "call_x", "output": "  "}])
except ValidationError as error:
    say(f"refused: {error}")
run = engine.submit_tool_outputs(run, tool_outputs=[{"tool_call_id": "call_x", "output": "rain"}])
run = engine.cancel(run)
run = engine.finish_cancel(run)
say(f"{run.status.value} at t+{(run.cancelled_at or 0) - T0}s")

print("\n3. Outputs that come after expires_at: the run has expired")
run = engine.start(engine.create(thread_id="thread_3", assistant_id="asst_a", tools=tools))
run = engine.require_action(run, tool_calls=[call("call_w", "get_weather", city="Oslo")])
say(f"expires_at is t+{(run.expires_at or 0) - T0}s; the tool takes 10 minutes")
clock.advance(600)
try:
    engine.submit_tool_outputs(run, tool_outputs=[{"tool_call_id": "call_w", "output": "snow"}])
except InvalidTransitionError as error:
    say(f"refused: {error}")
run = engine.get(run)
wire = run.to_dict()
nulls = [key for key in ("required_action", "expires_at") if wire[key] is None]
say(f"{wire['status']}; now null: {', '.join(nulls)}")

print("\n4. Token budgets: the built-in check, then the hook")
run = engine.start(
    engine.create(thread_id="thread_4", assistant_id="asst_a", max_prompt_tokens=500)
)
run = engine.add_usage(run, prompt_tokens=300, completion_tokens=20)
say(f"after 320 tokens: {run.status.value}, wire usage {tokens(run.usage)}")
run = engine.add_usage(run, prompt_tokens=300)
say(f"after 620 tokens: {run.status.value} ({reason(run.incomplete_details)})")
say(f"usage {tokens(run.usage)}")

run = engine.start(engine.create(thread_id="thread_5", assistant_id="asst_a"))
run = engine.complete(run, usage=Usage.of(50, 1000))
say(f"a 1000-token reply: {run.status.value} ({reason(run.incomplete_details)})")
