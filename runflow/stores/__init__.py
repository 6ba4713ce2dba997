"""
Where an engine keeps its runs.

:class:`Store` is the protocol; :class:`MemoryStore` keeps runs in this process.

.. versionadded:: 0.1.0
"""

from runflow.stores._base import AsyncStore, Change, ClaimStep, JournalEntry, Store, StoredRun
from runflow.stores._memory import MemoryStore

__all__ = ["AsyncStore", "Change", "ClaimStep", "JournalEntry", "MemoryStore", "Store", "StoredRun"]
