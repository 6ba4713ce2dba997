"""
The ``runflow`` command: ``simulate`` (the main job) and ``diagram``.

This is the only module that configures structlog: on a terminal, human-readable
console lines; with ``--log-format json``, JSON lines; on stderr, at ``--log-level``
(default ``warning``, so runs do not spam). Errors are one short line on stderr:
exit 2 for bad usage (a bad flag, a bad scenario), exit 1 for an operation that was
refused or failed; a traceback only with ``--debug``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

import click
import structlog

import runflow
from runflow._events import RunEvent
from runflow.simulation import (
    BUILTIN_SCENARIOS,
    Scenario,
    ScenarioError,
    Simulation,
    Summary,
    load_scenario,
    render_text,
    sections,
)

__all__ = ["cli", "configure_logging", "main"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MEMORY_STORE = "memory://"

log = structlog.get_logger(__name__)


class UsageFailure(click.ClickException):
    """Bad usage that click cannot see (a bad scenario, a missing extra): exit 2."""

    exit_code = 2


class _Options:
    __slots__ = ("debug",)

    def __init__(self, *, debug: bool) -> None:
        self.debug = debug


class _Group(click.Group):
    """Turns an unexpected exception into one line and exit 1, unless ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as err:
            options = ctx.find_object(_Options)
            if options is None or options.debug:
                raise
            name = type(err).__name__
            msg = f"{name}: {err} (run with --debug for the traceback)"
            raise click.ClickException(msg) from None


def _debugging() -> bool:
    options = click.get_current_context().find_object(_Options)
    return options is not None and options.debug


# --- logging -----------------------------------------------------------------------------------


def configure_logging(
    level: str = "warning", fmt: str = "console", stream: TextIO | None = None
) -> None:
    """
    Configure structlog for the command: console lines or JSON lines on ``stream``.

    Args:
        level: The lowest level written (``debug``… ``critical``).
        fmt: ``console`` (colours on a terminal) or ``json`` (one object a line).
        stream: Where lines go; stderr by default, so stdout holds only results.

    .. versionadded:: 0.1.0
    """
    out = stream if stream is not None else sys.stderr
    renderer: Any
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


# --- the group ---------------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(runflow.__version__, "--version", prog_name="runflow")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="warning",
    show_default=True,
    envvar="RUNFLOW_LOG_LEVEL",
    help="Lowest level of log lines written to stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Human-readable lines (coloured on a terminal) or JSON lines.",
)
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str, debug: bool) -> None:
    """runflow: the exact lifecycle of OpenAI Assistants API runs."""
    ctx.obj = _Options(debug=debug)
    configure_logging(log_level.lower(), log_format)


def main() -> None:
    """The ``runflow`` console script."""
    cli(prog_name="runflow")


# --- simulate ----------------------------------------------------------------------------------


def _check_store(url: str, workers: int) -> None:
    if url.rstrip("/") != MEMORY_STORE.rstrip("/"):
        msg = (
            f"cannot use store {url!r}: durable stores (SQLite, PostgreSQL) are not "
            f"available in this version yet; use {MEMORY_STORE} (the default)"
        )
        raise click.ClickException(msg)
    if workers != 1:
        msg = (
            f"--workers {workers} needs a durable store that worker processes share "
            f"(SQLite or PostgreSQL, not available yet); with {MEMORY_STORE} the "
            "simulation runs in one process: use --workers 1"
        )
        raise click.UsageError(msg)


def _load(scenario: str) -> Scenario:
    try:
        return load_scenario(scenario)
    except ScenarioError as err:
        if _debugging():
            raise
        raise UsageFailure(str(err)) from None


@typing.final
class _EventWriter:
    """Writes each event as one JSON line in the stream shape ``{event, data}``."""

    def __init__(self, out: IO[str]) -> None:
        self._write = out.write
        self._encode = json.JSONEncoder(separators=(",", ":")).encode

    def __call__(self, event: RunEvent) -> None:
        self._write(self._encode(event.to_dict()))
        self._write("\n")


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int, int], object] | None]:
    """A rich progress bar on stderr, or nothing (when stderr is not a terminal)."""
    if not enabled:
        yield None
        return
    from rich.console import Console  # noqa: PLC0415 - only on a terminal
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("runs", total=total)

    def update(done: int, _: int) -> None:
        progress.update(task, completed=done)

    with progress:
        yield update


def _print_table(summary: Summary) -> None:
    """The summary as rich tables on a terminal, as plain text when piped."""
    if not _isatty(sys.stdout):
        click.echo(render_text(summary), nl=False)
        return
    from rich import box  # noqa: PLC0415 - only on a terminal
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    console = Console()
    for section in sections(summary):
        show_header = any(section.columns)
        console.print(Text(section.title, style="bold dim" if section.wall else "bold"))
        table = Table(
            box=box.SIMPLE_HEAD if show_header else None,
            show_edge=False,
            show_header=show_header,
            style="dim" if section.wall else "",
            padding=(0, 1, 0, 2),
        )
        for i, column in enumerate(section.columns):
            label = i == 0 and section.labels
            table.add_column(column, justify="left" if label else "right")
        for row in section.rows:
            table.add_row(*row)
        console.print(table)
        console.print()


