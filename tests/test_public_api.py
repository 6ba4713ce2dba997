"""The public surface: ``__all__``, the version, public modules, the shared machine."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import types

import pytest
from transitions import MachineError

import runflow
from runflow import ASSISTANTS_RUN, Engine, RunStatus
from runflow._machine import Step
from runflow.testing import FakeClock

#: The names API.md promises from ``import runflow``.
EXPECTED = {
    "Engine",
    "RunEvent",
    "RunObject",
    "RunStatus",
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "ToolCall",
    "FunctionCall",
    "RequiredAction",
    "SubmitToolOutputs",
    "ToolOutput",
    "LastError",
    "IncompleteDetails",
    "Usage",
    "TruncationStrategy",
    "NamedToolChoice",
    "ToolChoiceFunction",
    "ResponseFormatText",
    "ResponseFormatJsonObject",
    "ResponseFormatJsonSchema",
    "JsonSchema",
    "CodeInterpreterTool",
    "FileSearchTool",
    "FileSearch",
    "FileSearchRankingOptions",
    "FunctionTool",
    "FunctionDefinition",
    "Tool",
    "ToolChoice",
    "ResponseFormat",
    "RunflowError",
    "ValidationError",
    "InvalidTransitionError",
    "ToolOutputsError",
    "RunNotFoundError",
    "Clock",
    "SystemClock",
    "LifecycleProfile",
    "TransitionSpec",
    "Enter",
    "ASSISTANTS_RUN",
    "lifecycle_diagram",
}
PUBLIC_MODULES = (
    "runflow.cli",
    "runflow.exceptions",
    "runflow.hooks",
    "runflow.simulation",
    "runflow.stores",
    "runflow.testing",
)

#: LIFECYCLE §8 as (trigger, source, dest).
TABLE = {
    ("start", "queued", "in_progress"),
    ("cancel", "queued", "cancelling"),
    ("expire", "queued", "expired"),
    ("require_action", "in_progress", "requires_action"),
    ("complete", "in_progress", "completed"),
    ("fail", "in_progress", "failed"),
    ("mark_incomplete", "in_progress", "incomplete"),
    ("cancel", "in_progress", "cancelling"),
    ("expire", "in_progress", "expired"),
    ("submit_tool_outputs", "requires_action", "queued"),
    ("cancel", "requires_action", "cancelling"),
    ("expire", "requires_action", "expired"),
    ("finish_cancel", "cancelling", "cancelled"),
    ("complete", "cancelling", "completed"),
    ("fail", "cancelling", "failed"),
    ("mark_incomplete", "cancelling", "incomplete"),
    ("expire", "cancelling", "expired"),
}


def isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def public_names(module: types.ModuleType) -> set[str]:
    """Non-underscore attributes that are not modules or ``__future__`` features."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }


class TestAll:
    """``runflow.__all__`` is sorted and lists exactly the public names."""

    def test_sorted(self) -> None:
        """Sorted as ruff (RUF022) keeps it: constants, classes, then functions."""
        assert runflow.__all__ == sorted(runflow.__all__, key=isort_key)

    def test_no_duplicates(self) -> None:
        """Every name appears once."""
        assert len(runflow.__all__) == len(set(runflow.__all__))

    def test_equals_the_public_names(self) -> None:
        """``__all__`` (minus ``__version__``) is exactly what the module exposes."""
        assert set(runflow.__all__) - {"__version__"} == public_names(runflow)

    def test_has_the_contract(self) -> None:
        """Every export API.md promises is there (the issue allows additions beyond them)."""
        assert set(runflow.__all__) >= EXPECTED

    def test_every_name_resolves(self) -> None:
        """``from runflow import *`` gives every listed name."""
        namespace: dict[str, object] = {}
        exec("from runflow import *", namespace)  # noqa: S102
        assert set(runflow.__all__) <= set(namespace)

    @pytest.mark.parametrize("name", PUBLIC_MODULES)
    def test_public_modules(self, name: str) -> None:
        """The public modules import by name and have a sorted, resolvable ``__all__``."""
        module = importlib.import_module(name)
        assert module.__all__ == sorted(module.__all__, key=isort_key)
        assert all(hasattr(module, n) for n in module.__all__)

    def test_testing_exports(self) -> None:
        """runflow.testing offers FakeClock and EventRecorder."""
        from runflow import testing  # noqa: PLC0415

        assert {"FakeClock", "EventRecorder"} <= set(testing.__all__)

    def test_hooks_exports(self) -> None:
        """runflow.hooks offers the two hook protocols."""
        from runflow import hooks  # noqa: PLC0415

        assert {"RequiredActionHook", "IncompleteReasonHook"} <= set(hooks.__all__)

    @pytest.mark.parametrize(
        "name",
        sorted(n for n in EXPECTED if inspect.isclass(getattr(runflow, n, None))),
    )
    def test_public_classes_have_docstrings(self, name: str) -> None:
        """Every public class documents itself."""
        assert inspect.getdoc(getattr(runflow, name))


class TestVersion:
    """``__version__`` comes from the installed distribution's metadata."""

    def test_matches_metadata(self) -> None:
        """``runflow.__version__ == importlib.metadata.version("runflow-engine")``."""
        assert runflow.__version__ == importlib.metadata.version("runflow-engine")

    def test_is_semver(self) -> None:
        """A 0.x SemVer string."""
        assert re.fullmatch(r"\d+\.\d+\.\d+([.-].+)?", runflow.__version__)


