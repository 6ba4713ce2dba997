"""
The runs API on the wire (raw HTTP through the in-process transport): OpenAI's error
JSON and messages, request validation, trust limits, paging, threads, messages, steps
and the SSE format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from openai.types.beta import AssistantStreamEvent, Thread
from openai.types.beta.threads import Message
from openai.types.beta.threads.runs import RunStep
from pydantic import TypeAdapter

from runflow import Engine, ValidationError
from runflow.server import RunsApp, create_app
from runflow.testing import FakeClock, InProcessTransport, Script

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "spec"
TOOL = {"type": "function", "function": {"name": "get_weather"}}
EVENTS = TypeAdapter(AssistantStreamEvent)


@pytest.fixture(name="engine")
def _engine() -> Engine:
    return Engine(clock=FakeClock())


def http_for(app: RunsApp) -> httpx2.Client:
    return httpx2.Client(transport=InProcessTransport(app), base_url="http://test")


@pytest.fixture(name="http")
def _http(engine: Engine) -> Iterator[httpx2.Client]:
    app = create_app(engine)
    with http_for(app) as client:
        yield client
    app.close()


def error_of(response: httpx2.Response, status: int) -> dict[str, Any]:
    """The OpenAI error object of ``response``, checked for shape and status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def new_thread(http: httpx2.Client) -> str:
    return str(http.post("/v1/threads", json={}).json()["id"])


