"""The in-memory store."""

from __future__ import annotations

import heapq
import threading
import typing
from collections.abc import Iterator

from runflow._model import ACTIVE_STATUSES
from runflow.stores._base import StoredRun

__all__ = ["MemoryStore"]

#: Stale deadline entries tolerated before the heap is rebuilt from the live runs.
_COMPACT_AFTER = 1024


@typing.final
class MemoryStore:
    """
    Runs in a dict of this process, with a deadline heap so that :meth:`due` costs
    only the runs that are due.

    Safe for threads: reads and writes of one key are atomic in CPython, and the
    heap has its own small lock.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_deadlines", "_heap_lock", "_runs", "_stale")

    def __init__(self) -> None:
        self._runs: dict[str, StoredRun] = {}
        self._deadlines: list[tuple[int, str]] = []
        self._heap_lock = threading.Lock()
        self._stale = 0

    def get(self, run_id: str) -> StoredRun | None:
        """The stored run, or None."""
        return self._runs.get(run_id)

    def add(self, run: StoredRun) -> None:
        """Store a new run. Raises :class:`ValueError` if the id is taken."""
        rid = run.record.id
        if self._runs.setdefault(rid, run) is not run:
            msg = f"a run with id {rid!r} is already stored"
            raise ValueError(msg)
        self._track(run)

    def swap(self, old: StoredRun, new: StoredRun) -> bool:
        """Replace ``old`` by ``new`` if the stored version is still ``old.version``."""
        rid = old.record.id
        current = self._runs.get(rid)
        if current is None or current.version != old.version:
            return False
        self._runs[rid] = new
        if new.record.expires_at != old.record.expires_at:
            if old.record.expires_at is not None:
                self._forget_deadline()
            self._track(new)
        return True

    def _forget_deadline(self) -> None:
        """Count a heap entry that no longer matters; compact once most are stale."""
        self._stale += 1
        if self._stale > _COMPACT_AFTER and self._stale * 2 > len(self._deadlines):
            with self._heap_lock:
                self._deadlines = [
                    (r.record.expires_at, r.record.id)
                    for r in self._runs.values()
                    if r.record.expires_at is not None
                    and not r.observed
                    and r.record.status in ACTIVE_STATUSES
                ]
                heapq.heapify(self._deadlines)
                self._stale = 0

    def _track(self, run: StoredRun) -> None:
        record = run.record
        if record.expires_at is not None and not run.observed:
            with self._heap_lock:
                heapq.heappush(self._deadlines, (record.expires_at, record.id))

    def due(self, now: int) -> list[str]:
        """Ids of local active runs whose ``expires_at`` is at or before ``now``."""
        out: list[str] = []
        with self._heap_lock:
            heap = self._deadlines
            while heap and heap[0][0] <= now:
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

    def discard(self, run_id: str) -> None:
        """Forget a run (its heap entry is dropped lazily)."""
        run = self._runs.pop(run_id, None)
        if run is not None and run.record.expires_at is not None:
            self._forget_deadline()

    def __iter__(self) -> Iterator[StoredRun]:
        """Every stored run, oldest first."""
        return iter(list(self._runs.values()))

    def __len__(self) -> int:
        """How many runs are stored."""
        return len(self._runs)

    def __repr__(self) -> str:
        return f"<MemoryStore runs={len(self._runs)}>"
