"""Records: reading real traffic, the wire dict, round trips and validation errors."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from runflow import (
    CodeInterpreterTool,
    Engine,
    FileSearch,
    FileSearchRankingOptions,
    FileSearchTool,
    FunctionCall,
    FunctionDefinition,
    FunctionTool,
    IncompleteDetails,
    JsonSchema,
    LastError,
    NamedToolChoice,
    RequiredAction,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    ResponseFormatText,
    RunObject,
    RunStatus,
    SubmitToolOutputs,
    ToolCall,
    ToolChoiceFunction,
    TruncationStrategy,
    Usage,
    ValidationError,
)
from runflow._model import evolve_run
from runflow.testing import FakeClock

#: The six keys the reader requires; everything else defaults.
MINIMAL: dict[str, Any] = {
    "id": "run_abc123",
    "object": "thread.run",
    "created_at": 1_700_000_000,
    "thread_id": "thread_abc",
    "assistant_id": "asst_abc",
    "status": "queued",
}

#: A v1 (assistants=v1) completed run as the API sent it in April 2024.
V1_RUN: dict[str, Any] = {
    **MINIMAL,
    "status": "completed",
    "file_ids": ["file_1", "file_2"],
    "tools": [{"type": "retrieval"}, {"type": "code_interpreter"}],
    "instructions": None,
    "started_at": 1_700_000_001,
    "completed_at": 1_700_000_009,
    "expires_at": None,
    "incomplete_details": {"reason": "max_prompt_tokens"},
    "usage": {"prompt_tokens": 300, "completion_tokens": 16, "total_tokens": 316},
    "max_completion_tokens": 16,
    "max_prompt_tokens": None,
    "metadata": {},
}


def _full_records() -> list[RunObject]:
    """Runs that between them use every nested record type and every union branch."""
    call = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments="{}"))
    weather = FunctionTool(
        function=FunctionDefinition(
            name="get_weather",
            description="Weather of a city.",
            parameters={"type": "object", "properties": {"city": {"type": "string"}}},
            strict=True,
        )
    )
    file_search = FileSearchTool(
        file_search=FileSearch(
            max_num_results=8,
            ranking_options=FileSearchRankingOptions(score_threshold=0.5, ranker="auto"),
        )
    )
    base: dict[str, Any] = {
        "id": "run_full",
        "created_at": 1_700_000_000,
        "thread_id": "thread_a",
        "assistant_id": "asst_a",
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "tools": (CodeInterpreterTool(), file_search, weather, FileSearchTool()),
        "metadata": {"owner": "team-a", "ticket": "42"},
        "temperature": 0.7,
        "top_p": 0.9,
        "max_prompt_tokens": 1000,
        "max_completion_tokens": 500,
        "parallel_tool_calls": False,
    }
    return [
        RunObject(
            **base,
            status=RunStatus.REQUIRES_ACTION,
            expires_at=1_700_000_600,
            started_at=1_700_000_001,
            required_action=RequiredAction(
                submit_tool_outputs=SubmitToolOutputs(tool_calls=(call,))
            ),
            truncation_strategy=TruncationStrategy(type="last_messages", last_messages=10),
            tool_choice=NamedToolChoice(
                type="function", function=ToolChoiceFunction(name="get_weather")
            ),
            response_format=ResponseFormatJsonSchema(
                json_schema=JsonSchema(
                    name="answer",
                    description="The answer.",
                    schema={"type": "object"},
                    strict=True,
                )
            ),
        ),
        RunObject(
            **base,
            status=RunStatus.FAILED,
            started_at=1_700_000_001,
            failed_at=1_700_000_005,
            last_error=LastError(code="rate_limit_exceeded", message="slow down"),
            truncation_strategy=TruncationStrategy(),
            tool_choice=NamedToolChoice(type="code_interpreter"),
            response_format=ResponseFormatJsonObject(),
        ),
        RunObject(
            **base,
            status=RunStatus.INCOMPLETE,
            started_at=1_700_000_001,
            completed_at=1_700_000_005,
            incomplete_details=IncompleteDetails(reason="max_completion_tokens"),
            usage=Usage.of(10, 501),
            tool_choice="required",
            response_format=ResponseFormatText(),
        ),
        RunObject(
            **base,
            status=RunStatus.COMPLETED,
            started_at=1_700_000_001,
            completed_at=1_700_000_005,
            usage=Usage.of(10, 20),
            tool_choice=NamedToolChoice(type="file_search"),
            response_format="auto",
        ),
        RunObject(**{**base, "metadata": None}, status=RunStatus.QUEUED, expires_at=1_700_000_600),
    ]


FULL_RECORDS = _full_records()


class TestCaptures:
    """Every snapshot of captures/runs.jsonl: real traffic from 2023-11 to 2025-10."""

    def test_there_are_212_snapshots(self, captures: tuple[dict[str, Any], ...]) -> None:
        """The spec's capture file holds the 212 snapshots of 47 runs it describes."""
        assert len(captures) == 212
        assert len({c["run"]["id"] for c in captures}) == 47

    def test_parses(self, capture: dict[str, Any]) -> None:
        """The snapshot reads into a RunObject with the same id, thread and status."""
        run = RunObject.from_dict(capture)
        assert run.id == capture["id"]
        assert run.thread_id == capture["thread_id"]
        assert run.created_at == capture["created_at"]
        expected = capture["status"]
        if expected == "completed" and capture.get("incomplete_details") is not None:
            expected = "incomplete"
        assert run.status == expected

    def test_does_not_mutate_the_input(self, capture: dict[str, Any]) -> None:
        """Reading leaves the caller's dict exactly as it was."""
        before = copy.deepcopy(capture)
        RunObject.from_dict(capture)
        assert capture == before

    def test_round_trips(self, capture: dict[str, Any]) -> None:
        """``from_dict(x.to_dict()) == x`` for the record read from the snapshot."""
        run = RunObject.from_dict(capture)
        assert RunObject.from_dict(run.to_dict()) == run

    def test_wire_dict_is_json(self, capture: dict[str, Any]) -> None:
        """The wire dict survives ``json.dumps``/``json.loads`` unchanged."""
        wire = RunObject.from_dict(capture).to_dict()
        assert json.loads(json.dumps(wire)) == wire

    def test_emitted_dict_validates(
        self, capture: dict[str, Any], check_wire: Callable[..., None]
    ) -> None:
        """
        The re-emitted snapshot validates against the schema and the SDK's ``Run``
        (values the API echoed past a request limit keep their value: exempt).
        """
        check_wire(RunObject.from_dict(capture).to_dict(), read=True)

    def test_known_values_survive(self, capture: dict[str, Any]) -> None:
        """Every key the newest spec knows keeps its value (after the v1 mapping)."""
        wire = RunObject.from_dict(capture).to_dict()
        for key in (
            "id",
            "created_at",
            "thread_id",
            "assistant_id",
            "expires_at",
            "started_at",
            "cancelled_at",
            "failed_at",
            "completed_at",
            "model",
            "max_prompt_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "metadata",
        ):
            if key in capture:
                assert wire[key] == capture[key], key
        if capture.get("usage") is not None:
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                assert wire["usage"][key] == capture["usage"][key]


