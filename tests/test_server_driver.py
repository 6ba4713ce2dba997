"""
How the server plays scripts: polls, virtual latency, silence, cancels, faults and
script errors, seen through the official SDK in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import openai
import pytest

from runflow import Engine
from runflow.server import create_app
from runflow.testing import Complete, Fail, FakeClock, Script, ScriptMap, openai_client

START = 1_700_000_000
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


@attrs.define
class Play:
    """An SDK client playing one script, on an engine with a FakeClock."""

    engine: Engine
    clock: FakeClock
    client: openai.OpenAI
    thread: str = ""

    def create(self, **kwargs: Any) -> Any:
        self.thread = self.client.beta.threads.create().id
        params: dict[str, Any] = {"assistant_id": "asst_a", "tools": [WEATHER_TOOL]}
        params.update(kwargs)
        return self.client.beta.threads.runs.create(thread_id=self.thread, **params)

    def poll(self, run_id: str) -> Any:
        return self.client.beta.threads.runs.retrieve(thread_id=self.thread, run_id=run_id)

    def statuses(self, run_id: str, n: int) -> list[str]:
        return [self.poll(run_id).status for _ in range(n)]

    def submit(self, run: Any) -> Any:
        outputs = [
            {"tool_call_id": c.id, "output": "ok"}
            for c in run.required_action.submit_tool_outputs.tool_calls
        ]
        return self.client.beta.threads.runs.submit_tool_outputs(
            thread_id=self.thread, run_id=run.id, tool_outputs=outputs
        )


@pytest.fixture(name="play")
def _play() -> Iterator[Any]:
    made: list[openai.OpenAI] = []

    def make(script: Any, **client_kwargs: Any) -> Play:
        clock = FakeClock(START)
        engine = Engine(clock=clock)
        client = openai_client(engine, script, **client_kwargs)
        made.append(client)
        return Play(engine, clock, client)

    yield make
    for client in made:
        client.close()


class TestPolls:
    """``polls=n``: n polls see the run unchanged before the step happens."""

    def test_start_waits(self, play: Any) -> None:
        """``start(polls=2)``: queued, queued, then the rest at once."""
        p = play(Script().start(polls=2).complete())
        run = p.create()
        assert p.statuses(run.id, 3) == ["queued", "queued", "completed"]

    def test_tool_call_waits(self, play: Any) -> None:
        """The run starts by itself; the tool call comes on the third poll."""
        p = play(Script().require_action(polls=2).complete())
        run = p.create()
        assert p.statuses(run.id, 3) == ["in_progress", "in_progress", "requires_action"]

    def test_after_the_submit(self, play: Any) -> None:
        """After outputs arrive the script goes on where it was."""
        p = play(Script().require_action().complete(polls=1))
        run = p.create()
        waiting = p.poll(run.id)
        assert p.submit(waiting).status == "queued"
        assert p.statuses(run.id, 2) == ["in_progress", "completed"]

    def test_the_test_may_start_it(self, play: Any) -> None:
        """A run the test started skips the script's start."""
        p = play(Script().start(polls=5).complete())
        run = p.create()
        p.engine.start(run.id)
        assert p.poll(run.id).status == "completed"


class TestVirtualTime:
    """Latency moves the engine's clock; polls say 0 ms."""

    def test_latency(self, play: Any) -> None:
        """A 10-minute script: started after 30 s, completed 500 s later."""
        p = play(Script().start(after=30).complete(after=500))
        run = p.create()
        done = p.client.beta.threads.runs.poll(thread_id=p.thread, run_id=run.id)
        assert done.status == "completed"
        assert done.started_at == START + 30
        assert done.completed_at == START + 530
        assert p.clock.now() == START + 530

    def test_latency_past_the_deadline_expires(self, play: Any) -> None:
        """A step due after ``expires_at`` never happens: the run expires."""
        p = play(Script().complete(after=700))
        run = p.create()
        assert p.poll(run.id).status == "expired"

    def test_never_answer(self, play: Any) -> None:
        """Silence: the clock jumps to ``expires_at``."""
        p = play(Script().start().never_answer())
        run = p.create()
        assert p.statuses(run.id, 1) == ["expired"]
        assert p.clock.now() == START + 600

    def test_explicit_expire_from_queued(self, play: Any) -> None:
        """``expire()`` may end a queued run."""
        p = play(Script().expire(polls=1))
        run = p.create()
        assert p.statuses(run.id, 2) == ["queued", "expired"]

    def test_a_real_clock_waits_for_real(self, play: Any) -> None:
        """With a clock that cannot jump, latency is real: polls say the manual interval."""

        class Wall:
            t = START

            def now(self) -> int:
                return self.t

        wall = Wall()
        engine = Engine(clock=wall)
        with openai_client(engine, Script().complete(after=5)) as client:
            runs = client.beta.threads.runs
            thread = client.beta.threads.create().id
            run = runs.create(thread_id=thread, assistant_id="a")
            raw = runs.with_raw_response.retrieve(thread_id=thread, run_id=run.id)
            assert raw.parse().status == "in_progress"
            assert raw.headers["openai-poll-after-ms"] == "20"
            wall.t += 5
            assert runs.retrieve(thread_id=thread, run_id=run.id).status == "completed"


