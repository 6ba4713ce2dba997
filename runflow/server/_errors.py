"""OpenAI's error JSON, request bodies read and checked against the request schemas."""

from __future__ import annotations

import importlib
import json
import math
import typing
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from runflow._convert import openai_type
from runflow.exceptions import (
    InvalidTransitionError,
    RunflowError,
    RunNotFoundError,
    ThreadBusyError,
    ToolOutputsError,
    ValidationError,
)

__all__ = [
    "ApiError",
    "check_body",
    "error_body",
    "from_runflow_error",
    "param_of_path",
    "parse_json",
]

_MAX_MESSAGE = 300  # characters of a value quoted in an error message


@typing.final
class ApiError(Exception):
    """An HTTP error answered as OpenAI's ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = tuple(headers)

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error JSON."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def not_found(kind: str, object_id: str) -> ApiError:
    """404 ``No <kind> found with id '<id>'.``"""
    return ApiError(404, f"No {kind} found with id '{_clip(object_id)}'.")


def param_of_path(path: str) -> str | None:
    """A runflow JSON path (``$.tools[0].function``) as OpenAI's param (``tools[0].function``)."""
    if path in {"", "$"}:
        return None
    return path.removeprefix("$.").removeprefix("$")


def from_runflow_error(error: RunflowError) -> ApiError:
    """The HTTP error OpenAI answers for what the engine refused."""
    if isinstance(error, RunNotFoundError):
        return not_found("run", str(error.args[0]) if error.args else "")
    if isinstance(error, ValidationError):
        param = param_of_path(error.path)
        rule = error.rule
        if rule.startswith("required key missing"):  # OpenAI's words, nested keys too
            return _missing_parameter(param or "")
        message = rule if rule.startswith(("Invalid", "Missing")) else f"Invalid '{param}': {rule}"
        return ApiError(400, _end(message), param=param)
    if isinstance(error, InvalidTransitionError | ToolOutputsError | ThreadBusyError):
        return ApiError(400, error.message)
    return ApiError(400, error.message or type(error).__name__)


def _missing_parameter(name: str) -> ApiError:
    """OpenAI's answer to a required key missing from a request, at any depth."""
    return ApiError(400, f"Missing required parameter: '{name}'.", param=name)


def _end(message: str) -> str:
    return message if message.endswith((".", "]", ")")) else message + "."


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


# --- bodies -----------------------------------------------------------------------------

_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)"
)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        msg = f"number out of range: {text}"
        raise ValueError(msg)
    return value


def _no_constant(text: str) -> object:
    msg = f"not JSON: {text}"
    raise ValueError(msg)


def parse_json(body: bytes, *, empty: object = None) -> object:
    """
    The JSON value of a request body (``empty`` for no body).

    Raises:
        ApiError: 400 for anything that is not strict JSON (NaN and infinities too).
    """
    if not body.strip():
        return empty
    try:
        return json.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, _BAD_JSON) from None


# --- schemas ----------------------------------------------------------------------------


def _jsonschema() -> Any:
    """The jsonschema package (the server extra's dependency), loaded on first use."""
    return importlib.import_module("jsonschema")


def _load(name: str) -> dict[str, Any]:
    text = resources.files("runflow.server").joinpath("schemas", name).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _schemas() -> dict[str, Any]:
    """Every request body schema, by operation, as jsonschema validators."""
    jsonschema = _jsonschema()

    create = _load("create_run_request.schema.json")
    submit = _load("submit_tool_outputs_request.schema.json")
    defs = create["$defs"]
    metadata = {"$ref": "#/$defs/Metadata"}
    any_object = {"type": ["object", "null"]}
    thread = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "messages": {"type": "array", "items": {"$ref": "#/$defs/CreateMessageRequest"}},
            "metadata": metadata,
            "tool_resources": any_object,
        },
        "$defs": defs,
    }
    thread_and_run_props = {
        k: v
        for k, v in create["properties"].items()
        if k not in {"additional_instructions", "additional_messages"}
    }
    thread_and_run_props["thread"] = {k: v for k, v in thread.items() if k != "$defs"}
    thread_and_run_props["tool_resources"] = any_object
    thread_and_run = {
        "type": "object",
        "additionalProperties": False,
        "required": ["assistant_id"],
        "properties": thread_and_run_props,
        "$defs": defs,
    }
    modify = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"metadata": metadata},
        "$defs": defs,
    }
    modify_thread = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"metadata": metadata, "tool_resources": any_object},
        "$defs": defs,
    }
    message = {**defs["CreateMessageRequest"], "$defs": defs}
    validator = jsonschema.Draft202012Validator
    return {
        "create_run": validator(create),
        "submit_tool_outputs": validator(submit),
        "create_thread": validator(thread),
        "create_thread_and_run": validator(thread_and_run),
        "modify_run": validator(modify),
        "modify_thread": validator(modify_thread),
        "create_message": validator(message),
    }


