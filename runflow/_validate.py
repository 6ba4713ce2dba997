"""
Request checks: the limits of ``create_run_request.schema.json`` and the shape of tool
calls, outputs, usage and errors given to the engine.

Reading real traffic never goes through these (the API echoed values past its own
limits); they guard what runflow itself creates.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

from runflow._convert import _json_type, all_checked, metadata_type_error, structure
from runflow._model import (
    EMPTY_METADATA,
    ErrorCode,
    FunctionTool,
    IncompleteReason,
    LastError,
    ResponseFormat,
    RunObject,
    Tool,
    ToolCall,
    ToolChoice,
    TruncationStrategy,
    Usage,
)
from runflow.exceptions import ValidationError

__all__ = [
    "check_create",
    "check_tool_calls",
    "last_error",
    "reason",
    "usage",
]

MAX_TOOLS = 20
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MIN_TOKEN_BUDGET = 256

_ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)
_REASONS: tuple[str, ...] = get_args(IncompleteReason)
_AUTO_TRUNCATION = TruncationStrategy()


def _string(value: object, path: str, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValidationError(path, f"expected a string, got {_json_type(value)}")
    if not empty and not value:
        raise ValidationError(path, "must not be empty")
    return value


def _integer(value: object, path: str, *, minimum: int | None = None) -> int:
    if type(value) is not int:
        raise ValidationError(path, f"expected an integer, got {_json_type(value)}")
    if minimum is not None and value < minimum:
        raise ValidationError(path, f"must be at least {minimum}, got {value}")
    return value


def _number(value: object, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(path, f"expected a number, got {_json_type(value)}")
    if not low <= value <= high:
        raise ValidationError(path, f"must be between {low:g} and {high:g}, got {value}")
    return float(value)


def metadata(value: object, path: str = "$.metadata") -> Mapping[str, str]:
    """Check metadata against OpenAI's 16 keys / 64-char keys / 512-char values."""
    if value is None:
        return EMPTY_METADATA
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(path, f"expected an object, got {_json_type(value)}")
    if len(value) > MAX_METADATA_KEYS:
        raise ValidationError(
            path, f"at most {MAX_METADATA_KEYS} key-value pairs, got {len(value)}"
        )
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValidationError(path, f"keys must be strings, got {_json_type(key)}")
        if len(key) > MAX_METADATA_KEY:
            raise ValidationError(
                f"{path}.{key}", f"keys are at most {MAX_METADATA_KEY} characters, got {len(key)}"
            )
        if not isinstance(item, str):
            raise ValidationError(f"{path}.{key}", metadata_type_error(key, item))
        if len(item) > MAX_METADATA_VALUE:
            raise ValidationError(
                f"{path}.{key}",
                f"values are at most {MAX_METADATA_VALUE} characters, got {len(item)}",
            )
    return types.MappingProxyType(dict(value))


_TOOL_CLASSES = frozenset(get_args(Tool))


def _tools(value: object) -> tuple[Tool, ...]:
    if type(value) is not tuple and type(value) is not list:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise ValidationError("$.tools", f"expected an array, got {_json_type(value)}")
        value = tuple(value)
    if len(value) > MAX_TOOLS:
        raise ValidationError("$.tools", f"at most {MAX_TOOLS} tools, got {len(value)}")
    if type(value) is tuple and all_checked(value, _TOOL_CLASSES):
        return value  # checked records are immutable: share the caller's tuple
    return tuple(
        structure(t, Tool, f"$.tools[{i}]")  # type: ignore[arg-type] # records are checked too
        for i, t in enumerate(value)
    )


def check_create(
    *,
    thread_id: object,
    assistant_id: object,
    model: object,
    instructions: object,
    tools: object,
    metadata_: object,
    max_prompt_tokens: object,
    max_completion_tokens: object,
    temperature: object,
    top_p: object,
    truncation_strategy: object,
    tool_choice: object,
    parallel_tool_calls: object,
    response_format: object,
) -> dict[str, Any]:
    """
    Check and normalise the create-run arguments; return the record fields.

    Unset sampling and strategy fields take the values the live API reports for
    them (temperature and top_p 1.0, ``auto`` tool choice, truncation and
    response format), so created runs look like real ones.
    """
    # the usual arguments (non-empty strings, no budgets) pass on a type check alone
    fields: dict[str, Any] = {
        "thread_id": thread_id
        if type(thread_id) is str and thread_id
        else _string(thread_id, "$.thread_id", empty=False),
        "assistant_id": assistant_id
        if type(assistant_id) is str and assistant_id
        else _string(assistant_id, "$.assistant_id", empty=False),
        "model": model if type(model) is str else _string(model, "$.model"),
        "instructions": instructions
        if type(instructions) is str
        else ("" if instructions is None else _string(instructions, "$.instructions")),
        "tools": _tools(tools),
        "metadata": EMPTY_METADATA if metadata_ is None else metadata(metadata_),
        "max_prompt_tokens": None
        if max_prompt_tokens is None
        else _integer(max_prompt_tokens, "$.max_prompt_tokens", minimum=MIN_TOKEN_BUDGET),
        "max_completion_tokens": None
        if max_completion_tokens is None
        else _integer(max_completion_tokens, "$.max_completion_tokens", minimum=MIN_TOKEN_BUDGET),
    }
    fields["temperature"] = (
        1.0 if temperature is None else _number(temperature, "$.temperature", 0, 2)
    )
    fields["top_p"] = 1.0 if top_p is None else _number(top_p, "$.top_p", 0, 1)
    if truncation_strategy is None:
        fields["truncation_strategy"] = _AUTO_TRUNCATION
    else:
        ts: TruncationStrategy = structure(
            truncation_strategy, TruncationStrategy, "$.truncation_strategy"
        )
        if ts.last_messages is not None and ts.last_messages < 1:
            raise ValidationError(
                "$.truncation_strategy.last_messages", f"must be at least 1, got {ts.last_messages}"
            )
        fields["truncation_strategy"] = ts
    fields["tool_choice"] = (
        "auto" if tool_choice is None else structure(tool_choice, ToolChoice, "$.tool_choice")  # type: ignore[arg-type]
    )
    if type(parallel_tool_calls) is not bool:
        raise ValidationError(
            "$.parallel_tool_calls", f"expected a boolean, got {_json_type(parallel_tool_calls)}"
        )
    fields["parallel_tool_calls"] = parallel_tool_calls
    fields["response_format"] = (
        "auto"
        if response_format is None
        else structure(response_format, ResponseFormat, "$.response_format")  # type: ignore[arg-type]
    )
    for i, tool in enumerate(fields["tools"]):
        if isinstance(tool, FunctionTool):
            name = tool.function.name
            if type(name) is not str or not name:
                _string(name, f"$.tools[{i}].function.name", empty=False)
        elif tool.type == "file_search" and tool.file_search is not None:
            n = tool.file_search.max_num_results
            if n is not None and not 1 <= n <= 50:  # noqa: PLR2004 - the schema's range
                raise ValidationError(
                    f"$.tools[{i}].file_search.max_num_results",
                    f"must be between 1 and 50, got {n}",
                )
            ranking = tool.file_search.ranking_options
            if ranking is not None and not 0 <= ranking.score_threshold <= 1:
                raise ValidationError(
                    f"$.tools[{i}].file_search.ranking_options.score_threshold",
                    f"must be between 0 and 1, got {ranking.score_threshold}",
                )
    return fields


