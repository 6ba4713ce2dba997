"""Every example runs, and the code in the README and the docstrings does what it says."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.fixture(autouse=True)
def _unconfigured_structlog() -> None:
    """Examples run as in a fresh process: structlog as the application left it, unset."""
    structlog.reset_defaults()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    """Each example exits 0 in a fresh interpreter and prints something."""
    done = subprocess.run(  # noqa: S603 - our own example files
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_there_are_examples() -> None:
    """The quickstart and tool-call examples the issue asks for exist."""
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.py", "tool_calls.py"} <= names


def test_readme_python_blocks_run() -> None:
    """Every ```python block of the README runs, in order, in one namespace."""
    blocks = PYTHON_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks, "the README has no python example"
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README


DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_docs_python_blocks_run(page: Path) -> None:
    """Every ```python block of a docs page runs, in order, in one namespace."""
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in PYTHON_BLOCK.findall(page.read_text(encoding="utf-8")):
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102 - our own docs


@pytest.mark.parametrize("module", ["runflow", "runflow.testing", "runflow._engine"])
def test_docstring_examples(module: str) -> None:
    """The ``>>>`` examples in the public docstrings hold."""
    result = doctest.testmod(
        importlib.import_module(module), optionflags=doctest.ELLIPSIS, verbose=False
    )
    assert result.failed == 0
