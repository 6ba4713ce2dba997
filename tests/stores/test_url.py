"""open_store(): every URL form, and a clear StoreError for every bad one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from store_workers import create, new_run

from runflow import StoreError
from runflow.stores import MemoryStore
from runflow.stores._sqlite import SQLiteStore
from runflow.stores._url import open_store


class TestForms:
    def test_memory(self) -> None:
        """memory:// is a new MemoryStore."""
        assert isinstance(open_store("memory://"), MemoryStore)

    def test_sqlite_relative_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """sqlite:///runs.db is relative to the working directory."""
        monkeypatch.chdir(tmp_path)
        store = open_store("sqlite:///data/runs.db")
        assert isinstance(store, SQLiteStore)
        create(store, new_run("run_a"))
        store.close()
        assert (tmp_path / "data" / "runs.db").exists()

    def test_sqlite_absolute_path(self, tmp_path: Path) -> None:
        """sqlite:////abs/path.db is an absolute path; options reach the store."""
        path = tmp_path / "abs.db"
        store = open_store(f"sqlite:///{path}", timeout=1.5)
        assert isinstance(store, SQLiteStore)
        assert store.path == str(path)
        assert store.url == f"sqlite:///{path}"
        store.close()

    @pytest.mark.parametrize("url", ["sqlite://:memory:", "sqlite:///:memory:"])
    def test_sqlite_memory(self, url: str) -> None:
        """sqlite://:memory: is a private in-memory database."""
        store = open_store(url)
        assert isinstance(store, SQLiteStore)
        assert store.path == ":memory:"
        create(store, new_run("run_a"))
        assert store.get("run_a") is not None
        store.close()

    @pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
    def test_postgres(self, scheme: str, pg_dsn: str, pg_schema: str) -> None:
        """postgresql:// and postgres:// open a PostgresStore; ?schema= is runflow's."""
        from runflow.stores.postgres import PostgresStore  # noqa: PLC0415

        url = pg_dsn.replace("postgresql://", f"{scheme}://", 1)
        store = open_store(f"{url}?schema={pg_schema}&connect_timeout=5&sslmode=disable")
        assert isinstance(store, PostgresStore)
        assert store.schema == pg_schema
        create(store, new_run("run_a"))
        store.close()


class TestBadURLs:
    @pytest.mark.parametrize(
        ("url", "match"),
        [
            ("mysql://root:s3cret@db/runs", "unsupported store URL scheme 'mysql'"),
            ("runs.db", "not a store URL"),
            ("sqlite://", "not a SQLite store URL"),
            ("sqlite://host/runs.db", "not a SQLite store URL"),
            ("sqlite:///", "not a SQLite store URL"),
            ("sqlite:///runs.db?mode=ro", "takes no query"),
            ("memory://somewhere", "takes no path"),
        ],
    )
    def test_refused_with_the_url(self, url: str, match: str) -> None:
        """A bad URL raises StoreError naming it, with any password masked."""
        with pytest.raises(StoreError, match=match) as info:
            open_store(url)
        assert "s3cret" not in str(info.value)
        assert "s3cret" not in info.value.url

    def test_bad_runflow_option_in_a_postgres_url(self) -> None:
        """A runflow option in a PostgreSQL URL must have the right type."""
        with pytest.raises(StoreError, match="bad max_size='many'"):
            open_store("postgresql://u:s3cret@127.0.0.1:1/db?max_size=many")

    def test_unreachable_postgres(self) -> None:
        """An unreachable server is a StoreError naming host:port/db, password masked."""
        with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/db") as info:
            open_store("postgresql://u:s3cret@127.0.0.1:1/db", connect_timeout=2)
        assert "s3cret" not in str(info.value)
        assert info.value.__cause__ is not None

    def test_missing_postgres_extra(self) -> None:
        """Without psycopg, a PostgreSQL URL says which extra to install."""
        code = (
            "import sys; sys.modules['psycopg'] = None\n"
            "from runflow.stores._url import open_store\n"
            "from runflow import StoreError\n"
            "try:\n"
            "    open_store('postgresql://u:s3cret@localhost/db')\n"
            "except StoreError as exc:\n"
            "    assert exc.__cause__ is not None\n"
            "    print(exc)\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_START"}
        result = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        assert "pip install 'runflow-engine[postgres]'" in result.stdout
        assert "s3cret" not in result.stdout
