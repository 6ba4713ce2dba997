"""The engine's multi-worker contract: claims, leases, the thread lock, the journal, sweeps.

Every test runs over every store (the ``store`` fixture of this folder's conftest:
memory, SQLite and PostgreSQL), so the engine behaves the same on each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from runflow import (
    Engine,
    InvalidTransitionError,
    LeaseError,
    RunStatus,
    ThreadBusyError,
)
from runflow.stores import Store
from runflow.testing import EventRecorder, FakeClock
from tests.conftest import WEATHER_TOOL

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
OUTPUT = {"tool_call_id": "call_1", "output": "sunny"}


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock(1_700_000_000)


@pytest.fixture(name="engine")
def _engine(store: Store, clock: FakeClock) -> Engine:
    return Engine(clock=clock, store=store, lease=30, cancel_grace=60)


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Wait, bounded, for events a shared store (PostgreSQL) delivers from its watcher."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def new(engine: Engine, thread: str) -> str:
    """A queued run with the weather tool on ``thread``."""
    return engine.create(thread_id=thread, assistant_id="asst_a", tools=[WEATHER_TOOL]).id


class TestThreadLock:
    """One active run per thread (LIFECYCLE R1.3)."""

    def test_second_active_run_refused_with_openai_message(self, engine: Engine) -> None:
        """create() on a thread with an active run raises ThreadBusyError, run unchanged."""
        first = new(engine, "thread_x")
        with pytest.raises(ThreadBusyError) as refused:
            new(engine, "thread_x")
        assert str(refused.value) == f"Thread thread_x already has an active run {first}."
        assert (refused.value.thread_id, refused.value.run_id) == ("thread_x", first)
        assert [r.id for r in engine.runs(thread_id="thread_x")] == [first]

    @pytest.mark.parametrize("end", ["complete", "cancel", "expire", "fail"])
    def test_thread_frees_when_the_run_ends(self, engine: Engine, end: str) -> None:
        """Once the active run ends, the thread takes a new run."""
        first = new(engine, "thread_x")
        engine.start(first)
        if end == "complete":
            engine.complete(first)
        elif end == "cancel":
            engine.cancel(first)
            engine.finish_cancel(first)
        elif end == "expire":
            engine.expire(first)
        else:
            engine.fail(first, code="server_error", message="boom")
        second = new(engine, "thread_x")
        assert engine.get(second).status is RunStatus.QUEUED

    def test_an_overdue_run_frees_its_thread(self, engine: Engine, clock: FakeClock) -> None:
        """
        The thread's active run past its deadline is expired by the create that
        reads it (R3.4), and the new run takes the thread, on every store.
        """
        first = new(engine, "thread_x")
        engine.start(first)
        clock.advance(600)
        second = new(engine, "thread_x")
        assert engine.get(first).status is RunStatus.EXPIRED
        assert engine.get(second).status is RunStatus.QUEUED
        assert [r.id for r in engine.runs(thread_id="thread_x", status="queued")] == [second]

    def test_cancelling_still_holds_the_thread(self, engine: Engine) -> None:
        """A cancelling run is active: the thread stays busy until it ends."""
        first = new(engine, "thread_x")
        engine.cancel(first)
        with pytest.raises(ThreadBusyError):
            new(engine, "thread_x")

    def test_other_threads_are_free(self, engine: Engine) -> None:
        """The lock is per thread."""
        new(engine, "thread_x")
        assert engine.get(new(engine, "thread_y")).status is RunStatus.QUEUED


class TestClaims:
    """claim(): exclusive, fair, leased."""

    def test_oldest_queued_first_and_leased(self, engine: Engine, clock: FakeClock) -> None:
        """Runs are claimed longest-waiting first and start in_progress."""
        ids = []
        for i in range(5):
            ids.append(new(engine, f"t{i}"))
            clock.advance(1)
        got = engine.claim("w1", limit=3)
        assert [r.id for r in got] == ids[:3]
        assert all(r.status is RunStatus.IN_PROGRESS for r in got)
        assert all(r.started_at == clock.now() for r in got)
        assert [r.id for r in engine.claim("w2", limit=10)] == ids[3:]
        assert engine.claim("w3", limit=10) == []

    def test_resubmitted_run_queues_behind_waiting_ones(
        self, engine: Engine, clock: FakeClock
    ) -> None:
        """A run re-queued by submit_tool_outputs waits behind runs queued before it."""
        a = new(engine, "ta")
        (claimed,) = engine.claim("w1")
        assert claimed.id == a
        engine.require_action(a, [CALL], worker="w1")
        clock.advance(1)
        b = new(engine, "tb")
        clock.advance(1)
        engine.submit_tool_outputs(a, [OUTPUT])
        assert [r.id for r in engine.claim("w2", limit=2)] == [b, a]

    def test_ties_within_a_second_go_by_creation_then_id(
        self, store: Store, clock: FakeClock
    ) -> None:
        """
        Runs that entered ``queued`` in the same second are claimed by creation time,
        then id, on every store, whatever order they entered it in.
        """
        names = iter(["run_b", "run_a", "run_c", "run_d"])
        engine = Engine(clock=clock, store=store, id_factory=lambda: next(names))
        old = new(engine, "t_old")  # run_b, created first
        (claimed,) = engine.claim("w1")
        engine.require_action(claimed, [CALL], worker="w1")
        clock.advance(1)
        second = [new(engine, "t1"), new(engine, "t2"), new(engine, "t3")]  # a, c, d
        engine.submit_tool_outputs(old, [OUTPUT])  # queued last, in the same second
        assert second == ["run_a", "run_c", "run_d"]
        assert [r.id for r in engine.claim("w2", limit=1)] == ["run_b"]  # created earliest
        assert [r.id for r in engine.claim("w2", limit=2)] == ["run_a", "run_c"]
        assert [r.id for r in engine.claim("w2", limit=5)] == ["run_d"]

    def test_creation_ties_go_by_id(self, store: Store, clock: FakeClock) -> None:
        """Runs created in the same second are claimed in id order, not call order."""
        names = iter(["run_z", "run_m", "run_a"])
        engine = Engine(clock=clock, store=store, id_factory=lambda: next(names))
        for thread in ("t1", "t2", "t3"):
            new(engine, thread)
        assert [r.id for r in engine.claim("w1", limit=2)] == ["run_a", "run_m"]
        assert [r.id for r in engine.claim("w1")] == ["run_z"]

    def test_many_queued_claimed_in_order(self, engine: Engine, clock: FakeClock) -> None:
        """A long queue drains in order, one claim at a time, past heap compactions."""
        ids = []
        for i in range(60):
            ids.append(new(engine, f"t{i}"))
            if i % 7 == 0:
                clock.advance(1)
        got = []
        while batch := engine.claim("w1", limit=4):
            got += [r.id for r in batch]
        assert sorted(got) == sorted(ids)
        order = {run_id: (engine.get(run_id).created_at, run_id) for run_id in ids}
        assert got == sorted(ids, key=order.__getitem__)

    def test_claims_are_exclusive_across_threads(self, engine: Engine) -> None:
        """Eight threads claiming from one queue never get the same run."""
        ids = {new(engine, f"t{i}") for i in range(200)}
        got: list[str] = []
        lock = threading.Lock()

        def work(name: str) -> None:
            while batch := engine.claim(name, limit=3):
                with lock:
                    got.extend(r.id for r in batch)

        workers = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(got) == sorted(ids)

    def test_overdue_runs_are_expired_not_claimed(self, engine: Engine, clock: FakeClock) -> None:
        """A queued run past its deadline is expired by the claim, never started."""
        old = new(engine, "t_old")
        clock.advance(600)
        fresh = new(engine, "t_new")
        assert [r.id for r in engine.claim("w1", limit=5)] == [fresh]
        assert engine.get(old).status is RunStatus.EXPIRED

    def test_claim_journals_the_worker(self, engine: Engine) -> None:
        """The claim's journal entry names the worker and the trigger ``claim``."""
        run = new(engine, "t")
        engine.claim("w7")
        entry = engine.history(run)[-1]
        assert (entry.trigger, entry.worker, entry.from_status, entry.to_status) == (
            "claim",
            "w7",
            RunStatus.QUEUED,
            RunStatus.IN_PROGRESS,
        )


