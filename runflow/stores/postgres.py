"""
PostgreSQL stores: many worker processes on one database.

Needs the ``postgres`` extra: ``pip install 'runflow-engine[postgres]'`` (psycopg 3 and
its connection pool). :class:`PostgresStore` is the store of :class:`runflow.Engine`;
:class:`AsyncPostgresStore` the store of :class:`runflow.AsyncEngine`, on psycopg's
asyncio pool. Both keep the same tables, so sync and async processes can share one
database.

Every write is one transaction that stores the run and appends its journal entry; a
transition is a compare-and-set on the run's version; :meth:`PostgresStore.claim`
takes queued runs with ``FOR UPDATE SKIP LOCKED``; a partial unique index holds one
local active run per thread. A lost connection (a server restart, a failover) is
retried with backoff for up to ``retry_for`` seconds; a write whose outcome the lost
connection hid is checked against the database before it is tried again, so it is
applied exactly once.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import typing
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal, Self, TypeVar

import structlog

from runflow.exceptions import StoreError, ThreadBusyError
from runflow.stores import _sql
from runflow.stores._base import SCHEMA_VERSION, Change, ClaimStep, JournalEntry, StoredRun

try:
    import psycopg
    import psycopg.conninfo
    import psycopg.errors
    from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolClosed
except ImportError as _exc:  # pragma: no cover - exercised by the missing-extra test
    msg = "the PostgreSQL store needs the postgres extra: pip install 'runflow-engine[postgres]'"
    raise StoreError(msg) from _exc

__all__ = ["AsyncPostgresStore", "PostgresStore"]

_T = TypeVar("_T")

#: Seconds a lost connection is retried (with backoff) before a :class:`StoreError`.
DEFAULT_RETRY_FOR = 30.0
#: Seconds to wait for the first connection.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Largest pause between two retries.
_MAX_BACKOFF = 1.0
#: Attempts of a write refused by the thread index whose conflicting run then ended.
_BUSY_RETRIES = 3
#: Seconds :meth:`PostgresStore.watch` waits for a notification before it reads anyway.
DEFAULT_WATCH_POLL = 1.0
#: Journal entries :meth:`PostgresStore.watch` reads at a time.
_WATCH_BATCH = 1000

_Fetch = Literal["none", "one", "all", "rowcount", "many"]


class _Query(typing.NamedTuple):
    """One statement an operation asks its driver to run, and what it wants back."""

    sql: str
    params: Sequence[Any] | None = None
    fetch: _Fetch = "all"


#: An operation: a generator of queries that receives each query's result.
_Op = Generator[_Query, Any, _T]


# --- the SQL of both stores, as driver-independent operations ------------------------------


class _Statements:
    """Every statement of one store, with its table names filled in."""

    def __init__(self, t: _sql.Tables) -> None:
        cols = _sql.RUN_COLUMNS.removesuffix("record") + "record::text"
        jcols = _sql.JOURNAL_COLUMNS
        active = _sql.ACTIVE_SQL
        self.tables = t
        self.cache = _sql.RecordCache()
        self.get = f"SELECT {cols} FROM {t.runs} WHERE id = %s"
        self.get_position = f"SELECT {cols}, position FROM {t.runs} WHERE id = %s"
        set_run = (
            "status = %s, version = %s, since = %s, expires_at = %s, worker = %s, "
            "lease_until = %s, accrued_prompt = %s, accrued_completion = %s, "
            "accrued_total = %s, record = %s::json, observed = %s"
        )
        self.update = f"UPDATE {t.runs} SET {set_run} WHERE id = %s AND version = %s"
        journal_cols = "run_id, at, trigger, from_status, to_status, worker, changes, run"
        # The compare-and-set and the journal entry in one statement (one round trip):
        # no row moved, no entry written. The snapshot is the stored record, sent once.
        self.commit_same = (
            f"WITH moved AS ({self.update} RETURNING id, record) "
            f"INSERT INTO {t.journal} ({journal_cols}) "
            "SELECT id, %s, %s, %s, %s, %s, %s::json, record FROM moved RETURNING sequence"
        )
        self.commit_other = (
            f"WITH moved AS ({self.update} RETURNING id) "
            f"INSERT INTO {t.journal} ({journal_cols}) "
            "SELECT id, %s, %s, %s, %s, %s, %s::json, %s::json FROM moved RETURNING sequence"
        )
        run_cols = (
            "id, position, thread_id, assistant_id, created_at, observed, status, version, "
            "since, expires_at, worker, lease_until, accrued_prompt, accrued_completion, "
            "accrued_total, record"
        )
        entry = (
            f"WITH entry AS (INSERT INTO {t.journal} ({journal_cols}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s::json, %s::json) RETURNING sequence, run) "
            f"INSERT INTO {t.runs} ({run_cols}) "
        )
        self.insert_same = (
            entry + "SELECT %s, sequence, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "run FROM entry RETURNING position"
        )
        self.insert_other = (
            entry + "SELECT %s, sequence, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s::json FROM entry RETURNING position"
        )
        self.busy = (
            f"SELECT id FROM {t.runs} WHERE thread_id = %s AND {active} AND NOT observed "
            "AND id <> %s LIMIT 1"
        )
        self.lock_journal = f"LOCK TABLE {t.journal} IN ROW EXCLUSIVE MODE"
        self.claim = (
            f"SELECT {cols} FROM {t.runs} WHERE status = 'queued' AND NOT observed "
            "ORDER BY since, created_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self.claimed = f"SELECT {cols} FROM {t.runs} WHERE id = ANY(%s)"
        self.last_sequence = (
            f"SELECT run_id, max(sequence) FROM {t.journal} WHERE run_id = ANY(%s) GROUP BY run_id"
        )
        due = _sql.DUE_SQL.format(p="%s", local="NOT observed")
        self.due = f"SELECT id FROM {t.runs} WHERE {due} ORDER BY expires_at LIMIT %s"
        self.lapsed = (
            f"SELECT id FROM {t.runs} WHERE lease_until <= %s AND status = 'in_progress' "
            "AND NOT observed ORDER BY lease_until LIMIT %s"
        )
        self.stuck_cancelling = (
            f"SELECT id FROM {t.runs} WHERE status = 'cancelling' AND since <= %s "
            "AND NOT observed ORDER BY since LIMIT %s"
        )
        self.stuck = (
            f"SELECT id FROM {t.runs} WHERE status = %s AND since <= %s AND NOT observed "
            "ORDER BY since LIMIT %s"
        )
        self.history = f"SELECT {jcols} FROM {t.journal} WHERE run_id = %s ORDER BY sequence"
        self.journal = (
            f"SELECT {jcols} FROM {t.journal} WHERE sequence > %s ORDER BY sequence LIMIT %s"
        )
        # Waits for every transaction that holds a journal sequence to end, and keeps
        # new ones out while it reads: after it, no gap below the last entry fills.
        self.share_journal = f"LOCK TABLE {t.journal} IN SHARE MODE"
        self.discard = (
            f"WITH gone AS (DELETE FROM {t.journal} WHERE run_id = %s) "
            f"DELETE FROM {t.runs} WHERE id = %s"
        )
        self.runs = f"SELECT {cols} FROM {t.runs}"


def _insert_op(s: _Statements, run: StoredRun, change: Change, ambiguous: bool) -> _Op[int]:
    record = run.record
    if ambiguous:  # the last attempt may have committed before the connection broke
        row = yield _Query(s.get_position, (record.id,), "one")
        if row is not None and _sql.stored_from_row(row[:-1], s.cache) == run:
            position: int = row[-1]
            return position
    text, wire = s.cache.encode(record)
    entry = _sql.journal_params(change, text if change.run is record else _record(change))
    tail = (
        record.thread_id,
        record.assistant_id,
        record.created_at,
        run.observed,
        *_sql.run_params(run, text)[:-1],
    )
    if change.run is record:
        rows = yield _Query(s.insert_same, (*entry, record.id, *tail))
    else:
        rows = yield _Query(s.insert_other, (*entry, record.id, *tail, text))
    s.cache.put(record.id, text, record, wire)
    sequence: int = rows[0][0]
    return sequence


def _record(change: Change) -> str:
    return _sql.record_json(change.run)


def _commit_params(
    new: StoredRun, old: StoredRun, change: Change | None, text: str, *, snapshot: bool = False
) -> tuple[tuple[Any, ...], str | None]:
    """
    The parameters of a commit statement, and which statement: None (no journal
    entry), ``"same"`` (the snapshot is the stored record) or ``"other"`` (the
    snapshot is a parameter; always so with ``snapshot=True``).
    """
    update = (*_sql.run_params(new, text), new.observed, old.record.id, old.version)
    if change is None:
        return update, None
    entry = _sql.journal_params(change, "")
    if change.run is new.record and not snapshot:
        return (*update, *entry[1:-1]), "same"
    run = text if change.run is new.record else _record(change)
    return (*update, *entry[1:-1], run), "other"


def _commit_op(
    s: _Statements, old: StoredRun, new: StoredRun, change: Change | None, ambiguous: bool
) -> _Op[int | None]:
    rid = old.record.id
    if ambiguous:  # the last attempt may have committed before the connection broke
        row = yield _Query(s.get, (rid,), "one")
        if row is not None and _sql.stored_from_row(row, s.cache) == new:
            if change is None:
                return 0
            rows = yield _Query(s.last_sequence, ([rid],))
            last: int = rows[0][1]
            return last
    text, wire = s.cache.encode(new.record, old.record, None if change is None else change.changes)
    params, kind = _commit_params(new, old, change, text)
    if kind is None:
        moved = yield _Query(s.update, params, "rowcount")
        if not moved:
            return None
        s.cache.put(rid, text, new.record, wire)
        return 0
    rows = yield _Query(s.commit_same if kind == "same" else s.commit_other, params)
    if not rows:
        return None
    s.cache.put(rid, text, new.record, wire)
    sequence: int = rows[0][0]
    return sequence


class _Claim:
    """A claim; remembers what its last attempt wrote, in case the connection broke."""

    def __init__(self, s: _Statements, limit: int, step: ClaimStep) -> None:
        self.s = s
        self.limit = limit
        self.step = step
        self.attempted: list[StoredRun] = []

    def op(self, ambiguous: bool) -> _Op[list[tuple[StoredRun, int]]]:
        s = self.s
        yield _Query(s.lock_journal, None, "none")
        if ambiguous and self.attempted:
            mine = yield from self._recover()
            if mine:
                return mine
        self.attempted = []
        rows = yield _Query(s.claim, (self.limit,))
        if not rows:
            return []
        steps = [(old, *self.step(old)) for old in (_sql.stored_from_row(r, s.cache) for r in rows)]
        # One statement for the whole batch: the stored record is the snapshot unless
        # a step journals another one.
        other = any(change.run is not new.record for _, new, change in steps)
        batch = [
            _commit_params(
                new,
                old,
                change,
                s.cache.encode(new.record, old.record, change.changes)[0],
                snapshot=other,
            )[0]
            for old, new, change in steps
        ]
        claimed = [new for _, new, _ in steps]
        self.attempted = claimed
        sql = s.commit_other if other else s.commit_same
        sequences = yield _Query(sql, batch, "many")
        return list(zip(claimed, sequences, strict=True))

    def _recover(self) -> _Op[list[tuple[StoredRun, int]]]:
        """The runs of the last attempt if it committed (all or none did)."""
        ids = [r.record.id for r in self.attempted]
        rows = yield _Query(self.s.claimed, (ids,))
        stored = {r.record.id: r for r in (_sql.stored_from_row(x, self.s.cache) for x in rows)}
        mine = [r for r in self.attempted if stored.get(r.record.id) == r]
        if not mine:
            return []
        last = yield _Query(self.s.last_sequence, ([r.record.id for r in mine],))
        sequences = dict(last)
        return [(r, sequences[r.record.id]) for r in mine]


def _ids_op(sql: str, params: tuple[Any, ...]) -> _Op[list[str]]:
    rows = yield _Query(sql, params)
    return [r[0] for r in rows]


def _stuck_op(s: _Statements, status: str, since: int, limit: int) -> _Op[list[str]]:
    if status == "cancelling":  # what sweeps ask: the partial index answers it
        return (yield from _ids_op(s.stuck_cancelling, (since, limit)))
    return (yield from _ids_op(s.stuck, (str(status), since, limit)))


def _get_op(s: _Statements, run_id: str) -> _Op[StoredRun | None]:
    row = yield _Query(s.get, (run_id,), "one")
    return None if row is None else _sql.stored_from_row(row, s.cache)


def _entries_op(
    sql: str, params: tuple[Any, ...], *, lock: str | None = None
) -> _Op[list[JournalEntry]]:
    if lock is not None:
        yield _Query(lock, None, "none")
    rows = yield _Query(sql, params)
    return [_sql.entry_from_row(r) for r in rows]


def _runs_op(
    s: _Statements,
    thread_id: str | None,
    status: str | None,
    limit: int | None,
    newest_first: bool,
) -> _Op[list[StoredRun]]:
    where: list[str] = []
    params: list[Any] = []
    if thread_id is not None:
        where.append("thread_id = %s")
        params.append(thread_id)
    if status is not None:
        where.append("status = %s")
        params.append(str(status))
    sql = s.runs
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY position DESC" if newest_first else " ORDER BY position"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    rows = yield _Query(sql, tuple(params))
    return [_sql.stored_from_row(r, s.cache) for r in rows]


def _discard_op(s: _Statements, run_id: str) -> _Op[None]:
    yield _Query(s.discard, (run_id, run_id), "none")
    s.cache.drop(run_id)


def _schema_op(t: _sql.Tables, schema: str | None, where: str) -> _Op[bool]:
    """Check the schema version; create the tables if missing. True if it created them."""
    lock_key = f"runflow_schema:{schema or ''}"
    yield _Query("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,), "none")
    if schema is not None:
        yield _Query(f"CREATE SCHEMA IF NOT EXISTS {_sql.quote_ident(schema)}", None, "none")
    exists = yield _Query("SELECT to_regclass(%s)", (t.schema,), "one")
    rows = []
    if exists[0] is not None:
        rows = yield _Query(f"SELECT version, runflow FROM {t.schema}")
    if not _sql.check_version(rows, where):
        return False
    for statement in _sql.postgres_ddl(t):
        yield _Query(statement, None, "none")
    yield _Query(
        f"INSERT INTO {t.schema} (version, runflow) VALUES (%s, %s)",
        (SCHEMA_VERSION, _sql.runflow_version()),
        "none",
    )
    return True


def _version_op(t: _sql.Tables) -> _Op[list[Any] | None]:
    """The rows of ``runflow_schema``, or None when the table is missing."""
    exists = yield _Query("SELECT to_regclass(%s)", (t.schema,), "one")
    if exists[0] is None:
        return None
    rows: list[Any] = yield _Query(f"SELECT version, runflow FROM {t.schema}")
    return rows


# --- drivers ---------------------------------------------------------------------------------

_Conn = psycopg.Connection[tuple[Any, ...]]
_AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]


def _drive(conn: _Conn, op: _Op[_T]) -> _T:
    """Run ``op`` on ``conn``: each query's result (or error) is sent back into it."""
    try:
        query = next(op)
        while True:
            try:
                result = _execute(conn, query)
            except psycopg.Error as exc:
                query = op.throw(exc)
            else:
                query = op.send(result)
    except StopIteration as stop:
        value: _T = stop.value
        return value