@cli.command()
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="How many runs arrive.",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed of the one random generator: the same seed gives the same summary.",
)
@click.option(
    "--scenario",
    default="default",
    show_default=True,
    metavar="NAME|FILE.toml",
    help=f"A built-in scenario ({', '.join(BUILTIN_SCENARIOS)}) or a TOML file.",
)
@click.option(
    "--events",
    "events_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    metavar="FILE.jsonl",
    help='Write every engine event as a JSON line {"event": ..., "data": <run>}.',
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    metavar="FILE.png",
    help="Draw runs per status over time and time to terminal (needs the plot extra).",
)
@click.option(
    "--store",
    default=MEMORY_STORE,
    show_default=True,
    metavar="URL",
    help="Where runs live. Only memory:// in this version.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes; more than 1 needs a durable store.",
)
def simulate(  # noqa: PLR0917 - click passes every option as a parameter
    runs: int,
    seed: int,
    scenario: str,
    events_path: Path | None,
    as_json: bool,
    plot_path: Path | None,
    store: str,
    workers: int,
) -> None:
    """
    Drive runs through the real engine on virtual time and summarize them.

    Simulated minutes pass in microseconds: every run goes through runflow's engine
    (in memory), with arrivals, queue waits, model turns, tool-call rounds, token
    budgets, failures, cancels and late tool outputs drawn from the scenario.
    """
    _check_store(store, workers)
    plot_requested = plot_path is not None
    if plot_requested:
        from runflow.simulation._plot import plot_available  # noqa: PLC0415

        if not plot_available():
            msg = "--plot needs matplotlib: pip install 'runflow-engine[plot]'"
            raise UsageFailure(msg)
    chosen = _load(scenario)
    # a concrete logger, made after configuring: cheaper on every transition
    engine_log = structlog.get_logger("runflow").bind()
    with _progress_bar(runs, _isatty(sys.stderr)) as progress:
        sim = Simulation(chosen, runs=runs, seed=seed, logger=engine_log, progress=progress)
        timeline = None
        if plot_requested:
            from runflow.simulation._plot import StatusTimeline  # noqa: PLC0415

            timeline = StatusTimeline(sim)
            sim.engine.subscribe(timeline)
        log.info("simulation_started", scenario=chosen.name, runs=runs, seed=seed)
        if events_path is not None:
            try:
                events_file = events_path.open("w", encoding="utf-8")
            except OSError as err:
                msg = f"cannot write {str(events_path)!r}: {err.strerror or err}"
                raise click.BadParameter(msg, param_hint="--events") from None
            with events_file:
                sim.engine.subscribe(_EventWriter(events_file))
                summary = sim.run()
        else:
            summary = sim.run()
    log.info(
        "simulation_finished",
        scenario=chosen.name,
        runs=runs,
        transitions=summary.transitions,
        wall_seconds=summary.wall.seconds,
    )
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_table(summary)
    if timeline is not None and plot_path is not None:
        from runflow.simulation._plot import write_plot  # noqa: PLC0415

        try:
            write_plot(timeline, summary, plot_path)
        except OSError as err:
            msg = f"cannot write the plot to {str(plot_path)!r}: {err.strerror or err}"
            raise click.ClickException(msg) from None
        click.echo(f"plot written to {plot_path}", err=True)


# --- diagram -----------------------------------------------------------------------------------

DIAGRAM_FORMATS = ("mermaid", "dot", "svg", "png")


def _graphviz_digraph() -> Any:
    """The lifecycle as a ``graphviz.Digraph``, from the machine the engine really uses."""
    try:
        return runflow.Engine().lifecycle.graphviz()
    except ImportError:
        msg = (
            "--format dot, svg and png need the graphviz Python package "
            "(pip install graphviz); --format mermaid needs nothing"
        )
        raise UsageFailure(msg) from None


def _render_diagram(fmt: str) -> str | bytes:
    if fmt == "mermaid":
        return runflow.lifecycle_diagram()
    graph = _graphviz_digraph()
    if fmt == "dot":
        return str(graph.source)
    graphviz = importlib.import_module("graphviz")
    try:
        return typing.cast("bytes", graph.pipe(format=fmt))
    except graphviz.ExecutableNotFound:
        msg = (
            f"--format {fmt} needs Graphviz's 'dot' program, which is not on PATH "
            "(Debian: apt-get install graphviz); --format dot and mermaid need no program"
        )
        raise click.ClickException(msg) from None


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(DIAGRAM_FORMATS),
    default="mermaid",
    show_default=True,
    help="mermaid needs nothing; dot needs the graphviz package; svg, png also 'dot'.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    metavar="FILE",
    help="Write the diagram here instead of printing it (required for png).",
)
def diagram(fmt: str, output: Path | None) -> None:
    """Print or write the run lifecycle's state diagram, drawn from the real machine."""
    if fmt == "png" and output is None:
        msg = "--format png writes binary data: give --output FILE.png"
        raise click.UsageError(msg)
    drawn = _render_diagram(fmt)
    if output is None:
        text = drawn if isinstance(drawn, str) else drawn.decode("utf-8")
        click.echo(text, nl=not text.endswith("\n"))
        return
    try:
        if isinstance(drawn, str):
            output.write_text(drawn, encoding="utf-8")
        else:
            output.write_bytes(drawn)
    except OSError as err:
        msg = f"cannot write {str(output)!r}: {err.strerror or err}"
        raise click.ClickException(msg) from None
    click.echo(f"{fmt} diagram written to {output}", err=True)


if __name__ == "__main__":  # pragma: no cover - python -m runflow.cli
    main()