def check_tool_calls(run: RunObject, calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
    """
    Check the tool calls a run is to wait on: at least one, unique ids, each naming a
    function tool of the run, and one call only when ``parallel_tool_calls`` is false.
    """
    if not calls:
        raise ValidationError("$.tool_calls", "at least one tool call is required")
    if not run.parallel_tool_calls and len(calls) > 1:
        raise ValidationError(
            "$.tool_calls",
            f"parallel_tool_calls is false: at most one tool call, got {len(calls)}",
        )
    tools = run.tools
    seen: set[str] = set()
    for i, call in enumerate(calls):
        if not isinstance(call, ToolCall):
            raise ValidationError(
                f"$.tool_calls[{i}]", f"expected a ToolCall, got {type(call).__name__}"
            )
        call_id = call.id
        if type(call_id) is not str or not call_id:
            _string(call_id, f"$.tool_calls[{i}].id", empty=False)
        if call_id in seen:
            raise ValidationError(f"$.tool_calls[{i}].id", f"duplicate tool call id {call_id!r}")
        seen.add(call_id)
        name = call.function.name
        for tool in tools:  # a run has at most 20 tools: a scan beats building a set
            if isinstance(tool, FunctionTool) and tool.function.name == name:
                break
        else:
            known = sorted(t.function.name for t in tools if isinstance(t, FunctionTool))
            raise ValidationError(
                f"$.tool_calls[{i}].function.name",
                f"{name!r} is not a function tool of this run (tools: {known})",
            )
    return tuple(calls)  # a tuple given is returned as it is


def usage(value: object, path: str = "$.usage") -> Usage | None:
    """Read a usage given as a record or a dict; ``total_tokens`` must be the sum."""
    if value is None:
        return None
    if (  # the common case: a well-formed record, returned as it is
        type(value) is Usage
        and type(value.prompt_tokens) is int
        and type(value.completion_tokens) is int
        and value.prompt_tokens >= 0
        and value.completion_tokens >= 0
        and value.total_tokens == value.prompt_tokens + value.completion_tokens
    ):
        return value
    if isinstance(value, Mapping) and "total_tokens" not in value:
        prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
        if type(prompt) is int and type(completion) is int:
            value = {**value, "total_tokens": prompt + completion}
        else:  # what is wrong with the counts given, not that their sum is missing
            for name in ("prompt_tokens", "completion_tokens"):
                if name in value:
                    _integer(value[name], f"{path}.{name}", minimum=0)
    result: Usage = value if type(value) is Usage else structure(value, Usage, path)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        _integer(getattr(result, name), f"{path}.{name}", minimum=0)
    if result.total_tokens != result.prompt_tokens + result.completion_tokens:
        raise ValidationError(
            f"{path}.total_tokens",
            f"must equal prompt_tokens + completion_tokens "
            f"({result.prompt_tokens + result.completion_tokens}), got {result.total_tokens}",
        )
    return result


def last_error(code: object, message: object) -> LastError:
    """Build a ``last_error``: ``code`` is one of OpenAI's three codes."""
    if code not in _ERROR_CODES:
        raise ValidationError(
            "$.last_error.code", f"must be one of {list(_ERROR_CODES)}, got {code!r}"
        )
    return LastError(code=code, message=_string(message, "$.last_error.message"))  # type: ignore[arg-type]


def reason(value: object, path: str = "$.incomplete_details.reason") -> IncompleteReason:
    """Check an incomplete reason: ``max_completion_tokens`` or ``max_prompt_tokens``."""
    if value not in _REASONS:
        raise ValidationError(path, f"must be one of {list(_REASONS)}, got {value!r}")
    return value  # type: ignore[return-value]
