"""
The ``runflow`` command: ``simulate`` (the main job), ``diagram``, and ``runs`` (the
operations on a store: ``ls``, ``show``, ``history``, ``cancel``, ``sweep``).

This is the only module that configures structlog: on a terminal, human-readable
console lines; with ``--log-format json``, JSON lines; on stderr, at ``--log-level``
(default ``warning``, so runs do not spam). Errors are one short line on stderr:
exit 2 for bad usage (a bad flag, a bad scenario), exit 1 for an operation that was
refused or failed (the engine's message, or one line naming a store that cannot be
used); a traceback only with ``--debug``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
import typing
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import click
import structlog

import runflow
from runflow._engine import DEFAULT_CANCEL_GRACE, Engine
from runflow._events import RunEvent
from runflow._model import RunStatus
from runflow.exceptions import RunflowError, StoreError
from runflow.server._cli import serve
from runflow.simulation import (
    BUILTIN_SCENARIOS,
    Scenario,
    ScenarioError,
    Simulation,
    Summary,
    load_scenario,
    render_text,
    sections,
    shared_store_url,
)
from runflow.stores import JournalEntry, open_store

__all__ = ["cli", "configure_logging", "main"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MEMORY_STORE = "memory://"
#: The environment variable ``runflow runs --store`` falls back on.
STORE_ENV = "RUNFLOW_STORE"

log = structlog.get_logger(__name__)


class UsageFailure(click.ClickException):
    """Bad usage that click cannot see (a bad scenario, a missing extra): exit 2."""

    exit_code = 2


class _Options:
    __slots__ = ("debug", "log_format", "log_level")

    def __init__(self, *, debug: bool, log_level: str = "warning", log_format: str = "console"):
        self.debug = debug
        self.log_level = log_level
        self.log_format = log_format


class _Group(click.Group):
    """
    Turns an error into one line and exit 1, unless ``--debug``: a runflow error
    (refused, not found, store failed) with its own message, anything else with its
    type and a hint.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as err:
            options = ctx.find_object(_Options)
            if options is None or options.debug:
                raise
            if isinstance(err, RunflowError):
                raise click.ClickException(error_line(err)) from None
            name = type(err).__name__
            msg = f"{name}: {err} (run with --debug for the traceback)"
            raise click.ClickException(" ".join(msg.split())) from None


def error_line(err: RunflowError) -> str:
    """
    A runflow error as one line: its message (OpenAI's wording where OpenAI has
    one), prefixed with the store's URL when a store error does not name it.
    """
    msg = str(err)
    if isinstance(err, StoreError) and err.url and err.url not in msg:
        msg = f"store {err.url}: {msg}"
    return " ".join(msg.split())


