"""The store protocol, the stored form of a run, and the journal."""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import attrs

from runflow._events import RunEvent
from runflow._model import RunObject, RunStatus, Usage

__all__ = [
    "ACTIVE_VALUES",
    "SCHEMA_VERSION",
    "AsyncStore",
    "Change",
    "ClaimStep",
    "JournalEntry",
    "Store",
    "StoredRun",
]

#: The version of the SQL schema this runflow writes (table ``runflow_schema``).
SCHEMA_VERSION = 1

#: The wire values of the active statuses, for SQL conditions.
ACTIVE_VALUES: tuple[str, ...] = ("queued", "in_progress", "requires_action", "cancelling")


class StoredRun(NamedTuple):
    """
    A run as a store keeps it: the record plus what the wire does not show.

    An immutable named tuple rather than an attrs class: the engine builds one per
    transition, and a tuple is built about four times faster. Its fields:

    - ``record``: the run as the wire shows it.
    - ``version``: bumped by every change; a store replaces a run only if the version
      it holds is the one the change started from (compare-and-set).
    - ``accrued``: usage accumulated while the run is active (the wire's ``usage``
      stays null until the run ends).
    - ``observed``: the run belongs to a remote server and is tracked from its
      snapshots; the local expiry rule, sweeps, claims and the thread lock leave it
      alone.
    - ``since``: when the run entered its current status (Unix seconds): the queue
      order of claims and the grace of a stuck ``cancelling`` run.
    - ``worker``: the worker holding the run's lease while it is ``in_progress``.
    - ``lease_until``: when that lease lapses unless renewed by a heartbeat.

    .. versionadded:: 0.1.0
    """

    record: RunObject
    version: int = 1
    accrued: Usage | None = None
    observed: bool = False
    since: int = 0
    worker: str | None = None
    lease_until: int | None = None


class Change(NamedTuple):
    """
    One transition as the engine hands it to a store, to journal with the write.

    ``changes`` holds the record fields the transition set (record values, not wire
    values), among them every field whose value differs between the two records; a
    store that serialises converts them with ``RunObject``'s converter.
    ``from_status`` and ``to_status`` are the statuses of the ``old`` and ``new`` runs
    of the commit the change comes with (a store may keep its indexes by them).
    """

    run_id: str
    at: int
    trigger: str
    from_status: RunStatus | None
    to_status: RunStatus
    worker: str | None
    changes: Mapping[str, Any]
    run: RunObject


@typing.final
@attrs.frozen(kw_only=True)
class JournalEntry:
    """
    One transition of one run, as the journal keeps it.

    Attributes:
        sequence: Store-wide, strictly increasing; assigned when the change commits.
        run_id: The run.
        at: When (the engine's clock, Unix seconds).
        trigger: ``create``, a trigger of the lifecycle (``start``, ``cancel``…),
            ``observe`` for a snapshot, or ``claim``.
        from_status: The status before (None for ``create`` and a first snapshot).
        to_status: The status after.
        worker: The worker that made the change, if one said so.
        changes: The fields the transition set, as wire values.
        run: The run after the change.

    .. versionadded:: 0.1.0
    """

    sequence: int
    run_id: str
    at: int
    trigger: str
    from_status: RunStatus | None
    to_status: RunStatus
    worker: str | None
    changes: Mapping[str, Any]
    run: RunObject

    @property
    def events(self) -> tuple[RunEvent, ...]:
        """
        The stream events of this entry.

        A run's first entry gives ``thread.run.created`` (when it starts ``queued``)
        and the event of its status; every other entry that changed the status gives
        the event of its new status. An entry that kept the status (``modify``, an
        observed snapshot that changed other fields) gives none, as none was sent
        when it was made. Event sequences are ``2 * sequence - 1`` for ``created``
        and ``2 * sequence`` otherwise, so they increase strictly across the journal.
        """
        if self.from_status is self.to_status:
            return ()
        status = f"thread.run.{self.to_status.value}"
        if self.from_status is None and self.to_status is RunStatus.QUEUED:
            return (
                RunEvent(event="thread.run.created", data=self.run, sequence=2 * self.sequence - 1),
                RunEvent(event=status, data=self.run, sequence=2 * self.sequence),
            )
        return (RunEvent(event=status, data=self.run, sequence=2 * self.sequence),)


