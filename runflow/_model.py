"""
Frozen records for the OpenAI ``thread.run`` object and everything nested in it.

Field names and order mirror ``run_object.schema.json``. The records carry no
attrs validators, so the engine can build changed copies cheaply; input is checked
where it enters: :meth:`RunObject.from_dict` (types, required keys, enums) and
:meth:`runflow.Engine.create` (also the request limits).
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "CodeInterpreterTool",
    "ErrorCode",
    "FileSearch",
    "FileSearchRankingOptions",
    "FileSearchTool",
    "FunctionCall",
    "FunctionDefinition",
    "FunctionTool",
    "IncompleteDetails",
    "IncompleteReason",
    "JsonSchema",
    "LastError",
    "NamedToolChoice",
    "RequiredAction",
    "ResponseFormat",
    "ResponseFormatJsonObject",
    "ResponseFormatJsonSchema",
    "ResponseFormatText",
    "RunObject",
    "RunStatus",
    "SubmitToolOutputs",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolChoiceFunction",
    "ToolOutput",
    "TruncationStrategy",
    "Usage",
]


class RunStatus(enum.StrEnum):
    """
    The nine statuses of a run (LIFECYCLE R1.1).

    Members compare equal to their wire strings: ``RunStatus.QUEUED == "queued"``.

    .. versionadded:: 0.1.0
    """

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        """True for the five statuses a run never leaves (LIFECYCLE R1.2)."""
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """True for ``queued``, ``in_progress``, ``requires_action`` and ``cancelling``."""
        return self in ACTIVE_STATUSES


#: The statuses a run never leaves (LIFECYCLE R1.2).
TERMINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.EXPIRED,
        RunStatus.INCOMPLETE,
    }
)
#: Wire value -> status, for code that reads statuses back from plain strings.
STATUS_BY_VALUE: dict[str, RunStatus] = {s.value: s for s in RunStatus}
#: The statuses in which a run still moves and holds its thread (LIFECYCLE R1.2, R1.3).
ACTIVE_STATUSES: frozenset[RunStatus] = frozenset(RunStatus) - TERMINAL_STATUSES

#: The codes of ``last_error`` (LIFECYCLE R7.2).
ErrorCode = Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
#: The reasons of ``incomplete_details`` (LIFECYCLE R7.3).
IncompleteReason = Literal["max_completion_tokens", "max_prompt_tokens"]


# --- required_action ---------------------------------------------------------------------


@typing.final
@attrs.frozen(kw_only=True)
class FunctionCall:
    """
    The function a tool call asks for: its name and JSON-encoded ``arguments``.

    .. versionadded:: 0.1.0
    """

    name: str
    arguments: str


@typing.final
@attrs.frozen(kw_only=True)
class ToolCall:
    """
    One function tool call the run waits on (``RunToolCallObject``).

    .. versionadded:: 0.1.0
    """

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


@typing.final
@attrs.frozen(kw_only=True)
class SubmitToolOutputs:
    """
    The tool calls whose outputs the run needs.

    .. versionadded:: 0.1.0
    """

    tool_calls: tuple[ToolCall, ...]


@typing.final
@attrs.frozen(kw_only=True)
class RequiredAction:
    """
    What the run needs before it can go on; set exactly while ``requires_action``.

    .. versionadded:: 0.1.0
    """

    submit_tool_outputs: SubmitToolOutputs
    type: Literal["submit_tool_outputs"] = "submit_tool_outputs"


@typing.final
@attrs.frozen(kw_only=True)
class ToolOutput:
    """
    One submitted tool output (an item of ``tool_outputs`` in the submit request).

    .. versionadded:: 0.1.0
    """

    tool_call_id: str
    output: str


# --- errors and usage --------------------------------------------------------------------


@typing.final
@attrs.frozen(kw_only=True)
class LastError:
    """
    Why a run failed; set exactly while ``failed``.

    .. versionadded:: 0.1.0
    """

    code: ErrorCode
    message: str


@typing.final
@attrs.frozen(kw_only=True)
class IncompleteDetails:
    """
    Which token budget ended the run; set exactly while ``incomplete``.

    .. versionadded:: 0.1.0
    """

    reason: IncompleteReason | None = None


@typing.final
@attrs.frozen(kw_only=True)
class Usage:
    """
    Token usage of a run. ``total_tokens`` is ``prompt_tokens + completion_tokens``.

    .. versionadded:: 0.1.0
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        """Build a usage whose total is the sum of the two counts."""
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


