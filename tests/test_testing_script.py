"""Scripts as plain values: the builder, the records, checking and choosing a script."""

from __future__ import annotations

import attrs
import pytest

from runflow import Engine, FunctionCall, ToolCall, Usage
from runflow.testing import (
    SCENARIOS,
    Cancel,
    Complete,
    Fail,
    HttpFault,
    NeverAnswer,
    RequireAction,
    Script,
    ScriptedCall,
    ScriptMap,
    Start,
)
from runflow.testing._script import canned_usage, resolve_calls, select_script


def a_run(**kwargs: object) -> object:
    engine = Engine()
    params: dict[str, object] = {"thread_id": "thread_1", "assistant_id": "asst_1"}
    params.update(kwargs)
    return engine.create(**params)  # type: ignore[arg-type]


class TestBuilder:
    """The fluent methods return new scripts; records are frozen."""

    def test_fluent_steps(self) -> None:
        """Each method appends one step."""
        script = (
            Script()
            .start(polls=1, after=5)
            .require_action({"name": "get_weather", "arguments": {"city": "Paris"}}, polls=2)
            .complete("Sunny.", usage={"prompt_tokens": 3, "completion_tokens": 2})
        )
        assert script.steps == (
            Start(polls=1, after=5),
            RequireAction(
                tool_calls=(ScriptedCall(name="get_weather", arguments='{"city": "Paris"}'),),
                polls=2,
            ),
            Complete(reply="Sunny.", usage=Usage.of(3, 2)),
        )

    def test_immutable(self) -> None:
        """Building never changes the script it starts from."""
        base = Script().start()
        base.complete()
        assert base.steps == (Start(),)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            base.steps = ()  # type: ignore[misc]

    def test_compose(self) -> None:
        """``a + b`` joins steps and faults; b's cancel reaction wins unless default."""
        ask = Script().require_action("f").http_error(500, on="retrieve")
        end = Script().complete().cancel_loses("late")
        joined = ask + end
        assert [type(s) for s in joined.steps] == [RequireAction, Complete]
        assert joined.faults == ask.faults
        assert joined.on_cancel == Complete(reply="late")
        assert (end + Script().fail()).on_cancel == Complete(reply="late")

    def test_fail_messages(self) -> None:
        """``fail(code)`` says what OpenAI says for that code unless told."""
        step = Script().fail("rate_limit_exceeded").steps[0]
        assert isinstance(step, Fail)
        assert step.message.startswith("Rate limit reached")
        assert Script().fail("server_error", "boom").steps[0] == Fail(message="boom")

    def test_cancel_reactions(self) -> None:
        """Default: the cancel succeeds; ``when_cancelled`` takes any ending step."""
        assert Script().on_cancel == Cancel()
        assert Script().when_cancelled(Fail()).on_cancel == Fail()
        with pytest.raises(TypeError):
            Script().when_cancelled(Start())  # type: ignore[arg-type]

    def test_timing_is_checked(self) -> None:
        """Polls and latency are whole numbers ≥ 0."""
        with pytest.raises(ValueError, match="polls"):
            Start(polls=-1)
        with pytest.raises(ValueError, match="after"):
            Complete(after=1.5)  # type: ignore[arg-type]

    def test_usage_forms(self) -> None:
        """Usage is a record or a mapping of counts."""
        with pytest.raises(TypeError):
            Complete(usage=42)  # type: ignore[arg-type]
        assert canned_usage("three short words") == Usage.of(10, 3)
        assert canned_usage(None) == Usage.of(10, 1)


class TestCheck:
    """``check()``: a playable script ends its run once, at the end."""

    def test_must_end(self) -> None:
        """No ending step: refused with a hint."""
        with pytest.raises(ValueError, match="must end its run"):
            Script().start().check()
        with pytest.raises(ValueError, match="must end its run"):
            Script().check()

    def test_nothing_after_the_end(self) -> None:
        """Steps after an ending step: refused."""
        with pytest.raises(ValueError, match="steps follow it"):
            Script().complete().start().check()

    def test_not_a_step(self) -> None:
        """Anything but a step record is refused."""
        with pytest.raises(TypeError, match="not a step"):
            Script(steps=["complete"]).check()  # type: ignore[list-item]

    @pytest.mark.parametrize("name", sorted(SCENARIOS))
    def test_scenarios_are_playable(self, name: str) -> None:
        """Every named scenario passes."""
        assert SCENARIOS[name].check() is SCENARIOS[name]


