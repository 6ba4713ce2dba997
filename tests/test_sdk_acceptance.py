"""
The official ``openai`` SDK, unmodified, against runflow's runs API: the same suite
in-process (an httpx transport calling the ASGI app) and over a loopback socket against
``runflow serve`` (``python -m runflow.server`` in a subprocess).

The SDK runs with ``_strict_response_validation=True``, so every response it parses is
validated by its own models (``Run.model_validate`` and friends); every run it hands
back is also checked against run_object.schema.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import jsonschema
import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent
from openai.types.beta.threads import Run

from runflow import Engine
from runflow.server import create_app
from runflow.server._cli import scripts_for
from runflow.testing import FakeClock, openai_client
from tests.serving import ROOT, serving

RUN_SCHEMA = json.loads(
    (ROOT.parent / "shared" / "spec" / "run_object.schema.json").read_text(encoding="utf-8")
)
RUN_VALIDATOR = jsonschema.Draft202012Validator(RUN_SCHEMA)

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

#: The scenarios both servers play, by assistant id (``runflow serve --scenario``).
SCENARIOS = (
    "asst_reply=reply",
    "asst_tool=tool-call",
    "asst_expire=expire",
    "asst_slow=slow",
    "asst_cancel_loses=cancel-loses",
)
TERMINAL = {"completed", "incomplete", "failed", "cancelled", "expired"}


def check_run(run: Run) -> Run:
    """A run the SDK returned: valid for the SDK's model and the JSON schema."""
    wire = run.to_dict()
    errors = [f"{e.json_path}: {e.message}" for e in RUN_VALIDATOR.iter_errors(wire)]
    assert not errors, errors
    Run.model_validate(wire)
    return run


@attrs.define
class Sdk:
    """An SDK client and where it talks to."""

    client: openai.OpenAI
    where: str

    @property
    def runs(self) -> Any:
        return self.client.beta.threads.runs

    def thread(self) -> str:
        return str(self.client.beta.threads.create().id)


@pytest.fixture(name="served", scope="module")
def _served() -> Iterator[str]:
    """One ``runflow serve`` for the module, playing :data:`SCENARIOS`."""
    options = [arg for value in SCENARIOS for arg in ("--scenario", value)]
    with serving(*options) as url:
        yield url


@pytest.fixture(name="sdk", params=["in-process", "loopback"])
def _sdk(request: pytest.FixtureRequest) -> Iterator[Sdk]:
    if request.param == "in-process":
        engine = Engine(clock=FakeClock())
        app = create_app(engine, scripts_for(SCENARIOS))
        client = openai_client(app, _strict_response_validation=True)
        try:
            yield Sdk(client, "in-process")
        finally:
            client.close()
            app.close()
    else:
        url = request.getfixturevalue("served")
        client = openai.OpenAI(
            api_key="sk-test", base_url=url, max_retries=0, _strict_response_validation=True
        )
        try:
            yield Sdk(client, "loopback")
        finally:
            client.close()


