"""
A controllable clock and an event recorder (re-exported by :mod:`runflow.testing`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import threading
import typing

from runflow._events import RunEvent

__all__ = ["EventRecorder", "FakeClock"]

#: 2023-11-14T22:13:20Z, a round number in the Assistants API's lifetime.
DEFAULT_START = 1_700_000_000


@typing.final
class FakeClock:
    """
    A clock that moves only when told: instant time travel for tests and simulations.

    Args:
        start: The first reading, in integer Unix seconds.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_now",)

    def __init__(self, start: int = DEFAULT_START) -> None:
        self._now = self._check(start)

    @staticmethod
    def _check(value: object) -> int:
        if type(value) is not int:
            msg = f"FakeClock works in whole seconds; got {value!r}"
            raise TypeError(msg)
        return value

    def now(self) -> int:
        """The current reading."""
        return self._now

    def advance(self, seconds: int) -> int:
        """
        Move forward by ``seconds`` (never back) and return the new reading.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if self._check(seconds) < 0:
            msg = f"a clock does not go back; got advance({seconds})"
            raise ValueError(msg)
        self._now += seconds
        return self._now

    def set(self, now: int) -> None:
        """
        Jump to ``now``. Tests may go back in time on purpose; the engine stamps what
        the clock reads, so a run changed after a jump back gets a timestamp earlier
        than the ones it has (``started_at`` before ``created_at``).
        """
        self._now = self._check(now)

    def __repr__(self) -> str:
        return f"FakeClock({self._now})"


@typing.final
class EventRecorder:
    """
    A subscriber that keeps every event it is given.

    >>> from runflow import Engine
    >>> engine = Engine(clock=FakeClock())
    >>> recorder = EventRecorder()
    >>> _ = engine.subscribe(recorder)
    >>> run = engine.create(thread_id="thread_a", assistant_id="asst_a")
    >>> recorder.names
    ['thread.run.created', 'thread.run.queued']

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: RunEvent) -> None:
        """Record ``event``."""
        with self._lock:
            self.events.append(event)

    @property
    def names(self) -> list[str]:
        """The event names, in order."""
        return [e.event for e in self.events]

    def clear(self) -> None:
        """Forget every recorded event."""
        with self._lock:
            self.events.clear()
