"""
runflow: the exact, fast, safe lifecycle of OpenAI-style runs.

>>> from runflow import Engine, RunStatus
>>> from runflow.testing import FakeClock
>>> engine = Engine(clock=FakeClock(1_700_000_000))
>>> run = engine.create(thread_id="thread_a", assistant_id="asst_a", model="gpt-4o")
>>> engine.start(run).status is RunStatus.IN_PROGRESS
True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from runflow._async import AsyncEngine
from runflow._clock import Clock, SystemClock
from runflow._engine import Engine
from runflow._events import RunEvent
from runflow._machine import ASSISTANTS_RUN, Enter, Lifecycle, LifecycleProfile, TransitionSpec
from runflow._model import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    CodeInterpreterTool,
    ErrorCode,
    FileSearch,
    FileSearchRankingOptions,
    FileSearchTool,
    FunctionCall,
    FunctionDefinition,
    FunctionTool,
    IncompleteDetails,
    IncompleteReason,
    JsonSchema,
    LastError,
    NamedToolChoice,
    RequiredAction,
    ResponseFormat,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    ResponseFormatText,
    RunObject,
    RunStatus,
    SubmitToolOutputs,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceFunction,
    ToolOutput,
    TruncationStrategy,
    Usage,
)
from runflow.exceptions import (
    InvalidTransitionError,
    LeaseError,
    RunflowError,
    RunNotFoundError,
    StoreError,
    ThreadBusyError,
    ToolOutputsError,
    ValidationError,
)
from runflow.stores import JournalEntry, open_store

try:
    __version__ = _version("runflow-engine")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def lifecycle_diagram(format: str = "mermaid") -> str:  # noqa: A002 - the CLI's word
    """
    The run lifecycle as a state diagram, drawn by transitions' diagram support from
    the engine's real machine: ``"mermaid"`` (needs nothing) or ``"dot"`` (Graphviz
    source; needs the ``graphviz`` Python package).

    Raises:
        ValueError: an unknown format.
        ImportError: ``"dot"`` without the ``graphviz`` package.

    .. versionadded:: 0.1.0
    """
    from runflow._machine import ASSISTANTS_LIFECYCLE  # noqa: PLC0415

    if format == "mermaid":
        return ASSISTANTS_LIFECYCLE.mermaid()
    if format == "dot":
        return str(ASSISTANTS_LIFECYCLE.graphviz().source)
    msg = f"unknown diagram format {format!r}: use 'mermaid' or 'dot'"
    raise ValueError(msg)


__all__ = [
    "ACTIVE_STATUSES",
    "ASSISTANTS_RUN",
    "TERMINAL_STATUSES",
    "AsyncEngine",
    "Clock",
    "CodeInterpreterTool",
    "Engine",
    "Enter",
    "ErrorCode",
    "FileSearch",
    "FileSearchRankingOptions",
    "FileSearchTool",
    "FunctionCall",
    "FunctionDefinition",
    "FunctionTool",
    "IncompleteDetails",
    "IncompleteReason",
    "InvalidTransitionError",
    "JournalEntry",
    "JsonSchema",
    "LastError",
    "LeaseError",
    "Lifecycle",
    "LifecycleProfile",
    "NamedToolChoice",
    "RequiredAction",
    "ResponseFormat",
    "ResponseFormatJsonObject",
    "ResponseFormatJsonSchema",
    "ResponseFormatText",
    "RunEvent",
    "RunNotFoundError",
    "RunObject",
    "RunStatus",
    "RunflowError",
    "StoreError",
    "SubmitToolOutputs",
    "SystemClock",
    "ThreadBusyError",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolChoiceFunction",
    "ToolOutput",
    "ToolOutputsError",
    "TransitionSpec",
    "TruncationStrategy",
    "Usage",
    "ValidationError",
    "__version__",
    "lifecycle_diagram",
    "open_store",
]
