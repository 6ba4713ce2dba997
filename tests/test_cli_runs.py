"""
``runflow runs ls|show|history|cancel|sweep``: in-process with click's CliRunner over
the memory, SQLite and PostgreSQL stores, and for real in a subprocess.

PostgreSQL tests read ``RUNFLOW_POSTGRES_DSN`` and use a fresh schema each (dropped
afterwards); without the variable they skip, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from runflow import Engine, RunObject, RunStatus, Usage
from runflow import cli as cli_module
from runflow.cli import cli
from runflow.stores import MemoryStore, Store, open_store
from runflow.testing import FakeClock
from tests.conftest import drop_schema, schema_exists

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"
TOOL = {"type": "function", "function": {"name": "get_weather"}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
#: The runs every test's store holds, oldest first, by name -> status.
STATUSES = {
    "overdue": "queued",  # past expires_at: a sweep expires it
    "done": "completed",
    "waiting": "queued",
    "tools": "requires_action",
    "lapsed": "in_progress",  # its worker's lease lapsed: a sweep fails it
    "stuck": "cancelling",  # cancelling for longer than the grace: a sweep cancels it
}
#: The statuses a listing shows: it applies the expiry rule (R3.4), not the rest of a sweep.
LISTED = {**STATUSES, "overdue": "expired"}


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """The command configures structlog globally; put it back for the other tests."""
    configured = structlog.is_configured()
    saved = structlog.get_config()
    yield
    if configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def postgres_dsn() -> str:
    """The test server's DSN; skip (outside CI) or fail (in CI) without one."""
    dsn = os.environ.get("RUNFLOW_POSTGRES_DSN", "")
    if dsn:
        return dsn
    if os.environ.get("CI"):
        pytest.fail("RUNFLOW_POSTGRES_DSN is not set: CI must run the PostgreSQL tests")
    pytest.skip("RUNFLOW_POSTGRES_DSN is not set")


