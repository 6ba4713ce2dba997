"""
Invariants under random use: a hypothesis state machine over one engine and a FakeClock.

Deterministic: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from runflow import (
    Engine,
    InvalidTransitionError,
    RunObject,
    RunStatus,
    ThreadBusyError,
    Usage,
)
from runflow.testing import EventRecorder, FakeClock

START = 1_700_000_000
DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TRIGGERS = (
    "start",
    "require_action",
    "submit_tool_outputs",
    "complete",
    "fail",
    "mark_incomplete",
    "cancel",
    "finish_cancel",
    "expire",
)
#: LIFECYCLE §8 (complete may end incomplete when a budget is crossed).
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("queued", "start"): frozenset({"in_progress"}),
    ("queued", "cancel"): frozenset({"cancelling"}),
    ("queued", "expire"): frozenset({"expired"}),
    ("in_progress", "require_action"): frozenset({"requires_action"}),
    ("in_progress", "complete"): frozenset({"completed", "incomplete"}),
    ("in_progress", "fail"): frozenset({"failed"}),
    ("in_progress", "mark_incomplete"): frozenset({"incomplete"}),
    ("in_progress", "cancel"): frozenset({"cancelling"}),
    ("in_progress", "expire"): frozenset({"expired"}),
    ("requires_action", "submit_tool_outputs"): frozenset({"queued"}),
    ("requires_action", "cancel"): frozenset({"cancelling"}),
    ("requires_action", "expire"): frozenset({"expired"}),
    ("cancelling", "finish_cancel"): frozenset({"cancelled"}),
    ("cancelling", "complete"): frozenset({"completed", "incomplete"}),
    ("cancelling", "fail"): frozenset({"failed"}),
    ("cancelling", "mark_incomplete"): frozenset({"incomplete"}),
    ("cancelling", "expire"): frozenset({"expired"}),
}
#: The triggers that move a run forward from each active status.
HAPPY: dict[str, tuple[str, str]] = {
    "queued": ("start", "start"),
    "in_progress": ("require_action", "complete"),
    "requires_action": ("submit_tool_outputs", "submit_tool_outputs"),
    "cancelling": ("finish_cancel", "complete"),
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather"}},
    {"type": "function", "function": {"name": "get_time"}},
    {"type": "code_interpreter"},
]
END_STAMPS = ("completed_at", "failed_at", "cancelled_at")


#: The conftest's wire checker (schema + SDK), installed for this module's tests.
_CHECKERS: list[Callable[..., None]] = []


@pytest.fixture(autouse=True)
def _install_checker(check_wire: Callable[..., None]) -> Iterator[None]:
    _CHECKERS.append(check_wire)
    yield
    _CHECKERS.pop()


_VALID: set[str] = set()


def check_wire(run: RunObject) -> None:
    """Schema (strict: runflow created it) and the SDK's Run accept the wire dict."""
    wire = run.to_dict()
    key = json.dumps(wire, sort_keys=True)
    if key not in _VALID:  # each distinct dict is validated once
        _CHECKERS[-1](wire)
        _VALID.add(key)


def check_record(run: RunObject) -> None:
    """The invariants every single record satisfies."""
    status = run.status
    assert (run.required_action is not None) == (status is RunStatus.REQUIRES_ACTION)
    assert (run.last_error is not None) == (status is RunStatus.FAILED)
    assert (run.incomplete_details is not None) == (status is RunStatus.INCOMPLETE)
    if status.is_active:
        assert run.usage is None
        assert run.expires_at is not None
        assert all(getattr(run, s) is None for s in END_STAMPS)
    else:
        assert run.expires_at is None
    if status in (RunStatus.COMPLETED, RunStatus.INCOMPLETE):
        assert run.usage is not None
    if run.usage is not None:
        assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens
    ends = [s for s in END_STAMPS if getattr(run, s) is not None]
    assert len(ends) <= 1
    expected_end = {
        RunStatus.COMPLETED: ["completed_at"],
        RunStatus.INCOMPLETE: ["completed_at"],
        RunStatus.FAILED: ["failed_at"],
        RunStatus.CANCELLED: ["cancelled_at"],
    }.get(status, [])
    assert ends == expected_end
    if run.started_at is not None:
        assert run.started_at >= run.created_at
    for stamp in ends:
        value = getattr(run, stamp)
        assert value >= run.created_at
        if run.started_at is not None:
            assert value >= run.started_at
    if status in (RunStatus.IN_PROGRESS, RunStatus.REQUIRES_ACTION):
        assert run.started_at is not None
    check_wire(run)


