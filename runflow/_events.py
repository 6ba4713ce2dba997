"""The record an engine emits for every status change."""

from __future__ import annotations

import typing
from typing import Any

import attrs

from runflow._model import RunObject

__all__ = ["RunEvent"]


@typing.final
@attrs.frozen(kw_only=True)
class RunEvent:
    """
    One event of a run, named as in OpenAI's stream (``thread.run.<status>``).

    A create emits ``thread.run.created`` then ``thread.run.queued``; every later
    status change emits one ``thread.run.<new status>``.

    Attributes:
        event: The stream event name, e.g. ``"thread.run.requires_action"``.
        data: The run as it is after the change.
        sequence: Strictly increasing across all events of one engine.

    .. versionadded:: 0.1.0
    """

    event: str
    data: RunObject
    sequence: int

    def to_dict(self) -> dict[str, Any]:
        """The stream shape: ``{"event": ..., "data": <wire run>}``."""
        return {"event": self.event, "data": self.data.to_dict()}
