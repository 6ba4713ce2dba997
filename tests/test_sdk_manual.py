"""
The SDK in-process in manual mode (no script): the test drives the engine, the SDK sees
each change on its next call; polls and streams run beside the test in other threads.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent

from runflow import Engine, RunStatus
from runflow.server import create_app
from runflow.testing import FakeClock, Script, openai_client

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="engine")
def _engine(clock: FakeClock) -> Engine:
    return Engine(clock=clock)


@pytest.fixture(name="client")
def _client(engine: Engine) -> Iterator[openai.OpenAI]:
    with openai_client(engine, _strict_response_validation=True) as client:
        yield client


@pytest.fixture(name="pool")
def _pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def wait_for(engine: Engine, run_id: str, status: str) -> None:
    """Until the engine shows ``status`` (bounded)."""
    for _ in range(500):
        if engine.get(run_id).status == status:
            return
        time.sleep(0.002)
    pytest.fail(f"{run_id} never reached {status}")


def wait_until(predicate: Any, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        time.sleep(0.002)
    pytest.fail(f"timed out waiting for {what}")


class Names(AssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def on_event(self, event: AssistantStreamEvent) -> None:
        self.names.append(event.event)


class TestManualMode:
    """The server never moves a run by itself."""

    def test_sdk_sees_each_change(self, engine: Engine, client: openai.OpenAI) -> None:
        """Create through the SDK, drive through the engine, read through the SDK."""
        runs = client.beta.threads.runs
        thread = client.beta.threads.create().id
        run = runs.create(thread_id=thread, assistant_id="asst_a", tools=[WEATHER_TOOL])
        assert runs.retrieve(thread_id=thread, run_id=run.id).status == "queued"
        assert runs.retrieve(thread_id=thread, run_id=run.id).status == "queued"
        engine.start(run.id)
        assert runs.retrieve(thread_id=thread, run_id=run.id).status == "in_progress"
        engine.require_action(run.id, [CALL])
        seen = runs.retrieve(thread_id=thread, run_id=run.id)
        assert seen.status == "requires_action"
        submitted = runs.submit_tool_outputs(
            thread_id=thread,
            run_id=run.id,
            tool_outputs=[{"tool_call_id": "call_1", "output": "x"}],
        )
        assert submitted.status == "queued"
        assert engine.get(run.id).status is RunStatus.QUEUED
        engine.start(run.id)
        engine.complete(run.id, usage=USAGE)
        done = runs.retrieve(thread_id=thread, run_id=run.id)
        assert done.status == "completed"
        assert done.usage is not None
        assert done.usage.total_tokens == 13
        assert runs.steps.list(thread_id=thread, run_id=run.id).data == []
        assert client.beta.threads.messages.list(thread_id=thread).data == []

    def test_poll_interval_header(self, engine: Engine, client: openai.OpenAI) -> None:
        """Manual mode polls every 20 ms (real); a scripted run on virtual time says 0."""
        thread = client.beta.threads.create().id
        run = client.beta.threads.runs.create(thread_id=thread, assistant_id="asst_a")
        raw = client.beta.threads.runs.with_raw_response.retrieve(thread_id=thread, run_id=run.id)
        assert raw.headers["openai-poll-after-ms"] == "20"
        with openai_client(engine, Script().complete(polls=3)) as scripted:
            thread = scripted.beta.threads.create().id
            run = scripted.beta.threads.runs.create(thread_id=thread, assistant_id="asst_a")
            raw = scripted.beta.threads.runs.with_raw_response.retrieve(
                thread_id=thread, run_id=run.id
            )
            assert raw.headers["openai-poll-after-ms"] == "0"

    def test_create_and_poll_while_the_test_drives(
        self, engine: Engine, client: openai.OpenAI, pool: concurrent.futures.Executor
    ) -> None:
        """``create_and_poll`` waits in a thread until the test completes the run."""
        thread = client.beta.threads.create().id
        future = pool.submit(
            client.beta.threads.runs.create_and_poll, thread_id=thread, assistant_id="asst_a"
        )
        wait_until(lambda: engine.runs(thread_id=thread), "the run")
        run_id = engine.runs(thread_id=thread)[0].id
        engine.start(run_id)
        engine.complete(run_id, usage=USAGE)
        assert future.result(timeout=10).status == "completed"

    def test_expires_while_waiting(
        self,
        engine: Engine,
        clock: FakeClock,
        client: openai.OpenAI,
        pool: concurrent.futures.Executor,
    ) -> None:
        """The test moves the clock past ``expires_at``: the waiting poll sees ``expired``."""
        thread = client.beta.threads.create().id
        future = pool.submit(
            client.beta.threads.runs.create_and_poll, thread_id=thread, assistant_id="asst_a"
        )
        wait_until(lambda: engine.runs(thread_id=thread), "the run")
        run_id = engine.runs(thread_id=thread)[0].id
        engine.start(run_id)
        clock.advance(600)
        run = future.result(timeout=10)
        assert run.status == "expired"
        assert run.expires_at is None

    def test_stream_follows_the_engine(
        self, engine: Engine, client: openai.OpenAI, pool: concurrent.futures.Executor
    ) -> None:
        """An open stream forwards each engine event as it happens and closes after
        ``requires_action``; manual mode makes no step events."""
        thread = client.beta.threads.create().id
        handler = Names()

        def consume() -> Any:
            with client.beta.threads.runs.stream(
                thread_id=thread,
                assistant_id="asst_a",
                tools=[WEATHER_TOOL],
                event_handler=handler,
            ) as stream:
                stream.until_done()
                return stream.get_final_run()

        future = pool.submit(consume)
        wait_until(
            lambda: handler.names[:2] == ["thread.run.created", "thread.run.queued"], "created"
        )
        run_id = engine.runs(thread_id=thread)[0].id
        engine.start(run_id)
        wait_until(lambda: "thread.run.in_progress" in handler.names, "in_progress")
        engine.require_action(run_id, [CALL])
        final = future.result(timeout=10)
        assert final.status == "requires_action"
        assert handler.names == [
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.run.requires_action",
        ]

    def test_stream_shows_expiry(
        self,
        engine: Engine,
        clock: FakeClock,
        client: openai.OpenAI,
        pool: concurrent.futures.Executor,
    ) -> None:
        """An open stream re-reads its run at the poll interval: a lapse of
        ``expires_at`` shows as ``thread.run.expired``."""
        thread = client.beta.threads.create().id
        handler = Names()

        def consume() -> Any:
            with client.beta.threads.runs.stream(
                thread_id=thread, assistant_id="asst_a", event_handler=handler
            ) as stream:
                stream.until_done()
                return stream.get_final_run()

        future = pool.submit(consume)
        wait_until(lambda: "thread.run.queued" in handler.names, "queued")
        clock.advance(600)
        assert future.result(timeout=10).status == "expired"
        assert handler.names[-1] == "thread.run.expired"

    def test_submit_stream_in_manual_mode(
        self, engine: Engine, client: openai.OpenAI, pool: concurrent.futures.Executor
    ) -> None:
        """A submit stream starts at ``queued`` and stays open while the test drives."""
        thread = client.beta.threads.create().id
        run = client.beta.threads.runs.create(
            thread_id=thread, assistant_id="asst_a", tools=[WEATHER_TOOL]
        )
        engine.start(run.id)
        engine.require_action(run.id, [CALL])
        handler = Names()

        def consume() -> Any:
            with client.beta.threads.runs.submit_tool_outputs_stream(
                thread_id=thread,
                run_id=run.id,
                tool_outputs=[{"tool_call_id": "call_1", "output": "x"}],
                event_handler=handler,
            ) as stream:
                stream.until_done()
                return stream.get_final_run()

        future = pool.submit(consume)
        wait_for(engine, run.id, "queued")
        engine.start(run.id)
        engine.fail(run.id, code="server_error", message="boom")
        final = future.result(timeout=10)
        assert final.status == "failed"
        assert handler.names == ["thread.run.queued", "thread.run.in_progress", "thread.run.failed"]

    def test_a_run_created_through_the_engine_is_visible(
        self, engine: Engine, client: openai.OpenAI
    ) -> None:
        """A thread exists once a run of the engine names it."""
        run = engine.create(thread_id="thread_engine", assistant_id="asst_a")
        thread = client.beta.threads.retrieve("thread_engine")
        assert thread.id == "thread_engine"
        page = client.beta.threads.runs.list(thread_id="thread_engine")
        assert [r.id for r in page.data] == [run.id]


class TestConcurrency:
    """The in-process client serves concurrent requests from several threads."""

    def test_many_threads(self, engine: Engine) -> None:
        """Sixteen threads, each a thread of its own with a scripted tool round."""
        script = Script().require_action("get_weather", polls=1).complete(polls=1)

        def one(client: openai.OpenAI) -> str:
            runs = client.beta.threads.runs
            thread = client.beta.threads.create().id
            run = runs.create_and_poll(thread_id=thread, assistant_id="a", tools=[WEATHER_TOOL])
            assert run.required_action is not None
            outputs = [
                {"tool_call_id": c.id, "output": "ok"}
                for c in run.required_action.submit_tool_outputs.tool_calls
            ]
            done = runs.submit_tool_outputs_and_poll(
                thread_id=thread, run_id=run.id, tool_outputs=outputs
            )
            return str(done.status)

        with (
            openai_client(engine, script) as client,
            concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool,
        ):
            statuses = list(pool.map(lambda _: one(client), range(16)))
        assert statuses == ["completed"] * 16

    def test_two_clients_on_one_app(self, engine: Engine) -> None:
        """Clients made from one app share its threads and runs."""
        app = create_app(engine, Script().complete())
        try:
            with openai_client(app) as first, openai_client(app) as second:
                thread = first.beta.threads.create().id
                run = first.beta.threads.runs.create(thread_id=thread, assistant_id="a")
                seen = second.beta.threads.runs.poll(thread_id=thread, run_id=run.id)
                assert seen.status == "completed"
        finally:
            app.close()
