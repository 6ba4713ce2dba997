"""The engine: every (status, trigger) pair, stamping, expiry, errors, events, threads."""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from runflow import (
    ASSISTANTS_RUN,
    CodeInterpreterTool,
    Engine,
    FunctionCall,
    FunctionDefinition,
    FunctionTool,
    IncompleteDetails,
    InvalidTransitionError,
    LastError,
    NamedToolChoice,
    ResponseFormatJsonObject,
    RunEvent,
    RunflowError,
    RunNotFoundError,
    RunObject,
    RunStatus,
    ThreadBusyError,
    ToolCall,
    ToolChoiceFunction,
    ToolOutput,
    ToolOutputsError,
    TruncationStrategy,
    Usage,
    ValidationError,
)
from runflow._engine import new_run_id
from runflow.testing import EventRecorder, FakeClock

STATUSES = [s.value for s in RunStatus]
TERMINAL = ["completed", "failed", "cancelled", "expired", "incomplete"]
ACTIVE = ["queued", "in_progress", "requires_action", "cancelling"]
TRIGGERS = [
    "start",
    "require_action",
    "submit_tool_outputs",
    "complete",
    "fail",
    "mark_incomplete",
    "cancel",
    "finish_cancel",
    "expire",
]

#: LIFECYCLE §8, written out independently of runflow's own table.
ALLOWED: dict[tuple[str, str], str] = {
    ("queued", "start"): "in_progress",
    ("queued", "cancel"): "cancelling",
    ("queued", "expire"): "expired",
    ("in_progress", "require_action"): "requires_action",
    ("in_progress", "complete"): "completed",
    ("in_progress", "fail"): "failed",
    ("in_progress", "mark_incomplete"): "incomplete",
    ("in_progress", "cancel"): "cancelling",
    ("in_progress", "expire"): "expired",
    ("requires_action", "submit_tool_outputs"): "queued",
    ("requires_action", "cancel"): "cancelling",
    ("requires_action", "expire"): "expired",
    ("cancelling", "finish_cancel"): "cancelled",
    ("cancelling", "complete"): "completed",
    ("cancelling", "fail"): "failed",
    ("cancelling", "mark_incomplete"): "incomplete",
    ("cancelling", "expire"): "expired",
}
SOURCES: dict[str, frozenset[str]] = {
    t: frozenset(s for (s, trig) in ALLOWED if trig == t) for t in TRIGGERS
}
PAIRS = list(itertools.product(STATUSES, TRIGGERS))
ALLOWED_PAIRS = [p for p in PAIRS if p in ALLOWED]
REFUSED_PAIRS = [p for p in PAIRS if p not in ALLOWED]
LATE_PAIRS = [p for p in ALLOWED_PAIRS if p[1] != "expire"]

RUN_ID = re.compile(r"run_[A-Za-z0-9]{24}")
USAGE = Usage.of(9, 4)
CONFIG_FIELDS = (
    "model",
    "instructions",
    "tools",
    "metadata",
    "temperature",
    "top_p",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
)


def pair_id(pair: tuple[str, str]) -> str:
    status, trigger = pair
    verdict = f"to-{ALLOWED[pair]}" if pair in ALLOWED else "refused"
    return f"{status}-{trigger}-{verdict}"


def refusal_message(status: str, trigger: str) -> str:
    """The exact message of the contract (API.md / issue 2)."""
    if trigger == "submit_tool_outputs":
        return f'Runs in status "{status}" do not accept tool outputs.'
    return f"Cannot {trigger.replace('_', ' ')} run with status '{status}'."


def call(call_id: str, name: str = "get_weather") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def output(call_id: str, text: str = "ok") -> dict[str, str]:
    return {"tool_call_id": call_id, "output": text}


def check_entered(before: RunObject, after: RunObject, now: int) -> None:
    """The stamping and clearing of LIFECYCLE §3/§8 for one transition at ``now``."""
    dest = after.status
    assert after.id == before.id
    assert after.created_at == before.created_at
    for name in CONFIG_FIELDS:
        assert getattr(after, name) == getattr(before, name), name
    assert after.started_at == (now if dest == "in_progress" else before.started_at)
    assert after.expires_at == (None if dest.is_terminal else before.expires_at)
    assert after.completed_at == (now if dest in ("completed", "incomplete") else None)
    assert after.failed_at == (now if dest == "failed" else None)
    assert after.cancelled_at == (now if dest == "cancelled" else None)
    assert (after.required_action is not None) == (dest == "requires_action")
    assert (after.last_error is not None) == (dest == "failed")
    assert (after.incomplete_details is not None) == (dest == "incomplete")
    if dest.is_active or dest in ("failed", "cancelled", "expired"):
        assert after.usage is None  # nothing was accrued
    else:
        assert after.usage is not None


class TestDrive:
    """The test helper that drives a fresh run to any status."""

    @pytest.mark.parametrize("status", STATUSES)
    def test_reaches_status(self, drive: Callable[..., RunObject], status: str) -> None:
        """``drive(status)`` returns a fresh run in that status, stored as returned."""
        run = drive(status)
        assert run.status == status


class TestTransitionMatrix:
    """All 81 (status, trigger) pairs: allowed ones move and stamp, the rest raise."""

    @pytest.mark.parametrize(
        ("status", "trigger"), ALLOWED_PAIRS, ids=[pair_id(p) for p in ALLOWED_PAIRS]
    )
    def test_changes_stay_within_the_effect_fields(
        self,
        *,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
        status: str,
        trigger: str,
    ) -> None:
        """A transition changes only fields the profile's ``effect_fields`` names."""
        before = drive(status)
        after = fire(trigger, before.id)
        changed = {k for k, v in after.__dict__.items() if before.__dict__[k] != v}
        assert changed
        assert changed <= ASSISTANTS_RUN.effect_fields

    def test_effect_fields(self) -> None:
        """Status, the stamps, the held fields, expires_at and usage."""
        assert ASSISTANTS_RUN.effect_fields == {
            "status",
            "started_at",
            "cancelled_at",
            "failed_at",
            "completed_at",
            "expires_at",
            "required_action",
            "last_error",
            "incomplete_details",
            "usage",
        }

    @pytest.mark.parametrize(
        ("status", "trigger"), ALLOWED_PAIRS, ids=[pair_id(p) for p in ALLOWED_PAIRS]
    )
    def test_allowed_moves_and_stamps(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
        status: str,
        trigger: str,
    ) -> None:
        """The run moves to the §8 destination with §3 stamps at the current time."""
        before = drive(status)
        now = clock.advance(7)
        after = fire(trigger, before.id)
        assert after.status == ALLOWED[status, trigger]
        check_entered(before, after, now)
        assert engine.get(before.id) == after

    @pytest.mark.parametrize(
        ("status", "trigger"), ALLOWED_PAIRS, ids=[pair_id(p) for p in ALLOWED_PAIRS]
    )
    def test_allowed_emits_one_event(
        self,
        *,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
        status: str,
        trigger: str,
    ) -> None:
        """One ``thread.run.<new status>`` event carrying the new record."""
        before = drive(status)
        recorder.clear()
        after = fire(trigger, before)
        assert recorder.names == [f"thread.run.{after.status}"]
        assert recorder.events[0].data == after

    @pytest.mark.parametrize(
        ("status", "trigger"), REFUSED_PAIRS, ids=[pair_id(p) for p in REFUSED_PAIRS]
    )
    def test_refused_raises_and_changes_nothing(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
        status: str,
        trigger: str,
    ) -> None:
        """InvalidTransitionError with typed attributes; the run and the events stay."""
        before = drive(status)
        clock.advance(7)
        seen = len(recorder.events)
        with pytest.raises(InvalidTransitionError) as info:
            fire(trigger, before.id)
        error = info.value
        assert error.run_id == before.id
        assert error.status == status
        assert error.trigger == trigger
        assert error.allowed == SOURCES[trigger]
        assert engine.get(before.id) == before
        assert len(recorder.events) == seen

    @pytest.mark.parametrize(
        ("status", "trigger"), REFUSED_PAIRS, ids=[pair_id(p) for p in REFUSED_PAIRS]
    )
    def test_refused_message_is_exact(
        self,
        *,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
        status: str,
        trigger: str,
    ) -> None:
        """OpenAI's message for submit and cancel; ``Cannot <trigger> run…`` otherwise."""
        run = drive(status)
        with pytest.raises(InvalidTransitionError) as info:
            fire(trigger, run)
        assert str(info.value) == refusal_message(status, trigger)

    @pytest.mark.parametrize("status", ["cancelling", *TERMINAL])
    def test_cancel_message_is_openais(
        self, drive: Callable[..., RunObject], engine: Engine, status: str
    ) -> None:
        """Cancel of an ended or already cancelling run: ``Cannot cancel run with status…``."""
        run = drive(status)
        with pytest.raises(InvalidTransitionError, match=r"^Cannot cancel run with status '"):
            engine.cancel(run)

    @pytest.mark.parametrize("status", [s for s in STATUSES if s != "requires_action"])
    def test_submit_message_is_openais(
        self, drive: Callable[..., RunObject], engine: Engine, status: str
    ) -> None:
        """Submit in any other status: ``Runs in status "<status>" do not accept…``."""
        run = drive(status)
        with pytest.raises(
            InvalidTransitionError,
            match=rf'^Runs in status "{status}" do not accept tool outputs\.$',
        ):
            engine.submit_tool_outputs(run, tool_outputs=[output("call_1")])

    def test_error_is_a_value_error(self, engine: Engine, drive: Callable[..., RunObject]) -> None:
        """InvalidTransitionError is a RunflowError and a ValueError."""
        run = drive("completed")
        with pytest.raises(ValueError) as info:
            engine.start(run)
        assert isinstance(info.value, InvalidTransitionError)
        assert isinstance(info.value, RunflowError)

    @pytest.mark.parametrize("status", TERMINAL)
    def test_terminal_absorbs(
        self,
        *,
        engine: Engine,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
        status: str,
    ) -> None:
        """No trigger moves a run out of a terminal status."""
        run = drive(status)
        for trigger in TRIGGERS:
            with pytest.raises(InvalidTransitionError):
                fire(trigger, run)
        assert engine.get(run) == run