def _execute(conn: _Conn, q: _Query) -> Any:
    with conn.cursor() as cur:
        if q.fetch == "many":
            assert q.params is not None  # noqa: S101 - many() always has its parameter sets
            cur.executemany(q.sql, q.params, returning=True)
            out = []
            while True:
                row = cur.fetchone()
                out.append(None if row is None else row[0])
                if not cur.nextset():
                    return out
        cur.execute(q.sql, q.params)
        return _fetch(cur, q.fetch)


def _fetch(cur: psycopg.Cursor[Any], fetch: _Fetch) -> Any:
    if fetch == "rowcount":
        return cur.rowcount
    if fetch == "none":
        return None
    return cur.fetchone() if fetch == "one" else cur.fetchall()


async def _drive_async(conn: _AsyncConn, op: _Op[_T]) -> _T:
    """:func:`_drive` on an asyncio connection."""
    try:
        query = next(op)
        while True:
            try:
                result = await _execute_async(conn, query)
            except psycopg.Error as exc:
                query = op.throw(exc)
            else:
                query = op.send(result)
    except StopIteration as stop:
        value: _T = stop.value
        return value


async def _execute_async(conn: _AsyncConn, q: _Query) -> Any:
    async with conn.cursor() as cur:
        if q.fetch == "many":
            assert q.params is not None  # noqa: S101 - many() always has its parameter sets
            await cur.executemany(q.sql, q.params, returning=True)
            out = []
            while True:
                row = await cur.fetchone()
                out.append(None if row is None else row[0])
                if not cur.nextset():
                    return out
        await cur.execute(q.sql, q.params)
        if q.fetch == "rowcount":
            return cur.rowcount
        if q.fetch == "none":
            return None
        return await cur.fetchone() if q.fetch == "one" else await cur.fetchall()