def check_body(operation: str, body: object) -> dict[str, Any]:
    """
    ``body`` checked against the operation's request schema.

    Raises:
        ApiError: 400 naming the first bad parameter, in OpenAI's words.
    """
    jsonschema = _jsonschema()
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "Invalid type for request body: expected an object, "
            f"but got {openai_type(body)} instead.",
        )
    validator = _schemas()[operation]
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    except RecursionError:
        raise ApiError(400, "Invalid request body: nested too deeply.") from None
    if error is None:
        return body
    raise _translate(error)


_KINDS: dict[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a decimal",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _path(parts: Iterable[object]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _quote(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return _clip(text)


def _translate(error: Any) -> ApiError:  # noqa: C901, PLR0911 - one branch per JSON Schema keyword
    param = _path(error.absolute_path) or None
    where = param or "request body"
    keyword = error.validator
    expected = error.validator_value
    value = error.instance
    if keyword == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = [n for n in names if n != "null"] or names
        return ApiError(
            400,
            f"Invalid type for '{where}': expected {_KINDS.get(wanted[0], wanted[0])}, "
            f"but got {openai_type(value)} instead.",
            param=param,
        )
    if keyword == "required":
        missing = next((p for p in expected if p not in value), expected[0])
        return _missing_parameter(f"{param}.{missing}" if param else missing)
    if keyword == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = next((k for k in value if k not in known), "")
        if param is None:
            return ApiError(
                400, f"Unrecognized request argument supplied: {_clip(extra)}", param=extra
            )
        name = f"{param}.{extra}"
        return ApiError(400, f"Unknown parameter: '{_clip(name)}'.", param=name)
    if keyword in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        number = "integer" if isinstance(value, int) else "decimal"
        low = keyword in {"minimum", "exclusiveMinimum"}
        side = "below minimum" if low else "above maximum"
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        return ApiError(
            400,
            f"Invalid '{where}': {number} {side} value. Expected a value {op[keyword]} "
            f"{expected}, but got {value} instead.",
            param=param,
        )
    if keyword in {"maxItems", "minItems"}:
        size = "long" if keyword == "maxItems" else "short"
        bound = "maximum" if keyword == "maxItems" else "minimum"
        return ApiError(
            400,
            f"Invalid '{where}': array too {size}. Expected an array with {bound} length "
            f"{expected}, but got an array with length {len(value)} instead.",
            param=param,
        )
    if keyword in {"maxLength", "minLength"}:
        size = "long" if keyword == "maxLength" else "short"
        bound = "maximum" if keyword == "maxLength" else "minimum"
        return ApiError(
            400,
            f"Invalid '{where}': string too {size}. Expected a string with {bound} length "
            f"{expected}, but got a string with length {len(value)} instead.",
            param=param,
        )
    if keyword == "maxProperties":
        return ApiError(
            400,
            f"Invalid '{where}': too many properties. Expected an object with at most "
            f"{expected} properties, but got an object with {len(value)} properties instead.",
            param=param,
        )
    if keyword == "propertyNames":
        return ApiError(400, f"Invalid '{where}': {_clip(error.message)}.", param=param)
    if keyword in {"enum", "const"}:
        options = list(expected) if keyword == "enum" else [expected]
        listed = ", ".join(f"'{_quote(o)}'" for o in options[:12])
        return ApiError(
            400,
            f"Invalid value: '{_quote(value)}'. Supported values are: {listed}.",
            param=param,
        )
    return ApiError(400, f"Invalid value for '{where}'.", param=param)
