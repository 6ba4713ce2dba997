"""
Hooks: explicit callables the engine consults at two points of a run's life.

* :class:`RequiredActionHook` sees tool calls before a run enters ``requires_action``
  (it may rewrite them or refuse them) and tool outputs before a submit is accepted.
* :class:`IncompleteReasonHook` decides, when a run completes, whether it really ended
  ``incomplete`` and why.

Register them with ``Engine(required_action_hooks=[...], incomplete_reason_hooks=[...])``.
A hook that raises leaves the run unchanged; the exception reaches the caller as it
was raised (raise :class:`runflow.ValidationError` for a clean refusal).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

from runflow._model import IncompleteReason, RunObject, ToolCall, ToolOutput, Usage

__all__ = ["IncompleteReasonHook", "RequiredActionHook"]


@typing.runtime_checkable
class RequiredActionHook(typing.Protocol):
    """
    Checks (and may rewrite) tool calls and tool outputs.

    .. versionadded:: 0.1.0
    """

    def validate_tool_calls(
        self, run: RunObject, tool_calls: Sequence[ToolCall]
    ) -> Sequence[ToolCall]:
        """
        Return the tool calls the run will ask for (the given ones, or a rewrite).

        Args:
            run: The run, still ``in_progress``.
            tool_calls: The calls passed to :meth:`runflow.Engine.require_action`,
                already checked against the schema.

        Raises:
            Exception: Any exception refuses the calls; the run does not change.
        """
        ...

    def validate_tool_outputs(self, run: RunObject, tool_outputs: Sequence[ToolOutput]) -> None:
        """
        Accept the outputs by returning, refuse them by raising.

        Args:
            run: The run, still ``requires_action``.
            tool_outputs: The outputs, already matched against the pending call ids.
        """
        ...


@typing.runtime_checkable
class IncompleteReasonHook(typing.Protocol):
    """
    Turns a completion into ``incomplete`` when it returns a reason.

    .. versionadded:: 0.1.0
    """

    def incomplete_reason(self, run: RunObject, usage: Usage) -> IncompleteReason | None:
        """
        Return ``"max_prompt_tokens"`` or ``"max_completion_tokens"`` to end the run
        ``incomplete`` with that reason, or ``None`` to let it complete.

        Args:
            run: The run about to complete.
            usage: Its total usage (accumulated plus what ``complete`` reports).
        """
        ...
