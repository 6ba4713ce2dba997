"""
The virtual-time driver: a heap of timed events over a :class:`~runflow.testing.FakeClock`.

Every status change goes through a real :class:`runflow.Engine`. The driver plays both
sides: the server (claiming queued runs, ending model turns, settling cancels,
sweeping) and the client (creating runs, submitting tool outputs, cancelling). It
learns each run's new status from the outcomes of its calls (a call on a run past its
deadline is refused as ``expired``: the engine's expiry rule got there first; a claim
expires every overdue run before it takes any), so it needs no event subscription of
its own.

Queued runs start by :meth:`runflow.Engine.claim`, first in, first out. Each entry into
``queued`` (a creation, a tool-output submission) schedules a *start slot* after the
scenario's queue wait; the slots due in a round are claimed once the round's other
calls are made, one claim per clock reading for as many runs as it has slots, the
earliest slot going to the longest-waiting run.

Events are handled in **rounds**. A round takes the due events in time order from
the earliest one up to ``window`` whole virtual seconds on (one second by default,
the engine clock's resolution), at most one per run (a run's next event waits for
the next round), and handles them in two steps: a *plan* makes every random draw and
names one engine call (a work item of :mod:`runflow.simulation._exec`) at the
event's own clock reading; once the round's calls are made, a *continuation* per
event records the outcome and schedules what follows. In-process, each call is made
as it is planned; in the distributed mode a round's calls are spread over the worker
processes, which make them concurrently. A sweep ends a round and runs alone, so it
sees every earlier call. Plans, draws and continuations run in the same order in
both modes, and every store orders the queue alike (by when a run entered
``queued``, then creation, then id), so every claim takes the same runs: a seed (and
window) gives the same summary in both modes, for any store and any number of
workers. Only the order in which different runs' calls of one round reach the store,
and which worker claims which run, differ.
"""

from __future__ import annotations

import heapq
import itertools
import time
import typing
from collections import Counter, deque
from collections.abc import Callable, Iterator
from random import Random
from typing import Any

from runflow._engine import Engine
from runflow._events import RunEvent
from runflow._model import RunStatus
from runflow.exceptions import RunflowError
from runflow.simulation._exec import IN_PROCESS_WORKER, Executor, Item, Outcome, detail_of
from runflow.simulation._scenario import FAILURE_CODES, LOST_RACE_OUTCOMES, Scenario
from runflow.simulation._summary import Summary, Wall, summarize
from runflow.stores import MemoryStore, Store, open_store
from runflow.testing import DEFAULT_START, FakeClock

__all__ = ["Progress", "Simulation", "shared_store_url", "simulate"]

#: ``progress(done, total)``: called now and then with the number of ended runs.
Progress = Callable[[int, int], object]

_S = RunStatus
_QUEUED, _IN_PROGRESS, _REQUIRES_ACTION = _S.QUEUED, _S.IN_PROGRESS, _S.REQUIRES_ACTION
_CANCELLING, _CANCELLED, _INCOMPLETE = _S.CANCELLING, _S.CANCELLED, _S.INCOMPLETE
_FAILED, _EXPIRED = _S.FAILED, _S.EXPIRED
_ALWAYS = -1  # the generation of an event that no cancel invalidates
#: Work items made on an ``in_progress`` run: sent to the worker holding its lease.
_LEASED_OPS = frozenset({"tools", "complete", "fail"})
#: Run-id tags a store can hold (``run_sim0000…`` to ``run_sim9999…``).
_TAGS = 10_000


class _Run:
    """The driver's private view of one run."""

    __slots__ = (
        "calls",
        "created",
        "deadline",
        "ended",
        "gen",
        "holder",
        "id",
        "kept",
        "mark",
        "pending",
        "rounds",
        "since",
        "status",
    )

    def __init__(self, run_id: str, created: float, deadline: int) -> None:
        self.id = run_id
        self.created = created
        self.deadline = deadline
        self.status: RunStatus = _QUEUED
        self.gen = 0  # bumped by an accepted cancel: pending server/client work is void
        self.rounds = 0
        self.calls = 0  # tool calls of the pending round
        self.ended: float | None = None
        self.pending = 0  # events queued for this run
        self.kept = True  # still in the engine's store
        self.mark = 0  # the round this run has an event in
        self.holder = -1  # the worker holding its lease (distributed mode)
        self.since = 0  # the clock reading it last entered ``queued`` at


