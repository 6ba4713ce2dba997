"""What the SQL stores add to the contract: schema, versions, indexes, durability."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from store_workers import T0, claim_step, create, move, new_run, postgres_dsn, sqlite_store

from runflow import Engine, RunStatus, StoreError
from runflow.stores import Store, _sql
from runflow.stores._base import SCHEMA_VERSION
from runflow.testing import FakeClock

S = RunStatus
SQL = pytest.mark.parametrize("target", ["sqlite", "postgres"], indirect=True)


def _raw_sql(target: tuple[str, str], sql: str) -> list[tuple[object, ...]]:
    """Run one statement on the test database, outside runflow."""
    kind, where = target
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(where)) as conn, conn:
            return conn.execute(sql).fetchall()
    import psycopg  # noqa: PLC0415

    dsn, _, schema = where.partition("|")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        cur = conn.execute(sql)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


@SQL
class TestSchema:
    def test_created_on_first_use_with_its_version(
        self, store: Store, target: tuple[str, str]
    ) -> None:
        """Opening a new database creates the runflow_ tables and records the version."""
        rows = _raw_sql(target, "SELECT version, runflow FROM runflow_schema")
        assert len(rows) == 1
        assert rows[0][0] == SCHEMA_VERSION

    def test_reopening_keeps_data_and_one_version_row(
        self, open_store: Callable[..., Store], target: tuple[str, str]
    ) -> None:
        """A second store on the same database sees the runs; the schema is not redone."""
        first = open_store()
        run, _ = create(first, new_run("run_a"))
        first.close()
        second = open_store()
        assert second.get("run_a") == run
        assert len(_raw_sql(target, "SELECT * FROM runflow_schema")) == 1

    def test_newer_schema_is_refused(
        self, open_store: Callable[..., Store], target: tuple[str, str]
    ) -> None:
        """A database written by a newer runflow raises StoreError naming that version."""
        open_store().close()
        _raw_sql(target, "UPDATE runflow_schema SET version = 99, runflow = '9.9.0'")
        with pytest.raises(StoreError, match=r"schema version 99, written by runflow 9\.9\.0"):
            open_store()

    def test_documented_indexes_exist(self, store: Store, target: tuple[str, str]) -> None:
        """The indexes the docs list are there."""
        if target[0] == "sqlite":
            rows = _raw_sql(target, "SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            rows = _raw_sql(
                target, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            )
        names = {str(r[0]) for r in rows}
        assert {
            "runflow_runs_thread_active",
            "runflow_runs_queue",
            "runflow_runs_due",
            "runflow_runs_lease",
            "runflow_runs_cancelling",
            "runflow_runs_thread",
        } <= names
        if target[0] == "sqlite":  # position is the rowid; histories walk a chain
            assert "runflow_runs_id" in names
            assert not {"runflow_runs_position", "runflow_journal_run"} & names
        else:
            assert {"runflow_runs_position", "runflow_journal_run"} <= names


@SQL
class TestSQLOnly:
    def test_claim_breaks_ties_by_creation_then_id(self, store: Store) -> None:
        """Runs that entered the queue in one second are claimed by (created_at, id)."""
        create(store, new_run("run_c"), since=T0 + 5)
        create(store, new_run("run_b", created_at=T0 + 1), since=T0 + 1)
        create(store, new_run("run_a", created_at=T0 + 2), since=T0 + 1)
        create(store, new_run("run_z", created_at=T0 + 1), since=T0 + 1)
        got = store.claim(limit=4, now=T0 + 10, step=claim_step("w1", T0 + 10))
        assert [r.record.id for r, _ in got] == ["run_b", "run_z", "run_a", "run_c"]

    def test_stored_records_are_their_whole_encoding(
        self, store: Store, target: tuple[str, str]
    ) -> None:
        """
        A record encoded by patching the wire dict of the run before it is exactly
        what encoding the whole record gives, on every path of the lifecycle.
        """
        clock = FakeClock(T0)
        engine = Engine(clock=clock, store=store, lease=30)
        tool = {"type": "function", "function": {"name": "get_weather"}}
        call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"},
        }

        def new(thread: str, **kw: Any) -> str:
            return engine.create(thread_id=thread, assistant_id="a", tools=[tool], **kw).id

        ids = [new(f"t{i}") for i in range(6)]
        (claimed,) = engine.claim("w1")  # the longest waiting (a tie: by id), leased
        ids.remove(claimed.id)
        ids = [claimed.id, *ids, new("t6", max_completion_tokens=300)]
        engine.require_action(ids[0], [call], worker="w1")
        engine.submit_tool_outputs(ids[0], [{"tool_call_id": "c1", "output": "ok"}])
        engine.start(ids[0])
        engine.complete(ids[0], usage={"prompt_tokens": 3, "completion_tokens": 4})
        engine.modify(ids[0], metadata={"k": "v"})
        engine.start(ids[1])
        engine.cancel(ids[1])
        engine.finish_cancel(ids[1])
        engine.start(ids[2])
        engine.fail(ids[2], code="server_error", message="boom")
        engine.start(ids[3])
        engine.cancel(ids[3])
        engine.complete(ids[3])
        engine.start(ids[6])
        engine.add_usage(ids[6], prompt_tokens=10, completion_tokens=5)
        engine.add_usage(ids[6], prompt_tokens=10, completion_tokens=500)  # over budget
        engine.start(ids[4])
        clock.advance(601)
        engine.sweep()  # ids[4] (in_progress) and ids[5] (queued) expire
        statuses = set()
        for run_id in ids:
            run = engine.get(run_id)
            statuses.add(run.status)
            ((stored,),) = _raw_sql(
                target,
                f"SELECT record FROM runflow_runs WHERE id = '{run_id}'",  # noqa: S608 - our ids
            )
            assert isinstance(stored, str | dict)
            if isinstance(stored, str):
                assert stored == _sql.record_json(run)
                stored = json.loads(stored)
            assert stored == run.to_dict()
        assert statuses == set(RunStatus) - {
            S.QUEUED,
            S.IN_PROGRESS,
            S.REQUIRES_ACTION,
            S.CANCELLING,
        }

    def test_journal_keeps_the_change_snapshot(self, store: Store) -> None:
        """The journal stores the change's own snapshot of the run."""
        run, _ = create(store, new_run("run_a"))
        new, change = move(run, S.IN_PROGRESS)
        snapshot = new_run("run_a", status=S.IN_PROGRESS, model="other")
        assert store.commit(run, new, change._replace(run=snapshot)) is not None
        assert store.history("run_a")[-1].run == snapshot
        assert store.get("run_a") == new

    def test_claim_with_other_snapshots(self, store: Store) -> None:
        """A claim step may journal a snapshot other than the stored record."""
        create(store, new_run("run_a"))
        step = claim_step("w1", T0 + 1)

        def other(old):  # type: ignore[no-untyped-def]
            new, change = step(old)
            return new, change._replace(run=new_run("run_a", model="snap"))

        ((claimed, _),) = store.claim(limit=1, now=T0 + 1, step=other)
        assert store.history("run_a")[-1].run.model == "snap"
        assert store.get("run_a") == claimed

    def test_insert_with_another_snapshot(self, store: Store) -> None:
        """insert() also journals the change's own snapshot."""
        from runflow.stores import Change, StoredRun  # noqa: PLC0415

        record = new_run("run_a")
        snapshot = new_run("run_a", model="snap")
        change = Change("run_a", T0, "create", None, S.QUEUED, None, {}, snapshot)
        store.insert(StoredRun(record, since=T0), change)
        assert store.get("run_a").record == record  # type: ignore[union-attr]
        assert store.history("run_a")[0].run == snapshot

    def test_sequences_never_go_back_after_discarding_the_newest(
        self, open_store: Callable[..., Store]
    ) -> None:
        """Discarding the runs that hold the highest sequences frees no sequence, even
        after reopening: the next entry is still above every entry ever written."""
        store = open_store()
        create(store, new_run("run_a"))
        run_b, _ = create(store, new_run("run_b"))
        started, change = move(run_b, S.IN_PROGRESS)
        top = store.commit(run_b, started, change)
        assert top is not None
        store.discard("run_b")
        _, after_discard = create(store, new_run("run_c"))
        assert after_discard > top
        store.discard("run_a")
        store.discard("run_c")  # the journal is empty now
        store.close()
        again = open_store()
        _, after_reopen = create(again, new_run("run_d"))
        assert after_reopen > after_discard
        assert [e.sequence for e in again.journal(0, 10)] == [after_reopen]

    def test_histories_of_interleaved_runs(self, store: Store) -> None:
        """Each run's history holds its own entries, in order, however runs interleave;
        discarding one run leaves the others' histories whole."""
        runs = {rid: create(store, new_run(rid))[0] for rid in ("run_a", "run_b", "run_c")}
        for status in (S.IN_PROGRESS, S.REQUIRES_ACTION, S.QUEUED, S.IN_PROGRESS, S.COMPLETED):
            for rid, old in list(runs.items()):
                new, change = move(old, status)
                assert store.commit(old, new, change) is not None
                runs[rid] = new
        store.discard("run_b")
        for rid in ("run_a", "run_c"):
            history = store.history(rid)
            assert [e.run_id for e in history] == [rid] * 6
            assert [e.to_status for e in history] == [
                S.QUEUED,
                S.IN_PROGRESS,
                S.REQUIRES_ACTION,
                S.QUEUED,
                S.IN_PROGRESS,
                S.COMPLETED,
            ]
            sequences = [e.sequence for e in history]
            assert sequences == sorted(set(sequences))
        assert store.history("run_b") == []
        assert {e.run_id for e in store.journal(0, 100)} == {"run_a", "run_c"}

    def test_runs_survive_reopening(self, open_store: Callable[..., Store]) -> None:
        """Everything written is there after the store is closed and opened again."""
        store = open_store()
        run, _ = create(store, new_run("run_a"))
        started, change = move(run, S.IN_PROGRESS, worker="w1", lease_until=T0 + 30)
        store.commit(run, started, change)
        history = store.history("run_a")
        store.close()
        again = open_store()
        assert again.get("run_a") == started
        assert again.history("run_a") == history


