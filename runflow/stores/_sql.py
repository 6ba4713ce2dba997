"""
What the SQL stores share: the schema of each dialect, the mapping between rows and
:class:`StoredRun` / :class:`JournalEntry`, and the schema version check.

Tables (every name starts with ``runflow_``)::

    runflow_schema   version, runflow            one row: which schema, written by whom
    runflow_runs     one row per run             the record as JSON plus what queries need
    runflow_journal  one row per transition      sequence (store-wide, increasing), the
                                                 changed fields and the run after it

A run's ``position`` is the sequence of its first journal entry: creation order.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from runflow._convert import unstructure
from runflow._machine import ASSISTANTS_RUN
from runflow._model import STATUS_BY_VALUE, RunObject, Usage
from runflow.exceptions import StoreError
from runflow.stores._base import ACTIVE_VALUES, SCHEMA_VERSION, Change, JournalEntry, StoredRun

__all__ = [
    "JOURNAL_COLUMNS",
    "RUN_COLUMNS",
    "Tables",
    "check_version",
    "dumps",
    "entry_from_row",
    "journal_params",
    "postgres_ddl",
    "run_params",
    "runflow_version",
    "sqlite_ddl",
    "stored_from_row",
]

#: The columns a :class:`StoredRun` is read from, in the order of :func:`stored_from_row`
#: (PostgreSQL reads ``record::text``, so that a cached record skips decoding).
RUN_COLUMNS: Final = (
    "id, version, observed, since, worker, lease_until, "
    "accrued_prompt, accrued_completion, accrued_total, record"
)
#: Active statuses, local runs, with a deadline: :meth:`Store.due`'s condition.
DUE_SQL: Final = "expires_at <= {p} AND expires_at IS NOT NULL AND {local} AND " + (
    "status IN (" + ", ".join(f"'{v}'" for v in ACTIVE_VALUES) + ")"
)
#: The columns a :class:`JournalEntry` is read from, in the order of :func:`entry_from_row`.
JOURNAL_COLUMNS: Final = (
    "sequence, run_id, at, trigger, from_status, to_status, worker, changes, run"
)

#: ``status IN (...)`` over the active statuses, as literals: partial indexes match it.
ACTIVE_SQL: Final = "status IN (" + ", ".join(f"'{v}'" for v in ACTIVE_VALUES) + ")"

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_decode = json.JSONDecoder().decode


def dumps(value: object) -> str:
    """Compact JSON text."""
    return _encode(value)


def runflow_version() -> str:
    """The installed runflow's version (what a database records as its writer)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("runflow-engine")
    except PackageNotFoundError:  # pragma: no cover - only in an uninstalled checkout
        return "0.0.0"


class Tables:
    """The qualified table names of one store (a PostgreSQL schema, or none)."""

    __slots__ = ("journal", "listeners", "prefix", "runs", "schema")

    def __init__(self, schema: str | None = None) -> None:
        self.prefix = "" if schema is None else quote_ident(schema) + "."
        self.schema = f"{self.prefix}runflow_schema"
        self.runs = f"{self.prefix}runflow_runs"
        self.journal = f"{self.prefix}runflow_journal"
        self.listeners = f"{self.prefix}runflow_listeners"


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (``"my schema"``)."""
    if not name or "\x00" in name:
        msg = f"not a valid SQL identifier: {name!r}"
        raise StoreError(msg)
    return '"' + name.replace('"', '""') + '"'


# --- schema --------------------------------------------------------------------------------


def _indexes(t: Tables, *, local: str) -> list[str]:
    """The indexes of both dialects; ``local`` is the dialect's "not observed" test."""
    return [
        # One local active run per thread (LIFECYCLE R1.3), across every process.
        (
            f"CREATE UNIQUE INDEX IF NOT EXISTS runflow_runs_thread_active ON {t.runs} "
            f"(thread_id) WHERE {ACTIVE_SQL} AND {local}"
        ),
        # The claim queue: longest waiting first.
        (
            f"CREATE INDEX IF NOT EXISTS runflow_runs_queue ON {t.runs} (since, created_at, id) "
            f"WHERE status = 'queued' AND {local}"
        ),
        # Sweeps: overdue runs (expires_at is null once a run ends, so the entry of a
        # run stays put while it moves between active statuses), lapsed leases, and
        # runs stuck cancelling.
        (
            f"CREATE INDEX IF NOT EXISTS runflow_runs_due ON {t.runs} (expires_at) "
            f"WHERE expires_at IS NOT NULL AND {local}"
        ),
        (
            f"CREATE INDEX IF NOT EXISTS runflow_runs_lease ON {t.runs} (lease_until) "
            f"WHERE status = 'in_progress' AND {local}"
        ),
        (
            f"CREATE INDEX IF NOT EXISTS runflow_runs_cancelling ON {t.runs} (since) "
            f"WHERE status = 'cancelling' AND {local}"
        ),
        # Listings in creation order, per thread or all.
        f"CREATE INDEX IF NOT EXISTS runflow_runs_thread ON {t.runs} (thread_id, position)",
        f"CREATE UNIQUE INDEX IF NOT EXISTS runflow_runs_position ON {t.runs} (position)",
        f"CREATE INDEX IF NOT EXISTS runflow_journal_run ON {t.journal} (run_id, sequence)",
    ]


