"""Hooks: required-action hooks, incomplete-reason hooks and usage budgets."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest

from runflow import (
    Engine,
    FunctionCall,
    IncompleteDetails,
    InvalidTransitionError,
    RunObject,
    RunStatus,
    ToolCall,
    ToolOutput,
    ToolOutputsError,
    Usage,
    ValidationError,
)
from runflow.hooks import IncompleteReasonHook, RequiredActionHook
from runflow.testing import EventRecorder, FakeClock

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
OUTPUT = {"tool_call_id": "call_1", "output": "sunny"}
TOOL = {"type": "function", "function": {"name": "get_weather"}}


class RefusedError(Exception):
    """What the refusing test hooks raise."""


class Rewriter:
    """Upper-cases the arguments of every call and records what it saw."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.seen_calls: list[tuple[RunObject, tuple[ToolCall, ...]]] = []
        self.seen_outputs: list[tuple[RunObject, tuple[ToolOutput, ...]]] = []

    def validate_tool_calls(
        self, run: RunObject, tool_calls: Sequence[ToolCall]
    ) -> Sequence[ToolCall]:
        self.seen_calls.append((run, tuple(tool_calls)))
        return [
            attrs.evolve(
                c,
                function=FunctionCall(
                    name=c.function.name, arguments=c.function.arguments.upper() + self.tag
                ),
            )
            for c in tool_calls
        ]

    def validate_tool_outputs(self, run: RunObject, tool_outputs: Sequence[ToolOutput]) -> None:
        self.seen_outputs.append((run, tuple(tool_outputs)))


class Refuser:
    """Refuses tool calls or tool outputs."""

    def __init__(self, *, calls: bool = False, outputs: bool = False) -> None:
        self.calls = calls
        self.outputs = outputs
        self.output_checks = 0

    def validate_tool_calls(
        self, run: RunObject, tool_calls: Sequence[ToolCall]
    ) -> Sequence[ToolCall]:
        if self.calls:
            msg = "no weather today"
            raise RefusedError(msg)
        return tool_calls

    def validate_tool_outputs(self, run: RunObject, tool_outputs: Sequence[ToolOutput]) -> None:
        self.output_checks += 1
        if self.outputs:
            raise ValidationError("$.tool_outputs[0].output", "must not say sunny")


class Reason:
    """An incomplete-reason hook that answers a fixed reason and logs its calls."""

    def __init__(self, answer: Any, log: list[str], name: str) -> None:
        self.answer = answer
        self.log = log
        self.name = name
        self.usages: list[Usage] = []

    def incomplete_reason(self, run: RunObject, usage: Usage) -> Any:
        self.log.append(self.name)
        self.usages.append(usage)
        return self.answer


class Exploding:
    """An incomplete-reason hook that raises."""

    def incomplete_reason(self, run: RunObject, usage: Usage) -> Any:
        msg = "hook failed"
        raise RefusedError(msg)


def in_progress(engine: Engine, **kwargs: Any) -> RunObject:
    run = engine.create(thread_id="thread_a", assistant_id="asst_a", tools=[TOOL], **kwargs)
    return engine.start(run)


class TestProtocols:
    """The hook protocols are runtime-checkable Protocols."""

    def test_test_hooks_satisfy_the_protocols(self) -> None:
        """Plain classes with the right methods are hooks; no registration by name."""
        assert isinstance(Rewriter(), RequiredActionHook)
        assert isinstance(Refuser(), RequiredActionHook)
        assert isinstance(Reason(None, [], "r"), IncompleteReasonHook)
        assert not isinstance(Reason(None, [], "r"), RequiredActionHook)


