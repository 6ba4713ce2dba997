"""The simulation package: scenarios, validation, the virtual-time driver, the summary."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from runflow import ASSISTANTS_RUN, JournalEntry, RunEvent, RunObject, RunStatus
from runflow.simulation import (
    BUILTIN_SCENARIOS,
    Constant,
    Exponential,
    LogNormal,
    Percentiles,
    Scenario,
    ScenarioError,
    Simulation,
    Uniform,
    Wall,
    WorkerError,
    builtin_scenarios,
    load_scenario,
    render_text,
    scenario_fields,
    sections,
    shared_store_url,
    simulate,
)
from runflow.simulation._pool import WorkerPool
from runflow.stores import MemoryStore
from runflow.testing import DEFAULT_START

DOCS = Path(__file__).resolve().parent.parent / "docs" / "simulation.md"
#: Every (from, to) pair of LIFECYCLE §8, read off the machine's own table.
SECTION_8 = {(str(t.source), str(t.dest)) for t in ASSISTANTS_RUN.transitions}


def write(tmp_path: Path, text: str, name: str = "scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class Pairs:
    """A subscriber collecting (from, to) status pairs and every event."""

    def __init__(self) -> None:
        self.pairs: set[tuple[str, str]] = set()
        self.events: list[RunEvent] = []
        self._last: dict[str, str] = {}

    def __call__(self, event: RunEvent) -> None:
        self.events.append(event)
        run_id, status = event.data.id, str(event.data.status)
        if event.event == "thread.run.created":
            return  # the queued event that follows is the run's first status
        before = self._last.get(run_id)
        if before is not None:
            self.pairs.add((before, status))
        self._last[run_id] = status


def deterministic(summary_dict: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in summary_dict.items() if k != "wall"}


class TestScenarios:
    def test_builtins_load(self) -> None:
        """Every built-in scenario loads, named as its file."""
        assert builtin_scenarios() == BUILTIN_SCENARIOS
        for name in BUILTIN_SCENARIOS:
            scenario = load_scenario(name)
            assert scenario.name == name
            assert scenario.description

    def test_default_file_is_the_code_defaults(self) -> None:
        """default.toml spells out exactly the defaults every omitted key takes."""
        loaded = load_scenario("default")
        assert attrs.evolve(loaded, description="") == Scenario()

    def test_file_without_name_takes_its_stem(self, tmp_path: Path) -> None:
        """A file with no name is named after its stem; omitted keys take defaults."""
        path = write(tmp_path, "[arrivals]\nrate = 5\n", "busy.toml")
        scenario = load_scenario(path)
        assert scenario.name == "busy"
        assert scenario.arrivals.rate == 5.0
        assert scenario.tools == Scenario().tools

    def test_distributions(self, tmp_path: Path) -> None:
        """Each distribution form reads into its record."""
        path = write(
            tmp_path,
            "[queue]\n"
            "delay = 2\n"
            "stall = { dist = 'uniform', low = 1, high = 3 }\n"
            "[model]\n"
            "latency = { dist = 'lognormal', median = 2, sigma = 0.5 }\n"
            "stall = { dist = 'constant', value = 7 }\n"
            "[tools]\n"
            "latency = { dist = 'exponential', mean = 4 }\n",
        )
        s = load_scenario(path)
        assert s.queue.delay == Constant(2.0)
        assert s.queue.stall == Uniform(1.0, 3.0)
        assert s.model.latency == LogNormal(2.0, 0.5)
        assert s.model.stall == Constant(7.0)
        assert s.tools.latency == Exponential(4.0)
        assert load_scenario(write(tmp_path, "[sweep]\ncancel_grace = 0\n")).sweep.cancel_grace == 0
        assert s.queue.stall.mean == 2.0
        assert s.model.latency.mean > 2.0

    @pytest.mark.parametrize(
        ("text", "key", "why"),
        [
            ("[tools]\nlatancy = 3\n", "tools.latancy", "did you mean 'latency'"),
            ("colour = 'red'\n", "colour", "unknown key"),
            ("[tools]\ncall_probability = 'high'\n", "tools.call_probability", "a string"),
            ("[tools]\ncall_probability = 1.5\n", "tools.call_probability", "probability"),
            ("[tools]\nmax_rounds = 2.5\n", "tools.max_rounds", "expected an integer"),
            ("[tools]\nmax_rounds = -1\n", "tools.max_rounds", ">= 0"),
            ("[arrivals]\nrate = 0\n", "arrivals.rate", "> 0"),
            ("[arrivals]\nrate = true\n", "arrivals.rate", "a boolean"),
            ("tools = 3\n", "tools", "expected a table"),
            (
                "[tools]\nlatency = { dist = 'lognormal', median = 'fast', sigma = 1 }\n",
                "tools.latency.median",
                "expected a number",
            ),
            ("[tools]\nlatency = { dist = 'gamma' }\n", "tools.latency.dist", "'exponential'"),
            ("[tools]\nlatency = { dist = 'exponential' }\n", "tools.latency.mean", "needs"),
            (
                "[tools]\nlatency = { dist = 'exponential', mean = 1, sd = 2 }\n",
                "tools.latency.sd",
                "it takes mean",
            ),
            (
                "[tools]\nlatency = { dist = 'uniform', low = 3, high = 1 }\n",
                "tools.latency.high",
                "below low",
            ),
            ("[tools]\nlatency = 'slow'\n", "tools.latency", "distribution table"),
            ("[tools]\nlatency = -1\n", "tools.latency", ">= 0"),
            ("[runs]\nmax_prompt_tokens = 100\n", "runs.max_prompt_tokens", "at least 256"),
            ("[runs]\ntools = ['a b']\n", "runs.tools[0]", "function name"),
            ("[runs]\ntools = ['a', 'a']\n", "runs.tools", "unique"),
            ("[runs]\ntools = 'a'\n", "runs.tools", "array"),
            ("[runs]\nparallel_tool_calls = 'no'\n", "runs.parallel_tool_calls", "true or false"),
            ("[runs]\nmodel = 4\n", "runs.model", "expected a string"),
            ("[failures]\ncodes = { oops = 1 }\n", "failures.codes.oops", "unknown"),
            ("[failures]\ncodes = { server_error = 0 }\n", "failures.codes", "> 0"),
            ("[failures]\ncodes = 3\n", "failures.codes", "table of weights"),
            (
                "[cancellations]\nlost_to = { completed = 'x' }\n",
                "cancellations.lost_to.completed",
                "expected a number",
            ),
            ("[tools]\nmin_calls = 3\nmax_calls = 2\n", "tools.min_calls", "above"),
            (
                "[runs]\nparallel_tool_calls = false\n",
                "tools.max_calls",
                "parallel_tool_calls is false",
            ),
            ("[runs]\ntools = []\n", "runs.tools", "is empty"),
            ("[sweep]\ncancel_grace = 'sometimes'\n", "sweep.cancel_grace", '"never"'),
            ("[sweep]\ncancel_grace = -1\n", "sweep.cancel_grace", "integer >= 0"),
        ],
    )
    def test_invalid_values_name_file_and_key(
        self, tmp_path: Path, text: str, key: str, why: str
    ) -> None:
        """A bad value is refused with the file, the dotted key and why."""
        path = write(tmp_path, text)
        with pytest.raises(ScenarioError) as info:
            load_scenario(path)
        err = info.value
        assert err.source == str(path)
        assert err.key == key
        assert why in err.reason
        assert str(err).startswith(f"{path}: {key}: ")

    def test_not_toml(self, tmp_path: Path) -> None:
        """A syntax error names the file and the line."""
        path = write(tmp_path, "[tools\n")
        with pytest.raises(ScenarioError, match=r"not valid TOML.*line 1") as info:
            load_scenario(path)
        assert info.value.key is None
        assert str(info.value).startswith(str(path))

    def test_missing_file_and_unknown_name(self, tmp_path: Path) -> None:
        """A missing file and an unknown built-in name are refused clearly."""
        with pytest.raises(ScenarioError, match="no such file"):
            load_scenario(tmp_path / "nope.toml")
        with pytest.raises(ScenarioError, match="no such built-in scenario or file"):
            load_scenario("nope")
        with pytest.raises(ScenarioError, match="cannot be read"):
            load_scenario(write(tmp_path, "", "dir.toml").parent)

    def test_inconsistent_scenario_built_in_code(self) -> None:
        """Cross-field rules hold for scenarios built in code too."""
        with pytest.raises(ScenarioError, match=r"tools\.min_calls"):
            attrs.evolve(Scenario(), tools=attrs.evolve(Scenario().tools, min_calls=5))

    def test_every_field_is_documented(self) -> None:
        """docs/simulation.md names every scenario key, and every key has a doc string."""
        text = DOCS.read_text(encoding="utf-8")
        for path, field in scenario_fields():
            assert field.metadata["doc"], path
            assert f"`{path}`" in text, f"{path} is not documented in docs/simulation.md"


class TestSimulation:
    def test_every_lifecycle_path_occurs_in_default(self) -> None:
        """
        All 17 (from, to) pairs of LIFECYCLE §8 occur in the default scenario, at
        the command's default 10,000 runs (the rarest, a cancel lost to a failure or
        to the deadline, come a few times in 10,000).
        """
        sim = Simulation(load_scenario("default"), runs=10_000, seed=1)
        pairs = Pairs()
        sim.engine.subscribe(pairs)
        summary = sim.run()
        assert len(SECTION_8) == 17
        assert pairs.pairs >= SECTION_8
        assert pairs.pairs <= SECTION_8
        # every run ended; the engine's events and the driver's count agree
        assert sum(summary.statuses.values()) == 10_000
        created = sum(e.event == "thread.run.created" for e in pairs.events)
        assert created == 10_000
        assert summary.transitions == len(pairs.events) - created
        sequences = [e.sequence for e in pairs.events]
        assert sequences == sorted(set(sequences))

    def test_events_are_wire_runs(self) -> None:
        """Each event's data is a valid wire run whose status matches the event."""
        sim = Simulation(load_scenario("flaky"), runs=300, seed=3)
        pairs = Pairs()
        sim.engine.subscribe(pairs)
        sim.run()
        for event in pairs.events:
            wire = json.loads(json.dumps(event.to_dict()))
            run = RunObject.from_dict(wire["data"])
            assert run == event.data
            if event.event != "thread.run.created":
                assert event.event == f"thread.run.{run.status}"
            assert re.fullmatch(r"run_[A-Za-z0-9]{24}", run.id)

    def test_same_seed_same_summary(self) -> None:
        """The same seed gives the same summary, wall clock aside; another seed differs."""
        scenario = load_scenario("default")
        a = simulate(scenario, runs=500, seed=7).to_dict()
        b = simulate(scenario, runs=500, seed=7).to_dict()
        c = simulate(scenario, runs=500, seed=8).to_dict()
        assert json.dumps(deterministic(a)) == json.dumps(deterministic(b))
        assert deterministic(a) != deterministic(c)

    @pytest.mark.parametrize(
        ("name", "statuses", "transitions", "virtual_seconds", "digest"),
        [
            ("default", (270, 12, 8, 4, 6), 1682, 1281.403, "76fbc16233e5efa3"),
            ("tool-heavy", (266, 7, 13, 4, 10), 4523, 1110.411, "19f016e9585c09cc"),
            ("flaky", (229, 9, 41, 7, 14), 1550, 1147.248, "5de2e84696fc1548"),
            ("deadline-pressure", (186, 14, 2, 5, 93), 1810, 1392.134, "871d103453bf0fab"),
        ],
    )
    def test_a_seed_gives_the_pinned_summary(
        self,
        name: str,
        statuses: tuple[int, ...],
        transitions: int,
        virtual_seconds: float,
        digest: str,
    ) -> None:
        """
        300 runs of each built-in scenario with seed 11 give these summaries, on every
        supported Python (CI runs the suite on each): the random draws, their order and
        the engine's decisions depend on nothing else. A change that alters them on
        purpose updates these figures (the digest covers the whole summary but the
        wall clock: sha256 of its JSON with sorted keys).
        """
        summary = simulate(load_scenario(name), runs=300, seed=11).to_dict()
        counts = {status: figures["count"] for status, figures in summary["statuses"].items()}
        kept = json.dumps(deterministic(summary), sort_keys=True).encode()
        assert counts == dict(
            zip(
                ("completed", "incomplete", "failed", "cancelled", "expired"), statuses, strict=True
            )
        )
        assert summary["transitions"] == transitions
        assert summary["virtual_seconds"] == virtual_seconds
        assert hashlib.sha256(kept).hexdigest()[:16] == digest

    @pytest.mark.parametrize("name", BUILTIN_SCENARIOS)
    def test_each_builtin_runs_to_the_end(self, name: str) -> None:
        """Every built-in ends every run, and its figures add up."""
        sim = Simulation(load_scenario(name), runs=400, seed=2)
        s = sim.run()
        assert s.scenario == name
        assert sum(s.statuses.values()) == 400
        assert sum(s.expired_from.values()) == s.statuses["expired"]
        assert sum(s.incomplete_by_reason.values()) == s.statuses["incomplete"]
        assert sum(s.failed_by_code.values()) == s.statuses["failed"]
        c = s.cancellations
        assert c["accepted"] == c["cancelled"] + c["lost_race"]
        assert c["requested"] == c["accepted"] + c["refused"]
        assert c["refused"] == s.refused_calls.get("cancel", 0)
        assert sum(s.tool_rounds.histogram.values()) == 400
        assert s.tool_rounds.rounds == sum(k * v for k, v in s.tool_rounds.histogram.items())
        ttt = s.time_to_terminal
        assert 0 <= ttt.p50 <= ttt.p95 <= ttt.p99 <= ttt.max
        assert sim.engine.runs() == []  # ended runs are discarded

    def test_deadline_pressure_expires_by_the_rule(self) -> None:
        """Without sweeps, late outputs meet the engine's expiry rule and are refused."""
        s = simulate(load_scenario("deadline-pressure"), runs=400, seed=1)
        assert s.expired_waiting_for_outputs > 0
        assert s.refused_calls["submit_tool_outputs"] > 0

    def test_deadline_pressure_expires_in_the_queue(self) -> None:
        """Runs back in the queue with seconds left expire there, the claims first."""
        s = simulate(load_scenario("deadline-pressure"), runs=2000, seed=1)
        assert s.expired_from["queued"] > 0
        assert "start" not in s.refused_calls  # claims never start an overdue run

    def test_rescued_outputs(self) -> None:
        """
        Outputs that would miss the deadline come in its last second instead: the
        run is queued with under a second left and expires there, or is claimed
        and expires in its turn. Only the few that the one-second ordering of calls
        into ``queued`` pushes to the deadline itself are still refused.
        """
        base = load_scenario("default")
        tools = attrs.evolve(base.tools, late_probability=0.2, rescue_probability=1.0)
        scenario = attrs.evolve(base, tools=tools)
        s = simulate(scenario, runs=500, seed=3)
        never = attrs.evolve(base, tools=attrs.evolve(tools, rescue_probability=0.0))
        late = simulate(never, runs=500, seed=3)
        assert late.expired_from["queued"] == 0
        assert s.expired_from["queued"] > 10
        assert s.expired_from["in_progress"] > late.expired_from["in_progress"] + 10
        refused = late.refused_calls["submit_tool_outputs"]
        assert late.expired_waiting_for_outputs == refused > 50
        assert s.refused_calls.get("submit_tool_outputs", 0) * 5 < refused

    def test_start_slots_go_to_the_longest_waiting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Start slots are handed out first in, first out: with every run created in
        the first second and a uniform queue wait, run k starts at the k-th slot,
        whichever run's wait drew it. The engine ties runs queued in one second by
        creation, then id; the simulation's own draws would give another order.
        """
        base = Scenario()
        scenario = attrs.evolve(
            base,
            arrivals=attrs.evolve(base.arrivals, rate=10_000.0),
            queue=attrs.evolve(base.queue, delay=Uniform(0.0, 120.0), stall_probability=0.0),
            tools=attrs.evolve(base.tools, call_probability=0.0),
            failures=attrs.evolve(base.failures, probability=0.0),
            cancellations=attrs.evolve(base.cancellations, probability=0.0),
        )
        sim = Simulation(scenario, runs=40, seed=5, keep_runs=True)
        slots: list[float] = []
        claimed = sim._claimed

        def spy(now: int, whens: list[float], runs: list[tuple[str, int]]) -> None:
            slots.extend(whens)
            claimed(now, whens, runs)

        monkeypatch.setattr(sim, "_claimed", spy)
        sim.run()
        records = sorted((s.record for s in sim.engine.store.runs()), key=lambda r: r.id)
        assert len({r.created_at for r in records}) == 1  # one tie: broken by id
        started = [r.started_at for r in records]
        assert started == [DEFAULT_START + int(when) for when in sorted(slots)]
        assert len(set(started)) > 20  # the slots are spread over the two minutes
        # each run's own wait was not its own start: FIFO, not per-run waits
        waits = [h[1].at - h[0].at for h in map(sim.engine.history, (r.id for r in records))]
        assert waits == sorted(waits)

    def test_cancel_grace(self) -> None:
        """With a cancel grace, sweeps cancel stuck cancels; with "never" they expire."""
        flaky = simulate(load_scenario("flaky"), runs=400, seed=1)
        assert load_scenario("flaky").sweep.cancel_grace == 60
        assert flaky.cancellations["cancelled_by_sweep"] > 0
        assert flaky.expired_from["cancelling"] == 0
        default = simulate(load_scenario("default"), runs=10_000, seed=1)
        assert load_scenario("default").sweep.cancel_grace is None
        assert default.cancellations["cancelled_by_sweep"] == 0
        assert default.expired_from["cancelling"] > 0

    def test_keep_runs(self) -> None:
        """With keep_runs the engine keeps every run, all terminal."""
        sim = Simulation(load_scenario("default"), runs=200, seed=1, keep_runs=True)
        sim.run()
        runs = sim.engine.runs()
        assert len(runs) == 200
        assert all(r.status.is_terminal for r in runs)
        assert {r.status for r in runs} >= {RunStatus.COMPLETED}

    def test_budgets_end_runs_incomplete(self) -> None:
        """Budgeted runs over their token budget end incomplete, for both reasons."""
        scenario = load_scenario("default")
        tight = attrs.evolve(
            scenario,
            runs=attrs.evolve(scenario.runs, budget_share=1.0, max_prompt_tokens=2000),
        )
        s = simulate(tight, runs=300, seed=1)
        assert s.incomplete_by_reason["max_prompt_tokens"] > 0
        assert s.incomplete_by_reason["max_completion_tokens"] > 0

    def test_no_runs(self) -> None:
        """Zero runs give an empty, well-formed summary."""
        s = simulate(Scenario(), runs=0)
        assert sum(s.statuses.values()) == 0
        assert s.time_to_terminal == Percentiles.of([])
        assert s.to_dict()["statuses"]["completed"] == {"count": 0, "percent": 0.0}

    def test_progress_and_run_once(self) -> None:
        """Progress ends at (runs, runs); a simulation runs once."""
        seen: list[tuple[int, int]] = []
        sim = Simulation(Scenario(), runs=1500, seed=1, progress=lambda d, t: seen.append((d, t)))
        sim.run()
        assert seen[0] == (1024, 1500)
        assert seen[-1] == (1500, 1500)
        with pytest.raises(RuntimeError, match="runs once"):
            sim.run()

    def test_bad_runs(self) -> None:
        """A negative or non-integer number of runs is refused."""
        with pytest.raises(ValueError, match="non-negative integer"):
            Simulation(Scenario(), runs=-1)


class TestSummary:
    def test_percentiles_are_nearest_rank(self) -> None:
        """p50/p95/p99 pick the nearest-rank values."""
        p = Percentiles.of([float(v) for v in range(1, 101)])
        assert (p.p50, p.p95, p.p99, p.max, p.mean) == (50.0, 95.0, 99.0, 100.0, 50.5)

    def test_wall_rates(self) -> None:
        """Wall rates are per second, and survive a zero elapsed time."""
        assert Wall.of(2.0, 100, 600) == Wall(seconds=2.0, runs_per_s=50.0, transitions_per_s=300.0)
        assert Wall.of(0.0, 1, 1).runs_per_s > 0

    def test_text_has_wall_last(self) -> None:
        """The plain table ends with the wall-clock section, the only varying one."""
        s = simulate(Scenario(), runs=100, seed=1)
        blocks = sections(s)
        assert blocks[-1].wall
        assert not any(b.wall for b in blocks[:-1])
        text = render_text(s)
        assert text.index("Wall clock") > text.index("Calls the engine refused")
        assert "Runs by final status" in text
        assert "Time to terminal (virtual seconds)" in text


def postgres_url() -> Iterator[str]:
    """A PostgreSQL store URL on a fresh schema (dropped afterwards); skips without a DSN."""
    dsn = os.environ.get("RUNFLOW_POSTGRES_DSN", "")
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail("RUNFLOW_POSTGRES_DSN is not set: CI must run the PostgreSQL tests")
        pytest.skip("RUNFLOW_POSTGRES_DSN is not set")
    import psycopg  # noqa: PLC0415 - the postgres extra

    schema = f"runflow_sim_{uuid.uuid4().hex[:12]}"
    yield f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(name="shared_url", params=["sqlite", "postgres"])
def _shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL worker processes can share."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sim.db'}"
    else:
        yield from postgres_url()


def journal_of(sim: Simulation) -> dict[str, list[JournalEntry]]:
    """Run id -> its journal entries, for every run of ``sim``."""
    store = sim.engine.store
    return {r.id: store.history(r.id) for r in (s.record for s in store.runs())}


class TestStoresAndWorkers:
    @pytest.mark.parametrize("name", ["default", "flaky"])
    def test_same_summary_in_every_mode(self, name: str, tmp_path: Path) -> None:
        """
        Memory, a SQLite store in-process, and two workers on it: one summary. The
        memory store ties runs queued in one second by call order, SQL stores by
        creation then id: the driver orders its calls into ``queued`` so they agree.
        """
        scenario = load_scenario(name)
        memory = deterministic(simulate(scenario, runs=250, seed=4).to_dict())
        url = f"sqlite:///{tmp_path / 'sim.db'}"
        in_process = simulate(scenario, runs=250, seed=4, store=url)
        assert deterministic(in_process.to_dict()) == memory
        workers = simulate(scenario, runs=250, seed=4, store=url, workers=2)
        assert deterministic(workers.to_dict()) == memory

    @pytest.mark.parametrize("window", [1, 30])
    def test_same_summary_on_postgres(self, window: int) -> None:
        """In-process and three workers on PostgreSQL: the memory summary."""
        scenario = load_scenario("tool-heavy")
        memory = deterministic(simulate(scenario, runs=200, seed=6, window=window).to_dict())
        for url in postgres_url():
            in_process = simulate(scenario, runs=200, seed=6, window=window, store=url)
            assert deterministic(in_process.to_dict()) == memory
            workers = simulate(scenario, runs=200, seed=6, window=window, store=url, workers=3)
            assert deterministic(workers.to_dict()) == memory

    def test_in_process_claims(self) -> None:
        """In-process, every start is a claim too, by the in-process worker."""
        sim = Simulation(load_scenario("default"), runs=300, seed=2, keep_runs=True)
        summary = sim.run()
        entries = [e for s in sim.engine.store.runs() for e in sim.engine.history(s.record.id)]
        starts = [e for e in entries if e.to_status is RunStatus.IN_PROGRESS]
        assert len(starts) >= 300 - summary.statuses["cancelled"]
        assert {(e.trigger, e.worker) for e in starts} == {("claim", "sim-in-process")}

    def test_journal_and_leases(self, shared_url: str) -> None:
        """
        With workers: one journal entry per counted transition (none lost, none
        doubled), each run's path legal, and each turn ended by the worker holding
        the lease it took when it started the run.
        """
        with Simulation(
            load_scenario("default"), runs=200, seed=2, store=shared_url, workers=3
        ) as sim:
            summary = sim.run()
            journals = journal_of(sim)
        assert len(journals) == 200
        assert sum(len(entries) for entries in journals.values()) == summary.transitions
        workers: set[str] = set()
        claims = 0
        for run_id, entries in journals.items():
            assert re.fullmatch(r"run_[A-Za-z0-9]{24}", run_id)
            assert entries[0].trigger == "create"
            assert entries[-1].to_status.is_terminal
            holder = None
            for before, entry in itertools.pairwise(entries):
                assert entry.from_status == before.to_status
                assert (str(entry.from_status), str(entry.to_status)) in SECTION_8
                assert entry.trigger != "start"  # runs start by claim() only
                if entry.trigger == "claim":
                    assert (entry.from_status, entry.to_status) == (
                        RunStatus.QUEUED,
                        RunStatus.IN_PROGRESS,
                    )
                    holder = entry.worker
                    assert holder is not None
                    workers.add(holder)
                    claims += 1
                elif entry.from_status is RunStatus.IN_PROGRESS and entry.trigger not in {
                    "cancel",  # a client's
                    "expire",  # a sweep's, or the expiry rule's
                }:
                    assert entry.worker == holder, (run_id, entry)  # the lease holder's
        assert workers == {"sim-worker-1", "sim-worker-2", "sim-worker-3"}
        assert claims >= 200

    def test_replay_is_the_live_event_stream(self, tmp_path: Path) -> None:
        """Events replayed from a SQLite journal are those a memory run emits, in order."""
        live = Pairs()
        sim = Simulation(load_scenario("default"), runs=150, seed=5)
        sim.engine.subscribe(live)
        sim.run()
        with Simulation(
            load_scenario("default"), runs=150, seed=5, store=f"sqlite:///{tmp_path / 'a.db'}"
        ) as stored:
            stored.run()
            replayed = [event for _, event in stored.replay()]
        assert [(e.event, e.data) for e in replayed] == [(e.event, e.data) for e in live.events]

    def test_a_given_store_keeps_runs_and_tags(self) -> None:
        """A store given as an object keeps every run; a second simulation takes tag 1."""
        store = MemoryStore()
        first = Simulation(load_scenario("default"), runs=30, store=store)
        first.run()
        second = Simulation(load_scenario("default"), runs=30, store=store)
        second.run()
        assert (first.tag, second.tag) == (0, 1)
        ids = [s.record.id for s in store.runs()]
        assert len(ids) == 60
        assert {i[:11] for i in ids} == {"run_sim0000", "run_sim0001"}
        assert list(second.replay())  # a memory store with a journal replays too
        assert list(Simulation(Scenario(), runs=5).replay()) == []  # no journal kept

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"workers": 2}, "share"),
            ({"workers": 2, "store": "memory://"}, "share"),
            ({"workers": 2, "store": "sqlite://:memory:"}, "share"),
            ({"workers": 2, "store": MemoryStore()}, "share"),
            ({"workers": -1}, "workers must be"),
            ({"window": 0}, "window must be"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], message: str) -> None:
        """Workers need a shared store URL; workers and window are checked."""
        with pytest.raises(ValueError, match=message):
            Simulation(Scenario(), runs=5, **kwargs)

    def test_shared_store_url(self) -> None:
        """Which URLs worker processes can share."""
        assert shared_store_url("sqlite:///sim.db")
        assert shared_store_url("sqlite:////var/sim.db")
        assert shared_store_url("postgresql://u@h/db")
        assert shared_store_url("postgres://u@h/db")
        assert not shared_store_url("memory://")
        assert not shared_store_url("sqlite://:memory:")
        assert not shared_store_url("sqlite:///:memory:")

    def test_worker_cannot_open_the_store(self, tmp_path: Path) -> None:
        """A worker that cannot open the store: WorkerError naming it, workers stopped."""
        url = f"sqlite:///{tmp_path / 'file'}/sim.db"
        (tmp_path / "file").write_text("not a directory")
        with pytest.raises(WorkerError, match=r"^worker sim-worker-1: "):
            WorkerPool(url, Scenario(), 1, lease=600, start=DEFAULT_START)

    def test_worker_dies(self, tmp_path: Path) -> None:
        """A worker killed mid-simulation: WorkerError with its exit code."""
        pool = WorkerPool(
            f"sqlite:///{tmp_path / 'sim.db'}", Scenario(), 2, lease=600, start=DEFAULT_START
        )
        try:
            assert len(pool) == 2
            assert pool.run([[], []]) == [[], []]
            victim = pool._procs[1]
            os.kill(victim.pid or 0, signal.SIGKILL)
            victim.join(10)
            item = ("create", "run_sim000000000000000000001", DEFAULT_START, "thread_x", False)
            with pytest.raises(WorkerError, match="worker sim-worker-2 exited with code -9"):
                pool.run([[], [item]])
        finally:
            pool.close()

    def test_engine_error_in_a_worker(self, tmp_path: Path) -> None:
        """An engine call that raises in a worker comes back as a WorkerError."""
        with WorkerPool(
            f"sqlite:///{tmp_path / 'sim.db'}", Scenario(), 1, lease=600, start=DEFAULT_START
        ) as pool:
            created = pool.run([[("create", "run_a", DEFAULT_START, "thread_a", False)]])
            assert created == [[(RunStatus.QUEUED, None, None)]]
            with pytest.raises(WorkerError, match="No run found with id 'run_b'"):
                pool.run([[("cancel", "run_b", DEFAULT_START, None, None)]])