# --- configuration -----------------------------------------------------------------------


@typing.final
@attrs.frozen(kw_only=True)
class TruncationStrategy:
    """
    How the thread is truncated before the run (``TruncationObject``).

    .. versionadded:: 0.1.0
    """

    type: Literal["auto", "last_messages"] = "auto"
    last_messages: int | None = None


@typing.final
@attrs.frozen(kw_only=True)
class ToolChoiceFunction:
    """
    The function a named tool choice forces.

    .. versionadded:: 0.1.0
    """

    name: str


@typing.final
@attrs.frozen(kw_only=True)
class NamedToolChoice:
    """
    Force one tool (``AssistantsNamedToolChoice``); ``function`` is set for functions.

    .. versionadded:: 0.1.0
    """

    type: Literal["function", "code_interpreter", "file_search"]
    function: ToolChoiceFunction | None = None


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


@typing.final
@attrs.frozen(kw_only=True)
class ResponseFormatText:
    """
    Plain text replies.

    .. versionadded:: 0.1.0
    """

    type: Literal["text"] = "text"


@typing.final
@attrs.frozen(kw_only=True)
class ResponseFormatJsonObject:
    """
    JSON mode.

    .. versionadded:: 0.1.0
    """

    type: Literal["json_object"] = "json_object"


@typing.final
@attrs.frozen(kw_only=True)
class JsonSchema:
    """
    Structured Outputs settings: a named JSON Schema.

    .. versionadded:: 0.1.0
    """

    name: str
    description: str | None = None
    #: Compared, not hashed (a mapping is not hashable): equal records still hash equal.
    schema: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    strict: bool | None = None


@typing.final
@attrs.frozen(kw_only=True)
class ResponseFormatJsonSchema:
    """
    Structured Outputs.

    .. versionadded:: 0.1.0
    """

    json_schema: JsonSchema
    type: Literal["json_schema"] = "json_schema"


ResponseFormat = (
    Literal["auto"] | ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema
)


@typing.final
@attrs.frozen(kw_only=True)
class CodeInterpreterTool:
    """
    The code interpreter tool.

    .. versionadded:: 0.1.0
    """

    type: Literal["code_interpreter"] = "code_interpreter"


@typing.final
@attrs.frozen(kw_only=True)
class FileSearchRankingOptions:
    """
    Ranking of file search results; ``score_threshold`` is within 0..1.

    .. versionadded:: 0.1.0
    """

    score_threshold: float
    ranker: Literal["auto", "default_2024_08_21"] | None = None


@typing.final
@attrs.frozen(kw_only=True)
class FileSearch:
    """
    Overrides for the file search tool.

    .. versionadded:: 0.1.0
    """

    max_num_results: int | None = None
    ranking_options: FileSearchRankingOptions | None = None


@typing.final
@attrs.frozen(kw_only=True)
class FileSearchTool:
    """
    The file search tool (v1's ``retrieval`` tool is read as this).

    .. versionadded:: 0.1.0
    """

    type: Literal["file_search"] = "file_search"
    file_search: FileSearch | None = None


@typing.final
@attrs.frozen(kw_only=True)
class FunctionDefinition:
    """
    A function the model may call (``FunctionObject``).

    .. versionadded:: 0.1.0
    """

    name: str
    description: str | None = None
    #: Compared, not hashed (a mapping is not hashable): equal records still hash equal.
    parameters: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    strict: bool | None = None


@typing.final
@attrs.frozen(kw_only=True)
class FunctionTool:
    """
    A function tool.

    .. versionadded:: 0.1.0
    """

    function: FunctionDefinition
    type: Literal["function"] = "function"


Tool = CodeInterpreterTool | FileSearchTool | FunctionTool

#: The shared, read-only empty metadata of runs created without any.
EMPTY_METADATA: Mapping[str, str] = types.MappingProxyType({})


# --- the run -----------------------------------------------------------------------------