#: SQLite's run columns whose indexes a transition may touch (see :func:`sqlite_ddl`),
#: in the order of the bits of :func:`runflow.stores._sqlite`'s update statements.
SQLITE_INDEXED: Final = ("status", "since", "expires_at", "lease_until", "observed", "active")


def sqlite_ddl(t: Tables) -> list[str]:
    """
    The statements that create the SQLite schema (idempotent).

    Every commit at ``synchronous=FULL`` writes each b-tree page it dirtied to the
    WAL and syncs it, so the schema keeps the pages a transition dirties few:

    - ``position`` (the sequence of the run's first journal entry) is the rowid of
      ``runflow_runs``: new runs append, and no separate position index.
    - ``active`` (1 while the run is local and active, else 0, kept true by a CHECK)
      is the only column of the thread lock's WHERE: the lock's index entry is
      written when a run starts or stops being active, not on every status change.
    - The journal has no per-run index: each entry links the run's previous one
      (``prev``) and the run row names its last (``last_sequence``), so a history is
      a walk down that chain. Sequences are ``max(sequence) + 1`` (no AUTOINCREMENT,
      whose ``sqlite_sequence`` row is another page per commit); a discard first
      raises ``runflow_schema.sequence_floor`` to the highest sequence, and the next
      sequence is above it too, so sequences never repeat or go back.
    """
    local = "observed = 0"
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {t.schema} (version INTEGER NOT NULL, "
            "runflow TEXT NOT NULL, sequence_floor INTEGER NOT NULL DEFAULT 0)"
        ),
        f"""CREATE TABLE IF NOT EXISTS {t.runs} (
            position INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            assistant_id TEXT NOT NULL,
            status TEXT NOT NULL,
            observed INTEGER NOT NULL,
            active INTEGER NOT NULL,
            version INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            since INTEGER NOT NULL,
            expires_at INTEGER,
            worker TEXT,
            lease_until INTEGER,
            accrued_prompt INTEGER,
            accrued_completion INTEGER,
            accrued_total INTEGER,
            last_sequence INTEGER NOT NULL,
            record TEXT NOT NULL,
            CHECK (active = ({ACTIVE_SQL} AND {local}))
        )""",
        f"""CREATE TABLE IF NOT EXISTS {t.journal} (
            sequence INTEGER PRIMARY KEY,
            prev INTEGER,
            run_id TEXT NOT NULL,
            at INTEGER NOT NULL,
            trigger TEXT NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            worker TEXT,
            changes TEXT NOT NULL,
            run TEXT NOT NULL
        )""",
        f"CREATE UNIQUE INDEX IF NOT EXISTS runflow_runs_id ON {t.runs} (id)",
        # One local active run per thread (LIFECYCLE R1.3), across every process.
        (
            f"CREATE UNIQUE INDEX IF NOT EXISTS runflow_runs_thread_active ON {t.runs} "
            "(thread_id) WHERE active = 1"
        ),
        (
            f"CREATE INDEX IF NOT EXISTS runflow_runs_queue ON {t.runs} (since, created_at, id) "
            f"WHERE status = 'queued' AND {local}"
        ),
        (
            f"CREATE INDEX IF NOT EXISTS runflow_runs_due ON {t.runs} (expires_at) "
            f"WHERE expires_at IS NOT NULL AND {local}"
        ),
        (
            f"CREATE INDEX IF NOT EXISTS runflow_runs_lease ON {t.runs} (lease_until) "
            f"WHERE status = 'in_progress' AND lease_until IS NOT NULL AND {local}"
        ),
        (
            f"CREATE INDEX IF NOT EXISTS runflow_runs_cancelling ON {t.runs} (since) "
            f"WHERE status = 'cancelling' AND {local}"
        ),
        f"CREATE INDEX IF NOT EXISTS runflow_runs_thread ON {t.runs} (thread_id, position)",
    ]


