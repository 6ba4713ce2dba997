"""
One run through its whole life, on a fake clock: create, start, wait on a tool call,
submit the output, resume, complete. Prints each step and the final wire object.

Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

import json

from runflow import Engine, RunObject
from runflow.testing import EventRecorder, FakeClock

T0 = 1_700_000_000


def at(timestamp: int | None) -> str:
    """A timestamp as seconds after the start of the example."""
    return "null" if timestamp is None else f"t+{timestamp - T0}s"


def show(step: str, run: RunObject, detail: str = "") -> None:
    """Print one step: the clock, the call, the new status and what changed."""
    print(f"{at(run_clock.now()):>7}  {step:<20} {run.status.value:<16} {detail}")


run_clock = FakeClock(T0)
engine = Engine(clock=run_clock, id_factory=lambda: "run_quickstart")
recorder = EventRecorder()
engine.subscribe(recorder)

print("runflow quickstart: one run, one tool call, on a fake clock\n")

get_weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
run = engine.create(
    thread_id="thread_quickstart",
    assistant_id="asst_weather",
    model="gpt-4o",
    instructions="Answer in one sentence.",
    tools=[get_weather],
)
show("create", run, f"expires_at={at(run.expires_at)}")

run_clock.advance(1)
run = engine.start(run.id)
show("start", run, f"started_at={at(run.started_at)}")

run_clock.advance(1)
run = engine.require_action(
    run.id,
    tool_calls=[
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ],
)
(call,) = run.tool_calls
show("require_action", run, f"{call.function.name}({call.function.arguments}) [{call.id}]")

run_clock.advance(3)
run = engine.submit_tool_outputs(
    run.id, tool_outputs=[{"tool_call_id": "call_1", "output": "sunny, 21 °C"}]
)
show("submit_tool_outputs", run, 'call_1 -> "sunny, 21 °C"')

run = engine.start(run.id)
show("start", run, f"started_at={at(run.started_at)} (stamped again)")

run_clock.advance(2)
run = engine.complete(
    run.id, usage={"prompt_tokens": 90, "completion_tokens": 12, "total_tokens": 102}
)
usage = run.usage
assert usage is not None
show(
    "complete",
    run,
    f"completed_at={at(run.completed_at)}, expires_at={at(run.expires_at)}, "
    f"{usage.total_tokens} tokens",
)

print("\nevents:")
for event in recorder.events:
    print(f"  {event.sequence:>2}  {event.event}")

print("\nthe run as the API would send it:")
print(json.dumps(run.to_dict(), indent=2, ensure_ascii=False))