# --- errors, retries, addresses ------------------------------------------------------------


def _address(conninfo: str) -> str:
    """``host:port/dbname`` of a conninfo string or URL, with libpq's defaults."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:
        params = {}
    env = os.environ
    host = str(params.get("host") or env.get("PGHOST") or "localhost")
    port = str(params.get("port") or env.get("PGPORT") or "5432")
    user = str(params.get("user") or env.get("PGUSER") or "")
    db = str(params.get("dbname") or env.get("PGDATABASE") or user or "postgres")
    return f"{host}:{port}/{db}"


def _transient(exc: BaseException) -> bool:
    """A failure worth retrying: a lost connection, a deadlock, a serialization failure."""
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolClosed)


def _ambiguous(exc: BaseException) -> bool:
    """The failure may have hidden a commit (the server did not say it rolled back)."""
    return not isinstance(exc, psycopg.errors.TransactionRollback)


def _unique(exc: psycopg.errors.UniqueViolation) -> str:
    return exc.diag.constraint_name or ""


class _Backoff:
    """Pauses between retries: 50 ms doubling to one second, for ``retry_for`` seconds."""

    def __init__(self, retry_for: float) -> None:
        self.deadline = time.monotonic() + retry_for
        self.delay = 0.05

    def next(self) -> float | None:
        """The next pause, or None once the time is up."""
        if time.monotonic() + self.delay > self.deadline:
            return None
        delay = self.delay
        self.delay = min(self.delay * 2, _MAX_BACKOFF)
        return delay


class _Base:
    """What both PostgreSQL stores share: options, statements, error messages."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        retry_for: float,
        create: bool,
    ) -> None:
        self._conninfo = conninfo
        self._create = create
        self._url = _sql.mask_password(conninfo)
        self._where = _address(conninfo)
        try:
            psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            msg = f"not a valid PostgreSQL URL or conninfo {self._url!r}: {exc}"
            raise StoreError(msg, url=self._url) from exc
        self._schema = schema
        self._tables = _sql.Tables(schema)
        self._s = _Statements(self._tables)
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._retry_for = retry_for
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": "runflow",
            "connect_timeout": max(2, round(connect_timeout)),
        }

    @property
    def url(self) -> str:
        """The conninfo the store was opened with, its password masked."""
        return self._url

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema holding the tables (None: the connection's search_path)."""
        return self._schema

    def _missing(self) -> StoreError:
        schema = "" if self._schema is None else f" in schema {self._schema!r}"
        msg = (
            f"no runflow store at PostgreSQL {self._where}{schema}: its tables are missing "
            "(a mistyped database or schema?); nothing was created"
        )
        return StoreError(msg, url=self._url)

    def _unreachable(self, exc: BaseException) -> StoreError:
        msg = f"PostgreSQL at {self._where} is unreachable: {_reason(exc)}"
        return StoreError(msg, url=self._url)

    def _failed(self, exc: BaseException) -> StoreError:
        msg = f"PostgreSQL at {self._where}: {_reason(exc)}"
        return StoreError(msg, url=self._url)

    def _closed(self, exc: BaseException | None = None) -> StoreError:
        del exc
        return StoreError(f"the PostgreSQL store for {self._where} is closed", url=self._url)

    def _busy_error(self, exc: psycopg.errors.UniqueViolation, run: StoredRun) -> Exception | None:
        """The error a unique violation stands for, or None if the thread freed meanwhile."""
        if _unique(exc) == "runflow_runs_pkey":
            msg = f"a run with id {run.record.id!r} is already stored"
            return ValueError(msg)
        if _unique(exc) != "runflow_runs_thread_active":  # pragma: no cover - none other
            return self._failed(exc)
        return None

    def __repr__(self) -> str:
        schema = "" if self._schema is None else f" schema={self._schema}"
        return f"<{type(self).__name__} {self._where}{schema}>"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


# --- the sync store ----------------------------------------------------------------------------


@typing.final
class PostgresStore(_Base):
    """
    Runs and their journal in PostgreSQL, shared by any number of worker processes.

    Args:
        conninfo: A ``postgresql://`` URL or a libpq keyword string.
        schema: The PostgreSQL schema of the tables (created if missing); None uses
            the connection's ``search_path``. Lets several independent stores share one
            database (tests use one fresh schema each).
        min_size: Connections the pool keeps open.
        max_size: Connections the pool opens at most (one per concurrent call).
        connect_timeout: Seconds to wait for the server when the store opens.
        retry_for: Seconds a lost connection, a deadlock or a serialization failure
            is retried, with backoff, before a :class:`runflow.StoreError`.
        create: Create the tables (and the schema) if they are missing. False: a
            database or schema without runflow's tables is refused with a
            :class:`runflow.StoreError` and nothing is created (for tools that only
            read or operate on an existing store, such as ``runflow runs``).

    Raises:
        runflow.StoreError: a bad URL, an unreachable server, a failed login, or a
            schema written by a newer runflow; the driver's error is chained.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        conninfo: str = "",
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
        create: bool = True,
    ) -> None:
        super().__init__(
            conninfo,
            schema=schema,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            retry_for=retry_for,
            create=create,
        )
        self._watchers: list[_Watcher] = []
        self._prepare()
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs=self._kwargs,
            open=False,
            name="runflow",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg.Error as exc:
            self._pool.close()
            raise self._unreachable(exc) from exc

    def _connect(self, application_name: str = "runflow") -> _Conn:
        kwargs = {**self._kwargs, "application_name": application_name}
        conn: _Conn = psycopg.Connection.connect(self._conninfo, **kwargs)
        return conn

    def _prepare(self) -> None:
        """Check the schema version; create the tables on first use."""
        try:
            with self._connect() as conn:
                rows = _drive(conn, _version_op(self._tables))
                if rows is None and not self._create:
                    raise self._missing()
                if rows is not None and not _sql.check_version(rows, self._where):
                    return
                with conn.transaction():
                    _drive(conn, _schema_op(self._tables, self._schema, self._where))
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from exc
        except psycopg.Error as exc:
            raise self._failed(exc) from exc

    @contextmanager
    def _connection(self) -> Iterator[_Conn]:
        with self._pool.connection(timeout=self._connect_timeout) as conn:
            yield conn

    def _run(self, make: Callable[[bool], _Op[_T]], *, transaction: bool = False) -> _T:
        """Run an operation; retry transient failures with backoff, then StoreError."""
        backoff = _Backoff(self._retry_for)
        ambiguous = False
        while True:
            try:
                with self._connection() as conn:
                    if not transaction:
                        return _drive(conn, make(ambiguous))
                    with conn.transaction():
                        return _drive(conn, make(ambiguous))
            except PoolClosed as exc:
                raise self._closed(exc) from exc
            except psycopg.OperationalError as exc:
                ambiguous = ambiguous or _ambiguous(exc)
                pause = backoff.next()
                if pause is None:
                    raise self._unreachable(exc) from exc
                self._recover()
                time.sleep(pause)
            except psycopg.errors.UniqueViolation:
                raise
            except psycopg.Error as exc:
                raise self._failed(exc) from exc

    def _recover(self) -> None:
        """Drop the pool's broken connections (after a restart, all of them)."""
        with contextlib.suppress(psycopg.Error):
            self._pool.check()

    def get(self, run_id: str) -> StoredRun | None:
        """The stored run, or None."""
        return self._run(lambda _: _get_op(self._s, run_id))

    def insert(self, run: StoredRun, change: Change) -> int:
        """
        Store a new run and journal its first entry; return the entry's sequence.

        Raises:
            runflow.ThreadBusyError: ``run`` is local and active, and its thread
                already has a local active run.
            ValueError: the id is taken.
        """
        for _ in range(_BUSY_RETRIES):
            try:
                return self._run(lambda ambiguous: _insert_op(self._s, run, change, ambiguous))
            except psycopg.errors.UniqueViolation as exc:
                error = self._busy_error(exc, run) or self._busy(run)
                if error is not None:
                    raise error from None
        raise ThreadBusyError(run.record.thread_id, "")  # pragma: no cover - churn

    def _busy(self, run: StoredRun) -> ThreadBusyError | None:
        thread_id = run.record.thread_id
        ids = self._run(lambda _: _ids_op(self._s.busy, (thread_id, run.record.id)))
        return ThreadBusyError(thread_id, ids[0]) if ids else None

    def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        """
        Replace ``old`` by ``new`` if the stored version is still ``old.version``,
        journaling ``change`` in the same statement.

        Returns:
            The journal sequence of ``change`` (0 when ``change`` is None), or None
            when the compare-and-set lost.

        Raises:
            runflow.ThreadBusyError: ``new`` is local and active on a thread that
                has another local active run.
        """
        for _ in range(_BUSY_RETRIES):
            try:
                return self._run(lambda ambiguous: _commit_op(self._s, old, new, change, ambiguous))
            except psycopg.errors.UniqueViolation as exc:
                error = self._busy_error(exc, new) or self._busy(new)
                if error is not None:
                    raise error from None
        raise ThreadBusyError(new.record.thread_id, "")  # pragma: no cover - churn

    def claim(self, *, limit: int, now: int, step: ClaimStep) -> list[tuple[StoredRun, int]]:
        """
        In one transaction, lock up to ``limit`` local ``queued`` runs, longest waiting
        first (``since``, then ``created_at``, then id), skipping runs another claimer
        holds (``FOR UPDATE SKIP LOCKED``); store ``step(run)`` for each with its
        journal entry; return the claimed runs and their sequences. If ``step``
        raises, nothing is claimed.
        """
        del now
        if limit <= 0:
            return []
        claim = _Claim(self._s, limit, step)
        try:
            return self._run(claim.op, transaction=True)
        except psycopg.errors.UniqueViolation as exc:  # pragma: no cover - a step breaking R1.3
            raise self._failed(exc) from exc

    def due(self, now: int, limit: int) -> list[str]:
        """Ids of local active runs whose ``expires_at`` is at or before ``now``."""
        return self._run(lambda _: _ids_op(self._s.due, (now, limit)))

    def lapsed(self, now: int, limit: int) -> list[str]:
        """Ids of local ``in_progress`` runs whose lease lapsed at or before ``now``."""
        return self._run(lambda _: _ids_op(self._s.lapsed, (now, limit)))

    def stuck(self, status: str, since: int, limit: int) -> list[str]:
        """Ids of local runs in ``status`` since ``since`` or earlier."""
        return self._run(lambda _: _stuck_op(self._s, status, since, limit))

    def history(self, run_id: str) -> list[JournalEntry]:
        """The journal of one run, oldest first."""
        return self._run(lambda _: _entries_op(self._s.history, (run_id,)))

    def journal(self, after: int, limit: int) -> list[JournalEntry]:
        """
        Journal entries with a sequence above ``after``, in order, never skipping one
        that a transaction still in flight will add: a reader that goes on from the
        last sequence it saw misses nothing.

        Sequences are taken before commit, so a later one can become visible first.
        When the entries read show a gap, the read is repeated under a ``SHARE``
        lock on the journal, which waits for the writers in flight.
        """
        params = (after, limit)
        entries = self._run(lambda _: _entries_op(self._s.journal, params))
        if _sql.contiguous(entries, after):
            return entries
        return self._run(
            lambda _: _entries_op(self._s.journal, params, lock=self._s.share_journal),
            transaction=True,
        )

    def runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredRun]:
        """Stored runs by creation order (or newest first), optionally filtered."""
        return self._run(lambda _: _runs_op(self._s, thread_id, status, limit, newest_first))

    def discard(self, run_id: str) -> None:
        """Forget a run and its journal (no error if unknown)."""
        self._run(lambda _: _discard_op(self._s, run_id))

    def watch(
        self,
        after: int,
        deliver: Callable[[list[JournalEntry]], object],
        *,
        poll: float = DEFAULT_WATCH_POLL,
    ) -> Callable[[], None]:
        """
        Deliver every journal entry above ``after``, in order, as other processes
        (and this one) commit them.

        A background thread listens on the ``runflow_journal`` channel that every
        journal insert notifies, then reads the journal on from the last entry it
        delivered (also every ``poll`` seconds, in case a notification is lost). After
        a lost connection it reconnects and resumes from the last delivered sequence,
        so nothing is missed or delivered twice. ``deliver`` runs on that thread; an
        exception it raises is logged and the entries count as delivered.

        Returns:
            A function that stops the watch (and waits for the thread to end).
        """
        watcher = _Watcher(self, after, deliver, poll)
        self._watchers.append(watcher)
        watcher.start()

        def stop() -> None:
            watcher.stop()
            if watcher in self._watchers:
                self._watchers.remove(watcher)

        return stop

    def close(self) -> None:
        """Stop every watch and close the connection pool (idempotent)."""
        for watcher in list(self._watchers):
            watcher.stop()
        self._watchers.clear()
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Watcher:
    """The thread behind :meth:`PostgresStore.watch`."""

    def __init__(
        self,
        store: PostgresStore,
        after: int,
        deliver: Callable[[list[JournalEntry]], object],
        poll: float,
    ) -> None:
        self.store = store
        self.last = after
        self.deliver = deliver
        self.poll = poll
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="runflow-watch", daemon=True)
        self.conn: _Conn | None = None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=max(5.0, 2 * self.poll))

    def run(self) -> None:
        log = structlog.get_logger(__name__)
        pause = 0.05
        while not self.stopping.is_set():
            try:
                with self.store._connect("runflow-watch") as conn:  # noqa: SLF001 - same module
                    self.listen(conn)
                    pause = 0.05
                    self.drain()  # whatever committed while we were not listening
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=self.poll, stop_after=1):
                            break
                        self.drain()
                    listeners = self.store._tables.listeners  # noqa: SLF001 - same module
                    conn.execute(f"DELETE FROM {listeners} WHERE pid = pg_backend_pid()")
            except (psycopg.Error, StoreError) as exc:
                if self.stopping.is_set():
                    break
                log.warning("store_watch_reconnecting", error=_reason(exc), pause=pause)
                self.stopping.wait(pause)
                pause = min(pause * 2, _MAX_BACKOFF)

    def listen(self, conn: _Conn) -> None:
        """Register this backend as a listener (dropping those gone), then LISTEN."""
        listeners = self.store._tables.listeners  # noqa: SLF001 - same module
        conn.execute(f"DELETE FROM {listeners} WHERE pid NOT IN (SELECT pid FROM pg_stat_activity)")
        conn.execute(
            f"INSERT INTO {listeners} (pid) VALUES (pg_backend_pid()) ON CONFLICT DO NOTHING"
        )
        conn.execute(f"LISTEN {_sql.NOTIFY_CHANNEL}")

    def drain(self) -> None:
        log = structlog.get_logger(__name__)
        while not self.stopping.is_set():
            entries = self.store.journal(self.last, _WATCH_BATCH)
            if not entries:
                return
            self.last = entries[-1].sequence
            try:
                self.deliver(entries)
            except Exception as exc:  # a subscriber must not end the watch
                log.exception("store_watch_deliver_failed", error=_reason(exc))
            if len(entries) < _WATCH_BATCH:
                return