class TestReadingRules:
    """The reading rules of issue 2, §1."""

    def test_only_six_keys_are_required(self) -> None:
        """A dict with just the six required keys reads, every other field defaulted."""
        run = RunObject.from_dict(MINIMAL)
        assert run.status is RunStatus.QUEUED
        assert run.required_action is None
        assert run.last_error is None
        assert run.incomplete_details is None
        assert run.usage is None
        assert run.expires_at is None
        assert run.started_at is None
        assert run.tools == ()
        assert run.parallel_tool_calls is True
        assert run.instructions == ""
        assert run.max_prompt_tokens is None
        assert run.max_completion_tokens is None
        assert run.truncation_strategy is None
        assert run.tool_choice is None
        assert run.response_format is None

    def test_defaults_emit_every_required_key(self, check_wire: Callable[..., None]) -> None:
        """The wire dict of a minimal read has all 27 keys and validates."""
        wire = RunObject.from_dict(MINIMAL).to_dict()
        assert len(wire) == 27
        assert wire["object"] == "thread.run"
        assert wire["tools"] == []
        assert wire["parallel_tool_calls"] is True
        check_wire(wire)

    def test_wire_keys_are_in_schema_order(self, run_schema: dict[str, Any]) -> None:
        """``to_dict`` lists the 27 fields in the schema's property order."""
        wire = RunObject.from_dict(MINIMAL).to_dict()
        assert list(wire) == list(run_schema["properties"])

    def test_instructions_null_reads_as_empty(self) -> None:
        """``instructions: null`` (no assistant instructions) reads as ``""``."""
        run = RunObject.from_dict({**MINIMAL, "instructions": None})
        assert run.instructions == ""
        assert run.to_dict()["instructions"] == ""

    def test_unknown_keys_are_ignored(self) -> None:
        """Extra keys (tool_resources, reasoning_effort, usage details) are accepted."""
        run = RunObject.from_dict(
            {
                **MINIMAL,
                "status": "completed",
                "tool_resources": {"code_interpreter": {"file_ids": []}},
                "reasoning_effort": None,
                "usage": {
                    "prompt_tokens": 1,
                    "completion_tokens": 2,
                    "total_tokens": 3,
                    "prompt_token_details": {"cached_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
            }
        )
        assert run.usage == Usage.of(1, 2)
        wire = run.to_dict()
        assert "tool_resources" not in wire
        assert "reasoning_effort" not in wire

    def test_v1_file_ids_and_retrieval_map_to_file_search(self) -> None:
        """A v1 run's ``retrieval`` tool reads as ``file_search``; ``file_ids`` is dropped."""
        run = RunObject.from_dict(V1_RUN)
        assert run.tools == (FileSearchTool(), CodeInterpreterTool())
        wire = run.to_dict()
        assert "file_ids" not in wire
        assert wire["tools"] == [{"type": "file_search"}, {"type": "code_interpreter"}]

    def test_v1_completed_with_incomplete_details_reads_as_incomplete(self) -> None:
        """v1 had no ``incomplete`` status: ``completed`` + incomplete_details is incomplete."""
        run = RunObject.from_dict(V1_RUN)
        assert run.status is RunStatus.INCOMPLETE
        assert run.incomplete_details == IncompleteDetails(reason="max_prompt_tokens")
        assert run.completed_at == 1_700_000_009

    def test_completed_with_null_incomplete_details_stays_completed(self) -> None:
        """Only a non-null incomplete_details turns a ``completed`` read into incomplete."""
        run = RunObject.from_dict({**MINIMAL, "status": "completed", "incomplete_details": None})
        assert run.status is RunStatus.COMPLETED

    def test_v1_named_retrieval_tool_choice_maps_to_file_search(self) -> None:
        """A v1 ``{"type": "retrieval"}`` tool choice reads as ``file_search``."""
        run = RunObject.from_dict({**MINIMAL, "tool_choice": {"type": "retrieval"}})
        assert run.tool_choice == NamedToolChoice(type="file_search")

    def test_max_completion_tokens_16_is_kept(self) -> None:
        """A value read keeps its value although create() would refuse it (API echoed 16)."""
        run = RunObject.from_dict(V1_RUN)
        assert run.max_completion_tokens == 16
        assert run.to_dict()["max_completion_tokens"] == 16

    def test_v1_shape_emits_the_newest_shape(self, check_wire: Callable[..., None]) -> None:
        """The re-emitted v1 run validates (limits aside) as a newest-spec run."""
        check_wire(RunObject.from_dict(V1_RUN).to_dict(), read=True)

    @pytest.mark.parametrize(
        "tool_choice",
        [
            "none",
            "auto",
            "required",
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "code_interpreter"},
            {"type": "file_search"},
        ],
        ids=["none", "auto", "required", "function", "code_interpreter", "file_search"],
    )
    def test_every_tool_choice_reads(self, tool_choice: Any) -> None:
        """Every tool_choice the schema allows reads and is re-emitted unchanged."""
        run = RunObject.from_dict({**MINIMAL, "tool_choice": tool_choice})
        assert run.to_dict()["tool_choice"] == tool_choice

    @pytest.mark.parametrize(
        "response_format",
        [
            "auto",
            {"type": "text"},
            {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "answer"}},
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "description": "d",
                    "schema": {"type": "object"},
                    "strict": True,
                },
            },
        ],
        ids=["auto", "text", "json_object", "json_schema-min", "json_schema-full"],
    )
    def test_every_response_format_reads(self, response_format: Any) -> None:
        """Every response_format the schema allows reads and is re-emitted unchanged."""
        run = RunObject.from_dict({**MINIMAL, "response_format": response_format})
        assert run.to_dict()["response_format"] == response_format

    def test_tool_calls_property(self) -> None:
        """``run.tool_calls`` lists the pending calls, empty without a required action."""
        run = FULL_RECORDS[0]
        assert [c.id for c in run.tool_calls] == ["call_1"]
        assert RunObject.from_dict(MINIMAL).tool_calls == ()

    def test_status_is_a_str_enum(self) -> None:
        """RunStatus has the 9 wire values; members equal their strings."""
        assert [s.value for s in RunStatus] == [
            "queued",
            "in_progress",
            "requires_action",
            "cancelling",
            "cancelled",
            "failed",
            "completed",
            "incomplete",
            "expired",
        ]
        assert RunStatus.QUEUED == "queued"
        assert {s for s in RunStatus if s.is_terminal} == {
            "completed",
            "failed",
            "cancelled",
            "expired",
            "incomplete",
        }
        assert {s for s in RunStatus if s.is_active} == {
            "queued",
            "in_progress",
            "requires_action",
            "cancelling",
        }

    def test_usage_of_sums(self) -> None:
        """``Usage.of(p, c)`` sets ``total_tokens = p + c``; ``+`` adds field by field."""
        assert Usage.of(9, 4) == Usage(prompt_tokens=9, completion_tokens=4, total_tokens=13)
        assert Usage.of(1, 2) + Usage.of(3, 4) == Usage.of(4, 6)