class TestStamping:
    """LIFECYCLE §3 and §8: what each status sets and clears."""

    def test_create(self, new_run: Callable[..., RunObject], clock: FakeClock) -> None:
        """A new run is queued at now, expires 600 s later, nothing else stamped."""
        run = new_run(thread_id="thread_a")
        assert run.object == "thread.run"
        assert run.status is RunStatus.QUEUED
        assert run.created_at == clock.now()
        assert run.expires_at == clock.now() + 600
        assert run.started_at is None
        assert run.completed_at is run.failed_at is run.cancelled_at is None
        assert run.required_action is run.last_error is run.incomplete_details is None
        assert run.usage is None
        assert run.thread_id == "thread_a"
        assert run.assistant_id == "asst_a"
        assert run.model == "gpt-4o"
        assert run.instructions == "Be brief."

    def test_create_defaults(self, engine: Engine) -> None:
        """Only thread_id and assistant_id are needed; parallel_tool_calls defaults true."""
        run = engine.create(thread_id="thread_a", assistant_id="asst_a")
        assert run.tools == ()
        assert run.parallel_tool_calls is True
        assert run.instructions == ""

    @pytest.mark.parametrize(
        ("field", "record", "wire"),
        [
            (
                "tools",
                [CodeInterpreterTool(), FunctionTool(function=FunctionDefinition(name="f"))],
                [{"type": "code_interpreter"}, {"type": "function", "function": {"name": "f"}}],
            ),
            (
                "tool_choice",
                NamedToolChoice(type="function", function=ToolChoiceFunction(name="f")),
                {"type": "function", "function": {"name": "f"}},
            ),
            (
                "truncation_strategy",
                TruncationStrategy(type="last_messages", last_messages=3),
                {"type": "last_messages", "last_messages": 3},
            ),
            ("response_format", ResponseFormatJsonObject(), {"type": "json_object"}),
        ],
        ids=["tools", "tool_choice", "truncation_strategy", "response_format"],
    )
    @pytest.mark.parametrize("given_as", ["record", "wire"])
    def test_create_accepts_records_and_dicts(
        self,
        *,
        engine: Engine,
        check_wire: Callable[..., None],
        field: str,
        record: Any,
        wire: Any,
        given_as: str,
    ) -> None:
        """Tools, tool choice, truncation and response format: records or wire dicts."""
        kwargs: dict[str, Any] = {"tools": [FunctionTool(function=FunctionDefinition(name="f"))]}
        kwargs[field] = record if given_as == "record" else wire
        run = engine.create(thread_id="thread_a", assistant_id="asst_a", **kwargs)
        assert run.to_dict()[field] == wire
        check_wire(run.to_dict())

    def test_started_at_overwritten_on_reentry(
        self, engine: Engine, clock: FakeClock, new_run: Callable[..., RunObject]
    ) -> None:
        """started_at is the latest entry to in_progress; the queued run after submit keeps it."""
        run = new_run()
        first = clock.advance(3)
        run = engine.start(run)
        assert run.started_at == first
        run = engine.require_action(run, tool_calls=[call("call_1")])
        clock.advance(20)
        run = engine.submit_tool_outputs(run, tool_outputs=[output("call_1")])
        assert run.status is RunStatus.QUEUED
        assert run.started_at == first
        assert run.required_action is None
        again = clock.advance(15)
        run = engine.start(run)
        assert run.started_at == again
        assert run.expires_at == run.created_at + 600

    def test_expires_at_is_an_absolute_deadline(
        self, engine: Engine, clock: FakeClock, new_run: Callable[..., RunObject]
    ) -> None:
        """Neither start nor submit nor cancel move expires_at (R3.3)."""
        run = new_run()
        deadline = run.expires_at
        for step in (
            engine.start,
            lambda r: engine.require_action(r, tool_calls=[call("call_1")]),
            lambda r: engine.submit_tool_outputs(r, tool_outputs=[output("call_1")]),
            engine.start,
            engine.cancel,
        ):
            clock.advance(10)
            run = step(run)
            assert run.expires_at == deadline

    def test_expires_after_per_engine(self, clock: FakeClock) -> None:
        """``Engine(expires_after=...)`` changes the default 600 s."""
        engine = Engine(clock=clock, expires_after=60)
        run = engine.create(thread_id="thread_a", assistant_id="asst_a")
        assert run.expires_at == run.created_at + 60

    def test_expires_after_per_create(self, clock: FakeClock) -> None:
        """``create(expires_after=...)`` wins over the engine's setting."""
        engine = Engine(clock=clock, expires_after=60)
        run = engine.create(thread_id="thread_a", assistant_id="asst_a", expires_after=120)
        assert run.expires_at == run.created_at + 120
        other = engine.create(thread_id="thread_b", assistant_id="asst_a")
        assert other.expires_at == other.created_at + 60

    @pytest.mark.parametrize("status", TERMINAL)
    def test_expires_at_null_once_terminal(
        self, drive: Callable[..., RunObject], status: str
    ) -> None:
        """Every terminal status clears expires_at (R3.5)."""
        assert drive(status).expires_at is None

    @pytest.mark.parametrize("status", ACTIVE)
    def test_expires_at_kept_while_active(
        self, drive: Callable[..., RunObject], status: str
    ) -> None:
        """Every active status keeps created_at + 600."""
        run = drive(status)
        assert run.expires_at == run.created_at + 600

    def test_completed_at_on_completed_and_incomplete(
        self, engine: Engine, clock: FakeClock, drive: Callable[..., RunObject]
    ) -> None:
        """completed_at is set by both completed and incomplete (R3.7)."""
        a, b = drive("in_progress"), drive("in_progress")
        now = clock.advance(30)
        assert engine.complete(a, usage=USAGE).completed_at == now
        done = engine.mark_incomplete(b, reason="max_completion_tokens")
        assert done.completed_at == now
        assert done.incomplete_details == IncompleteDetails(reason="max_completion_tokens")

    def test_failed_sets_last_error(
        self, engine: Engine, clock: FakeClock, drive: Callable[..., RunObject]
    ) -> None:
        """fail() sets failed_at and last_error {code, message}."""
        run = drive("in_progress")
        now = clock.advance(4)
        run = engine.fail(run, code="rate_limit_exceeded", message="slow down")
        assert run.failed_at == now
        assert run.last_error == LastError(code="rate_limit_exceeded", message="slow down")
        assert run.to_dict()["last_error"] == {
            "code": "rate_limit_exceeded",
            "message": "slow down",
        }

    def test_cancel_sets_cancelled_at_only_when_cancelled(
        self, engine: Engine, clock: FakeClock, drive: Callable[..., RunObject]
    ) -> None:
        """cancelled_at stays null while cancelling, is set on cancelled (R3.9)."""
        run = engine.cancel(drive("in_progress"))
        assert run.cancelled_at is None
        now = clock.advance(2)
        assert engine.finish_cancel(run).cancelled_at == now

    def test_expired_sets_no_end_stamp(self, drive: Callable[..., RunObject]) -> None:
        """An expired run has none of completed_at, failed_at, cancelled_at (R3.10)."""
        run = drive("expired")
        assert run.completed_at is run.failed_at is run.cancelled_at is None
        assert run.started_at is None  # it never started

    def test_started_at_never_cleared(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """Ending a run keeps the started_at of its last start."""
        run = drive("requires_action")
        started = run.started_at
        assert engine.expire(run).started_at == started

    @pytest.mark.parametrize("status", ACTIVE)
    def test_usage_null_while_active(self, drive: Callable[..., RunObject], status: str) -> None:
        """usage is null in every active status."""
        assert drive(status).usage is None

    def test_usage_set_on_completed(self, engine: Engine, drive: Callable[..., RunObject]) -> None:
        """complete(usage=…) sets that usage (dict or record)."""
        done = engine.complete(
            drive("in_progress"),
            usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        )
        assert done.usage == USAGE
        assert engine.complete(drive("in_progress"), usage=USAGE).usage == USAGE

    def test_usage_set_on_completed_without_usage(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """A completion with no usage reported still sets usage (zeros), never null."""
        assert engine.complete(drive("in_progress")).usage == Usage.of(0, 0)

    def test_usage_set_on_incomplete(self, engine: Engine, drive: Callable[..., RunObject]) -> None:
        """mark_incomplete sets usage: the given one, or zeros."""
        given = engine.mark_incomplete(
            drive("in_progress"), reason="max_prompt_tokens", usage=USAGE
        )
        assert given.usage == USAGE
        bare = engine.mark_incomplete(drive("in_progress"), reason="max_prompt_tokens")
        assert bare.usage == Usage.of(0, 0)

    @pytest.mark.parametrize("status", ["failed", "cancelled", "expired"])
    def test_usage_null_on_other_ends_without_accrual(
        self, drive: Callable[..., RunObject], status: str
    ) -> None:
        """failed, cancelled and expired leave usage null when nothing accrued."""
        assert drive(status).usage is None

    @pytest.mark.parametrize("trigger", ["fail", "cancel", "expire"])
    def test_usage_on_other_ends_with_accrual(
        self,
        *,
        engine: Engine,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
        trigger: str,
    ) -> None:
        """failed, cancelled and expired carry the usage accrued with add_usage."""
        run = drive("in_progress")
        engine.add_usage(run, prompt_tokens=5, completion_tokens=2)
        run = fire(trigger, run)
        if trigger == "cancel":
            assert run.usage is None  # still active
            engine.add_usage(run, prompt_tokens=1)
            run = engine.finish_cancel(run)
            assert run.usage == Usage.of(6, 2)
        else:
            assert run.usage == Usage.of(5, 2)

    def test_complete_adds_to_accrued(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """complete(usage=…) adds its usage to what add_usage accumulated."""
        run = drive("in_progress")
        engine.add_usage(run, prompt_tokens=3, completion_tokens=2)
        assert engine.complete(run, usage=USAGE).usage == Usage.of(12, 6)

    def test_created_at_and_config_never_change(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        new_run: Callable[..., RunObject],
        recorder: EventRecorder,
    ) -> None:
        """created_at and the configuration fields are the same in every event (R2.2, R3.1)."""
        run = new_run(metadata={"a": "b"}, temperature=0.5, max_prompt_tokens=1000)
        for step in (
            engine.start,
            lambda r: engine.require_action(r, tool_calls=[call("call_1")]),
            lambda r: engine.submit_tool_outputs(r, tool_outputs=[output("call_1")]),
            engine.start,
            lambda r: engine.complete(r, usage=USAGE),
        ):
            clock.advance(5)
            step(run)
        for event in recorder.events:
            assert event.data.created_at == run.created_at
            for name in CONFIG_FIELDS:
                assert getattr(event.data, name) == getattr(run, name), name

    def test_full_lifecycle_dicts_validate(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        new_run: Callable[..., RunObject],
        drive: Callable[..., RunObject],
        recorder: EventRecorder,
        check_wire: Callable[..., None],
    ) -> None:
        """Every record of a full lifecycle validates (schema + SDK), strictly (no exemption)."""
        run = new_run(
            metadata={"owner": "a"},
            max_prompt_tokens=1000,
            max_completion_tokens=500,
            temperature=0.2,
            top_p=0.5,
            truncation_strategy={"type": "last_messages", "last_messages": 4},
            tool_choice="required",
            response_format={"type": "json_schema", "json_schema": {"name": "answer"}},
        )
        run = engine.start(run)
        run = engine.require_action(run, tool_calls=[call("call_1"), call("call_2")])
        run = engine.submit_tool_outputs(run, tool_outputs=[output("call_1"), output("call_2")])
        run = engine.start(run)
        engine.complete(run, usage=USAGE)
        for status in STATUSES:
            clock.advance(1)
            check_wire(drive(status).to_dict())
        for event in recorder.events:
            check_wire(event.data.to_dict())
            assert event.to_dict() == {"event": event.event, "data": event.data.to_dict()}

    def test_fail_refuses_unknown_code(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """fail() takes only OpenAI's three error codes; the run does not change."""
        run = drive("in_progress")
        with pytest.raises(ValidationError) as info:
            engine.fail(run, code="tool_user_error", message="x")
        assert info.value.path == "$.last_error.code"
        assert engine.get(run) == run

    def test_mark_incomplete_refuses_unknown_reason(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """mark_incomplete() takes only the two budget reasons; the run does not change."""
        run = drive("in_progress")
        with pytest.raises(ValidationError):
            engine.mark_incomplete(run, reason="too_long")  # type: ignore[arg-type]
        assert engine.get(run) == run

    def test_complete_refuses_inconsistent_usage(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """total_tokens must be prompt + completion; the run does not change."""
        run = drive("in_progress")
        with pytest.raises(ValidationError) as info:
            engine.complete(
                run, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 5}
            )
        assert info.value.path.startswith("$.usage")
        assert engine.get(run) == run


class TestExpiry:
    """Once now >= expires_at an active run is expired on its next read, transition or sweep."""

    def test_get_before_deadline_keeps_the_run(
        self, engine: Engine, clock: FakeClock, new_run: Callable[..., RunObject]
    ) -> None:
        """One second before the deadline nothing happens."""
        run = new_run()
        clock.advance(599)
        assert engine.get(run.id) == run

    @pytest.mark.parametrize("status", ACTIVE)
    @pytest.mark.parametrize("late", [0, 1, 10_000], ids=["at", "after", "long-after"])
    def test_get_expires(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
        status: str,
        late: int,
    ) -> None:
        """get() at or after expires_at returns the run expired, stored and announced."""
        run = drive(status)
        clock.set(run.expires_at + late)
        recorder.clear()
        got = engine.get(run.id)
        assert got.status is RunStatus.EXPIRED
        assert got.expires_at is None
        assert got.required_action is None
        assert got.completed_at is got.failed_at is got.cancelled_at is None
        assert recorder.names == ["thread.run.expired"]
        assert [stored.record for stored in engine.store] == [got]  # stored so
        assert engine.get(run.id) == got
        assert recorder.names == ["thread.run.expired"]

    def test_submit_after_deadline_fails_because_expired(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
    ) -> None:
        """A submit after the deadline raises naming ``expired``; the run is stored expired."""
        run = drive("requires_action")
        clock.advance(600)
        recorder.clear()
        with pytest.raises(InvalidTransitionError) as info:
            engine.submit_tool_outputs(run, tool_outputs=[output("call_1")])
        assert str(info.value) == 'Runs in status "expired" do not accept tool outputs.'
        assert info.value.status == "expired"
        assert recorder.names == ["thread.run.expired"]
        assert engine.runs()[0].status is RunStatus.EXPIRED

    @pytest.mark.parametrize(
        ("status", "trigger"),
        LATE_PAIRS,
        ids=[pair_id(p) for p in LATE_PAIRS],
    )
    def test_transition_after_deadline_fails_because_expired(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
        status: str,
        trigger: str,
    ) -> None:
        """Every otherwise allowed transition is refused once the deadline passed."""
        run = drive(status)
        clock.advance(600)
        recorder.clear()
        with pytest.raises(InvalidTransitionError) as info:
            fire(trigger, run)
        assert info.value.status == "expired"
        assert info.value.trigger == trigger
        assert "expired" in str(info.value)  # exact wording: TestTransitionMatrix
        assert recorder.names == ["thread.run.expired"]
        assert engine.runs()[0].status is RunStatus.EXPIRED

    def test_sweep_expires_due_runs_in_deadline_order(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        new_run: Callable[..., RunObject],
        drive: Callable[..., RunObject],
    ) -> None:
        """
        sweep() expires exactly the active runs past their deadline, in deadline
        order, then ends runs stuck ``cancelling`` past the grace, and returns them.
        """
        first = drive("requires_action")
        clock.advance(100)
        second = new_run()
        clock.advance(100)
        third = drive("cancelling")
        done = drive("completed")
        clock.set(first.created_at + 700)
        recorder.clear()
        swept = engine.sweep()
        assert [r.id for r in swept] == [first.id, second.id, third.id]
        assert [r.status for r in swept] == [
            RunStatus.EXPIRED,
            RunStatus.EXPIRED,
            RunStatus.CANCELLED,
        ]
        assert [engine.get(r.id) for r in (first, second, third)] == swept
        assert recorder.names == [
            "thread.run.expired",
            "thread.run.expired",
            "thread.run.cancelled",
        ]
        assert engine.sweep() == []
        assert engine.get(done.id) == done

    def test_a_listing_expires_overdue_runs_first(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
    ) -> None:
        """
        runs() reads every run it could list: the overdue ones are expired first
        (stored, announced once), so the statuses and the status filter are those
        get() gives. Leases and stuck cancellations stay for sweeps; a remote run
        observed past its local deadline is left alone.
        """
        overdue = [drive(status) for status in ACTIVE]
        clock.advance(300)
        fresh = drive("in_progress")
        done = drive("completed")
        remote = engine.observe(snapshot("in_progress"))
        clock.set(overdue[0].expires_at)
        recorder.clear()
        assert [r.status for r in engine.runs(status="in_progress")] == [RunStatus.IN_PROGRESS] * 2
        assert recorder.names == ["thread.run.expired"] * len(ACTIVE)
        listed = {r.id: r for r in engine.runs()}
        assert recorder.names == ["thread.run.expired"] * len(ACTIVE)  # once
        assert all(listed[r.id].status is RunStatus.EXPIRED for r in overdue)
        assert listed[fresh.id] == engine.get(fresh.id) == fresh
        assert listed[done.id] == done
        assert listed[remote.id] == remote
        assert [r.id for r in engine.runs(status="expired")] == [r.id for r in overdue]
        assert engine.sweep() == []

    def test_create_on_a_thread_whose_run_is_overdue(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
    ) -> None:
        """
        A thread's active run past its deadline holds the thread no longer: creating
        the next run reads it, which expires it (R3.4), and the new run takes the
        thread (R1.3). Before the deadline the thread stays busy, nothing changed.
        """
        holder = drive("requires_action")
        thread = holder.thread_id
        clock.advance(599)
        recorder.clear()
        with pytest.raises(ThreadBusyError) as info:
            engine.create(thread_id=thread, assistant_id="asst_a")
        assert info.value.run_id == holder.id
        assert engine.get(holder.id) == holder
        assert recorder.names == []
        clock.advance(1)
        run = engine.create(thread_id=thread, assistant_id="asst_a")
        assert run.status is RunStatus.QUEUED
        assert engine.get(holder.id).status is RunStatus.EXPIRED
        assert recorder.names == ["thread.run.expired", "thread.run.created", "thread.run.queued"]
        sequences = [e.sequence for e in recorder.events]
        assert sequences == sorted(set(sequences))
        with pytest.raises(ThreadBusyError):  # the new run holds it now
            engine.create(thread_id=thread, assistant_id="asst_a")

    def test_sweep_respects_per_create_deadline(
        self, engine: Engine, clock: FakeClock, new_run: Callable[..., RunObject]
    ) -> None:
        """A run created with a short expires_after is swept first."""
        long_lived = new_run()
        short = new_run(expires_after=30)
        clock.advance(30)
        assert [r.id for r in engine.sweep()] == [short.id]
        assert engine.get(long_lived.id).status is RunStatus.QUEUED

    def test_sweep_with_nothing_due(
        self, engine: Engine, new_run: Callable[..., RunObject]
    ) -> None:
        """sweep() on an engine with no due runs returns an empty list."""
        assert engine.sweep() == []
        new_run()
        assert engine.sweep() == []


class TestToolOutputs:
    """LIFECYCLE R4: all outputs in one call, matching the pending call ids."""

    @pytest.fixture(name="waiting")
    def _waiting(self, engine: Engine, drive: Callable[..., RunObject]) -> RunObject:
        run = drive("in_progress")
        return engine.require_action(run, tool_calls=[call("call_A"), call("call_B")])

    @pytest.mark.parametrize(
        ("got", "missing", "unknown", "duplicates"),
        [
            (["call_A"], ("call_B",), (), ()),
            ([], ("call_A", "call_B"), (), ()),
            (["call_A", "call_B", "call_C"], (), ("call_C",), ()),
            (["call_A", "call_C"], ("call_B",), ("call_C",), ()),
            (["call_A", "call_A", "call_B"], (), (), ("call_A",)),
            (["call_A", "call_A"], ("call_B",), (), ("call_A",)),
        ],
        ids=["missing", "none", "unknown", "swapped", "duplicate", "duplicate-and-missing"],
    )
    def test_mismatch_is_refused(
        self,
        *,
        engine: Engine,
        recorder: EventRecorder,
        waiting: RunObject,
        got: list[str],
        missing: tuple[str, ...],
        unknown: tuple[str, ...],
        duplicates: tuple[str, ...],
    ) -> None:
        """ToolOutputsError with OpenAI's message and typed attributes; nothing changes."""
        recorder.clear()
        with pytest.raises(ToolOutputsError) as info:
            engine.submit_tool_outputs(waiting, tool_outputs=[output(i) for i in got])
        error = info.value
        assert str(error) == f"Expected tool outputs for call_ids ['call_A', 'call_B'], got {got!r}"
        assert error.run_id == waiting.id
        assert error.expected == ("call_A", "call_B")
        assert error.got == tuple(got)
        assert error.missing == missing
        assert error.unknown == unknown
        assert error.duplicates == duplicates
        assert isinstance(error, RunflowError)
        assert isinstance(error, ValueError)
        assert engine.get(waiting) == waiting
        assert recorder.names == []

    def test_openai_example_message(self, engine: Engine, waiting: RunObject) -> None:
        """The exact message of LIFECYCLE R4.2."""
        with pytest.raises(
            ToolOutputsError,
            match=re.escape(
                "Expected tool outputs for call_ids ['call_A', 'call_B'], got ['call_A']"
            ),
        ):
            engine.submit_tool_outputs(waiting, tool_outputs=[output("call_A")])

    def test_any_order_is_accepted(self, engine: Engine, waiting: RunObject) -> None:
        """Outputs may come in any order."""
        run = engine.submit_tool_outputs(waiting, tool_outputs=[output("call_B"), output("call_A")])
        assert run.status is RunStatus.QUEUED
        assert run.required_action is None

    def test_records_are_accepted(self, engine: Engine, drive: Callable[..., RunObject]) -> None:
        """Tool calls and outputs may be runflow records instead of wire dicts."""
        run = engine.require_action(
            drive("in_progress"),
            tool_calls=[
                ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments="{}"))
            ],
        )
        assert run.tool_calls[0].id == "call_1"
        run = engine.submit_tool_outputs(
            run, tool_outputs=[ToolOutput(tool_call_id="call_1", output="sunny")]
        )
        assert run.status is RunStatus.QUEUED

    def test_malformed_output_is_a_validation_error(
        self, engine: Engine, waiting: RunObject
    ) -> None:
        """An output that is not a string is refused naming its path; nothing changes."""
        with pytest.raises(ValidationError) as info:
            engine.submit_tool_outputs(
                waiting,
                tool_outputs=[output("call_A"), {"tool_call_id": "call_B", "output": 3}],
            )
        assert info.value.path == "$.tool_outputs[1].output"
        assert engine.get(waiting) == waiting

    def test_required_action_wire_shape(self, waiting: RunObject) -> None:
        """required_action is OpenAI's submit_tool_outputs object with the calls in order."""
        assert waiting.to_dict()["required_action"] == {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": [call("call_A"), call("call_B")]},
        }
        assert [c.id for c in waiting.tool_calls] == ["call_A", "call_B"]


class TestRequireAction:
    """The tool calls a run may wait on."""

    @pytest.mark.parametrize(
        ("calls", "path"),
        [
            ([call("call_1", name="get_time")], "$.tool_calls[0].function.name"),
            ([], "$.tool_calls"),
            ([call("call_1"), call("call_1")], "$.tool_calls[1].id"),
            ([{"id": "call_1", "type": "function"}], "$.tool_calls[0].function"),
            (
                [{"id": "call_1", "function": {"name": "get_weather", "arguments": 1}}],
                "$.tool_calls[0].function.arguments",
            ),
        ],
        ids=["not-a-tool-of-the-run", "empty", "duplicate-id", "no-function", "arguments-int"],
    )
    def test_bad_calls_are_refused(
        self,
        *,
        engine: Engine,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
        calls: list[dict[str, Any]],
        path: str,
    ) -> None:
        """ValidationError naming the path; the run stays in_progress."""
        run = drive("in_progress")
        recorder.clear()
        with pytest.raises(ValidationError) as info:
            engine.require_action(run, tool_calls=calls)
        assert info.value.path == path
        assert engine.get(run) == run
        assert recorder.names == []

    @pytest.mark.parametrize(
        ("call_type", "rule"),
        [
            ("code_interpreter", "must be one of ['function'], got 'code_interpreter'"),
            (7, "must be one of ['function'], got 7"),
            ([], "must be one of ['function'], got []"),
        ],
    )
    def test_a_call_of_another_type_is_refused_in_words(
        self, engine: Engine, drive: Callable[..., RunObject], call_type: object, rule: str
    ) -> None:
        """A literal field is refused as the enum rules are (not with Python's repr of
        the ``Literal`` type)."""
        bad = {**call("call_1"), "type": call_type}
        with pytest.raises(ValidationError) as info:
            engine.require_action(drive("in_progress"), tool_calls=[bad])
        assert (info.value.path, info.value.rule) == ("$.tool_calls[0].type", rule)


def _valid_create() -> dict[str, Any]:
    return {"thread_id": "thread_a", "assistant_id": "asst_a"}


def _tools(n: int) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f"f{i}"}} for i in range(n)]


