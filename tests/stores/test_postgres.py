"""PostgreSQL only: connection failures, retries, watch (LISTEN/NOTIFY), the async store."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from store_workers import T0, claim_step, create, move, new_run

from runflow import RunStatus, StoreError, ThreadBusyError
from runflow.stores import JournalEntry
from tests.conftest import schema_exists

psycopg = pytest.importorskip("psycopg")
postgres = pytest.importorskip("runflow.stores.postgres")

S = RunStatus


@pytest.fixture(name="pg")
def _pg(pg_dsn: str, pg_schema: str) -> Iterator[Any]:
    store = postgres.PostgresStore(pg_dsn, schema=pg_schema, retry_for=10.0)
    yield store
    store.close()


@pytest.fixture(name="pg2")
def _pg2(pg_dsn: str, pg_schema: str, pg: Any) -> Iterator[Any]:
    """A second store on the same schema: another process, as far as the server knows."""
    store = postgres.PostgresStore(pg_dsn, schema=pg_schema)
    yield store
    store.close()


def _terminate(dsn: str, application_name: str) -> int:
    """Kill the server processes of every connection with that application name."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


class TestOpening:
    def test_unreachable_server(self, pg_dsn: str) -> None:
        """A server nobody listens on gives a StoreError naming host:port/db."""
        with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/test is unreachable") as info:
            postgres.PostgresStore(
                "postgresql://postgres@127.0.0.1:1/test?password=hunter2", connect_timeout=2
            )
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert "hunter2" not in str(info.value)
        assert "hunter2" not in info.value.url

    def test_missing_database(self, pg_dsn: str) -> None:
        """A database that does not exist is a StoreError with the server's reason."""
        dsn = pg_dsn.rsplit("/", 1)[0] + "/runflow_no_such_db"
        with pytest.raises(StoreError, match="runflow_no_such_db"):
            postgres.PostgresStore(dsn)

    def test_malformed_conninfo(self) -> None:
        """A conninfo libpq cannot parse is a StoreError."""
        with pytest.raises(StoreError, match="not a valid PostgreSQL URL"):
            postgres.PostgresStore("host=x password='unterminated")

    def test_closed_store(self, pg: Any) -> None:
        """Using a closed store is a StoreError."""
        pg.close()
        with pytest.raises(StoreError, match="closed"):
            pg.get("run_a")

    def test_create_false_refuses_a_store_without_tables(self, pg_dsn: str, pg_schema: str) -> None:
        """
        create=False: a schema without runflow's tables (a typo) is a StoreError that
        names it, and nothing is created; with the tables, it opens as usual.
        """
        with pytest.raises(StoreError) as info:
            postgres.PostgresStore(pg_dsn, schema=pg_schema, create=False)
        assert str(info.value) == (
            f"no runflow store at PostgreSQL 127.0.0.1:5432/test in schema {pg_schema!r}: "
            "its tables are missing (a mistyped database or schema?); nothing was created"
        )
        assert not schema_exists(pg_dsn, pg_schema)
        postgres.PostgresStore(pg_dsn, schema=pg_schema).close()  # creates the tables
        existing = postgres.PostgresStore(pg_dsn, schema=pg_schema, create=False)
        assert existing.get("run_a") is None
        existing.close()

    def test_async_create_false(self, pg_dsn: str, pg_schema: str) -> None:
        """The async store refuses the same way, on open."""

        async def go() -> None:
            store = postgres.AsyncPostgresStore(pg_dsn, schema=pg_schema, create=False)
            with pytest.raises(StoreError, match="its tables are missing"):
                await store.open()

        asyncio.run(go())

    def test_repr_and_properties(self, pg: Any, pg_schema: str) -> None:
        """The store shows where it is, never a password."""
        assert pg_schema in repr(pg)
        assert pg.schema == pg_schema


