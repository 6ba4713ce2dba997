"""
A tiny agent loop over the OpenAI Assistants API: ask, run the tools the model asks
for, return the answer. ``test_my_agent.py`` tests it with runflow's pytest plugin.

Run as a program, it talks to runflow in-process (no network, no key): the scripted
"model" asks for the weather once, then answers.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import openai

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


class AgentError(RuntimeError):
    """The run ended without an answer."""


def get_weather(city: str) -> str:
    """The one tool: a fixed forecast."""
    return f"sunny in {city}"


def call_tool(name: str, arguments: str) -> str:
    """Run the tool the model asked for."""
    if name == "get_weather":
        return get_weather(**json.loads(arguments))
    return f"unknown tool {name}"


def ask(client: openai.OpenAI, question: str, *, assistant_id: str) -> str:
    """Ask on a new thread; answer the model's tool calls until the run ends."""
    threads = client.beta.threads
    thread = threads.create(messages=[{"role": "user", "content": question}])
    run = threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id, tools=TOOLS)
    while run.status == "requires_action" and run.required_action is not None:
        outputs = [
            {
                "tool_call_id": call.id,
                "output": call_tool(call.function.name, call.function.arguments),
            }
            for call in run.required_action.submit_tool_outputs.tool_calls
        ]
        run = threads.runs.submit_tool_outputs_and_poll(
            thread_id=thread.id, run_id=run.id, tool_outputs=outputs
        )
    if run.status != "completed":
        why = run.last_error.code if run.last_error is not None else run.status
        msg = f"run {run.id} ended {run.status}: {why}"
        raise AgentError(msg)
    answer = threads.messages.list(thread_id=thread.id, run_id=run.id, limit=1).data[0]
    block = answer.content[0]
    return block.text.value if block.type == "text" else ""


if __name__ == "__main__":
    from runflow import Engine
    from runflow.testing import FakeClock, Script, openai_client

    warnings.filterwarnings("ignore", "The Assistants API is deprecated", DeprecationWarning)
    script = (
        Script()
        .require_action({"name": "get_weather", "arguments": {"city": "Paris"}})
        .complete("It is sunny in Paris.")
    )
    with openai_client(Engine(clock=FakeClock()), script) as client:
        print(ask(client, "Weather in Paris?", assistant_id="asst_demo"))
