"""Start ``runflow serve`` (as ``python -m runflow.server``) for tests that need a real socket."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serving(
    *options: str, env: dict[str, str] | None = None, exit_after: int = 300
) -> Iterator[str]:
    """
    ``python -m runflow.server`` on 127.0.0.1 and a free port, in a subprocess that
    stops by itself after ``exit_after`` seconds at most; yields its base URL. The
    repository is on its ``PYTHONPATH``, so ``--scenario module:attr`` can name test
    modules; ``RUNFLOW_API_KEY`` is removed unless ``env`` sets it.
    """
    args = [sys.executable, "-m", "runflow.server", "--port", "0", "--exit-after", str(exit_after)]
    environ = {k: v for k, v in os.environ.items() if k != "RUNFLOW_API_KEY"}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(  # noqa: S603 - our own module
            [*args, *options],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=environ,
            cwd=ROOT,
        ) as proc,
    ):
        lines: queue.Queue[str] = queue.Queue()
        out = proc.stdout
        assert out is not None
        threading.Thread(target=lambda: lines.put(out.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=30)
            assert "listening on http://127.0.0.1:" in line, (line, errors.seek(0), errors.read())
            yield line.split("listening on ", 1)[1].strip()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
                proc.kill()
                proc.wait(timeout=10)
