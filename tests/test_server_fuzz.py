"""
A property-based fuzz test over every endpoint of the runs API: whatever the method,
ids, query and body, the app never answers 500, every refusal is OpenAI's error JSON,
and a refused request changes no run (nor the threads, messages and steps).
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.beta import Thread
from openai.types.beta.threads import Message, Run
from openai.types.beta.threads.runs import RunStep

from runflow import Engine
from runflow.server import RunsApp, create_app
from runflow.testing import FakeClock, Script

TOOL = {"type": "function", "function": {"name": "get_weather"}}
ASSISTANTS = {"asst_a": {"tools": [TOOL]}}
SCRIPT = Script().require_action("get_weather").complete()

ROUTES: list[tuple[str, str]] = [
    ("POST", "/v1/threads"),
    ("POST", "/v1/threads/runs"),
    ("GET", "/v1/threads/{t}"),
    ("POST", "/v1/threads/{t}"),
    ("GET", "/v1/threads/{t}/messages"),
    ("POST", "/v1/threads/{t}/messages"),
    ("GET", "/v1/threads/{t}/messages/{m}"),
    ("GET", "/v1/threads/{t}/runs"),
    ("POST", "/v1/threads/{t}/runs"),
    ("GET", "/v1/threads/{t}/runs/{r}"),
    ("POST", "/v1/threads/{t}/runs/{r}"),
    ("POST", "/v1/threads/{t}/runs/{r}/cancel"),
    ("POST", "/v1/threads/{t}/runs/{r}/submit_tool_outputs"),
    ("GET", "/v1/threads/{t}/runs/{r}/steps"),
    ("GET", "/v1/threads/{t}/runs/{r}/steps/{s}"),
    ("DELETE", "/v1/threads/{t}"),
    ("PATCH", "/v1/threads/{t}/runs/{r}"),
    ("GET", "/v1/{t}"),
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "assistant_id",
    "model",
    "instructions",
    "additional_instructions",
    "additional_messages",
    "tools",
    "metadata",
    "temperature",
    "top_p",
    "stream",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "tool_outputs",
    "thread",
    "messages",
    "role",
    "content",
    "tool_resources",
    "reasoning_effort",
]
VALID_BODIES: list[dict[str, Any]] = [
    {"assistant_id": "asst_a"},
    {"assistant_id": "asst_a", "stream": True},
    {"assistant_id": "asst_a", "tools": [TOOL], "metadata": {"k": "v"}, "temperature": 1},
    {"tool_outputs": [{"tool_call_id": "call_1", "output": "x"}]},
    {"tool_outputs": [], "stream": True},
    {"metadata": {"k": "v"}},
    {"role": "user", "content": "hi"},
    {"messages": [{"role": "user", "content": "hi"}]},
    {"assistant_id": "asst_a", "thread": {"messages": [{"role": "user", "content": "x"}]}},
]


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    """No body, raw bytes, random JSON, or a valid body with fields changed."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return None
    if kind == 1:
        return draw(st.binary(max_size=64))
    if kind == 2:
        return json.dumps(draw(json_values)).encode()
    body = copy.deepcopy(draw(st.sampled_from(VALID_BODIES)))
    for _ in range(draw(st.integers(0 if kind == 3 else 1, 3))):
        body[draw(st.sampled_from(FIELDS))] = draw(json_values)
    return json.dumps(body).encode()


queries = st.dictionaries(
    st.sampled_from(["limit", "order", "after", "before", "run_id", "include[]", "x"]),
    st.text(max_size=12) | st.sampled_from(["1", "100", "asc", "desc", "0", "-1"]),
    max_size=3,
)


