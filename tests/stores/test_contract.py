"""
The store contract, at store level, over MemoryStore, SQLiteStore and PostgresStore:
what the engine relies on from every store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from store_workers import T0, claim_step, create, move, new_run

from runflow import RunObject, RunStatus, ThreadBusyError, Usage
from runflow.stores import Change, JournalEntry, Store, StoredRun

S = RunStatus


def _rich_run(run_id: str) -> RunObject:
    """A run with every kind of nested field set."""
    return RunObject.from_dict(
        {
            "id": run_id,
            "object": "thread.run",
            "created_at": T0,
            "thread_id": f"thread_{run_id}",
            "assistant_id": "asst_a",
            "status": "requires_action",
            "required_action": {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
                        }
                    ]
                },
            },
            "expires_at": T0 + 600,
            "started_at": T0 + 1,
            "model": "gpt-4o",
            "instructions": "Be brief. ✓",
            "tools": [
                {"type": "code_interpreter"},
                {
                    "type": "file_search",
                    "file_search": {
                        "max_num_results": 5,
                        "ranking_options": {"ranker": "auto", "score_threshold": 0.5},
                    },
                },
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather.",
                        "parameters": {"type": "object", "properties": {}},
                        "strict": True,
                    },
                },
            ],
            "metadata": {"owner": "ops", "empty": ""},
            "temperature": 0.7,
            "top_p": 0.9,
            "max_prompt_tokens": 1000,
            "max_completion_tokens": 500,
            "truncation_strategy": {"type": "last_messages", "last_messages": 3},
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
        }
    )


def _journal_size(store: Store) -> int:
    return len(store.journal(0, 1_000_000))


class TestInsertAndGet:
    def test_missing_run_is_none(self, store: Store) -> None:
        """get() of an unknown id returns None."""
        assert store.get("run_nope") is None

    def test_insert_stores_run_and_first_entry(self, store: Store) -> None:
        """insert() stores the run and journals its create entry in one go."""
        record = new_run("run_a")
        run, sequence = create(store, record)
        assert sequence >= 1
        assert store.get("run_a") == run
        (entry,) = store.history("run_a")
        assert entry == JournalEntry(
            sequence=sequence,
            run_id="run_a",
            at=T0,
            trigger="create",
            from_status=None,
            to_status=S.QUEUED,
            worker=None,
            changes={"status": "queued"},
            run=record,
        )
        assert [e.event for e in entry.events] == ["thread.run.created", "thread.run.queued"]

    def test_every_field_round_trips(self, store: Store) -> None:
        """A record with every nested field, and every stored field, reads back equal."""
        record = _rich_run("run_rich")
        run = StoredRun(
            record,
            version=7,
            accrued=Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
            observed=False,
            since=T0 + 1,
            worker="w1",
            lease_until=T0 + 31,
        )
        change = Change("run_rich", T0, "create", None, record.status, "w1", {}, record)
        store.insert(run, change)
        assert store.get("run_rich") == run
        assert store.history("run_rich")[0].run == record
        assert store.runs() == [run]

    def test_sequences_increase_across_runs(self, store: Store) -> None:
        """Journal sequences are store-wide and strictly increasing."""
        sequences = [create(store, new_run(f"run_{i}"))[1] for i in range(5)]
        assert sequences == sorted(set(sequences))

    def test_duplicate_id_is_refused(self, store: Store) -> None:
        """A second insert of an id raises ValueError and writes nothing."""
        create(store, new_run("run_a"))
        before = _journal_size(store)
        with pytest.raises(ValueError, match="run_a"):
            create(store, new_run("run_a", thread_id="thread_other"))
        assert _journal_size(store) == before
        assert store.get("run_a").record.thread_id == "thread_run_a"  # type: ignore[union-attr]


class TestThreadLock:
    def test_second_active_run_on_a_thread_is_refused(self, store: Store) -> None:
        """A local active run on a thread that has one raises OpenAI's ThreadBusyError."""
        create(store, new_run("run_a", thread_id="thread_t"))
        before = _journal_size(store)
        with pytest.raises(ThreadBusyError) as info:
            create(store, new_run("run_b", thread_id="thread_t"))
        assert str(info.value) == "Thread thread_t already has an active run run_a."
        assert (info.value.thread_id, info.value.run_id) == ("thread_t", "run_a")
        assert store.get("run_b") is None
        assert _journal_size(store) == before

    def test_thread_frees_when_its_run_ends(self, store: Store) -> None:
        """Once the active run ends, the thread takes a new run."""
        run, _ = create(store, new_run("run_a", thread_id="thread_t"))
        started, change = move(run, S.IN_PROGRESS)
        store.commit(run, started, change)
        done, change = move(started, S.COMPLETED)
        assert store.commit(started, done, change)
        create(store, new_run("run_b", thread_id="thread_t"))
        assert store.get("run_b") is not None

    @pytest.mark.parametrize("status", [S.QUEUED, S.IN_PROGRESS, S.REQUIRES_ACTION, S.CANCELLING])
    def test_every_active_status_holds_the_thread(self, store: Store, status: RunStatus) -> None:
        """Each of the four active statuses holds its thread."""
        create(store, new_run("run_a", thread_id="thread_t", status=status))
        with pytest.raises(ThreadBusyError):
            create(store, new_run("run_b", thread_id="thread_t"))

    def test_observed_runs_do_not_hold_threads(self, store: Store) -> None:
        """Observed runs belong to a remote server: the lock leaves them alone."""
        create(store, new_run("run_a", thread_id="thread_t"), observed=True)
        create(store, new_run("run_b", thread_id="thread_t"))
        create(store, new_run("run_c", thread_id="thread_t"), observed=True)
        assert len(store.runs(thread_id="thread_t")) == 3

    def test_ended_runs_do_not_hold_threads(self, store: Store) -> None:
        """A terminal run may be inserted beside an active one."""
        create(store, new_run("run_a", thread_id="thread_t"))
        create(store, new_run("run_b", thread_id="thread_t", status=S.COMPLETED))
        assert store.get("run_b") is not None

    def test_commit_into_an_active_status_on_a_busy_thread_is_refused(self, store: Store) -> None:
        """The thread lock also guards commits (the lifecycle never does this)."""
        create(store, new_run("run_a", thread_id="thread_t"))
        ended, _ = create(store, new_run("run_b", thread_id="thread_t", status=S.COMPLETED))
        back, change = move(ended, S.QUEUED)
        with pytest.raises(ThreadBusyError, match="already has an active run run_a"):
            store.commit(ended, back, change)
        assert store.get("run_b") == ended


