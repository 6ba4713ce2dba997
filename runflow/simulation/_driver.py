"""
The virtual-time driver: a heap of timed events over a :class:`~runflow.testing.FakeClock`.

Every status change goes through a real :class:`runflow.Engine` (in-memory store). The
driver plays both sides: the server (starting runs, ending model turns, settling
cancels, sweeping) and the client (submitting tool outputs, cancelling). It learns
each run's new status from the records the engine returns, and from the engine's
refusals (a call on a run past its deadline expires it first), so it needs no event
subscription of its own: subscribe to :attr:`Simulation.engine` to see the events.
"""

from __future__ import annotations

import heapq
import itertools
import time
import typing
from collections import Counter
from collections.abc import Callable
from random import Random
from typing import Any

from runflow._engine import Engine
from runflow._model import (
    FunctionCall,
    FunctionDefinition,
    FunctionTool,
    RunStatus,
    ToolCall,
    ToolOutput,
    Usage,
)
from runflow.exceptions import InvalidTransitionError
from runflow.simulation._scenario import FAILURE_CODES, LOST_RACE_OUTCOMES, Scenario
from runflow.simulation._summary import Summary, Wall, summarize
from runflow.stores import MemoryStore
from runflow.testing import DEFAULT_START, FakeClock

__all__ = ["Progress", "Simulation", "simulate"]

#: ``progress(done, total)``: called now and then with the number of ended runs.
Progress = Callable[[int, int], object]

_S = RunStatus
_QUEUED, _IN_PROGRESS, _REQUIRES_ACTION = _S.QUEUED, _S.IN_PROGRESS, _S.REQUIRES_ACTION
_CANCELLING, _COMPLETED, _INCOMPLETE = _S.CANCELLING, _S.COMPLETED, _S.INCOMPLETE
_EXPIRED = _S.EXPIRED
_ALWAYS = -1  # the generation of an event that no cancel invalidates


