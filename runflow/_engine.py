"""The run engine: every status change of every run goes through here."""

from __future__ import annotations

import base64
import logging
import os
import threading
import typing
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog
import structlog.stdlib

from runflow._clock import Clock, SystemClock
from runflow._convert import structure_run, structure_tool_calls, structure_tool_outputs
from runflow._events import RunEvent
from runflow._machine import ASSISTANTS_LIFECYCLE, Lifecycle, Step
from runflow._model import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    IncompleteDetails,
    IncompleteReason,
    RunObject,
    RunStatus,
    Usage,
    evolve_run,
    new_run,
    required_action,
)
from runflow._validate import check_create, check_tool_calls, last_error
from runflow._validate import metadata as check_metadata
from runflow._validate import reason as check_reason
from runflow._validate import usage as check_usage
from runflow.exceptions import (
    InvalidTransitionError,
    LeaseError,
    RunflowError,
    RunNotFoundError,
    ThreadBusyError,
    ToolOutputsError,
    ValidationError,
)
from runflow.hooks import IncompleteReasonHook, RequiredActionHook
from runflow.stores import MemoryStore, Store, StoredRun
from runflow.stores._base import Change, JournalEntry

__all__ = [
    "DEFAULT_CANCEL_GRACE",
    "DEFAULT_EXPIRES_AFTER",
    "DEFAULT_LEASE",
    "DEFAULT_SWEEP_BATCH",
    "Engine",
    "RunRef",
]

# enum members as module constants: a class attribute lookup costs ~85 ns on 3.11
_CANCELLING = RunStatus.CANCELLING
_IN_PROGRESS = RunStatus.IN_PROGRESS
_QUEUED = RunStatus.QUEUED

#: Seconds from creation to ``expires_at`` (LIFECYCLE R3.2).
DEFAULT_EXPIRES_AFTER = 600
#: Seconds a worker's lease on a run lasts unless renewed.
DEFAULT_LEASE = 30
#: Seconds a run may stay ``cancelling`` before a sweep ends it ``cancelled``.
DEFAULT_CANCEL_GRACE = 60
#: Runs a sweep loads at a time.
DEFAULT_SWEEP_BATCH = 1000

RunRef = str | RunObject
Subscriber = Callable[[RunEvent], object]

_ZERO = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
_PLAIN: dict[str, str] = {s.value: s.value for s in RunStatus}  # log plain JSON strings
_EVENT: dict[str, str] = {s.value: f"thread.run.{s.value}" for s in RunStatus}
_NO_PAYLOAD: Mapping[str, Any] = {}
# StoredRun and Change are named tuples; tuple.__new__ builds one in a fraction of the
# time of their keyword-checking constructors (all fields given, in order).
_tuple_new = tuple.__new__
_LEASED: frozenset[str] = frozenset({_IN_PROGRESS.value})  # where a lease matters
_STRIPES = 256  # per-run locks are striped: no per-run allocation, no global lock
_MAX_RETRIES = 8  # compare-and-set retries against a store shared with other processes
_log = structlog.get_logger("runflow")
_configured = structlog.is_configured


_ID_TABLE = bytes.maketrans(b"-_", b"xQ")
_ID_BATCH = 256  # ids drawn from one os.urandom call (a system call costs ~0.5 us)
_ids: deque[str] = deque()
# a forked child must never hand out ids its parent drew too
os.register_at_fork(after_in_child=_ids.clear)


def new_run_id() -> str:
    """A fresh id shaped like OpenAI's: ``run_`` and 24 letters and digits."""
    try:
        return _ids.popleft()  # atomic: threads never get the same id
    except IndexError:
        raw = base64.urlsafe_b64encode(os.urandom(18 * _ID_BATCH)).translate(_ID_TABLE).decode()
        _ids.extend(["run_" + raw[i : i + 24] for i in range(24, len(raw), 24)])
        return "run_" + raw[:24]


def _refusal(run: RunObject, trigger: str, allowed: frozenset[str]) -> InvalidTransitionError:
    status = run.status.value
    if trigger == "submit_tool_outputs":
        msg = f'Runs in status "{status}" do not accept tool outputs.'
    elif trigger == "cancel":
        msg = f"Cannot cancel run with status '{status}'."
    else:
        msg = f"Cannot {trigger.replace('_', ' ')} run with status '{status}'."
    return InvalidTransitionError(
        msg, run_id=run.id, status=status, trigger=trigger, allowed=allowed
    )


def _run_id(ref: RunRef) -> str:
    given: object = ref  # untyped callers pass anything
    if type(given) is str:
        return given
    if isinstance(given, RunObject):
        return given.id
    if isinstance(given, str):
        return str(given)
    msg = f"expected a run id or a RunObject, got {type(ref).__name__}"
    raise TypeError(msg)


# A decision: the trigger to fire, its payload, and the new accrued usage.
Decision = tuple[str, Mapping[str, Any], Usage | None]
Decide = Callable[[StoredRun, int], Decision]