class Recorder(AssistantEventHandler):
    """Keeps every event; checks every run it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def on_event(self, event: AssistantStreamEvent) -> None:
        self.names.append(event.event)
        if event.event.startswith("thread.run.") and not event.event.startswith("thread.run.step"):
            check_run(event.data)  # type: ignore[arg-type]


class TestPolling:
    """The polling helpers reach the end the script says."""

    def test_create_and_poll_completes(self, sdk: Sdk) -> None:
        """``create_and_poll`` ends ``completed`` with usage, and the reply is a message."""
        thread = sdk.thread()
        run = check_run(sdk.runs.create_and_poll(thread_id=thread, assistant_id="asst_reply"))
        assert run.status == "completed"
        assert run.usage is not None
        assert run.expires_at is None
        messages = sdk.client.beta.threads.messages.list(thread_id=thread)
        assert [m.role for m in messages.data] == ["assistant"]
        assert messages.data[0].content[0].text.value == "Hello from runflow."  # type: ignore[union-attr]

    def test_requires_action_then_submit_and_poll(self, sdk: Sdk) -> None:
        """``requires_action`` → ``submit_tool_outputs_and_poll`` → ``completed``, and
        the tool-calls step holds the output."""
        thread = sdk.thread()
        run = check_run(
            sdk.runs.create_and_poll(
                thread_id=thread, assistant_id="asst_tool", tools=[WEATHER_TOOL]
            )
        )
        assert run.status == "requires_action"
        assert run.required_action is not None
        calls = run.required_action.submit_tool_outputs.tool_calls
        assert [c.function.name for c in calls] == ["get_weather"]
        outputs = [{"tool_call_id": c.id, "output": "sunny"} for c in calls]
        run = check_run(
            sdk.runs.submit_tool_outputs_and_poll(
                thread_id=thread, run_id=run.id, tool_outputs=outputs
            )
        )
        assert run.status == "completed"
        assert run.required_action is None
        steps = sdk.runs.steps.list(thread_id=thread, run_id=run.id, order="asc")
        assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]
        tool_step = steps.data[0].step_details
        assert tool_step.type == "tool_calls"
        assert tool_step.tool_calls[0].function.output == "sunny"  # type: ignore[union-attr]

    def test_cancel(self, sdk: Sdk) -> None:
        """``runs.cancel`` answers ``cancelling``; polling then sees ``cancelled``."""
        thread = sdk.thread()
        run = check_run(sdk.runs.create(thread_id=thread, assistant_id="asst_slow"))
        cancelling = check_run(sdk.runs.cancel(thread_id=thread, run_id=run.id))
        assert cancelling.status == "cancelling"
        assert cancelling.cancelled_at is None
        done = check_run(sdk.runs.poll(thread_id=thread, run_id=run.id))
        assert done.status == "cancelled"
        assert done.cancelled_at is not None

    def test_cancel_loses_the_race(self, sdk: Sdk) -> None:
        """A scripted lost cancel: ``cancelling`` → ``completed`` (LIFECYCLE T10)."""
        thread = sdk.thread()
        run = sdk.runs.create(thread_id=thread, assistant_id="asst_cancel_loses")
        assert sdk.runs.cancel(thread_id=thread, run_id=run.id).status == "cancelling"
        done = check_run(sdk.runs.poll(thread_id=thread, run_id=run.id))
        assert done.status == "completed"

    def test_expires_while_waiting(self, sdk: Sdk) -> None:
        """A run the model never answers expires; ``create_and_poll`` returns at once
        (ten virtual minutes) with ``expired``."""
        thread = sdk.thread()
        run = check_run(sdk.runs.create_and_poll(thread_id=thread, assistant_id="asst_expire"))
        assert run.status == "expired"
        assert run.expires_at is None
        assert run.started_at is not None

    def test_slow_script_takes_virtual_time(self, sdk: Sdk) -> None:
        """A run scripted to take four minutes completes on the first polls, its
        timestamps four virtual minutes apart."""
        thread = sdk.thread()
        run = check_run(sdk.runs.create_and_poll(thread_id=thread, assistant_id="asst_slow"))
        assert run.status == "completed"
        assert run.completed_at is not None
        assert run.started_at is not None
        assert run.completed_at - run.started_at >= 240


class TestStreams:
    """``runs.stream`` and ``submit_tool_outputs_stream`` with an AssistantEventHandler."""

    def test_stream_to_completion(self, sdk: Sdk) -> None:
        """Every event in the real order (spec/run_stream_event.md, order 1) and
        ``get_final_run()``."""
        thread = sdk.thread()
        handler = Recorder()
        with sdk.runs.stream(
            thread_id=thread, assistant_id="asst_reply", event_handler=handler
        ) as stream:
            stream.until_done()
            final = check_run(stream.get_final_run())
            text = stream.get_final_messages()[0].content[0].text.value  # type: ignore[union-attr]
        assert final.status == "completed"
        assert text == "Hello from runflow."
        names = handler.names
        head = [
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.run.step.created",
            "thread.run.step.in_progress",
            "thread.message.created",
            "thread.message.in_progress",
        ]
        assert names[: len(head)] == head
        assert set(names[len(head) : -3]) == {"thread.message.delta"}
        assert names[-3:] == [
            "thread.message.completed",
            "thread.run.step.completed",
            "thread.run.completed",
        ]

    def test_stream_tool_call_then_submit_stream(self, sdk: Sdk) -> None:
        """The first stream ends at ``requires_action`` (order 2); the submit stream
        starts with the completed tool step (order 3) and has no ``created``."""
        thread = sdk.thread()
        first = Recorder()
        with sdk.runs.stream(
            thread_id=thread, assistant_id="asst_tool", tools=[WEATHER_TOOL], event_handler=first
        ) as stream:
            stream.until_done()
            run = check_run(stream.get_final_run())
        assert run.status == "requires_action"
        assert first.names == [
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.run.step.created",
            "thread.run.step.in_progress",
            "thread.run.step.delta",
            "thread.run.requires_action",
        ]
        assert run.required_action is not None
        call = run.required_action.submit_tool_outputs.tool_calls[0]
        second = Recorder()
        with sdk.runs.submit_tool_outputs_stream(
            thread_id=thread,
            run_id=run.id,
            tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}],
            event_handler=second,
        ) as stream:
            stream.until_done()
            final = check_run(stream.get_final_run())
        assert final.status == "completed"
        assert second.names[:3] == [
            "thread.run.step.completed",
            "thread.run.queued",
            "thread.run.in_progress",
        ]
        assert "thread.run.created" not in second.names
        assert second.names[-1] == "thread.run.completed"

    def test_stream_of_create_thread_and_run(self, sdk: Sdk) -> None:
        """``threads.create_and_run_stream`` starts with ``thread.created``."""
        handler = Recorder()
        with sdk.client.beta.threads.create_and_run_stream(
            assistant_id="asst_reply",
            thread={"messages": [{"role": "user", "content": "Hi"}]},
            event_handler=handler,
        ) as stream:
            stream.until_done()
            final = check_run(stream.get_final_run())
        assert handler.names[:2] == ["thread.created", "thread.run.created"]
        assert final.status == "completed"


class TestList:
    """``runs.list`` pages as the SDK expects."""

    def test_paging_with_after(self, sdk: Sdk) -> None:
        """Five runs, pages of two: auto-paging sees all five newest first; an explicit
        ``after`` cursor continues after that run; ``order="asc"`` reverses."""
        thread = sdk.thread()
        made = [
            sdk.runs.create_and_poll(thread_id=thread, assistant_id="asst_reply").id
            for _ in range(5)
        ]
        page = sdk.runs.list(thread_id=thread, limit=2)
        assert [r.id for r in page.data] == made[::-1][:2]
        assert page.has_more is True
        assert [check_run(r).id for r in page] == made[::-1]  # follows `after` by itself
        after = sdk.runs.list(thread_id=thread, limit=2, after=made[3])
        assert [r.id for r in after.data] == [made[2], made[1]]
        asc = sdk.runs.list(thread_id=thread, limit=10, order="asc")
        assert [r.id for r in asc.data] == made
        assert asc.has_more is False
        before = sdk.runs.list(thread_id=thread, limit=2, before=made[1])
        assert [r.id for r in before.data] == [made[3], made[2]]

    def test_unknown_cursor_is_a_400(self, sdk: Sdk) -> None:
        """An ``after`` that names no run of the thread is a BadRequestError."""
        thread = sdk.thread()
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.runs.list(thread_id=thread, after="run_nope")
        assert caught.value.param == "after"


class TestErrors:
    """Refusals arrive as the SDK's exception classes with OpenAI's messages."""

    def error(self, call: Callable[[], Any], cls: type[openai.APIStatusError]) -> Any:
        with pytest.raises(cls) as caught:
            call()
        body = caught.value.body
        assert isinstance(body, dict)
        assert set(body) == {"message", "type", "param", "code"}
        assert body["type"] == "invalid_request_error"
        return caught.value

    def test_submit_on_completed_run(self, sdk: Sdk) -> None:
        """``Runs in status "completed" do not accept tool outputs.``"""
        thread = sdk.thread()
        run = sdk.runs.create_and_poll(thread_id=thread, assistant_id="asst_reply")
        error = self.error(
            lambda: sdk.runs.submit_tool_outputs(
                thread_id=thread,
                run_id=run.id,
                tool_outputs=[{"tool_call_id": "call_1", "output": "x"}],
            ),
            openai.BadRequestError,
        )
        assert error.body["message"] == 'Runs in status "completed" do not accept tool outputs.'
        assert error.status_code == 400

    def test_cancel_on_cancelled_run(self, sdk: Sdk) -> None:
        """``Cannot cancel run with status 'cancelled'.``"""
        thread = sdk.thread()
        run = sdk.runs.create(thread_id=thread, assistant_id="asst_slow")
        sdk.runs.cancel(thread_id=thread, run_id=run.id)
        assert sdk.runs.poll(thread_id=thread, run_id=run.id).status == "cancelled"
        error = self.error(
            lambda: sdk.runs.cancel(thread_id=thread, run_id=run.id), openai.BadRequestError
        )
        assert error.body["message"] == "Cannot cancel run with status 'cancelled'."

    def test_missing_tool_outputs(self, sdk: Sdk) -> None:
        """``Expected tool outputs for call_ids [...], got []``, and the run still waits."""
        thread = sdk.thread()
        run = sdk.runs.create_and_poll(
            thread_id=thread, assistant_id="asst_tool", tools=[WEATHER_TOOL]
        )
        assert run.required_action is not None
        call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
        error = self.error(
            lambda: sdk.runs.submit_tool_outputs(thread_id=thread, run_id=run.id, tool_outputs=[]),
            openai.BadRequestError,
        )
        assert error.body["message"] == f"Expected tool outputs for call_ids ['{call_id}'], got []"
        again = sdk.runs.retrieve(thread_id=thread, run_id=run.id)
        assert again.status == "requires_action"

    def test_unknown_run(self, sdk: Sdk) -> None:
        """``No run found with id 'run_nope'.`` (404)."""
        thread = sdk.thread()
        error = self.error(
            lambda: sdk.runs.retrieve(thread_id=thread, run_id="run_nope"), openai.NotFoundError
        )
        assert error.body["message"] == "No run found with id 'run_nope'."
        assert error.status_code == 404

    def test_unknown_thread(self, sdk: Sdk) -> None:
        """``No thread found with id 'thread_nope'.`` (404)."""
        error = self.error(
            lambda: sdk.runs.create(thread_id="thread_nope", assistant_id="asst_reply"),
            openai.NotFoundError,
        )
        assert error.body["message"] == "No thread found with id 'thread_nope'."

    def test_thread_busy(self, sdk: Sdk) -> None:
        """A second run on a thread with an active run: ``Thread <id> already has an
        active run <run id>.``"""
        thread = sdk.thread()
        run = sdk.runs.create(thread_id=thread, assistant_id="asst_slow")
        error = self.error(
            lambda: sdk.runs.create(thread_id=thread, assistant_id="asst_slow"),
            openai.BadRequestError,
        )
        assert error.body["message"] == f"Thread {thread} already has an active run {run.id}."

    def test_bad_parameter_is_named(self, sdk: Sdk) -> None:
        """A wrong type is a 400 naming the parameter."""
        thread = sdk.thread()
        error = self.error(
            lambda: sdk.runs.create(
                thread_id=thread,
                assistant_id="asst_reply",
                temperature=3,
            ),
            openai.BadRequestError,
        )
        assert error.param == "temperature"
        assert "temperature" in error.body["message"]

    def test_modify_only_once_ended(self, sdk: Sdk) -> None:
        """Modify run: refused while active (``Cannot update run with status
        'queued'.``), accepted once ended."""
        thread = sdk.thread()
        run = sdk.runs.create(thread_id=thread, assistant_id="asst_reply")
        error = self.error(
            lambda: sdk.runs.update(thread_id=thread, run_id=run.id, metadata={"k": "v"}),
            openai.BadRequestError,
        )
        assert error.body["message"] == "Cannot update run with status 'queued'."
        sdk.runs.poll(thread_id=thread, run_id=run.id)
        updated = check_run(sdk.runs.update(thread_id=thread, run_id=run.id, metadata={"k": "v"}))
        assert updated.metadata == {"k": "v"}