class TestEnds:
    """How scripts end runs, and what they leave in the thread."""

    def test_incomplete_with_a_partial_reply(self, play: Any) -> None:
        """``mark_incomplete`` with a reply: an ``incomplete`` message."""
        p = play(Script().mark_incomplete("max_completion_tokens", reply="Half an ans"))
        run = p.create()
        done = p.poll(run.id)
        assert done.status == "incomplete"
        assert done.incomplete_details.reason == "max_completion_tokens"
        (message,) = p.client.beta.threads.messages.list(thread_id=p.thread).data
        assert message.status == "incomplete"
        assert message.incomplete_details is not None

    def test_budget_turns_completion_into_incomplete(self, play: Any) -> None:
        """A reply whose usage crosses the run's budget ends it incomplete (engine rule)."""
        p = play(Script().complete("Long.", usage={"prompt_tokens": 10, "completion_tokens": 300}))
        run = p.create(max_completion_tokens=256)
        done = p.poll(run.id)
        assert done.status == "incomplete"
        assert done.incomplete_details.reason == "max_completion_tokens"

    def test_tool_usage_accrues(self, play: Any) -> None:
        """A tool round's usage is part of the run's final usage."""
        p = play(
            Script()
            .require_action(usage={"prompt_tokens": 5, "completion_tokens": 1})
            .complete(usage={"prompt_tokens": 7, "completion_tokens": 2})
        )
        run = p.create()
        p.submit(p.poll(run.id))
        done = p.client.beta.threads.runs.poll(thread_id=p.thread, run_id=run.id)
        assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (12, 3)

    def test_reply_none_makes_no_message(self, play: Any) -> None:
        """``complete(None)``: completed, no message, no step."""
        p = play(Script().complete(None))
        run = p.create()
        assert p.poll(run.id).status == "completed"
        assert p.client.beta.threads.messages.list(thread_id=p.thread).data == []
        assert p.client.beta.threads.runs.steps.list(thread_id=p.thread, run_id=run.id).data == []


class TestCancels:
    """The script's reaction to a client's cancel."""

    def test_cancel_succeeds_after_polls(self, play: Any) -> None:
        """``when_cancelled(Cancel(polls=1))``: cancelling once, then cancelled."""
        from runflow.testing import Cancel  # noqa: PLC0415

        p = play(Script().complete(polls=9).when_cancelled(Cancel(polls=1)))
        run = p.create()
        p.client.beta.threads.runs.cancel(thread_id=p.thread, run_id=run.id)
        assert p.statuses(run.id, 2) == ["cancelling", "cancelled"]

    def test_cancel_loses(self, play: Any) -> None:
        """A lost cancel completes the run, with its reply."""
        p = play(Script().complete(polls=9).cancel_loses("Too late to stop."))
        run = p.create()
        p.client.beta.threads.runs.cancel(thread_id=p.thread, run_id=run.id)
        assert p.poll(run.id).status == "completed"
        (message,) = p.client.beta.threads.messages.list(thread_id=p.thread).data
        assert message.content[0].text.value == "Too late to stop."

    def test_cancel_ends_failed(self, play: Any) -> None:
        """Any ending step may follow a cancel."""
        p = play(Script().complete(polls=9).when_cancelled(Fail(code="rate_limit_exceeded")))
        run = p.create()
        p.client.beta.threads.runs.cancel(thread_id=p.thread, run_id=run.id)
        assert p.poll(run.id).last_error.code == "rate_limit_exceeded"

    def test_cancel_while_waiting_for_outputs(self, play: Any) -> None:
        """Cancelled in ``requires_action``: the tool step ends ``cancelled``."""
        p = play(Script().require_action().complete())
        run = p.create()
        p.poll(run.id)
        p.client.beta.threads.runs.cancel(thread_id=p.thread, run_id=run.id)
        assert p.poll(run.id).status == "cancelled"
        (step,) = p.client.beta.threads.runs.steps.list(thread_id=p.thread, run_id=run.id).data
        assert step.status == "cancelled"
        assert step.cancelled_at is not None