#: The channel every journal insert notifies; the payload is the table's schema.
NOTIFY_CHANNEL: Final = "runflow_journal"


def postgres_ddl(t: Tables) -> list[str]:
    """The statements that create the PostgreSQL schema (idempotent)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {t.schema} (version integer NOT NULL, runflow text NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {t.runs} (
            id text PRIMARY KEY,
            position bigint NOT NULL,
            thread_id text NOT NULL,
            assistant_id text NOT NULL,
            status text NOT NULL,
            observed boolean NOT NULL,
            version bigint NOT NULL,
            created_at bigint NOT NULL,
            since bigint NOT NULL,
            expires_at bigint,
            worker text,
            lease_until bigint,
            accrued_prompt bigint,
            accrued_completion bigint,
            accrued_total bigint,
            record json NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS {t.journal} (
            sequence bigserial PRIMARY KEY,
            run_id text NOT NULL,
            at bigint NOT NULL,
            trigger text NOT NULL,
            from_status text,
            to_status text NOT NULL,
            worker text,
            changes json NOT NULL,
            run json NOT NULL
        )""",
        *_indexes(t, local="NOT observed"),
        # The backends of running watches (PostgresStore.watch), by process id.
        f"CREATE TABLE IF NOT EXISTS {t.listeners} (pid integer PRIMARY KEY)",
        # Every journal insert notifies the watches when its transaction commits
        # (notifications of one transaction with one payload fold into one). Only
        # while a watch runs: a NOTIFY serializes the commits of every notifying
        # transaction of the server, which writers need not pay for nobody.
        f"""CREATE OR REPLACE FUNCTION {t.prefix}runflow_notify() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM {t.listeners}) THEN
                    PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_TABLE_SCHEMA);
                END IF;
                RETURN NULL;
            END
            $$""",
        (
            f"CREATE OR REPLACE TRIGGER runflow_journal_notify AFTER INSERT ON {t.journal} "
            f"FOR EACH ROW EXECUTE FUNCTION {t.prefix}runflow_notify()"
        ),
    ]


def check_version(rows: Sequence[Sequence[Any]], where: str) -> bool:
    """
    Check the rows of ``runflow_schema``; return True if the version row is missing.

    Raises:
        runflow.StoreError: the database was written by a newer runflow.
    """
    if not rows:
        return True
    found = max(int(r[0]) for r in rows)
    if found > SCHEMA_VERSION:
        writer = next(str(r[1]) for r in rows if int(r[0]) == found)
        msg = (
            f"{where} holds runflow schema version {found}, written by runflow {writer}; "
            f"this runflow ({runflow_version()}) reads schema version {SCHEMA_VERSION} "
            "at most: upgrade runflow-engine"
        )
        raise StoreError(msg)
    return False


# --- rows ------------------------------------------------------------------------------------


def record_json(record: RunObject) -> str:
    """The stored JSON of a run record (its wire dict)."""
    return _encode(record.to_dict())


def run_params(stored: StoredRun, record: str) -> tuple[Any, ...]:
    """
    The mutable columns of a run row, in the order ``status, version, since,
    expires_at, worker, lease_until, accrued_prompt, accrued_completion,
    accrued_total, record``.
    """
    r = stored.record
    a = stored.accrued
    return (
        r.status.value,
        stored.version,
        stored.since,
        r.expires_at,
        stored.worker,
        stored.lease_until,
        None if a is None else a.prompt_tokens,
        None if a is None else a.completion_tokens,
        None if a is None else a.total_tokens,
        record,
    )


def _load(value: object) -> Any:
    """JSON text (SQLite) or an already decoded value (psycopg's jsonb)."""
    return _decode(value) if isinstance(value, str) else value


#: The fields the lifecycle's own transitions set: a record changed in these only is
#: encoded from the wire dict of the record before it, field by field.
_PATCHABLE: frozenset[str] = ASSISTANTS_RUN.effect_fields