# --- the async store ---------------------------------------------------------------------------


@typing.final
class AsyncPostgresStore(_Base):
    """
    :class:`PostgresStore` for asyncio (the :class:`runflow.stores.AsyncStore`
    protocol), on psycopg's ``AsyncConnectionPool``: no call blocks
    the event loop.

    The constructor does no I/O; the store connects (and checks or creates the
    schema) on :meth:`open`, ``async with``, or its first use.

    Args: as :class:`PostgresStore`.

    Raises:
        runflow.StoreError: as :class:`PostgresStore` (from :meth:`open` or the first
            call).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        conninfo: str = "",
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
        create: bool = True,
    ) -> None:
        super().__init__(
            conninfo,
            schema=schema,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            retry_for=retry_for,
            create=create,
        )
        self._pool: AsyncConnectionPool[_AsyncConn] | None = None
        self._opening: asyncio.Lock | None = None
        self._is_closed = False

    async def open(self) -> Self:
        """Connect, check the schema version and create the tables if missing."""
        if self._pool is not None:
            return self
        if self._is_closed:
            raise self._closed()
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._opened():  # another task opened it while this one waited
                return self
            await self._prepare()
            pool: AsyncConnectionPool[_AsyncConn] = AsyncConnectionPool(
                self._conninfo,
                min_size=self._min_size,
                max_size=self._max_size,
                kwargs=self._kwargs,
                open=False,
                name="runflow-async",
            )
            try:
                await pool.open(wait=True, timeout=self._connect_timeout)
            except psycopg.Error as exc:
                await pool.close()
                raise self._unreachable(exc) from exc
            self._pool = pool
        return self

    def _opened(self) -> bool:
        return self._pool is not None

    async def _prepare(self) -> None:
        try:
            conn: _AsyncConn = await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
            async with conn:
                rows = await _drive_async(conn, _version_op(self._tables))
                if rows is None and not self._create:
                    raise self._missing()
                if rows is not None and not _sql.check_version(rows, self._where):
                    return
                async with conn.transaction():
                    await _drive_async(conn, _schema_op(self._tables, self._schema, self._where))
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from exc
        except psycopg.Error as exc:
            raise self._failed(exc) from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_AsyncConn]:
        pool = self._pool
        if pool is None:
            await self.open()
            pool = self._pool
        assert pool is not None  # noqa: S101 - open() set it or raised
        async with pool.connection(timeout=self._connect_timeout) as conn:
            yield conn

    async def _run(self, make: Callable[[bool], _Op[_T]], *, transaction: bool = False) -> _T:
        backoff = _Backoff(self._retry_for)
        ambiguous = False
        while True:
            try:
                async with self._connection() as conn:
                    if not transaction:
                        return await _drive_async(conn, make(ambiguous))
                    async with conn.transaction():
                        return await _drive_async(conn, make(ambiguous))
            except PoolClosed as exc:
                raise self._closed(exc) from exc
            except psycopg.OperationalError as exc:
                ambiguous = ambiguous or _ambiguous(exc)
                pause = backoff.next()
                if pause is None:
                    raise self._unreachable(exc) from exc
                if self._pool is not None:
                    with contextlib.suppress(psycopg.Error):
                        await self._pool.check()
                await asyncio.sleep(pause)
            except psycopg.errors.UniqueViolation:
                raise
            except psycopg.Error as exc:
                raise self._failed(exc) from exc

    async def get(self, run_id: str) -> StoredRun | None:
        """See :meth:`PostgresStore.get`."""
        return await self._run(lambda _: _get_op(self._s, run_id))

    async def insert(self, run: StoredRun, change: Change) -> int:
        """See :meth:`PostgresStore.insert`."""
        for _ in range(_BUSY_RETRIES):
            try:
                return await self._run(
                    lambda ambiguous: _insert_op(self._s, run, change, ambiguous)
                )
            except psycopg.errors.UniqueViolation as exc:
                error = self._busy_error(exc, run) or await self._busy(run)
                if error is not None:
                    raise error from None
        raise ThreadBusyError(run.record.thread_id, "")  # pragma: no cover - churn

    async def _busy(self, run: StoredRun) -> ThreadBusyError | None:
        thread_id = run.record.thread_id
        ids = await self._run(lambda _: _ids_op(self._s.busy, (thread_id, run.record.id)))
        return ThreadBusyError(thread_id, ids[0]) if ids else None

    async def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        """See :meth:`PostgresStore.commit`."""
        for _ in range(_BUSY_RETRIES):
            try:
                return await self._run(
                    lambda ambiguous: _commit_op(self._s, old, new, change, ambiguous)
                )
            except psycopg.errors.UniqueViolation as exc:
                error = self._busy_error(exc, new) or await self._busy(new)
                if error is not None:
                    raise error from None
        raise ThreadBusyError(new.record.thread_id, "")  # pragma: no cover - churn

    async def claim(self, *, limit: int, now: int, step: ClaimStep) -> list[tuple[StoredRun, int]]:
        """See :meth:`PostgresStore.claim`."""
        del now
        if limit <= 0:
            return []
        claim = _Claim(self._s, limit, step)
        try:
            return await self._run(claim.op, transaction=True)
        except psycopg.errors.UniqueViolation as exc:  # pragma: no cover - a step breaking R1.3
            raise self._failed(exc) from exc

    async def due(self, now: int, limit: int) -> list[str]:
        """See :meth:`PostgresStore.due`."""
        return await self._run(lambda _: _ids_op(self._s.due, (now, limit)))

    async def lapsed(self, now: int, limit: int) -> list[str]:
        """See :meth:`PostgresStore.lapsed`."""
        return await self._run(lambda _: _ids_op(self._s.lapsed, (now, limit)))

    async def stuck(self, status: str, since: int, limit: int) -> list[str]:
        """See :meth:`PostgresStore.stuck`."""
        return await self._run(lambda _: _stuck_op(self._s, status, since, limit))

    async def history(self, run_id: str) -> list[JournalEntry]:
        """See :meth:`PostgresStore.history`."""
        return await self._run(lambda _: _entries_op(self._s.history, (run_id,)))

    async def journal(self, after: int, limit: int) -> list[JournalEntry]:
        """See :meth:`PostgresStore.journal`."""
        params = (after, limit)
        entries = await self._run(lambda _: _entries_op(self._s.journal, params))
        if _sql.contiguous(entries, after):
            return entries
        return await self._run(
            lambda _: _entries_op(self._s.journal, params, lock=self._s.share_journal),
            transaction=True,
        )

    async def runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredRun]:
        """See :meth:`PostgresStore.runs`."""
        return await self._run(lambda _: _runs_op(self._s, thread_id, status, limit, newest_first))

    async def discard(self, run_id: str) -> None:
        """See :meth:`PostgresStore.discard`."""
        await self._run(lambda _: _discard_op(self._s, run_id))

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        self._is_closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
