"""
Where an engine keeps its runs.

:class:`Store` is the protocol. :class:`MemoryStore` keeps runs in this process;
:class:`SQLiteStore` in one file, durable and shared by the processes of one machine;
:class:`runflow.stores.postgres.PostgresStore` (extra ``postgres``, imported by name) in
PostgreSQL, for many workers. :func:`open_store` opens any of them from a URL.

.. versionadded:: 0.1.0
"""

from runflow.stores._base import AsyncStore, Change, ClaimStep, JournalEntry, Store, StoredRun
from runflow.stores._memory import MemoryStore
from runflow.stores._sqlite import SQLiteStore
from runflow.stores._url import open_store

__all__ = [
    "AsyncStore",
    "Change",
    "ClaimStep",
    "JournalEntry",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoredRun",
    "open_store",
]
