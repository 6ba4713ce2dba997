"""The in-memory store."""

from __future__ import annotations

import heapq
import threading
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from runflow._convert import unstructure
from runflow._model import ACTIVE_STATUSES, RunObject, RunStatus, evolve_run
from runflow.exceptions import ThreadBusyError
from runflow.stores._base import Change, ClaimStep, JournalEntry, StoredRun

__all__ = ["MemoryStore"]

#: Stale deadline entries tolerated before the heap is rebuilt from the live runs.
_COMPACT_AFTER = 1024

# One journal entry, compactly: (sequence, at, trigger, worker, from, to, changes).
_Entry = tuple[int, int, str, "str | None", "RunStatus | None", RunStatus, Mapping[str, Any]]


class _Journal:
    """One run's journal: its first record, then each entry's changes."""

    __slots__ = ("base", "entries")

    def __init__(self, base: RunObject) -> None:
        self.base = base
        self.entries: list[_Entry] = []


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
        self._journals: dict[str, _Journal] = {}
        self._order: list[str | None] = []
        self._keep_journal = journal
        self._deadlines: list[tuple[int, str]] = []
        self._stale = 0
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
            local_active = not run.observed and record.status in ACTIVE_STATUSES
            if local_active:
                holder = self._threads.get(record.thread_id)
                if holder is not None:
                    raise ThreadBusyError(record.thread_id, holder)
                self._threads[record.thread_id] = rid
            self._runs[rid] = run
            if not run.observed:
                self._index(rid, None, run)
            self._track(run)
            return self._append(rid, change, first=True)

    def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        """Replace ``old`` by ``new`` if its version still matches; journal ``change``."""
        rid = old.record.id
        with self._lock:
            current = self._runs.get(rid)
            if current is None or current.version != old.version:
                return None
            self._runs[rid] = new
            self._restatus(rid, old, new)
            return 0 if change is None else self._append(rid, change, first=False)

    def claim(
        self,
        *,
        limit: int,
        now: int,  # noqa: ARG002 - SQL stores use it; here the queue order is enough
        step: ClaimStep,
    ) -> list[tuple[StoredRun, int]]:
        """Take up to ``limit`` queued runs, longest waiting first, and store ``step(run)``."""
        out: list[tuple[StoredRun, int]] = []
        with self._lock:
            for rid in list(self._queued)[: max(limit, 0)]:
                old = self._runs[rid]
                new, change = step(old)
                self._runs[rid] = new
                self._restatus(rid, old, new)
                out.append((new, self._append(rid, change, first=False)))
        return out

    def _restatus(self, rid: str, old: StoredRun, new: StoredRun) -> None:
        """Keep the indexes in step with a change (lock held)."""
        before, after = old.record, new.record
        if not new.observed:
            self._index(rid, old, new)
        if after.expires_at != before.expires_at:
            if before.expires_at is not None:
                self._forget_deadline()
            self._track(new)

    def _index(self, rid: str, old: StoredRun | None, new: StoredRun) -> None:
        """The queue, lease, cancelling and thread indexes of a local run (lock held)."""
        status = new.record.status
        if old is None or old.record.status is not status:
            for index, member in (
                (self._queued, RunStatus.QUEUED),
                (self._cancelling, RunStatus.CANCELLING),
            ):
                if status is member:
                    index[rid] = None
                else:
                    index.pop(rid, None)
            thread = new.record.thread_id
            if status not in ACTIVE_STATUSES and self._threads.get(thread) == rid:
                del self._threads[thread]
        if new.lease_until is not None:
            self._leased[rid] = None
        elif old is not None and old.lease_until is not None:
            self._leased.pop(rid, None)

    def _append(self, rid: str, change: Change, *, first: bool) -> int:
        """Journal ``change`` (lock held); return its sequence."""
        self._order.append(rid)
        sequence = len(self._order)
        if not self._keep_journal:
            return sequence
        journal = self._journals.get(rid)
        if journal is None:
            journal = self._journals[rid] = _Journal(change.run)
        entry: _Entry = (
            sequence,
            change.at,
            change.trigger,
            change.worker,
            change.from_status,
            change.to_status,
            {} if first else change.changes,
        )
        journal.entries.append(entry)
        return sequence

    def _track(self, run: StoredRun) -> None:
        record = run.record
        if record.expires_at is not None and not run.observed:
            heapq.heappush(self._deadlines, (record.expires_at, record.id))

    def _forget_deadline(self) -> None:
        """Count a heap entry that no longer matters; compact once most are stale."""
        self._stale += 1
        if self._stale > _COMPACT_AFTER and self._stale * 2 > len(self._deadlines):
            self._deadlines = [
                (r.record.expires_at, r.record.id)
                for r in self._runs.values()
                if r.record.expires_at is not None
                and not r.observed
                and r.record.status in ACTIVE_STATUSES
            ]
            heapq.heapify(self._deadlines)
            self._stale = 0

    def discard(self, run_id: str) -> None:
        """Forget a run and its journal (no error if unknown)."""
        with self._lock:
            run = self._runs.pop(run_id, None)
            if run is None:
                return
            for index in (self._queued, self._leased, self._cancelling):
                index.pop(run_id, None)
            if self._threads.get(run.record.thread_id) == run_id:
                del self._threads[run.record.thread_id]
            journal = self._journals.pop(run_id, None)
            if journal is not None:
                for entry in journal.entries:
                    self._order[entry[0] - 1] = None
            if run.record.expires_at is not None:
                self._forget_deadline()

    def close(self) -> None:
        """Nothing to release."""

    # --- sweeps -------------------------------------------------------------------------

    def due(self, now: int, limit: int) -> list[str]:
        """Ids of local active runs whose ``expires_at`` is at or before ``now``."""
        out: list[str] = []
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
                    out.append(rid)
        return out

    def lapsed(self, now: int, limit: int) -> list[str]:
        """Ids of local ``in_progress`` runs whose lease lapsed at or before ``now``."""
        with self._lock:
            runs = [self._runs[rid] for rid in self._leased]
        return [
            r.record.id
            for r in runs
            if r.lease_until is not None
            and r.lease_until <= now
            and r.record.status is RunStatus.IN_PROGRESS
        ][:limit]

    def stuck(self, status: str, since: int, limit: int) -> list[str]:
        """Ids of local runs in ``status`` since ``since`` or earlier."""
        with self._lock:
            if status == RunStatus.CANCELLING:
                runs = [self._runs[rid] for rid in self._cancelling]
            elif status == RunStatus.QUEUED:
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
        journal = self._journals.get(run_id)
        if journal is None:
            return []
        out: list[JournalEntry] = []
        run = journal.base
        for sequence, at, trigger, worker, before, after, changes in list(journal.entries):
            if changes:
                run = evolve_run(run, changes)
            out.append(
                JournalEntry(
                    sequence=sequence,
                    run_id=run_id,
                    at=at,
                    trigger=trigger,
                    from_status=before,
                    to_status=after,
                    worker=worker,
                    changes={k: unstructure(v) for k, v in changes.items()},
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