class TestCalls:
    """``ScriptedCall.of`` reads every form a call may take."""

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("f", ScriptedCall(name="f")),
            (("f", {"a": 1}), ScriptedCall(name="f", arguments='{"a": 1}')),
            ({"name": "f", "arguments": "{}"}, ScriptedCall(name="f")),
            (
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "[]"}},
                ScriptedCall(name="f", arguments="[]", id="call_1"),
            ),
            (
                ToolCall(id="call_2", function=FunctionCall(name="f", arguments="{}")),
                ScriptedCall(name="f", id="call_2"),
            ),
            (ScriptedCall(), ScriptedCall()),
        ],
    )
    def test_forms(self, given: object, expected: ScriptedCall) -> None:
        """Strings, pairs, short and wire dicts, records."""
        assert ScriptedCall.of(given) == expected

    @pytest.mark.parametrize(
        "bad", [42, {"function": "f"}, {"name": 3}, {"name": "f", "id": 4}, ("a", "b", "c")]
    )
    def test_refused(self, bad: object) -> None:
        """Anything else is a TypeError."""
        with pytest.raises(TypeError):
            ScriptedCall.of(bad)

    def test_resolved_against_the_run(self) -> None:
        """A call without a name asks for the run's first function tool; ids are made."""
        run = a_run(
            tools=[
                {"type": "code_interpreter"},
                {"type": "function", "function": {"name": "lookup"}},
            ]
        )
        calls = resolve_calls(RequireAction(), run, lambda: "call_x")  # type: ignore[arg-type]
        assert calls == [
            {"id": "call_x", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        ]
        with pytest.raises(ValueError, match="no function tool"):
            resolve_calls(RequireAction(), a_run(), lambda: "call_x")  # type: ignore[arg-type]


class TestFaults:
    """HTTP faults by request kind and count."""

    def test_hits(self) -> None:
        """``skip`` requests pass, then ``times`` fail."""
        fault = HttpFault(status=429, on="retrieve", skip=1, times=2)
        assert [fault.hits("retrieve", n) for n in range(4)] == [False, True, True, False]
        assert not fault.hits("cancel", 1)
        assert HttpFault(on="any").hits("cancel", 0)

    @pytest.mark.parametrize("kwargs", [{"status": 200}, {"status": 600}, {"on": "create"}])
    def test_refused(self, kwargs: dict[str, object]) -> None:
        """Statuses outside 400..599 and unknown request kinds are refused."""
        with pytest.raises(ValueError, match="HttpFault"):
            HttpFault(**kwargs)  # type: ignore[arg-type]


class TestChoosing:
    """Which script a run gets."""

    def test_precedence(self) -> None:
        """Thread id, then metadata, then assistant id, then the default."""
        by_thread, by_meta, by_asst, default = (Script().complete(str(i)) for i in range(4))
        scripts = ScriptMap(
            threads={"thread_t": by_thread},
            metadata={"case": {"m": by_meta}},
            assistants={"asst_a": by_asst},
            default=default,
        )
        assert scripts.for_run(a_run(thread_id="thread_t", metadata={"case": "m"})) is by_thread  # type: ignore[arg-type]
        assert scripts.for_run(a_run(metadata={"case": "m"}, assistant_id="asst_a")) is by_meta  # type: ignore[arg-type]
        assert scripts.for_run(a_run(assistant_id="asst_a", metadata={"case": "x"})) is by_asst  # type: ignore[arg-type]
        assert scripts.for_run(a_run()) is default  # type: ignore[arg-type]
        assert ScriptMap().for_run(a_run()) is None  # type: ignore[arg-type]

    def test_sources(self) -> None:
        """None, a script, a mapping, a ScriptMap or a function; all checked."""
        run = a_run(assistant_id="asst_a")
        one = Script().complete()
        assert select_script(None)(run) is None  # type: ignore[arg-type]
        assert select_script(one)(run) is one  # type: ignore[arg-type]
        assert select_script({"asst_a": one})(run) is one  # type: ignore[arg-type]
        assert select_script({"asst_b": one})(run) is None  # type: ignore[arg-type]
        assert select_script(ScriptMap(default=one))(run) is one  # type: ignore[arg-type]
        assert select_script(lambda r: one)(run) is one  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="must end"):
            select_script(Script().start())
        with pytest.raises(ValueError, match="must end"):
            select_script({"a": Script()})
        with pytest.raises(ValueError, match="must end"):
            select_script(ScriptMap(default=Script()))
        with pytest.raises(TypeError, match="assistant id -> Script"):
            select_script({"a": "complete"})  # type: ignore[dict-item]
        with pytest.raises(TypeError):
            select_script(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not a Script"):
            select_script(lambda r: "x")(run)  # type: ignore[arg-type,return-value]
        assert select_script(lambda r: None)(run) is None  # type: ignore[arg-type]

    def test_never_answer_takes_polls_only(self) -> None:
        """Silence has no latency of its own: it lasts until the deadline."""
        assert Script().never_answer(polls=2).steps == (NeverAnswer(polls=2),)