#: (id, create kwargs, path the error must name)
BAD_CREATE: list[tuple[str, dict[str, Any], str]] = [
    ("metadata-17-keys", {"metadata": {f"k{i}": "v" for i in range(17)}}, "$.metadata"),
    ("metadata-key-65", {"metadata": {"k" * 65: "v"}}, "$.metadata"),
    ("metadata-value-513", {"metadata": {"k": "v" * 513}}, "$.metadata"),
    ("metadata-value-int", {"metadata": {"k": 1}}, "$.metadata"),
    ("tools-21", {"tools": _tools(21)}, "$.tools"),
    ("tool-unknown-type", {"tools": [{"type": "browser"}]}, "$.tools"),
    ("max_prompt_tokens-255", {"max_prompt_tokens": 255}, "$.max_prompt_tokens"),
    ("max_prompt_tokens-0", {"max_prompt_tokens": 0}, "$.max_prompt_tokens"),
    ("max_completion_tokens-255", {"max_completion_tokens": 255}, "$.max_completion_tokens"),
    ("max_completion_tokens-16", {"max_completion_tokens": 16}, "$.max_completion_tokens"),
    ("max_prompt_tokens-bool", {"max_prompt_tokens": True}, "$.max_prompt_tokens"),
    ("temperature-negative", {"temperature": -0.1}, "$.temperature"),
    ("temperature-above-2", {"temperature": 2.01}, "$.temperature"),
    ("top_p-negative", {"top_p": -0.01}, "$.top_p"),
    ("top_p-above-1", {"top_p": 1.01}, "$.top_p"),
    (
        "last_messages-0",
        {"truncation_strategy": {"type": "last_messages", "last_messages": 0}},
        "$.truncation_strategy",
    ),
    (
        "max_num_results-51",
        {"tools": [{"type": "file_search", "file_search": {"max_num_results": 51}}]},
        "$.tools[0].file_search",
    ),
    (
        "score_threshold-2",
        {
            "tools": [
                {"type": "file_search", "file_search": {"ranking_options": {"score_threshold": 2}}}
            ]
        },
        "$.tools[0].file_search",
    ),
    ("parallel_tool_calls-string", {"parallel_tool_calls": "yes"}, "$.parallel_tool_calls"),
    ("tool_choice-bad", {"tool_choice": "always"}, "$.tool_choice"),
    ("response_format-bad", {"response_format": "xml"}, "$.response_format"),
]

