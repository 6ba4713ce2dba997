"""AsyncEngine: the engine's API as coroutines, over sync and async stores."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runflow import AsyncEngine, InvalidTransitionError, RunStatus, ThreadBusyError
from runflow.stores import Change, ClaimStep, JournalEntry, MemoryStore, StoredRun
from runflow.testing import EventRecorder, FakeClock

from .conftest import WEATHER_TOOL

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
OUTPUT = {"tool_call_id": "call_1", "output": "sunny"}


class CoroutineStore:
    """An AsyncStore over MemoryStore that records on which thread each call ran."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.loop_calls = 0
        self.closed = False

    def _on_loop(self) -> None:
        asyncio.get_running_loop()  # raises if not on the event loop
        self.loop_calls += 1

    async def get(self, run_id: str) -> StoredRun | None:
        self._on_loop()
        return self.inner.get(run_id)

    async def insert(self, run: StoredRun, change: Change) -> int:
        self._on_loop()
        await asyncio.sleep(0)
        return self.inner.insert(run, change)

    async def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        self._on_loop()
        await asyncio.sleep(0)
        return self.inner.commit(old, new, change)

    async def claim(self, *, limit: int, now: int, step: ClaimStep) -> list[tuple[StoredRun, int]]:
        self._on_loop()
        return self.inner.claim(limit=limit, now=now, step=step)

    async def due(self, now: int, limit: int) -> list[str]:
        return self.inner.due(now, limit)

    async def lapsed(self, now: int, limit: int) -> list[str]:
        return self.inner.lapsed(now, limit)

    async def stuck(self, status: str, since: int, limit: int) -> list[str]:
        return self.inner.stuck(status, since, limit)

    async def history(self, run_id: str) -> list[JournalEntry]:
        return self.inner.history(run_id)

    async def journal(self, after: int, limit: int) -> list[JournalEntry]:
        return self.inner.journal(after, limit)

    async def runs(self, **kwargs: Any) -> list[StoredRun]:
        return self.inner.runs(**kwargs)

    async def discard(self, run_id: str) -> None:
        self.inner.discard(run_id)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture(name="kind", params=["sync-store", "async-store"])
def _kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _lifecycle(engine: AsyncEngine) -> list[RunStatus]:
    run = await engine.create(thread_id="thread_a", assistant_id="asst_a", tools=[WEATHER_TOOL])
    seen = [run.status]
    run = await engine.start(run.id)
    seen.append(run.status)
    run = await engine.require_action(run.id, [CALL])
    seen.append(run.status)
    run = await engine.submit_tool_outputs(run.id, [OUTPUT])
    seen.append(run.status)
    (run,) = await engine.claim("w1")
    seen.append(run.status)
    await engine.heartbeat(run.id, worker="w1")
    run = await engine.complete(run.id, usage={"prompt_tokens": 1, "completion_tokens": 2})
    seen.append(run.status)
    return seen


class TestAsyncEngine:
    """Every call is a coroutine; the loop keeps running while the engine works."""

    def test_full_lifecycle(self, kind: str) -> None:
        """A whole lifecycle through the coroutine API, on both kinds of store."""

        async def main() -> tuple[list[RunStatus], int, Any]:
            store: Any = MemoryStore() if kind == "sync-store" else CoroutineStore()
            async with AsyncEngine(clock=FakeClock(), store=store) as engine:
                recorder = EventRecorder()
                engine.subscribe(recorder)
                ticks = 0

                async def ticker() -> None:
                    nonlocal ticks
                    while True:
                        ticks += 1
                        await asyncio.sleep(0)

                task = asyncio.create_task(ticker())
                seen = await _lifecycle(engine)
                task.cancel()
                history = await engine.history((await engine.runs())[0])
                assert [e.trigger for e in history][-1] == "complete"
                assert recorder.names[-1] == "thread.run.completed"
                assert [e.event for e in await engine.events()] == recorder.names
            return seen, ticks, store

        seen, ticks, store = asyncio.run(main())
        assert seen == [
            RunStatus.QUEUED,
            RunStatus.IN_PROGRESS,
            RunStatus.REQUIRES_ACTION,
            RunStatus.QUEUED,
            RunStatus.IN_PROGRESS,
            RunStatus.COMPLETED,
        ]
        assert ticks > 0  # the loop ran while the engine worked
        if kind == "async-store":
            assert store.loop_calls > 0  # the store's coroutines ran on the loop
            assert store.closed

    def test_errors_are_the_engine_errors(self) -> None:
        """Refusals raise the same exceptions as the sync engine."""

        async def main() -> None:
            async with AsyncEngine(clock=FakeClock(), store=CoroutineStore()) as engine:
                run = await engine.create(thread_id="thread_a", assistant_id="asst_a")
                with pytest.raises(ThreadBusyError):
                    await engine.create(thread_id="thread_a", assistant_id="asst_a")
                with pytest.raises(InvalidTransitionError, match="do not accept tool outputs"):
                    await engine.submit_tool_outputs(run.id, [OUTPUT])
                await engine.cancel(run.id)
                assert (await engine.finish_cancel(run.id)).status is RunStatus.CANCELLED

        asyncio.run(main())

    def test_sweep_and_expiry(self) -> None:
        """Sweeps and the expiry rule work through the coroutine API."""

        async def main() -> None:
            clock = FakeClock()
            async with AsyncEngine(clock=clock) as engine:
                run = await engine.create(thread_id="thread_a", assistant_id="asst_a")
                clock.advance(600)
                (expired,) = await engine.sweep()
                assert expired.id == run.id
                assert (await engine.get(run.id)).status is RunStatus.EXPIRED

        asyncio.run(main())