#: Called by :meth:`Store.claim` with each locked candidate; returns the claimed run
#: and the change to journal.
ClaimStep = Callable[[StoredRun], tuple[StoredRun, Change]]


class Store(typing.Protocol):
    """
    What the engine needs from a store.

    Every method is atomic on its own. A write (:meth:`insert`, :meth:`commit`,
    :meth:`claim`) stores the run and appends its journal entry in one transaction:
    both happen or neither does.

    .. versionadded:: 0.1.0
    """

    def get(self, run_id: str) -> StoredRun | None:
        """The stored run, or None."""
        ...

    def insert(self, run: StoredRun, change: Change) -> int:
        """
        Store a new run and journal its first entry; return the entry's sequence.

        Raises:
            runflow.ThreadBusyError: ``run`` is local and active, and its thread
                already has a local active run.
            ValueError: the id is taken.
        """
        ...

    def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        """
        Replace ``old`` by ``new`` if the stored version is still ``old.version``,
        journaling ``change`` in the same transaction.

        Returns:
            The journal sequence of ``change`` (0 when ``change`` is None), or None
            when the compare-and-set lost: the run changed since ``old`` was read.
        """
        ...

    def claim(self, *, limit: int, now: int, step: ClaimStep) -> list[tuple[StoredRun, int]]:
        """
        Lock up to ``limit`` local ``queued`` runs, longest waiting first, skipping
        runs another claimer holds; store ``step(run)`` for each, with its journal
        entry; return the claimed runs and their sequences.
        """
        ...

    def due(self, now: int, limit: int) -> list[str]:
        """Ids of local active runs whose ``expires_at`` is at or before ``now``."""
        ...

    def lapsed(self, now: int, limit: int) -> list[str]:
        """Ids of local ``in_progress`` runs whose lease lapsed at or before ``now``."""
        ...

    def stuck(self, status: str, since: int, limit: int) -> list[str]:
        """Ids of local runs in ``status`` since ``since`` or earlier."""
        ...

    def history(self, run_id: str) -> list[JournalEntry]:
        """The journal of one run, oldest first."""
        ...

    def journal(self, after: int, limit: int) -> list[JournalEntry]:
        """Journal entries with a sequence above ``after``, in order."""
        ...

    def runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredRun]:
        """Stored runs by creation order, optionally filtered."""
        ...

    def discard(self, run_id: str) -> None:
        """Forget a run and its journal (no error if unknown)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class AsyncStore(typing.Protocol):
    """
    :class:`Store`, as coroutines, for :class:`runflow.AsyncEngine`.

    .. versionadded:: 0.1.0
    """

    async def get(self, run_id: str) -> StoredRun | None:
        """See :meth:`Store.get`."""
        ...

    async def insert(self, run: StoredRun, change: Change) -> int:
        """See :meth:`Store.insert`."""
        ...

    async def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        """See :meth:`Store.commit`."""
        ...

    async def claim(self, *, limit: int, now: int, step: ClaimStep) -> list[tuple[StoredRun, int]]:
        """See :meth:`Store.claim`."""
        ...

    async def due(self, now: int, limit: int) -> list[str]:
        """See :meth:`Store.due`."""
        ...

    async def lapsed(self, now: int, limit: int) -> list[str]:
        """See :meth:`Store.lapsed`."""
        ...

    async def stuck(self, status: str, since: int, limit: int) -> list[str]:
        """See :meth:`Store.stuck`."""
        ...

    async def history(self, run_id: str) -> list[JournalEntry]:
        """See :meth:`Store.history`."""
        ...

    async def journal(self, after: int, limit: int) -> list[JournalEntry]:
        """See :meth:`Store.journal`."""
        ...

    async def runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredRun]:
        """See :meth:`Store.runs`."""
        ...

    async def discard(self, run_id: str) -> None:
        """See :meth:`Store.discard`."""
        ...

    async def close(self) -> None:
        """See :meth:`Store.close`."""
        ...