class TestRoundTrip:
    """``from_dict(x.to_dict()) == x`` for records that use every nested type."""

    @pytest.mark.parametrize("run", FULL_RECORDS, ids=lambda r: str(r.status))
    def test_round_trips(self, run: RunObject) -> None:
        """Reading the wire dict back gives an equal record."""
        assert RunObject.from_dict(run.to_dict()) == run

    @pytest.mark.parametrize("run", FULL_RECORDS, ids=lambda r: str(r.status))
    def test_emitted_dict_validates(self, run: RunObject, check_wire: Callable[..., None]) -> None:
        """The wire dict validates against the schema and the SDK's Run."""
        check_wire(run.to_dict())

    @pytest.mark.parametrize("run", FULL_RECORDS, ids=lambda r: str(r.status))
    def test_wire_dict_is_plain_json(self, run: RunObject) -> None:
        """The wire dict holds only JSON types (dicts, lists, str, int, float, bool, None)."""

        def plain(value: object) -> bool:
            if isinstance(value, dict):
                return all(isinstance(k, str) and plain(v) for k, v in value.items())
            if isinstance(value, list):
                return all(plain(v) for v in value)
            return value is None or type(value) in (str, int, float, bool)

        wire = run.to_dict()
        assert plain(wire)
        assert type(wire["status"]) is str

    def test_non_nullable_optionals_are_omitted(self) -> None:
        """Unset optional keys the schema types as non-nullable are left out, not null."""
        wire = RunObject.from_dict(
            {**MINIMAL, "tools": [{"type": "function", "function": {"name": "f"}}]}
        ).to_dict()
        assert wire["tools"] == [{"type": "function", "function": {"name": "f"}}]

    def test_ranking_options_without_ranker_leave_it_out(self) -> None:
        """``ranker`` is optional and not nullable: unset, it is left out, also when the
        ranking options sit inside a tool (it was sent as null there)."""
        tool = {"type": "file_search", "file_search": {"ranking_options": {"score_threshold": 0.5}}}
        engine = Engine(clock=FakeClock(1_700_000_000))
        run = engine.create(thread_id="thread_a", assistant_id="asst_a", tools=[tool])
        assert run.to_dict()["tools"] == [tool]
        assert RunObject.from_dict(_with(tools=[tool])).to_dict()["tools"] == [tool]

    def test_records_hash_as_they_compare(self) -> None:
        """A run with metadata, a function's parameters and a JSON schema hashes (the
        mappings are compared, not hashed), and equal runs hash equal."""
        engine = Engine(clock=FakeClock(1_700_000_000))
        run = engine.create(
            thread_id="thread_a",
            assistant_id="asst_a",
            tools=[
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ],
            metadata={"k": "v"},
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {"type": "object"}},
            },
        )
        again = RunObject.from_dict(run.to_dict())
        assert again == run
        assert hash(again) == hash(run)
        assert len({run, again, engine.start(run)}) == 2

    def test_records_are_frozen(self) -> None:
        """Records cannot be changed in place."""
        run = RunObject.from_dict(MINIMAL)
        with pytest.raises(AttributeError):
            run.status = RunStatus.FAILED  # type: ignore[misc]


