"""
MemoryStore's compact journal, against what the engine handed it: over random paths
through every trigger (claims, sweeps, observed snapshots, modify, discard...), each
history entry is exactly the change the engine committed, and its run is the record
the engine returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import count
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from runflow import Engine, RunflowError, RunStatus
from runflow._convert import unstructure
from runflow.stores import Change, ClaimStep, JournalEntry, MemoryStore, StoredRun
from runflow.testing import FakeClock

DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
TOOLS = [{"type": "function", "function": {"name": "f"}}]
CALLS = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
OUTPUTS = [{"tool_call_id": "call_1", "output": "ok"}]
OPS = (
    "create",
    "start",
    "start_leased",
    "require_action",
    "submit_tool_outputs",
    "complete",
    "complete_usage",
    "fail",
    "mark_incomplete",
    "cancel",
    "finish_cancel",
    "expire",
    "add_usage",
    "heartbeat",
    "claim",
    "modify",
    "observe",
    "sweep",
    "advance",
    "discard",
)
#: The lifecycle's own triggers come up more often, so that paths go somewhere.
WEIGHTED = OPS + ("start", "require_action", "submit_tool_outputs", "cancel", "complete") * 3


class RecordingStore:
    """A MemoryStore that also keeps every change it was handed, by sequence."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.changes: dict[int, Change] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def insert(self, run: StoredRun, change: Change) -> int:
        sequence = self.inner.insert(run, change)
        self.changes[sequence] = change
        return sequence

    def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        sequence = self.inner.commit(old, new, change)
        if sequence and change is not None:
            self.changes[sequence] = change
        return sequence

    def claim(self, *, limit: int, now: int, step: ClaimStep) -> list[tuple[StoredRun, int]]:
        handed: list[Change] = []

        def recording(stored: StoredRun) -> tuple[StoredRun, Change]:
            new, change = step(stored)
            handed.append(change)
            return new, change

        claimed = self.inner.claim(limit=limit, now=now, step=recording)
        for (_, sequence), change in zip(claimed, handed, strict=True):
            self.changes[sequence] = change
        return claimed


def expected(sequence: int, change: Change) -> JournalEntry:
    """The journal entry of ``change``, as the journal contract defines it."""
    before = None if change.from_status is None else change.from_status.value
    after = change.to_status.value
    changes: Mapping[str, Any] = {
        k: unstructure(v) for k, v in change.changes.items() if k != "status"
    }
    if before != after:
        changes = {"status": after, **changes}
    return JournalEntry(
        sequence=sequence,
        run_id=change.run_id,
        at=change.at,
        trigger=change.trigger,
        from_status=change.from_status,
        to_status=change.to_status,
        worker=change.worker,
        changes=changes,
        run=change.run,
    )


def _observe(engine: Engine, rid: str, pick: int) -> None:
    snapshot = engine.get(rid).to_dict()
    snapshot["id"] = f"remote_{pick % 3}"
    snapshot["status"] = ("queued", "in_progress", "cancelling", "completed")[pick % 4]
    engine.observe(snapshot)


def _calls(engine: Engine, clock: FakeClock) -> dict[str, Any]:
    """op -> what it does to a run, given the run's id and the op's number."""
    return {
        "start": lambda rid, _: engine.start(rid),
        "start_leased": lambda rid, _: engine.start(rid, worker="w1", lease=30),
        "require_action": lambda rid, _: engine.require_action(rid, CALLS),
        "submit_tool_outputs": lambda rid, _: engine.submit_tool_outputs(rid, OUTPUTS),
        "complete": lambda rid, _: engine.complete(rid),
        "complete_usage": lambda rid, pick: engine.complete(
            rid, usage={"prompt_tokens": pick, "completion_tokens": 3}
        ),
        "fail": lambda rid, pick: engine.fail(rid, code="server_error", message=f"boom {pick}"),
        "mark_incomplete": lambda rid, _: engine.mark_incomplete(
            rid, reason="max_completion_tokens"
        ),
        "cancel": lambda rid, _: engine.cancel(rid),
        "finish_cancel": lambda rid, _: engine.finish_cancel(rid),
        "expire": lambda rid, _: engine.expire(rid),
        "add_usage": lambda rid, pick: engine.add_usage(
            rid, prompt_tokens=pick % 7, completion_tokens=2
        ),
        "heartbeat": lambda rid, _: engine.heartbeat(rid, worker="w1"),
        "claim": lambda _, pick: engine.claim(("w1", "w2")[pick % 2], limit=1 + pick % 3, lease=20),
        "modify": lambda rid, pick: engine.modify(rid, metadata={"n": str(pick)}),
        "observe": lambda rid, pick: _observe(engine, rid, pick),
        "sweep": lambda _, __: engine.sweep(),
        "advance": lambda _, pick: clock.advance((1, 25, 400, 1000)[pick % 4]),
    }