class _Run:
    """The driver's private view of one run."""

    __slots__ = (
        "calls",
        "created",
        "deadline",
        "ended",
        "gen",
        "id",
        "kept",
        "pending",
        "rounds",
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


Handler = Callable[[Any], None]


@typing.final
class Simulation:
    """
    Drive ``runs`` runs of a scenario through a real engine on virtual time.

    Args:
        scenario: What the runs are drawn from.
        runs: How many runs arrive.
        seed: Seeds the one :class:`random.Random` every draw comes from: the same
            scenario, runs and seed give the same summary.
        logger: Passed to :class:`runflow.Engine` (a concrete structlog logger saves
            time on every transition).
        progress: Called as ``progress(ended, runs)`` every so often, and at the end.
        start: The virtual clock's first reading (Unix seconds).
        keep_runs: Keep ended runs, with their journal, in the engine's store
            (``engine.runs()`` then lists them all, ``engine.history()`` has every
            change). By default the store keeps no journal and a run is discarded once
            it has ended and no call can reach it any more, so memory holds only the
            live runs.

    Attributes:
        engine: The :class:`runflow.Engine` the runs go through (in memory, on
            :attr:`clock`). Subscribe to it before :meth:`run` to see every event.
        clock: The virtual clock, a :class:`runflow.testing.FakeClock`.
        now: The virtual time in seconds since the start, as a float; read it in a
            subscriber to place an event in time.
        transitions: Status changes made so far (a creation counts as one).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        runs: int,
        seed: int = 1,
        logger: Any = None,
        progress: Progress | None = None,
        start: int = DEFAULT_START,
        keep_runs: bool = False,
    ) -> None:
        if type(runs) is not int or runs < 0:
            msg = f"runs must be a non-negative integer, got {runs!r}"
            raise ValueError(msg)
        self.scenario = scenario
        self.runs = runs
        self.seed = seed
        self.clock = FakeClock(start)
        self._start = start
        self._numbers = itertools.count(1)
        self.engine = Engine(
            clock=self.clock,
            # the journal (history()) costs about half the engine's speed; kept runs keep it
            store=MemoryStore(journal=keep_runs),
            id_factory=lambda: f"run_sim{next(self._numbers):021d}",
            expires_after=scenario.runs.expires_after,
            cancel_grace=scenario.sweep.cancel_grace,
            logger=logger,
        )
        self._progress = progress
        self._keep = keep_runs
        self._ran = False
        self.now = 0.0
        self._heap: list[tuple[float, int, Handler, _Run | None, int]] = []
        self._seq = itertools.count()
        self._active: dict[str, _Run] = {}
        self._arrived = 0
        self._ended = 0
        self.transitions = 0
        # what the summary is made of
        self._ttt: list[float] = []
        self._final: Counter[str] = Counter()
        self._expired_from: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._codes: Counter[str] = Counter()
        self._rounds: Counter[int] = Counter()
        self._calls = 0
        self._refused: Counter[str] = Counter()
        self._cancels: Counter[str] = Counter()
        self._build_draws(scenario, Random(seed))
        self._lose: dict[str, Handler] = {
            "completed": self._lose_completed,
            "failed": self._lose_failed,
            "incomplete": self._lose_incomplete,
        }

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
        self._fail_p = s.failures.probability
        self._codes_w = [s.failures.codes[c] for c in FAILURE_CODES]
        self._cancel_p = s.cancellations.probability
        self._cancel_after = s.cancellations.after.sampler(rng)
        self._cancel_finish = s.cancellations.finish.sampler(rng)
        self._lose_p = s.cancellations.lose_race
        self._lost_w = [s.cancellations.lost_to[o] for o in LOST_RACE_OUTCOMES]
        self._budget_p = s.runs.budget_share
        self._sweep_every = s.sweep.interval
        names = s.runs.tools
        self._tools = tuple(FunctionTool(function=FunctionDefinition(name=n)) for n in names)
        self._budget = (
            s.runs.max_prompt_tokens or None,
            s.runs.max_completion_tokens or None,
        )
        # the tool calls and outputs of a round of k calls, built once
        self._round_calls: list[tuple[tuple[ToolCall, ...], tuple[ToolOutput, ...]]] = [((), ())]
        for k in range(1, self._max_calls + 1):
            calls = tuple(
                ToolCall(
                    id=f"call_{i}",
                    function=FunctionCall(
                        name=names[(i - 1) % len(names)] if names else "tool",
                        arguments='{"n": %d}' % i,  # noqa: UP031 - braces in the text
                    ),
                )
                for i in range(1, k + 1)
            )
            outputs = tuple(ToolOutput(tool_call_id=c.id, output="ok") for c in calls)
            self._round_calls.append((calls, outputs))
        self._code_msgs = {
            "server_error": "The server had an error while processing your request.",
            "rate_limit_exceeded": "Rate limit reached for requests.",
            "invalid_prompt": "Invalid prompt: the prompt was flagged.",
        }

    # --- the event queue -------------------------------------------------------------------

    def _at(self, delay: float, handler: Handler, run: _Run | None, gen: int) -> None:
        if run is not None:
            run.pending += 1
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), handler, run, gen))

    def _forget(self, run: _Run) -> None:
        """Discard an ended run no queued event can reach (unless runs are kept)."""
        if not self._keep and run.kept:
            run.kept = False
            self.engine.discard(run.id)

    def run(self) -> Summary:
        """
        Run the simulation to the end (every run terminal) and summarize it.

        Raises:
            RuntimeError: called a second time.
        """
        if self._ran:
            msg = "a Simulation runs once; make a new one"
            raise RuntimeError(msg)
        self._ran = True
        wall0 = time.perf_counter()
        heap, pop = self._heap, heapq.heappop
        clock, base, second = self.clock, self._start, 0
        if self.runs:
            self._at(0.0, self._arrive, None, _ALWAYS)
        if self._sweep_every > 0:
            self._at(self._sweep_every, self._sweep, None, _ALWAYS)
        while heap:
            when, _, handler, run, gen = pop(heap)
            self.now = when
            sec = int(when)
            if sec != second:
                second = sec
                clock.set(base + sec)
            if run is None:
                handler(run)
                continue
            run.pending -= 1
            if gen == run.gen or gen < 0:  # _ALWAYS: no cancel voids it
                handler(run)
            if run.ended is not None and not run.pending:
                self._forget(run)
        self._settle_remaining()
        wall = time.perf_counter() - wall0
        if self._progress is not None:
            self._progress(self._ended, self.runs)
        return summarize(self, Wall.of(wall, self.runs, self.transitions))

    # --- ending runs -----------------------------------------------------------------------

    def _end(self, run: _Run, status: RunStatus, record: Any) -> None:
        """Record a run that just became terminal (``record`` may be None: expired)."""
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
            self._reasons[record.incomplete_details.reason] += 1
        elif status is _S.FAILED:
            self._codes[record.last_error.code] += 1
        if before is _CANCELLING and status is not _S.CANCELLED:
            self._cancels["lost_race"] += 1
        if not run.pending:
            self._forget(run)
        self._ended += 1
        progress = self._progress
        if progress is not None and not self._ended & 1023:
            progress(self._ended, self.runs)

    def _refusal(self, run: _Run, err: InvalidTransitionError) -> None:
        """The engine refused a call: count it, and note an expiry it applied first."""
        self._refused[err.trigger] += 1
        if run.ended is None:
            if err.status != _EXPIRED:  # the driver only calls what its view allows
                raise err
            self.transitions += 1
            self._end(run, _EXPIRED, None)

    def _settle_remaining(self) -> None:
        """With no sweeps: read each run left active at its deadline (the expiry rule)."""
        get, clock, base = self.engine.get, self.clock, self._start
        for run in sorted(self._active.values(), key=lambda r: (r.deadline, r.created)):
            clock.set(max(clock.now(), run.deadline))
            self.now = max(self.now, float(run.deadline - base))
            record = get(run.id)
            self.transitions += 1
            self._end(run, record.status, record)

    # --- the handlers: arrivals --------------------------------------------------------------

    def _arrive(self, _: _Run | None) -> None:
        n = self._arrived = self._arrived + 1
        budget = self._random() < self._budget_p
        prompt_budget, completion_budget = self._budget if budget else (None, None)
        record = self.engine.create(
            thread_id=f"thread_sim{n:021d}",
            assistant_id="asst_sim",
            model=self.scenario.runs.model,
            tools=self._tools,
            parallel_tool_calls=self.scenario.runs.parallel_tool_calls,
            max_prompt_tokens=prompt_budget,
            max_completion_tokens=completion_budget,
        )
        self.transitions += 1
        run = _Run(record.id, self.now, typing.cast("int", record.expires_at))
        self._active[record.id] = run
        self._queue(run)
        if self._random() < self._cancel_p:
            self._at(self._cancel_after(), self._cancel, run, _ALWAYS)
        if n < self.runs:
            self._at(self._gap(self._rate), self._arrive, None, _ALWAYS)

    def _queue(self, run: _Run) -> None:
        delay = self._queue_delay()
        if self._random() < self._queue_stall_p:
            delay += self._queue_stall()
        self._at(delay, self._begin, run, run.gen)

    # --- server side -----------------------------------------------------------------------

    def _begin(self, run: _Run) -> None:
        if run.ended is not None:
            return
        try:
            self.engine.start(run.id)
        except InvalidTransitionError as err:
            self._refusal(run, err)
            return
        self.transitions += 1
        run.status = _IN_PROGRESS
        delay = self._model_latency()
        if self._random() < self._model_stall_p:
            delay += self._model_stall()
        self._at(delay, self._turn, run, run.gen)

    def _tokens(self) -> tuple[int, int]:
        return max(1, round(self._prompt())), max(1, round(self._completion()))

    def _turn(self, run: _Run) -> None:
        """A model turn ends: fail, ask for tools, or complete."""
        if run.ended is not None:
            return
        engine = self.engine
        try:
            if self._random() < self._fail_p:
                code = self._choices(FAILURE_CODES, self._codes_w)[0]
                record = engine.fail(run.id, code=code, message=self._code_msgs[code])
                self.transitions += 1
                self._end(run, record.status, record)
                return
            prompt, completion = self._tokens()
            if run.rounds < self._max_rounds and self._random() < self._call_p:
                record = engine.add_usage(
                    run.id, prompt_tokens=prompt, completion_tokens=completion
                )
                if record.status is _INCOMPLETE:  # a budget crossed
                    self.transitions += 1
                    self._end(run, _INCOMPLETE, record)
                    return
                self._require(run)
                return
            record = engine.complete(run.id, usage=Usage.of(prompt, completion))
        except InvalidTransitionError as err:
            self._refusal(run, err)
            return
        self.transitions += 1
        self._end(run, record.status, record)

    def _require(self, run: _Run) -> None:
        k = self._randint(self._min_calls, self._max_calls)
        calls, _ = self._round_calls[k]
        self.engine.require_action(run.id, calls)
        self.transitions += 1
        run.status = _REQUIRES_ACTION
        run.rounds += 1
        run.calls = k
        self._calls += k
        latency = self._tool_latency
        delay = max(latency() for _ in range(k)) if k > 1 else latency()
        if self._random() < self._late_p:
            delay += self._late()
        self._at(delay, self._submit, run, run.gen)

    def _sweep(self, _: _Run | None) -> None:
        """Expire overdue runs, and cancel those stuck past the cancel grace."""
        for record in self.engine.sweep():
            run = self._active.get(record.id)
            if run is not None:
                self.transitions += 1
                if record.status is _S.CANCELLED:
                    self._cancels["cancelled_by_sweep"] += 1
                self._end(run, record.status, record)
        if self._active or self._arrived < self.runs:
            self._at(self._sweep_every, self._sweep, None, _ALWAYS)

    # --- client side -----------------------------------------------------------------------

    def _submit(self, run: _Run) -> None:
        """The client submits a round's outputs (late ones are refused: expired)."""
        outputs = self._round_calls[run.calls][1]
        try:
            self.engine.submit_tool_outputs(run.id, outputs)
        except InvalidTransitionError as err:
            self._refusal(run, err)
            return
        self.transitions += 1
        run.status = _QUEUED
        self._queue(run)

    def _cancel(self, run: _Run) -> None:
        self._cancels["requested"] += 1
        try:
            self.engine.cancel(run.id)
        except InvalidTransitionError as err:
            self._refusal(run, err)
            return
        self.transitions += 1
        self._cancels["accepted"] += 1
        run.status = _CANCELLING
        run.gen += 1  # the pending turn, start or submission is void
        if self._random() < self._lose_p:
            outcome = self._choices(LOST_RACE_OUTCOMES, self._lost_w)[0]
            if outcome == "expired":
                return  # nothing settles it: it stays cancelling until its deadline
            self._at(self._cancel_finish(), self._lose[outcome], run, run.gen)
        else:
            self._at(self._cancel_finish(), self._finish, run, run.gen)

    # --- settling a cancel (server side) ----------------------------------------------------

    def _settle(self, run: _Run, call: Callable[[str], Any]) -> None:
        if run.ended is not None:
            return
        try:
            record = call(run.id)
        except InvalidTransitionError as err:
            self._refusal(run, err)
            return
        self.transitions += 1
        self._end(run, record.status, record)

    def _finish(self, run: _Run) -> None:
        self._settle(run, self.engine.finish_cancel)

    def _lose_completed(self, run: _Run) -> None:
        prompt, completion = self._tokens()
        self._settle(run, lambda r: self.engine.complete(r, usage=Usage.of(prompt, completion)))

    def _lose_failed(self, run: _Run) -> None:
        code = self._choices(FAILURE_CODES, self._codes_w)[0]
        msg = self._code_msgs[code]
        self._settle(run, lambda r: self.engine.fail(r, code=code, message=msg))

    def _lose_incomplete(self, run: _Run) -> None:
        prompt, completion = self._tokens()
        usage = Usage.of(prompt, completion)
        self._settle(
            run,
            lambda r: self.engine.mark_incomplete(r, reason="max_completion_tokens", usage=usage),
        )


def simulate(
    scenario: Scenario,
    *,
    runs: int,
    seed: int = 1,
    logger: Any = None,
    progress: Progress | None = None,
) -> Summary:
    """
    Run a :class:`Simulation` and return its :class:`Summary`.

    .. versionadded:: 0.1.0
    """
    return Simulation(scenario, runs=runs, seed=seed, logger=logger, progress=progress).run()