class TestRetries:
    def test_killed_connections_are_retried(self, pg: Any, pg_dsn: str) -> None:
        """After the server drops every connection, the next calls reconnect and succeed."""
        run, _ = create(pg, new_run("run_a"))
        assert _terminate(pg_dsn, "runflow") >= 1
        started, change = move(run, S.IN_PROGRESS)
        assert pg.commit(run, started, change) is not None
        assert pg.get("run_a") == started
        assert len(pg.history("run_a")) == 2

    def test_gives_up_with_a_store_error(self, pg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """When the server stays away past retry_for, a StoreError names it."""

        @contextlib.contextmanager
        def broken() -> Iterator[Any]:
            msg = "connection refused"
            raise psycopg.OperationalError(msg)
            yield  # pragma: no cover

        monkeypatch.setattr(pg, "_connection", broken)
        monkeypatch.setattr(pg, "_retry_for", 0.2)
        with pytest.raises(StoreError, match="unreachable: connection refused") as info:
            pg.get("run_a")
        assert isinstance(info.value.__cause__, psycopg.OperationalError)

    def test_ambiguous_commit_is_not_applied_twice(self, pg: Any) -> None:
        """A commit retried after a lost reply finds its own write and returns its sequence."""
        run, _ = create(pg, new_run("run_a"))
        new, change = move(run, S.IN_PROGRESS)
        sequence = pg.commit(run, new, change)
        again = pg._run(lambda _: postgres._commit_op(pg._s, run, new, change, True))
        assert again == sequence
        assert len(pg.history("run_a")) == 2
        beat = postgres.StoredRun(new.record, new.version + 1, since=new.since)
        assert pg.commit(new, beat, None) == 0
        assert pg._run(lambda _: postgres._commit_op(pg._s, new, beat, None, True)) == 0
        other, change = move(run, S.CANCELLED)
        assert pg._run(lambda _: postgres._commit_op(pg._s, run, other, change, True)) is None

    def test_ambiguous_insert_is_not_applied_twice(self, pg: Any) -> None:
        """An insert retried after a lost reply returns the first entry's sequence."""
        record = new_run("run_a")
        run, sequence = create(pg, record)
        change = postgres.Change("run_a", T0, "create", None, S.QUEUED, None, {}, record)
        again = pg._run(lambda _: postgres._insert_op(pg._s, run, change, True))
        assert again == sequence
        with pytest.raises(ValueError, match="already stored"):
            pg.insert(run, change)

    def test_ambiguous_claim_returns_what_it_claimed(self, pg: Any) -> None:
        """A claim retried after a lost reply returns the runs its first attempt took."""
        for i in range(3):
            create(pg, new_run(f"run_{i}"), since=T0 + i)
        claim = postgres._Claim(pg._s, 2, claim_step("w1", T0 + 5))
        first = pg._run(claim.op, transaction=True)
        again = pg._run(lambda _: claim.op(True), transaction=True)
        assert again == first
        assert [r.record.id for r, _ in first] == ["run_0", "run_1"]
        assert pg.get("run_2").record.status is S.QUEUED


class TestJournalOrder:
    def test_read_waits_for_an_entry_still_in_flight(self, pg: Any, pg_dsn: str) -> None:
        """
        An entry whose transaction commits after a later one is not skipped: the
        reader that sees the gap waits for the writer in flight.
        """
        _a, first = create(pg, new_run("run_a"))
        held = psycopg.connect(pg_dsn)  # not autocommit: holds its transaction open
        held.execute(
            f'INSERT INTO "{pg.schema}".runflow_journal '  # noqa: S608 - our own test schema
            "(run_id, at, trigger, from_status, to_status, worker, changes, run) "
            "SELECT run_id, at, 'late', from_status, to_status, worker, changes, run "
            f'FROM "{pg.schema}".runflow_journal WHERE sequence = %s',
            (first,),
        )
        _b, _ = create(pg, new_run("run_b"))  # takes a later sequence, commits first
        timer = threading.Timer(0.5, held.commit)
        timer.start()
        began = time.monotonic()
        entries = pg.journal(first, 10)
        waited = time.monotonic() - began
        timer.join()
        held.close()
        assert [e.trigger for e in entries] == ["late", "create"]
        assert waited >= 0.3

    def test_permanent_gaps_are_read_past(self, pg: Any) -> None:
        """Sequences lost to refused inserts leave gaps that readers step over."""
        create(pg, new_run("run_a", thread_id="thread_t"))
        with pytest.raises(ThreadBusyError):
            create(pg, new_run("run_b", thread_id="thread_t"))
        create(pg, new_run("run_c"))
        assert [e.run_id for e in pg.journal(0, 10)] == ["run_a", "run_c"]


class TestWatch:
    def _wait(self, seen: list[JournalEntry], count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def test_delivers_other_processes_changes_in_order(self, pg: Any, pg2: Any) -> None:
        """Entries another store commits reach the watcher, in order, once each."""
        create(pg2, new_run("run_old"))
        head = pg.journal(0, 100)[-1].sequence
        seen: list[JournalEntry] = []
        batches: list[int] = []

        def deliver(entries: list[JournalEntry]) -> None:
            batches.append(len(entries))
            seen.extend(entries)

        stop = pg.watch(head, deliver, poll=5.0)
        try:
            run, _ = create(pg2, new_run("run_a"))
            started, change = move(run, S.IN_PROGRESS)
            pg2.commit(run, started, change)
            self._wait(seen, 2)
            assert [(e.run_id, e.to_status) for e in seen] == [
                ("run_a", S.QUEUED),
                ("run_a", S.IN_PROGRESS),
            ]
        finally:
            stop()
        create(pg2, new_run("run_late"))
        time.sleep(0.2)
        assert len(seen) == 2

    def test_catches_up_from_after(self, pg: Any) -> None:
        """A watch delivers what was committed after ``after`` before it started."""
        for i in range(3):
            create(pg, new_run(f"run_{i}"))
        first = pg.journal(0, 1)[0].sequence
        seen: list[JournalEntry] = []
        stop = pg.watch(first, seen.extend)
        try:
            self._wait(seen, 2)
        finally:
            stop()
        assert [e.run_id for e in seen] == ["run_1", "run_2"]

    def test_resumes_after_losing_its_connection(
        self, pg: Any, pg2: Any, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A watcher whose connection dies reconnects and misses nothing."""
        seen: list[JournalEntry] = []
        stop = pg.watch(0, seen.extend, poll=0.2)
        try:
            create(pg2, new_run("run_a"))
            self._wait(seen, 1)
            _terminate(pg_dsn, "runflow-watch")
            create(pg2, new_run("run_b"))
            create(pg2, new_run("run_c"))
            self._wait(seen, 3)
        finally:
            stop()
        assert [e.run_id for e in seen] == ["run_a", "run_b", "run_c"]

    def test_a_failing_subscriber_does_not_end_the_watch(self, pg: Any) -> None:
        """An exception in deliver is logged; later entries still arrive."""
        seen: list[JournalEntry] = []

        def deliver(entries: list[JournalEntry]) -> None:
            seen.extend(entries)
            if len(seen) == 1:
                msg = "subscriber bug"
                raise RuntimeError(msg)

        stop = pg.watch(0, deliver, poll=0.2)
        try:
            create(pg, new_run("run_a"))
            self._wait(seen, 1)
            create(pg, new_run("run_b"))
            self._wait(seen, 2)
        finally:
            stop()
        assert [e.run_id for e in seen] == ["run_a", "run_b"]


class TestAsync:
    def test_contract_on_asyncio(self, pg_dsn: str, pg_schema: str, pg: Any) -> None:
        """The async store does what the sync one does, and shares its tables."""

        async def main() -> None:
            store = postgres.AsyncPostgresStore(pg_dsn, schema=pg_schema)
            async with store:
                record = new_run("run_a", thread_id="thread_t")
                run = postgres.StoredRun(record, since=T0)
                change = postgres.Change("run_a", T0, "create", None, S.QUEUED, None, {}, record)
                first = await store.insert(run, change)
                assert await store.get("run_a") == run
                other = new_run("run_b", thread_id="thread_t")
                busy = postgres.Change("run_b", T0, "create", None, S.QUEUED, None, {}, other)
                with pytest.raises(ThreadBusyError, match="active run run_a"):
                    await store.insert(postgres.StoredRun(other), busy)
                with pytest.raises(ValueError, match="already stored"):
                    await store.insert(run, change)
                (claimed, seq), *_ = await store.claim(
                    limit=5, now=T0 + 1, step=claim_step("w1", T0 + 1)
                )
                assert seq > first
                done, change = move(claimed, S.COMPLETED)
                assert await store.commit(claimed, done, change) is not None
                assert await store.commit(claimed, done, change) is None
                beat = postgres.StoredRun(done.record, done.version + 1, since=done.since)
                assert await store.commit(done, beat, None) == 0
                assert [e.trigger for e in await store.history("run_a")] == [
                    "create",
                    "claim",
                    "completed",
                ]
                assert len(await store.journal(0, 10)) == 3
                assert await store.runs(thread_id="thread_t") == [beat]
                assert await store.due(T0 + 10_000, 10) == []
                assert await store.lapsed(T0 + 10_000, 10) == []
                assert await store.stuck("cancelling", T0 + 10_000, 10) == []
                await store.discard("run_a")
                assert await store.get("run_a") is None
            with pytest.raises(StoreError, match="closed"):
                await store.get("run_a")

        asyncio.run(main())
        assert pg.get("run_a") is None

    def test_lazy_open_and_unreachable(self) -> None:
        """The constructor does no I/O; the first call reports an unreachable server."""

        async def main() -> None:
            store = postgres.AsyncPostgresStore(
                "postgresql://postgres@127.0.0.1:1/test", connect_timeout=2
            )
            with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/test is unreachable"):
                await store.get("run_a")
            await store.close()

        asyncio.run(main())
