"""
The official OpenAI SDK wired to a runflow engine in-process: httpx transports that
call the ASGI app directly (no socket, no network), streaming included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import typing
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    import openai

    from runflow._engine import Engine
    from runflow.server._app import RunsApp
    from runflow.testing._script import ScriptSource

__all__ = [
    "BASE_URL",
    "AsyncInProcessTransport",
    "InProcessTransport",
    "async_openai_client",
    "openai_client",
]

#: The base URL in-process clients use (nothing listens there).
BASE_URL = "http://runflow.invalid/v1"
_API_KEY = "sk-runflow-test"
_END = object()
Message = MutableMapping[str, Any]


def _scope(request: httpx2.Request) -> dict[str, Any]:
    url = request.url
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.raw_path.split(b"?")[0],
        "query_string": url.query,
        "server": (url.host, url.port or 80),
        "client": ("127.0.0.1", 0),
        "root_path": "",
    }


def _read_timeout(request: httpx2.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, Mapping):
        value = timeout.get("read")
        return float(value) if isinstance(value, int | float) else None
    return None


class _LoopThread:
    """An event loop on a daemon thread: the app's home for synchronous clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="runflow-in-process-app", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class _Exchange:
    """One request and its response, as the ASGI ``receive``/``send`` pair.

    ``on_start(status, headers)`` gets the response head, ``on_chunk(item)`` each body
    chunk, then ``_END`` (or the app's exception).
    """

    def __init__(
        self,
        body: bytes,
        on_start: Callable[[tuple[int, list[tuple[bytes, bytes]]]], None],
        on_chunk: Callable[[object], None],
    ) -> None:
        self._body: bytes | None = body
        self._on_start = on_start
        self._on_chunk = on_chunk
        self._started = False
        self.disconnected = asyncio.Event()

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._started = True
            self._on_start((message["status"], list(message.get("headers", []))))
            return
        if message["type"] != "http.response.body":
            return
        if self.disconnected.is_set():
            msg = "the client closed the response"
            raise OSError(msg)
        data = message.get("body", b"")
        if data:
            self._on_chunk(bytes(data))
        if not message.get("more_body", False):
            self._on_chunk(_END)

    async def run(
        self, app: Any, scope: Mapping[str, Any], fail: Callable[[Exception], None]
    ) -> None:
        try:
            await app(dict(scope), self.receive, self.send)
        except Exception as error:  # noqa: BLE001 - handed to the reader
            if not self._started:
                fail(error)
            self._on_chunk(error)
        finally:
            self._on_chunk(_END)


