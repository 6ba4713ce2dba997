"""
(Un)structuring between wire JSON and the records, with cattrs.

One converter for everything. Primitive hooks are strict (no ``"12"`` for an int, no
``True`` for an int, no ``1.5`` for a timestamp); unions that the wire tags with
``type`` are dispatched on it; optional keys the schema does not allow as ``null``
are omitted on output. Errors become :class:`runflow.ValidationError` naming the
JSON path of every problem.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any, TypeVar, get_args

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from runflow._model import (
    CodeInterpreterTool,
    FileSearch,
    FileSearchRankingOptions,
    FileSearchTool,
    FunctionDefinition,
    FunctionTool,
    IncompleteDetails,
    JsonSchema,
    NamedToolChoice,
    ResponseFormat,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    ResponseFormatText,
    RunObject,
    RunStatus,
    Tool,
    ToolCall,
    ToolChoice,
    ToolOutput,
)
from runflow.exceptions import ValidationError

__all__ = [
    "converter",
    "structure",
    "structure_run",
    "unstructure",
    "unstructure_run",
]

converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)

_T = TypeVar("_T")
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}


_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (Mapping, "an object"),
    ((list, tuple), "an array"),
)


def _json_type(value: object) -> str:
    """Name the JSON type of ``value`` for an error message."""
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def openai_type(value: object) -> str:
    """The JSON type of ``value`` as OpenAI's messages name it (a float is "a decimal")."""
    return "a decimal" if isinstance(value, float) else _json_type(value)


def metadata_type_error(key: str, value: object) -> str:
    """OpenAI's message for a metadata value that is not a string (LIFECYCLE R6.1)."""
    return (
        f"Invalid type for 'metadata.{key}': expected a string, "
        f"but got {openai_type(value)} instead."
    )


def _strict(kind: type) -> Callable[[object, type], object]:
    def hook(value: object, _: type) -> object:
        ok = type(value) is kind or (
            kind is float and isinstance(value, int | float) and not isinstance(value, bool)
        )
        if not ok:
            msg = f"expected {_TYPE_NAMES[kind]}, got {_json_type(value)}"
            raise TypeError(msg)
        if kind is float:
            number = float(value)  # type: ignore[arg-type]
            if not math.isfinite(number):  # Python's json reads NaN and Infinity; JSON has none
                msg = f"expected a finite number, got {number}"
                raise ValueError(msg)
            return number
        return value

    return hook


for _kind in (int, float, str, bool):
    converter.register_structure_hook(_kind, _strict(_kind))


def _structure_status(value: object, _: type) -> RunStatus:
    if not isinstance(value, str):
        msg = f"expected a string, got {_json_type(value)}"
        raise TypeError(msg)
    try:
        return RunStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in RunStatus)
        msg = f"{value!r} is not a run status (one of {allowed})"
        raise ValueError(msg) from None


converter.register_structure_hook(RunStatus, _structure_status)


def _structure_mapping(value: object, _: type) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        msg = f"expected an object, got {_json_type(value)}"
        raise TypeError(msg)
    return types.MappingProxyType(dict(value))