class TestLeases:
    """Leases: held by one worker, renewed by heartbeats, lapsing into failure."""

    def test_another_worker_is_refused(self, engine: Engine) -> None:
        """A worker that does not hold the lease cannot move the run."""
        run = new(engine, "t")
        engine.claim("w1")
        with pytest.raises(LeaseError) as refused:
            engine.complete(run, worker="w2")
        assert (refused.value.holder, refused.value.worker) == ("w1", "w2")
        assert engine.get(run).status is RunStatus.IN_PROGRESS
        assert engine.complete(run, worker="w1").status is RunStatus.COMPLETED

    def test_heartbeat_extends_and_lapse_fails_the_run(
        self, engine: Engine, clock: FakeClock
    ) -> None:
        """Heartbeats keep the lease; without them a sweep fails the run, saying why."""
        run = new(engine, "t")
        engine.claim("w1", lease=30)
        clock.advance(20)
        engine.heartbeat(run, worker="w1")
        clock.advance(20)
        assert engine.sweep() == []
        clock.advance(15)
        (failed,) = engine.sweep()
        assert failed.id == run
        assert failed.status is RunStatus.FAILED
        assert failed.last_error is not None
        assert failed.last_error.code == "server_error"
        assert "lease of worker w1" in failed.last_error.message
        assert "lapsed" in failed.last_error.message
        with pytest.raises(InvalidTransitionError):
            engine.complete(run, worker="w1")

    def test_lapsed_worker_gets_an_error_before_the_sweep(
        self, engine: Engine, clock: FakeClock
    ) -> None:
        """A worker whose lease lapsed is refused on its next transition."""
        run = new(engine, "t")
        engine.claim("w1", lease=10)
        clock.advance(10)
        with pytest.raises(LeaseError, match="lapsed"):
            engine.complete(run, worker="w1")
        with pytest.raises(LeaseError):
            engine.heartbeat(run, worker="w1")

    def test_submit_releases_the_lease(self, engine: Engine) -> None:
        """requires_action and the re-queue release the lease; the next claim takes it."""
        run = new(engine, "t")
        engine.claim("w1")
        engine.require_action(run, [CALL], worker="w1")
        engine.submit_tool_outputs(run, [OUTPUT])
        (again,) = engine.claim("w2")
        assert again.id == run
        assert engine.complete(run, worker="w2").status is RunStatus.COMPLETED

    def test_start_with_worker_takes_a_lease(self, engine: Engine, clock: FakeClock) -> None:
        """An explicit start(worker=...) leases the run like a claim."""
        run = new(engine, "t")
        engine.start(run, worker="w1", lease=5)
        clock.advance(6)
        (failed,) = engine.sweep()
        assert failed.status is RunStatus.FAILED

    def test_heartbeat_outside_in_progress_is_refused(self, engine: Engine) -> None:
        """heartbeat() needs an in_progress run."""
        run = new(engine, "t")
        with pytest.raises(InvalidTransitionError, match="Cannot heartbeat run"):
            engine.heartbeat(run, worker="w1")

    def test_cancel_needs_no_lease(self, engine: Engine) -> None:
        """A client's cancel works on a run another worker holds."""
        run = new(engine, "t")
        engine.claim("w1")
        assert engine.cancel(run, worker="client").status is RunStatus.CANCELLING


