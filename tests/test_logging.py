"""Logging: one structlog ``run_transitioned`` event per transition; no global config."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import structlog
from structlog.testing import capture_logs

from runflow import Engine, InvalidTransitionError, RunObject
from runflow import _engine as engine_module
from runflow.testing import FakeClock

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
OUTPUT = {"tool_call_id": "call_1", "output": "sunny"}


def transitions(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "run_transitioned"]


class TestRunTransitioned:
    """Every status change logs exactly one ``run_transitioned`` with its context."""

    def test_one_event_per_transition(
        self, engine: Engine, new_run: Callable[..., RunObject]
    ) -> None:
        """A full lifecycle logs one event per transition, with from, to and trigger."""
        run = new_run()
        with capture_logs() as logs:
            engine.start(run)
            engine.require_action(run, tool_calls=[CALL])
            engine.submit_tool_outputs(run, tool_outputs=[OUTPUT])
            engine.start(run)
            engine.cancel(run)
            engine.complete(run, usage={"prompt_tokens": 1, "completion_tokens": 1})
        got = transitions(logs)
        assert [(e["from"], e["to"], e["trigger"]) for e in got] == [
            ("queued", "in_progress", "start"),
            ("in_progress", "requires_action", "require_action"),
            ("requires_action", "queued", "submit_tool_outputs"),
            ("queued", "in_progress", "start"),
            ("in_progress", "cancelling", "cancel"),
            ("cancelling", "completed", "complete"),
        ]
        for entry in got:
            assert entry["run_id"] == run.id
            assert entry["thread_id"] == run.thread_id

    def test_keys(self, engine: Engine, new_run: Callable[..., RunObject]) -> None:
        """The event carries run_id, thread_id, from, to and trigger as plain strings."""
        run = new_run(thread_id="thread_log")
        with capture_logs() as logs:
            engine.start(run)
        (entry,) = transitions(logs)
        assert {"run_id", "thread_id", "from", "to", "trigger"} <= set(entry)
        assert entry["thread_id"] == "thread_log"
        assert all(
            isinstance(entry[k], str) for k in ("run_id", "thread_id", "from", "to", "trigger")
        )

    def test_refusal_logs_no_transition(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """A refused trigger logs no run_transitioned."""
        run = drive("completed")
        with capture_logs() as logs, contextlib.suppress(InvalidTransitionError):
            engine.start(run)
        assert transitions(logs) == []

    def test_expiry_on_read_is_logged(
        self, engine: Engine, clock: Any, drive: Callable[..., RunObject]
    ) -> None:
        """The expiry applied by get() is a transition with trigger ``expire``."""
        run = drive("requires_action")
        clock.advance(600)
        with capture_logs() as logs:
            engine.get(run)
        assert [(e["from"], e["to"], e["trigger"]) for e in transitions(logs)] == [
            ("requires_action", "expired", "expire")
        ]

    def test_sweep_logs_each_expiry(
        self, engine: Engine, clock: Any, new_run: Callable[..., RunObject]
    ) -> None:
        """sweep() logs one transition per expired run."""
        runs = [new_run() for _ in range(3)]
        clock.advance(600)
        with capture_logs() as logs:
            engine.sweep()
        assert sorted(e["run_id"] for e in transitions(logs)) == sorted(r.id for r in runs)

    def test_budget_crossing_is_logged(
        self, engine: Engine, drive: Callable[..., RunObject]
    ) -> None:
        """A completion turned incomplete by the budget logs the real destination."""
        run = drive("in_progress", max_prompt_tokens=256)
        with capture_logs() as logs:
            engine.complete(run, usage={"prompt_tokens": 300, "completion_tokens": 1})
        (entry,) = transitions(logs)
        assert (entry["from"], entry["to"]) == ("in_progress", "incomplete")


class TestNoGlobalConfiguration:
    """The library never configures structlog."""

    def test_import_and_use_leave_structlog_unconfigured(self) -> None:
        """In a fresh interpreter, importing and using runflow keeps is_configured() False."""
        code = textwrap.dedent(
            """
            import structlog
            import runflow
            import runflow.testing, runflow.hooks, runflow.stores, runflow.exceptions
            from runflow.testing import FakeClock
            engine = runflow.Engine(clock=FakeClock())
            run = engine.create(thread_id="t", assistant_id="a")
            engine.start(run)
            engine.cancel(run)
            engine.finish_cancel(run)
            runflow.lifecycle_diagram()
            print(structlog.is_configured())
            """
        )
        result = subprocess.run(  # noqa: S603 - fixed code, this interpreter
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        )
        assert result.stdout.strip().splitlines()[-1] == "False"


class TestGivenLogger:
    """A logger passed to ``Engine(logger=...)``."""

    def test_a_filtering_logger_above_debug_gets_no_calls(self) -> None:
        """A concrete filtering logger at INFO is asked once and then never called."""
        calls: list[str] = []

        class Recording(structlog.make_filtering_bound_logger(logging.INFO)):  # type: ignore[misc]
            def debug(self, event: str, *args: Any, **kw: Any) -> Any:
                calls.append(event)

        logger = Recording(structlog.PrintLogger(), [], {})
        engine = Engine(clock=FakeClock(), logger=logger)
        run = engine.create(thread_id="thread_a", assistant_id="asst_a")
        engine.start(run)
        assert calls == []

    def test_a_debug_logger_gets_every_transition(self) -> None:
        """A logger enabled for debug gets one event per transition, even unconfigured."""
        calls: list[tuple[str, dict[str, Any]]] = []

        class Recording:
            def is_enabled_for(self, level: int) -> bool:
                return level >= logging.DEBUG

            def debug(self, event: str, **kw: Any) -> None:
                calls.append((event, kw))

        engine = Engine(clock=FakeClock(), logger=Recording())
        run = engine.create(thread_id="thread_a", assistant_id="asst_a")
        engine.start(run)
        assert [(e, kw["trigger"], kw["to"]) for e, kw in calls] == [
            ("run_transitioned", "create", "queued"),
            ("run_transitioned", "start", "in_progress"),
        ]


@contextlib.contextmanager
def configured(**config: Any) -> Any:
    """
    structlog configured as an application would, restored afterwards; the engine's
    default proxy is a fresh one meanwhile (a proxy caches its logger for good).
    """
    before = structlog.get_config()
    proxy = engine_module._log
    engine_module._log = structlog.get_logger("runflow")
    structlog.configure(**config)
    try:
        yield
    finally:
        engine_module._log = proxy
        structlog.reset_defaults()
        structlog.configure(**before)


class TestDefaultLoggerCaching:
    """The default proxy, once the application caches loggers on first use."""

    def test_cached_debug_logger_gets_every_transition(self) -> None:
        """With a cached DEBUG logger, every transition is logged through it."""
        seen: list[dict[str, Any]] = []

        def collect(_: Any, __: str, event: dict[str, Any]) -> Any:
            seen.append(event)
            raise structlog.DropEvent

        with configured(
            processors=[collect],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            cache_logger_on_first_use=True,
        ):
            engine = Engine(clock=FakeClock())
            run = engine.create(thread_id="thread_a", assistant_id="asst_a")
            engine.start(run)
            engine.cancel(run)
        assert [(e["event"], e["trigger"], e["to"]) for e in seen] == [
            ("run_transitioned", "create", "queued"),
            ("run_transitioned", "start", "in_progress"),
            ("run_transitioned", "cancel", "cancelling"),
        ]

    def test_cached_info_logger_is_asked_once(self) -> None:
        """With a cached INFO logger, the engine stops building debug events at all."""
        with configured(
            processors=[structlog.processors.JSONRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            cache_logger_on_first_use=True,
        ):
            engine = Engine(clock=FakeClock())
            run = engine.create(thread_id="thread_a", assistant_id="asst_a")
            assert engine._log_off
            assert engine._log is not structlog.get_logger("runflow")
            engine.start(run)

    def test_uncached_proxy_follows_later_configuration(self) -> None:
        """Without caching, the proxy keeps following configuration (capture_logs)."""
        with configured(
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            cache_logger_on_first_use=False,
        ):
            engine = Engine(clock=FakeClock())
            run = engine.create(thread_id="thread_a", assistant_id="asst_a")
            assert not engine._log_off
            with capture_logs() as logs:
                engine.start(run)
        assert [e["trigger"] for e in transitions(logs)] == ["start"]