class TestRouting:
    """Unknown URLs and methods."""

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/v1/nope"),
            ("GET", "/nope"),
            ("DELETE", "/v1/threads/thread_1"),
            ("PUT", "/v1/threads"),
            ("GET", "/v1/threads/thread_1/runs/run_1/cancel"),
        ],
    )
    def test_invalid_url(self, http: httpx2.Client, method: str, path: str) -> None:
        """404 ``Invalid URL (<method> <path>)``."""
        error = error_of(http.request(method, path), 404)
        assert error["message"] == f"Invalid URL ({method} {path})"
        assert error["type"] == "invalid_request_error"

    def test_request_id(self, http: httpx2.Client) -> None:
        """Every answer has an ``x-request-id``."""
        assert http.get("/v1/nope").headers["x-request-id"].startswith("req_")

    def test_lifespan_and_other_scopes(self, engine: Engine) -> None:
        """The app answers ASGI lifespan and ignores non-HTTP scopes."""
        app = create_app(engine)
        sent: list[dict[str, Any]] = []
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: Any) -> None:
            sent.append(message)

        asyncio.run(app({"type": "lifespan"}, receive, send))
        asyncio.run(app({"type": "websocket"}, receive, send))
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        app.close()
        app.close()

    def test_needs_an_engine(self) -> None:
        """``create_app`` takes an engine."""
        with pytest.raises(TypeError, match=r"runflow\.Engine"):
            create_app("engine")  # type: ignore[arg-type]

    def test_internal_error_is_a_500(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bug answers OpenAI's 500 ``server_error`` JSON."""
        app = create_app(engine)

        def boom(*_: object, **__: object) -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(app.hub, "add_thread", boom)
        with http_for(app) as http:
            error = error_of(http.post("/v1/threads", json={}), 500)
        assert error["type"] == "server_error"
        app.close()


class TestTrust:
    """API keys, body limits."""

    def test_api_key(self, engine: Engine) -> None:
        """Without the key: 401 saying so; a wrong key: 401 masked; the key: 200."""
        app = create_app(engine, api_key="sk-secret-1234")
        with http_for(app) as http:
            missing = error_of(http.post("/v1/threads", json={}), 401)
            assert missing["message"].startswith("You didn't provide an API key.")
            wrong = error_of(
                http.post(
                    "/v1/threads", json={}, headers={"Authorization": "Bearer sk-wrong-key-9876"}
                ),
                401,
            )
            assert wrong["code"] == "invalid_api_key"
            assert "sk-****9876" in wrong["message"]
            assert "sk-wrong" not in wrong["message"]
            good = http.post(
                "/v1/threads", json={}, headers={"Authorization": "Bearer sk-secret-1234"}
            )
            assert good.status_code == 200
        app.close()

    def test_body_limit(self, engine: Engine) -> None:
        """A declared or streamed body over the limit is a 413; nothing is created."""
        app = create_app(engine, max_body=100)
        with http_for(app) as http:
            big = {"metadata": {"k": "v" * 200}}
            error = error_of(http.post("/v1/threads", json=big), 413)
            assert error["message"] == "Request body too large: the limit is 100 bytes."

            def chunks() -> Iterator[bytes]:
                yield b'{"metadata": {"k": "'
                yield b"v" * 200
                yield b'"}}'

            error_of(http.post("/v1/threads", content=chunks()), 413)
        assert app.hub.threads == {}
        app.close()


class TestValidation:
    """Bodies are checked against the request schemas; errors name the parameter."""

    @pytest.mark.parametrize(
        ("body", "param", "message"),
        [
            ({}, "assistant_id", "Missing required parameter: 'assistant_id'."),
            (
                {"assistant_id": 7},
                "assistant_id",
                "Invalid type for 'assistant_id': expected a string, but got an integer instead.",
            ),
            (
                {"assistant_id": "a", "metadata": {"k": True}},
                "metadata.k",
                "Invalid type for 'metadata.k': expected a string, but got a boolean instead.",
            ),
            (
                {"assistant_id": "a", "colour": "red"},
                "colour",
                "Unrecognized request argument supplied: colour",
            ),
            (
                {"assistant_id": "a", "max_prompt_tokens": 16},
                "max_prompt_tokens",
                (
                    "Invalid 'max_prompt_tokens': integer below minimum value. Expected a value "
                    ">= 256, but got 16 instead."
                ),
            ),
            (
                {"assistant_id": "a", "temperature": 2.5},
                "temperature",
                (
                    "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
                    "but got 2.5 instead."
                ),
            ),
            (
                {"assistant_id": "a", "tools": [TOOL] * 21},
                "tools",
                (
                    "Invalid 'tools': array too long. Expected an array with maximum length 20, "
                    "but got an array with length 21 instead."
                ),
            ),
            (
                {"assistant_id": "a", "metadata": {str(i): "v" for i in range(17)}},
                "metadata",
                (
                    "Invalid 'metadata': too many properties. Expected an object with at most 16 "
                    "properties, but got an object with 17 properties instead."
                ),
            ),
            (
                {"assistant_id": "a", "metadata": {"k": "v" * 513}},
                "metadata.k",
                (
                    "Invalid 'metadata.k': string too long. Expected a string with maximum length "
                    "512, but got a string with length 513 instead."
                ),
            ),
            (
                {"assistant_id": "a", "truncation_strategy": {"type": "most"}},
                "truncation_strategy.type",
                "Invalid value: 'most'. Supported values are: 'auto', 'last_messages'.",
            ),
            (
                {"assistant_id": "a", "stream": "yes"},
                "stream",
                "Invalid type for 'stream': expected a boolean, but got a string instead.",
            ),
        ],
    )
    def test_create_run(
        self, http: httpx2.Client, body: dict[str, Any], param: str, message: str
    ) -> None:
        """``POST /threads/{id}/runs`` refusals, in OpenAI's words."""
        thread = new_thread(http)
        error = error_of(http.post(f"/v1/threads/{thread}/runs", json=body), 400)
        assert (error["param"], error["message"]) == (param, message)

    @pytest.mark.parametrize(
        "content", [b"{", b"[1, 2", b'{"assistant_id": NaN}', b'{"a": 1e999}', b"\xff\xfe"]
    )
    def test_malformed_json(self, http: httpx2.Client, content: bytes) -> None:
        """Anything but strict JSON: 400 with OpenAI's parse message, no param."""
        thread = new_thread(http)
        error = error_of(http.post(f"/v1/threads/{thread}/runs", content=content), 400)
        assert error["message"].startswith("We could not parse the JSON body of your request.")
        assert error["param"] is None

    def test_body_must_be_an_object(self, http: httpx2.Client) -> None:
        """A JSON array is not a request."""
        thread = new_thread(http)
        error = error_of(http.post(f"/v1/threads/{thread}/runs", json=[1]), 400)
        assert error["message"] == (
            "Invalid type for request body: expected an object, but got an array instead."
        )

    def test_submit(self, http: httpx2.Client, engine: Engine) -> None:
        """Submit bodies: schema first, then the engine's rules with their params."""
        thread = new_thread(http)
        run = http.post(
            f"/v1/threads/{thread}/runs", json={"assistant_id": "a", "tools": [TOOL]}
        ).json()
        engine.start(run["id"])
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"},
        }
        engine.require_action(run["id"], [call])
        url = f"/v1/threads/{thread}/runs/{run['id']}/submit_tool_outputs"
        before = engine.history(run["id"])
        error = error_of(http.post(url, json={"tool_outputs": {"x": 1}}), 400)
        assert error["param"] == "tool_outputs"
        error = error_of(http.post(url, json={"tool_outputs": [{"tool_call_id": "call_1"}]}), 400)
        assert error["param"] == "tool_outputs[0].output"
        error = error_of(http.post(url, json={"tool_outputs": [{"output": "x"}]}), 400)
        assert error["message"] == "Missing required parameter: 'tool_outputs[0].tool_call_id'."
        assert error["param"] == "tool_outputs[0].tool_call_id"
        error = error_of(http.post(url, json={"tool_outputs": [], "extra": 1}), 400)
        assert error["message"] == "Unrecognized request argument supplied: extra"
        assert engine.history(run["id"]) == before

    def test_modify_run_body(self, http: httpx2.Client, engine: Engine) -> None:
        """Modify takes only ``metadata``; without it the run is returned unchanged."""
        thread = new_thread(http)
        run = http.post(f"/v1/threads/{thread}/runs", json={"assistant_id": "a"}).json()
        url = f"/v1/threads/{thread}/runs/{run['id']}"
        error_of(http.post(url, json={"model": "x"}), 400)
        engine.expire(run["id"])
        assert http.post(url, content=b"").json()["metadata"] == {}


