"""The clock protocol and the system clock: the only place runflow reads real time."""

from __future__ import annotations

import time
import typing

__all__ = ["Clock", "SystemClock"]


class Clock(typing.Protocol):
    """
    Where an engine reads the time: integer Unix seconds, as on the wire.

    An engine refuses any other reading (a float from ``time.time()``, say) with a
    ``TypeError`` naming the clock, before it changes anything.

    .. versionadded:: 0.1.0
    """

    def now(self) -> int:
        """Return the current time in whole Unix seconds."""
        ...


@typing.final
class SystemClock:
    """
    The real clock: :func:`time.time`, truncated to whole seconds.

    .. versionadded:: 0.1.0
    """

    __slots__ = ()

    def now(self) -> int:
        """Return the current time in whole Unix seconds."""
        return int(time.time())

    def __repr__(self) -> str:
        return "SystemClock()"