def _with(**changes: Any) -> dict[str, Any]:
    return {**MINIMAL, **changes}


def _without(key: str) -> dict[str, Any]:
    d = dict(MINIMAL)
    del d[key]
    return d


_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

#: (case id, payload, expected ValidationError.path)
INVALID: list[tuple[str, Any, str]] = [
    ("not-an-object", 5, "$"),
    *[(f"missing-{k}", _without(k), f"$.{k}") for k in MINIMAL],
    ("wrong-object", _with(object="assistant.run"), "$.object"),
    ("bad-status-enum", _with(status="bogus"), "$.status"),
    ("status-null", _with(status=None), "$.status"),
    ("id-wrong-type", _with(id=123), "$.id"),
    ("created_at-float", _with(created_at=1.5), "$.created_at"),
    ("created_at-whole-float", _with(created_at=1_700_000_000.0), "$.created_at"),
    ("created_at-bool", _with(created_at=True), "$.created_at"),
    ("created_at-numeric-string", _with(created_at="1700000000"), "$.created_at"),
    ("expires_at-float", _with(expires_at=2.5), "$.expires_at"),
    ("started_at-string", _with(started_at="now"), "$.started_at"),
    ("max_prompt_tokens-bool", _with(max_prompt_tokens=True), "$.max_prompt_tokens"),
    ("max_completion_tokens-float", _with(max_completion_tokens=16.5), "$.max_completion_tokens"),
    ("temperature-bool", _with(temperature=True), "$.temperature"),
    ("temperature-string", _with(temperature="1"), "$.temperature"),
    ("temperature-nan", _with(temperature=float("nan")), "$.temperature"),
    ("top_p-infinity", _with(top_p=float("inf")), "$.top_p"),
    ("parallel_tool_calls-string", _with(parallel_tool_calls="yes"), "$.parallel_tool_calls"),
    ("parallel_tool_calls-int", _with(parallel_tool_calls=1), "$.parallel_tool_calls"),
    ("model-wrong-type", _with(model=4), "$.model"),
    ("tools-string", _with(tools="code_interpreter"), "$.tools"),
    ("tools-object", _with(tools={"type": "code_interpreter"}), "$.tools"),
    ("tool-unknown-type", _with(tools=[{"type": "browser"}]), "$.tools[0]"),
    (
        "tool-function-name-missing",
        _with(tools=[{"type": "code_interpreter"}, {"type": "function", "function": {}}]),
        "$.tools[1].function.name",
    ),
    (
        "file_search-score_threshold-missing",
        _with(tools=[{"type": "file_search", "file_search": {"ranking_options": {}}}]),
        "$.tools[0].file_search.ranking_options.score_threshold",
    ),
    ("metadata-array", _with(metadata=["a"]), "$.metadata"),
    (
        "usage-missing-key",
        _with(usage={"prompt_tokens": 1, "total_tokens": 1}),
        "$.usage.completion_tokens",
    ),
    (
        "usage-string-count",
        _with(usage={"prompt_tokens": "1", "completion_tokens": 1, "total_tokens": 2}),
        "$.usage.prompt_tokens",
    ),
    (
        "last_error-bad-code",
        _with(last_error={"code": "nope", "message": "m"}),
        "$.last_error.code",
    ),
    ("last_error-no-message", _with(last_error={"code": "server_error"}), "$.last_error.message"),
    (
        "incomplete_details-bad-reason",
        _with(incomplete_details={"reason": "max_tokens"}),
        "$.incomplete_details.reason",
    ),
    (
        "truncation-bad-type",
        _with(truncation_strategy={"type": "first_messages"}),
        "$.truncation_strategy.type",
    ),
    ("tool_choice-bad-string", _with(tool_choice="always"), "$.tool_choice"),
    ("response_format-bad-string", _with(response_format="xml"), "$.response_format"),
    (
        "json_schema-name-missing",
        _with(response_format={"type": "json_schema", "json_schema": {}}),
        "$.response_format.json_schema.name",
    ),
    (
        "required_action-no-body",
        _with(required_action={"type": "submit_tool_outputs"}),
        "$.required_action.submit_tool_outputs",
    ),
    (
        "tool_call-name-int",
        _with(
            required_action={
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {
                    "tool_calls": [_CALL, {**_CALL, "function": {"name": 1, "arguments": "{}"}}]
                },
            }
        ),
        "$.required_action.submit_tool_outputs.tool_calls[1].function.name",
    ),
    # a nested object given as another JSON value: refused, never read as all defaults
    ("incomplete_details-string", _with(incomplete_details="oops"), "$.incomplete_details"),
    ("last_error-string", _with(last_error="boom"), "$.last_error"),
    ("truncation-array", _with(truncation_strategy=[1]), "$.truncation_strategy"),
    ("truncation-int", _with(truncation_strategy=5), "$.truncation_strategy"),
    ("usage-array", _with(usage=[9, 4, 13]), "$.usage"),
    (
        "file_search-string",
        _with(tools=[{"type": "file_search", "file_search": "x"}]),
        "$.tools[0].file_search",
    ),
    (
        "tool_call-function-string",
        _with(
            required_action={
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {"tool_calls": [{**_CALL, "function": "f"}]},
            }
        ),
        "$.required_action.submit_tool_outputs.tool_calls[0].function",
    ),
]


