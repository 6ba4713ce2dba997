"""The in-memory store."""

from __future__ import annotations

import heapq
import operator
import threading
import typing
from collections.abc import Iterator
from typing import Any

from runflow._convert import unstructure
from runflow._machine import ASSISTANTS_RUN
from runflow._model import (
    ACTIVE_STATUSES,
    STATUS_BY_VALUE,
    RequiredAction,
    RunObject,
    RunStatus,
    SubmitToolOutputs,
    evolve_run,
)
from runflow.exceptions import ThreadBusyError
from runflow.stores._base import Change, ClaimStep, JournalEntry, StoredRun

__all__ = ["MemoryStore"]


# enum members as module constants: a class attribute lookup costs ~85 ns on 3.11
_CANCELLING = RunStatus.CANCELLING
_IN_PROGRESS = RunStatus.IN_PROGRESS
_QUEUED = RunStatus.QUEUED
_REQUIRES_ACTION = RunStatus.REQUIRES_ACTION

#: Stale deadline entries tolerated before the heap is rebuilt from the live runs.
_COMPACT_AFTER = 1024

# A run's journal is one flat list, so that journaling allocates no container per
# entry (each one would count towards, and slow, CPython's cyclic GC). Its head is the
# run's first record; then for each entry: sequence, at, trigger, worker, from, to
# (plain strings), the number n of fields the change set, n names and n values.
#
# The head of a run the engine created is not the record but its ``expires_at`` (an
# int): every other field of a fresh run is either one that no transition of the
# lifecycle touches (so it still reads as at creation on the live record) or null
# (_FRESH), so the first record is derived on demand from the live one. A change to any
# other field (``modify``'s metadata) stores the first record first. This keeps one
# whole record (a GC-tracked object and its dict) off every live run.
#
# A ``required_action`` value of the usual shape is journaled as its tool calls (a
# tuple), and rebuilt on reading: two fewer GC-tracked objects kept per run.
_Journal = list[Any]
#: Fields null on a fresh queued run, and reset to null to derive its first record.
_FRESH: dict[str, Any] = dict.fromkeys(
    (
        "started_at",
        "cancelled_at",
        "failed_at",
        "completed_at",
        "required_action",
        "last_error",
        "incomplete_details",
        "usage",
    )
)
_fresh_values = operator.itemgetter(*_FRESH)
_NONES = (None,) * len(_FRESH)
#: Fields whose first value a derived head knows: the fresh ones, status, expires_at.
_DERIVABLE: frozenset[str] = frozenset((*_FRESH, "status", "expires_at"))
_ACTIVE: dict[RunStatus, bool] = {s: s in ACTIVE_STATUSES for s in RunStatus}


#: Triggers whose changes are the machine's entry effects alone, all derivable fields:
#: journaling them never needs the derivability check.
_EFFECTS_ONLY: frozenset[str] = (
    frozenset(ASSISTANTS_RUN.triggers)
    if ASSISTANTS_RUN.effect_fields <= _DERIVABLE
    else frozenset()
)


def _head(run: StoredRun) -> Any:
    """The head of a new run's journal: its expires_at when derivable, else the record."""
    record = run.record
    fields = record.__dict__
    if (
        run.observed
        or record.status is not _QUEUED
        or type(record.expires_at) is not int
        or _fresh_values(fields) != _NONES
    ):
        return record
    return record.expires_at


def _first(head: Any, live: RunObject) -> RunObject:
    """The first record of a run, from its journal head and a record of it."""
    if type(head) is not int:
        return typing.cast("RunObject", head)
    return evolve_run(live, {**_FRESH, "status": _QUEUED, "expires_at": head})