class TestCommit:
    def test_commit_replaces_and_journals(self, store: Store) -> None:
        """A commit from the stored version stores the new run and journals the change."""
        run, first = create(store, new_run("run_a"))
        new, change = move(run, S.IN_PROGRESS, worker="w1", lease_until=T0 + 30, started_at=T0 + 1)
        sequence = store.commit(run, new, change)
        assert sequence is not None
        assert sequence > first
        assert store.get("run_a") == new
        entry = store.history("run_a")[-1]
        assert (entry.sequence, entry.trigger, entry.worker) == (sequence, "in_progress", "w1")
        assert (entry.from_status, entry.to_status) == (S.QUEUED, S.IN_PROGRESS)
        assert entry.changes == {"status": "in_progress", "started_at": T0 + 1}
        assert entry.run == new.record

    def test_changes_are_journaled_as_wire_values(self, store: Store) -> None:
        """Record values in a change (usage, last_error…) are journaled as wire dicts."""
        run, _ = create(store, new_run("run_a"))
        started, change = move(run, S.IN_PROGRESS)
        store.commit(run, started, change)
        usage = Usage.of(9, 4)
        done, change = move(started, S.COMPLETED, usage=usage, completed_at=T0 + 2)
        store.commit(started, done, change)
        assert store.history("run_a")[-1].changes == {
            "status": "completed",
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
            "completed_at": T0 + 2,
            "expires_at": None,
        }

    def test_stale_commit_loses_and_writes_nothing(self, store: Store) -> None:
        """A commit from an old version returns None and changes nothing."""
        run, _ = create(store, new_run("run_a"))
        winner, change = move(run, S.IN_PROGRESS)
        assert store.commit(run, winner, change) is not None
        loser, change = move(run, S.CANCELLED)
        before = _journal_size(store)
        assert store.commit(run, loser, change) is None
        assert store.get("run_a") == winner
        assert _journal_size(store) == before

    def test_commit_of_a_missing_run_loses(self, store: Store) -> None:
        """A commit of a run that is not stored returns None."""
        run = StoredRun(new_run("run_a"))
        new, change = move(run, S.IN_PROGRESS)
        assert store.commit(run, new, change) is None
        assert store.get("run_a") is None

    def test_bookkeeping_commit_journals_nothing(self, store: Store) -> None:
        """A commit without a change (a heartbeat, accrued usage) returns 0."""
        run, _ = create(store, new_run("run_a"))
        new = StoredRun(run.record, run.version + 1, Usage.of(5, 1), since=run.since)
        assert store.commit(run, new, None) == 0
        assert store.get("run_a") == new
        assert len(store.history("run_a")) == 1

    def test_racing_threads_exactly_one_wins(self, open_store: Callable[..., Store]) -> None:
        """Eight threads commit from the same version: exactly one succeeds."""
        store = open_store()
        run, _ = create(store, new_run("run_a"))
        barrier = threading.Barrier(8)

        def attempt(i: int) -> int | None:
            new, change = move(run, S.IN_PROGRESS, worker=f"w{i}")
            barrier.wait()
            return store.commit(run, new, change)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(attempt, range(8)))
        winners = [i for i, r in enumerate(results) if r is not None]
        assert len(winners) == 1
        assert store.get("run_a").worker == f"w{winners[0]}"  # type: ignore[union-attr]
        assert len(store.history("run_a")) == 2