@typing.final
class Engine:
    """
    Drives runs through their lifecycle: one call, one exact transition.

    Every method that changes a run takes a run id or a :class:`RunObject`, returns
    the new record and emits the events of the change. A refused call raises and
    changes nothing, except that a run found past its ``expires_at`` is expired
    first (LIFECYCLE R3.4): the refusal then names status ``expired``.

    Args:
        clock: Where time comes from (integer Unix seconds). Defaults to the system
            clock; tests inject :class:`runflow.testing.FakeClock`.
        store: Where runs live. Defaults to a new :class:`runflow.stores.MemoryStore`.
        id_factory: Makes run ids (for reproducible tests). Defaults to OpenAI-shaped
            random ids.
        expires_after: Seconds from creation to ``expires_at`` (default 600).
        required_action_hooks: Consulted, in order, on tool calls and tool outputs.
        incomplete_reason_hooks: Consulted, in order, when a run completes.
        lease: Seconds a worker holds a run it claimed or started (default 30),
            renewed by :meth:`heartbeat`. A sweep fails an ``in_progress`` run whose
            lease lapsed.
        cancel_grace: Seconds a run may stay ``cancelling`` before a sweep ends it
            ``cancelled`` (default 60; None: never).
        sweep_batch: How many runs a sweep loads at a time (default 1000).
        logger: The structlog logger for the engine's events. Defaults to
            ``structlog.get_logger("runflow")``, a lazy proxy that follows
            configuration made at any time (including ``capture_logs``), and that
            stays quiet while the application has not configured structlog (as a
            library's stdlib logger with a ``NullHandler`` would). A logger given
            here is always used. A concrete filtering logger
            (``structlog.get_logger("runflow").bind()`` after configuring, with
            structlog ≥ 25.1) fixes its level when it is made, so the engine asks it
            once whether it logs debug events and, if not, skips building them:
            about 1 µs a transition. The default proxy does the same on its own
            once the application configures structlog with
            ``cache_logger_on_first_use=True`` (structlog's own promise for such
            loggers: configuration made after their first use does not reach them).

    Calls on one run serialize; calls on different runs do not wait for each other.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        id_factory: Callable[[], str] | None = None,
        expires_after: int = DEFAULT_EXPIRES_AFTER,
        required_action_hooks: Iterable[RequiredActionHook] = (),
        incomplete_reason_hooks: Iterable[IncompleteReasonHook] = (),
        logger: Any = None,
        lease: int = DEFAULT_LEASE,
        cancel_grace: int | None = DEFAULT_CANCEL_GRACE,
        sweep_batch: int = DEFAULT_SWEEP_BATCH,
    ) -> None:
        self._log: Any = logger if logger is not None else _log
        self._always_log = logger is not None
        self._log_off = logger is not None and not _debug_enabled(logger)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._store: Store = store if store is not None else MemoryStore()
        self._new_id = id_factory if id_factory is not None else new_run_id
        self._expires_after = self._check_expires_after(expires_after)
        self._lease = _positive(lease, "lease")
        self._cancel_grace = (
            None if cancel_grace is None else _positive(cancel_grace, "cancel_grace", 0)
        )
        self._sweep_batch = _positive(sweep_batch, "sweep_batch")
        self._action_hooks = tuple(required_action_hooks)
        self._reason_hooks = tuple(incomplete_reason_hooks)
        # reentrant: a hook that calls the engine (on another run, which may share the
        # stripe, or on its own run) must not wait on its own thread for ever
        self._locks = tuple(threading.RLock() for _ in range(_STRIPES))
        self._life = ASSISTANTS_LIFECYCLE
        self._fire = ASSISTANTS_LIFECYCLE.fire
        self._events = ASSISTANTS_LIFECYCLE.events
        self._sources = ASSISTANTS_LIFECYCLE.sources
        self._subscribers: tuple[Subscriber, ...] = ()
        self._outbox: deque[RunEvent] = deque()
        self._emit_lock = threading.Lock()
        # a store write and the queueing of its events, in one order (_write_in_order)
        self._publish_lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._delivering = threading.local()
        # a store shared between processes delivers every event through its journal
        self._watch = getattr(self._store, "watch", None)
        # a store that knows the run as it last wrote it (peek) saves a read per transition
        self._get: Callable[[str], StoredRun | None] = self._store.get
        self._read: Callable[[str], StoredRun | None] = getattr(self._store, "peek", self._get)
        self._stop_watch: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<Engine clock={self._clock!r} store={self._store!r}>"

    @property
    def clock(self) -> Clock:
        """The engine's clock."""
        return self._clock

    @property
    def store(self) -> Store:
        """The engine's store."""
        return self._store

    @property
    def lifecycle(self) -> Lifecycle:
        """The shared lifecycle machine this engine drives runs with."""
        return self._life

    @staticmethod
    def _check_expires_after(value: object) -> int:
        return _positive(value, "expires_after")

    # --- creating ------------------------------------------------------------------------

    def create(
        self,
        *,
        thread_id: str,
        assistant_id: str,
        model: str = "",
        instructions: str | None = "",
        tools: Iterable[Any] = (),
        metadata: Mapping[str, str] | None = None,
        max_prompt_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        truncation_strategy: Any = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = True,
        response_format: Any = None,
        expires_after: int | None = None,
    ) -> RunObject:
        """
        Create a run: ``queued``, ``expires_at = created_at + expires_after``.

        Tools, tool choice, truncation strategy and response format are accepted as
        records or as wire dicts. Unset sampling and strategy fields take the values
        the live API reports (``temperature``/``top_p`` 1.0, ``"auto"``); metadata
        defaults to ``{}``. Emits ``thread.run.created`` then ``thread.run.queued``.

        Raises:
            runflow.ValidationError: an argument breaks the create-run request schema
                (metadata ≤ 16 keys of ≤ 64 chars with string values ≤ 512 chars,
                ≤ 20 tools, token budgets ≥ 256, temperature 0..2, top_p 0..1…).
        """
        fields = check_create(
            thread_id=thread_id,
            assistant_id=assistant_id,
            model=model,
            instructions=instructions,
            tools=tools,
            metadata_=metadata,
            max_prompt_tokens=max_prompt_tokens,
            max_completion_tokens=max_completion_tokens,
            temperature=temperature,
            top_p=top_p,
            truncation_strategy=truncation_strategy,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            response_format=response_format,
        )
        ttl = (
            self._expires_after
            if expires_after is None
            else self._check_expires_after(expires_after)
        )
        now = self._clock.now()
        if type(now) is not int:  # the check of _now(), inline: the hot path
            raise _bad_clock(self._clock, now)
        run_id: object = self._new_id()
        if not isinstance(run_id, str) or not run_id:
            msg = f"id_factory returned {run_id!r}; expected a non-empty string"
            raise RunflowError(msg)
        fields["id"] = run_id
        fields["created_at"] = now
        fields["status"] = _QUEUED
        fields["expires_at"] = now + ttl
        run = new_run(fields)
        change = _tuple_new(Change, (run_id, now, "create", None, _QUEUED, None, _NO_PAYLOAD, run))
        stored = _tuple_new(StoredRun, (run, 1, None, False, now, None, None))
        for retried in (False, True):
            try:
                if self._subscribers and self._watch is None:
                    self._write_in_order(
                        self._store.insert,
                        (stored, change),
                        (("thread.run.created", run, -1), ("thread.run.queued", run, 0)),
                    )
                    self._drain()
                else:
                    self._store.insert(stored, change)
            except ThreadBusyError as busy:
                # The thread's active run may be past its deadline: this is its next
                # read, so the expiry rule (R3.4) ends it, which frees the thread.
                if retried or not self._expired_by_rule(busy.run_id):
                    raise
                continue
            except ValueError:
                msg = f"a run with id {run_id!r} already exists (check the engine's id_factory)"
                raise RunflowError(msg) from None
            break
        if not self._log_off:
            self._log_transition(run, None, "create", None)
        return run

    # --- reading -------------------------------------------------------------------------

    def get(self, run: RunRef) -> RunObject:
        """
        The run as it is now. A local active run past ``expires_at`` is expired by
        this read (and the expiry is stored and emitted).

        Raises:
            runflow.RunNotFoundError: no such run.
        """
        run_id = _run_id(run)
        stored = self._store.get(run_id)
        if stored is None:
            raise RunNotFoundError(run_id)
        if not self._due(stored, self._now()):
            return stored.record
        return self._transition(run_id, None, None)

    def runs(
        self,
        *,
        thread_id: str | None = None,
        status: RunStatus | str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[RunObject]:
        """
        Stored runs in creation order (or newest first), optionally only one thread's
        or one status's, at most ``limit``.

        A listing reads every run it could list, so it applies the expiry rule first
        (LIFECYCLE R3.4), as :meth:`get` does: every local active run past
        ``expires_at`` is expired (stored and emitted), and the listing and its
        ``status`` filter see the runs as they are now. That is the expiry step of
        :meth:`sweep`; leases and stuck cancellations are left to sweeps.
        """
        self._expire_due(self._now())
        self._drain()
        return [
            s.record
            for s in self._store.runs(
                thread_id=thread_id,
                status=None if status is None else str(status),
                limit=limit,
                newest_first=newest_first,
            )
        ]

    def history(self, run: RunRef) -> list[JournalEntry]:
        """
        Every transition of a run, in order, from its journal.

        Raises:
            runflow.RunNotFoundError: no such run.
        """
        run_id = _run_id(run)
        self._load(run_id)
        return self._store.history(run_id)

    def events(self, *, after: int = 0, limit: int = 1000) -> list[RunEvent]:
        """
        The events after event sequence ``after``, in order, replayed from the
        journal: a consumer that reconnects passes the last sequence it saw and
        misses nothing.
        """
        out: list[RunEvent] = []
        cursor = after // 2
        while len(out) < limit:
            entries = self._store.journal(cursor, limit)
            if not entries:
                break
            for entry in entries:
                out.extend(e for e in entry.events if e.sequence > after)
            cursor = entries[-1].sequence
        return out[:limit]

    def discard(self, run: RunRef) -> None:
        """
        Forget an ended run and its journal, releasing their memory.

        Raises:
            runflow.InvalidTransitionError: the run is still active.
            runflow.RunNotFoundError: no such run.
        """
        run_id = _run_id(run)
        # the expiry rule first (R3.4); its event is delivered outside the run's lock
        self._transition(run_id, None, None)
        with self._lock(run_id):
            record = self._load(run_id).record
            if record.status in ACTIVE_STATUSES:
                raise InvalidTransitionError(
                    f"Cannot discard run with status '{record.status.value}'.",
                    run_id=run_id,
                    status=record.status.value,
                    trigger="discard",
                    allowed=frozenset(TERMINAL_STATUSES),
                )
            self._store.discard(run_id)

    def close(self) -> None:
        """Stop delivering events from other processes and close the store."""
        if self._stop_watch is not None:
            self._stop_watch()
            self._stop_watch = None
        self._store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the transitions -----------------------------------------------------------------

    def start(
        self, run: RunRef, *, worker: str | None = None, lease: int | None = None
    ) -> RunObject:
        """
        ``queued`` → ``in_progress``; stamps ``started_at`` (also on re-entry).

        With ``worker``, that worker takes the run's lease for ``lease`` seconds
        (default: the engine's); see :meth:`claim`.
        """
        lease_until = None if worker is None and lease is None else self._lease_end(worker, lease)
        return self._transition(_run_id(run), "start", None, worker, lease_until)

    def claim(self, worker: str, *, limit: int = 1, lease: int | None = None) -> list[RunObject]:
        """
        Take up to ``limit`` queued runs, longest waiting first, and start them,
        leased to ``worker`` for ``lease`` seconds (default: the engine's).

        Claims are exclusive: workers claiming from one queue, in threads or in
        processes sharing a durable store, never get the same run. Overdue runs are
        expired first, never claimed. Keep a claimed run with :meth:`heartbeat`; a
        sweep fails a run whose lease lapsed.
        """
        _string_arg(worker, "worker")
        if type(limit) is not int or limit < 0:
            raise ValidationError("limit", f"expected a non-negative integer, got {limit!r}")
        now = self._now()
        lease_until = self._lease_end(worker, lease, now)
        self._expire_due(now)

        def step(stored: StoredRun) -> tuple[StoredRun, Change]:
            record = stored.record
            fire = Step(record.status, now, _NO_PAYLOAD)
            self._fire("start", fire)
            changed = evolve_run(record, fire.changes)
            new = StoredRun(
                changed, stored.version + 1, stored.accrued, False, now, worker, lease_until
            )
            change = Change(
                record.id,
                now,
                "claim",
                record.status,
                changed.status,
                worker,
                fire.changes,
                changed,
            )
            return new, change

        try:
            if self._subscribers and self._watch is None:
                with self._publish_lock:  # the store's order is the events' (_write_in_order)
                    claimed = self._store.claim(limit=limit, now=now, step=step)
                    for new, sequence in claimed:
                        self._emit(_EVENT[new.record.status], new.record, 2 * sequence)
            else:
                claimed = self._store.claim(limit=limit, now=now, step=step)
            for new, _ in claimed:
                self._log_transition(new.record, _QUEUED, "claim", worker)
        finally:
            self._drain()
        return [new.record for new, _ in claimed]

    def heartbeat(self, run: RunRef, *, worker: str, lease: int | None = None) -> RunObject:
        """
        Extend ``worker``'s lease on an ``in_progress`` run to ``lease`` seconds from
        now (default: the engine's).

        Raises:
            runflow.LeaseError: another worker holds the run, or this worker's lease
                already lapsed.
            runflow.InvalidTransitionError: the run is not ``in_progress``.
        """
        run_id = _run_id(run)
        lease_until = self._lease_end(worker, lease)

        def decide(stored: StoredRun, now: int) -> Decision:
            return "", {"lease_until": now + (lease_until or 0), "worker": worker}, stored.accrued

        return self._transition(
            run_id, "complete", decide, refuse_as="heartbeat", worker=worker, statuses=_LEASED
        )

    def require_action(
        self, run: RunRef, tool_calls: Iterable[Any], *, worker: str | None = None
    ) -> RunObject:
        """
        ``in_progress`` → ``requires_action`` with these function tool calls.

        Each call names a function tool of the run; ids are unique; one call only
        when ``parallel_tool_calls`` is false. The required-action hooks may rewrite
        or refuse the calls. Releases the worker's lease.

        Raises:
            runflow.ValidationError: a call is malformed or names no tool of the run.
            runflow.InvalidTransitionError: the run is not ``in_progress``.
        """
        calls = structure_tool_calls(_listed(tool_calls))

        def decide(stored: StoredRun, _: int) -> Decision:
            record = stored.record
            checked = check_tool_calls(record, calls)
            for hook in self._action_hooks:
                checked = check_tool_calls(
                    record, structure_tool_calls(list(hook.validate_tool_calls(record, checked)))
                )
            return "require_action", {"required_action": required_action(checked)}, stored.accrued

        return self._transition(_run_id(run), "require_action", decide, worker)

    def submit_tool_outputs(
        self, run: RunRef, tool_outputs: Iterable[Any], *, worker: str | None = None
    ) -> RunObject:
        """
        ``requires_action`` → ``queued``: all outputs, in a single call (LIFECYCLE R4).

        Raises:
            runflow.ToolOutputsError: an expected call id is missing, or an id is
                unknown or given twice.
            runflow.InvalidTransitionError: ``Runs in status "<status>" do not accept
                tool outputs.``
        """
        outputs = structure_tool_outputs(_listed(tool_outputs))

        def decide(stored: StoredRun, _: int) -> Decision:
            record = stored.record
            calls = record.tool_calls
            if not (  # one call answered by one output: no lists or sets to build
                len(calls) == len(outputs) == 1 and calls[0].id == outputs[0].tool_call_id
            ):
                expected = [c.id for c in calls]
                got = [o.tool_call_id for o in outputs]
                if len(got) != len(expected) or set(got) != set(expected):
                    raise ToolOutputsError(run_id=record.id, expected=expected, got=got)
            for hook in self._action_hooks:
                hook.validate_tool_outputs(record, outputs)
            return "submit_tool_outputs", {}, stored.accrued

        return self._transition(_run_id(run), "submit_tool_outputs", decide, worker)

    def complete(
        self,
        run: RunRef,
        usage: Usage | Mapping[str, int] | None = None,
        *,
        worker: str | None = None,
    ) -> RunObject:
        """
        End the run ``completed`` with ``usage`` (added to what :meth:`add_usage`
        accumulated), unless a budget says otherwise: usage over
        ``max_prompt_tokens`` ends it ``incomplete`` with that reason, then
        ``max_completion_tokens``, then the incomplete-reason hooks in order.

        Raises:
            runflow.InvalidTransitionError: the run is not ``in_progress`` or
                ``cancelling``.
        """
        given = check_usage(usage)

        def decide(stored: StoredRun, _: int) -> Decision:
            total = _add(stored.accrued, given) or _ZERO
            why = self._incomplete_reason(stored.record, total)
            if why is not None:
                details = IncompleteDetails(reason=why)
                return "mark_incomplete", {"incomplete_details": details, "usage": total}, total
            return "complete", {"usage": total}, total

        return self._transition(_run_id(run), "complete", decide, worker)

    def fail(self, run: RunRef, *, code: str, message: str, worker: str | None = None) -> RunObject:
        """
        End the run ``failed`` with ``last_error`` ``{code, message}``; ``code`` is
        ``server_error``, ``rate_limit_exceeded`` or ``invalid_prompt``.
        """
        error = last_error(code, message)

        def decide(stored: StoredRun, _: int) -> Decision:
            return "fail", {"last_error": error, "usage": stored.accrued}, stored.accrued

        return self._transition(_run_id(run), "fail", decide, worker)

    def mark_incomplete(
        self,
        run: RunRef,
        *,
        reason: IncompleteReason,
        usage: Usage | Mapping[str, int] | None = None,
        worker: str | None = None,
    ) -> RunObject:
        """End the run ``incomplete`` because a token budget was reached."""
        why = check_reason(reason)
        given = check_usage(usage)

        def decide(stored: StoredRun, _: int) -> Decision:
            total = _add(stored.accrued, given) or _ZERO
            details = IncompleteDetails(reason=why)
            return "mark_incomplete", {"incomplete_details": details, "usage": total}, total

        return self._transition(_run_id(run), "mark_incomplete", decide, worker)

    def cancel(self, run: RunRef, *, worker: str | None = None) -> RunObject:
        """
        Ask to cancel: ``queued``/``in_progress``/``requires_action`` → ``cancelling``.

        A cancel is a client's request: it needs no lease.

        Raises:
            runflow.InvalidTransitionError: ``Cannot cancel run with status '<status>'.``
        """
        return self._transition(_run_id(run), "cancel", None, worker=worker, check_lease=False)

    def finish_cancel(self, run: RunRef, *, worker: str | None = None) -> RunObject:
        """``cancelling`` → ``cancelled``; stamps ``cancelled_at``."""
        return self._transition(_run_id(run), "finish_cancel", None, worker)

    def expire(self, run: RunRef, *, worker: str | None = None) -> RunObject:
        """Expire an active run now, whatever its ``expires_at``."""
        return self._transition(_run_id(run), "expire", None, worker)

    def add_usage(
        self,
        run: RunRef,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        worker: str | None = None,
    ) -> RunObject:
        """
        Accumulate token usage of a run that is ``in_progress`` or ``cancelling``.

        The wire ``usage`` stays null while the run is active; the sum becomes its
        usage when it ends. Crossing ``max_prompt_tokens`` or
        ``max_completion_tokens`` ends the run ``incomplete`` at once.

        Raises:
            runflow.InvalidTransitionError: the run is in another status.
        """
        delta = check_usage(
            {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}, "$"
        )

        def decide(stored: StoredRun, _: int) -> Decision:
            total = _add(stored.accrued, delta)
            assert total is not None  # noqa: S101 - delta is never None
            why = _budget(stored.record, total)
            if why is not None:
                details = IncompleteDetails(reason=why)
                return "mark_incomplete", {"incomplete_details": details, "usage": total}, total
            return "", _NO_PAYLOAD, total

        # usage accrues exactly where a run may still end incomplete
        return self._transition(
            _run_id(run), "mark_incomplete", decide, refuse_as="add_usage", worker=worker
        )

    def modify(self, run: RunRef, *, metadata: Mapping[str, str] | None) -> RunObject:
        """
        Replace an ended run's ``metadata`` (LIFECYCLE R6.1: the only field a client
        may change, and only once the run has ended). Journaled as ``modify``; no
        stream event, as OpenAI sends none.

        Raises:
            runflow.ValidationError: metadata breaks the 16/64/512 limits or has a
                value that is not a string.
            runflow.InvalidTransitionError: ``Cannot update run with status '<status>'.``
                for a run that is still active.
        """
        run_id = _run_id(run)
        fields = {"metadata": check_metadata(metadata)}
        try:
            for _ in range(_MAX_RETRIES):
                with self._lock(run_id):
                    now = self._now()
                    stored = self._settle(self._load(run_id), now)
                    record = stored.record
                    if record.status in ACTIVE_STATUSES or stored.observed:
                        raise InvalidTransitionError(
                            f"Cannot update run with status '{record.status.value}'.",
                            run_id=run_id,
                            status=record.status.value,
                            trigger="modify",
                            allowed=frozenset(TERMINAL_STATUSES),
                        )
                    changed = evolve_run(record, fields)
                    new = stored._replace(record=changed, version=stored.version + 1)
                    change = Change(
                        run_id, now, "modify", record.status, record.status, None, fields, changed
                    )
                    if self._store.commit(stored, new, change) is not None:
                        self._log_transition(changed, record.status, "modify", None)
                        return changed
            msg = f"run {run_id!r} kept changing under this engine; gave up after {_MAX_RETRIES}"
            raise RunflowError(msg)
        finally:
            self._drain()

    # --- sweeping ------------------------------------------------------------------------

    def sweep(self) -> list[RunObject]:
        """
        Settle every local run that time has caught up with, in batches:

        1. active runs past ``expires_at`` end ``expired`` (LIFECYCLE R3.4);
        2. ``in_progress`` runs whose lease lapsed end ``failed`` with
           ``last_error`` ``server_error`` saying so;
        3. runs ``cancelling`` for longer than the engine's ``cancel_grace`` end
           ``cancelled``.

        Sweeps are idempotent and safe in parallel, in threads or in processes
        sharing a store: each run is settled once, with one event.

        Returns:
            The runs this sweep changed, in that order.
        """
        now = self._now()
        try:
            changed = self._expire_due(now)
            changed += self._settle_batches(
                lambda limit: self._store.lapsed(now, limit),
                lambda stored: self._lapse(stored, now),
            )
            grace = self._cancel_grace
            if grace is not None:
                changed += self._settle_batches(
                    lambda limit: self._store.stuck(_CANCELLING.value, now - grace, limit),
                    lambda stored: self._finish_stuck(stored, now, grace),
                )
        finally:
            self._drain()
        return changed

    def _expired_by_rule(self, run_id: str) -> bool:
        """Apply the expiry rule to run ``run_id``: whether it is (now) expired."""
        try:
            return self._transition(run_id, None, None).status is RunStatus.EXPIRED
        except RunNotFoundError:
            return bool(run_id)  # gone meanwhile: the thread may be free

    def _expire_due(self, now: int) -> list[RunObject]:
        def expire(stored: StoredRun) -> RunObject | None:
            if not self._due(stored, now):
                return None
            return self._commit(stored, "expire", _NO_PAYLOAD, now, stored.accrued)

        return self._settle_batches(lambda limit: self._store.due(now, limit), expire)

    def _lapse(self, stored: StoredRun, now: int) -> RunObject | None:
        lease_until = stored.lease_until
        if (
            stored.observed
            or lease_until is None
            or lease_until > now
            or stored.record.status is not _IN_PROGRESS
        ):
            return None
        error = last_error(
            "server_error",
            f"The lease of worker {stored.worker} on this run lapsed at {lease_until} "
            "without a heartbeat.",
        )
        payload = {"last_error": error, "usage": stored.accrued}
        return self._commit(stored, "fail", payload, now, stored.accrued)

    def _finish_stuck(self, stored: StoredRun, now: int, grace: int) -> RunObject | None:
        if stored.record.status is not _CANCELLING or stored.since > now - grace:
            return None
        return self._commit(stored, "finish_cancel", _NO_PAYLOAD, now, stored.accrued)

    def _settle_batches(
        self,
        find: Callable[[int], list[str]],
        settle: Callable[[StoredRun], RunObject | None],
    ) -> list[RunObject]:
        """Settle the runs ``find`` names, a batch at a time, each under its lock."""
        done: list[RunObject] = []
        seen: set[str] = set()
        while True:
            batch = [rid for rid in find(self._sweep_batch) if rid not in seen]
            if not batch:
                return done
            for run_id in batch:
                seen.add(run_id)
                with self._lock(run_id):
                    stored = self._store.get(run_id)
                    if stored is None:
                        continue
                    try:
                        result = settle(stored)
                    except _Conflict:
                        continue  # another writer changed it first
                    if result is not None:
                        done.append(result)
            if self._outbox:
                self._drain()

    # --- observing a remote run ----------------------------------------------------------

    def observe(self, snapshot: Mapping[str, Any] | RunObject) -> RunObject:
        """
        Track a run of a remote server from its polled snapshots (LIFECYCLE R2.1).

        A snapshot may skip statuses (``queued`` → ``completed``): it is accepted if
        the machine can reach its status from the last one seen. A same-status
        snapshot replaces the record without an event. An observed run keeps the
        server's fields and clock: the local expiry rule, sweeps, claims and the
        thread lock leave it alone.

        Raises:
            runflow.InvalidTransitionError: the jump is impossible (out of a terminal
                status, ``cancelling`` back to an active status…).
            runflow.ValidationError: the snapshot does not parse, names a run this
                engine drives itself, or changes a field that never changes during a
                run (``created_at``, the thread, the assistant, the configuration).
        """
        record = snapshot if isinstance(snapshot, RunObject) else structure_run(snapshot)
        run_id = record.id
        now = self._now()
        try:
            with self._lock(run_id):
                stored = self._store.get(run_id)
                if stored is None:
                    change = Change(
                        run_id, now, "observe", None, record.status, None, _NO_PAYLOAD, record
                    )
                    first = StoredRun(record, observed=True, since=now)
                    if self._subscribers and self._watch is None:
                        created = (("thread.run.created", record, -1),)
                        self._write_in_order(
                            self._store.insert,
                            (first, change),
                            (
                                *(created if record.status is _QUEUED else ()),
                                (_EVENT[record.status], record, 0),
                            ),
                        )
                    else:
                        self._store.insert(first, change)
                    self._log_transition(record, None, "observe", None)
                    return record
                return self._observe_next(stored, record, now)
        finally:
            self._drain()

    def _observe_next(self, stored: StoredRun, record: RunObject, now: int) -> RunObject:
        """Apply a later snapshot of an observed run (its lock is held)."""
        run_id = record.id
        if not stored.observed:
            raise ValidationError("$.id", f"run {run_id!r} is driven by this engine, not observed")
        old = stored.record.status
        moved = record.status != old
        if moved:
            path = self._life.paths.get((old, record.status))
            if path is None:
                raise InvalidTransitionError(
                    f"Cannot move run from status '{old.value}' to '{record.status.value}'.",
                    run_id=run_id,
                    status=old.value,
                    trigger="observe",
                    allowed=frozenset(a for (a, b) in self._life.paths if b == record.status),
                )
            # the machine walks the skipped statuses; the snapshot's own fields win
            step = Step(stored.record.status, now, _NO_PAYLOAD)
            for trigger in path:
                self._life.fire(trigger, step)
        before = stored.record.__dict__
        diff = {k: v for k, v in record.__dict__.items() if before[k] != v}
        fixed = _FIXED.intersection(diff)
        if fixed:
            name = min(fixed, key=_FIXED_ORDER.index)
            raise ValidationError(
                f"$.{name}",
                f"a run's {name} never changes (LIFECYCLE R2.2, R3.1): the run has "
                f"{before[name]!r}, the snapshot {diff[name]!r}",
            )
        new = StoredRun(
            record, stored.version + 1, stored.accrued, True, now if moved else stored.since
        )
        change = Change(run_id, now, "observe", old, record.status, None, diff, record)
        args = (stored, new, change if moved or diff else None)
        if moved and self._subscribers and self._watch is None:
            events = ((_EVENT[record.status], record, 0),)
            sequence = self._write_in_order(self._store.commit, args, events)
        else:
            sequence = self._store.commit(*args)
        if sequence is None:
            msg = f"run {run_id!r} changed while it was being observed; retry"
            raise RunflowError(msg)
        if moved:
            self._log_transition(record, old, "observe", None)
        return record

    # --- events --------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """
        Call ``callback(event)`` for every :class:`RunEvent` from now on.

        Events are delivered in sequence order, one at a time, after the change is
        stored and outside the run's lock, so a callback may call the engine (even
        on the same run). An exception from a callback is logged
        (``subscriber_failed``) and does not stop delivery to the others. On a
        store shared between processes (PostgreSQL), the events other processes
        make are delivered too, read from the journal in order.

        Sequence order holds across threads driving different runs too: on a store
        without a journal watch (memory, SQLite), an engine with subscribers makes
        each store write and queues its events under one lock. On SQLite that means
        the engine's threads no longer share group commits while it has
        subscribers (other processes' writes still do).

        Returns:
            A function that unsubscribes ``callback``.
        """
        given: object = callback  # untyped callers pass anything
        if not callable(given):
            msg = f"expected a callable, got {type(callback).__name__}"
            raise TypeError(msg)
        with self._emit_lock:
            self._subscribers = (*self._subscribers, callback)
            if self._watch is not None and self._stop_watch is None:
                self._stop_watch = self._watch(self._journal_tail(), self._deliver_entries)

        def unsubscribe() -> None:
            with self._emit_lock:
                subs = list(self._subscribers)
                if callback in subs:
                    subs.remove(callback)
                self._subscribers = tuple(subs)

        return unsubscribe

    def _journal_tail(self) -> int:
        """The newest journal sequence (events after it are new)."""
        newest = 0
        while True:
            entries = self._store.journal(newest, self._sweep_batch)
            if not entries:
                return newest
            newest = entries[-1].sequence

    def _deliver_entries(self, entries: list[JournalEntry]) -> None:
        """Deliver events read from a shared store's journal (its watcher thread)."""
        with self._emit_lock:
            for entry in entries:
                self._outbox.extend(entry.events)
        self._drain()

    def _emit(self, name: str, run: RunObject, sequence: int) -> None:
        with self._emit_lock:
            self._outbox.append(RunEvent(event=name, data=run, sequence=sequence))

    def _write_in_order(
        self,
        write: Callable[..., int | None],
        args: tuple[Any, ...],
        events: Iterable[tuple[str, RunObject, int]],
    ) -> int | None:
        """
        ``write(*args)``, a store write that returns its journal sequence (None: it
        lost its compare-and-set), then queue ``events`` (name, run, offset: the event
        sequence is ``2 * sequence + offset``), all under one lock.

        The store numbers writes in the order it makes them; without the lock, two
        threads writing different runs could queue their events the other way round,
        and a subscriber would see sequences go back. A store shared between
        processes needs none of this: its events come from its journal, in order.
        """
        with self._publish_lock:
            sequence = write(*args)
            if sequence is not None:
                for name, run, offset in events:
                    self._emit(name, run, 2 * sequence + offset)
        return sequence

    def _drain(self) -> None:
        """Deliver queued events in order; one thread delivers at a time."""
        local = self._delivering
        if getattr(local, "active", False):
            return  # an outer frame of this thread is delivering and will get to them
        outbox = self._outbox
        while outbox:
            if not self._deliver_lock.acquire(blocking=False):
                return  # the delivering thread re-checks the outbox after it releases
            local.active = True
            try:
                while outbox:
                    event = outbox.popleft()
                    for callback in self._subscribers:
                        try:
                            callback(event)
                        except Exception:  # noqa: BLE001 - one bad subscriber must not stop the rest
                            self._log.exception(
                                "subscriber_failed", run_id=event.data.id, event=event.event
                            )
            finally:
                local.active = False
                self._deliver_lock.release()

    # --- internals -----------------------------------------------------------------------

    def _now(self) -> int:
        """The clock's reading, checked: integer Unix seconds, as the wire has them."""
        now = self._clock.now()
        if type(now) is not int:
            raise _bad_clock(self._clock, now)
        return now

    def _lock(self, run_id: str) -> threading.RLock:
        return self._locks[hash(run_id) % _STRIPES]

    def _load(self, run_id: str) -> StoredRun:
        stored = self._store.get(run_id)
        if stored is None:
            raise RunNotFoundError(run_id)
        return stored

    def _lease_end(
        self, worker: str | None, lease: int | None, now: int | None = None
    ) -> int | None:
        """The lease length (or its end, given ``now``) for ``worker``; None without one."""
        if worker is None:
            if lease is not None:
                raise ValidationError("lease", "a lease needs a worker")
            return None
        _string_arg(worker, "worker")
        seconds = self._lease if lease is None else _positive(lease, "lease")
        return seconds if now is None else now + seconds

    @staticmethod
    def _due(stored: StoredRun, now: int) -> bool:
        record = stored.record
        deadline = record.expires_at
        return (
            deadline is not None
            and now >= deadline
            and not stored.observed
            and record.status in ACTIVE_STATUSES
        )

    def _transition(  # noqa: C901, PLR0912 - the hot path, in one frame
        self,
        run_id: str,
        trigger: str | None,
        decide: Decide | None,
        worker: str | None = None,
        lease: int | None = None,
        *,
        refuse_as: str | None = None,
        check_lease: bool = True,
        statuses: frozenset[str] | None = None,
    ) -> RunObject:
        """
        Load, apply the expiry rule, check, decide and commit one transition.

        ``trigger`` None only applies the expiry rule. ``refuse_as`` names the
        operation in a refusal when it is not the trigger itself (``add_usage``).
        ``lease`` (seconds) is taken by ``worker`` when the run enters
        ``in_progress``. A lost compare-and-set (another process changed the run)
        retries on the fresh state.
        """
        lock = self._locks[hash(run_id) % _STRIPES]
        get = self._get
        # A store that knows the run as it last wrote it saves a read (``_read`` is its
        # peek): its copy may be stale (another process moved the run): the
        # compare-and-set finds out, and a refusal made on it is checked against a
        # fresh read before it is raised.
        read = self._read if trigger is not None else get
        stored = None
        conflicts = 0
        try:
            while True:
                lock.acquire()  # not `with`: that costs ~0.14 us more per call on 3.11
                try:
                    if (stored := read(run_id)) is None and (
                        read is get or (stored := get(run_id)) is None
                    ):
                        raise RunNotFoundError(run_id)  # noqa: TRY301 - re-raised below
                    now = self._clock.now()
                    if type(now) is not int:  # the check of _now(), inline: the hot path
                        raise _bad_clock(self._clock, now)  # noqa: TRY301 - re-raised below
                    record = stored.record
                    deadline = record.expires_at
                    if deadline is not None and now >= deadline:
                        settled = self._settle(stored, now)
                        if trigger == "expire" and settled is not stored:
                            return settled.record  # the expiry asked for has happened
                        stored, record = settled, settled.record
                    if trigger is None:
                        return record  # a read
                    allowed = self._sources[trigger] if statuses is None else statuses
                    if (
                        stored.observed
                        or record.status not in allowed
                        or (worker is not None and check_lease)
                    ):
                        self._permit(
                            stored,
                            refuse_as or trigger,
                            allowed,
                            worker if check_lease else None,
                            now,
                        )
                    if decide is None:
                        return self._commit(
                            stored, trigger, _NO_PAYLOAD, now, stored.accrued, worker, lease
                        )
                    fire, payload, accrued = decide(stored, now)
                    return self._commit(stored, fire, payload, now, accrued, worker, lease)
                except _Conflict:
                    read = get
                    conflicts += 1
                    if conflicts >= _MAX_RETRIES:
                        break
                except Exception:
                    if read is get or stored is None or not self._stale(stored):
                        raise
                    read = get  # decided on a stale copy: decide again on the fresh run
                finally:
                    lock.release()
            msg = f"run {run_id!r} kept changing under this engine; gave up after {_MAX_RETRIES}"
            raise RunflowError(msg)
        finally:
            if self._outbox:
                self._drain()

    def _stale(self, stored: StoredRun) -> bool:
        """Whether the store now holds another version of the run than ``stored``."""
        fresh = self._store.get(stored.record.id)
        return fresh is None or fresh.version != stored.version

    def _permit(
        self,
        stored: StoredRun,
        name: str,
        allowed: frozenset[str],
        worker: str | None,
        now: int,
    ) -> None:
        """Refuse ``name`` on an observed run, from a wrong status, or without the lease."""
        record = stored.record
        if stored.observed:
            raise self._observed_refusal(record, name)
        if record.status not in allowed:
            raise _refusal(record, name, self._allowed(name))
        if worker is not None:
            self._check_lease(stored, worker, now)

    @staticmethod
    def _check_lease(stored: StoredRun, worker: str, now: int) -> None:
        holder, until = stored.worker, stored.lease_until
        if holder is None or until is None:
            return
        run_id = stored.record.id
        if holder != worker:
            raise LeaseError(
                f"Run {run_id} is leased to worker {holder} until {until}, not to {worker}.",
                run_id=run_id,
                worker=worker,
                holder=holder,
                lease_until=until,
            )
        if now >= until:
            raise LeaseError(
                f"The lease of worker {worker} on run {run_id} lapsed at {until}.",
                run_id=run_id,
                worker=worker,
                holder=holder,
                lease_until=until,
            )

    def _settle(self, stored: StoredRun, now: int) -> StoredRun:
        """Apply the expiry rule (R3.4): the run as it must be seen at ``now``."""
        deadline = stored.record.expires_at
        if deadline is not None and now >= deadline and self._due(stored, now):
            self._commit(stored, "expire", _NO_PAYLOAD, now, stored.accrued)
            return self._load(stored.record.id)
        return stored

    @staticmethod
    def _observed_refusal(record: RunObject, name: str) -> InvalidTransitionError:
        return InvalidTransitionError(
            f"Run {record.id} is observed from a remote server; only observe() changes it.",
            run_id=record.id,
            status=record.status.value,
            trigger=name,
            allowed=frozenset(),
        )

    def _allowed(self, trigger: str) -> frozenset[str]:
        if trigger == "add_usage":
            return self._life.sources["mark_incomplete"]
        if trigger == "heartbeat":
            return _LEASED
        return self._life.sources.get(trigger, frozenset())

    def _commit(  # noqa: PLR0917 - the hot path: positional arguments bind faster
        self,
        stored: StoredRun,
        trigger: str,
        payload: Mapping[str, Any],
        now: int,
        accrued: Usage | None,
        worker: str | None = None,
        lease: int | None = None,
    ) -> RunObject:
        """Fire ``trigger`` through the machine, store the new record and its journal
        entry in one write, emit, log."""
        record = stored.record
        if not trigger:  # bookkeeping only (usage accrued, lease renewed): no journal entry
            until = payload.get("lease_until", stored.lease_until)
            holder = payload.get("worker", stored.worker)
            new = StoredRun(record, stored.version + 1, accrued, False, stored.since, holder, until)
            if self._store.commit(stored, new, None) is None:
                raise _Conflict
            return record
        if accrued is not None and "usage" not in payload:
            payload = {**payload, "usage": accrued}
        step = Step(record.status, now, payload)
        self._events[trigger].fire(step)  # the machine decides and performs the change
        changes = step.changes
        changed = evolve_run(record, changes)
        status = changed.status
        if status is _IN_PROGRESS:
            holder = worker if lease is not None else stored.worker
            until = now + lease if lease is not None else stored.lease_until
        else:
            holder = until = None  # leaving in_progress releases the lease
        new = _tuple_new(
            StoredRun, (changed, stored.version + 1, accrued, False, now, holder, until)
        )
        change = _tuple_new(
            Change, (record.id, now, trigger, record.status, status, worker, changes, changed)
        )
        if self._subscribers and self._watch is None:
            events = ((_EVENT[status], changed, 0),)
            sequence = self._write_in_order(self._store.commit, (stored, new, change), events)
        else:
            sequence = self._store.commit(stored, new, change)
        if sequence is None:
            raise _Conflict
        if not self._log_off:
            self._log_transition(changed, record.status, trigger, worker)
        return changed

    def _adopt_logger(self) -> bool:
        """
        Whether the default lazy logger logs now: not before the application has
        configured structlog. Once it has, with ``cache_logger_on_first_use``, the
        engine takes the concrete logger, as structlog itself would, and asks it
        once whether it logs debug events.
        """
        if not _configured():
            return False
        if structlog.get_config().get("cache_logger_on_first_use"):
            logger = self._log.bind()
            self._log_off = not _debug_enabled(logger)
            self._log = logger
            self._always_log = True
            return not self._log_off
        return True

    def _log_transition(
        self, run: RunObject, before: RunStatus | None, trigger: str, worker: str | None
    ) -> None:
        if self._log_off or not (self._always_log or self._adopt_logger()):
            return
        self._log.debug(
            "run_transitioned",
            run_id=run.id,
            thread_id=run.thread_id,
            trigger=trigger,
            worker=worker,
            **{"from": None if before is None else _PLAIN[before], "to": _PLAIN[run.status]},
        )

    def _incomplete_reason(self, run: RunObject, total: Usage) -> IncompleteReason | None:
        why = _budget(run, total)
        if why is not None:
            return why
        for hook in self._reason_hooks:
            answer = hook.incomplete_reason(run, total)
            if answer is not None:
                return check_reason(answer)
        return None


def _bad_clock(clock: Clock, now: object) -> TypeError:
    return TypeError(
        f"the engine's clock {clock!r} returned {now!r}: a Clock returns integer Unix "
        "seconds (as runflow.SystemClock does with int(time.time()))"
    )


#: Fields that never change during a run (LIFECYCLE R3.1, R2.2): a snapshot changing one
#: is not of the run observed so far.
_FIXED_ORDER = (
    "created_at",
    "thread_id",
    "assistant_id",
    "model",
    "instructions",
    "tools",
    "temperature",
    "top_p",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
)
_FIXED = frozenset(_FIXED_ORDER)


class _Conflict(Exception):  # noqa: N818 - internal signal, never escapes
    """The store's compare-and-set lost: another writer changed the run first."""


def _positive(value: object, name: str, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise ValidationError(name, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _string_arg(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(name, f"expected a non-empty string, got {value!r}")
    return value


def _listed(items: Iterable[Any]) -> Sequence[Any]:
    """A list or tuple as it is; any other iterable (not a str or dict) as a list."""
    if type(items) is list or type(items) is tuple:
        return items
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        return items  # type: ignore[return-value] # refused with a path by the structurer
    return list(items)


def _debug_enabled(logger: Any) -> bool:
    """
    Whether a concrete logger will emit debug events, asked once.

    Only structlog's filtering loggers qualify: their level is part of their class.
    A stdlib-backed logger's level can change at any time, so it is always called.
    """
    probe = getattr(logger, "is_enabled_for", None)
    if probe is None or isinstance(logger, structlog.stdlib.BoundLogger):
        return True
    try:
        return bool(probe(logging.DEBUG))
    except Exception:  # noqa: BLE001 - an odd logger is simply always called
        return True


def _budget(run: RunObject, total: Usage) -> IncompleteReason | None:
    """The built-in budget check: prompt tokens first, then completion tokens."""
    if run.max_prompt_tokens is not None and total.prompt_tokens > run.max_prompt_tokens:
        return "max_prompt_tokens"
    if (
        run.max_completion_tokens is not None
        and total.completion_tokens > run.max_completion_tokens
    ):
        return "max_completion_tokens"
    return None


def _add(a: Usage | None, b: Usage | None) -> Usage | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b