def shown_url(url: str) -> str:
    """``url`` with the password of its user part, if any, replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = f"{user}:***@{host}{port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # a malformed port: show nothing of the user part
        return url.split("://", 1)[0] + "://***"


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
        logger_factory=structlog.WriteLoggerFactory(
            file=out
        ),  # one write a line: processes share stderr
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
    ctx.obj = _Options(debug=debug, log_level=log_level.lower(), log_format=log_format)
    configure_logging(log_level.lower(), log_format)


cli.add_command(serve)


def main() -> None:
    """The ``runflow`` console script."""
    cli(prog_name="runflow")


# --- simulate ----------------------------------------------------------------------------------


def _is_memory(url: str) -> bool:
    scheme, sep, rest = url.partition("://")
    return bool(sep) and scheme.lower() == "memory" and not rest.strip("/")


def _check_workers(url: str, workers: int) -> None:
    if workers and not shared_store_url(url):
        where = "in memory" if _is_memory(url) else f"at {shown_url(url)}"
        msg = (
            f"--workers {workers} needs a store that worker processes share: "
            "--store sqlite:///FILE.db or --store postgresql://...; the store "
            f"{where} lives in one process (use --workers 0, the default)"
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
    help="Where runs live: memory://, sqlite:///FILE.db or postgresql://...",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes driving the runs (needs a SQLite file or PostgreSQL); 0: this process.",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Virtual seconds one round of engine calls spans (wider: more calls for the "
    "workers to make at once; changes the draws, like another seed).",
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
    window: int,
) -> None:
    """
    Drive runs through the real engine on virtual time and summarize them.

    Simulated minutes pass in microseconds: every run goes through runflow's engine,
    with arrivals, queue waits, model turns, tool-call rounds, token budgets,
    failures, cancels and late tool outputs drawn from the scenario. Runs live in
    memory unless --store names a database; --workers N drives them from N
    processes sharing it. The summary depends on the scenario, runs, seed and
    window only: not on the store, not on the workers.
    """
    _check_workers(store, workers)
    if plot_path is not None:
        from runflow.simulation._plot import plot_available  # noqa: PLC0415

        if not plot_available():
            msg = "--plot needs matplotlib: pip install 'runflow-engine[plot]'"
            raise UsageFailure(msg)
        _check_writable_dir(plot_path, "--plot")
    chosen = _load(scenario)
    events_file = _open_events(events_path)
    try:
        summary, timeline, tag = _simulate(
            chosen,
            runs=runs,
            seed=seed,
            store=store,
            workers=workers,
            window=window,
            events=events_file,
            plot=plot_path is not None,
        )
    finally:
        if events_file is not None:
            events_file.close()
    log.info(
        "simulation_finished",
        scenario=chosen.name,
        runs=runs,
        transitions=summary.transitions,
        wall_seconds=summary.wall.seconds,
        run_ids=f"run_sim{tag:04d}*",
    )
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_table(summary)
    if not _is_memory(store) and _isatty(sys.stderr):
        click.echo(f"{runs} runs stored in {shown_url(store)} as run_sim{tag:04d}*", err=True)
    if timeline is not None and plot_path is not None:
        from runflow.simulation._plot import write_plot  # noqa: PLC0415

        try:
            write_plot(timeline, summary, plot_path)
        except OSError as err:
            msg = f"cannot write the plot to {str(plot_path)!r}: {err.strerror or err}"
            raise click.ClickException(msg) from None
        click.echo(f"plot written to {plot_path}", err=True)


def _simulate(
    chosen: Scenario,
    *,
    runs: int,
    seed: int,
    store: str,
    workers: int,
    window: int,
    events: IO[str] | None,
    plot: bool,
) -> tuple[Summary, Any, int]:
    """Run the simulation; return its summary, its status timeline (or None) and tag."""
    in_memory = _is_memory(store)
    options = click.get_current_context().find_object(_Options)
    init = None
    if workers and options is not None:
        init = functools.partial(configure_logging, options.log_level, options.log_format)
    # a concrete logger, made after configuring: cheaper on every transition
    engine_log = structlog.get_logger("runflow").bind()
    with (
        _progress_bar(runs, _isatty(sys.stderr)) as progress,
        Simulation(
            chosen,
            runs=runs,
            seed=seed,
            logger=engine_log,
            progress=progress,
            store=None if in_memory else store,
            workers=workers,
            worker_init=init,
            window=window,
        ) as sim,
    ):
        timeline = None
        if plot:
            from runflow.simulation._plot import StatusTimeline  # noqa: PLC0415

            timeline = StatusTimeline(sim)
        writer = None if events is None else _EventWriter(events)
        if in_memory:  # events as they happen, in this process
            if timeline is not None:
                sim.engine.subscribe(timeline)
            if writer is not None:
                sim.engine.subscribe(writer)
        log.info(
            "simulation_started",
            scenario=chosen.name,
            runs=runs,
            seed=seed,
            store=shown_url(store),
            workers=workers,
            window=window,
        )
        summary = sim.run()
        if not in_memory and (timeline is not None or writer is not None):
            for at, event in sim.replay():  # from the store's journal, in its order
                if writer is not None:
                    writer(event)
                if timeline is not None:
                    timeline.record(event, at)
        return summary, timeline, sim.tag


def _check_writable_dir(path: Path, option: str) -> None:
    """Refuse, before any work, a file that could not be written for want of its folder."""
    folder = path.parent
    if not folder.is_dir():
        msg = f"cannot write {str(path)!r}: no directory {str(folder)!r}"
        raise click.BadParameter(msg, param_hint=option)
    if not os.access(folder, os.W_OK):
        msg = f"cannot write {str(path)!r}: the directory {str(folder)!r} is not writable"
        raise click.BadParameter(msg, param_hint=option)


def _open_events(path: Path | None) -> IO[str] | None:
    if path is None:
        return None
    try:
        return path.open("w", encoding="utf-8")
    except OSError as err:
        msg = f"cannot write {str(path)!r}: {err.strerror or err}"
        raise click.BadParameter(msg, param_hint="--events") from None


# --- diagram -----------------------------------------------------------------------------------

DIAGRAM_FORMATS = ("mermaid", "dot", "svg", "png")


def _graphviz_digraph() -> Any:
    """The lifecycle as a ``graphviz.Digraph``, from the machine the engine really uses."""
    try:
        return runflow.Engine().lifecycle.graphviz()
    except ImportError:
        msg = (
            "--format dot, svg and png need the graphviz Python package "
            "(pip install 'runflow-engine[diagram]', or pip install graphviz); "
            "--format mermaid needs nothing"
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


# --- runs: operations on a store ---------------------------------------------------------------

STATUS_VALUES = tuple(s.value for s in RunStatus)
#: Why a sweep ended a run, by the status it ended in.
SWEPT_BECAUSE = {
    "expired": "past its expires_at",
    "failed": "its worker's lease lapsed",
    "cancelled": "cancelling for longer than the cancel grace",
}
_CELL = 60  # characters of a journal value shown in a table cell
_WRAP_MIN = 16  # the narrowest a wrapping column of a table gets


def _store_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        required=True,
        envvar=STORE_ENV,
        show_envvar=True,
        metavar="URL",
        help="The store: sqlite:///FILE.db, postgresql://..., memory:// (empty).",
    )(func)


def _json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def _sqlite_file(url: str) -> Path | None:
    """The database file a ``sqlite:///`` URL names (None: not a SQLite file URL)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not rest.startswith("/") or not rest.strip("/"):
        return None
    path = rest[1:]
    return None if path in {":memory:", ""} else Path(path)