async def call(
    app: RunsApp, method: str, path: str, query: dict[str, str], body: bytes | None
) -> tuple[int, bytes]:
    """One request straight to the ASGI app (bounded: a stream must end by itself)."""
    sent: list[dict[str, Any]] = []
    given = body or b""
    messages = [{"type": "http.request", "body": given, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": "&".join(f"{k}={v}" for k, v in query.items()).encode(),
        "headers": [(b"content-length", str(len(given)).encode())],
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    status = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent[1:])


def world(app: RunsApp) -> Any:
    """Everything a request could change: runs, journals, threads, messages, steps."""
    engine = app.engine
    runs = [(r.to_dict(), len(engine.history(r.id))) for r in engine.runs()]
    hub = app.hub
    threads = copy.deepcopy(hub.threads)
    messages = {t: hub.messages(t) for t in threads}
    steps = {r.id: hub.steps(r.id) for r in engine.runs()}
    return runs, threads, json.dumps(messages), json.dumps(steps)


def seeded() -> tuple[RunsApp, dict[str, list[str]]]:
    """An app with three threads: a run waiting for outputs, a completed one, a queued one."""
    engine = Engine(clock=FakeClock())
    app = create_app(engine, SCRIPT, assistants=ASSISTANTS)

    async def seed() -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {"t": [], "r": [], "m": [], "s": []}
        for polls in (1, 3, 0):
            _, raw = await call(app, "POST", "/v1/threads", {}, b"{}")
            thread = json.loads(raw)["id"]
            _, raw = await call(
                app, "POST", f"/v1/threads/{thread}/runs", {}, b'{"assistant_id": "asst_a"}'
            )
            run = json.loads(raw)
            for _ in range(polls):
                await call(app, "GET", f"/v1/threads/{thread}/runs/{run['id']}", {}, None)
            if polls == 3:
                outputs = [
                    {"tool_call_id": c.id, "output": "x"} for c in engine.get(run["id"]).tool_calls
                ]
                await call(
                    app,
                    "POST",
                    f"/v1/threads/{thread}/runs/{run['id']}/submit_tool_outputs",
                    {},
                    json.dumps({"tool_outputs": outputs}).encode(),
                )
                await call(app, "GET", f"/v1/threads/{thread}/runs/{run['id']}", {}, None)
            ids["t"].append(thread)
            ids["r"].append(run["id"])
            ids["m"] += [m["id"] for m in app.hub.messages(thread)]
            ids["s"] += [s["id"] for s in app.hub.steps(run["id"])]
        return ids

    return app, asyncio.run(seed())


def check_ok(path: str, method: str, raw: bytes) -> None:
    """An accepted answer is JSON the SDK's models accept (or an SSE stream)."""
    if raw.startswith(b"event:"):
        assert raw.endswith(b"event: done\ndata: [DONE]\n\n")
        return
    body = json.loads(raw)
    if body.get("object") == "thread.run":
        Run.model_validate(body)
    elif body.get("object") == "thread":
        Thread.model_validate(body)
    elif body.get("object") == "thread.message":
        Message.model_validate(body)
    elif body.get("object") == "thread.run.step":
        RunStep.model_validate(body)
    else:
        assert body.get("object") == "list", (method, path, body)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    picks=st.fixed_dictionaries(
        {k: st.integers(0, 4) for k in ("t", "r", "m", "s")},
    ),
    junk=st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s and "?" not in s),
    query=queries,
    body=bodies(),
)
def test_no_500_and_refusals_change_nothing(
    route: tuple[str, str],
    picks: dict[str, int],
    junk: str,
    query: dict[str, str],
    body: bytes | None,
) -> None:
    """Any request: never a 500; a refusal is OpenAI's error JSON and changes nothing."""
    app, ids = seeded()
    try:
        method, template = route
        chosen = {}
        for key, pool in ids.items():
            options = [*pool, junk, f"{key}_nope"]
            chosen[key] = options[picks[key] % len(options)]
        path = template.format(**chosen)
        before = world(app)
        status, raw = asyncio.run(call(app, method, path, query, body))
        assert status != 500, raw
        if status >= 400:
            error = json.loads(raw)["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert isinstance(error["message"], str)
            assert error["message"]
            assert world(app) == before, (method, path, body, error)
        else:
            check_ok(path, method, raw)
    finally:
        app.close()