class TestThreadsAndMessages:
    """The minimal threads and messages."""

    def test_thread_round_trip(self, http: httpx2.Client) -> None:
        """Create with messages and metadata, read back, modify metadata."""
        made = http.post(
            "/v1/threads",
            json={
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "user", "content": [{"type": "text", "text": "Parts"}]},
                ],
                "metadata": {"k": "v"},
            },
        ).json()
        Thread.model_validate(made)
        thread = made["id"]
        assert http.get(f"/v1/threads/{thread}").json() == made
        changed = http.post(f"/v1/threads/{thread}", json={"metadata": {"k": "w"}}).json()
        assert changed["metadata"] == {"k": "w"}
        page = http.get(f"/v1/threads/{thread}/messages", params={"order": "asc"}).json()
        texts = [m["content"][0]["text"]["value"] for m in page["data"]]
        assert texts == ["Hi", "Parts"]
        for message in page["data"]:
            Message.model_validate(message)
        one = http.get(f"/v1/threads/{thread}/messages/{page['first_id']}").json()
        assert one == page["data"][0]
        error = error_of(http.get(f"/v1/threads/{thread}/messages/msg_nope"), 404)
        assert error["message"] == "No message found with id 'msg_nope'."

    def test_unknown_thread(self, http: httpx2.Client) -> None:
        """Every thread route: 404 ``No thread found with id '<id>'.``"""
        for method, path in [
            ("GET", "/v1/threads/thread_x"),
            ("POST", "/v1/threads/thread_x"),
            ("GET", "/v1/threads/thread_x/messages"),
            ("GET", "/v1/threads/thread_x/runs"),
            ("GET", "/v1/threads/thread_x/runs/run_x"),
        ]:
            error = error_of(http.request(method, path, json={}), 404)
            assert error["message"] == "No thread found with id 'thread_x'."

    def test_no_messages_while_a_run_is_active(self, http: httpx2.Client, engine: Engine) -> None:
        """``Can't add messages to <thread> while a run <run> is active.``; fine after."""
        thread = new_thread(http)
        run = http.post(f"/v1/threads/{thread}/runs", json={"assistant_id": "a"}).json()
        url = f"/v1/threads/{thread}/messages"
        error = error_of(http.post(url, json={"role": "user", "content": "Hi"}), 400)
        assert (
            error["message"] == f"Can't add messages to {thread} while a run {run['id']} is active."
        )
        engine.cancel(run["id"])
        engine.finish_cancel(run["id"])
        assert http.post(url, json={"role": "user", "content": "Hi"}).status_code == 200
        error = error_of(http.post(url, json={"role": "robot", "content": "Hi"}), 400)
        assert error["param"] == "role"

    def test_additional_messages(self, http: httpx2.Client) -> None:
        """``additional_messages`` join the thread with the run."""
        thread = new_thread(http)
        http.post(
            f"/v1/threads/{thread}/runs",
            json={"assistant_id": "a", "additional_messages": [{"role": "user", "content": "x"}]},
        )
        assert len(http.get(f"/v1/threads/{thread}/messages").json()["data"]) == 1

    def test_refused_thread_and_run_leaves_no_thread(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``POST /threads/runs`` refused by the engine creates no thread."""
        app = create_app(engine)

        def refuse(**_: object) -> None:
            raise ValidationError("$.tools[0]", "refused on purpose")

        monkeypatch.setattr(engine, "create", refuse)
        with http_for(app) as http:
            error = error_of(http.post("/v1/threads/runs", json={"assistant_id": "a"}), 400)
        assert error["param"] == "tools[0]"
        assert error["message"] == "Invalid 'tools[0]': refused on purpose."
        assert app.hub.threads == {}
        app.close()


class TestRuns:
    """Run routes."""

    def test_run_of_another_thread(self, http: httpx2.Client) -> None:
        """A run asked for under the wrong thread is not found."""
        t1, t2 = new_thread(http), new_thread(http)
        run = http.post(f"/v1/threads/{t1}/runs", json={"assistant_id": "a"}).json()
        error = error_of(http.get(f"/v1/threads/{t2}/runs/{run['id']}"), 404)
        assert error["message"] == f"No run found with id '{run['id']}'."

    def test_expired_run_frees_the_thread(self, http: httpx2.Client, engine: Engine) -> None:
        """A run past its deadline no longer holds the thread (R1.3, R3.4)."""
        thread = new_thread(http)
        first = http.post(f"/v1/threads/{thread}/runs", json={"assistant_id": "a"}).json()
        engine.clock.advance(600)  # type: ignore[attr-defined]
        second = http.post(f"/v1/threads/{thread}/runs", json={"assistant_id": "a"})
        assert second.status_code == 200
        assert engine.get(first["id"]).status == "expired"

    @pytest.mark.parametrize(
        ("query", "param"),
        [
            ({"limit": "0"}, "limit"),
            ({"limit": "101"}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"order": "sideways"}, "order"),
            ({"after": "run_nope"}, "after"),
            ({"before": "run_nope"}, "before"),
        ],
    )
    def test_list_query(self, http: httpx2.Client, query: dict[str, str], param: str) -> None:
        """Bad paging parameters are 400s naming them."""
        thread = new_thread(http)
        error = error_of(http.get(f"/v1/threads/{thread}/runs", params=query), 400)
        assert error["param"] == param

    def test_empty_list(self, http: httpx2.Client) -> None:
        """An empty page has null cursors."""
        thread = new_thread(http)
        assert http.get(f"/v1/threads/{thread}/runs").json() == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }

    def test_steps_routes(self, engine: Engine) -> None:
        """Steps list and retrieve; an unknown step is a 404."""
        app = create_app(engine, Script().complete())
        with http_for(app) as http:
            thread = new_thread(http)
            run = http.post(f"/v1/threads/{thread}/runs", json={"assistant_id": "a"}).json()
            http.get(f"/v1/threads/{thread}/runs/{run['id']}")
            base = f"/v1/threads/{thread}/runs/{run['id']}/steps"
            page = http.get(base).json()
            (step,) = page["data"]
            RunStep.model_validate(step)
            assert http.get(f"{base}/{step['id']}").json() == step
            error = error_of(http.get(f"{base}/step_nope"), 404)
            assert error["message"] == "No run step found with id 'step_nope'."
        app.close()


class TestStreams:
    """The SSE wire format."""

    def test_format(self, engine: Engine) -> None:
        """``event:`` and ``data:`` lines, JSON data the SDK's event model accepts,
        ``data: [DONE]`` last."""
        app = create_app(engine, Script().require_action().complete())
        with http_for(app) as http:
            thread = new_thread(http)
            response = http.post(
                f"/v1/threads/{thread}/runs",
                json={"assistant_id": "a", "tools": [TOOL], "stream": True},
            )
            assert response.headers["content-type"].startswith("text/event-stream")
            blocks = [b for b in response.text.split("\n\n") if b]
        app.close()
        assert blocks[-1] == "event: done\ndata: [DONE]"
        for block in blocks[:-1]:
            event_line, data_line = block.split("\n")
            name = event_line.removeprefix("event: ")
            data = json.loads(data_line.removeprefix("data: "))
            EVENTS.validate_python({"event": name, "data": data})

    def test_stream_on_submit_that_is_refused(self, engine: Engine) -> None:
        """A refused streamed submit answers plain JSON errors."""
        app = create_app(engine)
        with http_for(app) as http:
            thread = new_thread(http)
            run = http.post(f"/v1/threads/{thread}/runs", json={"assistant_id": "a"}).json()
            url = f"/v1/threads/{thread}/runs/{run['id']}/submit_tool_outputs"
            error = error_of(http.post(url, json={"tool_outputs": [], "stream": True}), 400)
        assert error["message"] == 'Runs in status "queued" do not accept tool outputs.'
        app.close()


def test_schemas_are_the_specs() -> None:
    """The request schemas shipped in the package are the spec's, byte for byte."""
    for name in ("create_run_request.schema.json", "submit_tool_outputs_request.schema.json"):
        shipped = (ROOT / "runflow" / "server" / "schemas" / name).read_bytes()
        assert shipped == (SPEC / name).read_bytes()