@contextmanager
def _engine(url: str, *, cancel_grace: int | None = None) -> Iterator[Engine]:
    """
    An engine on the existing store at ``url`` (system clock), closed afterwards.
    Operating on a store must not create one: a missing SQLite file, or a PostgreSQL
    database or schema without runflow's tables (a typo), is an error.
    """
    path = _sqlite_file(url)
    if path is not None and not path.exists():
        msg = f"store {url}: no SQLite database at {str(path)!r}"
        raise click.ClickException(msg)
    postgres = url.partition("://")[0].lower() in {"postgresql", "postgres"}
    store = open_store(url, create=False) if postgres else open_store(url)
    options: dict[str, Any] = {}
    if cancel_grace is not None:
        options["cancel_grace"] = cancel_grace
    with Engine(store=store, **options) as engine:
        yield engine


def _when(seconds: int | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_rows(
    columns: Sequence[str], rows: Sequence[Sequence[str]], wrap: Sequence[str] = ()
) -> None:
    """
    Rows under headers: a rich table on a terminal (only the ``wrap`` columns wrap,
    the others stay on one line), aligned plain text when piped.
    """
    if _isatty(sys.stdout):
        from rich import box  # noqa: PLC0415 - only on a terminal
        from rich.console import Console  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
        for column in columns:
            if column in wrap:
                table.add_column(column, overflow="fold", min_width=_WRAP_MIN)
            else:
                table.add_column(column, no_wrap=True, overflow="ellipsis")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2))


def entry_dict(entry: JournalEntry) -> dict[str, Any]:
    """A journal entry as ``runflow runs history --json`` prints it."""
    return {
        "sequence": entry.sequence,
        "run_id": entry.run_id,
        "at": entry.at,
        "trigger": entry.trigger,
        "from": None if entry.from_status is None else entry.from_status.value,
        "to": entry.to_status.value,
        "worker": entry.worker,
        "changes": dict(entry.changes),
    }


def _changes_cell(changes: Mapping[str, Any]) -> str:
    cells = []
    for key, value in changes.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if len(text) > _CELL:
            text = text[: _CELL - 1] + "…"
        cells.append(f"{key}={text}")
    return " ".join(cells)


@cli.group("runs")
def runs_group() -> None:
    """
    List, inspect, cancel and sweep the runs of a store.

    Every command takes --store URL (or the RUNFLOW_STORE environment variable):
    sqlite:///FILE.db or postgresql://... (memory:// is a new, empty store).
    Tables on a terminal, plain columns when piped, --json for scripts.
    """


