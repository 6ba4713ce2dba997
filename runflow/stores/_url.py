"""Open a store from a URL: ``memory://``, ``sqlite:///path`` or ``postgresql://...``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from runflow.exceptions import StoreError
from runflow.stores._base import Store
from runflow.stores._sql import mask_password

__all__ = ["open_store"]

_FORMS = (
    "memory://, sqlite:///relative.db, sqlite:////absolute.db, sqlite://:memory: "
    "or postgresql://user@host:port/db"
)
#: Query keys of a PostgreSQL URL that are runflow's options, not libpq's.
_PG_OPTIONS: dict[str, type] = {
    "schema": str,
    "min_size": int,
    "max_size": int,
    "connect_timeout": float,
    "retry_for": float,
}


def open_store(url: str, **options: Any) -> Store:
    """
    Open the store a URL names.

    ============================  =========================================================
    ``memory://``                 a new :class:`runflow.stores.MemoryStore` (this process)
    ``sqlite:///runs.db``         :class:`runflow.stores.SQLiteStore` on ``runs.db``
                                  (relative to the working directory)
    ``sqlite:////var/runs.db``    the same, on an absolute path
    ``sqlite://:memory:``         a private in-memory SQLite database
    ``postgresql://u@h:5432/db``  :class:`runflow.stores.postgres.PostgresStore`
                                  (also ``postgres://``; libpq parameters such as
                                  ``?sslmode=require`` pass through, and ``?schema=``
                                  picks the PostgreSQL schema of the tables)
    ============================  =========================================================

    Args:
        url: The store's URL.
        options: Keyword arguments for the store's class (``timeout=`` for SQLite;
            ``schema=``, ``max_size=``, ``retry_for=``… for PostgreSQL).

    Raises:
        runflow.StoreError: an unknown scheme, a malformed URL, the ``postgres``
            extra not installed, or the store cannot be opened. The message names
            the URL with any password masked.

    .. versionadded:: 0.1.0
    """
    shown = mask_password(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise StoreError(f"not a store URL: {shown!r}; use {_FORMS}", url=shown)
    if scheme == "memory":
        if rest.strip("/"):
            msg = f"a memory store URL takes no path: {shown!r}; use memory://"
            raise StoreError(msg, url=shown)
        from runflow.stores import MemoryStore  # noqa: PLC0415 - the package imports this module

        store: Store = MemoryStore(**options)
        return store
    if scheme == "sqlite":
        return _sqlite(rest, shown, options)
    if scheme in {"postgresql", "postgres"}:
        return _postgres(url, shown, options)
    msg = f"unsupported store URL scheme {scheme!r} in {shown!r}; use {_FORMS}"
    raise StoreError(msg, url=shown)


def _sqlite(rest: str, shown: str, options: dict[str, Any]) -> Store:
    from runflow.stores._sqlite import SQLiteStore  # noqa: PLC0415 - load on demand

    if rest in {":memory:", "/:memory:"}:
        path = ":memory:"
    elif rest.startswith("/") and rest.strip("/"):
        path = rest[1:]  # sqlite:///runs.db -> runs.db; sqlite:////var/x.db -> /var/x.db
        if "?" in path or "#" in path:
            msg = f"a SQLite store URL takes no query: {shown!r}; pass options as arguments"
            raise StoreError(msg, url=shown)
    else:
        msg = (
            f"not a SQLite store URL: {shown!r}; use sqlite:///relative.db, "
            "sqlite:////absolute.db or sqlite://:memory:"
        )
        raise StoreError(msg, url=shown)
    return SQLiteStore(path, **options)


def _postgres(url: str, shown: str, options: dict[str, Any]) -> Store:
    try:
        from runflow.stores.postgres import PostgresStore  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        msg = (
            f"cannot open {shown!r}: the PostgreSQL store needs the postgres extra: "
            "pip install 'runflow-engine[postgres]'"
        )
        raise StoreError(msg, url=shown) from exc
    except StoreError as exc:
        raise StoreError(f"cannot open {shown!r}: {exc}", url=shown) from exc.__cause__
    base, _, query = url.partition("?")
    keep: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        kind = _PG_OPTIONS.get(key)
        if kind is None:
            keep.append((key, value))
            continue
        try:
            options.setdefault(key, kind(value))
        except ValueError as exc:
            msg = f"bad {key}={value!r} in the store URL {shown!r}"
            raise StoreError(msg, url=shown) from exc
    conninfo = f"{base}?{urlencode(keep)}" if keep else base
    store: Store = PostgresStore(conninfo, **options)
    return store