class TestErrors:
    """The error tree of runflow.exceptions."""

    @pytest.mark.parametrize(
        ("name", "builtin"),
        [
            ("ValidationError", ValueError),
            ("InvalidTransitionError", ValueError),
            ("ToolOutputsError", ValueError),
            ("RunNotFoundError", KeyError),
        ],
    )
    def test_tree(self, name: str, builtin: type[Exception]) -> None:
        """Every error is a RunflowError and the builtin that fits."""
        cls = getattr(runflow, name)
        assert issubclass(cls, runflow.RunflowError)
        assert issubclass(cls, builtin)
        assert getattr(runflow.exceptions, name) is cls


class TestSharedMachine:
    """One transitions machine for all runs: nothing is added to it per run."""

    def test_two_engines_share_the_machine(self) -> None:
        """Two engines drive runs with the very same machine object."""
        first, second = Engine(clock=FakeClock()), Engine(clock=FakeClock())
        assert first.lifecycle is second.lifecycle
        assert first.lifecycle.machine is second.lifecycle.machine

    def test_no_model_is_added_per_run(self) -> None:
        """After many runs of two engines the machine still has no models."""
        machine = Engine(clock=FakeClock()).lifecycle.machine
        assert list(machine.models) == []
        for engine in (Engine(clock=FakeClock()), Engine(clock=FakeClock())):
            for _ in range(50):
                run = engine.create(thread_id="t", assistant_id="a")
                run = engine.start(run)
                engine.cancel(run)
                engine.finish_cancel(run)
        assert list(machine.models) == []

    def test_machine_is_built_without_auto_transitions(self) -> None:
        """The machine has only the table's triggers (no ``to_<state>`` helpers)."""
        machine = Engine(clock=FakeClock()).lifecycle.machine
        assert set(machine.events) == {t for t, _, _ in TABLE}

    def test_machine_table_is_lifecycle_section_8(self) -> None:
        """The machine's own transitions are exactly LIFECYCLE §8."""
        machine = Engine(clock=FakeClock()).lifecycle.machine
        got = {
            (name, source, t.dest)
            for name, event in machine.events.items()
            for source, transitions in event.transitions.items()
            for t in transitions
        }
        assert got == TABLE

    def test_machine_table_decides_after_a_change(self) -> None:
        """
        The machine's event reads its routes off its own table: a transition or a
        state added after it fired is used from then on (nothing stale is kept).
        """
        life = runflow.Lifecycle(ASSISTANTS_RUN)  # a private machine, not the shared one
        step = Step(RunStatus.CANCELLING, 7, {})
        with pytest.raises(MachineError):
            life.fire("start", step)
        life.machine.add_states([{"name": "paused", "on_enter": [lambda s: s.changes.update(p=1)]}])
        life.machine.add_transition("start", "cancelling", "paused")
        life.fire("start", step)
        assert step.state == "paused"
        assert step.changes == {"p": 1}
        step = Step(RunStatus.QUEUED, 7, {})
        life.fire("start", step)  # the route from queued is read once, then kept
        life.machine.add_transition("start", "paused", "queued")
        step = Step(RunStatus.QUEUED, 8, {})
        life.fire("start", step)
        assert step.changes == {"status": RunStatus.IN_PROGRESS, "started_at": 8}

    def test_leaving_a_status_nulls_the_field_it_holds(self) -> None:
        """The machine's exit effect: leaving requires_action nulls required_action."""
        for trigger, dest in (("submit_tool_outputs", "queued"), ("cancel", "cancelling")):
            step = Step(RunStatus.REQUIRES_ACTION, 9, {})
            Engine(clock=FakeClock()).lifecycle.fire(trigger, step)
            assert step.changes == {"required_action": None, "status": dest}

    def test_profile_is_lifecycle_section_8(self) -> None:
        """ASSISTANTS_RUN, the data the machine is built from, is §8 too."""
        got = {(t.trigger, str(t.source), str(t.dest)) for t in ASSISTANTS_RUN.transitions}
        assert got == TABLE
        assert ASSISTANTS_RUN.initial == "queued"
        assert ASSISTANTS_RUN.terminal == {s for s in RunStatus if s.is_terminal}
        assert set(ASSISTANTS_RUN.states) == {s.value for s in RunStatus}

    def test_lifecycle_diagram(self) -> None:
        """lifecycle_diagram() is Mermaid source naming every status and trigger."""
        diagram = runflow.lifecycle_diagram()
        assert "stateDiagram" in diagram
        for status in RunStatus:
            assert status.value in diagram
        for trigger, _, _ in TABLE:
            assert trigger in diagram

    def test_lifecycle_diagram_is_static(self) -> None:
        """
        No status is drawn as the "current" one (transitions styles its model's state
        so); the initial one comes from the start point, each terminal one leads to the end.
        """
        lines = [line.strip() for line in runflow.lifecycle_diagram().splitlines()]
        styled = {line.split()[1]: line.split()[2] for line in lines if line.startswith("Class ")}
        assert styled == {s.value: "s_default" for s in RunStatus}
        assert lines.count("[*] --> queued") == 1
        assert {line.split()[0] for line in lines if line.endswith("--> [*]")} == {
            s.value for s in RunStatus if s.is_terminal
        }