def _structure_metadata(value: object, _: type) -> Mapping[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        msg = f"expected an object or null, got {_json_type(value)}"
        raise TypeError(msg)
    for key, item in value.items():
        if not isinstance(item, str):
            raise TypeError(metadata_type_error(key, item))
    return types.MappingProxyType(dict(value))


def _is(target: object) -> Callable[[object], bool]:
    return lambda t: t == target


converter.register_structure_hook_func(_is(Mapping[str, Any]), _structure_mapping)
converter.register_structure_hook_func(
    _is(Mapping[str, Any] | None), lambda v, t: None if v is None else _structure_mapping(v, t)
)
converter.register_structure_hook_func(_is(Mapping[str, str] | None), _structure_metadata)


def _structure_literal(value: object, literal: object) -> object:
    """A value of a ``Literal[...]``, refused in the words of the other enum rules."""
    allowed = get_args(literal)
    if isinstance(value, str | int) and not isinstance(value, bool) and value in allowed:
        return value
    msg = f"must be one of {list(allowed)}, got {value!r}"
    raise ValueError(msg)


def _is_literal(target: object) -> bool:
    origin: object = typing.get_origin(target)
    return origin is typing.Literal


converter.register_structure_hook_func(_is_literal, _structure_literal)


def _unstructure_mapping(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


converter.register_unstructure_hook(types.MappingProxyType, _unstructure_mapping)


def _tagged(union: object, classes: Sequence[type], literals: Sequence[str] = ()) -> None:
    """Dispatch a union on the wire's ``type`` key (plain strings for its literals)."""
    by_tag: dict[str, type] = {}
    for cls in classes:
        for value in get_args(typing.get_type_hints(cls)["type"]):
            by_tag[value] = cls
    expected = ", ".join([*(repr(s) for s in literals), *(f"{{type: {t!r}}}" for t in by_tag)])

    def hook(value: object, _: object) -> object:
        if isinstance(value, str) and value in literals:
            return value
        if isinstance(value, Mapping):
            tag = value.get("type")
            cls = by_tag.get(tag) if isinstance(tag, str) else None
            if cls is not None:
                return converter.structure(value, cls)
        if type(value) in classes:
            return _check_record(value)
        msg = f"expected one of {expected}, got {value!r}"
        raise ValueError(msg)

    converter.register_structure_hook_func(_is(union), hook)
    optional = union | None  # type: ignore[operator]
    converter.register_structure_hook_func(
        _is(optional), lambda v, t: None if v is None else hook(v, t)
    )


_tagged(Tool, (CodeInterpreterTool, FileSearchTool, FunctionTool))
_tagged(ToolChoice, (NamedToolChoice,), ("none", "auto", "required"))
_tagged(
    ResponseFormat,
    (ResponseFormatText, ResponseFormatJsonObject, ResponseFormatJsonSchema),
    ("auto",),
)


def _is_tuple_type(t: object) -> bool:
    return typing.get_origin(t) is tuple


def _structure_array(value: object, t: Any) -> tuple[Any, ...]:
    """Structure a JSON array (never a string or an object) into a tuple, item by item."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        msg = f"expected an array, got {_json_type(value)}"
        raise TypeError(msg)
    item = get_args(t)[0]
    out: list[Any] = []
    errors: list[Exception] = []
    for index, element in enumerate(value):
        try:
            out.append(converter.structure(element, item))
        except Exception as exc:  # noqa: BLE001 - collected and re-raised as one group
            exc.__notes__ = [
                *getattr(exc, "__notes__", []),
                IterableValidationNote(f"Structuring {t} @ index {index}", index, item),
            ]
            errors.append(exc)
    if errors:
        msg = f"While structuring {t!r}"
        raise IterableValidationError(msg, errors, t)
    return tuple(out)


converter.register_structure_hook_func(_is_tuple_type, _structure_array)


def _objects_only(cls: type[Any]) -> Callable[[object, type], Any]:
    """
    The structure hook of a record class: a JSON object, or a record a caller built
    (checked as its wire form, see :func:`_check_record`), never another JSON value.
    cattrs' generated function alone would index a string by key or find no keys in it
    (``"incomplete_details": "oops"`` read as all defaults).
    """
    structure_fields = make_dict_structure_fn(cls, converter)

    def hook(value: object, _: type) -> Any:
        if type(value) is cls:
            return _check_record(value)
        if not isinstance(value, Mapping):
            msg = f"expected an object, got {_json_type(value)}"
            raise TypeError(msg)
        return structure_fields(value, cls)

    return hook


converter.register_structure_hook_factory(attrs.has, _objects_only)

# Optional keys the schema types as non-nullable: omitted when unset, never sent as null.
# A generated function takes the hooks of its fields' classes as they are when it is
# made: a nested class comes before the class that holds it.
for _cls, _names in (
    (FunctionDefinition, ("description", "parameters", "strict")),
    (FileSearchRankingOptions, ("ranker",)),
    (FileSearch, ("max_num_results", "ranking_options")),
    (FileSearchTool, ("file_search",)),
    (JsonSchema, ("description", "schema", "strict")),
    (NamedToolChoice, ("function",)),
    (IncompleteDetails, ("reason",)),
):
    converter.register_unstructure_hook(
        _cls,
        make_dict_unstructure_fn(
            _cls,
            converter,
            **typing.cast("Any", {n: override(omit_if_default=True) for n in _names}),
        ),
    )


# --- reading real traffic ----------------------------------------------------------------

_REQUIRED = ("id", "object", "created_at", "thread_id", "assistant_id", "status")


def _upgrade_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """Map older API shapes onto the newest one (spec/README.md, LIFECYCLE R7.3)."""
    d = dict(data)
    if d.get("instructions", "") is None:
        d["instructions"] = ""
    tools = d.get("tools")
    if isinstance(tools, list | tuple):
        d["tools"] = [
            {"type": "file_search"}
            if isinstance(t, Mapping) and t.get("type") == "retrieval"
            else t
            for t in tools
        ]
    choice = d.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "retrieval":
        d["tool_choice"] = {**choice, "type": "file_search"}
    if d.get("response_format") == "none":
        d["response_format"] = {"type": "text"}
    if d.get("status") == "completed" and d.get("incomplete_details") is not None:
        d["status"] = "incomplete"
    return d


def _path(prefix: str, exc: BaseException) -> list[str]:
    return cattrs.transform_error(
        exc,
        path=prefix,
        format_exception=lambda e, _type: (
            f"required key missing ({e.args[0] if e.args else ''})"
            if isinstance(e, KeyError)
            else str(e)
        ),
    )


def _raise(prefix: str, exc: BaseException) -> typing.NoReturn:
    errors = _path(prefix, exc)
    first = errors[0]
    rule, _, path = first.rpartition(" @ ")
    raise ValidationError(path or prefix, rule or first, errors=errors) from exc


#: Records a caller gave that were found good, by identity (records are immutable, and
#: each one is kept alive here, so its id cannot be reused while it is remembered).
_CHECKED: dict[int, object] = {}
_CHECKED_MAX = 256


def _check_record(value: _T) -> _T:
    """
    A record a caller built, checked as its wire form is: attrs runs no validators, so a
    ``FunctionCall(arguments={"x": 1})`` is refused here, not when a store reads the run
    back. Raises what structuring its wire form raises. A record found good is
    remembered (the usual caller's constants then cost one lookup).
    """
    if _CHECKED.get(id(value)) is value:
        return value
    try:
        wire = converter.unstructure(value)
    except Exception as exc:
        msg = f"this {type(value).__name__} cannot be written as JSON ({exc})"
        raise TypeError(msg) from exc
    converter.structure(wire, type(value))
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()  # simple and bounded: a hot caller's records come back at once
    _CHECKED[id(value)] = value
    return value


def all_checked(records: Iterable[object], classes: Container[type]) -> bool:
    """
    Whether every one of ``records`` is a record of one of ``classes`` that was
    checked already (one lookup each): the caller may then use them as they are.
    """
    known = _CHECKED.get
    for record in records:  # a loop: all() over a generator costs a frame
        if type(record) not in classes or known(id(record)) is not record:
            return False
    return True


def structure(data: object, cls: type[Any], path: str = "$") -> Any:
    """
    Structure ``data`` into ``cls``, raising :class:`ValidationError` with paths. A
    record given as it is is checked as its wire form (by the record classes' hook).
    """
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        _raise(path, exc)


def structure_run(data: Mapping[str, Any]) -> RunObject:
    """Read a RunObject from wire JSON (see :meth:`RunObject.from_dict`)."""
    if not isinstance(data, Mapping):
        raise ValidationError("$", f"expected an object, got {_json_type(data)}")
    for key in _REQUIRED:
        if key not in data:
            raise ValidationError(f"$.{key}", "required key missing")
    if data["object"] != "thread.run":
        raise ValidationError("$.object", f"expected 'thread.run', got {data['object']!r}")
    run: RunObject = structure(_upgrade_v1(data), RunObject)
    return run


def structure_tool_calls(calls: object) -> tuple[ToolCall, ...]:
    """Read tool calls given as records or wire dicts."""
    return _structure_items(calls, ToolCall, "$.tool_calls")


def structure_tool_outputs(outputs: object) -> tuple[ToolOutput, ...]:
    """Read tool outputs given as records or wire dicts."""
    return _structure_items(outputs, ToolOutput, "$.tool_outputs")


def _structure_items(value: object, cls: type[_T], path: str) -> tuple[_T, ...]:
    """A tuple of ``cls`` records from records or wire dicts (records are checked)."""
    items = _sequence(value, path)
    if all_checked(items, (cls,)):  # the usual caller's records: no per-item work
        return tuple(items)  # type: ignore[arg-type] # all are _T: checked above
    return tuple(structure(item, cls, f"{path}[{i}]") for i, item in enumerate(items))


def _sequence(value: object, path: str) -> Sequence[object]:
    if type(value) is list or type(value) is tuple:
        return value
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ValidationError(path, f"expected an array, got {_json_type(value)}")
    return value


def unstructure(value: object) -> Any:
    """Unstructure any record into JSON-ready builtins."""
    return converter.unstructure(value)


converter.register_unstructure_hook(RunStatus, str)
_unstructure_run = make_dict_unstructure_fn(RunObject, converter)


def unstructure_run(run: RunObject) -> dict[str, Any]:
    """The wire dict of a run (see :meth:`RunObject.to_dict`)."""
    d: dict[str, Any] = _unstructure_run(run)
    return d