GOOD_CREATE: list[tuple[str, dict[str, Any]]] = [
    ("metadata-16-keys", {"metadata": {f"k{i}": "v" for i in range(16)}}),
    ("metadata-key-64", {"metadata": {"k" * 64: "v"}}),
    ("metadata-value-512", {"metadata": {"k": "v" * 512}}),
    ("metadata-none", {"metadata": None}),
    ("tools-20", {"tools": _tools(20)}),
    ("budgets-256", {"max_prompt_tokens": 256, "max_completion_tokens": 256}),
    ("temperature-0", {"temperature": 0}),
    ("temperature-2", {"temperature": 2}),
    ("top_p-0", {"top_p": 0}),
    ("top_p-1", {"top_p": 1}),
    ("last_messages-1", {"truncation_strategy": {"type": "last_messages", "last_messages": 1}}),
    ("parallel_tool_calls-false", {"parallel_tool_calls": False}),
    ("instructions-none", {"instructions": None}),
]


_FN = FunctionTool(function=FunctionDefinition(name="f"))

#: (case, the call on an engine and an in_progress run with function tool f, the path)
BAD_RECORDS: list[tuple[str, Callable[[Engine, RunObject], object], str]] = [
    (
        "tool call arguments not a string",
        lambda e, r: e.require_action(
            r,
            [ToolCall(id="c", function=FunctionCall(name="f", arguments={"x": 1}))],  # type: ignore[arg-type]
        ),
        "$.tool_calls[0].function.arguments",
    ),
    (
        "tool call of another type",
        lambda e, r: e.require_action(
            r,
            [ToolCall(id="c", type="bogus", function=FunctionCall(name="f", arguments="{}"))],  # type: ignore[arg-type]
        ),
        "$.tool_calls[0].type",
    ),
    (
        "tool output not a string",
        lambda e, r: e.submit_tool_outputs(
            e.require_action(r, [ToolCall(id="c", function=FunctionCall(name="f", arguments=""))]),
            [ToolOutput(tool_call_id="c", output=5)],  # type: ignore[arg-type]
        ),
        "$.tool_outputs[0].output",
    ),
]

