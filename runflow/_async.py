"""
The engine for asyncio services.

One implementation of the lifecycle serves both worlds: :class:`AsyncEngine` runs
the (synchronous, thread-safe) :class:`~runflow.Engine` in worker threads, so no
engine call blocks the event loop. Given an :class:`~runflow.stores.AsyncStore`
(such as :class:`runflow.stores.postgres.AsyncPostgresStore`, on psycopg's async
connection pool), the engine's store calls are sent back to the event loop as
coroutines: the database work runs on the loop, the lifecycle logic in a thread
that waits for it, and nothing is written twice.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Concatenate, ParamSpec, TypeVar

from runflow._engine import (
    DEFAULT_CANCEL_GRACE,
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LEASE,
    DEFAULT_SWEEP_BATCH,
    Engine,
    Subscriber,
)
from runflow.stores._base import AsyncStore, Change, ClaimStep, JournalEntry, Store, StoredRun

if typing.TYPE_CHECKING:
    from runflow._clock import Clock
    from runflow.hooks import IncompleteReasonHook, RequiredActionHook

__all__ = ["AsyncEngine"]

P = ParamSpec("P")
T = TypeVar("T")


class _LoopStore:
    """
    A synchronous :class:`~runflow.stores.Store` over an async one: each call runs
    as a coroutine on the event loop while the calling worker thread waits.
    """

    def __init__(self, store: AsyncStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        if hasattr(store, "watch"):
            self.watch = store.watch  # a watcher runs its own thread and connection

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def get(self, run_id: str) -> StoredRun | None:
        return self._wait(self._store.get(run_id))

    def insert(self, run: StoredRun, change: Change) -> int:
        return self._wait(self._store.insert(run, change))

    def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        return self._wait(self._store.commit(old, new, change))

    def claim(self, *, limit: int, now: int, step: ClaimStep) -> list[tuple[StoredRun, int]]:
        return self._wait(self._store.claim(limit=limit, now=now, step=step))

    def due(self, now: int, limit: int) -> list[str]:
        return self._wait(self._store.due(now, limit))

    def lapsed(self, now: int, limit: int) -> list[str]:
        return self._wait(self._store.lapsed(now, limit))

    def stuck(self, status: str, since: int, limit: int) -> list[str]:
        return self._wait(self._store.stuck(status, since, limit))

    def history(self, run_id: str) -> list[JournalEntry]:
        return self._wait(self._store.history(run_id))

    def journal(self, after: int, limit: int) -> list[JournalEntry]:
        return self._wait(self._store.journal(after, limit))

    def runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredRun]:
        return self._wait(
            self._store.runs(
                thread_id=thread_id, status=status, limit=limit, newest_first=newest_first
            )
        )

    def discard(self, run_id: str) -> None:
        self._wait(self._store.discard(run_id))

    def close(self) -> None:
        """Closed by :meth:`AsyncEngine.aclose`, on the loop."""


def _is_async_store(store: object) -> bool:
    return inspect.iscoroutinefunction(getattr(store, "commit", None))


def _in_thread(
    method: Callable[Concatenate[Engine, P], T],
) -> Callable[Concatenate[AsyncEngine, P], Coroutine[Any, Any, T]]:
    """``Engine.<method>`` as a coroutine method of AsyncEngine, run in a worker thread."""

    @functools.wraps(method)
    async def call(self: AsyncEngine, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(method, self.engine, *args, **kwargs)

    call.__doc__ = f"See :meth:`runflow.Engine.{method.__name__}`: the same, as a coroutine."
    return call


@typing.final
class AsyncEngine:
    """
    :class:`~runflow.Engine`'s API as coroutines, for asyncio services.

    Takes the same arguments as :class:`~runflow.Engine`; ``store`` may be a
    synchronous store (its calls then run in worker threads) or an
    :class:`~runflow.stores.AsyncStore` (its coroutines run on the event loop that
    creates the engine). Create it inside a running loop, and close it with
    ``await engine.aclose()`` or ``async with``.

    Subscribers are called in worker threads, in sequence order; to consume events
    on the loop, use :meth:`events` with the last sequence seen.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        store: Store | AsyncStore | None = None,
        id_factory: Callable[[], str] | None = None,
        expires_after: int = DEFAULT_EXPIRES_AFTER,
        required_action_hooks: Iterable[RequiredActionHook] = (),
        incomplete_reason_hooks: Iterable[IncompleteReasonHook] = (),
        logger: Any = None,
        lease: int = DEFAULT_LEASE,
        cancel_grace: int | None = DEFAULT_CANCEL_GRACE,
        sweep_batch: int = DEFAULT_SWEEP_BATCH,
    ) -> None:
        self._async_store: AsyncStore | None = None
        sync_store: Store | None
        if store is not None and _is_async_store(store):
            self._async_store = typing.cast("AsyncStore", store)
            sync_store = typing.cast(
                "Store", _LoopStore(self._async_store, asyncio.get_running_loop())
            )
        else:
            sync_store = typing.cast("Store | None", store)
        self.engine = Engine(
            clock=clock,
            store=sync_store,
            id_factory=id_factory,
            expires_after=expires_after,
            required_action_hooks=required_action_hooks,
            incomplete_reason_hooks=incomplete_reason_hooks,
            logger=logger,
            lease=lease,
            cancel_grace=cancel_grace,
            sweep_batch=sweep_batch,
        )

    def __repr__(self) -> str:
        return f"<AsyncEngine {self.engine!r}>"

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop event delivery and close the store."""
        await asyncio.to_thread(self.engine.close)
        if self._async_store is not None:
            await self._async_store.close()

    # --- the API, as coroutines: each runs the engine's method in a worker thread --------

    create = _in_thread(Engine.create)
    get = _in_thread(Engine.get)
    runs = _in_thread(Engine.runs)
    history = _in_thread(Engine.history)
    events = _in_thread(Engine.events)
    discard = _in_thread(Engine.discard)
    start = _in_thread(Engine.start)
    claim = _in_thread(Engine.claim)
    heartbeat = _in_thread(Engine.heartbeat)
    require_action = _in_thread(Engine.require_action)
    submit_tool_outputs = _in_thread(Engine.submit_tool_outputs)
    complete = _in_thread(Engine.complete)
    fail = _in_thread(Engine.fail)
    mark_incomplete = _in_thread(Engine.mark_incomplete)
    cancel = _in_thread(Engine.cancel)
    finish_cancel = _in_thread(Engine.finish_cancel)
    expire = _in_thread(Engine.expire)
    add_usage = _in_thread(Engine.add_usage)
    modify = _in_thread(Engine.modify)
    sweep = _in_thread(Engine.sweep)
    observe = _in_thread(Engine.observe)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """See :meth:`runflow.Engine.subscribe`; ``callback`` runs in a worker thread."""
        return self.engine.subscribe(callback)
