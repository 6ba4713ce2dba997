"""
Tests of ``my_agent.py`` with runflow's pytest plugin: the ``openai_client`` fixture is
the official SDK wired to runflow in-process, and the ``runflow_script`` marker says
what the "model" does. Run it with ``pytest examples/test_my_agent.py`` (or as a
program).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import pytest

from runflow import Engine
from runflow.testing import Script

sys.path.insert(0, str(Path(__file__).resolve().parent))  # my_agent.py sits beside this file
from my_agent import AgentError, ask

pytestmark = pytest.mark.filterwarnings(
    "ignore:The Assistants API is deprecated:DeprecationWarning"
)

WEATHER = {"name": "get_weather", "arguments": {"city": "Paris"}}


@pytest.mark.runflow_script(Script().require_action(WEATHER).complete("It is sunny in Paris."))
def test_answers_after_a_tool_call(openai_client: openai.OpenAI, runflow_engine: Engine) -> None:
    """The agent runs the tool the model asks for and returns the model's answer."""
    assert ask(openai_client, "Weather in Paris?", assistant_id="asst_1") == "It is sunny in Paris."
    (run,) = runflow_engine.runs()
    assert [e.trigger for e in runflow_engine.history(run.id)] == [
        "create",
        "start",
        "require_action",
        "submit_tool_outputs",
        "start",
        "complete",
    ]


@pytest.mark.runflow_script(
    Script().require_action(WEATHER).require_action(WEATHER, polls=2).complete("Still sunny.")
)
def test_answers_two_rounds_of_tool_calls(openai_client: openai.OpenAI) -> None:
    """Two rounds of tool calls, the second after two polls."""
    assert ask(openai_client, "Twice?", assistant_id="asst_1") == "Still sunny."


@pytest.mark.runflow_script(Script().fail("rate_limit_exceeded"))
def test_reports_a_failed_run(openai_client: openai.OpenAI) -> None:
    """A failed run is an AgentError naming the error code."""
    with pytest.raises(AgentError, match="failed: rate_limit_exceeded"):
        ask(openai_client, "Hi", assistant_id="asst_1")


@pytest.mark.runflow_script(Script().require_action(WEATHER).never_answer())
def test_reports_an_expired_run(openai_client: openai.OpenAI) -> None:
    """The model goes silent after the tool call: ten virtual minutes later the run
    has expired, and the agent says so (in milliseconds)."""
    with pytest.raises(AgentError, match="ended expired"):
        ask(openai_client, "Hi", assistant_id="asst_1")


@pytest.mark.runflow_script(Script().complete().http_error(500, on="retrieve"))
def test_a_server_error_reaches_the_caller(openai_client: openai.OpenAI) -> None:
    """An injected 500 on the first poll reaches the agent as the SDK's error."""
    with pytest.raises(openai.InternalServerError):
        ask(openai_client, "Hi", assistant_id="asst_1")


if __name__ == "__main__":
    # a fresh interpreter, so pytest sees this module before anything imports it
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"]
    sys.exit(subprocess.call(command))  # noqa: S603 - this very file