#: (case, create() arguments holding a bad record, the path)
BAD_CREATE_RECORDS: list[tuple[str, dict[str, Any], str]] = [
    (
        "function strict not a boolean",
        {"tools": [FunctionTool(function=FunctionDefinition(name="f", strict="yes"))]},  # type: ignore[arg-type]
        "$.tools[0].function.strict",
    ),
    (
        "function parameters not an object",
        {"tools": [FunctionTool(function=FunctionDefinition(name="f", parameters="x"))]},  # type: ignore[arg-type]
        "$.tools[0]",
    ),
    (
        "a bad record inside a wire dict",
        {"tools": [{"type": "function", "function": FunctionDefinition(name="f", strict="yes")}]},  # type: ignore[arg-type]
        "$.tools[0].function.strict",
    ),
    (
        "tool choice of another type",
        {"tool_choice": NamedToolChoice(type="bogus", function=ToolChoiceFunction(name="f"))},  # type: ignore[arg-type]
        "$.tool_choice.type",
    ),
    (
        "truncation last_messages not an integer",
        {"truncation_strategy": TruncationStrategy(type="last_messages", last_messages="3")},  # type: ignore[arg-type]
        "$.truncation_strategy.last_messages",
    ),
]


class TestRecordsGiven:
    """Records a caller builds run no validators: the engine checks them as their wire
    form, so a bad one is refused with its path, not stored (a durable store could not
    read the run back)."""

    @pytest.mark.parametrize(
        ("call", "path"),
        [
            *((c, p) for _, c, p in BAD_RECORDS),
            *(
                (lambda e, _, k=k: e.create(thread_id="t2", assistant_id="a", **k), p)
                for _, k, p in BAD_CREATE_RECORDS
            ),
        ],
        ids=[n for n, _, _ in (*BAD_RECORDS, *BAD_CREATE_RECORDS)],
    )
    def test_a_bad_record_is_refused_and_nothing_changes(
        self, call: Callable[[Engine, RunObject], object], path: str
    ) -> None:
        engine = Engine(clock=FakeClock(1_700_000_000))
        run = engine.start(engine.create(thread_id="t", assistant_id="a", tools=[_FN]))
        before = [(r.id, r.status) for r in engine.runs()]
        with pytest.raises(ValidationError) as info:
            call(engine, run)
        assert info.value.path == path
        current = [(r.id, r.status) for r in engine.runs()]
        # unchanged (the submit case: as its own require_action left it)
        assert current in (before, [(run.id, RunStatus.REQUIRES_ACTION)])

    def test_a_good_record_is_shared_not_copied(self) -> None:
        """A record that passes is used as it is (and the next time costs one lookup)."""
        engine = Engine(clock=FakeClock(1_700_000_000))
        tools = (_FN,)
        run = engine.create(thread_id="t", assistant_id="a", tools=tools)
        assert run.tools is tools
        call = ToolCall(id="c", function=FunctionCall(name="f", arguments="{}"))
        waiting = engine.require_action(engine.start(run), [call])
        assert waiting.tool_calls[0] is call