class TestValidationErrors:
    """``from_dict`` refuses bad input with a ValidationError naming the JSON path."""

    @pytest.mark.parametrize(
        ("payload", "path"), [(p, path) for _, p, path in INVALID], ids=[c for c, _, _ in INVALID]
    )
    def test_names_the_path(self, payload: Any, path: str) -> None:
        """The error's ``path`` is where the bad value sits (or the key that is missing)."""
        with pytest.raises(ValidationError) as info:
            RunObject.from_dict(payload)
        assert info.value.path == path, (info.value.path, path)
        assert info.value.rule
        assert path in str(info.value)

    @pytest.mark.parametrize("key", list(MINIMAL))
    def test_missing_required_key_is_exact(self, key: str) -> None:
        """A missing required key is reported at exactly ``$.<key>``, saying it is missing."""
        with pytest.raises(ValidationError) as info:
            RunObject.from_dict(_without(key))
        assert info.value.path == f"$.{key}"
        assert "missing" in info.value.rule

    def test_wrong_type_names_the_type(self) -> None:
        """A wrong type says what was expected and what came instead."""
        with pytest.raises(ValidationError) as info:
            RunObject.from_dict(_with(created_at=1.5))
        assert info.value.path == "$.created_at"
        assert "integer" in info.value.rule

    def test_bool_is_not_an_int(self) -> None:
        """JSON ``true`` is not an integer timestamp (Python's bool subclasses int)."""
        with pytest.raises(ValidationError) as info:
            RunObject.from_dict(_with(created_at=True))
        assert "boolean" in info.value.rule

    def test_bad_enum_lists_the_choices(self) -> None:
        """An unknown status is refused, naming the value and the allowed statuses."""
        with pytest.raises(ValidationError) as info:
            RunObject.from_dict(_with(status="bogus"))
        assert info.value.path == "$.status"
        assert "bogus" in info.value.rule
        assert "in_progress" in info.value.rule

    def test_metadata_non_string_value(self) -> None:
        """A non-string metadata value is refused with OpenAI's wording, naming the key."""
        with pytest.raises(ValidationError) as info:
            RunObject.from_dict(_with(metadata={"ok": "yes", "modified": True}))
        assert info.value.path.startswith("$.metadata")
        assert "metadata.modified" in str(info.value)
        assert info.value.rule == (
            "Invalid type for 'metadata.modified': expected a string, but got a boolean instead."
        )

    def test_a_nested_object_must_be_an_object(self) -> None:
        """A string where an object belongs is refused, saying so (a string
        ``incomplete_details`` once read as empty details and made a run ``incomplete``)."""
        with pytest.raises(ValidationError) as info:
            RunObject.from_dict(_with(status="completed", incomplete_details="oops"))
        assert info.value.path == "$.incomplete_details"
        assert info.value.rule == "expected an object, got a string"

    def test_is_a_value_error(self) -> None:
        """ValidationError is a ValueError and carries ``errors`` strings."""
        with pytest.raises(ValueError, match=r"\$\.status") as info:
            RunObject.from_dict(_with(status="bogus"))
        assert isinstance(info.value, ValidationError)
        assert info.value.errors
        assert all(" @ " in e for e in info.value.errors)


class TestRecordDicts:
    """The engine's fast record builders keep the records' dicts small."""

    @pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's key-sharing dicts")
    def test_created_and_changed_records_share_their_keys(self) -> None:
        """
        Records the engine creates and changes have key-sharing instance dicts, as
        constructor-made ones do (an unshared dict of 27 keys is about three times
        bigger, and every live run holds one).
        """
        engine = Engine(clock=FakeClock(1_700_000_000))
        created = engine.create(thread_id="thread_a", assistant_id="asst_a")
        started = engine.start(created)
        made = RunObject(
            id="run_x", created_at=1, thread_id="t", assistant_id="a", status=RunStatus.QUEUED
        )
        size = sys.getsizeof(made.__dict__)
        assert sys.getsizeof(created.__dict__) == size
        assert sys.getsizeof(started.__dict__) == size
        assert created == evolve_run(made, {k: getattr(created, k) for k in created.__dict__})
