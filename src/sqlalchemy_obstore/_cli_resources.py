"""What a command works on: the `--app` application, its file columns and backends, the database.

`Application` loads the `--app` targets once (see `_cli_app`) and answers for the models,
registries and engines they hold; `find_database` picks the database (`--database-url`,
the application's engine, `$DATABASE_URL`); `with_database` runs a command's work over a
sync `Engine` (an async database's inside SQLAlchemy's greenlet bridge); `probe` checks
that a backend answers. Failures are `Failure`s with the documented exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from . import _io
from ._cli_app import (
    AppLoadError,
    Runtime,
    Target,
    app_metadata,
    find_engines,
    find_registries,
    load_targets,
    loaded_metadata,
)
from ._cli_output import EXIT_UNAVAILABLE, EXIT_USAGE, Failure, error_line
from ._errors import StorageError, redact
from ._gc import FileColumn, find_file_columns
from ._registry import BackendRegistry, storages
from .backends import Backend

__all__ = (
    "Application",
    "Database",
    "check_backends",
    "create_engine_for",
    "file_columns",
    "find_database",
    "probe",
    "probe_error",
    "resolve_backend",
    "with_database",
)

_T = TypeVar("_T")


class Application:
    """The `--app` targets of one command: loaded and started once, asked for what they hold.

    Loading imports the modules and resolves each target; an application among them (or
    the one Litestar's CLI hands over) has its startup run on the command's `Runtime`,
    so that the backends its plugin or lifespan registers are registered and the engine
    it creates is reachable. stdout is kept for the command's own output meanwhile.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        runtime: Runtime,
        err_stream: IO[str],
        preloaded: Target | None = None,
    ) -> None:
        self.args = args
        self.runtime = runtime
        self.err_stream = err_stream
        self.preloaded = preloaded
        self.targets: list[Target] = []
        self.started: list[tuple[Target, dict[str, Any]]] = []
        self._loaded = False

    @property
    def given(self) -> bool:
        return bool(self.args.app) or self.preloaded is not None

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        with contextlib.redirect_stdout(self.err_stream):  # an app's prints never reach --json
            try:
                self.targets = load_targets(self.args.app, self.args.debug)
                if self.preloaded is not None:
                    self.targets.insert(0, self.preloaded)
                for target in self.targets:
                    if target.app is not None:
                        self.started.append((target, self.runtime.start(target)))
            except AppLoadError as exc:
                code = EXIT_UNAVAILABLE if exc.unavailable else EXIT_USAGE
                raise Failure(code, exc.message) from exc

    def describe(self) -> str:
        """What was tried, for error messages."""
        modules = [t.spec for t in self.targets if t.module is not None]
        parts = [f"imported {', '.join(modules)}"] if modules else []
        parts += [f"started {target.app_name}" for target, _ in self.started]
        return "; ".join(parts) or "no --app given"

    def metadata(self) -> list[MetaData]:
        self.load()
        found: dict[int, MetaData] = {}
        for target in self.targets:
            for metadata in target.metadata:
                found.setdefault(id(metadata), metadata)
        if not found:  # only applications named: the models they name, else every base loaded
            for target, _ in self.started:
                for metadata in app_metadata(target):
                    found.setdefault(id(metadata), metadata)
            if not found and self.started:
                return loaded_metadata()
        return list(found.values())

    def registries(self, columns: Iterable[FileColumn] = ()) -> list[BackendRegistry]:
        self.load()
        registries = [storages]
        candidates = [column.stored_type.registry for column in columns]
        candidates += find_registries(self.started)
        for registry in candidates:
            if registry is not None and all(registry is not r for r in registries):
                registries.append(registry)
        return registries

    def engines(self) -> list[tuple[str, Engine | AsyncEngine]]:
        self.load()
        return find_engines([*self.started, *((t, {}) for t in self.targets if t.app is None)])


def file_columns(app: Application) -> list[FileColumn]:
    """The `StoredObject` columns of the `--app` models (a `Failure` if there are none)."""
    if not app.given:
        raise Failure(
            EXIT_USAGE,
            "no --app given: name the module that registers the backends and declares the "
            "models, e.g. --app myapp.models (or --app myapp.models:Base), or the "
            "application, e.g. --app myapp.main:app or --app myapp.main:create_app.",
        )
    columns = find_file_columns(app.metadata())
    if not columns:
        raise Failure(
            EXIT_USAGE,
            f"no StoredObject column found ({app.describe()}); name the declarative "
            "base or MetaData explicitly (--app module:Base).",
        )
    return columns


def resolve_backend(
    key: str, columns: Sequence[FileColumn], app: Application, what: str
) -> Backend:
    """The backend registered under `key` (`what` names it in the error if none is)."""
    for column in columns:
        registry = column.stored_type.registry
        if registry is not None and key in registry:
            return registry.get_backend(key)
    registries = app.registries(columns)
    for registry in registries:
        if key in registry:
            return registry.get_backend(key)
    known = sorted({k for r in registries for k in r})
    raise Failure(
        EXIT_USAGE,
        f"{what} {key!r} is not registered (registered: {', '.join(known) or 'none'}; "
        f"{app.describe()}); does an --app module register it, or the application's "
        "startup?",
    )