class RecordCache:
    """
    The records a store last wrote or read, by id, with their JSON text: a row whose
    text is the cached one reuses the record instead of decoding it again (about 20
    µs a read). For a record the store wrote, it also keeps the wire dict, so the
    next transition's record is encoded by patching the fields it changed instead of
    unstructuring the whole record again (about 15 µs a write). Bounded; safe for
    threads (single dict operations).
    """

    __slots__ = ("_items", "_size")

    def __init__(self, size: int = 4096) -> None:
        self._items: dict[str, tuple[str, RunObject, dict[str, Any] | None]] = {}
        self._size = size

    def read(self, run_id: str, text: str) -> RunObject:
        """The record stored as ``text`` for ``run_id``."""
        hit = self._items.get(run_id)
        if hit is not None and hit[0] == text:
            return hit[1]
        record = RunObject.from_dict(_decode(text))
        self.put(run_id, text, record)
        return record

    def encode(
        self,
        record: RunObject,
        before: RunObject | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """
        The stored JSON of ``record`` and its wire dict. ``changes`` (the fields a
        transition set on ``before`` to make ``record``) patch the wire dict this
        cache holds for ``before``, if it holds one and they are lifecycle fields
        only; otherwise the whole record is unstructured.
        """
        hit = self._items.get(record.id)
        if hit is not None and hit[2] is not None:
            if hit[1] is record:
                return hit[0], hit[2]
            if hit[1] is before and changes is not None and changes.keys() <= _PATCHABLE:
                wire = hit[2].copy()
                for name, value in changes.items():
                    wire[name] = unstructure(value)
                return _encode(wire), wire
        wire = record.to_dict()
        return _encode(wire), wire

    def put(
        self, run_id: str, text: str, record: RunObject, wire: dict[str, Any] | None = None
    ) -> None:
        """Remember that ``record`` is stored as ``text`` (with its wire dict, if known)."""
        items = self._items
        if len(items) >= self._size and run_id not in items:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):  # a racing thread
                del items[next(iter(items))]
        items[run_id] = (text, record, wire)

    def drop(self, run_id: str) -> None:
        """Forget a run."""
        self._items.pop(run_id, None)


def stored_from_row(row: Sequence[Any], cache: RecordCache | None = None) -> StoredRun:
    """A :class:`StoredRun` from a row of :data:`RUN_COLUMNS`."""
    rid, version, observed, since, worker, lease_until, prompt, completion, total, record = row
    return StoredRun(
        RunObject.from_dict(_load(record))
        if cache is None or not isinstance(record, str)
        else cache.read(rid, record),
        version,
        None
        if prompt is None
        else Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total),
        bool(observed),
        since,
        worker,
        lease_until,
    )


def changes_json(change: Change) -> str:
    """
    The fields a transition set, as wire values, in JSON: ``status`` first when it
    changed (also for a run's first entry), then the others the change names.
    """
    before, after = change.from_status, change.to_status
    wire: dict[str, Any] = {} if before is after else {"status": after.value}
    for name, value in change.changes.items():
        if name != "status":
            wire[name] = unstructure(value)
    return _encode(wire)


def journal_params(change: Change, run: str) -> tuple[Any, ...]:
    """
    A journal row without its sequence, in the order ``run_id, at, trigger,
    from_status, to_status, worker, changes, run``.
    """
    return (
        change.run_id,
        change.at,
        change.trigger,
        None if change.from_status is None else change.from_status.value,
        change.to_status.value,
        change.worker,
        changes_json(change),
        run,
    )


def entry_from_row(row: Sequence[Any]) -> JournalEntry:
    """A :class:`JournalEntry` from a row of :data:`JOURNAL_COLUMNS`."""
    sequence, run_id, at, trigger, from_status, to_status, worker, changes, run = row
    return JournalEntry(
        sequence=sequence,
        run_id=run_id,
        at=at,
        trigger=trigger,
        from_status=None if from_status is None else STATUS_BY_VALUE[from_status],
        to_status=STATUS_BY_VALUE[to_status],
        worker=worker,
        changes=_load(changes),
        run=RunObject.from_dict(_load(run)),
    )


def contiguous(entries: Sequence[JournalEntry], after: int) -> bool:
    """True if ``entries`` hold the sequences ``after + 1, after + 2, ...`` without a gap."""
    return all(e.sequence == after + i for i, e in enumerate(entries, 1))


def mask_password(url: str) -> str:
    """
    ``url`` with every password replaced by ``***``: the user part of a URL, a
    ``password=`` query parameter, or a ``password=`` keyword of a libpq string.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # a libpq keyword string: host=... password=...
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    rest = re.sub(r"([?&]password=)[^&#]*", r"\1***", rest)
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    return f"{scheme}://{netloc}{slash}{tail}"
