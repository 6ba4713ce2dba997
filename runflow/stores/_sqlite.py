"""The SQLite store: durable runs in one file, shared safely by threads and processes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from runflow._model import RunObject
from runflow.exceptions import StoreError, ThreadBusyError
from runflow.stores import _sql
from runflow.stores._base import (
    ACTIVE_VALUES,
    SCHEMA_VERSION,
    Change,
    ClaimStep,
    JournalEntry,
    StoredRun,
)

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

_RUNS = "runflow_runs"
_JOURNAL = "runflow_journal"
_COLS = _sql.RUN_COLUMNS

_GET = f"SELECT {_COLS} FROM {_RUNS} WHERE id = ?"
#: The next sequence: above every entry and above the floor discards leave.
_NEXT_SEQUENCE = (
    "(SELECT max(ifnull(max(sequence_floor), 0), "
    f"ifnull((SELECT max(sequence) FROM {_JOURNAL}), 0)) + 1 FROM runflow_schema)"
)
#: A new run's row; its ``position`` (the row id) is the sequence of its first entry.
_INSERT_RUN = (
    f"INSERT INTO {_RUNS} (position, last_sequence, id, thread_id, assistant_id, created_at, "
    "observed, active, status, version, since, expires_at, worker, lease_until, accrued_prompt, "
    "accrued_completion, accrued_total, record) SELECT s, s, "
    f"?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM (SELECT {_NEXT_SEQUENCE} AS s)"
)
#: A run's first entry (``prev`` NULL), at the sequence its row took.
_INSERT_FIRST = (
    f"INSERT INTO {_JOURNAL} (sequence, prev, run_id, at, trigger, from_status, to_status, "
    "worker, changes, run) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: A later entry, linked to the run's last one: the run id, then the journal row (only
#: nameless ``?`` placeholders: Python 3.12 deprecates mixing in numbered ones, and 3.14
#: refuses them with a sequence of parameters).
_INSERT_NEXT = (
    f"INSERT INTO {_JOURNAL} (sequence, prev, run_id, at, trigger, from_status, to_status, "
    f"worker, changes, run) VALUES ({_NEXT_SEQUENCE}, "
    f"(SELECT last_sequence FROM {_RUNS} WHERE id = ?), ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Take back an entry whose run update was refused.
_DROP_ENTRY = f"DELETE FROM {_JOURNAL} WHERE sequence = ?"
#: The sequences of a run's entries: down the ``prev`` chain from its last one.
_CHAIN = (
    "WITH RECURSIVE chain(s) AS ("
    f"SELECT last_sequence FROM {_RUNS} WHERE id = ? "
    f"UNION ALL SELECT j.prev FROM {_JOURNAL} AS j JOIN chain ON j.sequence = chain.s "
    "WHERE j.prev IS NOT NULL) "
)
_BUSY = (
    f"SELECT id FROM {_RUNS} INDEXED BY runflow_runs_thread_active "
    "WHERE thread_id = ? AND active = 1 AND id != ? LIMIT 1"
)
_CLAIM = (
    f"SELECT {_COLS} FROM {_RUNS} INDEXED BY runflow_runs_queue "
    "WHERE status = 'queued' AND observed = 0 "
    "ORDER BY since, created_at, id LIMIT ?"
)
_DUE = (
    f"SELECT id FROM {_RUNS} INDEXED BY runflow_runs_due "
    f"WHERE {_sql.DUE_SQL.format(p='?', local='observed = 0')} ORDER BY expires_at LIMIT ?"
)
_LAPSED = (
    f"SELECT id FROM {_RUNS} INDEXED BY runflow_runs_lease "
    "WHERE lease_until <= ? AND status = 'in_progress' "
    "AND observed = 0 ORDER BY lease_until LIMIT ?"
)
_STUCK = (
    f"SELECT id FROM {_RUNS} WHERE status = ? AND since <= ? AND observed = 0 "
    "ORDER BY since LIMIT ?"
)
_STUCK_CANCELLING = (
    f"SELECT id FROM {_RUNS} INDEXED BY runflow_runs_cancelling "
    "WHERE status = 'cancelling' AND since <= ? AND observed = 0 ORDER BY since LIMIT ?"
)
_HISTORY = (
    f"{_CHAIN}SELECT {_sql.JOURNAL_COLUMNS} FROM {_JOURNAL} "
    "WHERE sequence IN (SELECT s FROM chain) ORDER BY sequence"
)
_DISCARD_FLOOR = (
    "UPDATE runflow_schema SET sequence_floor = "
    f"max(sequence_floor, ifnull((SELECT max(sequence) FROM {_JOURNAL}), 0)) "
    f"WHERE EXISTS (SELECT 1 FROM {_RUNS} WHERE id = ?)"
)
_DISCARD_JOURNAL = f"{_CHAIN}DELETE FROM {_JOURNAL} WHERE sequence IN (SELECT s FROM chain)"
_JOURNAL_AFTER = (
    f"SELECT {_sql.JOURNAL_COLUMNS} FROM {_JOURNAL} WHERE sequence > ? ORDER BY sequence LIMIT ?"
)

#: Attempts of a write refused by the thread index whose conflicting run then ended.
_BUSY_RETRIES = 3

#: Seconds a writer waits for another connection's write lock before giving up.
DEFAULT_TIMEOUT = 30.0


@typing.final
class SQLiteStore:
    """
    Runs and their journal in one SQLite database file.

    Every write is one transaction (``BEGIN IMMEDIATE``) that stores the run and
    appends its journal entry, in WAL mode with ``synchronous=FULL``: a committed
    transition survives a crash of the process or of the machine. Several threads
    and several processes may share one file; each thread gets its own connection.
    The threads of one store that write at once share a transaction and its sync
    (group commit; each change keeps its own outcome); processes queue on SQLite's
    lock for up to ``timeout`` seconds.

    Args:
        path: The database file (created with the schema on first use), or
            ``":memory:"`` for a private in-memory database (one connection, shared
            by this store's threads under a lock).
        timeout: Seconds a write waits for the database lock (``busy_timeout``).

    Raises:
        runflow.StoreError: the file cannot be opened, is not a runflow database,
            or holds a schema written by a newer runflow.

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._path = os.fspath(path)
        self._memory = self._path in {":memory:", ""}
        self._timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.RLock()  # the connection list; all access in :memory:
        self._closed = False
        self._pid = os.getpid()
        self._shared: sqlite3.Connection | None = None
        self._cache = _sql.RecordCache()
        self._known: dict[str, StoredRun] = {}  # see peek()
        self._reset_writers()
        try:
            if self._memory:
                self._shared = self._connect()
            self._create_schema()
        except BaseException:
            self.close()  # a store that failed to open leaves no connection behind
            raise

    # --- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self._memory:
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path,
                timeout=self._timeout,
                isolation_level=None,  # runflow opens and ends every transaction itself
                check_same_thread=False,  # close() may run on another thread
                cached_statements=64,
            )
        except sqlite3.Error as exc:
            raise self._cannot_open(exc) from exc
        try:
            self._set_up(conn)
        except BaseException as exc:
            conn.close()  # never handed out: closed here, or by nobody
            if isinstance(exc, sqlite3.Error):
                raise self._cannot_open(exc) from exc
            raise
        with self._lock:
            self._connections.append(conn)
        return conn

    def _cannot_open(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"cannot open the SQLite store {self._path}: {exc}", url=self.url)

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """A new connection's settings: busy timeout, WAL mode, full sync."""
        conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        if not self._memory:
            mode = self._wal(conn)
            if str(mode).lower() != "wal":  # pragma: no cover - exotic filesystems
                msg = f"SQLite could not switch {self._path} to WAL mode (got {mode!r})"
                raise StoreError(msg, url=self.url)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = OFF")

    def _wal(self, conn: sqlite3.Connection) -> object:
        """
        Switch to WAL mode. On a new file another process may be doing the same, or
        creating the tables: SQLite then says "locked" at once, without waiting on
        the busy timeout, so this waits and retries for up to ``timeout`` seconds.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _conn(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            if self._closed:
                msg = f"the SQLite store {self._path} is closed"
                raise StoreError(msg, url=self.url)
            if self._pid != os.getpid():  # a forked child: never reuse the parent's handles
                self._pid = os.getpid()
                self._connections = []
                self._local = threading.local()
                self._reset_writers()
            conn = self._connect()
            self._local.conn = conn
        return conn

    # --- writes: group commit ----------------------------------------------------------

    def _reset_writers(self) -> None:
        """The group-commit state (fresh in a forked child: no parent thread leads there)."""
        self._mutex = threading.Lock()
        self._queue: list[_Job] = []  # waiting writes, oldest first
        self._leader: int | None = None  # the thread that holds the write turn

    def _join(self, job: _Job) -> None:
        """
        Queue ``job`` and return when it is done (another thread committed it) or
        when this thread holds the write turn (``job.done`` still False; the job
        then is out of the queue).
        """
        me = job.thread
        with self._mutex:
            if self._leader is None:  # then nobody waits either
                self._leader = me
                return
            if self._leader == me:
                msg = f"SQLite store {self._path}: a write inside a write of the same thread"
                raise StoreError(msg, url=self.url)
            wake = job.wake = threading.Lock()
            wake.acquire()
            self._queue.append(job)
        try:
            wake.acquire()  # released once: the job is done, or the turn is this thread's
        except BaseException:  # an interrupt (a signal) while waiting
            with self._mutex:
                if job in self._queue:  # not taken: it will never be written
                    self._queue.remove(job)
                    raise
                handed = self._leader == me and not job.done
            if handed:  # pass the turn on, or the other writers would wait forever
                self._hand_over([], job)
            raise  # taken by a leader: it is written or not, as that commit goes

    def _hand_over(self, batch: list[_Job], own: _Job) -> None:
        """Mark ``batch`` done, pass the turn to the oldest waiting write, wake the batch."""
        with self._mutex:
            for job in batch:
                job.done = True
            following = self._queue.pop(0) if self._queue else None
            self._leader = None if following is None else following.thread
        if following is not None and following.wake is not None:
            following.wake.release()  # first: the next commit waits on nobody
        for job in batch:
            if job is not own and job.wake is not None:
                job.wake.release()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """
        One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on
        error), alone: it holds the write turn, so no group commit runs meanwhile.
        """
        if self._shared is not None:
            with self._lock:
                yield from self._transaction(self._shared)
            return
        conn = self._conn()
        turn = _Job(None, ())
        self._join(turn)
        try:
            yield from self._transaction(conn)
        finally:
            self._hand_over([turn], turn)

    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._error("begin a write", exc) from exc
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # pragma: no cover - disk full, I/O error
            conn.rollback()
            raise self._error("commit", exc) from exc

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            if self._shared is not None:
                with self._lock:
                    return fn(self._shared)
            return fn(self._conn())
        except sqlite3.OperationalError as exc:
            raise self._error("read", exc) from exc

    def _apply(self, fn: Callable[..., _T], *args: Any) -> _T:
        """
        ``fn(conn, *args)`` in a write transaction, committed (synced) before this
        returns; its exception, if it raises, with its changes rolled back.

        Group commit: the threads of this store that write at the same time share
        one transaction and one sync. The first to find no writer leads: it applies
        its change and every change waiting (``fn`` must write nothing when it
        raises a refusal: a lost compare-and-set, a constraint), commits once, and
        wakes the others, each of which returns its own result only after that
        commit. Changes that arrive during the commit wait for the next leader, to
        whom the leader hands the turn.
        """
        if self._shared is not None:
            with self._lock:
                return self._apply_alone(self._shared, fn, args)
        conn = self._conn()
        job = _Job(fn, args)
        self._join(job)
        if not job.done:  # this thread leads: commit its change and the waiting ones
            batch = [job]
            try:
                self._commit_batch(conn, batch)
            finally:
                self._hand_over(batch, job)
        if job.error is not None:
            raise job.error
        return typing.cast("_T", job.result)

    def _apply_alone(
        self, conn: sqlite3.Connection, fn: Callable[..., _T], args: tuple[Any, ...]
    ) -> _T:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._error("begin a write", exc) from exc
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.rollback()
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # pragma: no cover - disk full, I/O error
            conn.rollback()
            raise self._error("commit", exc) from exc
        return result

    def _take(self, batch: list[_Job], limit: int) -> list[_Job]:
        """Move up to ``limit`` waiting changes (not whole transactions) into ``batch``."""
        taken: list[_Job] = []
        if not self._queue:  # a hint read without the lock: a later arrival gets the turn
            return taken
        with self._mutex:
            rest: list[_Job] = []
            for job in self._queue:
                if job.fn is not None and len(taken) < limit:
                    taken.append(job)
                else:
                    rest.append(job)
            self._queue = rest
        batch.extend(taken)
        return taken

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """
        One transaction of waiting changes, committed once; each change taken into
        ``batch`` gets its result or its exception.

        The leader applies its own change, then the ones waiting, then the ones
        that arrived meanwhile, until none waits or the batch is full, and commits. A
        change that is refused (a lost compare-and-set, a busy thread, a taken id)
        has written nothing (see :func:`_commit` and :func:`_insert`), so the others
        stay in the transaction. Any other error rolls the whole batch back: the
        change that raised gets its exception, the others a ``StoreError``.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # the lock stayed taken: only ours fails
            for job in batch:
                job.error = self._error("begin a write", exc)
            return
        failing: _Job | None = None
        try:
            taken = batch[:]  # the leader's own change first
            while taken:
                for job in taken:
                    failing = job
                    try:
                        job.result = _run(job, conn)
                    except (_LostError, sqlite3.IntegrityError) as exc:
                        job.error = exc  # refused: it wrote nothing
                taken = self._take(batch, _MAX_BATCH - len(batch))
            failing = None
            conn.execute("COMMIT")
        except BaseException as exc:  # an I/O error, a failed commit, an interrupt
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            reason = f"{type(exc).__name__}: {exc}"
            for job in batch:
                job.result = None
                job.error = StoreError(
                    f"SQLite store {self._path}: a write failed and was rolled back ({reason})",
                    url=self.url,
                )
            if not isinstance(exc, Exception):  # the others fail, the leader re-raises it
                raise
            if failing is not None:
                failing.error = exc

    def _error(self, what: str, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"SQLite store {self._path}: cannot {what}: {exc}", url=self.url)

    def _create_schema(self) -> None:
        with self._write() as conn:
            try:
                rows = conn.execute("SELECT version, runflow FROM runflow_schema").fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise self._error("read the schema version", exc) from exc
                rows = []
            except sqlite3.DatabaseError as exc:  # not a database at all
                raise self._error("read the schema version", exc) from exc
            missing = _sql.check_version(rows, f"SQLite database {self._path}")
            try:
                for statement in _sql.sqlite_ddl(_sql.Tables()):
                    conn.execute(statement)
            except sqlite3.DatabaseError as exc:
                raise self._error("create the runflow tables", exc) from exc
            if missing:
                conn.execute(
                    "INSERT INTO runflow_schema (version, runflow) VALUES (?, ?)",
                    (SCHEMA_VERSION, _sql.runflow_version()),
                )

    # --- the protocol ------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file (``":memory:"`` for a private in-memory database)."""
        return self._path

    @property
    def url(self) -> str:
        """The store as an :func:`runflow.stores.open_store` URL."""
        if self._memory:
            return "sqlite://:memory:"
        return "sqlite:///" + self._path

    def get(self, run_id: str) -> StoredRun | None:
        """The stored run, or None."""
        if self._shared is None:
            try:
                row = self._conn().execute(_GET, (run_id,)).fetchone()
            except sqlite3.OperationalError as exc:
                raise self._error("read", exc) from exc
        else:
            row = self._read(lambda c: c.execute(_GET, (run_id,)).fetchone())
        if row is None:
            self._known.pop(run_id, None)
            return None
        stored = _sql.stored_from_row(row, self._cache)
        self._remember(stored)
        return stored

    def peek(self, run_id: str) -> StoredRun | None:
        """
        The run as this store last wrote or read it, without reading the database
        (None if it knows none). Another process may have changed the run since:
        the engine takes it as a guess, which the compare-and-set of its commit
        checks, and reads the run afresh before it refuses anything made on it.
        """
        return self._known.get(run_id)

    def _remember(self, stored: StoredRun) -> None:
        known = self._known
        run_id = stored.record.id
        if len(known) >= _KNOWN and run_id not in known:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):  # a racing thread
                del known[next(iter(known))]
        known[run_id] = stored

    def insert(self, run: StoredRun, change: Change) -> int:
        """
        Store a new run and journal its first entry; return the entry's sequence.

        Raises:
            runflow.ThreadBusyError: ``run`` is local and active, and its thread
                already has a local active run.
            ValueError: the id is taken.
        """
        record = run.record
        text, wire = self._cache.encode(record)
        snapshot = text if change.run is record else _sql.record_json(change.run)
        tail = (
            record.thread_id,
            record.assistant_id,
            record.created_at,
            int(run.observed),
            _active(run),
            *_sql.run_params(run, text),
        )
        for _ in range(_BUSY_RETRIES):
            try:
                sequence = self._apply(
                    _insert, record.id, _sql.journal_params(change, snapshot), tail
                )
                self._cache.put(record.id, text, record, wire)
                self._remember(run)
            except sqlite3.IntegrityError as exc:
                if f"{_RUNS}.id" in str(exc):
                    msg = f"a run with id {record.id!r} is already stored"
                    raise ValueError(msg) from None
                busy = self._busy(run, exc)
                if busy is not None:
                    raise busy from None
                continue  # the thread's active run ended meanwhile: try again
            return sequence
        raise ThreadBusyError(record.thread_id, "")  # pragma: no cover - a thread churning

    def _busy(self, run: StoredRun, exc: sqlite3.IntegrityError) -> Exception | None:
        """The error for a unique violation, or None if the thread is free again."""
        if f"{_RUNS}.thread_id" not in str(exc):  # pragma: no cover - no other constraint
            return self._error("write", exc)
        thread_id = run.record.thread_id
        row = self._read(lambda c: c.execute(_BUSY, (thread_id, run.record.id)).fetchone())
        return None if row is None else ThreadBusyError(thread_id, row[0])

    def commit(self, old: StoredRun, new: StoredRun, change: Change | None) -> int | None:
        """
        Replace ``old`` by ``new`` if the stored version is still ``old.version``,
        journaling ``change`` in the same transaction.

        Returns:
            The journal sequence of ``change`` (0 when ``change`` is None), or None
            when the compare-and-set lost.

        Raises:
            runflow.ThreadBusyError: ``new`` is local and active on a thread that
                has another local active run.
        """
        text, wire = self._cache.encode(
            new.record, old.record, None if change is None else change.changes
        )
        for _ in range(_BUSY_RETRIES):
            try:
                sequence = self._apply(_commit, old, new, change, text)
            except _LostError:
                self._known.pop(old.record.id, None)
                return None
            except sqlite3.IntegrityError as exc:
                busy = self._busy(new, exc)
                if busy is not None:
                    raise busy from None
            except BaseException:
                self._known.pop(old.record.id, None)
                raise
            else:
                self._cache.put(new.record.id, text, new.record, wire)
                self._remember(new)
                return sequence
        raise ThreadBusyError(new.record.thread_id, "")  # pragma: no cover - a thread churning

    def claim(self, *, limit: int, now: int, step: ClaimStep) -> list[tuple[StoredRun, int]]:
        """
        In one ``BEGIN IMMEDIATE`` transaction, take up to ``limit`` local ``queued``
        runs, longest waiting first (``since``, then ``created_at``, then id), store
        ``step(run)`` for each with its journal entry, and return the claimed runs
        and their sequences. If ``step`` raises, nothing is claimed.
        """
        del now  # the queue order needs no clock; the step stamps the runs
        out: list[tuple[StoredRun, int]] = []
        written: list[tuple[RunObject, str, dict[str, Any]]] = []
        if limit <= 0:
            return out
        try:
            with self._write() as conn:
                for row in conn.execute(_CLAIM, (limit,)).fetchall():
                    old = _sql.stored_from_row(row, self._cache)
                    new, change = step(old)
                    text, wire = self._cache.encode(new.record, old.record, change.changes)
                    try:
                        sequence = _commit(conn, old, new, change, text)
                    except _LostError:  # pragma: no cover - we hold the write lock
                        msg = f"run {old.record.id} changed under the write lock"
                        raise StoreError(msg, url=self.url) from None
                    out.append((new, sequence))
                    written.append((new.record, text, wire))
        except sqlite3.IntegrityError as exc:  # pragma: no cover - a step that breaks R1.3
            raise self._error("claim", exc) from exc
        for record, text, wire in written:
            self._cache.put(record.id, text, record, wire)
        for new, _ in out:
            self._remember(new)
        return out

    def due(self, now: int, limit: int) -> list[str]:
        """Ids of local active runs whose ``expires_at`` is at or before ``now``."""
        return self._ids(_DUE, (now, limit))

    def lapsed(self, now: int, limit: int) -> list[str]:
        """Ids of local ``in_progress`` runs whose lease lapsed at or before ``now``."""
        return self._ids(_LAPSED, (now, limit))

    def stuck(self, status: str, since: int, limit: int) -> list[str]:
        """Ids of local runs in ``status`` since ``since`` or earlier."""
        if status == "cancelling":  # what sweeps ask: an index search
            return self._ids(_STUCK_CANCELLING, (since, limit))
        return self._ids(_STUCK, (str(status), since, limit))

    def _ids(self, sql: str, params: tuple[Any, ...]) -> list[str]:
        rows = self._read(lambda c: c.execute(sql, params).fetchall())
        return [r[0] for r in rows]

    def history(self, run_id: str) -> list[JournalEntry]:
        """The journal of one run, oldest first."""
        rows = self._read(lambda c: c.execute(_HISTORY, (run_id,)).fetchall())
        return [_sql.entry_from_row(r) for r in rows]

    def journal(self, after: int, limit: int) -> list[JournalEntry]:
        """
        Journal entries with a sequence above ``after``, in order. Sequences follow
        commit order (SQLite has one writer at a time), so reading on from the last
        sequence seen misses nothing.
        """
        rows = self._read(lambda c: c.execute(_JOURNAL_AFTER, (after, limit)).fetchall())
        return [_sql.entry_from_row(r) for r in rows]

    def runs(
        self,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredRun]:
        """Stored runs by creation order (or newest first), optionally filtered."""
        where: list[str] = []
        params: list[Any] = []
        if thread_id is not None:
            where.append("thread_id = ?")
            params.append(thread_id)
        if status is not None:
            where.append("status = ?")
            params.append(str(status))
        sql = f"SELECT {_COLS} FROM {_RUNS}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY position DESC" if newest_first else " ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._read(lambda c: c.execute(sql, params).fetchall())
        return [_sql.stored_from_row(r, self._cache) for r in rows]

    def discard(self, run_id: str) -> None:
        """Forget a run and its journal (no error if unknown)."""
        with self._write() as conn:
            conn.execute(_DISCARD_FLOOR, (run_id,))  # sequences never go back
            conn.execute(_DISCARD_JOURNAL, (run_id,))
            conn.execute(f"DELETE FROM {_RUNS} WHERE id = ?", (run_id,))
        self._cache.drop(run_id)
        self._known.pop(run_id, None)

    def close(self) -> None:
        """Close every connection this store opened (idempotent)."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
            self._shared = None
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self._path}>"


def _lastrowid(cursor: sqlite3.Cursor) -> int:
    rowid = cursor.lastrowid
    if rowid is None:  # pragma: no cover - an INSERT always sets it
        msg = "SQLite returned no rowid for a journal insert"
        raise StoreError(msg)
    return rowid


def _insert(
    conn: sqlite3.Connection, run_id: str, entry: tuple[Any, ...], tail: tuple[Any, ...]
) -> int:
    """
    A run's row, then its first journal entry at the row's ``position``; a refused
    row (the id taken, the thread busy) writes nothing.
    """
    sequence = _lastrowid(conn.execute(_INSERT_RUN, (run_id, *tail)))
    conn.execute(_INSERT_FIRST, (sequence, *entry))
    return sequence


#: Runs a store remembers as it last wrote or read them (see SQLiteStore.peek).
_KNOWN = 4096
#: The most changes one group commit takes (the rest wait for the next).
_MAX_BATCH = 64


def _run(job: _Job, conn: sqlite3.Connection) -> Any:
    fn = job.fn
    if fn is None:  # pragma: no cover - whole transactions never enter a batch
        msg = "a whole transaction in a group commit"
        raise StoreError(msg)
    return fn(conn, *job.args)


class _Job:
    """One change waiting for a group commit: what to apply, then its outcome."""

    __slots__ = ("args", "done", "error", "fn", "result", "thread", "wake")

    def __init__(self, fn: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
        self.fn = fn  # None: a whole transaction of its own (SQLiteStore._write)
        self.args = args
        self.thread = threading.get_ident()
        self.wake: threading.Lock | None = None  # released when done or when it leads
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


class _LostError(Exception):
    """The compare-and-set lost: roll the transaction (and its journal entry) back."""


_ACTIVE_STATUSES: frozenset[str] = frozenset(ACTIVE_VALUES)
#: The UPDATE of each combination of changed indexed columns (bits: see _commit).
_UPDATES: dict[int, str] = {}


def _update_sql(mask: int) -> str:
    """
    The compare-and-set UPDATE that sets the unindexed columns and only the indexed
    ones in ``mask``: SQLite rewrites the entries of an index whose columns (or
    WHERE columns) an UPDATE sets, even to the same value, and every page it
    dirties is one more page written and synced per commit.
    """
    sql = _UPDATES.get(mask)
    if sql is None:
        sets = [
            (
                "version = ?, worker = ?, accrued_prompt = ?, accrued_completion = ?, "
                "accrued_total = ?, record = ?"
            )
        ]
        sets.extend(
            f"{column} = ?"
            for bit, column in enumerate((*_sql.SQLITE_INDEXED, "last_sequence"))
            if mask & (1 << bit)
        )
        sql = f"UPDATE {_RUNS} SET {', '.join(sets)} WHERE id = ? AND version = ?"
        _UPDATES[mask] = sql
    return sql


def _active(stored: StoredRun) -> int:
    """The ``active`` column: 1 for a local active run (the thread lock holds it)."""
    return int(not stored.observed and stored.record.status.value in _ACTIVE_STATUSES)


def _changed_indexed(old: StoredRun, new: StoredRun, params: list[Any]) -> int:
    """Append the new values of the indexed columns that changed; return their bits."""
    before, after = old.record, new.record
    mask = 0
    if before.status is not after.status:
        mask = 1
        params.append(after.status.value)
    if old.since != new.since:
        mask |= 2
        params.append(new.since)
    if before.expires_at != after.expires_at:
        mask |= 4
        params.append(after.expires_at)
    if old.lease_until != new.lease_until:
        mask |= 8
        params.append(new.lease_until)
    if old.observed != new.observed:
        mask |= 16
        params.append(int(new.observed))
    if mask & 17:  # the status or observed changed: maybe the thread lock
        active = _active(new)
        if active != _active(old):
            mask |= 32
            params.append(active)
    return mask


def _commit(
    conn: sqlite3.Connection, old: StoredRun, new: StoredRun, change: Change | None, text: str
) -> int:
    """
    The journal entry and the compare-and-set, inside an open write transaction;
    the entry's sequence (0 without one). A refused change writes nothing: its
    entry is deleted again, so a group commit goes on with the other changes.

    Raises:
        _LostError: the stored version is not ``old.version``.
        sqlite3.IntegrityError: ``new`` would take a busy thread's lock.
    """
    before, after = old.record, new.record
    accrued = new.accrued
    params: list[Any] = [new.version, new.worker]
    if accrued is None:
        params += (None, None, None, text)
    else:
        params += (accrued.prompt_tokens, accrued.completion_tokens, accrued.total_tokens, text)
    mask = _changed_indexed(old, new, params)
    sequence = 0
    if change is not None:
        snapshot = text if change.run is after else _sql.record_json(change.run)
        row = _sql.journal_params(change, snapshot)
        sequence = _lastrowid(conn.execute(_INSERT_NEXT, (change.run_id, *row)))
        mask |= 64
        params.append(sequence)
    params += (before.id, old.version)
    try:
        updated = conn.execute(_update_sql(mask), params).rowcount
    except sqlite3.IntegrityError:  # the thread is busy: take the entry back
        if sequence:
            conn.execute(_DROP_ENTRY, (sequence,))
        raise
    if updated == 0:  # the compare-and-set lost: take the entry back
        if sequence:
            conn.execute(_DROP_ENTRY, (sequence,))
        raise _LostError
    return sequence
