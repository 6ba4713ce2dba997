"""The runflow.testing package: what it exports, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import runflow.testing
from runflow.testing import _clock


class TestExports:
    """The split kept every old name and added the new ones."""

    def test_old_names(self) -> None:
        """``FakeClock``, ``EventRecorder`` and ``DEFAULT_START`` as before the split."""
        from runflow.testing import DEFAULT_START, EventRecorder, FakeClock  # noqa: PLC0415

        assert FakeClock is _clock.FakeClock
        assert EventRecorder is _clock.EventRecorder
        assert DEFAULT_START == 1_700_000_000
        assert FakeClock().now() == DEFAULT_START

    def test_documented_where_imported(self) -> None:
        """Public classes say they live in ``runflow.testing``."""
        for name in ("FakeClock", "EventRecorder", "Script", "ScriptMap", "openai_client"):
            assert getattr(runflow.testing, name).__module__ == "runflow.testing"

    def test_every_name_resolves(self) -> None:
        """Each name of ``__all__`` is there (the SDK helpers load on first use)."""
        for name in runflow.testing.__all__:
            assert getattr(runflow.testing, name) is not None

    def test_sdk_helpers_without_the_sdk(self) -> None:
        """Without the SDK (httpx2 comes with openai), the helpers say what to install."""
        code = (
            "import sys; sys.modules['httpx2'] = None\n"
            "try:\n"
            "    from runflow.testing import openai_client\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
        )
        out = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        assert out.stdout == (
            "runflow.testing.openai_client needs the OpenAI SDK and the server extra "
            "(httpx2 is missing): pip install openai 'runflow-engine[server]'\n"
        )

    def test_unknown_name(self) -> None:
        """Other names are an AttributeError."""
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            runflow.testing.nope  # noqa: B018


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("runflow.testing", ("httpx2", "openai", "hypothesis", "jsonschema", "uvicorn")),
        ("runflow.server", ("openai", "hypothesis", "jsonschema", "uvicorn", "click")),
        ("runflow.testing.pytest_plugin", ("httpx2", "openai", "jsonschema")),
    ],
)
def test_imports_stay_light(module: str, absent: tuple[str, ...]) -> None:
    """Importing the package needs none of the optional dependencies."""
    code = (
        f"import sys, {module}; "
        f"loaded = [m for m in {absent!r} if m in sys.modules]; "
        "print(','.join(loaded))"
    )
    done = subprocess.run(  # noqa: S603 - a fixed snippet
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