@dataclass
class Database:
    """The database a command works on: its URL, sync or async, and where it came from."""

    url: URL
    is_async: bool
    engine: Engine | AsyncEngine | None = None  # the application's own engine
    origin: str = "--database-url"

    @property
    def shown(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def scrub(self, message: str) -> str:
        password = self.url.password
        if password:
            message = message.replace(str(password), "***")
        return redact(message)


def find_database(app: Application, *, required: bool = True) -> Database | None:
    """The database: `--database-url`, else the engine the application holds, else $DATABASE_URL."""
    args = app.args
    if args.database_url:
        return _database_from_url(args.database_url, "--database-url")
    if app.given:
        engines = app.engines()
        distinct = {(str(e.url), isinstance(e, AsyncEngine)) for _, e in engines}
        if len(distinct) > 1:
            found = ", ".join(
                f"{where} ({e.url.render_as_string(hide_password=True)})" for where, e in engines
            )
            raise Failure(
                EXIT_USAGE,
                f"the application holds several database engines: {found}; pass "
                "--database-url to choose.",
            )
        if engines:
            where, engine = engines[0]
            return Database(engine.url, isinstance(engine, AsyncEngine), engine, where)
    raw = os.environ.get("DATABASE_URL")
    if raw:
        return _database_from_url(raw, "DATABASE_URL")
    if not required:
        return None
    message = "no database: pass --database-url or set DATABASE_URL"
    if app.started:
        message += (
            f" ({app.describe()}; no SQLAlchemy Engine, AsyncEngine or sessionmaker was "
            "found in the application's state, its lifespan state (advanced-alchemy's "
            "SQLAlchemyPlugin keeps its engine in app.state) or the module's globals)"
        )
    elif app.given:
        message += (
            f" ({app.describe()}: no Engine, AsyncEngine or sessionmaker among its globals; "
            "an --app naming the application finds the engine it holds)"
        )
    raise Failure(EXIT_USAGE, message + ".")


def _database_from_url(raw: str, origin: str) -> Database:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise Failure(
            EXIT_USAGE, "the database URL could not be parsed (not shown: it may hold a password)."
        ) from None
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise Failure(
            EXIT_USAGE, f"unknown database dialect or driver {url.drivername!r}."
        ) from None
    database = Database(url, bool(getattr(dialect, "is_async", False)), None, origin)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        file = url.database
        if not file.startswith("file:") and not Path(file).exists():
            raise Failure(
                EXIT_USAGE, f"the SQLite database file {file!r} does not exist (check the URL)."
            )
    return database


def _check_tables(connection: Connection, tables: Sequence[Table]) -> None:
    inspector = inspect(connection)
    missing = [t.fullname for t in tables if not inspector.has_table(t.name, schema=t.schema)]
    if missing:
        raise Failure(
            EXIT_USAGE,
            f"table(s) {', '.join(missing)} not found in the database (wrong URL, or "
            "migrations not applied?).",
        )


def _unreachable_database(database: Database, exc: BaseException) -> Failure:
    return Failure(
        EXIT_UNAVAILABLE,
        f"cannot reach the database {database.shown}: {database.scrub(error_line(exc))}",
    )


def create_engine_for(database: Database) -> Any:
    """The application's engine, or a new one for the URL (a `Failure` without a driver)."""
    if database.engine is not None:
        return database.engine
    try:
        if database.is_async:
            return create_async_engine(database.url)
        return create_engine(database.url)
    except ImportError as exc:
        raise Failure(
            EXIT_USAGE,
            f"the database driver for {database.url.drivername!r} is not installed "
            f"({exc.name or error_line(exc)}).",
        ) from None


def with_database(
    runtime: Runtime,
    database: Database,
    tables: Sequence[Table],
    work: Callable[[Engine], _T],
) -> _T:
    """Connect (checking the tables exist), then run the work; dispose.

    The work is sync code over a sync `Engine`. An async database's engine lends its
    sync engine and the work runs in SQLAlchemy's greenlet bridge on the command's loop,
    so storage is called through obstore's async API (see `_io`). The application's own
    engine is disposed too: its connections belong to this command's event loop, which
    ends with the command.
    """

    def connected(engine: Engine) -> _T:
        try:
            try:
                with engine.connect() as connection:
                    _check_tables(connection, tables)
            except (DBAPIError, OSError) as exc:
                raise _unreachable_database(database, exc) from exc
            return work(engine)
        finally:
            engine.dispose()

    engine = create_engine_for(database)
    if isinstance(engine, AsyncEngine):
        return runtime.run(_io.bridge(connected, engine.sync_engine))
    return connected(engine)


def probe(backend: Backend) -> None:
    """Read one listing page under the backend's prefix (raises if it does not answer)."""
    objects = _io.iterate(backend.list_objects, backend.list_objects_async, backend.prefix)
    try:
        next(objects, None)
    finally:
        objects.close()


def probe_error(backend: Backend, exc: BaseException) -> str:
    """A probe's failure as one redacted line."""
    if isinstance(exc, StorageError):
        return redact(error_line(exc))
    return redact(f"{type(exc).__name__}: {error_line(exc)}")


def check_backends(backends: Sequence[Backend]) -> None:
    """Probe each backend; a `Failure` (exit 3) for the first that does not answer."""
    for backend in backends:
        try:
            probe(backend)
        except Exception as exc:
            raise _unreachable_backend(backend, exc) from exc


def _unreachable_backend(backend: Backend, exc: BaseException) -> Failure:
    return Failure(
        EXIT_UNAVAILABLE, f"backend {backend.key!r} is not reachable: {probe_error(backend, exc)}"
    )