class TestRequiredActionHook:
    """``validate_tool_calls`` may rewrite or refuse; ``validate_tool_outputs`` may refuse."""

    def test_rewrites_tool_calls(self, clock: FakeClock) -> None:
        """The run asks for the calls the hook returned."""
        hook = Rewriter()
        engine = Engine(clock=clock, required_action_hooks=[hook])
        run = in_progress(engine)
        run = engine.require_action(run, tool_calls=[CALL])
        assert run.tool_calls[0].function.arguments == '{"CITY": "PARIS"}'
        ((seen_run, seen_calls),) = hook.seen_calls
        assert seen_run.status is RunStatus.IN_PROGRESS
        assert seen_calls == (
            ToolCall(
                id="call_1",
                function=FunctionCall(name="get_weather", arguments=CALL["function"]["arguments"]),
            ),
        )

    def test_hooks_run_in_order_each_on_the_previous_result(self, clock: FakeClock) -> None:
        """Several hooks chain in registration order."""
        first, second = Rewriter("-1"), Rewriter("-2")
        engine = Engine(clock=clock, required_action_hooks=[first, second])
        run = engine.require_action(in_progress(engine), tool_calls=[CALL])
        assert run.tool_calls[0].function.arguments == '{"CITY": "PARIS"}-1'.upper() + "-2"
        assert second.seen_calls[0][1][0].function.arguments == '{"CITY": "PARIS"}-1'

    def test_refusing_tool_calls_leaves_the_run_unchanged(self, clock: FakeClock) -> None:
        """The hook's exception reaches the caller as raised; no change, no event."""
        engine = Engine(clock=clock, required_action_hooks=[Refuser(calls=True)])
        recorder = EventRecorder()
        engine.subscribe(recorder)
        run = in_progress(engine)
        recorder.clear()
        clock.advance(3)
        with pytest.raises(RefusedError, match="no weather today"):
            engine.require_action(run, tool_calls=[CALL])
        assert engine.get(run) == run
        assert recorder.events == []

    def test_rewrite_is_checked_again(self, clock: FakeClock) -> None:
        """A rewrite naming a function the run lacks is refused; the run does not change."""

        class Renamer:
            def validate_tool_calls(
                self, run: RunObject, tool_calls: Sequence[ToolCall]
            ) -> Sequence[ToolCall]:
                return [
                    attrs.evolve(c, function=FunctionCall(name="launch", arguments="{}"))
                    for c in tool_calls
                ]

            def validate_tool_outputs(
                self, run: RunObject, tool_outputs: Sequence[ToolOutput]
            ) -> None:
                return None

        engine = Engine(clock=clock, required_action_hooks=[Renamer()])
        run = in_progress(engine)
        with pytest.raises(ValidationError):
            engine.require_action(run, tool_calls=[CALL])
        assert engine.get(run) == run

    def test_sees_tool_outputs(self, clock: FakeClock) -> None:
        """validate_tool_outputs gets the run (still requires_action) and the outputs."""
        hook = Rewriter()
        engine = Engine(clock=clock, required_action_hooks=[hook])
        run = engine.require_action(in_progress(engine), tool_calls=[CALL])
        engine.submit_tool_outputs(run, tool_outputs=[OUTPUT])
        ((seen_run, seen_outputs),) = hook.seen_outputs
        assert seen_run == run
        assert seen_outputs == (ToolOutput(tool_call_id="call_1", output="sunny"),)

    def test_refusing_tool_outputs_leaves_the_run_unchanged(self, clock: FakeClock) -> None:
        """The run stays requires_action with its tool calls; a later submit can succeed."""
        hook = Refuser(outputs=True)
        engine = Engine(clock=clock, required_action_hooks=[hook])
        recorder = EventRecorder()
        engine.subscribe(recorder)
        run = engine.require_action(in_progress(engine), tool_calls=[CALL])
        recorder.clear()
        with pytest.raises(ValidationError, match="must not say sunny"):
            engine.submit_tool_outputs(run, tool_outputs=[OUTPUT])
        assert engine.get(run) == run
        assert recorder.events == []
        hook.outputs = False
        assert engine.submit_tool_outputs(run, tool_outputs=[OUTPUT]).status is RunStatus.QUEUED

    def test_mismatched_outputs_are_refused_before_the_hook(self, clock: FakeClock) -> None:
        """Outputs that do not match the pending calls never reach the hook."""
        hook = Refuser()
        engine = Engine(clock=clock, required_action_hooks=[hook])
        run = engine.require_action(in_progress(engine), tool_calls=[CALL])
        with pytest.raises(ToolOutputsError):
            engine.submit_tool_outputs(run, tool_outputs=[{"tool_call_id": "x", "output": "y"}])
        assert hook.output_checks == 0


