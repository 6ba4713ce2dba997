"""
The script driver: plays each scripted run's script against the engine, one poll at a
time, on virtual time.
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable
from typing import Any

import attrs
import structlog

from runflow._engine import Engine
from runflow._model import RunObject, RunStatus
from runflow.exceptions import RunflowError
from runflow.server._errors import ApiError
from runflow.server._hub import Hub, new_id
from runflow.testing._script import (
    CancelStep,
    Complete,
    Expire,
    Fail,
    HttpFault,
    MarkIncomplete,
    NeverAnswer,
    RequireAction,
    Script,
    Start,
    Step,
    canned_usage,
    resolve_calls,
)

__all__ = ["Driver"]

_log = structlog.get_logger("runflow.server")

_FAULT_TYPES: dict[int, tuple[str, str | None, str]] = {
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@attrs.define
class _Progress:
    """Where one run is in its script."""

    script: Script
    index: int = 0  # the next step
    seen: int = 0  # polls that returned the run since its last step
    anchor: int = 0  # virtual time of the last step
    cancelling: bool = False
    done: bool = False
    requests: dict[str, int] = attrs.field(factory=dict)  # requests so far, by kind


@typing.final
class Driver:
    """Moves scripted runs: each poll performs the steps that are due."""

    def __init__(
        self, engine: Engine, hub: Hub, select: Callable[[RunObject], Script | None]
    ) -> None:
        self._engine = engine
        self._hub = hub
        self._select = select
        self._clock = engine.clock
        self._advance: Callable[[int], object] | None = getattr(engine.clock, "advance", None)
        self._runs: dict[str, _Progress] = {}
        self._lock = threading.RLock()

    @property
    def virtual(self) -> bool:
        """Whether script latency is virtual (the engine's clock can be moved)."""
        return self._advance is not None

    def attach(self, run: RunObject) -> bool:
        """Give a new run its script, if any; True if it is scripted."""
        script = self._select(run)
        if script is None:
            return False
        with self._lock:
            self._runs[run.id] = _Progress(script=script, anchor=run.created_at)
        self._hub.script(run.id)
        return True

    def scripted(self, run_id: str) -> bool:
        """Whether a script still drives this run."""
        with self._lock:
            progress = self._runs.get(run_id)
            return progress is not None and not progress.done

    # --- faults -------------------------------------------------------------------------

    def fault(self, run_id: str, kind: str) -> ApiError | None:
        """Count a request of ``kind`` about the run; the injected error it gets, if any."""
        with self._lock:
            progress = self._runs.get(run_id)
            if progress is None:
                return None
            seen = progress.requests.get(kind, 0)
            progress.requests[kind] = seen + 1
            for fault in progress.script.faults:
                if fault.hits(kind, seen):
                    return _fault_error(fault)
            return None

    # --- polls --------------------------------------------------------------------------

    def tick(self, run_id: str) -> None:
        """One poll of a run: perform every step that is due."""
        with self._lock:
            progress = self._runs.get(run_id)
            if progress is None or progress.done:
                return
            try:
                self._play(run_id, progress)
            finally:
                progress.seen += 1
                if _finished(progress):
                    del self._runs[run_id]

    def _play(self, run_id: str, progress: _Progress) -> None:
        for _ in range(64):  # a script has few steps; a safety bound, not a limit
            run = self._engine.get(run_id)
            if run.status.is_terminal:
                progress.done = True
                return
            if run.status is RunStatus.CANCELLING and not progress.cancelling:
                progress.cancelling = True
                progress.seen = 0
                progress.anchor = self._clock.now()
            found = self._next(progress, run)
            if found is None:
                return
            step, consumes = found
            if progress.seen < step.polls:
                return
            if not isinstance(step, NeverAnswer) and not self._wait(progress, step.after):
                return
            run = self._engine.get(run_id)
            if run.status.is_terminal:
                progress.done = True
                return
            if consumes:
                progress.index += 1
            self._perform(step, run)
            progress.seen = 0
            progress.anchor = self._clock.now()

    def _next(self, progress: _Progress, run: RunObject) -> tuple[Step | CancelStep, bool] | None:
        """The step due next and whether it is the script's own (else implied)."""
        status = run.status
        if status is RunStatus.CANCELLING:
            return progress.script.on_cancel, False
        if status is RunStatus.REQUIRES_ACTION:
            return None  # the client's turn
        steps = progress.script.steps
        while progress.index < len(steps):
            step = steps[progress.index]
            if status is RunStatus.QUEUED:
                if isinstance(step, Start | Expire | NeverAnswer):
                    return step, True
                return Start(), False  # started by itself before a step that needs it
            if isinstance(step, Start):
                progress.index += 1  # already started (by the test)
                continue
            return step, True
        return None  # the script is over; the test drives the rest

    def _wait(self, progress: _Progress, after: int) -> bool:
        """Let ``after`` seconds pass since the last step: virtually if the clock can
        be moved, else report whether they have passed for real."""
        target = progress.anchor + after
        now = self._clock.now()
        if now >= target:
            return True
        if self._advance is None:
            return False
        self._advance(target - now)
        return True

    def _perform(self, step: Step | CancelStep, run: RunObject) -> None:
        if isinstance(step, Start):
            self._call(run, self._engine.start, run.id)
        elif isinstance(step, RequireAction):
            self._require_action(run, step)
        elif isinstance(step, Complete):
            usage = step.usage or canned_usage(step.reply)
            self._hub.expect_reply(run.id, step.reply, usage)
            self._call(run, self._engine.complete, run.id, usage)
        elif isinstance(step, MarkIncomplete):
            self._hub.expect_reply(run.id, step.reply, step.usage)
            self._call(
                run, self._engine.mark_incomplete, run.id, reason=step.reason, usage=step.usage
            )
        elif isinstance(step, Fail):
            self._call(run, self._engine.fail, run.id, code=step.code, message=step.message)
        elif isinstance(step, Expire):
            self._call(run, self._engine.expire, run.id)
        elif isinstance(step, NeverAnswer):
            self._never_answer(run)
        else:
            self._call(run, self._engine.finish_cancel, run.id)

    def _require_action(self, run: RunObject, step: RequireAction) -> None:
        try:
            calls = resolve_calls(step, run, lambda: new_id("call_"))
        except ValueError as error:
            self._script_error(run, str(error))
            return
        if step.usage is not None:
            self._call(
                run,
                self._engine.add_usage,
                run.id,
                prompt_tokens=step.usage.prompt_tokens,
                completion_tokens=step.usage.completion_tokens,
            )
            if self._engine.get(run.id).status is not RunStatus.IN_PROGRESS:
                return  # a budget ended it
        self._call(run, self._engine.require_action, run.id, calls)

    def _never_answer(self, run: RunObject) -> None:
        deadline = run.expires_at
        if deadline is None or self._advance is None:
            return  # real time: the run expires when its deadline really passes
        now = self._clock.now()
        if now < deadline:
            self._advance(deadline - now)
        self._engine.get(run.id)  # the expiry rule ends it

    def _call(
        self, run: RunObject, method: Callable[..., RunObject], *args: Any, **kw: Any
    ) -> None:
        try:
            changed = method(*args, **kw)
        except RunflowError as error:
            self._hub.forget_expectations(run.id)
            now = self._engine.get(run.id)
            if now.status.is_terminal or now.status is not run.status:
                return  # the run moved on (expired, cancelled…) under the script
            self._script_error(run, str(error))
            return
        self._hub.wait_seen(changed)

    def _script_error(self, run: RunObject, message: str) -> None:
        """A script that cannot be played on this run fails it, saying why."""
        _log.warning("script_failed", run_id=run.id, error=message)
        try:
            changed = self._engine.fail(
                run.id, code="server_error", message=f"runflow script error: {message}"
            )
        except RunflowError:
            return
        self._hub.wait_seen(changed)


def _finished(progress: _Progress) -> bool:
    return progress.done


def _fault_error(fault: HttpFault) -> ApiError:
    kind, code, message = _FAULT_TYPES.get(
        fault.status,
        ("server_error" if fault.status >= 500 else "invalid_request_error", None, "Error."),  # noqa: PLR2004
    )
    return ApiError(
        fault.status,
        fault.message or message,
        type=kind,
        code=fault.code if fault.code is not None else code,
        headers=[("retry-after-ms", "1")],
    )