@typing.final
class InProcessTransport(httpx2.BaseTransport):
    """
    A synchronous httpx transport that calls an ASGI app in this process.

    The app runs on an event loop in a background thread, so requests from several
    threads are served concurrently, and a streamed response arrives event by event
    while the test drives the engine.

    .. versionadded:: 0.1.0
    """

    def __init__(self, app: Any, *, close_app: bool = False) -> None:
        self.app = app
        self._close_app = close_app
        self._home: _LoopThread | None = None
        self._lock = threading.Lock()

    def _loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._home is None:
                self._home = _LoopThread()
            return self._home.loop

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` to the app; the response streams as the app sends it."""
        body = request.read()
        loop = self._loop()
        head: concurrent.futures.Future[tuple[int, list[tuple[bytes, bytes]]]]
        head = concurrent.futures.Future()
        chunks: queue.Queue[object] = queue.Queue()
        made: concurrent.futures.Future[_Exchange] = concurrent.futures.Future()

        async def call() -> None:
            exchange = _Exchange(body, head.set_result, chunks.put)
            made.set_result(exchange)
            await exchange.run(self.app, _scope(request), head.set_exception)

        asyncio.run_coroutine_threadsafe(call(), loop)
        exchange = made.result()
        status, headers = head.result()

        def close() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(exchange.disconnected.set)

        stream = _SyncStream(chunks, close, _read_timeout(request))
        return httpx2.Response(status, headers=headers, stream=stream, request=request)

    def close(self) -> None:
        """Stop the app's event loop thread (and the app, if this transport owns it)."""
        with self._lock:
            if self._home is not None:
                self._home.close()
                self._home = None
        if self._close_app:
            self.app.close()


class _SyncStream(httpx2.SyncByteStream):
    def __init__(
        self, chunks: queue.Queue[object], on_close: Callable[[], None], timeout: float | None
    ) -> None:
        self._chunks = chunks
        self._on_close = on_close
        self._timeout = timeout

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                item = self._chunks.get(timeout=self._timeout)
            except queue.Empty:
                msg = "the in-process app sent nothing in time"
                raise httpx2.ReadTimeout(msg) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield typing.cast("bytes", item)

    def close(self) -> None:
        self._on_close()


@typing.final
class AsyncInProcessTransport(httpx2.AsyncBaseTransport):
    """
    An async httpx transport that calls an ASGI app on the caller's event loop,
    streaming the response as the app sends it.

    .. versionadded:: 0.1.0
    """

    def __init__(self, app: Any, *, close_app: bool = False) -> None:
        self.app = app
        self._close_app = close_app

    async def aclose(self) -> None:
        """Stop the app, if this transport owns it."""
        if self._close_app:
            self.app.close()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` to the app; the response streams as the app sends it."""
        body = await request.aread()
        loop = asyncio.get_running_loop()
        head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = loop.create_future()
        chunks: asyncio.Queue[object] = asyncio.Queue()
        exchange = _Exchange(body, head.set_result, chunks.put_nowait)
        task = loop.create_task(exchange.run(self.app, _scope(request), head.set_exception))
        status, headers = await head
        stream = _AsyncStream(chunks, exchange.disconnected, task, _read_timeout(request))
        return httpx2.Response(status, headers=headers, stream=stream, request=request)


class _AsyncStream(httpx2.AsyncByteStream):
    def __init__(
        self,
        chunks: asyncio.Queue[object],
        disconnected: asyncio.Event,
        task: asyncio.Task[None],
        timeout: float | None,
    ) -> None:
        self._chunks = chunks
        self._disconnected = disconnected
        self._task = task
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                item = await asyncio.wait_for(self._chunks.get(), self._timeout)
            except TimeoutError:
                msg = "the in-process app sent nothing in time"
                raise httpx2.ReadTimeout(msg) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield typing.cast("bytes", item)

    async def aclose(self) -> None:
        self._disconnected.set()
        if not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 1.0)
            except (TimeoutError, OSError):
                self._task.cancel()


def _app(
    engine: Engine | RunsApp, script: ScriptSource, app_kwargs: Mapping[str, Any]
) -> tuple[RunsApp, bool]:
    """The app to call, and whether it was made here (and is closed with the client)."""
    from runflow.server._app import RunsApp, create_app  # noqa: PLC0415

    if isinstance(engine, RunsApp):
        if script is not None or app_kwargs:
            msg = "give script and app settings to create_app, not with an app"
            raise TypeError(msg)
        return engine, False
    return create_app(engine, script, **app_kwargs), True


def openai_client(
    engine: Engine | RunsApp,
    script: ScriptSource = None,
    *,
    assistants: Mapping[str, Mapping[str, Any]] | None = None,
    api_key: str | None = None,
    max_retries: int = 0,
    **client_kwargs: Any,
) -> openai.OpenAI:
    """
    An :class:`openai.OpenAI` bound in-process to ``create_app(engine, script=script)``:
    no socket, no network.

    With ``script=None`` the app never moves a run by itself (manual mode): the test
    drives it through ``engine`` and the SDK sees each change on its next call. A
    ready :class:`runflow.server.RunsApp` may be given instead of the engine.

    Args:
        engine: The engine (or the app) to talk to.
        script: See :func:`runflow.server.create_app`.
        assistants: Assistant id → defaults for its runs, see ``create_app``.
        api_key: The key the client sends (the app checks none unless made with one).
        max_retries: The SDK's retries of 429 and 5xx answers (default 0 here, so an
            injected fault shows at once; raise it to test retry logic).
        client_kwargs: Passed on to :class:`openai.OpenAI`.

    Close the client (``client.close()`` or ``with``) to stop the app's thread.

    .. versionadded:: 0.1.0
    """
    import openai  # noqa: PLC0415 - the SDK is the caller's dependency, not runflow's

    app_kwargs = {} if assistants is None else {"assistants": assistants}
    app, owned = _app(engine, script, app_kwargs)
    http = httpx2.Client(transport=InProcessTransport(app, close_app=owned), base_url=BASE_URL)
    return openai.OpenAI(
        api_key=api_key or _API_KEY,
        base_url=BASE_URL,
        http_client=http,
        max_retries=max_retries,
        **client_kwargs,
    )


def async_openai_client(
    engine: Engine | RunsApp,
    script: ScriptSource = None,
    *,
    assistants: Mapping[str, Mapping[str, Any]] | None = None,
    api_key: str | None = None,
    max_retries: int = 0,
    **client_kwargs: Any,
) -> openai.AsyncOpenAI:
    """
    An :class:`openai.AsyncOpenAI` bound in-process to ``create_app(engine,
    script=script)``; the app runs on the caller's event loop. See
    :func:`openai_client`.

    .. versionadded:: 0.1.0
    """
    import openai  # noqa: PLC0415

    app_kwargs = {} if assistants is None else {"assistants": assistants}
    app, owned = _app(engine, script, app_kwargs)
    transport = AsyncInProcessTransport(app, close_app=owned)
    http = httpx2.AsyncClient(transport=transport, base_url=BASE_URL)
    return openai.AsyncOpenAI(
        api_key=api_key or _API_KEY,
        base_url=BASE_URL,
        http_client=http,
        max_retries=max_retries,
        **client_kwargs,
    )
