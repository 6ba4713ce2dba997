"""runflow.testing.strategies: every value drawn is valid where it claims to be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.beta.threads import Run

from runflow import ASSISTANTS_RUN, Engine, InvalidTransitionError, RunObject, RunStatus
from runflow.testing import FakeClock, Script
from runflow.testing import strategies as rs

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "shared" / "spec" / "run_object.schema.json").read_text(
        encoding="utf-8"
    )
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
LEGAL = {(t.trigger, str(t.source)) for t in ASSISTANTS_RUN.transitions}


class TestRunObjects:
    """``run_objects()``: engine-made runs."""

    @settings(max_examples=60)
    @given(rs.run_objects())
    def test_valid_on_the_wire(self, run: RunObject) -> None:
        """Every drawn run validates against the schema and the SDK's model, and reads
        back equal."""
        wire = run.to_dict()
        assert not [e.message for e in VALIDATOR.iter_errors(wire)]
        Run.model_validate(wire)
        assert RunObject.from_dict(wire) == run

    @pytest.mark.parametrize("status", [s.value for s in RunStatus])
    @settings(max_examples=10)
    @given(data=st.data())
    def test_status_filter(self, status: str, data: st.DataObject) -> None:
        """``run_objects(status=...)`` gives runs in that status, with its iff fields."""
        run = data.draw(rs.run_objects(status=status))
        assert run.status == status
        assert (run.required_action is not None) == (status == "requires_action")
        assert (run.last_error is not None) == (status == "failed")
        assert (run.incomplete_details is not None) == (status == "incomplete")


class TestToolCalls:
    """``tool_calls()`` and ``tool_outputs()``."""

    @given(rs.tool_calls(["get_weather"], max_size=3), st.data())
    def test_an_engine_accepts_them(self, calls: list[dict[str, Any]], data: st.DataObject) -> None:
        """Drawn calls naming the run's tool are accepted by ``require_action``, and
        drawn outputs by ``submit_tool_outputs``."""
        engine = Engine(clock=FakeClock())
        run = engine.create(
            thread_id="t",
            assistant_id="a",
            tools=[{"type": "function", "function": {"name": "get_weather"}}],
        )
        engine.start(run.id)
        run = engine.require_action(run.id, calls)
        assert [c.id for c in run.tool_calls] == [c["id"] for c in calls]
        outputs = data.draw(rs.tool_outputs(run.tool_calls))
        assert engine.submit_tool_outputs(run.id, outputs).status is RunStatus.QUEUED

    @given(rs.tool_calls(min_size=2, max_size=5))
    def test_unique_ids_and_json_arguments(self, calls: list[dict[str, Any]]) -> None:
        """Ids are unique; arguments are JSON objects."""
        assert len({c["id"] for c in calls}) == len(calls)
        for call in calls:
            assert isinstance(json.loads(call["function"]["arguments"]), dict)


class TestTriggers:
    """``legal_triggers()`` and ``trigger_sequences()``."""

    @given(rs.legal_triggers())
    def test_legal_walks_are_legal(self, triggers: list[str]) -> None:
        """Each trigger of a legal walk is allowed where it fires."""
        status = "queued"
        for trigger in triggers:
            dest = next(
                str(t.dest)
                for t in ASSISTANTS_RUN.transitions
                if t.trigger == trigger and str(t.source) == status
            )
            status = dest

    @given(rs.trigger_sequences(min_size=1))
    def test_any_sequence_is_refused_cleanly(self, triggers: list[str]) -> None:
        """Feeding any sequence to an engine moves legal triggers and refuses the rest
        with InvalidTransitionError, leaving the run unchanged."""
        engine = Engine(clock=FakeClock())
        run = engine.create(thread_id="t", assistant_id="a")
        kwargs: dict[str, dict[str, Any]] = {
            "require_action": {"tool_calls": []},
            "submit_tool_outputs": {"tool_outputs": []},
            "fail": {"code": "server_error", "message": "x"},
            "mark_incomplete": {"reason": "max_prompt_tokens"},
        }
        for trigger in triggers:
            before = engine.get(run.id)
            legal = (trigger, before.status.value) in LEGAL
            try:
                getattr(engine, trigger)(run.id, **kwargs.get(trigger, {}))
            except InvalidTransitionError:
                assert not legal
                assert engine.get(run.id) == before
            except ValueError:
                assert engine.get(run.id) == before  # empty calls/outputs refused

    def test_every_trigger_is_listed(self) -> None:
        """``TRIGGERS`` names each trigger of the table once."""
        assert sorted(rs.TRIGGERS) == sorted({t.trigger for t in ASSISTANTS_RUN.transitions})


class TestOther:
    """``create_kwargs()``, ``metadata()``, ``usages()``, ``scripts()``."""

    @given(rs.create_kwargs())
    def test_create_accepts_them(self, kwargs: dict[str, Any]) -> None:
        """``Engine.create(**kwargs)`` accepts every draw."""
        assert Engine(clock=FakeClock()).create(**kwargs).status is RunStatus.QUEUED

    @given(rs.usages())
    def test_usage_totals(self, usage: dict[str, int]) -> None:
        """``total_tokens`` is the sum."""
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    @given(rs.scripts())
    def test_scripts_are_playable(self, script: Script) -> None:
        """Every drawn script passes ``check()``."""
        assert script.check() is script