class TestClaim:
    def test_claims_oldest_waiting_first(self, store: Store) -> None:
        """Queued runs are claimed longest waiting first, up to the limit."""
        for i in range(4):
            create(store, new_run(f"run_{i}", created_at=T0 + i), since=T0 + i)
        got = store.claim(limit=3, now=T0 + 10, step=claim_step("w1", T0 + 10))
        assert [r.record.id for r, _ in got] == ["run_0", "run_1", "run_2"]
        rest = store.claim(limit=3, now=T0 + 10, step=claim_step("w2", T0 + 10))
        assert [r.record.id for r, _ in rest] == ["run_3"]
        assert store.claim(limit=3, now=T0 + 10, step=claim_step("w2", T0 + 10)) == []

    def test_claim_stores_and_journals_each_run(self, store: Store) -> None:
        """Each claimed run is stored as the step made it, with its journal entry."""
        create(store, new_run("run_a"))
        ((claimed, sequence),) = store.claim(limit=5, now=T0 + 3, step=claim_step("w1", T0 + 3))
        assert claimed.record.status is S.IN_PROGRESS
        assert (claimed.worker, claimed.lease_until, claimed.version) == ("w1", T0 + 33, 2)
        assert store.get("run_a") == claimed
        entry = store.history("run_a")[-1]
        assert (entry.sequence, entry.trigger, entry.worker) == (sequence, "claim", "w1")

    def test_claim_skips_other_statuses_and_observed_runs(self, store: Store) -> None:
        """Only local queued runs are claimed."""
        create(store, new_run("run_obs"), observed=True)
        create(store, new_run("run_busy", status=S.IN_PROGRESS))
        create(store, new_run("run_done", status=S.COMPLETED))
        assert store.claim(limit=10, now=T0, step=claim_step("w1", T0)) == []

    def test_requeued_run_waits_behind_older_ones(self, store: Store) -> None:
        """A run back in the queue (since = when it re-entered) goes behind older ones."""
        first, _ = create(store, new_run("run_a"), since=T0)
        started, change = move(first, S.IN_PROGRESS, at=T0 + 1)
        store.commit(first, started, change)
        create(store, new_run("run_b", created_at=T0 + 2), since=T0 + 2)
        back, change = move(started, S.QUEUED, at=T0 + 3)
        store.commit(started, back, change)
        got = store.claim(limit=2, now=T0 + 4, step=claim_step("w1", T0 + 4))
        assert [r.record.id for r, _ in got] == ["run_b", "run_a"]

    def test_a_failing_step_claims_nothing(self, store: Store) -> None:
        """If the step raises, the whole claim is undone."""
        create(store, new_run("run_a"))
        create(store, new_run("run_b"), since=T0 + 1)
        calls: list[str] = []
        step = claim_step("w1", T0 + 2)

        def failing(old: StoredRun) -> tuple[StoredRun, Change]:
            calls.append(old.record.id)
            if len(calls) == 2:
                msg = "boom"
                raise RuntimeError(msg)
            return step(old)  # type: ignore[no-any-return]

        before = _journal_size(store)
        with pytest.raises(RuntimeError, match="boom"):
            store.claim(limit=5, now=T0 + 2, step=failing)
        assert calls == ["run_a", "run_b"]
        assert _journal_size(store) == before
        assert store.get("run_a").record.status is S.QUEUED  # type: ignore[union-attr]

    def test_zero_limit_claims_nothing(self, store: Store) -> None:
        """claim(limit=0) claims nothing."""
        create(store, new_run("run_a"))
        assert store.claim(limit=0, now=T0, step=claim_step("w1", T0)) == []

    def test_threads_never_claim_a_run_twice(self, open_store: Callable[..., Store]) -> None:
        """Eight threads claim from one queue of 200 runs: each run exactly once."""
        store = open_store()
        for i in range(200):
            create(store, new_run(f"run_{i:03d}"), since=T0 + i)
        barrier = threading.Barrier(8)

        def worker(i: int) -> list[str]:
            mine: list[str] = []
            barrier.wait()
            while got := store.claim(limit=4, now=T0, step=claim_step(f"w{i}", T0)):
                mine.extend(r.record.id for r, _ in got)
            return mine

        with ThreadPoolExecutor(8) as pool:
            claimed = [rid for part in pool.map(worker, range(8)) for rid in part]
        assert sorted(claimed) == [f"run_{i:03d}" for i in range(200)]
        assert all(len(store.history(rid)) == 2 for rid in claimed)


