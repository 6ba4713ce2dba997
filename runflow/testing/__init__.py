"""
Helpers for tests of code that uses runflow or the OpenAI SDK.

- :class:`FakeClock` and :class:`EventRecorder`: a clock that moves only when told and
  a subscriber that keeps every event.
- :class:`Script` and its steps: what the "model" does with a run, as plain values;
  :class:`ScriptMap` keys scripts by thread, metadata or assistant; ``SCENARIOS``
  names ready ones.
- :func:`openai_client` / :func:`async_openai_client`: the official SDK bound
  in-process to ``runflow.server.create_app`` (needs ``openai``).
- ``runflow.testing.strategies``: hypothesis strategies (needs ``hypothesis``).
- A pytest plugin (``runflow.testing.pytest_plugin``), on when runflow is installed:
  fixtures ``runflow_clock``, ``runflow_engine``, ``openai_client``,
  ``async_openai_client``, and the ``runflow_script`` marker.

See the "Testing with runflow" page of the documentation.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import typing
from typing import Any

from runflow.testing._clock import DEFAULT_START, EventRecorder, FakeClock
from runflow.testing._script import (
    DEFAULT_REPLY,
    SCENARIOS,
    Cancel,
    Complete,
    Expire,
    Fail,
    HttpFault,
    MarkIncomplete,
    NeverAnswer,
    RequireAction,
    Script,
    ScriptedCall,
    ScriptMap,
    ScriptSource,
    Start,
    Step,
)

if typing.TYPE_CHECKING:
    from runflow.testing._client import (
        AsyncInProcessTransport,
        InProcessTransport,
        async_openai_client,
        openai_client,
    )

__all__ = [
    "DEFAULT_REPLY",
    "DEFAULT_START",
    "SCENARIOS",
    "AsyncInProcessTransport",
    "Cancel",
    "Complete",
    "EventRecorder",
    "Expire",
    "Fail",
    "FakeClock",
    "HttpFault",
    "InProcessTransport",
    "MarkIncomplete",
    "NeverAnswer",
    "RequireAction",
    "Script",
    "ScriptMap",
    "ScriptSource",
    "ScriptedCall",
    "Start",
    "Step",
    "async_openai_client",
    "openai_client",
]

# The SDK helpers need httpx2 (an openai dependency): loaded on first use, so that
# ``import runflow.testing`` needs nothing beyond runflow's own dependencies.
_LAZY = frozenset(
    {"AsyncInProcessTransport", "InProcessTransport", "async_openai_client", "openai_client"}
)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            from runflow.testing import _client  # noqa: PLC0415
        except ImportError as exc:
            msg = (
                f"runflow.testing.{name} needs the OpenAI SDK and the server extra "
                f"({exc.name or exc} is missing): pip install openai 'runflow-engine[server]'"
            )
            raise ImportError(msg, name=exc.name) from exc

        value = getattr(_client, name)
        value.__module__ = __name__
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


# Documented (and doctested) as members of this package, where users import them from.
for _cls in (
    Cancel,
    Complete,
    EventRecorder,
    Expire,
    Fail,
    FakeClock,
    HttpFault,
    MarkIncomplete,
    NeverAnswer,
    RequireAction,
    Script,
    ScriptMap,
    ScriptedCall,
    Start,
):
    _cls.__module__ = __name__
del _cls