class TestFaults:
    """Injected HTTP errors refuse the request and leave the run as it was."""

    def test_retrieve_fault(self, play: Any) -> None:
        """The second poll is a 500; the third goes on."""
        p = play(Script().complete(polls=3).http_error(500, on="retrieve", skip=1))
        run = p.create()
        assert p.poll(run.id).status == "in_progress"
        with pytest.raises(openai.InternalServerError) as caught:
            p.poll(run.id)
        assert caught.value.body["type"] == "server_error"  # type: ignore[index]
        assert p.poll(run.id).status == "in_progress"

    def test_submit_fault_changes_nothing(self, play: Any) -> None:
        """A 429 on the submit: the run still waits; the retry is accepted."""
        p = play(Script().require_action().complete().http_error(429, on="submit_tool_outputs"))
        run = p.create()
        waiting = p.poll(run.id)
        with pytest.raises(openai.RateLimitError) as caught:
            p.submit(waiting)
        assert caught.value.code == "rate_limit_exceeded"
        assert p.engine.get(run.id).status == "requires_action"
        assert p.submit(waiting).status == "queued"

    def test_sdk_retries_a_fault(self, play: Any) -> None:
        """With retries on, the SDK gets past a one-off 503 by itself (retry-after-ms: 1)."""
        p = play(Script().complete().http_error(503, on="retrieve"), max_retries=2)
        run = p.create()
        assert p.poll(run.id).status == "completed"

    def test_cancel_fault(self, play: Any) -> None:
        """A fault on cancel leaves the run uncancelled."""
        p = play(Script().complete(polls=2).http_error(500, on="cancel", message="nope"))
        run = p.create()
        with pytest.raises(openai.InternalServerError) as caught:
            p.client.beta.threads.runs.cancel(thread_id=p.thread, run_id=run.id)
        assert caught.value.body["message"] == "nope"  # type: ignore[index]
        assert p.engine.get(run.id).status == "queued"


class TestScriptErrors:
    """A script that cannot be played on a run fails it, saying why."""

    def test_unknown_tool(self, play: Any) -> None:
        """A tool call naming no tool of the run."""
        p = play(Script().require_action("send_email").complete())
        run = p.create()
        done = p.poll(run.id)
        assert done.status == "failed"
        assert done.last_error.code == "server_error"
        assert done.last_error.message.startswith("runflow script error:")
        assert "send_email" in done.last_error.message

    def test_no_function_tool(self, play: Any) -> None:
        """A call without a name on a run without function tools."""
        p = play(Script().require_action().complete())
        run = p.create(tools=[])
        assert "no function tool" in p.poll(run.id).last_error.message


class TestChoosing:
    """Keyed scripts pick per run; unkeyed runs are left to the test."""

    def test_metadata_and_manual(self) -> None:
        """A metadata key picks the script; other runs stay queued (manual)."""
        engine = Engine(clock=FakeClock(START))
        scripts = ScriptMap(metadata={"case": {"fail": Script().fail()}})
        app = create_app(engine, scripts)
        try:
            with openai_client(app) as client:
                runs = client.beta.threads.runs
                t1 = client.beta.threads.create().id
                t2 = client.beta.threads.create().id
                failing = runs.create(thread_id=t1, assistant_id="a", metadata={"case": "fail"})
                manual = runs.create(thread_id=t2, assistant_id="a")
                assert runs.retrieve(thread_id=t1, run_id=failing.id).status == "failed"
                assert runs.retrieve(thread_id=t2, run_id=manual.id).status == "queued"
        finally:
            app.close()

    def test_assistant_defaults(self) -> None:
        """``assistants=`` gives model, instructions and tools where requests give none."""
        engine = Engine(clock=FakeClock(START))
        assistants = {
            "asst_w": {"model": "gpt-4.1", "instructions": "Be brief.", "tools": [WEATHER_TOOL]}
        }
        with openai_client(
            engine, Script().require_action().complete(), assistants=assistants
        ) as client:
            runs = client.beta.threads.runs
            thread = client.beta.threads.create().id
            run = runs.create(
                thread_id=thread, assistant_id="asst_w", additional_instructions="Hi."
            )
            assert (run.model, run.instructions) == ("gpt-4.1", "Be brief.\nHi.")
            assert runs.retrieve(thread_id=thread, run_id=run.id).status == "requires_action"
            other = client.beta.threads.create().id
            plain = runs.create(thread_id=other, assistant_id="asst_x", model="gpt-4o-mini")
            assert (plain.model, plain.instructions, plain.tools) == ("gpt-4o-mini", "", [])
        with pytest.raises(ValueError, match="unknown settings"):
            create_app(engine, assistants={"a": {"colour": "red"}})

    def test_complete_record_in_a_script(self) -> None:
        """Step records work as well as the builder."""
        assert Script(steps=[Complete(reply="x")]).check().steps[0] == Complete(reply="x")