@typing.final
@attrs.frozen(kw_only=True, slots=False)
class RunObject:
    """
    One snapshot of a run, exactly as OpenAI's ``thread.run`` object.

    Records are immutable: the engine returns a new one for every change. Use
    :meth:`to_dict` for the wire form and :meth:`from_dict` to read real traffic.

    Unlike the nested records, a RunObject keeps its fields in an instance dict
    rather than slots: CPython shares the keys of such dicts between instances (384
    bytes a run) and the engine copies one in a single ``dict.update``, about four
    times faster than calling the 27-argument constructor.

    .. versionadded:: 0.1.0
    """

    id: str
    object: Literal["thread.run"] = "thread.run"
    created_at: int
    thread_id: str
    assistant_id: str
    status: RunStatus
    required_action: RequiredAction | None = None
    last_error: LastError | None = None
    expires_at: int | None = None
    started_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str = ""
    instructions: str = ""
    tools: tuple[Tool, ...] = ()
    #: Compared, not hashed (a mapping is not hashable): equal runs still hash equal.
    metadata: Mapping[str, str] | None = attrs.field(default=EMPTY_METADATA, hash=False)
    usage: Usage | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None

    def to_dict(self) -> dict[str, Any]:
        """
        Return the OpenAI wire dict: every required key present (nullable ones as
        ``null``), ``object == "thread.run"``, timestamps as integer Unix seconds.
        """
        from runflow._convert import unstructure_run  # noqa: PLC0415 - import cycle

        return unstructure_run(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunObject:
        """
        Read a run from wire JSON, including older API versions.

        Only ``id``, ``object``, ``created_at``, ``thread_id``, ``assistant_id`` and
        ``status`` are required; unknown keys are ignored; v1 payloads map onto the
        newest shape (see the lifecycle reference).

        Raises:
            runflow.ValidationError: a type, enum or required key is wrong; the
                message names the field path.
        """
        from runflow._convert import structure_run  # noqa: PLC0415 - import cycle

        return structure_run(data)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The pending tool calls (empty unless the run ``requires_action``)."""
        ra = self.required_action
        return ra.submit_tool_outputs.tool_calls if ra is not None else ()


def evolve_run(
    run: RunObject,
    changes: Mapping[str, Any],
    _new: Any = object.__new__,
    _set: Any = object.__setattr__,
) -> RunObject:
    """
    The changed-copy helper: a new frozen RunObject with ``changes`` applied.

    Copies the instance dict (a key-sharing dict's ``copy()`` copies its values in
    one go, and the copy shares the keys too: 0.4 µs on this machine, against 3.6 µs
    for ``attrs.evolve`` and 2.4 µs for a generated constructor call), updates it and
    gives it to a new instance; no validators run, as callers pass values already
    checked.
    """
    fields = run.__dict__.copy()
    fields.update(changes)
    new: RunObject = _new(RunObject)
    _set(new, "__dict__", fields)
    return new


#: A run with every field at its default (and placeholders for the required ones):
#: made by the constructor, so its instance dict shares the class's keys, and a copy
#: of it shares them too (288 bytes; filling a new instance from a plain
#: dict of the same keys would make an unshared one of 832).
_PROTOTYPE = RunObject(id="", created_at=0, thread_id="", assistant_id="", status=RunStatus.QUEUED)


def new_run(fields: Mapping[str, Any]) -> RunObject:
    """
    A new RunObject from ``fields`` (every required one among them), the others at
    their defaults: :func:`evolve_run` of a prototype, so that runs share their dict
    keys (0.7 µs on this machine, against 1.45 µs for the constructor); no
    validators run, as callers pass values already checked.
    """
    return evolve_run(_PROTOTYPE, fields)


def required_action(
    tool_calls: tuple[ToolCall, ...],
    _new: Any = object.__new__,
    _set: Any = object.__setattr__,
) -> RequiredAction:
    """
    ``RequiredAction(submit_tool_outputs=SubmitToolOutputs(tool_calls=tool_calls))``,
    built as attrs' ``__init__`` would (these classes have no validators or converters)
    for the engine's hot path, without its per-call setattr binding: ~0.3 µs less.
    """
    submit = _new(SubmitToolOutputs)
    _set(submit, "tool_calls", tool_calls)
    action: RequiredAction = _new(RequiredAction)  # no typing.cast: a call less
    _set(action, "submit_tool_outputs", submit)
    _set(action, "type", "submit_tool_outputs")
    return action
