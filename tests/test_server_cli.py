"""``runflow serve`` (runflow.server._cli): options, scenarios, keys, binding, stopping."""

from __future__ import annotations

import socket
import subprocess
import sys

import click
import openai
import pytest
from click.testing import CliRunner

from runflow.server import _cli
from runflow.server._cli import SCENARIO_KEY, VirtualClock, scripts_for, serve
from runflow.testing import SCENARIOS, Script, ScriptMap
from tests.serving import ROOT, serving

#: For ``--scenario tests.test_server_cli:CUSTOM`` (module:attribute form).
CUSTOM = Script().fail("invalid_prompt")


class TestScenarios:
    """``--scenario`` values."""

    @pytest.fixture(autouse=True)
    def _importable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``tests.test_server_cli`` imports by name, however pytest was started."""
        monkeypatch.syspath_prepend(str(ROOT))

    def test_default_is_a_canned_reply(self) -> None:
        """No option: every run completes with the canned reply; metadata may pick."""
        source = scripts_for([])
        assert isinstance(source, ScriptMap)
        assert source.default == SCENARIOS["reply"]
        assert source.metadata == {SCENARIO_KEY: dict(SCENARIOS)}

    def test_names_and_assistants(self) -> None:
        """``NAME`` sets the default; ``ASSISTANT_ID=NAME`` one assistant's."""
        source = scripts_for(["fail", "asst_t=tool-call"])
        assert isinstance(source, ScriptMap)
        assert source.default == SCENARIOS["fail"]
        assert source.assistants == {"asst_t": SCENARIOS["tool-call"]}

    def test_module_attribute(self) -> None:
        """``module:attribute`` loads a script source of one's own."""
        source = scripts_for(["tests.test_server_cli:CUSTOM"])
        assert isinstance(source, ScriptMap)
        assert source.default is CUSTOM

    @pytest.mark.parametrize(
        "values",
        [
            ["nope"],
            ["no.such.module:X"],
            ["tests.test_server_cli:MISSING"],
            ["a=tests.test_server_cli:ROOT"],
        ],
    )
    def test_refused(self, values: list[str]) -> None:
        """Unknown names and unloadable or wrong attributes are bad parameters."""
        with pytest.raises(click.BadParameter):
            scripts_for(values)

    def test_custom_source_alone(self) -> None:
        """A custom non-script source cannot be mixed with per-assistant scenarios."""
        assert scripts_for(["tests.test_server_cli:scripts_for"]) is scripts_for
        with pytest.raises(click.BadParameter, match="cannot be combined"):
            scripts_for(["tests.test_server_cli:scripts_for", "a=fail"])


class TestVirtualClock:
    """Real time plus a virtual offset."""

    def test_advance(self) -> None:
        """Jumps forward by whole seconds, never back."""
        clock = VirtualClock()
        before = clock.now()
        assert clock.advance(600) >= before + 600
        assert "offset=600" in repr(clock)
        with pytest.raises(ValueError, match="whole seconds"):
            clock.advance(-1)


class TestCommand:
    """The click command, run in this process with uvicorn stubbed out."""

    def test_help(self) -> None:
        """``--help`` lists the options and the scenario names."""
        result = CliRunner().invoke(serve, ["--help"])
        assert result.exit_code == 0
        for word in ("--host", "--port", "--scenario", "--api-key", "--exit-after", "reply"):
            assert word in result.output

    def test_binds_loopback_and_warns_otherwise(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """127.0.0.1 by default; a non-loopback address is announced with a warning."""
        import uvicorn  # noqa: PLC0415

        monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
        result = CliRunner().invoke(serve, ["--port", "0"])
        assert result.exit_code == 0, result.output
        assert "listening on http://127.0.0.1:" in result.output
        assert "warning" not in result.output
        monkeypatch.setattr(_cli, "_is_loopback", lambda host: False)
        result = CliRunner().invoke(serve, ["--port", "0"])
        assert "warning: binding 127.0.0.1" in result.output
        assert "no --api-key set" in result.output

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("x", False)],  # noqa: S104
    )
    def test_is_loopback(self, host: str, loopback: bool) -> None:
        """Loopback addresses by name and number."""
        assert _cli._is_loopback(host) is loopback

    def test_port_in_use(self) -> None:
        """A port that cannot be bound is a clean error."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = CliRunner().invoke(serve, ["--port", str(port)])
        assert result.exit_code != 0
        assert f"cannot bind 127.0.0.1:{port}" in result.output


class TestServing:
    """The real server in a subprocess, over a loopback socket."""

    def test_api_key_from_the_environment(self) -> None:
        """``RUNFLOW_API_KEY`` requires the key: a wrong one is the SDK's
        AuthenticationError, the right one works."""
        with serving(env={"RUNFLOW_API_KEY": "sk-runflow-ci"}) as url:
            with openai.OpenAI(api_key="sk-wrong", base_url=url, max_retries=0) as wrong:
                with pytest.raises(openai.AuthenticationError) as caught:
                    wrong.beta.threads.create()
                assert caught.value.code == "invalid_api_key"
            with openai.OpenAI(api_key="sk-runflow-ci", base_url=url, max_retries=0) as right:
                thread = right.beta.threads.create()
                run = right.beta.threads.runs.create_and_poll(
                    thread_id=thread.id, assistant_id="asst_a"
                )
                assert run.status == "completed"

    def test_metadata_picks_a_scenario(self) -> None:
        """``metadata={"runflow_scenario": NAME}`` plays that scenario for one run."""
        with (
            serving("--scenario", "tests.test_server_cli:CUSTOM") as url,
            openai.OpenAI(api_key="k", base_url=url, max_retries=0) as client,
        ):
            runs = client.beta.threads.runs
            thread = client.beta.threads.create().id
            run = runs.create_and_poll(thread_id=thread, assistant_id="a")
            assert run.last_error is not None
            assert run.last_error.code == "invalid_prompt"
            other = client.beta.threads.create().id
            picked = runs.create_and_poll(
                thread_id=other, assistant_id="a", metadata={SCENARIO_KEY: "incomplete"}
            )
            assert picked.status == "incomplete"

    def test_stops_by_itself(self) -> None:
        """``--exit-after`` ends the process cleanly."""
        done = subprocess.run(
            [sys.executable, "-m", "runflow.server", "--port", "0", "--exit-after", "0.5"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        assert "listening on http://127.0.0.1:" in done.stdout