@runs_group.command("ls")
@_store_option
@click.option(
    "--status",
    type=click.Choice(STATUS_VALUES),
    help="Only runs in this status.",
)
@click.option("--thread", "thread_id", metavar="THREAD_ID", help="Only this thread's runs.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="At most this many runs, the newest.",
)
@_json_option
def runs_ls(
    store: str, status: str | None, thread_id: str | None, limit: int, as_json: bool
) -> None:
    """
    List runs, newest first.

    Active runs past their expires_at are expired first (LIFECYCLE R3.4), as a read
    of each would.
    """
    with _engine(store) as engine:
        found = engine.runs(thread_id=thread_id, status=status, limit=limit, newest_first=True)
    if as_json:
        _echo_json([r.to_dict() for r in found])
        return
    if not found:
        click.echo("no runs", err=True)
        return
    _print_rows(
        ("id", "status", "created_at (UTC)", "thread_id", "assistant_id", "model"),
        [
            (r.id, r.status.value, _when(r.created_at), r.thread_id, r.assistant_id, r.model)
            for r in found
        ],
        wrap=("thread_id", "assistant_id", "model"),
    )
    if len(found) == limit:
        click.echo(f"the newest {limit} runs; --limit N shows more", err=True)


@runs_group.command("show")
@click.argument("run_id")
@_store_option
@_json_option
def runs_show(run_id: str, store: str, as_json: bool) -> None:
    """
    Print a run as the API returns it (wire JSON).

    Like the API's retrieve, reading an active run past its expires_at expires it.
    """
    with _engine(store) as engine:
        run = engine.get(run_id)
    text = json.dumps(run.to_dict(), indent=2)
    if not as_json and _isatty(sys.stdout):
        from rich.console import Console  # noqa: PLC0415 - only on a terminal

        Console().print_json(text)
        return
    click.echo(text)


@runs_group.command("history")
@click.argument("run_id")
@_store_option
@_json_option
def runs_history(run_id: str, store: str, as_json: bool) -> None:
    """Print a run's journal: every transition, oldest first."""
    with _engine(store) as engine:
        entries = engine.history(run_id)
    if as_json:
        _echo_json([entry_dict(e) for e in entries])
        return
    _print_rows(
        ("seq", "at (UTC)", "trigger", "from", "to", "worker", "changes"),
        [
            (
                str(e.sequence),
                _when(e.at),
                e.trigger,
                "" if e.from_status is None else e.from_status.value,
                e.to_status.value,
                e.worker or "",
                _changes_cell({k: v for k, v in e.changes.items() if k != "status"}),
            )
            for e in entries
        ],
        wrap=("changes",),
    )


@runs_group.command("cancel")
@click.argument("run_id")
@_store_option
@_json_option
def runs_cancel(run_id: str, store: str, as_json: bool) -> None:
    """
    Ask to cancel a run: queued, in_progress or requires_action -> cancelling.

    The worker driving the run ends it cancelled (or a sweep does, after the cancel
    grace). A run that has ended is refused: exit 1 with the API's message.
    """
    with _engine(store) as engine:
        run = engine.cancel(run_id)
    if as_json:
        _echo_json(run.to_dict())
        return
    click.echo(f"{run.id}: {run.status.value}")


@runs_group.command("sweep")
@_store_option
@click.option(
    "--cancel-grace",
    type=click.IntRange(min=0),
    default=DEFAULT_CANCEL_GRACE,
    show_default=True,
    metavar="SECONDS",
    help="End runs cancelling for longer than this cancelled.",
)
@_json_option
def runs_sweep(store: str, cancel_grace: int, as_json: bool) -> None:
    """
    Settle the runs time has caught up with, now (system clock).

    Active runs past expires_at end expired; in_progress runs whose worker's lease
    lapsed end failed; runs cancelling for longer than --cancel-grace end
    cancelled. Safe to run at any time, from several places at once.
    """
    with _engine(store, cancel_grace=cancel_grace) as engine:
        swept = engine.sweep()
    counts = Counter(r.status.value for r in swept)
    if as_json:
        _echo_json(
            {
                "swept": len(swept),
                **{status: counts[status] for status in SWEPT_BECAUSE},
                "runs": [r.to_dict() for r in swept],
            }
        )
        return
    if not swept:
        click.echo("nothing to sweep")
        return
    _print_rows(
        ("id", "status", "because"),
        [(r.id, r.status.value, SWEPT_BECAUSE.get(r.status.value, "")) for r in swept],
        wrap=("because",),
    )
    parts = ", ".join(f"{counts[s]} {s}" for s in SWEPT_BECAUSE if counts[s])
    click.echo(f"swept {len(swept)} run{'s' if len(swept) != 1 else ''}: {parts}")


if __name__ == "__main__":  # pragma: no cover - python -m runflow.cli
    main()
