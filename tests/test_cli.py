"""The ``runflow`` command, driven in-process with click's CliRunner and once for real."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from runflow import ASSISTANTS_RUN, RunObject, lifecycle_diagram
from runflow import cli as cli_module
from runflow.cli import cli
from runflow.simulation import Simulation, load_scenario
from runflow.stores import open_store

SECTION_8 = {(str(t.source), str(t.dest)) for t in ASSISTANTS_RUN.transitions}
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAS_GRAPHVIZ = importlib.util.find_spec("graphviz") is not None
HAS_DOT = any((Path(p) / "dot").exists() for p in os.environ.get("PATH", "").split(os.pathsep))
#: CI installs the diagram extra and Graphviz (.ci/run): there these tests must run.
IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """The command configures structlog globally; put it back for the other tests."""
    configured = structlog.is_configured()
    saved = structlog.get_config()
    yield
    if configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def run(*args: str, **kwargs: Any) -> Result:
    return CliRunner().invoke(cli, list(args), **kwargs)


def before_wall(text: str) -> str:
    """The deterministic part of the plain table: everything before the wall clock."""
    return text[: text.index("Wall clock")]


class TestSimulate:
    def test_plain_table(self) -> None:
        """Piped, the summary is a plain table with every section, the wall clock last."""
        result = run("simulate", "--runs", "300")
        assert result.exit_code == 0, result.output
        out = result.stdout
        for title in (
            "runflow simulate: scenario default, seed 1",
            "Runs by final status",
            "Time to terminal (virtual seconds)",
            "Tool-call rounds",
            "Expired, by the status they expired in",
            "requires_action (waiting for tool outputs)",
            "Incomplete by reason",
            "Failed by code",
            "Cancellations",
            "Calls the engine refused",
        ):
            assert title in out
        wall = out.index("Wall clock")
        assert all(out.index(t) < wall for t in ("Runs by final status", "Failed by code"))
        assert out.rstrip().splitlines()[-1].lstrip().startswith("transitions/s")
        assert "\x1b[" not in out  # no colours or box drawing when piped
        assert result.stderr == ""  # no progress bar, no logs at the default level

    def test_same_seed_same_table(self) -> None:
        """The same seed prints the same table, byte for byte, up to the wall clock."""
        a = run("simulate", "--runs", "400", "--seed", "5", "--scenario", "flaky")
        b = run("simulate", "--runs", "400", "--seed", "5", "--scenario", "flaky")
        c = run("simulate", "--runs", "400", "--seed", "6", "--scenario", "flaky")
        assert before_wall(a.stdout) == before_wall(b.stdout)
        assert before_wall(a.stdout) != before_wall(c.stdout)

    def test_json_schema(self) -> None:
        """--json prints one document with every figure, the wall clock apart."""
        result = run("simulate", "--runs", "500", "--json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert list(doc) == [
            "scenario",
            "seed",
            "runs",
            "virtual_seconds",
            "transitions",
            "statuses",
            "time_to_terminal",
            "tool_rounds",
            "expired_waiting_for_outputs",
            "expired_from",
            "incomplete_by_reason",
            "failed_by_code",
            "cancellations",
            "refused_calls",
            "wall",
        ]
        assert doc["scenario"] == "default"
        assert (doc["seed"], doc["runs"]) == (1, 500)
        assert list(doc["statuses"]) == [
            "completed",
            "incomplete",
            "failed",
            "cancelled",
            "expired",
        ]
        assert sum(s["count"] for s in doc["statuses"].values()) == 500
        assert abs(sum(s["percent"] for s in doc["statuses"].values()) - 100) < 0.1
        assert set(doc["time_to_terminal"]) == {"p50", "p95", "p99", "mean", "max"}
        assert set(doc["tool_rounds"]) == {
            "rounds",
            "calls",
            "runs_with_tools",
            "mean_per_run",
            "max_per_run",
            "histogram",
        }
        assert list(doc["expired_from"]) == [
            "queued",
            "in_progress",
            "requires_action",
            "cancelling",
        ]
        assert doc["expired_waiting_for_outputs"] == doc["expired_from"]["requires_action"]
        assert list(doc["incomplete_by_reason"]) == ["max_prompt_tokens", "max_completion_tokens"]
        assert list(doc["failed_by_code"]) == [
            "server_error",
            "rate_limit_exceeded",
            "invalid_prompt",
        ]
        assert set(doc["cancellations"]) == {
            "requested",
            "accepted",
            "cancelled",
            "cancelled_by_sweep",
            "lost_race",
            "refused",
        }
        assert set(doc["wall"]) == {"seconds", "runs_per_s", "transitions_per_s"}
        again = json.loads(run("simulate", "--runs", "500", "--json").stdout)
        doc.pop("wall")
        again.pop("wall")
        assert doc == again

    def test_events_file(self, tmp_path: Path) -> None:
        """
        --events writes every event in the stream shape; every §8 path is there (at
        the default 10,000 runs: the rarest paths come a few times in 10,000).
        """
        path = tmp_path / "events.jsonl"
        result = run("simulate", "--runs", "10000", "--events", str(path), "--json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        last: dict[str, str] = {}
        pairs: set[tuple[str, str]] = set()
        created = lines = 0
        with path.open(encoding="utf-8") as f:
            for line in f:
                lines += 1
                event = json.loads(line)
                assert set(event) == {"event", "data"}
                run_ = RunObject.from_dict(event["data"])
                if event["event"] == "thread.run.created":
                    created += 1
                    continue
                assert event["event"] == f"thread.run.{run_.status}"
                if run_.id in last:
                    pairs.add((last[run_.id], str(run_.status)))
                last[run_.id] = str(run_.status)
        assert created == 10_000
        assert lines - created == doc["transitions"]
        assert pairs == SECTION_8

    def test_events_file_is_deterministic(self, tmp_path: Path) -> None:
        """The same seed writes the same events file, byte for byte."""
        a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        run("simulate", "--runs", "200", "--events", str(a))
        run("simulate", "--runs", "200", "--events", str(b))
        assert a.read_bytes() == b.read_bytes()

    @pytest.mark.parametrize("name", ["default", "tool-heavy", "flaky", "deadline-pressure"])
    def test_each_builtin(self, name: str) -> None:
        """Every built-in scenario runs from the command line."""
        result = run("simulate", "--runs", "200", "--scenario", name, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["scenario"] == name

    def test_scenario_file(self, tmp_path: Path) -> None:
        """A scenario file is read; its omitted keys take the defaults."""
        path = tmp_path / "quiet.toml"
        path.write_text("[failures]\nprobability = 0\n[cancellations]\nprobability = 0\n")
        result = run("simulate", "--runs", "300", "--scenario", str(path), "--json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["scenario"] == "quiet"
        assert doc["statuses"]["failed"]["count"] == 0
        assert doc["cancellations"]["requested"] == 0

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("[tools\n", "not valid TOML"),
            ("[tools]\nlatancy = 2\n", "tools.latancy: unknown key; did you mean 'latency'? ("),
            ("foo = 1\n", "foo: unknown key (known here: name, "),
            ("[tools]\nmax_rounds = 'many'\n", "tools.max_rounds: expected an integer"),
        ],
    )
    def test_bad_scenario(self, tmp_path: Path, text: str, expected: str) -> None:
        """A bad scenario: one line naming file and key on stderr, exit 2, no traceback."""
        path = tmp_path / "bad.toml"
        path.write_text(text)
        result = run("simulate", "--scenario", str(path))
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.startswith(f"Error: {path}")
        assert expected in result.stderr
        assert "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1

    def test_unknown_scenario_name(self) -> None:
        """An unknown built-in name lists the built-ins."""
        result = run("simulate", "--scenario", "busy")
        assert result.exit_code == 2
        assert "default, tool-heavy, flaky, deadline-pressure" in result.stderr

    def test_debug_shows_the_error(self, tmp_path: Path) -> None:
        """With --debug the scenario error propagates (and so its traceback)."""
        path = tmp_path / "bad.toml"
        path.write_text("oops = 1\n")
        result = run("--debug", "simulate", "--scenario", str(path))
        assert result.exit_code != 0
        assert type(result.exception).__name__ == "ScenarioError"

    @pytest.mark.parametrize("args", [["--runs", "0"], ["--runs", "x"], ["--frobnicate"]])
    def test_bad_flags(self, args: list[str]) -> None:
        """Bad flags are usage errors: exit 2."""
        result = run("simulate", *args)
        assert result.exit_code == 2
        assert "Usage:" in result.stderr

    @pytest.mark.parametrize("store", ["memory://", "sqlite://:memory:"])
    def test_workers_need_a_shared_store(self, store: str) -> None:
        """Worker processes need a store they share: a usage error, exit 2."""
        result = run("simulate", "--workers", "3", "--store", store)
        assert result.exit_code == 2
        assert "--workers 3 needs a store that worker processes share" in result.stderr
        assert run("simulate", "--runs", "10", "--workers", "0").exit_code == 0

    @pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the plot extra) not installed")
    def test_plot(self, tmp_path: Path) -> None:
        """--plot writes a PNG."""
        path = tmp_path / "sim.png"
        result = run("simulate", "--runs", "300", "--plot", str(path))
        assert result.exit_code == 0, result.output
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert f"plot written to {path}" in result.stderr

    def test_plot_without_matplotlib(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Without matplotlib, --plot says what to install: exit 2, before simulating."""
        from runflow.simulation import _plot  # noqa: PLC0415

        monkeypatch.setattr(_plot, "plot_available", lambda: False)
        result = run("simulate", "--plot", str(tmp_path / "x.png"))
        assert result.exit_code == 2
        assert "pip install 'runflow-engine[plot]'" in result.stderr
        assert not (tmp_path / "x.png").exists()

    def test_write_plot_without_matplotlib(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """write_plot itself refuses clearly when matplotlib cannot be imported."""
        from runflow.simulation import _plot  # noqa: PLC0415

        sim = Simulation(load_scenario("default"), runs=10)
        summary = sim.run()
        monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
        with pytest.raises(_plot.PlotUnavailableError, match="runflow-engine"):
            _plot.write_plot(_plot.StatusTimeline(sim), summary, tmp_path / "x.png")

    @pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the plot extra) not installed")
    def test_plot_path_not_writable(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A plot file whose directory is missing is refused before simulating (exit 2)."""
        simulated: list[object] = []
        monkeypatch.setattr(cli_module, "_simulate", lambda *a, **k: simulated.append(a))
        path = tmp_path / "no" / "p.png"
        result = run("simulate", "--runs", "5", "--plot", str(path))
        assert result.exit_code == 2
        assert f"Invalid value for --plot: cannot write '{path}': no directory" in result.stderr
        assert simulated == []

    def test_events_path_not_writable(self, tmp_path: Path) -> None:
        """An events file that cannot be opened is a usage error."""
        result = run("simulate", "--runs", "5", "--events", str(tmp_path / "no" / "e.jsonl"))
        assert result.exit_code == 2
        assert "--events" in result.stderr

    def test_rich_table_on_a_terminal(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a terminal the summary is drawn with rich, the same sections in order."""
        monkeypatch.setattr(cli_module, "_isatty", lambda stream: stream is sys.stdout)
        result = run("simulate", "--runs", "100")
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert out.index("Runs by final status") < out.index("Wall clock")
        assert "─" in out  # rich's rules under the headers

    def test_progress_bar_on_a_terminal(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The progress bar is a rich bar on stderr when enabled, nothing otherwise."""
        with cli_module._progress_bar(10, enabled=False) as update:
            assert update is None
        with cli_module._progress_bar(10, enabled=True) as update:
            assert update is not None
            update(10, 10)

    def test_unexpected_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unexpected error is one line and exit 1; --debug lets it through."""

        def boom(self: Simulation) -> None:
            msg = "boom"
            raise RuntimeError(msg)

        monkeypatch.setattr(Simulation, "run", boom)
        result = run("simulate", "--runs", "5")
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            "Error: RuntimeError: boom (run with --debug for the traceback)"
        )
        debug = run("--debug", "simulate", "--runs", "5")
        assert isinstance(debug.exception, RuntimeError)


def postgres_url() -> Iterator[str]:
    """A PostgreSQL store URL on a fresh schema (dropped afterwards); skips without a DSN."""
    dsn = os.environ.get("RUNFLOW_POSTGRES_DSN", "")
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail("RUNFLOW_POSTGRES_DSN is not set: CI must run the PostgreSQL tests")
        pytest.skip("RUNFLOW_POSTGRES_DSN is not set")
    import psycopg  # noqa: PLC0415 - the postgres extra

    schema = f"runflow_cli_{uuid.uuid4().hex[:12]}"
    yield f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(name="pg_url")
def _pg_url() -> Iterator[str]:
    yield from postgres_url()


def summary_of(result: Result) -> dict[str, Any]:
    """The deterministic part of a --json summary."""
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    doc.pop("wall")
    return doc


def stored_runs(url: str) -> list[RunObject]:
    store = open_store(url)
    try:
        return [s.record for s in store.runs()]
    finally:
        store.close()


def check_events(path: Path, runs: int, transitions: int) -> None:
    """Every line a wire event; every run created once; one line per transition."""
    created = lines = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            lines += 1
            event = json.loads(line)
            RunObject.from_dict(event["data"])
            created += event["event"] == "thread.run.created"
    assert created == runs
    assert lines - created == transitions


class TestSimulateStores:
    def test_sqlite_same_summary_and_events(self, tmp_path: Path) -> None:
        """On SQLite, the summary and the events file are the in-memory ones, byte for byte."""
        url = f"sqlite:///{tmp_path / 'sim.db'}"
        mem_events, db_events = tmp_path / "mem.jsonl", tmp_path / "db.jsonl"
        memory = run("simulate", "--runs", "150", "--json", "--events", str(mem_events))
        stored = run(
            "simulate", "--runs", "150", "--json", "--store", url, "--events", str(db_events)
        )
        assert summary_of(stored) == summary_of(memory)
        assert db_events.read_bytes() == mem_events.read_bytes()
        runs = stored_runs(url)
        assert len(runs) == 150
        assert all(r.status.is_terminal for r in runs)
        assert {r.id[:11] for r in runs} == {"run_sim0000"}

    def test_next_simulation_takes_the_next_tag(self, tmp_path: Path) -> None:
        """A second simulation into one store gets fresh ids; its summary is unchanged."""
        url = f"sqlite:///{tmp_path / 'sim.db'}"
        first = run("simulate", "--runs", "40", "--json", "--store", url)
        second = run("simulate", "--runs", "40", "--json", "--store", url)
        assert summary_of(first) == summary_of(second)
        runs = stored_runs(url)
        assert len(runs) == 80
        assert sorted({r.id[:11] for r in runs}) == ["run_sim0000", "run_sim0001"]

    def test_sqlite_workers_same_summary(self, tmp_path: Path) -> None:
        """Two worker processes on SQLite: the in-memory summary; the journal checks out."""
        url = f"sqlite:///{tmp_path / 'sim.db'}"
        events = tmp_path / "events.jsonl"
        memory = run("simulate", "--runs", "120", "--scenario", "flaky", "--json")
        workers = run(
            "simulate",
            "--runs",
            "120",
            "--scenario",
            "flaky",
            "--json",
            "--store",
            url,
            "--workers",
            "2",
            "--events",
            str(events),
        )
        doc = summary_of(workers)
        assert doc == summary_of(memory)
        check_events(events, 120, doc["transitions"])

    def test_postgres_workers_same_summary(self, pg_url: str, tmp_path: Path) -> None:
        """In-process and with three workers on PostgreSQL: the in-memory summary."""
        memory = summary_of(run("simulate", "--runs", "120", "--json"))
        assert summary_of(run("simulate", "--runs", "120", "--json", "--store", pg_url)) == memory
        events = tmp_path / "events.jsonl"
        doc = summary_of(
            run(
                "simulate",
                "--runs",
                "120",
                "--json",
                "--store",
                pg_url,
                "--workers",
                "3",
                "--events",
                str(events),
            )
        )
        assert doc == memory
        check_events(events, 120, doc["transitions"])

    def test_window(self, tmp_path: Path) -> None:
        """--window changes the draws (like a seed), the same way in every mode."""
        url = f"sqlite:///{tmp_path / 'sim.db'}"
        narrow = summary_of(run("simulate", "--runs", "150", "--json"))
        wide = summary_of(run("simulate", "--runs", "150", "--json", "--window", "30"))
        assert wide != narrow
        assert sum(s["count"] for s in wide["statuses"].values()) == 150
        stored = run("simulate", "--runs", "150", "--json", "--window", "30", "--store", url)
        assert summary_of(stored) == wide
        assert run("simulate", "--window", "0").exit_code == 2

    def test_unreachable_store(self) -> None:
        """An unreachable store: one line naming it, exit 1, before any output."""
        url = "postgresql://postgres@127.0.0.1:1/test"
        result = run("simulate", "--runs", "10", "--store", url)
        assert result.exit_code == 1
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"Error: store {url}: ")

    def test_bad_store_url(self) -> None:
        """A URL no store takes: exit 1, one line."""
        result = run("simulate", "--runs", "10", "--store", "mysql://db")
        assert result.exit_code == 1
        assert "unsupported store URL scheme 'mysql'" in result.stderr
        assert len(result.stderr.splitlines()) == 1

    @pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the plot extra) not installed")
    def test_plot_from_the_journal(self, tmp_path: Path) -> None:
        """On a store, --plot draws from the events read back from the journal."""
        path = tmp_path / "sim.png"
        url = f"sqlite:///{tmp_path / 'sim.db'}"
        result = run("simulate", "--runs", "100", "--store", url, "--plot", str(path))
        assert result.exit_code == 0, result.output
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    def test_terminal_note(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a terminal, the command says where the runs were stored, under which ids."""
        monkeypatch.setattr(cli_module, "_isatty", lambda stream: stream is sys.stderr)
        url = f"sqlite:///{tmp_path / 'sim.db'}"
        result = run("simulate", "--runs", "20", "--json", "--store", url)
        assert result.exit_code == 0, result.output
        assert f"20 runs stored in {url} as run_sim0000*" in result.stderr


class TestLogging:
    def test_json_log_lines(self) -> None:
        """--log-format json writes JSON lines to stderr; stdout keeps only the result."""
        result = run("--log-format", "json", "--log-level", "info", "simulate", "--runs", "20")
        assert result.exit_code == 0, result.output
        events = [json.loads(line) for line in result.stderr.splitlines()]
        names = [e["event"] for e in events]
        assert names == ["simulation_started", "simulation_finished"]
        assert events[0]["level"] == "info"
        assert events[0]["scenario"] == "default"
        assert "timestamp" in events[0]
        assert "Runs by final status" in result.stdout

    def test_debug_level_logs_every_transition(self) -> None:
        """At debug level the engine's run_transitioned events come through."""
        result = run("--log-format", "json", "--log-level", "debug", "simulate", "--runs", "3")
        assert result.exit_code == 0, result.output
        names = [json.loads(line)["event"] for line in result.stderr.splitlines()]
        assert names.count("run_transitioned") >= 3 * 3

    def test_console_log_lines(self) -> None:
        """The console format is human-readable, without colours when not a terminal."""
        result = run("--log-level", "INFO", "simulate", "--runs", "5")
        assert result.exit_code == 0, result.output
        assert "simulation_started" in result.stderr
        assert "\x1b[" not in result.stderr

    def test_default_is_quiet(self) -> None:
        """The default level is warning: a simulation writes no log lines."""
        assert run("simulate", "--runs", "50").stderr == ""


class TestDiagram:
    def test_mermaid(self) -> None:
        """The default format prints the engine's Mermaid diagram."""
        result = run("diagram")
        assert result.exit_code == 0
        assert result.stdout == lifecycle_diagram()

    def test_mermaid_to_file(self, tmp_path: Path) -> None:
        """--output writes the diagram to a file."""
        path = tmp_path / "lifecycle.mmd"
        result = run("diagram", "--output", str(path))
        assert result.exit_code == 0
        assert path.read_text() == lifecycle_diagram()

    @pytest.mark.skipif(
        not HAS_GRAPHVIZ and not IN_CI, reason="the graphviz Python package is not installed"
    )
    def test_dot(self) -> None:
        """--format dot prints DOT drawn by transitions from the real machine."""
        result = run("diagram", "--format", "dot")
        assert result.exit_code == 0, result.output
        dot = result.stdout
        assert dot.startswith('digraph "assistants.run"')
        for t in ASSISTANTS_RUN.transitions:
            assert f"{t.source} -> {t.dest}" in dot
        for status in ASSISTANTS_RUN.terminal:
            assert f"{status} [peripheries=2]" in dot

    def test_graphviz_package_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the graphviz package, dot/svg/png say what to install: exit 2."""
        monkeypatch.setitem(sys.modules, "graphviz", None)
        result = run("diagram", "--format", "dot")
        assert result.exit_code == 2
        assert "pip install graphviz" in result.stderr

    @pytest.mark.skipif(
        not HAS_GRAPHVIZ and not IN_CI, reason="the graphviz Python package is not installed"
    )
    def test_dot_program_missing(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Without Graphviz's dot program, svg is refused in one line: exit 1."""
        monkeypatch.setenv("PATH", str(tmp_path))
        result = run("diagram", "--format", "svg")
        assert result.exit_code == 1
        assert "needs Graphviz's 'dot' program" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    def test_png_needs_output(self) -> None:
        """PNG is binary: it is only written to a file."""
        result = run("diagram", "--format", "png")
        assert result.exit_code == 2
        assert "--output" in result.stderr

    @pytest.mark.skipif(
        not (HAS_GRAPHVIZ and HAS_DOT) and not IN_CI,
        reason="needs the graphviz package and Graphviz's dot program",
    )
    def test_svg_and_png(self, tmp_path: Path) -> None:
        """With Graphviz installed, svg prints and png is written."""
        svg = run("diagram", "--format", "svg")
        assert svg.exit_code == 0
        assert "<svg" in svg.stdout
        png = tmp_path / "lifecycle.png"
        assert run("diagram", "--format", "png", "-o", str(png)).exit_code == 0
        assert png.read_bytes().startswith(b"\x89PNG")


class TestCommand:
    def test_version_and_help(self) -> None:
        """--version and --help work."""
        assert "runflow, version" in run("--version").stdout
        out = run("--help").stdout
        assert "simulate" in out
        assert "diagram" in out

    def test_real_subprocess(self, tmp_path: Path) -> None:
        """The installed command runs for real: JSON out, exit 0; a bad flag exits 2."""
        script = Path(sys.executable).with_name("runflow")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "runflow.cli"]
        done = subprocess.run(  # noqa: S603 - our own command
            [*command, "simulate", "--runs", "200", "--json"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["runs"] == 200
        assert done.stderr == ""
        bad = subprocess.run(  # noqa: S603
            [*command, "simulate", "--scenario", "nope"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            timeout=120,
        )
        assert bad.returncode == 2
        assert "Traceback" not in bad.stderr

    def test_worker_processes_log(self, tmp_path: Path) -> None:
        """Worker processes log like the command: JSON lines on stderr, with their name."""
        script = Path(sys.executable).with_name("runflow")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "runflow.cli"]
        url = f"sqlite:///{tmp_path / 'sim.db'}"
        done = subprocess.run(  # noqa: S603 - our own command
            [
                *command,
                "--log-format",
                "json",
                "--log-level",
                "info",
                "simulate",
                "--runs",
                "30",
                "--json",
                "--store",
                url,
                "--workers",
                "2",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["runs"] == 30
        events = [json.loads(line) for line in done.stderr.splitlines()]
        names = [e["event"] for e in events]
        assert names[0] == "simulation_started"
        assert names[-1] == "simulation_finished"
        assert events[0]["store"] == url
        assert events[0]["workers"] == 2
        started = sorted(e["worker"] for e in events if e["event"] == "simulation_worker_started")
        stopped = sorted(e["worker"] for e in events if e["event"] == "simulation_worker_stopped")
        assert started == stopped == ["sim-worker-1", "sim-worker-2"]
