"""Every example runs, and the code in the README and the docstrings does what it says."""

from __future__ import annotations

import doctest
import importlib
import linecache
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


def _run_blocks(page: Path, namespace: dict[str, object]) -> int:
    """
    Run every ```python block of ``page``, in order, in ``namespace``; return how many.

    Each block is compiled under a name of its own whose source linecache holds (the
    block, at its line numbers in the page), so that tracebacks show the page's lines
    and code that reads its own source (``inspect.getsource``, as hypothesis does for
    a ``@given`` test) finds the block, not the Markdown around it.
    """
    text = page.read_text(encoding="utf-8")
    blocks = 0
    for match in PYTHON_BLOCK.finditer(text):
        first = text.count("\n", 0, match.start(1))  # lines before the block
        source = "\n" * first + match.group(1)
        name = f"<{page.relative_to(ROOT)} block at line {first + 1}>"
        linecache.cache[name] = (len(source), None, source.splitlines(keepends=True), name)
        exec(compile(source, name, "exec"), namespace)  # noqa: S102 - our own docs
        blocks += 1
    return blocks


def test_readme_python_blocks_run() -> None:
    """Every ```python block of the README runs, in order, in one namespace."""
    blocks = _run_blocks(ROOT / "README.md", {"__name__": "readme"})
    assert blocks, "the README has no python example"


DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_docs_python_blocks_run(page: Path) -> None:
    """Every ```python block of a docs page runs, in order, in one namespace."""
    _run_blocks(page, {"__name__": f"docs_{page.stem}"})


@pytest.mark.parametrize("module", ["runflow", "runflow.testing", "runflow._engine"])
def test_docstring_examples(module: str) -> None:
    """The ``>>>`` examples in the public docstrings hold."""
    result = doctest.testmod(
        importlib.import_module(module), optionflags=doctest.ELLIPSIS, verbose=False
    )
    assert result.failed == 0
