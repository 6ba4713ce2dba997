"""
Shared fixtures: the spec folder, the captured traffic, wire validation, a fake clock,
an engine and a helper that drives a fresh run to any status.

The spec lives beside the repository (``../shared/spec``); it is located from this
file, never from the working directory.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

#: ``../shared/spec`` seen from the repository root.
SPEC_DIR = Path(__file__).parents[1].parent / "shared" / "spec"
CAPTURES_FILE = SPEC_DIR / "captures" / "runs.jsonl"
RUN_SCHEMA_FILE = SPEC_DIR / "run_object.schema.json"

#: The FakeClock's first reading in every test (2023-11-14T22:13:20Z).
START = 1_700_000_000

#: The one function tool every driven run has, and the call that asks for it.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_CALL: dict[str, Any] = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
WEATHER_OUTPUT: dict[str, str] = {"tool_call_id": "call_1", "output": "sunny"}

#: Trigger -> the keyword arguments a well-formed call of it takes.
TRIGGER_KWARGS: dict[str, dict[str, Any]] = {
    "start": {},
    "require_action": {"tool_calls": [WEATHER_CALL]},
    "submit_tool_outputs": {"tool_outputs": [WEATHER_OUTPUT]},
    "complete": {"usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}},
    "fail": {"code": "server_error", "message": "upstream 500"},
    "mark_incomplete": {"reason": "max_prompt_tokens"},
    "cancel": {},
    "finish_cancel": {},
    "expire": {},
}

#: The shortest trigger path from a fresh (queued) run to each status.
PATHS: dict[str, tuple[str, ...]] = {
    "queued": (),
    "in_progress": ("start",),
    "requires_action": ("start", "require_action"),
    "cancelling": ("start", "cancel"),
    "cancelled": ("start", "cancel", "finish_cancel"),
    "failed": ("start", "fail"),
    "completed": ("start", "complete"),
    "incomplete": ("start", "mark_incomplete"),
    "expired": ("expire",),
}


def _load_captures() -> tuple[dict[str, Any], ...]:
    with CAPTURES_FILE.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


#: Every line of captures/runs.jsonl: ``{"source": {...}, "run": {...}}``, in file order.
CAPTURES = _load_captures()


def _sequences() -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in CAPTURES:
        by_id.setdefault(line["run"]["id"], []).append(line["run"])
    return by_id


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """
    Parametrize ``capture`` over every captured snapshot and ``capture_sequence`` over
    the snapshots of each captured run id (in file order).
    """
    if "capture" in metafunc.fixturenames:
        metafunc.parametrize(
            "capture",
            [line["run"] for line in CAPTURES],
            ids=[
                f"{i:03d}-{line['run']['id']}-{line['run']['status']}"
                for i, line in enumerate(CAPTURES)
            ],
        )
    if "capture_sequence" in metafunc.fixturenames:
        seqs = _sequences()
        metafunc.parametrize("capture_sequence", list(seqs.values()), ids=list(seqs))


@pytest.fixture(name="spec_dir", scope="session")
def _spec_dir() -> Path:
    return SPEC_DIR


@pytest.fixture(name="captures", scope="session")
def _captures() -> tuple[dict[str, Any], ...]:
    return CAPTURES


@pytest.fixture(name="run_schema", scope="session")
def _run_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(RUN_SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


@pytest.fixture(name="check_wire", scope="session")
def _check_wire(run_schema: dict[str, Any]) -> Callable[..., None]:
    """
    A checker for emitted wire dicts: the JSON Schema (draft 2020-12) and the official
    SDK's ``Run.model_validate``. ``read=True`` exempts values the API itself echoed
    past a request limit (``max_completion_tokens: 16``) from the schema's minimum.
    """
    import jsonschema  # noqa: PLC0415
    from openai.types.beta.threads import Run  # noqa: PLC0415

    jsonschema.Draft202012Validator.check_schema(run_schema)
    validator = jsonschema.Draft202012Validator(run_schema)

    def check(wire: Mapping[str, Any], *, read: bool = False) -> None:
        errors = [
            e
            for e in validator.iter_errors(wire)
            if not (
                read
                and e.validator == "minimum"
                and list(e.absolute_path) in (["max_prompt_tokens"], ["max_completion_tokens"])
            )
        ]
        assert not errors, [f"{e.json_path}: {e.message}" for e in errors]
        Run.model_validate(wire)

    return check


@pytest.fixture(name="clock")
def _clock() -> Any:
    from runflow.testing import FakeClock  # noqa: PLC0415

    return FakeClock(START)


@pytest.fixture(name="engine")
def _engine(clock: Any) -> Any:
    from runflow import Engine  # noqa: PLC0415

    return Engine(clock=clock)


@pytest.fixture(name="recorder")
def _recorder(engine: Any) -> Iterator[Any]:
    from runflow.testing import EventRecorder  # noqa: PLC0415

    recorder = EventRecorder()
    unsubscribe = engine.subscribe(recorder)
    yield recorder
    unsubscribe()


_THREADS = itertools.count(1)


def drop_schema(dsn: str, schema: str) -> None:
    """Drop a PostgreSQL test schema and everything in it."""
    import psycopg  # noqa: PLC0415 - the postgres extra

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def schema_exists(dsn: str, schema: str) -> bool:
    """Whether the PostgreSQL schema exists (something created it)."""
    import psycopg  # noqa: PLC0415 - the postgres extra

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    return row is not None and row[0] > 0


def create_run(engine: Any, **kwargs: Any) -> Any:
    """
    Create a run with the weather tool (keyword arguments override the defaults), on
    a thread of its own: a thread holds one active run at a time (LIFECYCLE R1.3).
    """
    params: dict[str, Any] = {
        "thread_id": f"thread_{next(_THREADS)}",
        "assistant_id": "asst_a",
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "tools": [WEATHER_TOOL],
    }
    params.update(kwargs)
    return engine.create(**params)


def fire(engine: Any, trigger: str, run: Any) -> Any:
    """Call ``engine.<trigger>(run, ...)`` with well-formed arguments."""
    return getattr(engine, trigger)(run, **TRIGGER_KWARGS[trigger])


def drive(engine: Any, status: str, **create_kwargs: Any) -> Any:
    """Create a fresh run and drive it to ``status`` along the shortest path."""
    run = create_run(engine, **create_kwargs)
    for trigger in PATHS[status]:
        run = fire(engine, trigger, run)
    assert run.status == status
    return run


@pytest.fixture(name="drive")
def _drive(engine: Any) -> Callable[..., Any]:
    """``drive(status, **create_kwargs)``: a fresh run of ``engine`` in ``status``."""

    def go(status: str, **create_kwargs: Any) -> Any:
        return drive(engine, status, **create_kwargs)

    return go


@pytest.fixture(name="new_run")
def _new_run(engine: Any) -> Callable[..., Any]:
    """``new_run(**create_kwargs)``: a fresh queued run with the weather tool."""

    def make(**kwargs: Any) -> Any:
        return create_run(engine, **kwargs)

    return make


@pytest.fixture(name="fire")
def _fire(engine: Any) -> Callable[[str, Any], Any]:
    """``fire(trigger, run)``: call the trigger on ``engine`` with well-formed arguments."""

    def go(trigger: str, run: Any) -> Any:
        return fire(engine, trigger, run)

    return go
