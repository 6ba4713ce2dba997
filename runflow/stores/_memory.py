"""The in-memory store."""

from __future__ import annotations

import heapq
import operator
import threading
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from runflow._convert import unstructure
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
# run's first record; then for each entry: sequence, at, worker, its shape, and the
# values of the fields the change set, in order. The shape holds the rest, which the
# entries of every run share: the trigger, the statuses before and after, and the
# names of the fields the change set (see _shape). Journaling an entry is one lookup
# of its shape and two list extends; it takes 4 + n slots.
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
_NO_CHANGES: Mapping[str, Any] = {}


def _first(head: Any, live: RunObject) -> RunObject:
    """The first record of a run, from its journal head and a record of it."""
    if type(head) is not int:
        return typing.cast("RunObject", head)
    return evolve_run(live, {**_FRESH, "status": _QUEUED, "expires_at": head})


# What a local run's change of status does to the indexes: _MOVES[was][status], a
# set of these flags (0 when the status stays). ``was`` is None for a new run.
_LEAVE_QUEUED = 1
_LEAVE_CANCELLING = 2
_HOLD = 4  # it became active (again): it takes its thread (or ThreadBusyError)
_ENTER_QUEUED = 8
_ENTER_CANCELLING = 16
_RELEASE = 32  # it ended: its thread is free


def _moves(was: RunStatus | None, status: RunStatus) -> int:
    if was is status:
        return 0
    move = 0
    if was is _QUEUED:
        move |= _LEAVE_QUEUED
    elif was is _CANCELLING:
        move |= _LEAVE_CANCELLING
    elif _ACTIVE[status] and (was is None or not _ACTIVE[was]):
        move |= _HOLD
    if status is _QUEUED:
        move |= _ENTER_QUEUED
    elif status is _CANCELLING:
        move |= _ENTER_CANCELLING
    elif not _ACTIVE[status]:
        move |= _RELEASE
    return move


_MOVES: dict[RunStatus | None, dict[RunStatus, int]] = {
    was: {status: _moves(was, status) for status in RunStatus} for was in (None, *RunStatus)
}


# An entry's shape, a tuple of:
#   0 derivable: every field the change sets is one a derived journal head knows
#   1 action: where a ``required_action`` set on entering ``requires_action`` sits,
#     as a negative index from the entry's end, else 0
#   2 count: how many values the entry keeps: one per field the change set, but
#     ``status`` (the entry's to_status says it)
#   3 the field of the one value kept, when count is 1; 4 an itemgetter of the
#     fields kept, when count is 2 or more
#   5 names: every field the change set, in order; 6 the fields kept, in order
#   7 trigger, 8 from_status (None for a first entry), 9 to_status: as the change
#     has them; 10 and 11: their wire values
# Shapes are interned by (trigger, from_status, to_status, names), shared by every
# run and every store; _FAST holds the first one of each (trigger, from_status,
# to_status), found with three dict lookups and confirmed by its names.
_Shape = tuple[
    bool,
    int,
    int,
    str | None,
    Callable[[Any], tuple[Any, ...]] | None,
    tuple[str, ...],
    tuple[str, ...],
    str,
    RunStatus | None,
    RunStatus,
    str | None,
    str,
]
_SHAPES: dict[tuple[Any, ...], _Shape] = {}
_FAST: dict[str, dict[RunStatus | None, dict[RunStatus, _Shape]]] = {}
#: Distinct shapes interned; past this (snapshots setting ever new sets of fields) a
#: shape is built per entry instead. The lifecycle's own changes have a few dozen.
_SHAPES_MAX = 4096


def _shape(
    trigger: str, before: RunStatus | None, after: RunStatus, names: tuple[str, ...]
) -> _Shape:
    """The shape of a change's entry; interned while there is room."""
    key = (trigger, before, after, names)
    shape = _SHAPES.get(key)
    if shape is not None:
        return shape
    kept = tuple(name for name in names if name != "status")
    action = 0
    if after is _REQUIRES_ACTION and "required_action" in kept:
        action = kept.index("required_action") - len(kept)
    shape = (
        _DERIVABLE.issuperset(names),
        action,
        len(kept),
        kept[0] if len(kept) == 1 else None,
        operator.itemgetter(*kept) if len(kept) > 1 else None,
        names,
        kept,
        trigger,
        before,
        after,
        None if before is None else before._value_,
        after._value_,
    )
    if len(_SHAPES) < _SHAPES_MAX:
        _SHAPES[key] = shape
        _FAST.setdefault(trigger, {}).setdefault(before, {}).setdefault(after, shape)
    return shape