class TestSQLite:
    def test_durability_settings(self, tmp_path: Path) -> None:
        """WAL mode and synchronous=FULL on every connection."""
        store = sqlite_store(str(tmp_path / "runs.db"))
        conn = store._conn()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        store.close()

    def test_queries_use_the_partial_indexes(self, tmp_path: Path) -> None:
        """The claim, due, lapsed and thread-lock queries are index searches, not scans."""
        from runflow.stores import _sqlite  # noqa: PLC0415

        store = sqlite_store(str(tmp_path / "runs.db"))
        conn = store._conn()  # type: ignore[attr-defined]
        plans = {
            "queue": conn.execute(f"EXPLAIN QUERY PLAN {_sqlite._CLAIM}", (1,)).fetchall(),
            "due": conn.execute(f"EXPLAIN QUERY PLAN {_sqlite._DUE}", (1, 1)).fetchall(),
            "lease": conn.execute(f"EXPLAIN QUERY PLAN {_sqlite._LAPSED}", (1, 1)).fetchall(),
            "thread_active": conn.execute(
                f"EXPLAIN QUERY PLAN {_sqlite._BUSY}", ("t", "r")
            ).fetchall(),
            "cancelling": conn.execute(
                f"EXPLAIN QUERY PLAN {_sqlite._STUCK_CANCELLING}", (1, 1)
            ).fetchall(),
        }
        for name, plan in plans.items():
            text = " ".join(str(row[-1]) for row in plan)
            assert f"runflow_runs_{name}" in text, (name, text)
        store.close()

    def test_thread_lock_column_is_checked_by_the_database(self, tmp_path: Path) -> None:
        """The thread lock's ``active`` column cannot disagree with status and observed:
        a CHECK refuses a write that would leave an ended run locking its thread."""
        path = str(tmp_path / "runs.db")
        store = sqlite_store(path)
        create(store, new_run("run_a", thread_id="thread_t"))
        with contextlib.closing(sqlite3.connect(path)) as conn:
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                conn.execute("UPDATE runflow_runs SET status = 'completed' WHERE id = 'run_a'")
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                conn.execute("UPDATE runflow_runs SET observed = 1 WHERE id = 'run_a'")
        store.close()

    def test_the_thread_lock_follows_activity_not_status(self, tmp_path: Path) -> None:
        """Moving between active statuses keeps the lock; ending the run frees it."""
        from runflow import ThreadBusyError  # noqa: PLC0415

        path = str(tmp_path / "runs.db")
        store = sqlite_store(path)
        run, _ = create(store, new_run("run_a", thread_id="thread_t"))
        for status in (S.IN_PROGRESS, S.REQUIRES_ACTION, S.QUEUED, S.CANCELLING):
            new, change = move(run, status)
            assert store.commit(run, new, change) is not None
            run = new
            with pytest.raises(ThreadBusyError, match="run_a"):
                create(store, new_run("run_b", thread_id="thread_t"))
        new, change = move(run, S.CANCELLED)
        assert store.commit(run, new, change) is not None
        create(store, new_run("run_b", thread_id="thread_t"))
        rows = _raw_sql(("sqlite", path), "SELECT id, active FROM runflow_runs ORDER BY id")
        assert rows == [("run_a", 0), ("run_b", 1)]
        store.close()

    def test_a_transition_writes_few_pages(self, tmp_path: Path) -> None:
        """
        A transition between active statuses dirties (and syncs) only the pages it
        must: the run's row, the partial indexes the run leaves or enters, and the
        journal's last page. Regression guard: about 9 pages a transition before the
        thread lock had its own column, the journal lost its per-run index and
        AUTOINCREMENT, and updates set only the indexed columns that changed.
        """
        path = tmp_path / "runs.db"
        store = sqlite_store(str(path))
        conn = store._conn()  # type: ignore[attr-defined]
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        page = conn.execute("PRAGMA page_size").fetchone()[0] + 24  # a WAL frame
        wal = Path(f"{path}-wal")
        runs = [create(store, new_run(f"run_{i}"))[0] for i in range(40)]
        before = wal.stat().st_size
        count = 0
        for status in (S.IN_PROGRESS, S.REQUIRES_ACTION, S.QUEUED, S.IN_PROGRESS, S.COMPLETED):
            for i, old in enumerate(runs):
                new, change = move(old, status)
                assert store.commit(old, new, change) is not None
                runs[i] = new
                count += 1
        frames = (wal.stat().st_size - before) / page / count
        assert frames < 6, frames
        store.close()

    def test_threads_get_their_own_connections(self, tmp_path: Path) -> None:
        """Each thread uses a connection of its own; close() closes them all."""
        import threading  # noqa: PLC0415

        store = sqlite_store(str(tmp_path / "runs.db"))
        seen: list[object] = []

        def grab() -> None:
            seen.append(store._conn())  # type: ignore[attr-defined]

        threads = [threading.Thread(target=grab) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(c) for c in seen}) == 3
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.get("run_a")

    def test_memory_database_is_shared_by_threads(self) -> None:
        """':memory:' is one private database for all of the store's threads."""
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        store = sqlite_store(":memory:")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: create(store, new_run(f"run_{i}")), range(20)))
        assert len(store.runs()) == 20
        assert store.claim(limit=50, now=T0, step=claim_step("w", T0))
        store.close()

    @pytest.mark.parametrize("failure", ["not a database", "newer schema"])
    def test_a_store_that_fails_to_open_closes_its_connections(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
    ) -> None:
        """
        A failed open leaves no connection open: the caller has no store to close
        (Python 3.13 reports such a connection with a ResourceWarning when it is
        collected).
        """
        path = tmp_path / "runs.db"
        if failure == "not a database":
            path.write_bytes(b"this is not a database at all" * 100)
        else:
            sqlite_store(str(path)).close()
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                conn.execute("UPDATE runflow_schema SET version = 99")
        opened: list[sqlite3.Connection] = []
        connect = sqlite3.connect

        def recording(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = connect(*args, **kwargs)
            opened.append(conn)
            return conn

        monkeypatch.setattr(sqlite3, "connect", recording)
        with pytest.raises(StoreError):
            sqlite_store(str(path))
        assert opened
        for conn in opened:
            with pytest.raises(sqlite3.ProgrammingError, match="closed"):
                conn.execute("SELECT 1")

    def test_not_a_database_is_a_store_error(self, tmp_path: Path) -> None:
        """A file that is not SQLite raises StoreError naming the file."""
        bad = tmp_path / "bad.db"
        bad.write_bytes(b"this is not a database at all" * 100)
        with pytest.raises(StoreError, match=r"bad\.db") as info:
            sqlite_store(str(bad))
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)

    def test_unopenable_path_is_a_store_error(self, tmp_path: Path) -> None:
        """A directory as the database path raises StoreError."""
        with pytest.raises(StoreError, match="cannot open the SQLite store"):
            sqlite_store(str(tmp_path))

    def test_locked_database_times_out_with_a_store_error(self, tmp_path: Path) -> None:
        """A writer that cannot get the lock within the timeout raises StoreError."""
        path = tmp_path / "runs.db"
        store = sqlite_store(str(path), timeout=0.2)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                create(store, new_run("run_a"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        create(store, new_run("run_a"))
        store.close()

    def test_opening_a_new_file_waits_for_another_writer(self, tmp_path: Path) -> None:
        """
        Opening a new file while another connection holds it (another process
        creating it) waits for it, as the busy timeout promises, instead of failing
        at once with "database is locked" when switching to WAL mode.
        """
        path = tmp_path / "new.db"
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        blocker.execute("CREATE TABLE other (x)")
        release = threading.Timer(0.3, blocker.execute, args=("COMMIT",))
        release.start()
        try:
            store = sqlite_store(str(path), timeout=10)
        finally:
            release.join()
            blocker.close()
        create(store, new_run("run_a"))
        assert store.get("run_a") is not None
        store.close()

    def test_wal_switch_retries_an_immediate_locked(self, tmp_path: Path) -> None:
        """
        SQLite refuses a lock at once, without the busy handler, where waiting could
        deadlock (two processes opening one new file): the WAL switch retries then.
        """
        store = sqlite_store(str(tmp_path / "runs.db"), timeout=5)

        class Row:  # the cursor of a successful switch
            def fetchone(self) -> tuple[str]:
                return ("wal",)

        class Flaky:
            calls = 0

            def execute(self, sql: str) -> Any:
                self.calls += 1
                if self.calls < 3:
                    raise sqlite3.OperationalError("database is locked")
                return Row()

        conn = Flaky()
        assert store._wal(conn) == "wal"  # type: ignore[arg-type]
        assert conn.calls == 3
        store._timeout = 0.05
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store._wal(type("Locked", (Flaky,), {"calls": -(10**9)})())  # type: ignore[arg-type]
        store.close()


def test_postgres_dsn_is_required_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a DSN the PostgreSQL tests skip locally and fail in CI."""
    monkeypatch.delenv("RUNFLOW_POSTGRES_DSN", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        postgres_dsn()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run"):
        postgres_dsn()
