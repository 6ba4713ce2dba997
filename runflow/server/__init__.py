"""
OpenAI's runs API over a runflow engine, for the official SDK and other clients.

:func:`create_app` makes an ASGI app that speaks the OpenAI wire protocol for threads,
runs, run steps and messages (needs the ``server`` extra:
``pip install "runflow-engine[server]"``). ``runflow serve`` runs it under uvicorn.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from runflow.server._app import (
    DEFAULT_MAX_BODY,
    DEFAULT_MODEL,
    DEFAULT_POLL_INTERVAL_MS,
    RunsApp,
    create_app,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MODEL",
    "DEFAULT_POLL_INTERVAL_MS",
    "RunsApp",
    "create_app",
]
