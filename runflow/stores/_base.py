"""The store protocol and the stored form of a run."""

from __future__ import annotations

import typing
from collections.abc import Iterator

import attrs

from runflow._model import RunObject, Usage

__all__ = ["Store", "StoredRun"]


@typing.final
@attrs.frozen
class StoredRun:
    """
    A run as a store keeps it: the record plus what the wire does not show.

    Attributes:
        record: The run as the wire shows it.
        version: Bumped by every change; a store replaces a run only if the version
            it holds is the one the change started from (compare-and-set).
        accrued: Usage accumulated while the run is active (the wire's ``usage``
            stays null until the run ends).
        observed: The run belongs to a remote server and is tracked from its
            snapshots; the local expiry rule leaves it alone.

    .. versionadded:: 0.1.0
    """

    record: RunObject
    version: int = 1
    accrued: Usage | None = None
    observed: bool = False


class Store(typing.Protocol):
    """
    What the engine needs from a store. Every method is atomic on its own.

    .. versionadded:: 0.1.0
    """

    def get(self, run_id: str) -> StoredRun | None:
        """The stored run, or None."""
        ...

    def add(self, run: StoredRun) -> None:
        """Store a new run. Raises :class:`ValueError` if the id is taken."""
        ...

    def swap(self, old: StoredRun, new: StoredRun) -> bool:
        """Replace ``old`` by ``new`` if the stored version is still ``old.version``."""
        ...

    def due(self, now: int) -> list[str]:
        """Ids of local active runs whose ``expires_at`` is at or before ``now``."""
        ...

    def discard(self, run_id: str) -> None:
        """Forget a run (no error if unknown)."""
        ...

    def __iter__(self) -> Iterator[StoredRun]:
        """Every stored run, oldest first."""
        ...

    def __len__(self) -> int:
        """How many runs are stored."""
        ...