def _compact_action(journal: _Journal, index: int) -> None:
    """Keep the usual ``required_action`` at ``journal[index]`` as its tool calls."""
    action = journal[index]
    if type(action) is RequiredAction:
        kind: Any = action.type  # checked: the journal rebuilds exactly this shape
        outputs: Any = action.submit_tool_outputs
        if (
            kind == "submit_tool_outputs"
            and type(outputs) is SubmitToolOutputs
            and type(outputs.tool_calls) is tuple
        ):
            journal[index] = outputs.tool_calls


def _journal(  # noqa: PLR0917 - the hot path: positional arguments bind faster
    journal: _Journal,
    sequence: int,
    at: int,
    trigger: str,
    before: RunStatus | None,
    after: RunStatus,
    worker: str | None,
    changes: Mapping[str, Any],
    old: StoredRun | None,
) -> None:
    """
    Append a change, given as its fields, to a run's journal (lock held); ``old``:
    the run before it (None for a new run).
    """
    names = tuple(changes)
    try:
        shape = _FAST[trigger][before][after]
    except KeyError:
        shape = _shape(trigger, before, after, names)
    else:
        if shape[5] != names:
            shape = _shape(trigger, before, after, names)
    # the usually false test first: most changes set only fields a head derives
    if not shape[0] and old is not None and type(journal[0]) is int:
        journal[0] = _first(journal[0], old[0])  # the head can no longer be derived
    field = shape[3]
    if field is not None:  # the usual entry: one value kept
        journal += (sequence, at, worker, shape, changes[field])
    else:
        journal += (sequence, at, worker, shape)
        if shape[2]:
            journal += shape[4](changes)  # type: ignore[misc]
    if shape[1]:
        _compact_action(journal, shape[1])


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
        # get() is the dict's own method: a read is one C call, no Python frame
        self.get = self._runs.get  # type: ignore[method-assign,assignment]
        self._threads: dict[str, str] = {}
        self._queued: dict[str, None] = {}
        self._leased: dict[str, None] = {}
        self._cancelling: dict[str, None] = {}
        self._journals: dict[str, _Journal] = {}
        self._order: list[str | None] = []
        self._keep_journal = journal
        self._deadlines: list[tuple[int, str]] = []
        self._stale = 0
        #: (since, created_at, id) of runs as they entered ``queued``: the claim order
        self._queue: list[tuple[int, int, str]] = []
        self._queue_stale = 0
        # reentrant: claim() commits each run it takes under its own hold
        self._lock = threading.RLock()

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
        # The hot path: StoredRun fields by index, the record's fields read off its
        # dict (one attribute lookup for all), the lock taken by hand.
        record = run[0]
        fields = record.__dict__
        rid = fields["id"]
        lock = self._lock
        lock.acquire()
        try:
            runs = self._runs
            if rid in runs:
                msg = f"a run with id {rid!r} is already stored"
                raise ValueError(msg)
            local = not run[3]
            status = fields["status"]
            expires = fields["expires_at"]
            if local:
                move = _MOVES[None][status]
                if move:
                    self._move(rid, move, run)  # may raise ThreadBusyError, before any change
                runs[rid] = run
                if run[6] is not None:
                    self._leased[rid] = None
                if expires is not None:
                    heapq.heappush(self._deadlines, (expires, rid))
            else:
                runs[rid] = run
            order = self._order
            order.append(rid)
            sequence = len(order)
            if self._keep_journal:
                # the head: the first record, or its expires_at when that derives it
                head: Any = record
                if (
                    local
                    and status is _QUEUED
                    and type(expires) is int
                    and _fresh_values(fields) == _NONES
                ):
                    head = expires
                _, at, trigger, was, now, worker, changes, _ = change
                journal = self._journals[rid] = [head]
                _journal(journal, sequence, at, trigger, was, now, worker, changes, None)
            return sequence
        finally:
            lock.release()

    def commit(  # noqa: C901, PLR0912 - the hot path
        self, old: StoredRun, new: StoredRun, change: Change | None
    ) -> int | None:
        """
        Replace ``old`` by ``new`` if its version still matches; journal ``change``.

        Keeps the indexes in step: the queue, cancelling, thread and lease indexes of
        a local run, then the deadline heap. Raises ThreadBusyError, before any
        change, if the run became active again while its thread has another active
        run. :meth:`claim` stores its runs through here too.
        """
        # The change says what changed, as the protocol has it (the transition from
        # ``old`` to ``new``): its run_id names the run, its statuses make the move,
        # its fields say whether expires_at moved. Without one (a bookkeeping write,
        # or a snapshot that changed no field) the status and the record's fields
        # stay. The hot path: the change unpacked once, StoredRun fields by index
        # (record 0, version 1, observed 3, since 4, lease_until 6), the lock taken
        # by hand (``with`` costs twice as much).
        if change is None:
            rid = old[0].__dict__["id"]
            move = 0
            changes: Mapping[str, Any] = _NO_CHANGES
        else:
            rid, at, trigger, before, after, worker, changes, _ = change
            move = _MOVES[before][after]
        lock = self._lock
        lock.acquire()
        try:
            runs = self._runs
            try:
                current = runs[rid]
            except KeyError:
                return None
            if current is not old and current[1] != old[1]:
                return None
            if not new[3]:  # local
                if move:
                    self._move(rid, move, new)  # may raise ThreadBusyError, before any change
                if new[6] is not None:
                    self._leased[rid] = None
                elif old[6] is not None:
                    self._leased.pop(rid, None)
            runs[rid] = new
            if "expires_at" in changes:  # the old deadline's entry goes stale; a new one is pushed
                expires = changes["expires_at"]
                was = old[0].__dict__["expires_at"]
                if expires != was:
                    if was is not None:
                        self._forget_deadline()
                    if expires is not None and not new[3]:
                        heapq.heappush(self._deadlines, (expires, rid))
            if change is None:
                return 0
            order = self._order
            order.append(rid)
            sequence = len(order)
            if self._keep_journal:
                _journal(
                    self._journals[rid], sequence, at, trigger, before, after, worker, changes, old
                )
            return sequence
        finally:
            lock.release()

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
            runs = self._runs
            steps = [(runs[rid], *step(runs[rid])) for rid in self._oldest_queued(limit)]
            # then each stored as commit stores it: it takes the lock again (a
            # reentrant one), and under this hold its compare-and-set always wins
            out: list[tuple[StoredRun, int]] = []
            for old, new, change in steps:
                sequence = self.commit(old, new, change)
                out.append((new, typing.cast("int", sequence)))
        return out

    def _move(self, rid: str, move: int, new: StoredRun) -> None:
        """
        The queue, cancelling and thread indexes of a local run that changed status
        (lock held): ``move`` is its entry of _MOVES. Raises ThreadBusyError, before
        any change, if the run became active and its thread has another active run.
        """
        record = new.record
        if move & _HOLD:  # first: ThreadBusyError leaves every index as it was
            holder = self._threads.setdefault(record.thread_id, rid)
            if holder != rid:
                raise ThreadBusyError(record.thread_id, holder)
        if move & _LEAVE_QUEUED:
            if self._queued.pop(rid, 0) is None:
                self._forget_queued()
        elif move & _LEAVE_CANCELLING:
            self._cancelling.pop(rid, None)
        if move & _ENTER_QUEUED:
            self._queued[rid] = None
            heapq.heappush(self._queue, (new.since, record.created_at, rid))
        elif move & _ENTER_CANCELLING:
            self._cancelling[rid] = None
        elif move & _RELEASE:
            threads = self._threads
            if threads.get(record.thread_id) == rid:
                del threads[record.thread_id]

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
                    i += 4 + journal[i + 3][2]
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
            sequence, at, worker, shape = flat[i : i + 4]
            count, kept, trigger, before, after = shape[2], shape[6], shape[7], shape[10], shape[11]
            i += 4
            changes = dict(zip(kept, flat[i : i + count], strict=True))
            i += count
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