def with_schema(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


def populate(store: Store) -> dict[str, str]:
    """
    Put the runs of :data:`STATUSES` in ``store``, timed against the real clock (the
    command's engine uses it); return name -> run id.
    """
    now = int(time.time())
    clock = FakeClock(now - 1000)
    engine = Engine(clock=clock, store=store, expires_after=3600)
    ids: dict[str, str] = {}

    def new(name: str, **kwargs: Any) -> str:
        run = engine.create(thread_id=f"thread_{name}", assistant_id="asst_cli", **kwargs)
        ids[name] = run.id
        return run.id

    new("overdue", expires_after=600)  # expires_at: now - 400
    clock.set(now - 200)
    engine.complete(engine.start(new("done", model="gpt-4o")), usage=Usage.of(9, 4))
    new("waiting")
    engine.require_action(engine.start(new("tools", tools=[TOOL])), [CALL])
    engine.start(new("lapsed"), worker="w1", lease=30)  # lapses at now - 170
    engine.cancel(engine.start(new("stuck")))  # cancelling since now - 200
    for name, status in STATUSES.items():
        stored = engine.store.get(ids[name])
        assert stored is not None
        assert stored.record.status == status
    return ids


def populate_url(url: str) -> dict[str, str]:
    """:func:`populate` the store at ``url``."""
    store = open_store(url)
    try:
        return populate(store)
    finally:
        store.close()


@pytest.fixture(name="kind", params=["memory", "sqlite", "postgres"])
def _kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="store_url")
def _store_url(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of a store holding the runs of :data:`STATUSES`."""
    if kind == "memory":
        # a memory store lives in one process: share one across the test's commands
        shared = MemoryStore()
        real = cli_module.open_store

        def opened(url: str, **options: Any) -> Store:
            return shared if url == "memory://" else real(url, **options)

        monkeypatch.setattr(cli_module, "open_store", opened)
        yield "memory://"
        return
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.db'}"
        yield url
        return
    dsn = postgres_dsn()
    schema = f"runflow_cli_{uuid.uuid4().hex[:12]}"
    yield with_schema(dsn, schema)
    drop_schema(dsn, schema)


@pytest.fixture(name="ids")
def _ids(store_url: str, kind: str) -> dict[str, str]:
    """Name -> run id of the runs in the test's store."""
    store = cli_module.open_store(store_url)
    try:
        return populate(store)
    finally:
        if kind != "memory":
            store.close()


def run(*args: str, **kwargs: Any) -> Result:
    return CliRunner().invoke(cli, list(args), **kwargs)


def ok(*args: str, **kwargs: Any) -> Result:
    result = run(*args, **kwargs)
    assert result.exit_code == 0, result.output
    return result


def newest_first(ids: dict[str, str]) -> list[str]:
    return [ids[name] for name in reversed(STATUSES)]


def wire(text: str) -> Any:
    """Parse JSON output and check every run in it with RunObject.from_dict."""
    doc = json.loads(text)
    runs = doc if isinstance(doc, list) else doc.get("runs", [doc])
    for item in runs:
        assert RunObject.from_dict(item).to_dict() == item
    return doc


class TestList:
    def test_json_newest_first(self, store_url: str, ids: dict[str, str]) -> None:
        """
        ls --json: an array of wire runs, newest first, each a valid run object; the
        overdue run is expired by the listing (and stays so), the rest as stored.
        """
        doc = wire(ok("runs", "ls", "--store", store_url, "--json").stdout)
        assert [r["id"] for r in doc] == newest_first(ids)
        assert [r["status"] for r in doc] == list(reversed(LISTED.values()))
        again = wire(ok("runs", "show", ids["overdue"], "--store", store_url).stdout)
        assert again["status"] == "expired"
        assert again["expires_at"] is None

    def test_filters(self, store_url: str, ids: dict[str, str]) -> None:
        """--status and --thread filter; both together narrow further."""
        queued = wire(ok("runs", "ls", "--store", store_url, "--status", "queued", "--json").stdout)
        assert [r["id"] for r in queued] == [ids["waiting"]]  # the overdue one is expired
        expired = wire(
            ok("runs", "ls", "--store", store_url, "--status", "expired", "--json").stdout
        )
        assert [r["id"] for r in expired] == [ids["overdue"]]
        thread = wire(
            ok("runs", "ls", "--store", store_url, "--thread", "thread_tools", "--json").stdout
        )
        assert [r["id"] for r in thread] == [ids["tools"]]
        both = ok(
            "runs",
            "ls",
            "--store",
            store_url,
            "--thread",
            "thread_tools",
            "--status",
            "queued",
            "--json",
        )
        assert json.loads(both.stdout) == []

    def test_limit(self, store_url: str, ids: dict[str, str]) -> None:
        """--limit keeps the newest; the table says when there may be more."""
        doc = wire(ok("runs", "ls", "--store", store_url, "--limit", "2", "--json").stdout)
        assert [r["id"] for r in doc] == newest_first(ids)[:2]
        table = ok("runs", "ls", "--store", store_url, "--limit", "2")
        assert "the newest 2 runs; --limit N shows more" in table.stderr

    def test_plain_table(self, store_url: str, ids: dict[str, str]) -> None:
        """Piped, ls prints aligned columns: a header, then one line per run."""
        out = ok("runs", "ls", "--store", store_url).stdout
        lines = out.splitlines()
        assert lines[0].split() == [
            "id",
            "status",
            "created_at",
            "(UTC)",
            "thread_id",
            "assistant_id",
            "model",
        ]
        assert [line.split()[0] for line in lines[1:]] == newest_first(ids)
        assert "\x1b[" not in out

    def test_rich_table_on_a_terminal(
        self, store_url: str, ids: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a terminal, ls draws a rich table."""
        monkeypatch.setattr(cli_module, "_isatty", lambda stream: stream is sys.stdout)
        out = ok("runs", "ls", "--store", store_url).stdout
        assert "─" in out
        assert all(run_id in out for run_id in ids.values())

    def test_nothing_found(self, store_url: str, ids: dict[str, str]) -> None:
        """No match: [] with --json; "no runs" on stderr and nothing on stdout otherwise."""
        assert ok("runs", "ls", "--store", store_url, "--thread", "nope", "--json").stdout == "[]\n"
        plain = ok("runs", "ls", "--store", store_url, "--thread", "nope")
        assert (plain.stdout, plain.stderr) == ("", "no runs\n")


class TestShow:
    def test_wire_json(self, store_url: str, ids: dict[str, str]) -> None:
        """show prints the run's wire JSON."""
        doc = wire(ok("runs", "show", ids["done"], "--store", store_url).stdout)
        assert doc["id"] == ids["done"]
        assert doc["status"] == "completed"
        assert doc["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        assert (
            wire(ok("runs", "show", ids["tools"], "--store", store_url, "--json").stdout)[
                "required_action"
            ]["submit_tool_outputs"]["tool_calls"][0]["id"]
            == "call_1"
        )

    def test_read_applies_the_expiry_rule(self, store_url: str, ids: dict[str, str]) -> None:
        """Like the API's retrieve, showing a run past expires_at shows it expired."""
        assert (
            wire(ok("runs", "show", ids["overdue"], "--store", store_url).stdout)["status"]
            == "expired"
        )

    def test_highlighted_on_a_terminal(
        self, store_url: str, ids: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a terminal show pretty-prints with rich; the JSON still parses."""
        monkeypatch.setattr(cli_module, "_isatty", lambda stream: stream is sys.stdout)
        out = ok("runs", "show", ids["done"], "--store", store_url).stdout
        assert json.loads(out)["id"] == ids["done"]

    def test_not_found(self, store_url: str, ids: dict[str, str]) -> None:
        """An unknown id: exit 1 with the API's message."""
        result = run("runs", "show", "run_nope", "--store", store_url)
        assert result.exit_code == 1
        assert result.stderr == "Error: No run found with id 'run_nope'.\n"


class TestHistory:
    def test_json(self, store_url: str, ids: dict[str, str]) -> None:
        """history --json: the journal entries, oldest first, with wire changes."""
        doc = json.loads(ok("runs", "history", ids["done"], "--store", store_url, "--json").stdout)
        assert [e["trigger"] for e in doc] == ["create", "start", "complete"]
        assert [(e["from"], e["to"]) for e in doc] == [
            (None, "queued"),
            ("queued", "in_progress"),
            ("in_progress", "completed"),
        ]
        for entry in doc:
            assert list(entry) == [
                "sequence",
                "run_id",
                "at",
                "trigger",
                "from",
                "to",
                "worker",
                "changes",
            ]
            assert entry["run_id"] == ids["done"]
        assert [e["sequence"] for e in doc] == sorted({e["sequence"] for e in doc})
        assert doc[1]["changes"]["started_at"] == doc[1]["at"]
        assert doc[2]["changes"]["usage"] == {
            "prompt_tokens": 9,
            "completion_tokens": 4,
            "total_tokens": 13,
        }

    def test_worker_is_journaled(self, store_url: str, ids: dict[str, str]) -> None:
        """A transition made with worker= names it in the journal."""
        doc = json.loads(
            ok("runs", "history", ids["lapsed"], "--store", store_url, "--json").stdout
        )
        assert [e["worker"] for e in doc] == [None, "w1"]

    def test_table(self, store_url: str, ids: dict[str, str]) -> None:
        """The table has a row per entry, the changes compact."""
        out = ok("runs", "history", ids["tools"], "--store", store_url).stdout
        lines = out.splitlines()
        assert lines[0].split()[:3] == ["seq", "at", "(UTC)"]
        assert [line.split()[3] for line in lines[1:]] == ["create", "start", "require_action"]
        assert "required_action=" in lines[-1]

    def test_not_found(self, store_url: str, ids: dict[str, str]) -> None:
        """An unknown id: exit 1."""
        result = run("runs", "history", "run_nope", "--store", store_url)
        assert result.exit_code == 1
        assert result.stderr == "Error: No run found with id 'run_nope'.\n"


class TestCancel:
    def test_cancel(self, store_url: str, ids: dict[str, str]) -> None:
        """cancel moves an active run to cancelling and journals it."""
        assert ok("runs", "cancel", ids["waiting"], "--store", store_url).stdout == (
            f"{ids['waiting']}: cancelling\n"
        )
        doc = wire(ok("runs", "cancel", ids["tools"], "--store", store_url, "--json").stdout)
        assert doc["status"] == "cancelling"
        history = json.loads(
            ok("runs", "history", ids["waiting"], "--store", store_url, "--json").stdout
        )
        assert history[-1]["trigger"] == "cancel"

    @pytest.mark.parametrize(("name", "status"), [("done", "completed"), ("stuck", "cancelling")])
    def test_refused(self, store_url: str, ids: dict[str, str], name: str, status: str) -> None:
        """An ended or cancelling run refuses: exit 1 with the API's message, nothing on stdout."""
        result = run("runs", "cancel", ids[name], "--store", store_url)
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr == f"Error: Cannot cancel run with status '{status}'.\n"

    def test_overdue_is_expired_first(self, store_url: str, ids: dict[str, str]) -> None:
        """A run past expires_at is expired by the call, which is then refused."""
        result = run("runs", "cancel", ids["overdue"], "--store", store_url)
        assert result.exit_code == 1
        assert result.stderr == "Error: Cannot cancel run with status 'expired'.\n"

    def test_not_found(self, store_url: str, ids: dict[str, str]) -> None:
        """An unknown id: exit 1."""
        assert run("runs", "cancel", "run_nope", "--store", store_url).exit_code == 1


class TestSweep:
    def test_json(self, store_url: str, ids: dict[str, str]) -> None:
        """sweep expires, fails lapsed leases, cancels stuck cancels; a second finds nothing."""
        doc = wire(ok("runs", "sweep", "--store", store_url, "--json").stdout)
        assert {k: doc[k] for k in ("swept", "expired", "failed", "cancelled")} == {
            "swept": 3,
            "expired": 1,
            "failed": 1,
            "cancelled": 1,
        }
        by_id = {r["id"]: r for r in doc["runs"]}
        assert by_id[ids["overdue"]]["status"] == "expired"
        assert by_id[ids["lapsed"]]["status"] == "failed"
        assert by_id[ids["lapsed"]]["last_error"]["code"] == "server_error"
        assert "lapsed" in by_id[ids["lapsed"]]["last_error"]["message"]
        assert by_id[ids["stuck"]]["status"] == "cancelled"
        again = json.loads(ok("runs", "sweep", "--store", store_url, "--json").stdout)
        assert again == {"swept": 0, "expired": 0, "failed": 0, "cancelled": 0, "runs": []}

    def test_table(self, store_url: str, ids: dict[str, str]) -> None:
        """The table says what changed and why; the last line counts it."""
        out = ok("runs", "sweep", "--store", store_url).stdout
        assert out.splitlines()[-1] == "swept 3 runs: 1 expired, 1 failed, 1 cancelled"
        assert "its worker's lease lapsed" in out
        assert ok("runs", "sweep", "--store", store_url).stdout == "nothing to sweep\n"

    def test_cancel_grace(self, store_url: str, ids: dict[str, str]) -> None:
        """A longer --cancel-grace leaves the stuck cancel alone."""
        doc = json.loads(
            ok("runs", "sweep", "--store", store_url, "--cancel-grace", "3600", "--json").stdout
        )
        assert (doc["swept"], doc["cancelled"]) == (2, 0)


class TestStoreOption:
    def test_env_var(self, store_url: str, ids: dict[str, str]) -> None:
        """RUNFLOW_STORE stands in for --store; --store wins over it."""
        doc = json.loads(ok("runs", "ls", "--json", env={"RUNFLOW_STORE": store_url}).stdout)
        assert len(doc) == len(STATUSES)
        both = run("runs", "ls", "--json", "--store", UNREACHABLE, env={"RUNFLOW_STORE": store_url})
        assert both.exit_code == 1

    @pytest.mark.parametrize(
        "command", ["ls", "show run_x", "history run_x", "cancel run_x", "sweep"]
    )
    def test_missing_store(self, command: str) -> None:
        """Without --store or RUNFLOW_STORE: a usage error, exit 2."""
        result = run("runs", *command.split(), env={"RUNFLOW_STORE": None})
        assert result.exit_code == 2
        assert "Missing option '--store'" in result.stderr

    @pytest.mark.parametrize(
        "args",
        [
            ["ls", "--status", "running"],
            ["ls", "--limit", "0"],
            ["ls", "--limit", "many"],
            ["show"],
            ["sweep", "--cancel-grace", "-1"],
            ["frobnicate"],
        ],
    )
    def test_bad_usage(self, args: list[str]) -> None:
        """Bad flags and values: exit 2 with click's usage message."""
        result = run("runs", *args, "--store", "memory://")
        assert result.exit_code == 2
        assert "Usage:" in result.stderr

    @pytest.mark.parametrize(
        "command", ["ls", "show run_x", "history run_x", "cancel run_x", "sweep"]
    )
    def test_unreachable_store(self, command: str) -> None:
        """An unreachable server: exit 1, one line naming the store, no traceback."""
        result = run("runs", *command.split(), "--store", UNREACHABLE)
        assert result.exit_code == 1
        lines = result.stderr.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"Error: store {UNREACHABLE}: ")
        assert "unreachable" in lines[0]
        assert result.stdout == ""

    def test_password_is_masked(self) -> None:
        """A password in the URL never shows."""
        result = run("runs", "ls", "--store", "postgresql://bob:s3cret@127.0.0.1:1/test")
        assert result.exit_code == 1
        assert "s3cret" not in result.stderr
        assert len(result.stderr.splitlines()) == 1

    @pytest.mark.parametrize("url", ["foo://x", "sqlite:/x.db", "memory://here"])
    def test_bad_url(self, url: str) -> None:
        """A URL no store takes: exit 1, one line naming it."""
        result = run("runs", "ls", "--store", url)
        assert result.exit_code == 1
        assert len(result.stderr.splitlines()) == 1
        assert url in result.stderr

    def test_missing_sqlite_file(self, tmp_path: Path) -> None:
        """Reading a SQLite file that does not exist fails, and does not create it."""
        path = tmp_path / "typo.db"
        result = run("runs", "ls", "--store", f"sqlite:///{path}")
        assert result.exit_code == 1
        assert result.stderr == f"Error: store sqlite:///{path}: no SQLite database at '{path}'\n"
        assert not path.exists()

    def test_postgres_schema_without_a_store(self) -> None:
        """
        A PostgreSQL schema without runflow's tables (a typo): exit 1, one line, and
        nothing is created in the database (a read must not write a schema).
        """
        dsn = postgres_dsn()
        schema = f"runflow_typo_{uuid.uuid4().hex[:12]}"
        try:
            for command in (["ls"], ["show", "run_x"], ["sweep"]):
                result = run("runs", *command, "--store", with_schema(dsn, schema))
                assert result.exit_code == 1, result.output
                assert "its tables are missing" in result.stderr
                assert len(result.stderr.splitlines()) == 1
            assert not schema_exists(dsn, schema)
        finally:
            drop_schema(dsn, schema)

    def test_memory_store_is_empty(self) -> None:
        """memory:// is a new store of the command's own: nothing in it."""
        assert ok("runs", "ls", "--store", "memory://", "--json").stdout == "[]\n"
        assert ok("runs", "sweep", "--store", "memory://").stdout == "nothing to sweep\n"

    def test_debug_raises(self) -> None:
        """With --debug the store's error propagates (and so its traceback)."""
        result = run("--debug", "runs", "ls", "--store", UNREACHABLE)
        assert result.exit_code == 1
        assert type(result.exception).__name__ == "StoreError"

    def test_logs_transitions_at_debug(self, tmp_path: Path) -> None:
        """--log-level debug logs the engine's transitions made by a command, as JSON."""
        url = f"sqlite:///{tmp_path / 'runs.db'}"
        ids = populate_url(url)
        result = ok(
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "runs",
            "cancel",
            ids["waiting"],
            "--store",
            url,
        )
        events = [json.loads(line) for line in result.stderr.splitlines()]
        moved = [e for e in events if e["event"] == "run_transitioned"]
        assert [(e["from"], e["to"], e["trigger"]) for e in moved] == [
            ("queued", "cancelling", "cancel")
        ]


def command() -> list[str]:
    script = Path(sys.executable).with_name("runflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "runflow.cli"]


class TestSubprocess:
    def test_real_command(self, tmp_path: Path) -> None:
        """The installed command, for real: ls --json, a refused cancel, an unreachable store."""
        url = f"sqlite:///{tmp_path / 'runs.db'}"
        ids = populate_url(url)
        env = {**os.environ, "RUNFLOW_STORE": url}

        def go(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(  # noqa: S603 - our own command
                [*command(), "runs", *args],
                capture_output=True,
                text=True,
                check=False,
                cwd=tmp_path,
                env=env,
                timeout=120,
            )

        listed = go("ls", "--json")
        assert listed.returncode == 0, listed.stderr
        doc = wire(listed.stdout)
        assert [r["id"] for r in doc] == newest_first(ids)
        assert [r["status"] for r in doc] == list(reversed(LISTED.values()))
        assert listed.stderr == ""
        refused = go("cancel", ids["done"])
        assert refused.returncode == 1
        assert refused.stderr == "Error: Cannot cancel run with status 'completed'.\n"
        down = go("ls", "--store", UNREACHABLE)
        assert down.returncode == 1
        assert len(down.stderr.splitlines()) == 1
        assert "Traceback" not in down.stderr
        usage = go("ls", "--limit", "0")
        assert usage.returncode == 2
        swept = go("sweep", "--json")
        assert json.loads(swept.stdout)["swept"] == 2  # ls expired the overdue run already
        assert RunStatus(wire(go("show", ids["lapsed"]).stdout)["status"]) is RunStatus.FAILED