@typing.final
class MemoryStore:
    """
    Runs in this process's memory: the default store, and the fastest.

    Keeps, besides the runs, a compact journal (each run's first record and the
    fields every later change set, replayed on demand), a deadline heap so that
    sweeps cost only the runs that are due, the queue of ``queued`` runs in the
    order they entered it (for claims), and each thread's active run (so that
    one thread has one active run, LIFECYCLE R1.3).

    Safe for threads: one small lock guards the writes. Different runs never wait
    on each other for long: a write holds it for a few dict operations.

    Args:
        journal: Keep the journal (``history()``, ``events(after=...)``). Without
            it a run costs about a third less memory; ``history()`` then returns
            only what the run's record shows.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, journal: bool = True) -> None:
        self._runs: dict[str, StoredRun] = {}
        self._threads: dict[str, str] = {}
        self._queued: dict[str, None] = {}
        self._leased: dict[str, None] = {}
        self._cancelling: dict[str, None] = {}
        #: status -> the index of the runs in it, for the statuses that have one
        self._listed: dict[RunStatus, dict[str, None] | None] = dict.fromkeys(RunStatus)
        self._listed[_QUEUED] = self._queued
        self._listed[_CANCELLING] = self._cancelling
        self._journals: dict[str, _Journal] = {}
        self._order: list[str | None] = []
        self._keep_journal = journal
        self._deadlines: list[tuple[int, str]] = []
        self._stale = 0
        #: (since, created_at, id) of runs as they entered ``queued``: the claim order
        self._queue: list[tuple[int, int, str]] = []
        self._queue_stale = 0
        self._lock = threading.Lock()

    # --- reads ------------------------------------------------------------------------

    def get(self, run_id: str) -> StoredRun | None:
        """The stored run, or None."""
        return self._runs.get(run_id)

    def __len__(self) -> int:
        """How many runs are stored."""
        return len(self._runs)

    def __iter__(self) -> Iterator[StoredRun]:
        """Every stored run, oldest first."""
        return iter(list(self._runs.values()))

    def __repr__(self) -> str:
        return f"<MemoryStore runs={len(self._runs)}>"

    def runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredRun]:
        """Stored runs by creation order, optionally filtered."""
        values = list(self._runs.values())
        if newest_first:
            values.reverse()
        out = [
            s
            for s in values
            if (thread_id is None or s.record.thread_id == thread_id)
            and (status is None or s.record.status == status)
        ]
        return out if limit is None else out[:limit]

    # --- writes -----------------------------------------------------------------------

    def insert(self, run: StoredRun, change: Change) -> int:
        """Store a new run and journal its first entry."""
        record = run.record
        rid = record.id
        with self._lock:
            if rid in self._runs:
                msg = f"a run with id {rid!r} is already stored"
                raise ValueError(msg)
            local = not run.observed
            if local and _ACTIVE[record.status]:
                holder = self._threads.get(record.thread_id)
                if holder is not None:
                    raise ThreadBusyError(record.thread_id, holder)
                self._threads[record.thread_id] = rid
            self._runs[rid] = run
            if local:
                self._index(rid, None, run, None)
            self._track(run)
            order = self._order
            order.append(rid)
            sequence = len(order)
            if self._keep_journal:
                journal = self._journals[rid] = [_head(run)]
                self._journal(journal, sequence, change, None)
            return sequence

    def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        """Replace ``old`` by ``new`` if its version still matches; journal ``change``."""
        before, after = old.record, new.record
        rid = before.id
        with self._lock:
            runs = self._runs
            current = runs.get(rid)
            if current is None or current.version != old.version:
                return None
            if not new.observed:
                was, status = before.status, after.status
                if was is not status and _ACTIVE[status] and not _ACTIVE[was]:
                    self._hold_thread(after, rid)
                self._index(rid, was, new, old.lease_until)
            runs[rid] = new
            if after.expires_at != before.expires_at:
                if before.expires_at is not None:
                    self._forget_deadline()
                self._track(new)
            if change is None:
                return 0
            order = self._order
            order.append(rid)
            sequence = len(order)
            if self._keep_journal:
                self._journal(self._journals[rid], sequence, change, before)
            return sequence

    def claim(
        self,
        *,
        limit: int,
        now: int,  # noqa: ARG002 - SQL stores use it; here the queue order is enough
        step: ClaimStep,
    ) -> list[tuple[StoredRun, int]]:
        """
        Take up to ``limit`` queued runs, longest waiting first (by when they
        entered ``queued``, then creation, then id), and store ``step(run)``.
        """
        with self._lock:
            # every step first: one that raises leaves the store as it was (atomic)
            steps = [
                (rid, self._runs[rid], *step(self._runs[rid])) for rid in self._oldest_queued(limit)
            ]
            out: list[tuple[StoredRun, int]] = []
            order = self._order
            for rid, old, new, change in steps:
                self._runs[rid] = new
                self._restatus(rid, old, new)
                order.append(rid)
                sequence = len(order)
                if self._keep_journal:
                    self._journal(self._journals[rid], sequence, change, old.record)
                out.append((new, sequence))
        return out

    def _restatus(self, rid: str, old: StoredRun, new: StoredRun) -> None:
        """Keep the indexes in step with a change (lock held)."""
        before, after = old.record, new.record
        if not new.observed:
            self._index(rid, before.status, new, old.lease_until)
        if after.expires_at != before.expires_at:
            if before.expires_at is not None:
                self._forget_deadline()
            self._track(new)

    def _hold_thread(self, record: RunObject, rid: str) -> None:
        """Make ``rid`` its thread's active run, unless another holds it (lock held)."""
        holder = self._threads.setdefault(record.thread_id, rid)
        if holder != rid:
            raise ThreadBusyError(record.thread_id, holder)

    def _index(
        self, rid: str, was: RunStatus | None, new: StoredRun, lease_was: int | None
    ) -> None:
        """The queue, lease, cancelling and thread indexes of a local run (lock held)."""
        record = new.record
        status = record.status
        if was is not status:
            if was is not None:
                gone = self._listed[was]
                if gone is not None and gone.pop(rid, 0) is None and was is _QUEUED:
                    self._forget_queued()
            into = self._listed[status]
            if into is not None:
                into[rid] = None
                if status is _QUEUED:
                    heapq.heappush(self._queue, (new.since, record.created_at, rid))
            elif not _ACTIVE[status] and self._threads.get(record.thread_id) == rid:
                del self._threads[record.thread_id]
        if new.lease_until is not None:
            self._leased[rid] = None
        elif lease_was is not None:
            self._leased.pop(rid, None)

    def _oldest_queued(self, limit: int) -> list[str]:
        """
        The ``limit`` runs longest in ``queued``: by when they entered it, then
        creation, then id, as the SQL stores order them (lock held). Reading does
        not consume: the entries taken go back on the heap, and go stale when their
        runs leave ``queued``.
        """
        heap, runs, queued = self._queue, self._runs, self._queued
        out: dict[str, None] = {}  # ordered, and a run taken twice is seen at once
        taken: list[tuple[int, int, str]] = []
        while heap and len(out) < limit:
            entry = heapq.heappop(heap)
            since, _, rid = entry
            if rid in queued and runs[rid].since == since and rid not in out:
                out[rid] = None
                taken.append(entry)
            elif self._queue_stale > 0:
                self._queue_stale -= 1  # a stale entry dropped on the way
        for entry in taken:
            heapq.heappush(heap, entry)
        return list(out)

    def _forget_queued(self) -> None:
        """
        Count a queue entry that no longer matters (its run left ``queued``); once
        most are stale, rebuild the heap from the queued runs alone.
        """
        self._queue_stale += 1
        if self._queue_stale > _COMPACT_AFTER and self._queue_stale * 2 > len(self._queue):
            runs = self._runs
            live = []
            for rid in self._queued:
                stored = runs[rid]
                live.append((stored.since, stored.record.created_at, rid))
            heapq.heapify(live)
            self._queue = live
            self._queue_stale = 0

    @staticmethod
    def _journal(journal: _Journal, sequence: int, change: Change, old: RunObject | None) -> None:
        """Append ``change`` to a run's journal (lock held); ``old``: the run before it."""
        _, at, trigger, before, after, worker, changes, _ = change
        if (
            old is not None
            and type(journal[0]) is int
            and trigger not in _EFFECTS_ONLY
            and not changes.keys() <= _DERIVABLE
        ):
            journal[0] = _first(journal[0], old)  # the head can no longer be derived
        journal += (
            sequence,
            at,
            trigger,
            worker,
            None if before is None else before._value_,
            after._value_,
            len(changes),
        )
        journal += changes
        if after is _REQUIRES_ACTION and type(action := changes.get("required_action")) is (
            RequiredAction
        ):
            at = len(journal)
            journal += changes.values()
            kind: Any = action.type  # checked: the journal rebuilds exactly this shape
            outputs: Any = action.submit_tool_outputs
            if (
                kind == "submit_tool_outputs"
                and type(outputs) is SubmitToolOutputs
                and type(outputs.tool_calls) is tuple
            ):
                journal[at + list(changes).index("required_action")] = outputs.tool_calls
        else:
            journal += changes.values()

    def _track(self, run: StoredRun) -> None:
        record = run.record
        if record.expires_at is not None and not run.observed:
            heapq.heappush(self._deadlines, (record.expires_at, record.id))

    def _forget_deadline(self) -> None:
        """
        Count a heap entry that no longer matters; once most are stale, rebuild the
        heap from its own live entries (cost: the heap, never every stored run).
        """
        self._stale += 1
        if self._stale > _COMPACT_AFTER and self._stale * 2 > len(self._deadlines):
            runs = self._runs
            live = []
            for deadline, rid in self._deadlines:
                run = runs.get(rid)
                if (
                    run is not None
                    and run.record.expires_at == deadline
                    and run.record.status in ACTIVE_STATUSES
                ):
                    live.append((deadline, rid))
            heapq.heapify(live)
            self._deadlines = live
            self._stale = 0

    def discard(self, run_id: str) -> None:
        """Forget a run and its journal (no error if unknown)."""
        with self._lock:
            run = self._runs.pop(run_id, None)
            if run is None:
                return
            if self._queued.pop(run_id, 0) is None:
                self._forget_queued()
            for index in (self._leased, self._cancelling):
                index.pop(run_id, None)
            if self._threads.get(run.record.thread_id) == run_id:
                del self._threads[run.record.thread_id]
            journal = self._journals.pop(run_id, None)
            if journal is not None:
                i = 1
                while i < len(journal):
                    self._order[journal[i] - 1] = None
                    i += 7 + 2 * journal[i + 6]
            if run.record.expires_at is not None:
                self._forget_deadline()

    def close(self) -> None:
        """Nothing to release."""

    # --- sweeps -------------------------------------------------------------------------

    def due(self, now: int, limit: int) -> list[str]:
        """
        Ids of local active runs whose ``expires_at`` is at or before ``now``.

        Reading does not consume: a run stays due until it changes (stale heap
        entries, of runs that ended or went, are dropped on the way).
        """
        out: list[tuple[int, str]] = []
        with self._lock:
            heap = self._deadlines
            while heap and heap[0][0] <= now and len(out) < limit:
                deadline, rid = heapq.heappop(heap)
                run = self._runs.get(rid)
                if (
                    run is not None
                    and not run.observed
                    and run.record.expires_at == deadline
                    and run.record.status in ACTIVE_STATUSES
                ):
                    out.append((deadline, rid))
            for entry in out:
                heapq.heappush(heap, entry)
        return [rid for _, rid in out]

    def lapsed(self, now: int, limit: int) -> list[str]:
        """Ids of local ``in_progress`` runs whose lease lapsed at or before ``now``."""
        with self._lock:
            runs = [self._runs[rid] for rid in self._leased]
        return [
            r.record.id
            for r in runs
            if r.lease_until is not None
            and r.lease_until <= now
            and r.record.status is _IN_PROGRESS
        ][:limit]

    def stuck(self, status: str, since: int, limit: int) -> list[str]:
        """Ids of local runs in ``status`` since ``since`` or earlier."""
        with self._lock:
            if status == _CANCELLING:
                runs = [self._runs[rid] for rid in self._cancelling]
            elif status == _QUEUED:
                runs = [self._runs[rid] for rid in self._queued]
            else:
                runs = list(self._runs.values())
        return [
            r.record.id
            for r in runs
            if r.record.status == status and r.since <= since and not r.observed
        ][:limit]

    # --- the journal ----------------------------------------------------------------------

    def history(self, run_id: str) -> list[JournalEntry]:
        """The journal of one run, oldest first."""
        with self._lock:
            journal = self._journals.get(run_id)
            stored = self._runs.get(run_id)
            if journal is None or stored is None:
                return []
            flat = list(journal)
        out: list[JournalEntry] = []
        run = _first(flat[0], stored.record)
        i = 1
        while i < len(flat):
            sequence, at, trigger, worker, before, after, count = flat[i : i + 7]
            i += 7
            changes = dict(zip(flat[i : i + count], flat[i + count : i + 2 * count], strict=True))
            i += 2 * count
            changes.pop("status", None)
            action = changes.get("required_action")
            if type(action) is tuple:
                changes["required_action"] = RequiredAction(
                    submit_tool_outputs=SubmitToolOutputs(tool_calls=action)
                )
            status = STATUS_BY_VALUE[after]
            if changes or status is not run.status:
                run = evolve_run(run, {**changes, "status": status})
            wire = {k: unstructure(v) for k, v in changes.items()}
            out.append(
                JournalEntry(
                    sequence=sequence,
                    run_id=run_id,
                    at=at,
                    trigger=trigger,
                    from_status=None if before is None else STATUS_BY_VALUE[before],
                    to_status=status,
                    worker=worker,
                    changes={"status": after, **wire} if before != after else wire,
                    run=run,
                )
            )
        return out

    def journal(self, after: int, limit: int) -> list[JournalEntry]:
        """Journal entries with a sequence above ``after``, in order."""
        out: list[JournalEntry] = []
        histories: dict[str, dict[int, JournalEntry]] = {}
        for index in range(max(after, 0), len(self._order)):
            rid = self._order[index]
            if rid is None:
                continue
            if rid not in histories:
                histories[rid] = {e.sequence: e for e in self.history(rid)}
            entry = histories[rid].get(index + 1)
            if entry is not None:
                out.append(entry)
                if len(out) >= limit:
                    break
        return out
