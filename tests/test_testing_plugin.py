"""runflow's pytest plugin, run inside pytester sessions like a user's test suite."""

from __future__ import annotations

import importlib.metadata

import openai
import pytest

import runflow.server
import runflow.testing._client

# Loaded once here: pytester's in-process runs then reuse them instead of re-importing.
PRELOADED = (openai, runflow.server, runflow.testing._client)

pytest_plugins = ("pytester",)

INI = """
[pytest]
filterwarnings =
    error
    ignore:The Assistants API is deprecated:DeprecationWarning
"""


class TestRegistration:
    """The plugin is found through the ``pytest11`` entry point."""

    def test_entry_point(self) -> None:
        """``runflow = runflow.testing.pytest_plugin`` in the distribution's metadata."""
        points = importlib.metadata.entry_points(group="pytest11")
        found = {p.name: p.value for p in points if p.dist and p.dist.name == "runflow-engine"}
        assert found == {"runflow": "runflow.testing.pytest_plugin"}

    def test_fixtures_are_listed(self, pytester: pytest.Pytester) -> None:
        """``pytest --fixtures`` shows the plugin's fixtures."""
        result = pytester.runpytest("--fixtures")
        for name in (
            "runflow_clock",
            "runflow_engine",
            "runflow_script",
            "runflow_app",
            "openai_client",
            "async_openai_client",
        ):
            result.stdout.fnmatch_lines([f"{name}*"])

    def test_marker_is_declared(self, pytester: pytest.Pytester) -> None:
        """``--strict-markers`` accepts ``runflow_script``."""
        result = pytester.runpytest("--markers")
        result.stdout.fnmatch_lines(["@pytest.mark.runflow_script(script)*"])


class TestFixtures:
    """The fixtures in a user's tests."""

    def test_manual_mode_and_a_scripted_test(self, pytester: pytest.Pytester) -> None:
        """Without a marker the test drives the engine; with one the script does."""
        pytester.makeini(INI)
        pytester.makepyfile(
            """
            import pytest
            from runflow.testing import FakeClock, Script

            def test_clock_and_engine(runflow_clock, runflow_engine):
                assert isinstance(runflow_clock, FakeClock)
                assert runflow_engine.clock is runflow_clock

            def test_manual(openai_client, runflow_engine, runflow_script):
                assert runflow_script is None
                thread = openai_client.beta.threads.create().id
                run = openai_client.beta.threads.runs.create(thread_id=thread, assistant_id="a")
                runflow_engine.start(run.id)
                runflow_engine.complete(run.id)
                seen = openai_client.beta.threads.runs.retrieve(thread_id=thread, run_id=run.id)
                assert seen.status == "completed"

            @pytest.mark.runflow_script(Script().complete("Hi there."))
            def test_scripted(openai_client):
                thread = openai_client.beta.threads.create().id
                run = openai_client.beta.threads.runs.create_and_poll(
                    thread_id=thread, assistant_id="a"
                )
                assert run.status == "completed"

            @pytest.mark.runflow_script(script={"asst_x": Script().fail("rate_limit_exceeded")})
            def test_keyword_and_mapping(openai_client):
                thread = openai_client.beta.threads.create().id
                run = openai_client.beta.threads.runs.create_and_poll(
                    thread_id=thread, assistant_id="asst_x"
                )
                assert run.status == "failed"
                assert run.last_error.code == "rate_limit_exceeded"
            """
        )
        result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=4)

    def test_script_fixture_override(self, pytester: pytest.Pytester) -> None:
        """A conftest may override ``runflow_script`` for a whole directory."""
        pytester.makeini(INI)
        pytester.makeconftest(
            """
            import pytest
            from runflow.testing import Script

            @pytest.fixture
            def runflow_script():
                return Script().mark_incomplete("max_prompt_tokens")
            """
        )
        pytester.makepyfile(
            """
            def test_incomplete(openai_client):
                thread = openai_client.beta.threads.create().id
                run = openai_client.beta.threads.runs.create_and_poll(
                    thread_id=thread, assistant_id="a"
                )
                assert run.status == "incomplete"
                assert run.incomplete_details.reason == "max_prompt_tokens"
            """
        )
        pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)

    def test_async_client(self, pytester: pytest.Pytester) -> None:
        """``async_openai_client`` works on the test's own event loop."""
        pytester.makeini(INI)
        pytester.makepyfile(
            """
            import asyncio
            import pytest
            from runflow.testing import Script

            @pytest.mark.runflow_script(Script().complete())
            def test_async(async_openai_client):
                async def main():
                    threads = async_openai_client.beta.threads
                    thread = await threads.create()
                    run = await threads.runs.create_and_poll(thread_id=thread.id, assistant_id="a")
                    await async_openai_client.close()
                    return run.status
                assert asyncio.run(main()) == "completed"
            """
        )
        pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)

    def test_failure_shows_the_journal(self, pytester: pytest.Pytester) -> None:
        """A failing test that used the engine shows every run's journal."""
        pytester.makeini(INI)
        pytester.makepyfile(
            """
            def test_fails(runflow_engine):
                run = runflow_engine.create(thread_id="thread_j", assistant_id="asst_j")
                runflow_engine.start(run.id)
                assert False, "on purpose"

            def test_fails_without_engine():
                assert False
            """
        )
        result = pytester.runpytest("-p", "no:cacheprovider")
        result.assert_outcomes(failed=2)
        result.stdout.fnmatch_lines(
            [
                "*runflow journal*",
                "run_* thread=thread_j assistant=asst_j status=in_progress",
                "  #1 t=1700000000 create: - -> queued",
                "  #2 t=1700000000 start: queued -> in_progress",
            ]
        )
        assert result.stdout.str().count("runflow journal") == 1

    def test_plugin_can_be_turned_off(self, pytester: pytest.Pytester) -> None:
        """``-p no:runflow`` removes the fixtures."""
        pytester.makepyfile("def test_x(runflow_engine): pass")
        result = pytester.runpytest("-p", "no:runflow", "-p", "no:cacheprovider")
        result.assert_outcomes(errors=1)


def test_journal_text_without_runs() -> None:
    """An engine without runs says so."""
    from runflow import Engine  # noqa: PLC0415
    from runflow.testing.pytest_plugin import journal_text  # noqa: PLC0415

    assert journal_text(Engine()) == "(no runs)"