class TestCustomClock:
    """A caller's clock is read as integer Unix seconds, or refused: the wire's
    timestamps are integers (a ``time.time()`` clock would stamp fractions)."""

    class Readings:
        def __init__(self, *readings: object) -> None:
            self.readings = list(readings)

        def now(self) -> Any:
            return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

        def __repr__(self) -> str:
            return "Readings()"

    def test_a_float_reading_is_refused_before_anything_is_stored(self) -> None:
        engine = Engine(clock=self.Readings(1_700_000_000.75))
        with pytest.raises(TypeError) as info:
            engine.create(thread_id="thread_a", assistant_id="asst_a")
        assert str(info.value) == (
            "the engine's clock Readings() returned 1700000000.75: a Clock returns integer "
            "Unix seconds (as runflow.SystemClock does with int(time.time()))"
        )
        assert len(engine.store) == 0  # the store itself: runs() reads the clock too

    def test_a_bad_reading_later_leaves_the_run_as_it_was(self) -> None:
        engine = Engine(clock=self.Readings(1_700_000_000, 1_700_000_001.5))
        run = engine.create(thread_id="thread_a", assistant_id="asst_a")
        for call in (engine.start, engine.get, engine.cancel):
            with pytest.raises(TypeError, match=r"returned 1700000001\.5"):
                call(run)
        assert [stored.record for stored in engine.store] == [run]
        for listing in (engine.sweep, engine.runs):
            with pytest.raises(TypeError, match="integer Unix seconds"):
                listing()

    def test_an_integer_clock_of_ones_own_is_used_as_it_is(self) -> None:
        clock = self.Readings(1_700_000_000, 1_700_000_005)
        engine = Engine(clock=clock)
        assert engine.clock is clock
        run = engine.start(engine.create(thread_id="thread_a", assistant_id="asst_a"))
        assert (run.created_at, run.started_at) == (1_700_000_000, 1_700_000_005)


class TestCreateLimits:
    """create() checks the request limits of create_run_request.schema.json."""

    @pytest.mark.parametrize(
        ("kwargs", "path"), [(k, p) for _, k, p in BAD_CREATE], ids=[i for i, _, _ in BAD_CREATE]
    )
    def test_refused_naming_the_field(
        self, *, engine: Engine, recorder: EventRecorder, kwargs: dict[str, Any], path: str
    ) -> None:
        """ValidationError whose path names the field; nothing is stored or emitted."""
        with pytest.raises(ValidationError) as info:
            engine.create(**_valid_create(), **kwargs)
        assert info.value.path.startswith(path), (info.value.path, path)
        assert info.value.rule
        assert engine.runs() == []
        assert recorder.names == []

    @pytest.mark.parametrize("kwargs", [k for _, k in GOOD_CREATE], ids=[i for i, _ in GOOD_CREATE])
    def test_limits_are_inclusive(
        self, *, engine: Engine, kwargs: dict[str, Any], check_wire: Callable[..., None]
    ) -> None:
        """Values on the boundary are accepted, and the run's dict validates strictly."""
        run = engine.create(**_valid_create(), **kwargs)
        assert run.status is RunStatus.QUEUED
        check_wire(run.to_dict())

    @pytest.mark.parametrize(
        ("value", "kind"),
        [
            (True, "a boolean"),
            (1, "an integer"),
            (1.5, "a decimal"),
            (None, "null"),
            ([], "an array"),
        ],
    )
    def test_metadata_non_string_uses_openais_wording(
        self, engine: Engine, value: object, kind: str
    ) -> None:
        """OpenAI's exact words (R6.1), article included, from create() and modify()."""
        rule = f"Invalid type for 'metadata.modified': expected a string, but got {kind} instead."
        with pytest.raises(ValidationError) as info:
            engine.create(**_valid_create(), metadata={"modified": value})
        assert (info.value.path, info.value.rule) == ("$.metadata.modified", rule)
        run = engine.expire(engine.create(**_valid_create()))
        with pytest.raises(ValidationError) as info:
            engine.modify(run, metadata={"modified": value})
        assert info.value.rule == rule


