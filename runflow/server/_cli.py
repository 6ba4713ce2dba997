"""
``runflow serve``: the runs API under uvicorn, for clients in any language.

A click command, attached to the ``runflow`` group by :mod:`runflow.cli` (and runnable
as ``python -m runflow.server``).
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
import sys
import threading
import time
import typing
from collections.abc import Sequence
from typing import Any

import click

from runflow._engine import Engine
from runflow.server._app import DEFAULT_MAX_BODY, DEFAULT_POLL_INTERVAL_MS, create_app
from runflow.testing._script import SCENARIOS, Script, ScriptMap

__all__ = ["SCENARIO_KEY", "VirtualClock", "scripts_for", "serve"]

#: The metadata key that picks a named scenario for one run.
SCENARIO_KEY = "runflow_scenario"
_LOOPBACK = ("localhost",)


@typing.final
class VirtualClock:
    """
    Real time plus a virtual offset: scripts' latency moves it forward at once, and it
    keeps ticking with the wall clock in between.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_lock", "_offset")

    def __init__(self) -> None:
        self._offset = 0
        self._lock = threading.Lock()

    def now(self) -> int:
        """The current reading, in whole Unix seconds."""
        return int(time.time()) + self._offset

    def advance(self, seconds: int) -> int:
        """Jump ``seconds`` ahead and return the new reading."""
        if type(seconds) is not int or seconds < 0:
            msg = f"a clock moves forward by whole seconds; got advance({seconds!r})"
            raise ValueError(msg)
        with self._lock:
            self._offset += seconds
        return self.now()

    def __repr__(self) -> str:
        return f"VirtualClock(offset={self._offset})"


def _load(name: str) -> Any:
    """A named scenario, or ``module:attribute`` naming a script source."""
    if name in SCENARIOS:
        return SCENARIOS[name]
    if ":" in name:
        module, _, attribute = name.partition(":")
        try:
            value = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as error:
            msg = f"cannot load scenario {name!r}: {error}"
            raise click.BadParameter(msg, param_hint="--scenario") from error
        return value
    known = ", ".join(sorted(SCENARIOS))
    msg = f"unknown scenario {name!r}; use one of {known}, or module:attribute"
    raise click.BadParameter(msg, param_hint="--scenario")


def scripts_for(scenarios: Sequence[str]) -> ScriptMap | Any:
    """
    The script source for ``--scenario`` values: ``NAME`` (every run),
    ``ASSISTANT_ID=NAME`` (that assistant's runs) or ``module:attribute`` (a script
    source of your own). Without a default, runs complete at once with a canned reply.
    A run may also pick a named scenario itself with metadata
    ``{"runflow_scenario": NAME}``.
    """
    default: Any = SCENARIOS["reply"]
    assistants: dict[str, Script] = {}
    for value in scenarios:
        assistant, sep, name = value.partition("=")
        if sep and not assistant.count(":"):
            script = _load(name)
            if not isinstance(script, Script):
                msg = f"{value!r}: an assistant's scenario must be a Script"
                raise click.BadParameter(msg, param_hint="--scenario")
            assistants[assistant] = script
        else:
            default = _load(value)
    if not isinstance(default, Script):
        if assistants:
            msg = "a custom script source cannot be combined with ASSISTANT_ID=NAME"
            raise click.BadParameter(msg, param_hint="--scenario")
        return default
    return ScriptMap(
        metadata={SCENARIO_KEY: dict(SCENARIOS)}, assistants=assistants, default=default
    )


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="NAME|ASSISTANT_ID=NAME|MODULE:ATTR",
    help=f"What the model does with runs (repeatable). Names: {', '.join(sorted(SCENARIOS))}.",
)
@click.option(
    "--api-key",
    envvar="RUNFLOW_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' on every request [env: RUNFLOW_API_KEY].",
)
@click.option(
    "--poll-interval-ms",
    default=DEFAULT_POLL_INTERVAL_MS,
    show_default=True,
    type=click.IntRange(0),
    help="openai-poll-after-ms for runs no script drives.",
)
@click.option(
    "--max-body",
    default=DEFAULT_MAX_BODY,
    show_default=True,
    type=click.IntRange(1),
    help="Largest request body in bytes (413 beyond).",
)
@click.option(
    "--exit-after",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop by itself after this many seconds (for CI).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="warning",
    show_default=True,
)
def serve(
    *,
    host: str,
    port: int,
    scenarios: tuple[str, ...],
    api_key: str | None,
    poll_interval_ms: int,
    max_body: int,
    exit_after: float | None,
    log_level: str,
) -> None:
    """
    Serve OpenAI's runs API on HOST:PORT (127.0.0.1 unless told otherwise), for the
    official SDKs in any language: base URL http://HOST:PORT/v1.
    """
    try:
        import uvicorn  # noqa: PLC0415 - the server extra
    except ImportError:  # pragma: no cover - depends on the install
        msg = 'runflow serve needs the server extra: pip install "runflow-engine[server]"'
        raise click.ClickException(msg) from None
    source = scripts_for(scenarios)
    if not _is_loopback(host):
        click.echo(
            f"warning: binding {host}: anyone who can reach it can use this server"
            + ("" if api_key else " (no --api-key set)"),
            err=True,
        )
    engine = Engine(clock=VirtualClock())
    app = create_app(
        engine, source, api_key=api_key, max_body=max_body, poll_interval_ms=poll_interval_ms
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        msg = f"cannot bind {host}:{port}: {error.strerror}"
        raise click.ClickException(msg) from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"runflow serve: listening on http://{shown}:{bound}/v1", err=False)
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    timer = None
    if exit_after is not None:
        timer = threading.Timer(exit_after, lambda: setattr(server, "should_exit", True))
        timer.daemon = True
        timer.start()
    try:
        server.run(sockets=[sock])
    finally:
        if timer is not None:
            timer.cancel()
        app.close()
        sock.close()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m runflow.server``: the serve command on its own."""
    serve.main(args=list(argv) if argv is not None else None, prog_name="runflow serve")
