"""``openai.AsyncOpenAI`` in-process: the app runs on the test's own event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai import AsyncAssistantEventHandler
from openai.types.beta import AssistantStreamEvent

from runflow import Engine
from runflow.testing import FakeClock, Script, async_openai_client

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


class Names(AsyncAssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    async def on_event(self, event: AssistantStreamEvent) -> None:
        self.names.append(event.event)


def test_poll_submit_and_stream() -> None:
    """``create_and_poll``, ``submit_tool_outputs_and_poll`` and a stream, awaited."""
    engine = Engine(clock=FakeClock())
    script = Script().require_action().complete("Done.")

    async def main() -> tuple[str, str, list[str]]:
        client = async_openai_client(engine, script, _strict_response_validation=True)
        runs = client.beta.threads.runs
        thread = (await client.beta.threads.create()).id
        run = await runs.create_and_poll(thread_id=thread, assistant_id="a", tools=[WEATHER_TOOL])
        first = run.status
        assert run.required_action is not None
        outputs = [
            {"tool_call_id": c.id, "output": "x"}
            for c in run.required_action.submit_tool_outputs.tool_calls
        ]
        run = await runs.submit_tool_outputs_and_poll(
            thread_id=thread, run_id=run.id, tool_outputs=outputs
        )
        handler = Names()
        other = (await client.beta.threads.create()).id
        async with runs.stream(
            thread_id=other, assistant_id="a", tools=[WEATHER_TOOL], event_handler=handler
        ) as stream:
            await stream.until_done()
        await client.close()
        return first, run.status, handler.names

    first, last, names = asyncio.run(main())
    assert (first, last) == ("requires_action", "completed")
    assert names[0] == "thread.run.created"
    assert names[-1] == "thread.run.requires_action"


def test_manual_mode_and_errors() -> None:
    """The test drives the engine between awaited calls; refusals raise the SDK's classes."""
    engine = Engine(clock=FakeClock())

    async def main() -> None:
        async with async_openai_client(engine) as client:
            runs = client.beta.threads.runs
            thread = (await client.beta.threads.create()).id
            run = await runs.create(thread_id=thread, assistant_id="a")
            engine.start(run.id)
            assert (await runs.retrieve(thread_id=thread, run_id=run.id)).status == "in_progress"
            engine.complete(run.id)
            with pytest.raises(openai.BadRequestError) as caught:
                await runs.cancel(thread_id=thread, run_id=run.id)
            assert caught.value.body["message"] == "Cannot cancel run with status 'completed'."  # type: ignore[index]

    asyncio.run(main())


def test_manual_stream_while_another_task_drives() -> None:
    """A manual-mode stream stays open while another task drives the engine."""
    engine = Engine(clock=FakeClock())

    async def main() -> list[str]:
        async with async_openai_client(engine) as client:
            thread = (await client.beta.threads.create()).id
            handler = Names()

            async def drive() -> None:
                for _ in range(1000):
                    if engine.runs(thread_id=thread):
                        break
                    await asyncio.sleep(0.001)
                run_id = engine.runs(thread_id=thread)[0].id
                await asyncio.sleep(0.01)
                engine.start(run_id)
                await asyncio.sleep(0.01)
                engine.fail(run_id, code="server_error", message="x")

            driver = asyncio.create_task(drive())
            async with client.beta.threads.runs.stream(
                thread_id=thread, assistant_id="a", event_handler=handler
            ) as stream:
                await stream.until_done()
            await driver
            return handler.names

    assert asyncio.run(main()) == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.failed",
    ]