class TestSweepQueries:
    def test_due_finds_local_active_runs_past_their_deadline(self, store: Store) -> None:
        """due() lists local active runs with expires_at <= now, soonest first, limited."""
        create(store, new_run("run_late", expires_at=T0 + 50))
        create(store, new_run("run_later", expires_at=T0 + 60))
        create(store, new_run("run_future", expires_at=T0 + 500))
        create(store, new_run("run_obs", expires_at=T0 + 10), observed=True)
        create(store, new_run("run_done", status=S.COMPLETED))
        create(store, new_run("run_busy", status=S.IN_PROGRESS, expires_at=T0 + 55))
        assert sorted(store.due(T0 + 60, 10)) == ["run_busy", "run_late", "run_later"]
        assert len(store.due(T0 + 60, 2)) == 2
        assert store.due(T0 + 49, 10) == []

    def test_lapsed_finds_in_progress_runs_whose_lease_ran_out(self, store: Store) -> None:
        """lapsed() lists local in_progress runs with lease_until <= now."""
        create(store, new_run("run_a", status=S.IN_PROGRESS), worker="w1", lease_until=T0 + 30)
        create(store, new_run("run_b", status=S.IN_PROGRESS), worker="w1", lease_until=T0 + 20)
        create(store, new_run("run_c", status=S.IN_PROGRESS), worker="w1", lease_until=T0 + 90)
        create(store, new_run("run_d", status=S.IN_PROGRESS), observed=True, lease_until=T0)
        create(store, new_run("run_e", status=S.REQUIRES_ACTION), lease_until=T0)
        assert sorted(store.lapsed(T0 + 30, 10)) == ["run_a", "run_b"]
        assert store.lapsed(T0 + 30, 1)[0] in {"run_a", "run_b"}

    def test_stuck_finds_runs_in_a_status_since_a_time(self, store: Store) -> None:
        """stuck() lists local runs in a status since a time or earlier."""
        create(store, new_run("run_a", status=S.CANCELLING), since=T0 + 5)
        create(store, new_run("run_b", status=S.CANCELLING), since=T0 + 1)
        create(store, new_run("run_c", status=S.CANCELLING), since=T0 + 100)
        create(store, new_run("run_d", status=S.CANCELLING), since=T0, observed=True)
        create(store, new_run("run_e", status=S.QUEUED), since=T0)
        assert sorted(store.stuck("cancelling", T0 + 5, 10)) == ["run_a", "run_b"]
        assert store.stuck("cancelling", T0 + 5, 1)[0] in {"run_a", "run_b"}

    def test_sweep_queries_page_through_many_runs(self, store: Store) -> None:
        """Limits page through a large backlog without skipping one."""
        for i in range(30):
            create(store, new_run(f"run_{i:02d}", expires_at=T0 + i))
        seen: list[str] = []
        while batch := store.due(T0 + 100, 7):
            seen.extend(batch)
            for rid in batch:
                old = store.get(rid)
                assert old is not None
                new, change = move(old, S.EXPIRED)
                store.commit(old, new, change)
        assert sorted(seen) == [f"run_{i:02d}" for i in range(30)]