def _queue_order(run: _Run) -> tuple[int, str]:
    """The order of :meth:`runflow.Engine.claim`: longest in ``queued``, then creation."""
    return run.since, run.id


Handler = Callable[..., Any]
#: ``cont(run, outcome, arg)``: what follows an engine call.
Cont = Callable[[_Run, Outcome, Any], None]
Plan = tuple[Cont, Item, Any]


def shared_store_url(url: str) -> bool:
    """Whether processes can share the store at ``url`` (a SQLite file or PostgreSQL)."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite":
        return rest.strip("/") not in {"", ":memory:"}
    return scheme in {"postgresql", "postgres"}


@typing.final
class Simulation:
    """
    Drive ``runs`` runs of a scenario through a real engine on virtual time.

    Args:
        scenario: What the runs are drawn from.
        runs: How many runs arrive.
        seed: Seeds the one :class:`random.Random` every draw comes from: the same
            scenario, runs and seed give the same summary, whatever the store and
            the number of workers.
        logger: Passed to :class:`runflow.Engine` (a concrete structlog logger saves
            time on every transition).
        progress: Called as ``progress(ended, runs)`` every so often, and at the end.
        start: The virtual clock's first reading (Unix seconds).
        keep_runs: Keep ended runs, with their journal, in the simulation's own
            memory store (``engine.runs()`` then lists them all, ``engine.history()``
            has every change). By default that store keeps no journal and a run is
            discarded once it has ended and no call can reach it any more, so memory
            holds only the live runs. Runs in a store given by ``store`` are always
            kept.
        store: Where runs live: None (a new in-memory store), a
            :class:`runflow.stores.Store`, or a store URL for
            :func:`runflow.stores.open_store` (``sqlite:///sim.db``,
            ``postgresql://…``), opened here and closed by :meth:`close`. Run ids are
            ``run_sim<tag><n>``, with the first tag (from ``0000``) no run in the
            store has yet.
        workers: Worker processes (the distributed mode): 0 makes every engine call
            in this process (claims as worker ``sim-in-process``); N > 0 starts N
            processes (spawned) on a store URL that processes share (a SQLite file or
            PostgreSQL), each with its own engine, which claim the queued runs and
            drive them; each round's calls and claims are spread over them. This
            process keeps the virtual clock, the event queue and every random draw,
            decides how many runs are claimed when, and sweeps.
        worker_init: Called first in each worker process (to configure logging);
            it must pickle.
        window: Whole virtual seconds one round of calls spans (default 1). Wider
            rounds give worker processes more calls to make at once; each run's
            calls keep their order, different runs' calls within a window do not
            (each is still made at its own clock reading). The summary depends on
            the seed and the window, not on the store or the number of workers.

    Attributes:
        engine: The :class:`runflow.Engine` of this process (on :attr:`clock`).
            Subscribe to it before :meth:`run` to see the events of an in-process
            simulation; see :meth:`replay` for the others.
        clock: The virtual clock, a :class:`runflow.testing.FakeClock`.
        now: The virtual time in seconds since the start, as a float; read it in a
            subscriber to place an event in time.
        transitions: Status changes made so far (a creation counts as one).
        tag: The run-id tag of this simulation's runs (0 in a new store).

    Raises:
        ValueError: a bad ``runs``, ``workers`` or ``window``, or workers without a
            shared store URL.
        runflow.StoreError: the store URL cannot be opened.

    .. versionadded:: 0.1.0
    """

    def __init__(  # noqa: PLR0915 - one place sets up every draw and counter
        self,
        scenario: Scenario,
        *,
        runs: int,
        seed: int = 1,
        logger: Any = None,
        progress: Progress | None = None,
        start: int = DEFAULT_START,
        keep_runs: bool = False,
        store: Store | str | None = None,
        workers: int = 0,
        worker_init: Callable[[], object] | None = None,
        window: int = 1,
    ) -> None:
        if type(runs) is not int or runs < 0:
            msg = f"runs must be a non-negative integer, got {runs!r}"
            raise ValueError(msg)
        if type(window) is not int or window < 1:
            msg = f"window must be a positive integer (seconds), got {window!r}"
            raise ValueError(msg)
        if type(workers) is not int or workers < 0:
            msg = f"workers must be a non-negative integer, got {workers!r}"
            raise ValueError(msg)
        self._url = store if isinstance(store, str) else None
        if workers and (self._url is None or not shared_store_url(self._url)):
            msg = (
                "worker processes need a store they share: a SQLite file or PostgreSQL "
                f"URL, not {store!r}"
            )
            raise ValueError(msg)
        self.scenario = scenario
        self.runs = runs
        self.seed = seed
        self.clock = FakeClock(start)
        self._start = start
        self._workers = workers
        self._worker_init = worker_init
        if store is None:
            # the journal (history()) costs about half the engine's speed; kept runs keep it
            the_store: Store = MemoryStore(journal=keep_runs)
            self._discard = not keep_runs
        else:
            the_store = open_store(store) if isinstance(store, str) else store
            self._discard = False
        self._executor: Executor | None = None
        self.engine = Engine(
            clock=self.clock,
            store=the_store,
            id_factory=self._next_id,
            expires_after=scenario.runs.expires_after,
            cancel_grace=scenario.sweep.cancel_grace,
            logger=logger,
        )
        # a lease that outlives the run: it never lapses before the deadline
        self._executor = Executor(
            self.engine,
            self.clock,
            scenario,
            worker=IN_PROCESS_WORKER,
            lease=scenario.runs.expires_after,
        )
        try:
            self.tag = 0 if store is None else self._free_tag()
        except BaseException:
            self.close()
            raise
        self._run_prefix = f"run_sim{self.tag:04d}"
        self._thread_prefix = f"thread_sim{self.tag:04d}"
        self._progress = progress
        self._ran = False
        self.now = 0.0
        self._t = start  # the clock reading of the current event
        self._window = window
        self._heap: list[tuple[float, int, Handler, _Run | None, int]] = []
        self._seq = itertools.count()
        self._active: dict[str, _Run] = {}
        self._arrived = 0
        self._ended = 0
        self._first_round: list[str] = []  # the runs created in the first round
        self._expiring: deque[_Run] = deque()  # every run, by deadline, until it is past
        self.transitions = 0
        # what the summary is made of
        self._ttt: list[float] = []
        self._final: Counter[str] = Counter()
        self._expired_from: Counter[str] = Counter()
        self._reasons: Counter[str | None] = Counter()
        self._codes: Counter[str | None] = Counter()
        self._rounds: Counter[int] = Counter()
        self._calls = 0
        self._refused: Counter[str] = Counter()
        self._cancels: Counter[str] = Counter()
        self._build_draws(scenario, Random(seed))
        self._arriver: Handler = self._arrive
        self._sweeper: Handler = self._sweep
        self._slotter: Handler = self._slot
        self._lose: dict[str, Handler] = {
            "completed": self._lose_completed,
            "failed": self._lose_failed,
            "incomplete": self._lose_incomplete,
        }

    def _next_id(self) -> str:
        assert self._executor is not None  # noqa: S101 - set before any create
        return self._executor.next_id

    def _free_tag(self) -> int:
        """The first run-id tag whose first run the store does not hold."""
        get = self.engine.store.get
        for tag in range(_TAGS):
            if get(f"run_sim{tag:04d}{1:017d}") is None:
                return tag
        msg = f"the store holds {_TAGS} simulations already; use another store"
        raise RunflowError(msg)

    def _build_draws(self, s: Scenario, rng: Random) -> None:
        self._random = rng.random
        self._randint = rng.randint
        self._choices = rng.choices
        self._gap = rng.expovariate
        self._rate = s.arrivals.rate
        self._queue_delay = s.queue.delay.sampler(rng)
        self._queue_stall_p = s.queue.stall_probability
        self._queue_stall = s.queue.stall.sampler(rng)
        self._model_latency = s.model.latency.sampler(rng)
        self._model_stall_p = s.model.stall_probability
        self._model_stall = s.model.stall.sampler(rng)
        self._prompt = s.model.prompt_tokens.sampler(rng)
        self._completion = s.model.completion_tokens.sampler(rng)
        self._call_p = s.tools.call_probability
        self._max_rounds = s.tools.max_rounds
        self._min_calls, self._max_calls = s.tools.min_calls, s.tools.max_calls
        self._tool_latency = s.tools.latency.sampler(rng)
        self._late_p = s.tools.late_probability
        self._late = s.tools.late.sampler(rng)
        self._rescue_p = s.tools.rescue_probability
        self._fail_p = s.failures.probability
        self._codes_w = [s.failures.codes[c] for c in FAILURE_CODES]
        self._cancel_p = s.cancellations.probability
        self._cancel_after = s.cancellations.after.sampler(rng)
        self._cancel_finish = s.cancellations.finish.sampler(rng)
        self._lose_p = s.cancellations.lose_race
        self._lost_w = [s.cancellations.lost_to[o] for o in LOST_RACE_OUTCOMES]
        self._budget_p = s.runs.budget_share
        self._ttl = s.runs.expires_after
        self._sweep_every = s.sweep.interval

    # --- the event queue -------------------------------------------------------------------

    def _at(self, delay: float, handler: Handler, run: _Run | None, gen: int) -> None:
        if run is not None:
            run.pending += 1
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), handler, run, gen))

    def _forget(self, run: _Run) -> None:
        """Discard an ended run no queued event can reach (own memory store only)."""
        if self._discard and run.kept:
            run.kept = False
            self.engine.discard(run.id)

    def run(self) -> Summary:
        """
        Run the simulation to the end (every run terminal) and summarize it.

        The wall-clock figures time the simulation itself, not the start of the
        worker processes.

        Raises:
            RuntimeError: called a second time.
            runflow.simulation.WorkerError: a worker process failed.
            runflow.StoreError: the store failed.
        """
        if self._ran:
            msg = "a Simulation runs once; make a new one"
            raise RuntimeError(msg)
        self._ran = True
        pool = None
        if self._workers:
            from runflow.simulation._pool import WorkerPool  # noqa: PLC0415 - only when used

            assert self._url is not None  # noqa: S101 - checked in __init__
            pool = WorkerPool(
                self._url,
                self.scenario,
                self._workers,
                lease=self._ttl,  # as in-process: it never lapses before the deadline
                start=self._start,
                init=self._worker_init,
            )
        try:
            wall0 = time.perf_counter()
            if self.runs:
                self._at(0.0, self._arriver, None, _ALWAYS)
            if self._sweep_every > 0:
                self._at(self._sweep_every, self._sweeper, None, _ALWAYS)
            self._loop(pool)
            self._settle_remaining()
            wall = time.perf_counter() - wall0
        finally:
            if pool is not None:
                pool.close()
        if self._progress is not None:
            self._progress(self._ended, self.runs)
        return summarize(self, Wall.of(wall, self.runs, self.transitions))

    def _loop(self, pool: Any) -> None:  # noqa: C901, PLR0912, PLR0915 - the hot loop, kept flat
        """
        Round by round: plan (and, in-process, call) each event, make the round's
        claims, then continue each event and each claim.
        """
        heap, pop, push = self._heap, heapq.heappop, heapq.heappush
        clock, base = self.clock, self._start
        execute = self._executor if pool is None else None
        arriver, sweeper, slotter = self._arriver, self._sweeper, self._slotter
        latest = 0.0
        mark = 0
        window = self._window
        while heap:
            end = int(heap[0][0]) + window
            mark += 1
            batch: list[Any] = []
            slots: list[float] = []  # the round's start slots, in time order
            deferred = []
            while heap and heap[0][0] < end:
                entry = pop(heap)
                when, _, handler, run, gen = entry
                latest = max(latest, when)
                self.now = when
                now = base + int(when)
                if now != self._t:
                    self._t = now
                    clock.set(now)
                if run is None:
                    if handler is slotter:
                        slots.append(when)
                        continue
                    if handler is sweeper:
                        if batch or slots:  # a sweep sees every earlier call: end the round
                            push(heap, entry)
                            break
                        handler(None)
                        continue
                    assert handler is arriver  # noqa: S101 - the only other global event
                    run, cont, item, arg = self._arrive()
                else:
                    if run.mark == mark:  # one event per run and round
                        deferred.append(entry)
                        continue
                    run.pending -= 1
                    planned = handler(run) if gen == run.gen or gen < 0 else None
                    if planned is None:
                        if run.ended is not None and not run.pending:
                            self._forget(run)
                        continue
                    cont, item, arg = planned
                run.mark = mark
                if execute is not None:
                    batch.append((when, run, cont, arg, execute(item)))
                else:
                    batch.append((when, run, cont, arg, item))
            if not self._first_round and batch:
                self._first_round = [entry[1].id for entry in batch]
            if pool is not None and batch:
                self._dispatch(pool, batch)
            claims = self._claim(pool, slots) if slots else ()
            for when, run, cont, arg, outcome in batch:
                self.now = when
                cont(run, outcome, arg)
                if run.ended is not None and not run.pending:
                    self._forget(run)
            for claim in claims:
                self._claimed(*claim)
            for entry in deferred:
                push(heap, entry)
        self.now = latest

    def _claim(self, pool: Any, slots: list[float]) -> list[tuple[int, list[float], Any]]:
        """
        Make the round's claims, once its other calls are made: one per clock
        reading, of as many runs as it has slots, in order.
        """
        base = self._start
        groups: dict[int, list[float]] = {}
        for when in slots:
            groups.setdefault(base + int(when), []).append(when)
        claims = []
        for now, whens in groups.items():
            item: Item = ("claim", "", now, len(whens), None)
            if pool is None:
                assert self._executor is not None  # noqa: S101 - set in __init__
                claimed: Any = [(i, -1) for i in self._executor(item)]
            else:
                claimed = self._claim_in_pool(pool, item)
            claims.append((now, whens, claimed))
        self._t = self.clock.now()
        return claims

    @staticmethod
    def _claim_in_pool(pool: Any, item: Item) -> list[tuple[str, int]]:
        """Split a claim of ``k`` runs over the workers; which worker took which run."""
        n, k = len(pool), item[3]
        assigned: list[list[Item]] = [[] for _ in range(n)]
        for w in range(min(n, k)):
            share = k // n + (1 if w < k % n else 0)
            assigned[w].append((*item[:3], share, None))
        outcomes = pool.run(assigned)
        return [(run_id, w) for w, out in enumerate(outcomes) for ids in out for run_id in ids]

    @staticmethod
    def _dispatch(pool: Any, batch: list[Any]) -> None:
        """Spread a round's calls over the workers, make them, put the outcomes in."""
        n = len(pool)
        assigned: list[list[Item]] = [[] for _ in range(n)]
        loads = [0] * n
        where: list[int] = []
        for entry in batch:
            run, item = entry[1], entry[4]
            if item[0] in _LEASED_OPS and run.status is _IN_PROGRESS and run.holder >= 0:
                w = run.holder  # the worker holding the lease makes the turn's call
            else:
                w = loads.index(min(loads))
            assigned[w].append(item)
            loads[w] += 1
            where.append(w)
        outcomes = [iter(o) for o in pool.run(assigned)]
        for i, entry in enumerate(batch):
            batch[i] = (*entry[:4], next(outcomes[where[i]]))

    def _claimed(self, now: int, whens: list[float], claimed: list[tuple[str, int]]) -> None:
        """
        A claim at clock reading ``now`` was made: record the runs it expired first
        (every run past its deadline), then the runs it started, the longest waiting
        at the earliest slot.
        """
        self.now = whens[0]
        expiring, get = self._expiring, self.engine.get
        while expiring and expiring[0].deadline <= now:
            run = expiring.popleft()
            if run.ended is None:
                record = get(run.id)
                if record.status is not _EXPIRED:
                    msg = f"run {run.id} is '{record.status}' past its deadline, not expired"
                    raise RunflowError(msg)
                self.transitions += 1
                self._end(run, _EXPIRED, None)
        active = self._active
        runs = []
        for run_id, holder in claimed:
            run = active[run_id]
            if run.status is not _QUEUED:
                msg = f"claim() took run {run_id}; the simulation expected '{run.status}'"
                raise RunflowError(msg)
            run.holder = holder
            runs.append(run)
        runs.sort(key=_queue_order)
        for when, run in zip(whens, runs, strict=False):
            self.now = when
            delay = self._model_latency()
            if self._random() < self._model_stall_p:
                delay += self._model_stall()
            self.transitions += 1
            run.status = _IN_PROGRESS
            self._at(delay, self._turn, run, run.gen)

    # --- ending runs -----------------------------------------------------------------------

    def _end(self, run: _Run, status: RunStatus, detail: str | None) -> None:
        """Record a run that just became terminal."""
        before = run.status
        run.status = status
        run.ended = self.now
        del self._active[run.id]
        self._ttt.append(self.now - run.created)
        self._final[status] += 1
        self._rounds[run.rounds] += 1
        if status is _EXPIRED:
            self._expired_from[before] += 1
        elif status is _INCOMPLETE:
            self._reasons[detail] += 1
        elif status is _FAILED:
            self._codes[detail] += 1
        if before is _CANCELLING and status is not _CANCELLED:
            self._cancels["lost_race"] += 1
        if not run.pending:
            self._forget(run)
        self._ended += 1
        progress = self._progress
        if progress is not None and not self._ended & 1023:
            progress(self._ended, self.runs)

    def _refusal(self, run: _Run, status: RunStatus, trigger: str) -> None:
        """The engine refused a call: count it, and note an expiry it applied first."""
        self._refused[trigger] += 1
        if run.ended is None:
            if status is not _EXPIRED:  # the driver only calls what its view allows
                msg = (
                    f"the engine refused {trigger} on run {run.id} in status "
                    f"'{status}'; the simulation expected '{run.status}'"
                )
                raise RunflowError(msg)
            self.transitions += 1
            self._end(run, _EXPIRED, None)

    def _ended_cont(self, run: _Run, outcome: Outcome, _: object) -> None:
        """A call that ends the run (or is refused)."""
        status, detail, refused = outcome
        if refused is not None:
            self._refusal(run, status, refused)
            return
        self.transitions += 1
        self._end(run, status, detail)

    def _settle_remaining(self) -> None:
        """With no sweeps: read each run left active at its deadline (the expiry rule)."""
        get, clock, base = self.engine.get, self.clock, self._start
        for run in sorted(self._active.values(), key=lambda r: (r.deadline, r.created)):
            clock.set(max(clock.now(), run.deadline))
            self.now = max(self.now, float(run.deadline - base))
            record = get(run.id)
            self.transitions += 1
            self._end(run, record.status, detail_of(record))

    # --- arrivals ----------------------------------------------------------------------------

    def _arrive(self) -> tuple[_Run, Cont, Item, None]:
        """A run arrives: create it, and schedule its queue wait, cancel, next arrival."""
        n = self._arrived = self._arrived + 1
        budget = self._random() < self._budget_p
        run_id = f"{self._run_prefix}{n:017d}"
        run = _Run(run_id, self.now, self._t + self._ttl)
        run.since = self._t
        self._active[run_id] = run
        self._expiring.append(run)
        item = ("create", run_id, self._t, f"{self._thread_prefix}{n:017d}", budget)
        # none of this depends on the creation's outcome
        self._queue(run)
        if self._random() < self._cancel_p:
            self._at(self._cancel_after(), self._cancel, run, _ALWAYS)
        if n < self.runs:
            self._at(self._gap(self._rate), self._arriver, None, _ALWAYS)
        return run, self._created, item, None

    def _created(self, _: _Run, __: Outcome, ___: object) -> None:
        self.transitions += 1

    def _queue(self, _: _Run) -> None:
        """A run entered ``queued``: a start slot comes after a queue wait."""
        self._at(self._queue_wait(), self._slotter, None, _ALWAYS)

    def _slot(self, _: None) -> None:  # pragma: no cover - the loop collects slots
        """The event of a start slot (a marker: the loop makes the round's claims)."""
        raise AssertionError

    def _queue_wait(self) -> float:
        delay: float = self._queue_delay()
        if self._random() < self._queue_stall_p:
            delay += self._queue_stall()
        return delay

    # --- server side -----------------------------------------------------------------------

    def _tokens(self) -> tuple[int, int]:
        return max(1, round(self._prompt())), max(1, round(self._completion()))

    def _turn(self, run: _Run) -> Plan | None:
        """A model turn ends: fail, ask for tools, or complete."""
        if run.ended is not None:
            return None
        t = self._t
        if self._random() < self._fail_p:
            code = self._choices(FAILURE_CODES, self._codes_w)[0]
            return self._ended_cont, ("fail", run.id, t, code, None), None
        tokens = self._tokens()
        if run.rounds < self._max_rounds and self._random() < self._call_p:
            k = self._randint(self._min_calls, self._max_calls)
            latency = self._tool_latency
            delay = max(latency() for _ in range(k)) if k > 1 else latency()
            if self._random() < self._late_p:
                delay += self._late()
            left = run.deadline - t  # whole seconds to the deadline (>= 1)
            if delay >= left - (self.now % 1) and self._random() < self._rescue_p:
                delay = max(0.0, left - 1 - (self.now % 1))  # in the last second
            return self._required, ("tools", run.id, t, tokens, k), (k, delay)
        return self._ended_cont, ("complete", run.id, t, tokens, None), None

    def _required(self, run: _Run, outcome: Outcome, arg: tuple[int, float]) -> None:
        """The turn's tokens were added, then tool calls required (or a budget ended it)."""
        status, detail, refused = outcome
        if refused is not None:
            self._refusal(run, status, refused)
            return
        self.transitions += 1
        if status is _INCOMPLETE:  # a budget crossed by add_usage
            self._end(run, _INCOMPLETE, detail)
            return
        k, delay = arg
        run.status = _REQUIRES_ACTION
        run.rounds += 1
        run.calls = k
        self._calls += k
        self._at(delay, self._submit, run, run.gen)

    def _sweep(self, _: _Run | None) -> None:
        """Expire overdue runs, and cancel those stuck past the cancel grace."""
        for record in self.engine.sweep():
            run = self._active.get(record.id)
            if run is not None:
                self.transitions += 1
                if record.status is _CANCELLED:
                    self._cancels["cancelled_by_sweep"] += 1
                self._end(run, record.status, detail_of(record))
        if self._active or self._arrived < self.runs:
            self._at(self._sweep_every, self._sweeper, None, _ALWAYS)

    # --- client side -----------------------------------------------------------------------

    def _submit(self, run: _Run) -> Plan | None:
        """The client submits a round's outputs (late ones are refused: expired)."""
        t = self._t
        item = ("submit", run.id, t, run.calls, None)
        return self._submitted, item, (self._queue_wait(), t)

    def _submitted(self, run: _Run, outcome: Outcome, arg: tuple[float, int]) -> None:
        status, _, refused = outcome
        if refused is not None:
            self._refusal(run, status, refused)
            return
        self.transitions += 1
        run.status = _QUEUED
        delay, run.since = arg
        self._at(delay, self._slotter, None, _ALWAYS)

    def _cancel(self, run: _Run) -> Plan:
        """The client cancels; the plan also draws how the server will settle it."""
        settle: Handler | None = self._finish
        if self._random() < self._lose_p:
            outcome = self._choices(LOST_RACE_OUTCOMES, self._lost_w)[0]
            # a cancel lost to "expired": nothing settles it, it stays until its deadline
            settle = None if outcome == "expired" else self._lose[outcome]
        finish = self._cancel_finish() if settle is not None else 0.0
        return self._cancelled, ("cancel", run.id, self._t, None, None), (settle, finish)

    def _cancelled(self, run: _Run, outcome: Outcome, arg: tuple[Handler | None, float]) -> None:
        self._cancels["requested"] += 1
        status, _, refused = outcome
        if refused is not None:
            self._refusal(run, status, refused)
            return
        self.transitions += 1
        self._cancels["accepted"] += 1
        run.status = _CANCELLING
        run.gen += 1  # the pending turn or submission is void
        settle, finish = arg
        if settle is not None:
            self._at(finish, settle, run, run.gen)

    # --- settling a cancel (server side) ----------------------------------------------------

    def _finish(self, run: _Run) -> Plan | None:
        if run.ended is not None:
            return None
        return self._ended_cont, ("finish_cancel", run.id, self._t, None, None), None

    def _lose_completed(self, run: _Run) -> Plan | None:
        if run.ended is not None:
            return None
        return self._ended_cont, ("complete", run.id, self._t, self._tokens(), None), None

    def _lose_failed(self, run: _Run) -> Plan | None:
        if run.ended is not None:
            return None
        code = self._choices(FAILURE_CODES, self._codes_w)[0]
        return self._ended_cont, ("fail", run.id, self._t, code, None), None

    def _lose_incomplete(self, run: _Run) -> Plan | None:
        if run.ended is not None:
            return None
        return self._ended_cont, ("incomplete", run.id, self._t, self._tokens(), None), None

    # --- after the run -----------------------------------------------------------------------

    def replay(self) -> Iterator[tuple[float, RunEvent]]:
        """
        Every event of this simulation's runs, read back from the store's journal in
        its order, each with its virtual time (whole seconds since the start).

        This is how events of a simulation on a durable store, or made by worker
        processes, are seen: ``--events`` and ``--plot`` read them here. The
        simulation's own memory store keeps a journal only with ``keep_runs``.
        """
        store = self.engine.store
        # the first round holds only creations, committed in any order (workers) but
        # all before any later round's: the replay starts at the earliest of them
        firsts = [h[0].sequence for h in map(store.history, self._first_round) if h]
        if not firsts:
            return
        cursor = min(firsts) - 1
        prefix, base = self._run_prefix, self._start
        while True:
            entries = store.journal(cursor, 1000)
            if not entries:
                return
            for entry in entries:
                if entry.run_id.startswith(prefix):
                    at = float(entry.at - base)
                    for event in entry.events:
                        yield at, event
            cursor = entries[-1].sequence

    def close(self) -> None:
        """Close the store, if this simulation opened it from a URL."""
        if self._url is not None:
            self.engine.close()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def simulate(
    scenario: Scenario,
    *,
    runs: int,
    seed: int = 1,
    logger: Any = None,
    progress: Progress | None = None,
    store: Store | str | None = None,
    workers: int = 0,
    window: int = 1,
) -> Summary:
    """
    Run a :class:`Simulation` and return its :class:`Summary` (closing a store it
    opened from a URL).

    .. versionadded:: 0.1.0
    """
    with Simulation(
        scenario,
        runs=runs,
        seed=seed,
        logger=logger,
        progress=progress,
        store=store,
        workers=workers,
        window=window,
    ) as sim:
        return sim.run()
