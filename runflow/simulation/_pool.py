"""
The distributed mode's worker processes.

Each worker is a separate Python process (``multiprocessing``, *spawn*) with its own
:class:`runflow.Engine` on its own connection to the shared store (SQLite or
PostgreSQL) and its own :class:`~runflow.testing.FakeClock`. It receives lists of
work items over a pipe, carries them out with ``worker=<its name>`` (a ``claim``
takes queued runs, longest waiting first, with their lease), and sends the outcomes
back. The driver owns the virtual clock: every item names the clock reading to act
at.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import typing
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import structlog

from runflow._engine import Engine
from runflow.exceptions import RunflowError
from runflow.simulation._exec import Executor, Item, Outcome
from runflow.simulation._scenario import Scenario
from runflow.stores import open_store
from runflow.testing import FakeClock

__all__ = ["WorkerError", "WorkerPool"]

#: Seconds a worker may take to start (interpreter, imports, opening the store).
START_TIMEOUT = 120.0
#: Seconds a worker may take to stop once told.
STOP_TIMEOUT = 10.0

log = structlog.get_logger(__name__)


class WorkerError(RunflowError):
    """
    A worker process of a distributed simulation failed: it could not open the
    store, an engine call raised, or the process died.

    .. versionadded:: 0.1.0
    """


def worker_name(index: int) -> str:
    """The name worker ``index`` (0-based) passes as ``worker=``."""
    return f"sim-worker-{index + 1}"


def _serve(  # noqa: PLR0917 - the arguments of a spawned process
    conn: Connection,
    url: str,
    scenario: Scenario,
    name: str,
    lease: int,
    start: int,
    init: Callable[[], object] | None,
) -> None:
    """A worker process: open the store, then carry out batches until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops its workers
    try:
        if init is not None:
            init()
        structlog.contextvars.bind_contextvars(worker=name)
        clock = FakeClock(start)
        executor: Executor | None = None
        engine = Engine(
            clock=clock,
            store=open_store(url),
            id_factory=lambda: executor.next_id if executor is not None else "",
            expires_after=scenario.runs.expires_after,
            lease=lease,
            logger=structlog.get_logger("runflow").bind() if init is not None else None,
        )
        executor = Executor(engine, clock, scenario, worker=name, lease=lease)
    except Exception as err:  # noqa: BLE001 - reported to the driver, which raises
        conn.send(("error", _describe(err)))
        return
    if init is not None:
        log.info("simulation_worker_started", pid=os.getpid())
    conn.send(("ready", None))
    try:
        while True:
            items: list[Item] | None = conn.recv()
            if items is None:
                break
            try:
                outcomes = [executor(item) for item in items]
            except Exception as err:  # noqa: BLE001 - reported to the driver
                conn.send(("error", _describe(err)))
                break
            conn.send(("ok", outcomes))
    except (EOFError, OSError):  # the driver went away
        pass
    finally:
        engine.close()
        if init is not None:
            log.info("simulation_worker_stopped", pid=os.getpid())


def _describe(err: BaseException) -> str:
    if isinstance(err, RunflowError):
        return str(err)
    return f"{type(err).__name__}: {err}"


@typing.final
class WorkerPool:
    """
    ``workers`` processes carrying out work items on the store at ``url``.

    Args:
        url: The store's URL (each worker opens its own connection).
        scenario: The scenario (the runs' tools, model and budgets).
        workers: How many processes.
        lease: Seconds of the lease a worker takes on each run it claims.
        start: The virtual clock's first reading.
        init: Called first in each worker (configures its logging); must pickle.

    Raises:
        WorkerError: a worker could not start or open the store.
    """

    def __init__(  # noqa: PLR0917 - mirrors the worker's arguments
        self,
        url: str,
        scenario: Scenario,
        workers: int,
        lease: int,
        start: int,
        init: Callable[[], object] | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self.names = [worker_name(i) for i in range(workers)]
        try:
            for name in self.names:
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=_serve,
                    args=(theirs, url, scenario, name, lease, start, init),
                    name=name,
                    daemon=True,
                )
                proc.start()
                theirs.close()
                self._conns.append(mine)
                self._procs.append(proc)
            for i in range(workers):
                self._receive(i, "ready", START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._conns)

    def run(self, assigned: Sequence[list[Item]]) -> list[list[Outcome]]:
        """Send each worker its items, all at once, and gather their outcomes."""
        for i, items in enumerate(assigned):
            if items:
                self._send(i, items)
        return [self._receive(i, "ok") if items else [] for i, items in enumerate(assigned)]

    def _send(self, i: int, items: list[Item]) -> None:
        try:
            self._conns[i].send(items)
        except OSError as err:
            raise self._died(i) from err

    def _receive(self, i: int, expected: str, timeout: float | None = None) -> Any:
        conn = self._conns[i]
        try:
            if timeout is not None and not conn.poll(timeout):
                msg = f"worker {self.names[i]} did not start within {timeout:.0f} s"
                raise WorkerError(msg)
            kind, payload = conn.recv()
        except (EOFError, OSError) as err:
            raise self._died(i) from err
        if kind == "error":
            msg = f"worker {self.names[i]}: {payload}"
            raise WorkerError(msg)
        if kind != expected:  # pragma: no cover - a protocol bug
            msg = f"worker {self.names[i]} sent {kind!r}, expected {expected!r}"
            raise WorkerError(msg)
        return payload

    def _died(self, i: int) -> WorkerError:
        proc = self._procs[i]
        proc.join(1.0)
        code = proc.exitcode
        how = "is gone" if code is None else f"exited with code {code}"
        return WorkerError(f"worker {self.names[i]} {how}")

    def close(self) -> None:
        """Tell every worker to stop, wait for them, end those that do not stop."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(STOP_TIMEOUT)
            if proc.is_alive():  # pragma: no cover - a worker stuck in the store
                proc.terminate()
                proc.join(STOP_TIMEOUT)
        for conn in self._conns:
            conn.close()
        self._conns = []
        self._procs = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