class TestIds:
    """Run ids look like OpenAI's unless an id factory is given."""

    def test_shape(self, new_run: Callable[..., RunObject]) -> None:
        """``run_`` and 24 letters and digits."""
        for _ in range(200):
            assert RUN_ID.fullmatch(new_run().id)

    def test_unique(self, engine: Engine) -> None:
        """A thousand runs get a thousand ids."""
        ids = {engine.create(thread_id=f"t{i}", assistant_id="a").id for i in range(1000)}
        assert len(ids) == 1000

    def test_unique_across_threads(self) -> None:
        """Threads drawing ids at once from the batched pool never get the same one."""
        drawn: list[list[str]] = [[] for _ in range(8)]

        def draw(out: list[str]) -> None:
            out.extend(new_run_id() for _ in range(2000))

        workers = [threading.Thread(target=draw, args=(out,)) for out in drawn]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        ids = [i for out in drawn for i in out]
        assert len(set(ids)) == len(ids) == 16_000
        assert all(RUN_ID.fullmatch(i) for i in ids)

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_unique_across_fork(self) -> None:
        """A forked child never hands out the ids its parent drew but had not used."""
        new_run_id()  # the parent's pool now holds ids drawn in one batch
        read, write = os.pipe()
        with warnings.catch_warnings():  # 3.12+ warns of fork() beside live threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child process
            os.close(read)
            os.write(write, " ".join(new_run_id() for _ in range(50)).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            child = set(pipe.read().split())
        os.waitpid(pid, 0)
        parent = {new_run_id() for _ in range(50)}
        assert len(child) == 50
        assert not child & parent

    def test_id_factory(self, clock: FakeClock) -> None:
        """``Engine(id_factory=…)`` makes reproducible ids."""
        counter = itertools.count(1)
        engine = Engine(clock=clock, id_factory=lambda: f"run_test_{next(counter)}")
        assert [engine.create(thread_id=f"t{i}", assistant_id="a").id for i in range(3)] == [
            "run_test_1",
            "run_test_2",
            "run_test_3",
        ]
        assert engine.start("run_test_2").status is RunStatus.IN_PROGRESS


class TestLookup:
    """Unknown ids, run references, runs() and discard()."""

    @pytest.mark.parametrize(
        "method", ["get", "start", "cancel", "finish_cancel", "expire", "complete", "discard"]
    )
    def test_not_found(self, engine: Engine, method: str) -> None:
        """RunNotFoundError (a KeyError) with OpenAI's message and the id."""
        with pytest.raises(RunNotFoundError) as info:
            getattr(engine, method)("run_missing")
        assert str(info.value) == "No run found with id 'run_missing'."
        assert info.value.run_id == "run_missing"
        assert isinstance(info.value, KeyError)
        assert isinstance(info.value, RunflowError)

    @pytest.mark.parametrize(
        "method", ["submit_tool_outputs", "require_action", "fail", "mark_incomplete", "add_usage"]
    )
    def test_not_found_with_arguments(self, engine: Engine, method: str) -> None:
        """Methods with payloads raise RunNotFoundError too."""
        kwargs = {
            "submit_tool_outputs": {"tool_outputs": [output("call_1")]},
            "require_action": {"tool_calls": [call("call_1")]},
            "fail": {"code": "server_error", "message": "x"},
            "mark_incomplete": {"reason": "max_prompt_tokens"},
            "add_usage": {"prompt_tokens": 1},
        }[method]
        with pytest.raises(RunNotFoundError):
            getattr(engine, method)("run_missing", **kwargs)

    def test_accepts_id_or_record(self, engine: Engine, new_run: Callable[..., RunObject]) -> None:
        """Every method takes a run id or a RunObject (even a stale one)."""
        stale = new_run()
        assert engine.start(stale).status is RunStatus.IN_PROGRESS
        assert engine.get(stale).status is RunStatus.IN_PROGRESS
        assert engine.cancel(stale.id).status is RunStatus.CANCELLING

    def test_runs_in_creation_order_and_filters(
        self, engine: Engine, clock: FakeClock, drive: Callable[..., RunObject]
    ) -> None:
        """runs() lists in creation order; thread_id and status filter."""
        a = drive("queued", thread_id="thread_1")
        clock.advance(1)
        b = drive("completed", thread_id="thread_2")
        clock.advance(1)
        c = drive("queued", thread_id="thread_2")
        assert [r.id for r in engine.runs()] == [a.id, b.id, c.id]
        assert [r.id for r in engine.runs(thread_id="thread_2")] == [b.id, c.id]
        assert [r.id for r in engine.runs(status="queued")] == [a.id, c.id]
        assert [r.id for r in engine.runs(status=RunStatus.COMPLETED)] == [b.id]
        assert engine.runs(thread_id="thread_2", status="queued") == [c]
        assert [r.id for r in engine.runs(newest_first=True, limit=2)] == [c.id, b.id]

    def test_discard_forgets_an_ended_run(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """discard() of an ended run: get() then raises RunNotFoundError."""
        run = drive("completed")
        engine.discard(run)
        with pytest.raises(RunNotFoundError):
            engine.get(run.id)
        assert engine.runs() == []

    def test_discard_refuses_an_active_run(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """An active run cannot be discarded; it stays."""
        run = drive("in_progress")
        with pytest.raises(RunflowError):
            engine.discard(run)
        assert engine.get(run) == run

    def test_discard_of_an_overdue_run_expires_it_first(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
    ) -> None:
        """A run past its deadline is expired by the discard that reads it (R3.4), which
        then forgets it: it has ended. It used to be refused as still active."""
        run = drive("requires_action")
        clock.set(run.expires_at)
        recorder.clear()
        engine.discard(run)
        assert recorder.names == ["thread.run.expired"]
        with pytest.raises(RunNotFoundError):
            engine.get(run.id)


class TestEvents:
    """``thread.run.created`` + ``queued`` on create, one event per change, in order."""

    def test_threads_on_different_runs_deliver_in_sequence_order(self) -> None:
        """
        Threads driving different runs: a subscriber still sees one strictly
        increasing sequence, the journal's own order (the store numbers a write
        before the thread queues its event; another thread could queue its own in
        between), so a consumer may resume with ``events(after=last seen)``.
        """
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
        engine = Engine(clock=FakeClock(1_700_000_000))
        seen: list[int] = []
        engine.subscribe(lambda event: seen.append(event.sequence))

        def drive(worker: int) -> None:
            for i in range(150):
                run = engine.create(thread_id=f"thread_{worker}_{i}", assistant_id="asst_a")
                engine.complete(engine.start(run))

        try:
            threads = [threading.Thread(target=drive, args=(w,)) for w in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        assert len(seen) == 4 * 150 * 4
        assert seen == sorted(seen)
        assert len(set(seen)) == len(seen)
        assert seen == [e.sequence for e in engine.events(limit=10_000)]

    def test_create_emits_created_then_queued(
        self, recorder: EventRecorder, new_run: Callable[..., RunObject]
    ) -> None:
        """Both events carry the queued run."""
        run = new_run()
        assert recorder.names == ["thread.run.created", "thread.run.queued"]
        assert [e.data for e in recorder.events] == [run, run]
        assert all(isinstance(e, RunEvent) for e in recorder.events)

    def test_full_lifecycle(
        self, engine: Engine, recorder: EventRecorder, new_run: Callable[..., RunObject]
    ) -> None:
        """One event per status change, each with the record the call returned."""
        returned = [new_run()]
        returned.append(engine.start(returned[-1]))
        returned.append(engine.require_action(returned[-1], tool_calls=[call("call_1")]))
        returned.append(engine.submit_tool_outputs(returned[-1], tool_outputs=[output("call_1")]))
        returned.append(engine.start(returned[-1]))
        returned.append(engine.cancel(returned[-1]))
        returned.append(engine.complete(returned[-1], usage=USAGE))
        assert recorder.names == [
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.run.requires_action",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.run.cancelling",
            "thread.run.completed",
        ]
        assert [e.data for e in recorder.events[1:]] == returned

    def test_sequence_strictly_increases_across_runs(
        self, engine: Engine, recorder: EventRecorder, drive: Callable[..., RunObject]
    ) -> None:
        """Sequence numbers of one engine strictly increase, whatever the run."""
        for status in STATUSES:
            drive(status)
        sequences = [e.sequence for e in recorder.events]
        assert all(a < b for a, b in itertools.pairwise(sequences))

    def test_refusals_emit_nothing(
        self,
        *,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
        fire: Callable[[str, Any], RunObject],
    ) -> None:
        """A refused call emits no event."""
        run = drive("completed")
        recorder.clear()
        for trigger in TRIGGERS:
            with pytest.raises(InvalidTransitionError):
                fire(trigger, run)
        assert recorder.events == []

    def test_unsubscribe(self, engine: Engine, new_run: Callable[..., RunObject]) -> None:
        """After unsubscribe() the callback gets nothing more."""
        recorder = EventRecorder()
        unsubscribe = engine.subscribe(recorder)
        run = new_run()
        unsubscribe()
        engine.start(run)
        assert recorder.names == ["thread.run.created", "thread.run.queued"]

    def test_several_subscribers_see_the_same_events(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """Every subscriber gets every event, in the same order."""
        first, second = EventRecorder(), EventRecorder()
        engine.subscribe(first)
        engine.subscribe(second)
        drive("completed")
        assert first.events == second.events
        assert len(first.events) == 4

    def test_subscriber_may_call_back_into_the_engine(
        self, engine: Engine, new_run: Callable[..., RunObject]
    ) -> None:
        """A callback that drives the run from inside its callback works; order is kept."""
        seen: list[tuple[int, str]] = []

        def worker(event: RunEvent) -> None:
            seen.append((event.sequence, event.event))
            run = event.data
            if event.event == "thread.run.queued" and run.started_at is None:
                engine.start(run.id)
            elif event.event == "thread.run.in_progress":
                engine.require_action(run.id, tool_calls=[call("call_1")])
            elif event.event == "thread.run.requires_action":
                assert engine.get(run.id).status is RunStatus.REQUIRES_ACTION
                engine.submit_tool_outputs(run.id, tool_outputs=[output("call_1")])
            elif event.event == "thread.run.queued":
                engine.cancel(run.id)

        engine.subscribe(worker)
        recorder = EventRecorder()
        engine.subscribe(recorder)
        result: list[RunObject] = []
        thread = threading.Thread(target=lambda: result.append(new_run()), daemon=True)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), "a re-entrant subscriber deadlocked the engine"
        (run,) = result
        expected = [
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.run.requires_action",
            "thread.run.queued",
            "thread.run.cancelling",
        ]
        assert [name for _, name in seen] == expected
        assert recorder.names == expected
        assert [s for s, _ in seen] == sorted(s for s, _ in seen)
        assert engine.get(run.id).status is RunStatus.CANCELLING


def race(workers: list[Callable[[], Any]]) -> list[Any]:
    """Run the workers in threads released together; return each result or exception."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = workers[i]()
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    return results


class TestThreadSafety:
    """Concurrent calls on one run serialize: one wins, the others get a clean error."""

    N = 32

    def test_terminal_race_has_one_winner(
        self, engine: Engine, recorder: EventRecorder, drive: Callable[..., RunObject]
    ) -> None:
        """complete vs fail on one in_progress run: exactly one succeeds."""
        run = drive("in_progress")
        recorder.clear()
        workers = [
            (lambda: engine.complete(run.id, usage=USAGE))
            if i % 2
            else (lambda: engine.fail(run.id, code="server_error", message="x"))
            for i in range(self.N)
        ]
        results = race(workers)
        wins = [r for r in results if isinstance(r, RunObject)]
        losses = [r for r in results if not isinstance(r, RunObject)]
        assert len(wins) == 1
        assert all(isinstance(e, InvalidTransitionError) for e in losses)
        assert {e.status for e in losses} == {wins[0].status.value}
        assert engine.get(run.id) == wins[0]
        assert recorder.names == [f"thread.run.{wins[0].status}"]

    def test_cancel_race_has_one_winner(
        self, engine: Engine, recorder: EventRecorder, drive: Callable[..., RunObject]
    ) -> None:
        """Many cancels of one run: one moves it, the rest get OpenAI's cancel error."""
        run = drive("in_progress")
        recorder.clear()
        results = race([lambda: engine.cancel(run.id)] * self.N)
        wins = [r for r in results if isinstance(r, RunObject)]
        losses = [r for r in results if not isinstance(r, RunObject)]
        assert len(wins) == 1
        assert all(
            isinstance(e, InvalidTransitionError)
            and str(e) == "Cannot cancel run with status 'cancelling'."
            for e in losses
        )
        assert recorder.names == ["thread.run.cancelling"]

    def test_cancel_and_complete_race(
        self, engine: Engine, recorder: EventRecorder, drive: Callable[..., RunObject]
    ) -> None:
        """
        cancel vs complete on one in_progress run: exactly one complete wins, a cancel
        wins at most once and only before it; the final state is consistent.
        """
        run = drive("in_progress")
        recorder.clear()
        workers = [
            (lambda: engine.cancel(run.id))
            if i % 2
            else (lambda: engine.complete(run.id, usage=USAGE))
            for i in range(self.N)
        ]
        results = race(workers)
        wins = [r for r in results if isinstance(r, RunObject)]
        assert all(isinstance(r, RunObject | InvalidTransitionError) for r in results), results
        completed = [w for w in wins if w.status is RunStatus.COMPLETED]
        cancelling = [w for w in wins if w.status is RunStatus.CANCELLING]
        assert len(completed) == 1
        assert len(cancelling) <= 1
        assert len(wins) == len(completed) + len(cancelling)
        final = engine.get(run.id)
        assert final == completed[0]
        assert final.usage == USAGE
        assert recorder.names == [f"thread.run.{w.status}" for w in (*cancelling, *completed)]
        sequences = [e.sequence for e in recorder.events]
        assert sequences == sorted(set(sequences))

    def test_finish_cancel_and_complete_race(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """finish_cancel vs complete on a cancelling run: exactly one wins."""
        run = drive("cancelling")
        workers = [
            (lambda: engine.finish_cancel(run.id))
            if i % 2
            else (lambda: engine.complete(run.id, usage=USAGE))
            for i in range(self.N)
        ]
        results = race(workers)
        wins = [r for r in results if isinstance(r, RunObject)]
        assert len(wins) == 1
        assert all(isinstance(r, InvalidTransitionError) for r in results if r is not wins[0])
        assert engine.get(run.id) == wins[0]

    def test_expiry_race_expires_once(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
    ) -> None:
        """Many reads and sweeps past the deadline expire the run exactly once."""
        run = drive("requires_action")
        clock.advance(600)
        recorder.clear()
        workers: list[Callable[[], Any]] = [
            (lambda: engine.get(run.id)) if i % 2 else engine.sweep for i in range(self.N)
        ]
        results = race(workers)
        assert not [r for r in results if isinstance(r, Exception)]
        assert recorder.names == ["thread.run.expired"]
        assert engine.get(run.id).status is RunStatus.EXPIRED

    def test_different_runs_in_parallel(
        self, engine: Engine, recorder: EventRecorder, new_run: Callable[..., RunObject]
    ) -> None:
        """Threads driving their own runs all finish, each run's events in order."""
        runs = [new_run() for _ in range(16)]
        recorder.clear()

        def lifecycle(run: RunObject) -> Callable[[], RunObject]:
            def go() -> RunObject:
                r = engine.start(run)
                r = engine.require_action(r, tool_calls=[call("call_1")])
                r = engine.submit_tool_outputs(r, tool_outputs=[output("call_1")])
                r = engine.start(r)
                return engine.complete(r, usage=USAGE)

            return go

        results = race([lifecycle(r) for r in runs])
        assert all(isinstance(r, RunObject) and r.status == "completed" for r in results)
        for run in runs:
            names = [e.event for e in recorder.events if e.data.id == run.id]
            assert names == [
                "thread.run.in_progress",
                "thread.run.requires_action",
                "thread.run.queued",
                "thread.run.in_progress",
                "thread.run.completed",
            ]
        sequences = [e.sequence for e in recorder.events]
        assert sorted(sequences) == sorted(set(sequences))
        assert len(sequences) == 16 * 5


def snapshot(status: str, run_id: str = "run_observed", **changes: Any) -> dict[str, Any]:
    """A consistent wire snapshot of a remote run in ``status``."""
    created = 1_700_000_000
    terminal = status in TERMINAL
    d: dict[str, Any] = {
        "id": run_id,
        "object": "thread.run",
        "created_at": created,
        "thread_id": "thread_remote",
        "assistant_id": "asst_remote",
        "status": status,
        "required_action": None,
        "last_error": None,
        "expires_at": None if terminal else created + 600,
        "started_at": None if status == "queued" else created + 1,
        "cancelled_at": created + 9 if status == "cancelled" else None,
        "failed_at": created + 9 if status == "failed" else None,
        "completed_at": created + 9 if status in ("completed", "incomplete") else None,
        "incomplete_details": {"reason": "max_prompt_tokens"} if status == "incomplete" else None,
        "model": "gpt-4o",
        "instructions": None,
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "metadata": {},
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if status in ("completed", "incomplete")
        else None,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_prompt_tokens": None,
        "max_completion_tokens": None,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "response_format": "auto",
    }
    if status == "requires_action":
        d["required_action"] = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": [call("call_1")]},
        }
    if status == "failed":
        d["last_error"] = {"code": "server_error", "message": "boom"}
    d.update(changes)
    return d


#: LIFECYCLE R2.1: what a polled snapshot may show after each status.
REACHABLE: dict[str, frozenset[str]] = {
    "queued": frozenset(STATUSES) - {"queued"},
    "in_progress": frozenset(STATUSES) - {"in_progress"},
    "requires_action": frozenset(STATUSES) - {"requires_action"},
    "cancelling": frozenset({"cancelled", "completed", "failed", "incomplete", "expired"}),
    **{s: frozenset() for s in TERMINAL},
}
JUMPS = [(a, b) for a in STATUSES for b in STATUSES if a != b]


class TestObserve:
    """Tracking a remote run from polled snapshots (LIFECYCLE R2.1)."""

    def test_every_captured_sequence_is_accepted(
        self,
        engine: Engine,
        recorder: EventRecorder,
        capture_sequence: list[dict[str, Any]],
    ) -> None:
        """Each captured run's snapshots, in file order, are accepted; repeats emit nothing."""
        previous: str | None = None
        for snap in capture_sequence:
            seen = len(recorder.events)
            expected = RunObject.from_dict(snap)
            got = engine.observe(snap)
            assert got.status == expected.status
            assert got.id == expected.id
            if previous == got.status:
                assert len(recorder.events) == seen  # a same-status repeat is a no-op
            elif previous is not None:
                assert recorder.names[seen:] == [f"thread.run.{got.status}"]
            previous = got.status
        assert engine.get(capture_sequence[0]["id"]).status == previous

    def test_captured_runs_are_not_expired_locally(
        self,
        engine: Engine,
        clock: FakeClock,
        capture_sequence: list[dict[str, Any]],
    ) -> None:
        """An observed run keeps its remote status however late the local clock is."""
        for snap in capture_sequence:
            engine.observe(snap)
        last = engine.get(capture_sequence[0]["id"])
        clock.set(2_000_000_000)
        assert engine.sweep() == []
        assert engine.get(last.id) == last

    @pytest.mark.parametrize(
        ("before", "after"),
        JUMPS,
        ids=[f"{a}-to-{b}-{'ok' if b in REACHABLE[a] else 'refused'}" for a, b in JUMPS],
    )
    def test_jump(
        self,
        engine: Engine,
        recorder: EventRecorder,
        before: str,
        after: str,
    ) -> None:
        """A reachable jump is accepted; a forbidden one raises and changes nothing."""
        first = engine.observe(snapshot(before))
        seen = len(recorder.events)
        if after in REACHABLE[before]:
            got = engine.observe(snapshot(after))
            assert got.status == after
            assert engine.get(first.id) == got
            assert recorder.names[seen:] == [f"thread.run.{after}"]
        else:
            with pytest.raises(InvalidTransitionError) as info:
                engine.observe(snapshot(after))
            assert info.value.run_id == first.id
            assert info.value.status == before
            assert engine.get(first.id) == first
            assert len(recorder.events) == seen

    @pytest.mark.parametrize("status", STATUSES)
    def test_same_status_repeat_is_a_no_op(
        self, engine: Engine, recorder: EventRecorder, status: str
    ) -> None:
        """The same status again is accepted without an event, even from terminal."""
        engine.observe(snapshot(status))
        seen = len(recorder.events)
        assert engine.observe(snapshot(status)).status == status
        assert len(recorder.events) == seen

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("created_at", 1_600_000_000),
            ("thread_id", "thread_other"),
            ("assistant_id", "asst_other"),
            ("model", "gpt-4o-mini"),
            ("tools", []),
            ("temperature", 0.5),
            ("parallel_tool_calls", False),
        ],
    )
    def test_a_snapshot_changing_a_fixed_field_is_refused(
        self, engine: Engine, recorder: EventRecorder, field: str, value: object
    ) -> None:
        """
        created_at (R3.1), the thread, the assistant and the configuration (R2.2) never
        change during a run: a snapshot changing one is refused, naming the field and
        both values, and nothing changes. Other fields (metadata, R6) may change.
        """
        first = engine.observe(snapshot("queued"))
        seen = list(recorder.names)
        with pytest.raises(ValidationError) as info:
            engine.observe(snapshot("in_progress", **{field: value}))
        assert info.value.path == f"$.{field}"
        assert info.value.rule.startswith(f"a run's {field} never changes (LIFECYCLE R2.2, R3.1)")
        assert repr(value) in info.value.rule or field == "tools"
        assert engine.get(first.id) == first
        assert recorder.names == seen
        moved = engine.observe(snapshot("in_progress", metadata={"k": "v"}))
        assert moved.metadata == {"k": "v"}

    def test_accepts_a_run_object(self, engine: Engine) -> None:
        """observe() takes a RunObject as well as a dict."""
        run = RunObject.from_dict(snapshot("in_progress"))
        assert engine.observe(run) == run

    @pytest.mark.parametrize("status", ACTIVE)
    def test_observed_run_is_not_expired(
        self, engine: Engine, clock: FakeClock, status: str
    ) -> None:
        """Local expiry and sweeps leave an observed run alone (it belongs to the server)."""
        run = engine.observe(snapshot(status))
        clock.set(run.expires_at + 10_000)
        assert engine.sweep() == []
        assert engine.get(run.id) == run
