"""Sphinx configuration for runflow's documentation (MyST Markdown, Furo)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import runflow

# -- Project -----------------------------------------------------------------------------

project = "runflow"
author = "runflow developers"
copyright = "runflow developers"
release = importlib.metadata.version("runflow-engine")
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinxcontrib.mermaid",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "_inventories"]
nitpicky = True
nitpick_ignore = [
    # Annotations name the defining private module; the class is documented as
    # runflow.Lifecycle.
    ("py:class", "runflow._machine.Lifecycle"),
    # The machine's private per-transition object.
    ("py:class", "runflow._machine.Step"),
    # Type aliases in runflow.testing's annotations, documented in words on their pages.
    ("py:class", "Step"),
    ("py:class", "CancelStep"),
    ("py:class", "FaultTarget"),
    ("py:class", "ScriptSource"),
    ("py:class", "ErrorCode"),
    ("py:class", "IncompleteReason"),
    # Third-party classes in the SDK helpers' signatures (no inventory kept for them).
    ("py:class", "openai.OpenAI"),
    ("py:class", "openai.AsyncOpenAI"),
    ("py:class", "httpx2.BaseTransport"),
    ("py:class", "httpx2.AsyncBaseTransport"),
    ("py:class", "httpx2.Request"),
    ("py:class", "httpx2.Response"),
    ("py:class", "pytest.FixtureRequest"),
    ("py:class", "pytest.Config"),
    ("py:class", "pytest.Item"),
    ("py:class", "hypothesis.strategies.SearchStrategy"),
]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "all"
autodoc_preserve_defaults = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Inventories are kept in the repository (taken from Debian's python3.11-doc,
# python-attr-doc, python-cattrs-doc and python-structlog-doc packages), so the
# build needs no network. See docs/_inventories/README.md to refresh them.
_INV = Path(__file__).parent / "_inventories"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", str(_INV / "python.inv")),
    "attrs": ("https://www.attrs.org/en/stable/", str(_INV / "attrs.inv")),
    "cattrs": ("https://catt.rs/en/stable/", str(_INV / "cattrs.inv")),
    "structlog": ("https://www.structlog.org/en/stable/", str(_INV / "structlog.inv")),
}

# -- HTML --------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"runflow {release}"

# -- Generated pages ---------------------------------------------------------------------
# The state diagram and the transition table come from the real machine at build time.

_GENERATED = Path(__file__).parent / "_generated"

#: LIFECYCLE.md rule ids of the transitions (source, dest) -> id.
_RULE_IDS = {
    ("queued", "in_progress"): "T2",
    ("queued", "cancelling"): "T14",
    ("queued", "expired"): "T12",
    ("in_progress", "requires_action"): "T3",
    ("in_progress", "completed"): "T5",
    ("in_progress", "failed"): "T6",
    ("in_progress", "incomplete"): "T7",
    ("in_progress", "cancelling"): "T8",
    ("in_progress", "expired"): "T12",
    ("requires_action", "queued"): "T4",
    ("requires_action", "cancelling"): "T13",
    ("requires_action", "expired"): "T11",
    ("cancelling", "cancelled"): "T9",
    ("cancelling", "completed"): "T10",
    ("cancelling", "failed"): "T10",
    ("cancelling", "incomplete"): "T10",
    ("cancelling", "expired"): "T10",
}


def _write(name: str, text: str) -> None:
    """Write a generated include file, touching it only when its text changes."""
    _GENERATED.mkdir(exist_ok=True)
    path = _GENERATED / name
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _transition_table() -> str:
    """The transition table of :data:`runflow.ASSISTANTS_RUN`, as Markdown."""
    profile = runflow.ASSISTANTS_RUN
    rows = [
        "| from | to | trigger (engine method) | rule | grade |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in profile.transitions:
        source, dest = str(t.source), str(t.dest)
        rule = _RULE_IDS.get((source, dest), "")
        method = f"{{meth}}`~runflow.Engine.{t.trigger}`"
        rows.append(f"| `{source}` | `{dest}` | {method} | {rule} | {t.grade} |")
    return "\n".join(rows) + "\n"


_write("lifecycle.mmd", runflow.lifecycle_diagram().rstrip("\n") + "\n")
_write("transitions.md", _transition_table())