class TestReading:
    def test_history_and_journal_in_order(self, store: Store) -> None:
        """history() is one run's entries; journal(after, limit) pages through all."""
        a, _ = create(store, new_run("run_a"))
        b, _ = create(store, new_run("run_b"))
        a2, change = move(a, S.IN_PROGRESS)
        store.commit(a, a2, change)
        b2, change = move(b, S.CANCELLED)
        store.commit(b, b2, change)
        assert [e.to_status for e in store.history("run_a")] == [S.QUEUED, S.IN_PROGRESS]
        everything = store.journal(0, 100)
        assert [(e.run_id, e.to_status) for e in everything] == [
            ("run_a", S.QUEUED),
            ("run_b", S.QUEUED),
            ("run_a", S.IN_PROGRESS),
            ("run_b", S.CANCELLED),
        ]
        paged: list[JournalEntry] = []
        after = 0
        while page := store.journal(after, 3):
            paged.extend(page)
            after = page[-1].sequence
        assert paged == everything
        assert store.journal(everything[-1].sequence, 10) == []
        assert store.history("run_nope") == []

    def test_events_of_journal_entries(self, store: Store) -> None:
        """Entries give the stream events, with strictly increasing sequences."""
        a, _ = create(store, new_run("run_a"))
        a2, change = move(a, S.IN_PROGRESS)
        store.commit(a, a2, change)
        events = [ev for e in store.journal(0, 10) for ev in e.events]
        assert [e.event for e in events] == [
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
        ]
        sequences = [e.sequence for e in events]
        assert sequences == sorted(set(sequences))

    def test_runs_lists_in_creation_order_with_filters(self, store: Store) -> None:
        """runs() lists by creation order (or newest first), by thread, status, limit."""
        create(store, new_run("run_b", thread_id="thread_1"))
        create(store, new_run("run_a", thread_id="thread_2"))
        done, _ = create(store, new_run("run_c", thread_id="thread_1", status=S.COMPLETED))
        assert [r.record.id for r in store.runs()] == ["run_b", "run_a", "run_c"]
        assert [r.record.id for r in store.runs(newest_first=True)] == ["run_c", "run_a", "run_b"]
        assert [r.record.id for r in store.runs(thread_id="thread_1")] == ["run_b", "run_c"]
        assert store.runs(status="completed") == [done]
        assert [r.record.id for r in store.runs(limit=2)] == ["run_b", "run_a"]
        assert [r.record.id for r in store.runs(limit=1, newest_first=True)] == ["run_c"]
        assert store.runs(thread_id="thread_1", status="queued", limit=5)[0].record.id == "run_b"
        assert store.runs(thread_id="thread_none") == []


class TestDiscard:
    def test_discard_forgets_run_and_journal(self, store: Store) -> None:
        """discard() removes the run and its entries; other runs stay."""
        create(store, new_run("run_a"))
        create(store, new_run("run_b"))
        store.discard("run_a")
        assert store.get("run_a") is None
        assert store.history("run_a") == []
        assert [e.run_id for e in store.journal(0, 10)] == ["run_b"]
        assert [r.record.id for r in store.runs()] == ["run_b"]
        store.discard("run_a")  # unknown: no error

    def test_discarded_id_and_thread_can_be_reused(self, store: Store) -> None:
        """After a discard, the id and the thread are free again."""
        create(store, new_run("run_a", thread_id="thread_t"))
        store.discard("run_a")
        run, _ = create(store, new_run("run_a", thread_id="thread_t"))
        assert store.get("run_a") == run


def test_close_is_idempotent(open_store: Callable[..., Any]) -> None:
    """close() may be called twice."""
    store = open_store()
    store.close()
    store.close()