class TestSweeps:
    """Sweeps: expiry, stuck cancels, idempotence in parallel."""

    def test_stuck_cancelling_ends_cancelled_after_the_grace(
        self, engine: Engine, clock: FakeClock
    ) -> None:
        """A run cancelling for longer than cancel_grace ends cancelled."""
        run = new(engine, "t")
        engine.cancel(run)
        clock.advance(59)
        assert engine.sweep() == []
        clock.advance(1)
        (done,) = engine.sweep()
        assert (done.id, done.status, done.cancelled_at) == (run, RunStatus.CANCELLED, clock.now())

    def test_grace_none_never_finishes(self, store: Store, clock: FakeClock) -> None:
        """cancel_grace=None leaves cancelling runs to the deadline."""
        engine = Engine(clock=clock, store=store, cancel_grace=None)
        run = new(engine, "t")
        engine.cancel(run)
        clock.advance(599)
        assert engine.sweep() == []
        clock.advance(1)
        assert [r.status for r in engine.sweep()] == [RunStatus.EXPIRED]

    def test_parallel_sweeps_settle_each_run_once(self, engine: Engine, clock: FakeClock) -> None:
        """Eight threads sweeping at once expire each overdue run once, one event each."""
        ids = [new(engine, f"t{i}") for i in range(300)]
        recorder = EventRecorder()
        engine.subscribe(recorder)
        clock.advance(600)
        results: list[list[Any]] = []
        lock = threading.Lock()

        def sweep() -> None:
            got = engine.sweep()
            with lock:
                results.append(got)

        threads = [threading.Thread(target=sweep) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        swept = [r.id for batch in results for r in batch]
        assert sorted(swept) == sorted(ids)
        wait_for(lambda: recorder.names.count("thread.run.expired") >= 300)
        assert recorder.names.count("thread.run.expired") == 300


class TestJournal:
    """history() and events(after=...)."""

    def test_history_is_every_transition_in_order(self, engine: Engine, clock: FakeClock) -> None:
        """Each transition is one entry: sequence, time, trigger, statuses, changed fields."""
        run = new(engine, "t")
        clock.advance(1)
        engine.start(run, worker="w1")
        engine.require_action(run, [CALL], worker="w1")
        clock.advance(2)
        engine.submit_tool_outputs(run, [OUTPUT])
        engine.start(run)
        final = engine.complete(run, usage={"prompt_tokens": 3, "completion_tokens": 4})
        entries = engine.history(run)
        assert [e.trigger for e in entries] == [
            "create",
            "start",
            "require_action",
            "submit_tool_outputs",
            "start",
            "complete",
        ]
        assert [e.to_status for e in entries] == [
            RunStatus.QUEUED,
            RunStatus.IN_PROGRESS,
            RunStatus.REQUIRES_ACTION,
            RunStatus.QUEUED,
            RunStatus.IN_PROGRESS,
            RunStatus.COMPLETED,
        ]
        assert entries[0].from_status is None
        assert [e.from_status for e in entries[1:]] == [e.to_status for e in entries[:-1]]
        sequences = [e.sequence for e in entries]
        assert sequences == sorted(set(sequences))
        assert [e.at - entries[0].at for e in entries] == [0, 1, 1, 3, 3, 3]
        assert entries[1].worker == "w1"
        assert entries[1].changes == {"status": "in_progress", "started_at": clock.now() - 2}
        assert entries[-1].changes["usage"] == {
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
        }
        assert entries[-1].run == final
        assert all(e.run_id == run for e in entries)

    def test_events_replay_equals_live_events(self, engine: Engine) -> None:
        """events(after=...) replays exactly what a subscriber saw, from any point."""
        recorder = EventRecorder()
        engine.subscribe(recorder)
        for i in range(3):
            run = new(engine, f"t{i}")
            engine.start(run)
            engine.require_action(run, [CALL])
            engine.cancel(run)
        replayed = [(e.event, e.sequence, e.data) for e in engine.events()]
        wait_for(lambda: len(recorder.events) >= len(replayed))
        live = [(e.event, e.sequence, e.data) for e in recorder.events]
        assert replayed == live
        middle = live[5][1]
        assert [(e.event, e.sequence) for e in engine.events(after=middle)] == [
            (name, seq) for name, seq, _ in live[6:]
        ]
        assert [e.sequence for e in engine.events(after=0, limit=4)] == [s for _, s, _ in live[:4]]

    def test_entries_that_keep_the_status_replay_no_event(self, engine: Engine) -> None:
        """
        ``modify`` and a snapshot that changes fields but not the status are journaled
        and send no event: a replay (and a shared store's live delivery, which reads
        the journal) has none for them either.
        """
        recorder = EventRecorder()
        engine.subscribe(recorder)
        run = new(engine, "t0")
        engine.start(run)
        engine.complete(run)
        engine.modify(run, metadata={"k": "v"})
        snapshot = engine.get(run).to_dict() | {"id": "run_remote", "thread_id": "t1"}
        engine.observe({**snapshot, "status": "in_progress", "completed_at": None})
        engine.observe(
            {**snapshot, "status": "in_progress", "completed_at": None, "metadata": {"k": "w"}}
        )
        engine.observe(snapshot)
        kinds = [(e.trigger, e.from_status, e.to_status) for e in engine.history(run)]
        assert kinds[-1] == ("modify", RunStatus.COMPLETED, RunStatus.COMPLETED)
        assert len(engine.history("run_remote")) == 3  # the same-status snapshot is journaled
        replayed = [(e.event, e.sequence) for e in engine.events()]
        wait_for(lambda: len(recorder.events) >= len(replayed))
        assert replayed == [(e.event, e.sequence) for e in recorder.events]
        assert [name for name, _ in replayed].count("thread.run.completed") == 2
        assert [name for name, _ in replayed].count("thread.run.in_progress") == 2

    def test_history_of_unknown_run(self, engine: Engine) -> None:
        """history() of an unknown id raises RunNotFoundError."""
        from runflow import RunNotFoundError  # noqa: PLC0415

        with pytest.raises(RunNotFoundError):
            engine.history("run_nope")

    def test_refused_call_journals_nothing(self, engine: Engine) -> None:
        """A refused transition leaves the journal as it was."""
        run = new(engine, "t")
        before = engine.history(run)
        with pytest.raises(InvalidTransitionError):
            engine.complete(run)
        assert engine.history(run) == before


class TestModify:
    """modify(): metadata of ended runs only (LIFECYCLE R6.1)."""

    def test_active_run_refused_with_openai_message(self, engine: Engine) -> None:
        """An active run's metadata cannot change."""
        run = new(engine, "t")
        engine.start(run)
        with pytest.raises(InvalidTransitionError) as refused:
            engine.modify(run, metadata={"a": "b"})
        assert str(refused.value) == "Cannot update run with status 'in_progress'."
        assert engine.get(run).metadata == {}

    def test_ended_run_takes_new_metadata_and_journals_it(self, engine: Engine) -> None:
        """After the run ends, metadata is replaced and the change journaled."""
        run = new(engine, "t")
        engine.cancel(run)
        engine.finish_cancel(run)
        changed = engine.modify(run, metadata={"reviewed": "yes"})
        assert changed.metadata == {"reviewed": "yes"}
        assert engine.get(run) == changed
        last = engine.history(run)[-1]
        assert (last.trigger, last.from_status, last.to_status) == (
            "modify",
            RunStatus.CANCELLED,
            RunStatus.CANCELLED,
        )
        assert last.changes == {"metadata": {"reviewed": "yes"}}
        assert last.run == changed
        history = engine.history(run)
        assert [e.run.metadata for e in history] == [{}, {}, {}, {"reviewed": "yes"}]
        assert history[0].run.status is RunStatus.QUEUED

    def test_metadata_limits_apply(self, engine: Engine) -> None:
        """Values must be strings: OpenAI's message names the key."""
        from runflow import ValidationError  # noqa: PLC0415

        run = new(engine, "t")
        engine.expire(run)
        with pytest.raises(ValidationError, match=r"metadata\.flag"):
            engine.modify(run, metadata={"flag": True})  # type: ignore[dict-item]


def test_store_is_used(engine: Engine, store: Store) -> None:
    """The engine keeps its runs in the store it was given."""
    run = new(engine, "t")
    stored = store.get(run)
    assert stored is not None
    assert stored.record.id == run


class TestTwoHandles:
    """
    Two engines on two handles of one store (two processes): an engine never acts
    on what it last saw of a run when the store holds a newer version.
    """

    @pytest.fixture(name="engines")
    def _engines(self, open_store: Callable[..., Store], clock: FakeClock) -> tuple[Engine, Engine]:
        return Engine(clock=clock, store=open_store()), Engine(clock=clock, store=open_store())

    def test_a_refusal_is_checked_against_the_stored_run(
        self, engines: tuple[Engine, Engine]
    ) -> None:
        """A saw the run waiting for outputs; B moved it on: A's complete() succeeds."""
        a, b = engines
        run = new(a, "t")
        a.start(run)
        a.require_action(run, [CALL])
        b.submit_tool_outputs(run, [OUTPUT])
        b.start(run)
        done = a.complete(run, usage={"prompt_tokens": 1, "completion_tokens": 1})
        assert done.status is RunStatus.COMPLETED
        assert [e.trigger for e in a.history(run)][-3:] == [
            "submit_tool_outputs",
            "start",
            "complete",
        ]

    def test_a_stale_permission_loses_to_the_stored_run(
        self, engines: tuple[Engine, Engine]
    ) -> None:
        """A saw the run in progress; B completed it: A's fail() is refused, nothing written."""
        a, b = engines
        run = new(a, "t")
        a.start(run)
        b.complete(run)
        with pytest.raises(InvalidTransitionError, match="Cannot fail run with status 'completed'"):
            a.fail(run, code="server_error", message="late")
        assert a.get(run).status is RunStatus.COMPLETED
        assert len(a.history(run)) == 3

    def test_a_genuine_refusal_stays(self, engines: tuple[Engine, Engine]) -> None:
        """Nothing changed elsewhere: A's refusal is raised as it is."""
        a, _ = engines
        run = new(a, "t")
        with pytest.raises(InvalidTransitionError, match="do not accept tool outputs"):
            a.submit_tool_outputs(run, [OUTPUT])
