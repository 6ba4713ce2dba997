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
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from runflow._engine import (
    DEFAULT_CANCEL_GRACE,
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LEASE,
    DEFAULT_SWEEP_BATCH,
    Engine,
    RunRef,
    Subscriber,
)
from runflow._events import RunEvent
from runflow._model import IncompleteReason, RunObject, RunStatus, Usage
from runflow.stores._base import AsyncStore, Change, ClaimStep, JournalEntry, Store, StoredRun

if typing.TYPE_CHECKING:
    from runflow._clock import Clock
    from runflow.hooks import IncompleteReasonHook, RequiredActionHook

__all__ = ["AsyncEngine"]

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

    # --- the API, as coroutines ---------------------------------------------------------

    async def create(
        self,
        *,
        thread_id: str,
        assistant_id: str,
        model: str = "",
        instructions: str | None = "",
        tools: Iterable[Any] = (),
        metadata: Mapping[str, str] | None = None,
        max_prompt_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        truncation_strategy: Any = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = True,
        response_format: Any = None,
        expires_after: int | None = None,
    ) -> RunObject:
        """See :meth:`runflow.Engine.create`."""
        return await asyncio.to_thread(
            functools.partial(
                self.engine.create,
                thread_id=thread_id,
                assistant_id=assistant_id,
                model=model,
                instructions=instructions,
                tools=tools,
                metadata=metadata,
                max_prompt_tokens=max_prompt_tokens,
                max_completion_tokens=max_completion_tokens,
                temperature=temperature,
                top_p=top_p,
                truncation_strategy=truncation_strategy,
                tool_choice=tool_choice,
                parallel_tool_calls=parallel_tool_calls,
                response_format=response_format,
                expires_after=expires_after,
            )
        )

    async def get(self, run: RunRef) -> RunObject:
        """See :meth:`runflow.Engine.get`."""
        return await asyncio.to_thread(self.engine.get, run)

    async def start(
        self, run: RunRef, *, worker: str | None = None, lease: int | None = None
    ) -> RunObject:
        """See :meth:`runflow.Engine.start`."""
        return await asyncio.to_thread(self.engine.start, run, worker=worker, lease=lease)

    async def claim(
        self, worker: str, *, limit: int = 1, lease: int | None = None
    ) -> list[RunObject]:
        """See :meth:`runflow.Engine.claim`."""
        return await asyncio.to_thread(self.engine.claim, worker, limit=limit, lease=lease)

    async def heartbeat(self, run: RunRef, *, worker: str, lease: int | None = None) -> RunObject:
        """See :meth:`runflow.Engine.heartbeat`."""
        return await asyncio.to_thread(self.engine.heartbeat, run, worker=worker, lease=lease)

    async def require_action(
        self, run: RunRef, tool_calls: Iterable[Any], *, worker: str | None = None
    ) -> RunObject:
        """See :meth:`runflow.Engine.require_action`."""
        return await asyncio.to_thread(self.engine.require_action, run, tool_calls, worker=worker)

    async def submit_tool_outputs(
        self, run: RunRef, tool_outputs: Iterable[Any], *, worker: str | None = None
    ) -> RunObject:
        """See :meth:`runflow.Engine.submit_tool_outputs`."""
        return await asyncio.to_thread(
            self.engine.submit_tool_outputs, run, tool_outputs, worker=worker
        )

    async def complete(
        self,
        run: RunRef,
        usage: Usage | Mapping[str, int] | None = None,
        *,
        worker: str | None = None,
    ) -> RunObject:
        """See :meth:`runflow.Engine.complete`."""
        return await asyncio.to_thread(self.engine.complete, run, usage, worker=worker)

    async def fail(
        self, run: RunRef, *, code: str, message: str, worker: str | None = None
    ) -> RunObject:
        """See :meth:`runflow.Engine.fail`."""
        return await asyncio.to_thread(
            self.engine.fail, run, code=code, message=message, worker=worker
        )

    async def mark_incomplete(
        self,
        run: RunRef,
        *,
        reason: IncompleteReason,
        usage: Usage | Mapping[str, int] | None = None,
        worker: str | None = None,
    ) -> RunObject:
        """See :meth:`runflow.Engine.mark_incomplete`."""
        return await asyncio.to_thread(
            self.engine.mark_incomplete, run, reason=reason, usage=usage, worker=worker
        )

    async def cancel(self, run: RunRef, *, worker: str | None = None) -> RunObject:
        """See :meth:`runflow.Engine.cancel`."""
        return await asyncio.to_thread(self.engine.cancel, run, worker=worker)

    async def finish_cancel(self, run: RunRef, *, worker: str | None = None) -> RunObject:
        """See :meth:`runflow.Engine.finish_cancel`."""
        return await asyncio.to_thread(self.engine.finish_cancel, run, worker=worker)

    async def expire(self, run: RunRef, *, worker: str | None = None) -> RunObject:
        """See :meth:`runflow.Engine.expire`."""
        return await asyncio.to_thread(self.engine.expire, run, worker=worker)

    async def add_usage(
        self,
        run: RunRef,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        worker: str | None = None,
    ) -> RunObject:
        """See :meth:`runflow.Engine.add_usage`."""
        return await asyncio.to_thread(
            self.engine.add_usage,
            run,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            worker=worker,
        )

    async def modify(self, run: RunRef, *, metadata: Mapping[str, str] | None) -> RunObject:
        """See :meth:`runflow.Engine.modify`."""
        return await asyncio.to_thread(self.engine.modify, run, metadata=metadata)

    async def sweep(self) -> list[RunObject]:
        """See :meth:`runflow.Engine.sweep`."""
        return await asyncio.to_thread(self.engine.sweep)

    async def observe(self, snapshot: Mapping[str, Any] | RunObject) -> RunObject:
        """See :meth:`runflow.Engine.observe`."""
        return await asyncio.to_thread(self.engine.observe, snapshot)

    async def runs(
        self,
        *,
        thread_id: str | None = None,
        status: RunStatus | str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[RunObject]:
        """See :meth:`runflow.Engine.runs`."""
        return await asyncio.to_thread(
            self.engine.runs,
            thread_id=thread_id,
            status=status,
            limit=limit,
            newest_first=newest_first,
        )

    async def history(self, run: RunRef) -> list[JournalEntry]:
        """See :meth:`runflow.Engine.history`."""
        return await asyncio.to_thread(self.engine.history, run)

    async def events(self, *, after: int = 0, limit: int = 1000) -> list[RunEvent]:
        """See :meth:`runflow.Engine.events`."""
        return await asyncio.to_thread(self.engine.events, after=after, limit=limit)

    async def discard(self, run: RunRef) -> None:
        """See :meth:`runflow.Engine.discard`."""
        await asyncio.to_thread(self.engine.discard, run)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """See :meth:`runflow.Engine.subscribe`; ``callback`` runs in a worker thread."""
        return self.engine.subscribe(callback)