class TestIncompleteReasonHook:
    """complete(): the built-in budget first, then the hooks in order."""

    def _engine(self, clock: FakeClock, *hooks: Any) -> Engine:
        return Engine(clock=clock, incomplete_reason_hooks=list(hooks))

    def test_no_reason_completes(self, clock: FakeClock) -> None:
        """Hooks that answer None let the run complete; each is asked once, in order."""
        log: list[str] = []
        engine = self._engine(clock, Reason(None, log, "a"), Reason(None, log, "b"))
        done = engine.complete(in_progress(engine), usage=Usage.of(9, 4))
        assert done.status is RunStatus.COMPLETED
        assert log == ["a", "b"]

    def test_first_reason_wins(self, clock: FakeClock) -> None:
        """The first hook with a reason ends the run incomplete; later hooks are not asked."""
        log: list[str] = []
        engine = self._engine(
            clock,
            Reason(None, log, "a"),
            Reason("max_completion_tokens", log, "b"),
            Reason("max_prompt_tokens", log, "c"),
        )
        now = clock.advance(5)
        done = engine.complete(in_progress(engine), usage=Usage.of(9, 4))
        assert done.status is RunStatus.INCOMPLETE
        assert done.incomplete_details == IncompleteDetails(reason="max_completion_tokens")
        assert done.usage == Usage.of(9, 4)
        assert done.completed_at == now
        assert done.expires_at is None
        assert log == ["a", "b"]

    @pytest.mark.parametrize(
        ("usage", "reason"),
        [
            (Usage.of(257, 10), "max_prompt_tokens"),
            (Usage.of(10, 257), "max_completion_tokens"),
            (Usage.of(257, 257), "max_prompt_tokens"),
        ],
        ids=["prompt-over", "completion-over", "both-over-prompt-first"],
    )
    def test_budget_comes_before_hooks(self, clock: FakeClock, usage: Usage, reason: str) -> None:
        """Usage over a budget ends the run incomplete without asking the hooks."""
        log: list[str] = []
        engine = self._engine(clock, Reason("max_completion_tokens", log, "a"))
        run = in_progress(engine, max_prompt_tokens=256, max_completion_tokens=256)
        done = engine.complete(run, usage=usage)
        assert done.status is RunStatus.INCOMPLETE
        assert done.incomplete_details == IncompleteDetails(reason=reason)  # type: ignore[arg-type]
        assert done.usage == usage
        assert log == []

    def test_budget_is_inclusive(self, clock: FakeClock) -> None:
        """Usage equal to the budget is within it: the run completes."""
        engine = self._engine(clock)
        run = in_progress(engine, max_prompt_tokens=256, max_completion_tokens=256)
        assert engine.complete(run, usage=Usage.of(256, 256)).status is RunStatus.COMPLETED

    def test_hooks_see_the_total_usage(self, clock: FakeClock) -> None:
        """A hook gets accrued usage plus what complete() reports."""
        log: list[str] = []
        hook = Reason(None, log, "a")
        engine = self._engine(clock, hook)
        run = in_progress(engine)
        engine.add_usage(run, prompt_tokens=3, completion_tokens=1)
        engine.complete(run, usage=Usage.of(9, 4))
        assert hook.usages == [Usage.of(12, 5)]

    def test_hook_exception_leaves_the_run_unchanged(self, clock: FakeClock) -> None:
        """A hook that raises: the exception propagates, the run stays in_progress."""
        engine = self._engine(clock, Exploding())
        run = in_progress(engine)
        clock.advance(2)
        with pytest.raises(RefusedError):
            engine.complete(run, usage=Usage.of(1, 1))
        assert engine.get(run) == run

    def test_a_hook_may_call_the_engine_on_a_run_sharing_the_lock(self, clock: FakeClock) -> None:
        """
        Runs share a fixed set of locks; a hook that changes another run that happens to
        share the lock of the run it is asked about gets on with it (it waited on its
        own thread for ever before).
        """
        other: list[str] = []

        class CancelOther:
            def incomplete_reason(self, run: RunObject, usage: Usage) -> str | None:
                engine.cancel(other[0])
                return None

        engine = self._engine(clock, CancelOther())
        run = in_progress(engine)
        stripe = engine._lock(run.id)  # the stripe: the point of the test
        for i in itertools.count():
            candidate = engine.create(thread_id=f"thread_other_{i}", assistant_id="asst_a")
            if engine._lock(candidate.id) is stripe:
                other.append(candidate.id)
                break
        result: list[RunObject] = []
        worker = threading.Thread(target=lambda: result.append(engine.complete(run)), daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "complete() hung on the lock its own thread held"
        assert result[0].status is RunStatus.COMPLETED
        assert engine.get(other[0]).status is RunStatus.CANCELLING

    def test_a_hook_that_changes_its_own_run_does_not_hang(self, clock: FakeClock) -> None:
        """A hook that changes the very run it is asked about: the call decides again on
        the new state (here, the hook's own cancel refuses the second time), no hang."""

        class CancelSelf:
            def incomplete_reason(self, run: RunObject, usage: Usage) -> str | None:
                engine.cancel(run.id)
                return None

        engine = self._engine(clock, CancelSelf())
        run = in_progress(engine)
        outcome: list[object] = []

        def call() -> None:
            try:
                outcome.append(engine.complete(run))
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                outcome.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "complete() hung on the lock its own thread held"
        assert isinstance(outcome[0], InvalidTransitionError)
        assert str(outcome[0]) == "Cannot cancel run with status 'cancelling'."
        assert engine.get(run).status is RunStatus.CANCELLING

    def test_bad_reason_is_refused(self, clock: FakeClock) -> None:
        """A hook answering something that is not a reason is refused; nothing changes."""
        engine = self._engine(clock, Reason("too_long", [], "a"))
        run = in_progress(engine)
        with pytest.raises(ValidationError):
            engine.complete(run, usage=Usage.of(1, 1))
        assert engine.get(run) == run

    def test_complete_from_cancelling_consults_the_budget(self, clock: FakeClock) -> None:
        """A cancel that loses the race to a completion still gets the budget check."""
        engine = self._engine(clock)
        run = engine.cancel(in_progress(engine, max_completion_tokens=256))
        done = engine.complete(run, usage=Usage.of(1, 300))
        assert done.status is RunStatus.INCOMPLETE
        assert done.incomplete_details == IncompleteDetails(reason="max_completion_tokens")


class TestAddUsage:
    """``add_usage`` accrues while in_progress or cancelling; crossing a budget ends the run."""

    def test_accumulates_and_wire_usage_stays_null(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """Accrued usage is invisible while active and becomes the usage at the end."""
        run = drive("in_progress")
        for _ in range(3):
            run = engine.add_usage(run, prompt_tokens=10, completion_tokens=5)
            assert run.status is RunStatus.IN_PROGRESS
            assert run.usage is None
            assert run.to_dict()["usage"] is None
        done = engine.complete(run)
        assert done.usage == Usage.of(30, 15)

    def test_accrues_in_cancelling(self, engine: Engine, drive: Callable[..., RunObject]) -> None:
        """A cancelling run still accrues; cancelled carries the accrued usage."""
        run = drive("cancelling")
        run = engine.add_usage(run, prompt_tokens=7)
        assert run.status is RunStatus.CANCELLING
        assert run.usage is None
        assert engine.finish_cancel(run).usage == Usage.of(7, 0)

    def test_emits_no_event_below_budget(
        self, engine: Engine, recorder: EventRecorder, drive: Callable[..., RunObject]
    ) -> None:
        """Accruing is not a status change: no event."""
        run = drive("in_progress")
        recorder.clear()
        engine.add_usage(run, prompt_tokens=1, completion_tokens=1)
        assert recorder.events == []

    @pytest.mark.parametrize(
        ("budget", "kwargs", "reason"),
        [
            ({"max_prompt_tokens": 256}, {"prompt_tokens": 57}, "max_prompt_tokens"),
            ({"max_completion_tokens": 256}, {"completion_tokens": 57}, "max_completion_tokens"),
        ],
        ids=["prompt", "completion"],
    )
    @pytest.mark.parametrize("status", ["in_progress", "cancelling"])
    def test_crossing_a_budget_ends_incomplete_at_once(
        self,
        *,
        engine: Engine,
        clock: FakeClock,
        recorder: EventRecorder,
        drive: Callable[..., RunObject],
        budget: dict[str, int],
        kwargs: dict[str, int],
        reason: str,
        status: str,
    ) -> None:
        """The add that crosses the budget returns the run incomplete, stamped and announced."""
        run = drive(status, **budget)
        first = dict.fromkeys(kwargs, 200)
        run = engine.add_usage(run, **first)
        assert run.status == status
        recorder.clear()
        now = clock.advance(3)
        done = engine.add_usage(run, **kwargs)
        assert done.status is RunStatus.INCOMPLETE
        assert done.incomplete_details == IncompleteDetails(reason=reason)  # type: ignore[arg-type]
        assert done.completed_at == now
        assert done.expires_at is None
        total = dict.fromkeys(kwargs, 257)
        assert done.usage == Usage.of(
            total.get("prompt_tokens", 0), total.get("completion_tokens", 0)
        )
        assert recorder.names == ["thread.run.incomplete"]
        assert engine.get(run) == done

    def test_reaching_the_budget_exactly_does_not_end_the_run(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """Usage equal to the budget is within it."""
        run = drive("in_progress", max_prompt_tokens=256)
        assert engine.add_usage(run, prompt_tokens=256).status is RunStatus.IN_PROGRESS

    @pytest.mark.parametrize(
        "status",
        ["queued", "requires_action", "completed", "failed", "cancelled", "incomplete", "expired"],
    )
    def test_wrong_status_raises(
        self, engine: Engine, drive: Callable[..., RunObject], status: str
    ) -> None:
        """Elsewhere add_usage raises InvalidTransitionError and changes nothing."""
        run = drive(status)
        with pytest.raises(InvalidTransitionError) as info:
            engine.add_usage(run, prompt_tokens=1)
        assert info.value.status == status
        assert info.value.run_id == run.id
        assert info.value.allowed == frozenset({"in_progress", "cancelling"})
        assert engine.get(run) == run

    def test_accrued_usage_survives_a_tool_round_trip(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """Usage accrued before requires_action is kept through submit and restart."""
        run = drive("in_progress")
        engine.add_usage(run, prompt_tokens=5, completion_tokens=5)
        run = engine.require_action(run, tool_calls=[CALL])
        run = engine.submit_tool_outputs(run, tool_outputs=[OUTPUT])
        run = engine.start(run)
        engine.add_usage(run, prompt_tokens=1)
        assert engine.complete(run, usage=Usage.of(1, 1)).usage == Usage.of(7, 6)

    def test_negative_counts_are_refused(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """Token counts cannot be negative."""
        run = drive("in_progress")
        with pytest.raises(ValidationError):
            engine.add_usage(run, prompt_tokens=-1)
        assert engine.get(run) == run

    @pytest.mark.parametrize(
        ("counts", "path", "rule"),
        [
            ({"prompt_tokens": 1.5}, "$.prompt_tokens", "expected an integer, got a number"),
            ({"prompt_tokens": -1}, "$.prompt_tokens", "must be at least 0, got -1"),
            (
                {"completion_tokens": True},
                "$.completion_tokens",
                "expected an integer, got a boolean",
            ),
        ],
    )
    def test_a_bad_count_is_named_as_given(
        self,
        engine: Engine,
        drive: Callable[..., RunObject],
        counts: dict[str, Any],
        path: str,
        rule: str,
    ) -> None:
        """The error names the argument and its rule alone (it also said that a
        ``total_tokens`` nobody passes was missing)."""
        run = drive("in_progress")
        with pytest.raises(ValidationError) as info:
            engine.add_usage(run, **counts)
        assert (info.value.path, info.value.rule) == (path, rule)
        assert "total_tokens" not in str(info.value)