class EngineMachine(RuleBasedStateMachine):
    """Random creates, triggers, usage, reads, sweeps and clock moves over one engine."""

    MAX_RUNS = 4

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.engine = Engine(clock=self.clock)
        self.recorder = EventRecorder()
        self.engine.subscribe(self.recorder)
        self.last: dict[str, RunObject] = {}
        self.ids: list[str] = []
        self.ttl: dict[str, int] = {}
        self.threads: dict[str, str] = {}
        self.checked_events = 0
        self.last_sequence = 0

    # --- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.ids) < EngineMachine.MAX_RUNS)
    @rule(
        ttl=st.sampled_from([None, 60, 600]),
        prompt_budget=st.sampled_from([None, 256, 1000]),
        completion_budget=st.sampled_from([None, 256, 1000]),
        parallel=st.booleans(),
        thread=st.sampled_from(["thread_p", "thread_q", "thread_r"]),
    )
    def create(
        self,
        ttl: int | None,
        prompt_budget: int | None,
        completion_budget: int | None,
        parallel: bool,
        thread: str,
    ) -> None:
        """Create a run; refused while its thread has an active run (R1.3)."""
        active = [
            rid
            for rid in self.ids
            if self.threads[rid] == thread and self.engine.get(rid).status.is_active
        ]
        if active:
            with pytest.raises(ThreadBusyError) as refused:
                self.engine.create(thread_id=thread, assistant_id="asst_p", tools=TOOLS)
            assert refused.value.run_id == active[0]
            assert str(refused.value) == (f"Thread {thread} already has an active run {active[0]}.")
            return
        run = self.engine.create(
            thread_id=thread,
            assistant_id="asst_p",
            model="gpt-4o",
            tools=TOOLS,
            max_prompt_tokens=prompt_budget,
            max_completion_tokens=completion_budget,
            parallel_tool_calls=parallel,
            expires_after=ttl,
        )
        self.threads[run.id] = thread
        self.ttl[run.id] = 600 if ttl is None else ttl
        assert run.expires_at == run.created_at + self.ttl[run.id]
        self.ids.append(run.id)

    @precondition(lambda self: bool(self.ids))
    @rule(
        which=st.integers(0, MAX_RUNS - 1),
        pick=st.integers(0, 11),
        prompt=st.integers(0, 400),
        completion=st.integers(0, 400),
        calls=st.integers(1, 3),
    )
    def step(self, *, which: int, pick: int, prompt: int, completion: int, calls: int) -> None:
        """Fire a trigger the run's status allows, mostly along the happy path."""
        run_id = self.ids[which % len(self.ids)]
        status = self.engine.get(run_id).status.value
        allowed = [t for t in TRIGGERS if (status, t) in ALLOWED] or list(TRIGGERS)
        trigger = HAPPY.get(status, allowed)[pick % 2] if pick < 6 else allowed[pick % len(allowed)]
        self._fire(
            run_id=run_id, trigger=trigger, prompt=prompt, completion=completion, calls=calls
        )

    @precondition(lambda self: bool(self.ids))
    @rule(
        which=st.integers(0, MAX_RUNS - 1),
        trigger=st.sampled_from(TRIGGERS),
        prompt=st.integers(0, 400),
        completion=st.integers(0, 400),
        calls=st.integers(1, 3),
    )
    def fire(self, *, which: int, trigger: str, prompt: int, completion: int, calls: int) -> None:
        """Fire any trigger: allowed ones move per §8, the others raise and change nothing."""
        self._fire(
            run_id=self.ids[which % len(self.ids)],
            trigger=trigger,
            prompt=prompt,
            completion=completion,
            calls=calls,
        )

    def _fire(self, *, run_id: str, trigger: str, prompt: int, completion: int, calls: int) -> None:
        before = self.engine.get(run_id)  # may expire it: that is a transition too
        kwargs: dict[str, Any] = {}
        if trigger == "require_action":
            n = calls if before.parallel_tool_calls else 1
            kwargs["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": ("get_weather", "get_time")[i % 2], "arguments": "{}"},
                }
                for i in range(n)
            ]
        elif trigger == "submit_tool_outputs":
            ids = [c.id for c in before.tool_calls] or ["call_0"]
            kwargs["tool_outputs"] = [{"tool_call_id": i, "output": "ok"} for i in ids]
        elif trigger == "complete":
            kwargs["usage"] = Usage.of(prompt, completion)
        elif trigger == "fail":
            kwargs.update(code="server_error", message="boom")
        elif trigger == "mark_incomplete":
            kwargs["reason"] = "max_completion_tokens"
        try:
            after = getattr(self.engine, trigger)(run_id, **kwargs)
        except InvalidTransitionError as error:
            refused = error
        else:
            refused = None
        if refused is not None:
            assert (before.status.value, trigger) not in ALLOWED
            assert refused.status == before.status
            assert self.engine.get(run_id) == before
        else:
            assert after.status in ALLOWED[before.status.value, trigger]
            now = self.clock.now()
            if after.status is RunStatus.IN_PROGRESS:
                assert after.started_at == now

    @precondition(lambda self: bool(self.ids))
    @rule(
        which=st.integers(0, MAX_RUNS - 1),
        prompt=st.integers(0, 300),
        completion=st.integers(0, 300),
    )
    def add_usage(self, which: int, prompt: int, completion: int) -> None:
        run_id = self.ids[which % len(self.ids)]
        before = self.engine.get(run_id)
        try:
            after = self.engine.add_usage(
                run_id, prompt_tokens=prompt, completion_tokens=completion
            )
        except InvalidTransitionError:
            assert before.status not in (RunStatus.IN_PROGRESS, RunStatus.CANCELLING)
        else:
            assert before.status in (RunStatus.IN_PROGRESS, RunStatus.CANCELLING)
            assert after.status in (before.status, RunStatus.INCOMPLETE)

    @rule(seconds=st.sampled_from([0, 1, 2, 5, 10, 30, 60, 120, 599, 600]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        """A sweep expires overdue runs and ends runs stuck cancelling past the grace."""
        now = self.clock.now()
        for run in self.engine.sweep():
            before = self.last[run.id]
            assert before.status.is_active
            if run.status is RunStatus.EXPIRED:
                assert before.expires_at is not None
                assert now >= before.expires_at
            else:
                assert run.status is RunStatus.CANCELLED
                assert before.status is RunStatus.CANCELLING
                assert before.expires_at is not None
                assert now < before.expires_at

    @precondition(lambda self: bool(self.ids))
    @rule(which=st.integers(0, MAX_RUNS - 1))
    def get(self, which: int) -> None:
        run = self.engine.get(self.ids[which % len(self.ids)])
        if run.status.is_active:
            assert self.clock.now() < run.expires_at  # type: ignore[operator]

    @precondition(lambda self: bool(self.ids))
    @rule()
    def runs_listing(self) -> None:
        assert [r.id for r in self.engine.runs()] == self.ids

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def records_hold(self) -> None:
        for run in self.engine.runs():
            check_record(run)
            previous = self.last.get(run.id)
            if previous is not None:
                self._check_step(previous, run)
            self.last[run.id] = run

    @invariant()
    def events_hold(self) -> None:
        events = self.recorder.events[self.checked_events :]
        self.checked_events = len(self.recorder.events)
        for event in events:
            assert event.sequence > self.last_sequence
            self.last_sequence = event.sequence
            assert event.event == f"thread.run.{event.data.status}" or (
                event.event == "thread.run.created" and event.data.status is RunStatus.QUEUED
            )
            check_record(event.data)

    def _check_step(self, old: RunObject, new: RunObject) -> None:
        """What may change between two readings of one run."""
        if old.status.is_terminal:
            assert new == old  # terminal states absorb
            return
        assert new.created_at == old.created_at
        for name in ("model", "instructions", "tools", "max_prompt_tokens", "parallel_tool_calls"):
            assert getattr(new, name) == getattr(old, name)
        for stamp in ("started_at", *END_STAMPS):
            before, after = getattr(old, stamp), getattr(new, stamp)
            if before is not None:
                assert after is not None
                assert after >= before  # stamps never go backwards
        if new.status.is_active:
            assert new.expires_at == old.expires_at == old.created_at + self.ttl[old.id]


EngineMachine.TestCase.settings = settings(DETERMINISTIC, max_examples=300, stateful_step_count=60)
TestEngineStateMachine = EngineMachine.TestCase
TestEngineStateMachine.__doc__ = "Random use keeps every lifecycle invariant (see EngineMachine)."


_metadata = st.dictionaries(st.text(min_size=1, max_size=64), st.text(max_size=512), max_size=16)
_budget = st.none() | st.integers(256, 100_000)


class TestCreateProperties:
    """Any create() within the request limits emits a schema- and SDK-valid run."""

    @DETERMINISTIC
    @given(
        metadata=st.none() | _metadata,
        temperature=st.none() | st.floats(0, 2),
        top_p=st.none() | st.floats(0, 1),
        max_prompt_tokens=_budget,
        max_completion_tokens=_budget,
        n_tools=st.integers(0, 20),
        parallel_tool_calls=st.booleans(),
        instructions=st.none() | st.text(max_size=50),
    )
    def test_created_runs_validate(
        self,
        *,
        metadata: dict[str, str] | None,
        temperature: float | None,
        top_p: float | None,
        max_prompt_tokens: int | None,
        max_completion_tokens: int | None,
        n_tools: int,
        parallel_tool_calls: bool,
        instructions: str | None,
    ) -> None:
        """The created run validates strictly and round-trips through from_dict."""
        engine = Engine(clock=FakeClock(START))
        run = engine.create(
            thread_id="thread_p",
            assistant_id="asst_p",
            tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(n_tools)],
            metadata=metadata,
            temperature=temperature,
            top_p=top_p,
            max_prompt_tokens=max_prompt_tokens,
            max_completion_tokens=max_completion_tokens,
            parallel_tool_calls=parallel_tool_calls,
            instructions=instructions,
        )
        check_record(run)
        assert RunObject.from_dict(run.to_dict()) == run

    @DETERMINISTIC
    @given(over=st.integers(1, 10))
    def test_limits_refuse_just_over(self, over: int) -> None:
        """17+ metadata keys and 21+ tools are always refused."""
        from runflow import ValidationError  # noqa: PLC0415

        engine = Engine(clock=FakeClock(START))
        with pytest.raises(ValidationError):
            engine.create(
                thread_id="t",
                assistant_id="a",
                metadata={f"k{i}": "v" for i in range(16 + over)},
            )
        with pytest.raises(ValidationError):
            engine.create(
                thread_id="t",
                assistant_id="a",
                tools=[{"type": "code_interpreter"}] * (20 + over),
            )
        assert engine.runs() == []
