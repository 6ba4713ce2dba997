"""
runflow's pytest plugin, registered through the ``pytest11`` entry point: on whenever
runflow is installed (``-p no:runflow`` turns it off).

Fixtures:

- ``runflow_clock``: a :class:`~runflow.testing.FakeClock`;
- ``runflow_engine``: an :class:`~runflow.Engine` on that clock;
- ``runflow_script``: the script the clients play: the ``runflow_script`` marker's
  argument, else None (manual mode: the test drives ``runflow_engine``). Override the
  fixture to choose one for a whole module or directory;
- ``runflow_app``: :func:`runflow.server.create_app` over the engine and script;
- ``openai_client`` / ``async_openai_client``: the official SDK's client wired to the
  app in-process (no socket, no network).

A failing test that used ``runflow_engine`` shows each run's journal in its report
(section "runflow journal").

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from runflow.testing._clock import FakeClock

if TYPE_CHECKING:
    import openai

    from runflow._engine import Engine
    from runflow.server._app import RunsApp

__all__ = [
    "async_openai_client",
    "journal_text",
    "openai_client",
    "runflow_app",
    "runflow_clock",
    "runflow_engine",
    "runflow_script",
]

_MARKER = "runflow_script"


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(script): the script runflow's openai_client fixtures play (a "
        "runflow.testing.Script, an assistant id -> Script mapping, a ScriptMap or a "
        "function of the run); without it, manual mode",
    )


@pytest.fixture
def runflow_clock() -> FakeClock:
    """A :class:`~runflow.testing.FakeClock` at 2023-11-14T22:13:20Z."""
    return FakeClock()


@pytest.fixture
def runflow_engine(runflow_clock: FakeClock) -> Iterator[Engine]:
    """An engine on ``runflow_clock`` with an in-memory store."""
    from runflow._engine import Engine  # noqa: PLC0415 - plugin import stays light

    with Engine(clock=runflow_clock) as engine:
        yield engine


@pytest.fixture
def runflow_script(request: pytest.FixtureRequest) -> Any:
    """The ``runflow_script`` marker's script (the closest marker wins), else None."""
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return None
    if marker.args:
        return marker.args[0]
    return marker.kwargs.get("script")


@pytest.fixture
def runflow_app(runflow_engine: Engine, runflow_script: Any) -> Iterator[RunsApp]:
    """The runs API over ``runflow_engine``, playing ``runflow_script``."""
    from runflow.server._app import create_app  # noqa: PLC0415

    app = create_app(runflow_engine, runflow_script)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def openai_client(runflow_app: RunsApp) -> Iterator[openai.OpenAI]:
    """An ``openai.OpenAI`` wired to ``runflow_app`` in-process."""
    from runflow.testing._client import openai_client as make  # noqa: PLC0415

    client = make(runflow_app)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def async_openai_client(runflow_app: RunsApp) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` wired to ``runflow_app`` in-process (the app runs on
    the test's event loop)."""
    from runflow.testing._client import async_openai_client as make  # noqa: PLC0415

    return make(runflow_app)


def journal_text(engine: Engine) -> str:
    """Every run of ``engine`` and its journal, one transition a line."""
    lines: list[str] = []
    for run in engine.runs():
        lines.append(
            f"{run.id} thread={run.thread_id} assistant={run.assistant_id} "
            f"status={run.status.value}"
        )
        for entry in engine.history(run.id):
            before = entry.from_status.value if entry.from_status is not None else "-"
            who = f" worker={entry.worker}" if entry.worker else ""
            lines.append(
                f"  #{entry.sequence} t={entry.at} {entry.trigger}: "
                f"{before} -> {entry.to_status.value}{who}"
            )
    return "\n".join(lines) if lines else "(no runs)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any, None]:
    """Add the journal of ``runflow_engine``'s runs to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    engine = funcargs.get("runflow_engine")
    if engine is None:
        return
    try:
        text = journal_text(engine)
    except Exception as error:  # noqa: BLE001 - a report must never fail
        text = f"(journal unavailable: {error!r})"
    report.sections.append(("runflow journal", text))
