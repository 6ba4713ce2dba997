"""The ASGI app: OpenAI's runs API (wire protocol, errors, streams) over a runflow engine."""

from __future__ import annotations

import asyncio
import hmac
import json
import typing
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote

import attrs
import structlog

from runflow._engine import Engine
from runflow._model import RunObject
from runflow.exceptions import RunflowError, RunNotFoundError
from runflow.server._driver import Driver
from runflow.server._errors import (
    ApiError,
    check_body,
    error_body,
    from_runflow_error,
    not_found,
    parse_json,
)
from runflow.server._hub import Hub, SseEvent, new_id
from runflow.testing._script import ScriptSource, select_script

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MODEL",
    "DEFAULT_POLL_INTERVAL_MS",
    "RunsApp",
    "create_app",
]

_log = structlog.get_logger("runflow.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The model a run gets when neither the request nor the assistant names one.
DEFAULT_MODEL = "gpt-4o"
#: ``openai-poll-after-ms`` when the test drives runs itself (manual mode).
DEFAULT_POLL_INTERVAL_MS = 20
#: The largest request body accepted (bytes); larger ones are a 413.
DEFAULT_MAX_BODY = 1024 * 1024

_STOP = frozenset(
    {
        "thread.run.requires_action",
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
    }
)
_RUN_FIELDS = (
    "metadata",
    "max_prompt_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "truncation_strategy",
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
)
_ASSISTANT_FIELDS = frozenset(
    {"model", "instructions", "tools", *(f for f in _RUN_FIELDS if f != "metadata")}
)
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


@attrs.frozen
class _Json:
    body: Any
    status: int = 200
    headers: Sequence[tuple[str, str]] = ()


@attrs.frozen
class _Stream:
    run_id: str
    log: list[SseEvent]
    cursor: int
    prefix: Sequence[SseEvent] = ()


@attrs.frozen
class _Request:
    ids: Sequence[str]  # the ids in the path, in order
    body: bytes
    query: Mapping[str, list[str]]


_Handler = Callable[[_Request], "_Json | _Stream"]


@typing.final
class RunsApp:
    """
    OpenAI's runs API over a runflow :class:`~runflow.Engine`, as an ASGI app.

    Made by :func:`create_app`; see there. ``engine`` is the engine it serves,
    :meth:`close` stops it listening to the engine's events.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        engine: Engine,
        script: ScriptSource = None,
        assistants: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        api_key: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
        default_model: str = DEFAULT_MODEL,
    ) -> None:
        given: object = engine  # untyped callers pass anything
        if not isinstance(given, Engine):
            msg = f"create_app needs a runflow.Engine, got {type(given).__name__}"
            raise TypeError(msg)
        self.engine = engine
        self._assistants = {k: _assistant(k, v) for k, v in (assistants or {}).items()}
        self._api_key = api_key or None
        self._max_body = max_body
        self._poll_ms = poll_interval_ms
        self._model = default_model
        self.hub = Hub(engine.clock.now)
        self.driver = Driver(engine, self.hub, select_script(script))
        self._unsubscribe: Callable[[], None] | None = engine.subscribe(self.hub.on_event)
        self._routes: dict[tuple[str, ...], dict[str, _Handler]] = {
            ("threads",): {"POST": self._create_thread},
            ("threads", "runs"): {"POST": self._create_thread_and_run},
            ("threads", "*"): {"GET": self._get_thread, "POST": self._modify_thread},
            ("threads", "*", "messages"): {
                "GET": self._list_messages,
                "POST": self._create_message,
            },
            ("threads", "*", "messages", "*"): {"GET": self._get_message},
            ("threads", "*", "runs"): {"GET": self._list_runs, "POST": self._create_run},
            ("threads", "*", "runs", "*"): {"GET": self._get_run, "POST": self._modify_run},
            ("threads", "*", "runs", "*", "cancel"): {"POST": self._cancel},
            ("threads", "*", "runs", "*", "submit_tool_outputs"): {"POST": self._submit},
            ("threads", "*", "runs", "*", "steps"): {"GET": self._list_steps},
            ("threads", "*", "runs", "*", "steps", "*"): {"GET": self._get_step},
        }

    def close(self) -> None:
        """Stop following the engine's events."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def __repr__(self) -> str:
        return f"<RunsApp engine={self.engine!r}>"

    # --- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP and lifespan)."""
        kind = scope.get("type")
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            return
        try:
            response = await self._respond(scope, receive)
        except ApiError as error:
            response = _Json(error.body(), error.status, error.headers)
        except Exception:  # noqa: BLE001 - any bug becomes OpenAI's 500, never a dropped socket
            _log.exception("request_failed", path=scope.get("path"))
            response = _Json(
                error_body(
                    "The server had an error while processing your request.", type="server_error"
                ),
                500,
            )
        if isinstance(response, _Stream):
            await self._send_stream(response, receive, send)
        else:
            await _send_json(send, response)

    async def _respond(self, scope: Scope, receive: Receive) -> _Json | _Stream:
        method = str(scope.get("method", "GET")).upper()
        path = str(scope.get("path", ""))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self._authorize(headers)
        body = await self._body(headers, receive)
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if not parts or parts[0] != "v1":
            raise ApiError(404, f"Invalid URL ({method} {path})")
        handler, args = self._route(parts[1:])
        if handler is None or method not in handler:
            raise ApiError(404, f"Invalid URL ({method} {path})")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            return handler[method](_Request(args, body, query))
        except RunflowError as error:
            raise from_runflow_error(error) from None

    def _route(self, parts: list[str]) -> tuple[dict[str, _Handler] | None, list[str]]:
        for pattern, handlers in self._routes.items():
            if len(pattern) != len(parts):
                continue
            if all(p in {"*", q} for p, q in zip(pattern, parts, strict=True)):
                # "runs" after threads is a route of its own, not a thread id
                if pattern == ("threads", "*") and parts[1] == "runs":
                    continue
                return handlers, [q for p, q in zip(pattern, parts, strict=True) if p == "*"]
        return None, []

    def _authorize(self, headers: Mapping[str, str]) -> None:
        if self._api_key is None:
            return
        given = headers.get("authorization", "")
        if not given.startswith("Bearer ") or not given[7:].strip():
            raise ApiError(401, _NO_KEY)
        key = given[7:].strip()
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            shown = (key[:3] + "*" * 4 + key[-4:]) if len(key) > 8 else "*" * len(key)  # noqa: PLR2004
            raise ApiError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    async def _body(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise ApiError(413, self._too_large(), code="request_too_large")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise ApiError(413, self._too_large(), code="request_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _too_large(self) -> str:
        return f"Request body too large: the limit is {self._max_body} bytes."

    async def _send_stream(self, stream: _Stream, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", new_id("req_").encode()),
                ],
            }
        )
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        closed = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    closed.set()
                    flag.set()
                    return

        watcher = asyncio.ensure_future(watch_disconnect())
        unwatch = self.hub.watch(stream.run_id, loop, flag)
        try:
            for name, data in stream.prefix:
                await send(_sse(name, data))
            if await self._pump(stream, send, flag, closed):
                await send(_sse("done", "[DONE]", more=False))
            elif not closed.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # pragma: no cover - the client went away mid-send
            pass
        finally:
            unwatch()
            watcher.cancel()

    async def _pump(
        self, stream: _Stream, send: Send, flag: asyncio.Event, closed: asyncio.Event
    ) -> bool:
        """Forward the run's events until it stops (requires_action or an end), then
        ``done``. A scripted run is moved at once; otherwise the run is re-read at the
        poll interval, so a lapse of ``expires_at`` shows as ``thread.run.expired``.
        True if the run stopped (``done`` is due), False if the client left."""
        cursor = stream.cursor
        idle = 0
        while not closed.is_set():
            flag.clear()  # before reading: an event after the read sets it again
            driving = self.driver.scripted(stream.run_id) and self.driver.virtual
            try:
                if driving:
                    self.driver.tick(stream.run_id)
            except RunflowError:
                return False  # the run is gone (discarded by the test)
            events = self.hub.read(stream.log, cursor)
            cursor += len(events)
            for name, data in events:
                await send(_sse(name, data))
                if name in _STOP:
                    return True
            if events:
                idle = 0
                continue
            idle += 1
            if driving and idle < 10_000:  # noqa: PLR2004 - a stuck script falls back to waiting
                await asyncio.sleep(0)
                continue
            try:
                await asyncio.wait_for(flag.wait(), self._poll_ms / 1000)
            except TimeoutError:
                try:
                    self.engine.get(stream.run_id)  # the expiry rule, so a lapse shows
                except RunNotFoundError:
                    return False
        return False

    # --- helpers ------------------------------------------------------------------------

    def _thread_exists(self, thread_id: str) -> bool:
        return thread_id in self.hub.threads or bool(self.engine.runs(thread_id=thread_id, limit=1))

    def _thread(self, thread_id: str) -> dict[str, Any]:
        thread = self.hub.threads.get(thread_id)
        if thread is not None:
            return thread
        runs = self.engine.runs(thread_id=thread_id, limit=1)
        if not runs:
            raise not_found("thread", thread_id)
        return {
            "id": thread_id,
            "object": "thread",
            "created_at": runs[0].created_at,
            "metadata": {},
            "tool_resources": {},
        }

    def _run_of(self, thread_id: str, run_id: str) -> RunObject:
        self._thread(thread_id)
        try:
            run = self.engine.get(run_id)
        except RunNotFoundError:
            raise not_found("run", run_id) from None
        if run.thread_id != thread_id:
            raise not_found("run", run_id)
        return run

    def _run_json(self, run: RunObject) -> _Json:
        scripted = self.driver.scripted(run.id) and self.driver.virtual
        poll = "0" if scripted else str(self._poll_ms)
        return _Json(run.to_dict(), headers=[("openai-poll-after-ms", poll)])

    def _fault(self, run_id: str, kind: str) -> None:
        error = self.driver.fault(run_id, kind)
        if error is not None:
            raise error

    def _run_kwargs(self, body: Mapping[str, Any]) -> dict[str, Any]:
        assistant = self._assistants.get(body["assistant_id"], {})

        def pick(name: str) -> Any:
            value = body.get(name)
            return assistant.get(name) if value is None and name != "metadata" else value

        instructions = pick("instructions") or ""
        extra = body.get("additional_instructions")
        if extra:
            instructions = f"{instructions}\n{extra}" if instructions else extra
        kwargs: dict[str, Any] = {
            "assistant_id": body["assistant_id"],
            "model": pick("model") or self._model,
            "instructions": instructions,
            "tools": pick("tools") or [],
        }
        for name in _RUN_FIELDS:
            value = pick(name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    def _start_run(self, thread_id: str, body: Mapping[str, Any]) -> RunObject:
        """Create a run on an existing thread (the engine expires an overdue run that
        still holds the thread)."""
        kwargs = self._run_kwargs(body)
        known = thread_id in self.hub.threads
        self.hub.track_thread(thread_id)
        try:
            run = self.engine.create(thread_id=thread_id, **kwargs)
        except BaseException:
            if not known:
                self.hub.drop_thread(thread_id)
            raise
        self.driver.attach(run)
        self.hub.wait_seen(run)
        return run

    def _add_messages(self, thread_id: str, messages: Sequence[Mapping[str, Any]] | None) -> None:
        for message in messages or ():
            self.hub.add_message(
                thread_id,
                role=message["role"],
                content=message["content"],
                attachments=message.get("attachments"),
                metadata=message.get("metadata"),
            )

    # --- threads and messages -----------------------------------------------------------

    def _create_thread(self, req: _Request) -> _Json:
        data = check_body("create_thread", parse_json(req.body, empty={}))
        thread_id = new_id("thread_")
        thread = self.hub.add_thread(thread_id, metadata=data.get("metadata"))
        self._add_messages(thread_id, data.get("messages"))
        return _Json(thread)

    def _get_thread(self, req: _Request) -> _Json:
        (thread_id,) = req.ids
        return _Json(self._thread(thread_id))

    def _modify_thread(self, req: _Request) -> _Json:
        (thread_id,) = req.ids
        data = check_body("modify_thread", parse_json(req.body, empty={}))
        thread = self.hub.add_thread(self._thread(thread_id)["id"])
        if data.get("metadata") is not None:
            thread["metadata"] = dict(data["metadata"])
        return _Json(thread)

    def _create_message(self, req: _Request) -> _Json:
        (thread_id,) = req.ids
        data = check_body("create_message", parse_json(req.body))
        self._thread(thread_id)
        for run in self.engine.runs(thread_id=thread_id):  # expiry applied (R3.4)
            if run.status.is_active:
                raise ApiError(
                    400, f"Can't add messages to {thread_id} while a run {run.id} is active."
                )
        self.hub.add_thread(thread_id)
        message = self.hub.add_message(
            thread_id,
            role=data["role"],
            content=data["content"],
            attachments=data.get("attachments"),
            metadata=data.get("metadata"),
        )
        return _Json(message)

    def _list_messages(self, req: _Request) -> _Json:
        (thread_id,) = req.ids
        self._thread(thread_id)
        messages = self.hub.messages(thread_id)
        run_id = _one(req.query, "run_id")
        if run_id is not None:
            messages = [m for m in messages if m["run_id"] == run_id]
        return _Json(_page(messages, req.query))

    def _get_message(self, req: _Request) -> _Json:
        thread_id, message_id = req.ids
        self._thread(thread_id)
        for message in self.hub.messages(thread_id):
            if message["id"] == message_id:
                return _Json(message)
        raise not_found("message", message_id)

    # --- runs ---------------------------------------------------------------------------

    def _create_run(self, req: _Request) -> _Json | _Stream:
        (thread_id,) = req.ids
        data = check_body("create_run", parse_json(req.body))
        self._thread(thread_id)
        run = self._start_run(thread_id, data)
        self._add_messages(thread_id, data.get("additional_messages"))
        if data.get("stream"):
            return _Stream(run.id, self.hub.track(run.id), 0)
        return self._run_json(run)

    def _create_thread_and_run(self, req: _Request) -> _Json | _Stream:
        data = check_body("create_thread_and_run", parse_json(req.body))
        spec = data.get("thread") or {}
        thread_id = new_id("thread_")
        thread = self.hub.add_thread(thread_id, metadata=spec.get("metadata"))
        try:
            run = self._start_run(thread_id, data)
        except BaseException:
            self.hub.drop_thread(thread_id)
            raise
        self._add_messages(thread_id, spec.get("messages"))
        if data.get("stream"):
            return _Stream(run.id, self.hub.track(run.id), 0, prefix=[("thread.created", thread)])
        return self._run_json(run)

    def _list_runs(self, req: _Request) -> _Json:
        (thread_id,) = req.ids
        self._thread(thread_id)
        runs = [r.to_dict() for r in self.engine.runs(thread_id=thread_id)]  # expiry applied
        return _Json(_page(runs, req.query))

    def _get_run(self, req: _Request) -> _Json:
        thread_id, run_id = req.ids
        self._run_of(thread_id, run_id)
        self._fault(run_id, "retrieve")
        self.driver.tick(run_id)
        return self._run_json(self.engine.get(run_id))

    def _modify_run(self, req: _Request) -> _Json:
        thread_id, run_id = req.ids
        data = check_body("modify_run", parse_json(req.body, empty={}))
        run = self._run_of(thread_id, run_id)
        metadata = data.get("metadata", run.metadata)
        changed = self.engine.modify(run_id, metadata=metadata)
        return self._run_json(changed)

    def _cancel(self, req: _Request) -> _Json:
        thread_id, run_id = req.ids
        self._run_of(thread_id, run_id)
        self._fault(run_id, "cancel")
        run = self.engine.cancel(run_id)
        self.hub.wait_seen(run)
        return self._run_json(run)

    def _submit(self, req: _Request) -> _Json | _Stream:
        thread_id, run_id = req.ids
        data = check_body("submit_tool_outputs", parse_json(req.body))
        self._run_of(thread_id, run_id)
        self._fault(run_id, "submit_tool_outputs")
        log = self.hub.track(run_id)
        cursor = len(self.hub.read(log, 0))
        outputs = data["tool_outputs"]
        self.hub.expect_outputs(run_id, outputs)
        try:
            run = self.engine.submit_tool_outputs(run_id, outputs)
        except BaseException:
            self.hub.forget_expectations(run_id)
            raise
        self.hub.wait_seen(run)
        if data.get("stream"):
            return _Stream(run_id, log, cursor)
        return self._run_json(run)

    def _list_steps(self, req: _Request) -> _Json:
        thread_id, run_id = req.ids
        self._run_of(thread_id, run_id)
        return _Json(_page(self.hub.steps(run_id), req.query))

    def _get_step(self, req: _Request) -> _Json:
        thread_id, run_id, step_id = req.ids
        self._run_of(thread_id, run_id)
        for step in self.hub.steps(run_id):
            if step["id"] == step_id:
                return _Json(step)
        raise not_found("run step", step_id)


def create_app(
    engine: Engine,
    script: ScriptSource = None,
    assistants: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    api_key: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
    default_model: str = DEFAULT_MODEL,
) -> RunsApp:
    """
    An ASGI app speaking OpenAI's runs API over ``engine``, for the official SDK.

    Args:
        engine: The engine that holds the runs. Tests may drive it directly while the
            app serves the same runs.
        script: What moves runs by themselves: a :class:`runflow.testing.Script` for
            every run, a mapping from assistant id to script, a
            :class:`runflow.testing.ScriptMap`, or a function of the run. None
            (manual mode): runs move only when the test drives ``engine``.
        assistants: Assistant id → defaults for its runs (``model``,
            ``instructions``, ``tools``, and the other run settings), used where a
            request gives none. Assistant ids need no registration.
        api_key: If set, every request needs ``Authorization: Bearer <api_key>``.
        max_body: The largest request body, in bytes (413 beyond).
        poll_interval_ms: The ``openai-poll-after-ms`` of runs no script drives on
            virtual time (a scripted run says ``0``: its latency is virtual).
        default_model: The model of a run whose request and assistant name none.

    .. versionadded:: 0.1.0
    """
    return RunsApp(
        engine,
        script,
        assistants,
        api_key=api_key,
        max_body=max_body,
        poll_interval_ms=poll_interval_ms,
        default_model=default_model,
    )


def _assistant(assistant_id: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(settings) - _ASSISTANT_FIELDS
    if unknown:
        msg = f"assistants[{assistant_id!r}]: unknown settings {sorted(unknown)}"
        raise ValueError(msg)
    return dict(settings)


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _page(items: Sequence[Mapping[str, Any]], query: Mapping[str, list[str]]) -> dict[str, Any]:
    """One page of a list, as OpenAI pages: ``limit``, ``order`` (default desc),
    ``after`` and ``before`` cursors (ids of items); an unknown cursor is a 400."""
    raw_limit = _one(query, "limit")
    limit = 20
    if raw_limit is not None:
        if not raw_limit.strip().lstrip("-").isdigit():
            raise ApiError(
                400,
                "Invalid type for 'limit': expected an integer, but got a string instead.",
                param="limit",
            )
        limit = int(raw_limit)
        if not 1 <= limit <= 100:  # noqa: PLR2004 - OpenAI's bounds
            side = "below minimum" if limit < 1 else "above maximum"
            bound = ">= 1" if limit < 1 else "<= 100"
            raise ApiError(
                400,
                f"Invalid 'limit': integer {side} value. Expected a value {bound}, "
                f"but got {limit} instead.",
                param="limit",
            )
    order = _one(query, "order") or "desc"
    if order not in {"asc", "desc"}:
        raise ApiError(
            400,
            f"Invalid value: '{order[:100]}'. Supported values are: 'asc' and 'desc'.",
            param="order",
        )
    seq = list(items) if order == "asc" else list(reversed(items))
    ids = [str(item["id"]) for item in seq]
    after = _one(query, "after")
    before = _one(query, "before")
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and cursor not in ids:
            raise ApiError(
                400, f"Invalid '{name}': no object with id '{cursor[:100]}'.", param=name
            )
    first = ids.index(after) + 1 if after is not None else 0
    stop = ids.index(before) if before is not None else len(seq)
    window = seq[first:stop]
    has_more = len(window) > limit
    page = window[-limit:] if before is not None and after is None else window[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }


def _sse(name: str, data: Any, *, more: bool = True) -> Message:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return {
        "type": "http.response.body",
        "body": f"event: {name}\ndata: {payload}\n\n".encode(),
        "more_body": more,
    }


async def _send_json(send: Send, response: _Json) -> None:
    body = json.dumps(response.body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", new_id("req_").encode()),
        *((k.encode(), v.encode()) for k, v in response.headers),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
