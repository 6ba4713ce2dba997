"""
Every error runflow raises.

All of them derive from :class:`RunflowError`, and each also derives from the
builtin that fits, so existing ``except ValueError`` / ``except KeyError`` code
keeps working::

    RunflowError
    ├── ValidationError (ValueError)          bad input: names the field path and the rule
    ├── InvalidTransitionError (ValueError)   the run's status does not allow the trigger
    ├── ToolOutputsError (ValueError)         tool outputs do not match the pending tool calls
    ├── ThreadBusyError (ValueError)          the thread already has an active run
    ├── LeaseError                            the run is leased to another worker, or the
    │                                         caller's lease lapsed
    ├── RunNotFoundError (KeyError)           no run with that id
    └── StoreError                            the store cannot be opened or used: bad URL,
                                              missing driver extra, unreachable server,
                                              schema from a newer runflow

An operation that raises never changes the run.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

__all__ = [
    "InvalidTransitionError",
    "LeaseError",
    "RunNotFoundError",
    "RunflowError",
    "StoreError",
    "ThreadBusyError",
    "ToolOutputsError",
    "ValidationError",
]


class RunflowError(Exception):
    """
    Root of every error runflow raises.

    .. versionadded:: 0.1.0
    """

    @property
    def message(self) -> str:
        """The human-readable message (OpenAI's wording where OpenAI has one)."""
        return str(self.args[0]) if self.args else ""


@typing.final
class ValidationError(RunflowError, ValueError):
    """
    Input that breaks a rule of the schema or of a request limit.

    Attributes:
        path: Where the bad value sits, as a JSON path such as ``$.metadata.owner``.
        rule: The rule that was broken, in words.
        errors: Every problem found, as ``"<rule> @ <path>"`` strings (the first one
            is also ``path`` and ``rule``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str, rule: str, *, errors: Sequence[str] = ()) -> None:
        self.path = path
        self.rule = rule
        self.errors: tuple[str, ...] = tuple(errors) or (f"{rule} @ {path}",)
        more = len(self.errors) - 1
        suffix = f" (and {more} more: {'; '.join(self.errors[1:])})" if more else ""
        super().__init__(f"{path}: {rule}{suffix}")


@typing.final
class InvalidTransitionError(RunflowError, ValueError):
    """
    The run's current status does not allow the requested trigger.

    The message is OpenAI's where OpenAI has one: ``Runs in status "<status>" do not
    accept tool outputs.`` for a submit, ``Cannot cancel run with status '<status>'.``
    for a cancel.

    Attributes:
        run_id: The run.
        status: Its status when the trigger was refused.
        trigger: The trigger that was refused (``"start"``, ``"cancel"``…).
        allowed: The statuses from which ``trigger`` would have been accepted.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str,
        status: str,
        trigger: str,
        allowed: frozenset[str],
    ) -> None:
        self.run_id = run_id
        self.status = status
        self.trigger = trigger
        self.allowed = allowed
        super().__init__(message)


@typing.final
class ToolOutputsError(RunflowError, ValueError):
    """
    Submitted tool outputs do not match the run's pending tool calls.

    Missing, unknown and duplicate ``tool_call_id``\\ s are all refused with OpenAI's
    message ``Expected tool outputs for call_ids [...], got [...]``.

    Attributes:
        run_id: The run.
        expected: The pending tool call ids, in the order the run asked for them.
        got: The submitted ``tool_call_id``\\ s, in the order they were given.
        missing: Expected ids that were not submitted.
        unknown: Submitted ids the run did not ask for.
        duplicates: Ids submitted more than once.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, run_id: str, expected: Sequence[str], got: Sequence[str]) -> None:
        self.run_id = run_id
        self.expected: tuple[str, ...] = tuple(expected)
        self.got: tuple[str, ...] = tuple(got)
        wanted = set(self.expected)
        self.missing: tuple[str, ...] = tuple(i for i in self.expected if i not in set(self.got))
        self.unknown: tuple[str, ...] = tuple(i for i in self.got if i not in wanted)
        seen: set[str] = set()
        dupes: list[str] = []
        for i in self.got:
            if i in seen and i not in dupes:
                dupes.append(i)
            seen.add(i)
        self.duplicates: tuple[str, ...] = tuple(dupes)
        super().__init__(
            f"Expected tool outputs for call_ids {list(self.expected)!r}, got {list(self.got)!r}"
        )


@typing.final
class RunNotFoundError(RunflowError, KeyError):
    """
    No run with that id is known to the engine's store.

    The message is OpenAI's: ``No run found with id '<run_id>'.``

    Attributes:
        run_id: The id that was looked up.

    .. versionadded:: 0.1.0
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"No run found with id '{run_id}'.")

    def __str__(self) -> str:
        # KeyError's str() adds quotes around the message; keep OpenAI's text exact.
        return self.message


@typing.final
class ThreadBusyError(RunflowError, ValueError):
    """
    A run was created on a thread that already has an active run (LIFECYCLE R1.3).

    The message is OpenAI's: ``Thread <thread_id> already has an active run <run_id>.``

    Attributes:
        thread_id: The thread.
        run_id: Its active run.

    .. versionadded:: 0.1.0
    """

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        super().__init__(f"Thread {thread_id} already has an active run {run_id}.")


@typing.final
class LeaseError(RunflowError):
    """
    A worker changed a run it does not hold: another worker leases it, or the
    worker's own lease lapsed (a sweep then fails the run).

    Attributes:
        run_id: The run.
        worker: The worker that asked.
        holder: The worker holding the lease (None if nobody does).
        lease_until: When the holder's lease lapses or lapsed.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, message: str, *, run_id: str, worker: str, holder: str | None, lease_until: int | None
    ) -> None:
        self.run_id = run_id
        self.worker = worker
        self.holder = holder
        self.lease_until = lease_until
        super().__init__(message)


@typing.final
class StoreError(RunflowError):
    """
    A store cannot be opened or used: a bad URL, a missing driver extra, an
    unreachable server, a schema written by a newer runflow. The message names the
    cause; the driver's own exception, if any, is chained as ``__cause__``.

    Attributes:
        url: The store URL, with any password masked.

    .. versionadded:: 0.1.0
    """

    def __init__(self, message: str, *, url: str = "") -> None:
        self.url = url
        super().__init__(message)