def drive(engine: Engine, clock: FakeClock, ops: list[tuple[str, int]]) -> list[str]:
    """Apply ``ops`` (refusals are part of the path); return the ids of the runs kept."""
    calls = _calls(engine, clock)
    runs: list[str] = []
    for op, pick in ops:
        try:
            if op == "create" or not runs:
                created = engine.create(
                    thread_id=f"thread_{pick % 4}",
                    assistant_id="asst_a",
                    tools=TOOLS,
                    expires_after=(None, 60, 900)[pick % 3],
                    metadata={"k": "v"} if pick % 5 == 0 else None,
                )
                runs.append(created.id)
                continue
            # mostly the newest run, so that one run goes a long way
            rid = runs[-1] if pick % 3 else runs[pick % len(runs)]
            if op == "discard":
                engine.discard(rid)
                runs.remove(rid)
            else:
                calls[op](rid, pick)
        except (RunflowError, ValueError):
            pass  # a refused call journals nothing; the path goes on
    return runs


@DETERMINISTIC
@given(
    st.lists(st.tuples(st.sampled_from(WEIGHTED), st.integers(0, 1000)), min_size=30, max_size=80)
)
def test_history_is_what_the_engine_committed(ops: list[tuple[str, int]]) -> None:
    """Every entry of every run's history, and journal(), equal the changes handed in."""
    store = RecordingStore()
    ids = count()
    clock = FakeClock()
    engine = Engine(clock=clock, store=store, id_factory=lambda: f"run_{next(ids)}")  # type: ignore[arg-type]
    drive(engine, clock, ops)
    kept = {stored.record.id for stored in store.inner}
    want: dict[str, list[JournalEntry]] = {}
    for sequence in sorted(store.changes):
        change = store.changes[sequence]
        if change.run_id in kept:
            want.setdefault(change.run_id, []).append(expected(sequence, change))
    for rid in kept:
        history = store.inner.history(rid)
        assert history == want[rid]
        for got, entry in zip(history, want[rid], strict=True):
            assert list(got.changes) == list(entry.changes)  # the order, too
        live = store.inner.get(rid)
        assert live is not None
        assert history[-1].run == live.record
    journal = store.inner.journal(0, 1_000_000)
    assert journal == sorted((e for h in want.values() for e in h), key=lambda e: e.sequence)
    for after in range(0, len(store.changes) + 1, 5):
        assert store.inner.journal(after, 3) == [e for e in journal if e.sequence > after][:3]


def test_shapes_are_shared_between_runs() -> None:
    """Runs taking the same path journal their entries with the same shape objects."""
    store = MemoryStore()
    engine = Engine(clock=FakeClock(), store=store)
    for thread in ("thread_a", "thread_b"):
        rid = engine.create(thread_id=thread, assistant_id="asst_a", tools=TOOLS).id
        engine.start(rid)
        engine.require_action(rid, CALLS)
        engine.submit_tool_outputs(rid, OUTPUTS)
        engine.start(rid)
        engine.complete(rid)
    first, second = (store._journals[s.record.id] for s in store)
    assert len(first) == len(second)
    shapes = [i for i, slot in enumerate(first) if type(slot) is tuple and slot is second[i]]
    assert len(shapes) == 6  # one shared shape per entry
    assert all(s.record.status is RunStatus.COMPLETED for s in store)
