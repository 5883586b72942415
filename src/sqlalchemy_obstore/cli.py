"""The `sqlalchemy-obstore` command line: garbage collection, verification, migration, checks.

```text
sqlalchemy-obstore gc       --app myapp.models [--delete --yes] [--grace-period 24h]
sqlalchemy-obstore verify   --app myapp.models [--checksums]
sqlalchemy-obstore migrate  --app myapp.models --from local --to s3 --yes
sqlalchemy-obstore backends --app myapp.models [--check]
```

(`python -m sqlalchemy_obstore ...` is the same; with the Litestar plugin, `litestar
storage ...` too.) Every command takes one or more `--app module[:attribute]` targets:

- a module that registers the backends and declares the models when it is imported;
  the file columns are found in the named attribute (a `MetaData`, a declarative base
  or a list of them) or, without one, in every declarative base and `MetaData` the
  module holds;
- an application (Litestar, Starlette, FastAPI: `--app myapp.main:app`), or a function
  returning one (`--app myapp.main:create_app`), or a module holding one (its `app`,
  `application`, or `create_app()`): its startup runs first through the ASGI lifespan
  protocol (the backends the Litestar plugin or a lifespan registers are registered;
  the engine it creates is there), and its shutdown at the end. Without models named,
  the application's are used: advanced-alchemy's `metadata`, else the declarative
  bases of the module defining the application (or its factory), else every
  declarative base loaded.

The database is `--database-url`, else the engine the application holds (in its state,
its lifespan state, advanced-alchemy's `SQLAlchemyPlugin`, or the module's globals),
else the `DATABASE_URL` environment variable. An async URL or engine
(`postgresql+asyncpg://`, `sqlite+aiosqlite://`) runs the async API, a sync one the
sync API.

Output: a summary table on stdout (and a progress line on stderr when stderr is a
terminal), or with `--json` one JSON document on stdout and nothing else. Errors are one
line on stderr, without a traceback unless `--debug` is given, and never show secrets.

Exit codes:

- `0`: success; nothing wrong found.
- `1`: problems found: broken references (`verify`), orphans (or stale incomplete
  multipart uploads) in a dry run with `--fail-on-orphans` (`gc`), an incomplete
  migration (`migrate`), a bucket without a rule that aborts incomplete multipart
  uploads (`backends --check`).
- `2`: usage or configuration error: a bad option, a missing `--yes`, a module that
  cannot be imported, an application whose startup fails, a backend that is not
  registered, a missing table.
- `3`: the database or a storage backend is unreachable, or an operation on it failed.
- `70`: an unexpected internal error (a bug: run again with `--debug` and report it).
- `130`: interrupted (Ctrl-C).

**Clean exit.** obstore runs its async I/O on a Rust (tokio) runtime whose threads can
race the interpreter's shutdown and abort the process (SIGABRT, exit status 134) right
after async network calls. [`main`][sqlalchemy_obstore.cli.main] therefore disposes the
engines, flushes stdout and stderr and ends the process with `os._exit`, skipping the
interpreter shutdown: the exit status is always the one documented above.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from . import __version__, _io, _multipart
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
from .backends import Backend
from .errors import ConfigurationError, StorageError, redact
from .gc import (
    DEFAULT_GRACE_PERIOD,
    MIN_GRACE_PERIOD,
    FileColumn,
    GarbageReport,
    VerificationReport,
    collect_garbage,
    find_file_columns,
    verify_references,
)
from .registry import BackendRegistry, storages

__all__ = (
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "main",
    "parse_duration",
    "run",
)

EXIT_OK = 0
"""Success; nothing wrong was found."""
EXIT_PROBLEMS = 1
"""Problems were found (broken references, orphans with `--fail-on-orphans`, ...)."""
EXIT_USAGE = 2
"""A usage or configuration error."""
EXIT_UNAVAILABLE = 3
"""The database or a storage backend is unreachable, or an operation on it failed."""
EXIT_INTERNAL_ERROR = 70
"""An unexpected error (a bug)."""
EXIT_INTERRUPTED = 130
"""Interrupted by Ctrl-C (SIGINT)."""

PROG = "sqlalchemy-obstore"
_T = TypeVar("_T")


class _Failure(Exception):
    """Ends a command with a one-line message and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _seconds_text(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


# -- argument parsing ---------------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([wdhms]?)", re.IGNORECASE)
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(value: str) -> timedelta:
    """Parse a duration such as `24h`, `30m`, `90s`, `7d`, `1h30m` or `3600` (seconds).

    Args:
        value: Numbers, each followed by a unit (`w`, `d`, `h`, `m`, `s`; none means
            seconds).

    Returns:
        The duration.

    Raises:
        ValueError: If `value` is not a duration.

    Example:
        >>> parse_duration("1h30m"), parse_duration("90")
        (datetime.timedelta(seconds=5400), datetime.timedelta(seconds=90))
    """
    text_ = value.strip()
    seconds, position = 0.0, 0
    while position < len(text_):
        match = _DURATION.match(text_, position)
        if match is None:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2).lower()]
        position = match.end()
        while position < len(text_) and text_[position] in " ,":
            position += 1
    if not text_ or position != len(text_):
        raise ValueError(f"{value!r} is not a duration; use e.g. 24h, 30m, 90s, 7d or 3600.")
    return timedelta(seconds=seconds)


def _duration(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Failure(EXIT_USAGE, f"{message} (see `{self.prog} --help`)")


_EPILOG = """\
exit codes: 0 ok, 1 problems found, 2 usage or configuration error,
3 database or storage unreachable (or an operation on it failed), 70 internal error,
130 interrupted."""


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help="SQLAlchemy database URL (default: the engine the --app application holds, "
        "else $DATABASE_URL); an async driver (+asyncpg, +aiosqlite) runs the async API",
    )
    common.add_argument(
        "--app",
        metavar="MODULE[:ATTR]",
        action="append",
        default=[],
        help="module or application to load (repeatable). A module registers the "
        "backends and declares the models when imported; ATTR names a MetaData, "
        "declarative base or list of them, or a Litestar/Starlette/FastAPI app (or a "
        "function returning one, e.g. myapp:create_app) whose startup runs first, so "
        "the backends its plugin or lifespan registers and the engine it holds are used "
        "(default: every base and MetaData in the module, and its app or create_app())",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document only")
    common.add_argument("--no-progress", action="store_true", help="no progress line")
    common.add_argument("--debug", action="store_true", help="show tracebacks and log INFO")

    parser = _Parser(
        prog=prog,
        description="Operate sqlalchemy-obstore file columns: garbage collection, reference "
        "verification, migration between backends and backend checks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="show the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gc = sub.add_parser(
        "gc",
        parents=[common],
        help="find (and delete) objects no row references",
        description="List each backend's managed prefix and report (or, with --delete "
        "--yes, delete) the objects that no row references and that are older than the "
        "grace period. A dry run by default.",
        epilog=_EPILOG,
    )
    mode = gc.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only report (the default)")
    mode.add_argument("--delete", action="store_true", help="delete the orphans (needs --yes)")
    gc.add_argument("--yes", action="store_true", help="confirm a destructive run")
    gc.add_argument(
        "--grace-period",
        type=_duration,
        default=DEFAULT_GRACE_PERIOD,
        metavar="DURATION",
        help="keep unreferenced objects younger than this (24h, 30m, 90s, 7d; default 24h); "
        f"--delete refuses less than {_seconds_text(MIN_GRACE_PERIOD)}",
    )
    gc.add_argument(
        "--unsafe-grace-period",
        action="store_true",
        help=f"let --delete use a grace period under {_seconds_text(MIN_GRACE_PERIOD)}: "
        "uploads of transactions in flight are deleted and their rows break; only when "
        "no application is writing",
    )
    gc.add_argument(
        "--backend",
        action="append",
        default=None,
        metavar="KEY",
        help="collect in this backend only (repeatable; default: every backend in use)",
    )
    gc.add_argument(
        "--fail-on-orphans",
        action="store_true",
        help="exit with 1 when a dry run finds orphans (for CI and monitoring)",
    )
    gc.add_argument(
        "--batch-size",
        type=_positive,
        default=1000,
        metavar="N",
        help="rows per fetch, objects per listing page and per delete (default %(default)s)",
    )
    gc.add_argument(
        "--report-limit",
        type=_positive,
        default=1000,
        metavar="N",
        help="orphan paths listed per backend in a dry run (default 1000)",
    )

    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="find rows whose object is missing or changed",
        description="Check that every referenced object exists with the recorded size "
        "(and, with --checksums, the recorded checksum).",
        epilog=_EPILOG,
    )
    verify.add_argument(
        "--checksums", action="store_true", help="also read every object back and hash it"
    )
    verify.add_argument(
        "--batch-size",
        type=_positive,
        default=1000,
        metavar="N",
        help="rows per fetch (default %(default)s)",
    )

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="copy referenced objects to another backend and rewrite the rows",
        description="Copy every object referenced in backend FROM to backend TO, rewrite "
        "the rows, verify, and optionally delete the source objects. Resumable and "
        "idempotent: run it again after an interruption.",
        epilog=_EPILOG,
    )
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="KEY",
        help="the backend whose objects move (required)",
    )
    migrate.add_argument(
        "--to",
        dest="destination",
        required=True,
        metavar="KEY",
        help="the backend they move to; registered like the source (required)",
    )
    migrate.add_argument(
        "--delete-source", action="store_true", help="delete source objects once verified"
    )
    migrate.add_argument("--yes", action="store_true", help="confirm (rows are rewritten)")
    migrate.add_argument("--dry-run", action="store_true", help="only report what would move")
    migrate.add_argument(
        "--concurrency",
        type=_positive,
        default=8,
        metavar="N",
        help="objects copied at once (default %(default)s)",
    )
    migrate.add_argument(
        "--batch-size",
        type=_positive,
        default=500,
        metavar="N",
        help="rows per batch; each batch is committed (default %(default)s)",
    )

    backends = sub.add_parser(
        "backends",
        parents=[common],
        help="list the registered backends and check that each is reachable",
        description="List every registered backend (without secrets) and check it: one "
        "listing page under its prefix. With a database URL, the database is checked too.",
        epilog=_EPILOG,
    )
    backends.add_argument(
        "--check",
        action="store_true",
        help="also check the store's settings: whether the bucket aborts incomplete "
        "multipart uploads by itself (an AbortIncompleteMultipartUpload lifecycle rule); "
        "exit 1 when an S3 bucket has none",
    )
    return parser


# -- progress -------------------------------------------------------------------------------------
class _ProgressLine:
    """A one-line progress display on a terminal: count, bar when the total is known, rate."""

    def __init__(self, stream: IO[str] | None, label: str) -> None:
        self.stream = stream
        self.label = label
        self.key: tuple[str, str] = ("", "")
        self.start = self.last = 0.0
        self.start_done = 0
        self.width = 0

    def __call__(self, update: Any) -> None:
        if self.stream is None:
            return
        phase = str(getattr(update, "phase", "") or "")
        backend = str(getattr(update, "backend", None) or getattr(update, "table", "") or "")
        total = getattr(update, "total", None)
        extra = ""
        if hasattr(update, "done"):  # gc.Progress
            done = int(update.done)
        elif phase == "delete":  # migrate.MigrationProgress
            done = int(getattr(update, "objects_deleted", 0))
        else:
            done = int(getattr(update, "objects_copied", 0)) + int(
                getattr(update, "objects_skipped", 0)
            )
            extra = (
                f" objects, {int(getattr(update, 'rows_rewritten', 0)):,} rows rewritten, "
                f"{_size(int(getattr(update, 'bytes_copied', 0)))} copied"
            )
        now = time.monotonic()
        if (phase, backend) != self.key:
            self.key, self.start, self.start_done, self.last = (phase, backend), now, done, 0.0
        elif now - self.last < 0.1:
            return
        self.last = now
        elapsed = now - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        where = " ".join(part for part in (phase or self.label, backend) if part)
        line = f"{where}: {done:,}{extra}"
        if isinstance(total, int) and total > 0:
            share = min(done / total, 1.0)
            filled = int(share * 20)
            line = f"{where}: [{'#' * filled}{'.' * (20 - filled)}] {done:,}/{total:,}"
            line += f" {share:4.0%}"
        if elapsed > 0:
            line += f"  {rate:,.0f}/s"
        self._draw(line)

    def _draw(self, line: str) -> None:
        assert self.stream is not None
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def close(self) -> None:
        """Erase the line (the summary follows on stdout)."""
        if self.stream is not None and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


# -- the application: modules, targets, database ------------------------------------------------
class _Application:
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
                raise _Failure(code, exc.message) from exc

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


def _file_columns(app: _Application) -> list[FileColumn]:
    if not app.given:
        raise _Failure(
            EXIT_USAGE,
            "no --app given: name the module that registers the backends and declares the "
            "models, e.g. --app myapp.models (or --app myapp.models:Base), or the "
            "application, e.g. --app myapp.main:app or --app myapp.main:create_app.",
        )
    columns = find_file_columns(app.metadata())
    if not columns:
        raise _Failure(
            EXIT_USAGE,
            f"no StoredObject column found ({app.describe()}); name the declarative "
            "base or MetaData explicitly (--app module:Base).",
        )
    return columns


def _resolve(key: str, columns: Sequence[FileColumn], app: _Application, what: str) -> Backend:
    for column in columns:
        registry = column.stored_type.registry
        if registry is not None and key in registry:
            return registry.get_backend(key)
    registries = app.registries(columns)
    for registry in registries:
        if key in registry:
            return registry.get_backend(key)
    known = sorted({k for r in registries for k in r})
    raise _Failure(
        EXIT_USAGE,
        f"{what} {key!r} is not registered (registered: {', '.join(known) or 'none'}; "
        f"{app.describe()}); does an --app module register it, or the application's "
        "startup?",
    )


@dataclass
class _Database:
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


def _database(app: _Application, *, required: bool = True) -> _Database | None:
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
            raise _Failure(
                EXIT_USAGE,
                f"the application holds several database engines: {found}; pass "
                "--database-url to choose.",
            )
        if engines:
            where, engine = engines[0]
            return _Database(engine.url, isinstance(engine, AsyncEngine), engine, where)
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
    raise _Failure(EXIT_USAGE, message + ".")


def _database_from_url(raw: str, origin: str) -> _Database:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise _Failure(
            EXIT_USAGE, "the database URL could not be parsed (not shown: it may hold a password)."
        ) from None
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise _Failure(
            EXIT_USAGE, f"unknown database dialect or driver {url.drivername!r}."
        ) from None
    database = _Database(url, bool(getattr(dialect, "is_async", False)), None, origin)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        file = url.database
        if not file.startswith("file:") and not Path(file).exists():
            raise _Failure(
                EXIT_USAGE, f"the SQLite database file {file!r} does not exist (check the URL)."
            )
    return database


def _check_tables(connection: Connection, tables: Sequence[Table]) -> None:
    inspector = inspect(connection)
    missing = [t.fullname for t in tables if not inspector.has_table(t.name, schema=t.schema)]
    if missing:
        raise _Failure(
            EXIT_USAGE,
            f"table(s) {', '.join(missing)} not found in the database (wrong URL, or "
            "migrations not applied?).",
        )


def _unreachable_database(database: _Database, exc: BaseException) -> _Failure:
    return _Failure(
        EXIT_UNAVAILABLE,
        f"cannot reach the database {database.shown}: {database.scrub(_line(exc))}",
    )


def _create_engine(database: _Database) -> Any:
    if database.engine is not None:
        return database.engine
    try:
        if database.is_async:
            return create_async_engine(database.url)
        return create_engine(database.url)
    except ImportError as exc:
        raise _Failure(
            EXIT_USAGE,
            f"the database driver for {database.url.drivername!r} is not installed "
            f"({exc.name or _line(exc)}).",
        ) from None


def _with_database(
    runtime: Runtime,
    database: _Database,
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

    engine = _create_engine(database)
    if isinstance(engine, AsyncEngine):
        return runtime.run(_io.bridge(connected, engine.sync_engine))
    return connected(engine)


# -- backend probes -------------------------------------------------------------------------------
def _probe(backend: Backend) -> None:
    objects = _io.iterate(backend.list_objects, backend.list_objects_async, backend.prefix)
    try:
        next(objects, None)
    finally:
        objects.close()


def _probe_error(backend: Backend, exc: BaseException) -> str:
    if isinstance(exc, StorageError):
        return redact(_line(exc))
    return redact(f"{type(exc).__name__}: {_line(exc)}")


def _check_backends(backends: Sequence[Backend]) -> None:
    for backend in backends:
        try:
            _probe(backend)
        except Exception as exc:
            raise _unreachable_backend(backend, exc) from exc


def _unreachable_backend(backend: Backend, exc: BaseException) -> _Failure:
    return _Failure(
        EXIT_UNAVAILABLE, f"backend {backend.key!r} is not reachable: {_probe_error(backend, exc)}"
    )


# -- output ---------------------------------------------------------------------------------------
def _line(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def _table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    body = [[str(c) for c in row] for row in rows]
    cells = body if headers is None else [list(headers), *body]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


class _Output:
    def __init__(
        self, args: argparse.Namespace, stdout: IO[str], stderr: IO[str], prog: str = PROG
    ) -> None:
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self.prog = prog
        self.warnings: list[str] = []
        self.json = bool(getattr(args, "json", False))
        show = not self.json and not getattr(args, "no_progress", False) and _isatty(stderr)
        self.progress = _ProgressLine(stderr if show else None, getattr(args, "command", ""))

    def print(self, text_: str = "") -> None:
        self.stdout.write(text_ + "\n")

    def warn(self, message: str) -> None:
        """A warning on stderr (and in the `--json` document's `warnings`)."""
        self.warnings.append(message)
        self.stderr.write(f"{self.prog}: WARNING: {message}\n")

    def document(self, data: Mapping[str, Any]) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- commands -------------------------------------------------------------------------------------
def _uploads_document(uploads: Any) -> dict[str, Any]:
    return {
        "checked": uploads.checked,
        "note": uploads.note,
        "found": uploads.found,
        "too_young": uploads.too_young,
        "stale": uploads.stale,
        "aborted": uploads.aborted,
        "stale_paths": list(uploads.stale_paths),
        "too_young_paths": list(uploads.too_young_paths),
    }


def _gc_document(report: GarbageReport, grace: timedelta, code: int) -> dict[str, Any]:
    return {
        "command": "gc",
        "ok": code == EXIT_OK,
        "exit_code": code,
        "dry_run": report.dry_run,
        "started_at": report.started_at.isoformat(),
        "cutoff": report.cutoff.isoformat(),
        "grace_period_seconds": grace.total_seconds(),
        "min_grace_period_seconds": MIN_GRACE_PERIOD.total_seconds(),
        "unsafe_grace_period": report.unsafe_grace_period,
        "references": report.references,
        "totals": {
            "scanned": report.scanned,
            "referenced": report.referenced,
            "too_young": report.too_young,
            "orphaned": report.orphaned,
            "deleted": report.deleted,
            "bytes_freed": report.bytes_freed,
            "incomplete_uploads": report.incomplete_uploads,
            "incomplete_uploads_stale": report.incomplete_uploads_stale,
            "incomplete_uploads_aborted": report.incomplete_uploads_aborted,
        },
        "backends": {
            key: {
                "prefix": b.prefix,
                "scanned": b.scanned,
                "referenced": b.referenced,
                "too_young": b.too_young,
                "orphaned": b.orphaned,
                "deleted": b.deleted,
                "bytes_freed": b.bytes_freed,
                "orphan_paths": list(b.orphan_paths),
                "orphan_paths_truncated": b.orphan_paths_truncated,
                "too_young_paths": list(b.too_young_paths),
                "too_young_paths_truncated": b.too_young_paths_truncated,
                "incomplete_uploads": _uploads_document(b.incomplete_uploads),
                "errors": list(b.errors),
            }
            for key, b in report.backends.items()
        },
        "errors": report.all_errors,
    }


def _warn_about_roots(backends: Sequence[Backend], out: _Output) -> None:
    """Warn when `gc` manages a whole bucket (or directory): a backend without a prefix."""
    for backend in backends:
        if not backend.prefix and getattr(backend, "kind", None) != "memory":
            out.warn(
                f"backend {backend.key!r} has no prefix, so gc manages the whole root of "
                f"{backend.describe()}: every object there that no row references counts as "
                "an orphan, also files other applications or tools put there. Give the "
                f'backend a prefix of its own (ObstoreBackend("{backend.key}", ..., '
                'prefix="uploads")).'
            )


def _cmd_gc(app: _Application, out: _Output) -> int:
    args = app.args
    dry_run = not args.delete
    if not dry_run and not args.yes:
        raise _Failure(
            EXIT_USAGE,
            "refusing to delete without --yes: `gc --delete` removes objects for good; "
            "run a dry run first, then add --yes.",
        )
    if args.grace_period < timedelta(0):
        raise _Failure(EXIT_USAGE, "--grace-period must not be negative.")
    unsafe = args.grace_period < MIN_GRACE_PERIOD
    if unsafe and not dry_run and not args.unsafe_grace_period:
        raise _Failure(
            EXIT_USAGE,
            f"refusing --delete with --grace-period {_seconds_text(args.grace_period)}: "
            f"under {_seconds_text(MIN_GRACE_PERIOD)} it would delete uploads of "
            "transactions that have not committed yet, and their rows would point at "
            f"nothing. Use --grace-period {_seconds_text(MIN_GRACE_PERIOD)} or more (default "
            f"{_seconds_text(DEFAULT_GRACE_PERIOD)}), or add --unsafe-grace-period only when "
            "no application is writing.",
        )
    if unsafe and not dry_run:
        out.stderr.write(
            f"{out.prog}: WARNING: --unsafe-grace-period: deleting with a grace period of "
            f"{_seconds_text(args.grace_period)} (under the "
            f"{_seconds_text(MIN_GRACE_PERIOD)} floor); uploads of transactions in flight "
            "will be deleted.\n"
        )
    columns = _file_columns(app)
    database = _database(app)
    assert database is not None
    keys = args.backend or sorted({c.stored_type.backend for c in columns})
    backends = [_resolve(key, columns, app, "backend") for key in keys]
    _warn_about_roots(backends, out)
    options: dict[str, Any] = {
        "backends": backends if args.backend else None,
        "grace_period": args.grace_period,
        "dry_run": dry_run,
        "batch_size": args.batch_size,
        "report_limit": args.report_limit,
        "progress": out.progress,
        "allow_unsafe_grace_period": args.unsafe_grace_period,
    }

    def work(engine: Engine) -> GarbageReport:
        _check_backends(backends)
        return collect_garbage(engine, columns, **options)

    tables = list({id(c.table): c.table for c in columns}.values())
    try:
        report = _with_database(app.runtime, database, tables, work)
    finally:
        out.progress.close()
    if report.all_errors:
        code = EXIT_UNAVAILABLE
    elif dry_run and args.fail_on_orphans and (report.orphaned or report.incomplete_uploads_stale):
        code = EXIT_PROBLEMS
    else:
        code = EXIT_OK
    if out.json:
        out.document({**_gc_document(report, args.grace_period, code), "warnings": out.warnings})
        return code
    _print_gc(report, args.grace_period, dry_run, out)
    return code


def _print_gc(report: GarbageReport, grace: timedelta, dry_run: bool, out: _Output) -> None:
    title = "dry run, nothing deleted" if dry_run else "orphans deleted"
    out.print(
        f"Garbage collection ({title}); grace period {_seconds_text(grace)}, "
        f"cutoff {report.cutoff:%Y-%m-%d %H:%M:%S} UTC; {report.references:,} references "
        "in the database"
    )
    if report.unsafe_grace_period:
        out.print(
            f"Note: the grace period is under the {_seconds_text(MIN_GRACE_PERIOD)} safe floor: "
            "objects listed as orphans may belong to transactions that have not committed yet."
        )
    out.print()
    rows = [
        (
            key,
            b.prefix or "(root)",
            b.scanned,
            b.referenced,
            b.too_young,
            b.orphaned,
            b.deleted,
            _size(b.bytes_freed),
        )
        for key, b in report.backends.items()
    ]
    rows.append(("total", "", report.scanned, report.referenced, report.too_young,
                 report.orphaned, report.deleted, _size(report.bytes_freed)))  # fmt: skip
    headers = ("backend", "prefix", "scanned", "referenced", "too young", "orphaned", "deleted")
    out.print(_table((*headers, "freed"), rows))
    if dry_run and report.orphaned:
        out.print()
        out.print("Orphans (delete them with --delete --yes):")
        for key, b in report.backends.items():
            _print_paths(out, key, b.orphan_paths, b.orphaned)
    if report.too_young:
        out.print()
        out.print(
            "Too young, kept (unreferenced but younger than the grace period: uploads of "
            "transactions in flight look like this):"
        )
        for key, b in report.backends.items():
            _print_paths(out, key, b.too_young_paths, b.too_young)
    _print_incomplete_uploads(report, dry_run, out)
    for error in report.all_errors:
        out.print(f"error: {error}")


def _print_paths(out: _Output, key: str, paths: Sequence[str], count: int) -> None:
    for path in paths[:20]:
        out.print(f"  {key}: {path}")
    more = count - min(len(paths), 20)
    if more > 0:
        out.print(f"  {key}: ... and {more:,} more (--json lists up to --report-limit)")


def _print_incomplete_uploads(report: GarbageReport, dry_run: bool, out: _Output) -> None:
    checked = {k: b.incomplete_uploads for k, b in report.backends.items()}
    rows = [
        (key, u.found, u.too_young, u.stale, u.aborted) for key, u in checked.items() if u.checked
    ]
    notes = [(key, u.note) for key, u in checked.items() if not u.checked and u.note]
    if rows:
        out.print()
        out.print("Incomplete multipart uploads:")
        out.print(_table(("backend", "found", "too young", "stale", "aborted"), rows))
        for key, uploads in checked.items():
            if dry_run and uploads.stale_paths:
                out.print(f"Stale uploads in {key} (abort them with --delete --yes):")
                _print_paths(out, key, uploads.stale_paths, uploads.stale)
    for key, note in notes:
        out.print(f"Incomplete multipart uploads in {key}: not checked ({note}).")


def _cmd_verify(app: _Application, out: _Output) -> int:
    args = app.args
    columns = _file_columns(app)
    database = _database(app)
    assert database is not None
    backends = [
        _resolve(key, columns, app, "backend")
        for key in sorted({c.stored_type.backend for c in columns})
    ]
    options: dict[str, Any] = {
        "check_checksums": args.checksums,
        "batch_size": args.batch_size,
        "progress": out.progress,
    }

    def work(engine: Engine) -> VerificationReport:
        _check_backends(backends)
        return verify_references(engine, columns, **options)

    tables = list({id(c.table): c.table for c in columns}.values())
    try:
        report = _with_database(app.runtime, database, tables, work)
    finally:
        out.progress.close()
    code = EXIT_OK if report.ok else EXIT_PROBLEMS
    if out.json:
        out.document(
            {
                "command": "verify",
                "ok": code == EXIT_OK,
                "exit_code": code,
                "checksums": bool(args.checksums),
                "checked": report.checked,
                "unverified": report.unverified,
                "findings": [
                    {
                        "table": f.table,
                        "primary_key": list(f.primary_key),
                        "column": f.column,
                        "backend": f.backend,
                        "path": f.path,
                        "problem": f.problem,
                        "detail": f.detail,
                    }
                    for f in report.findings
                ],
            }
        )
        return code
    checks = "size and checksum" if args.checksums else "existence and size"
    out.print(f"Verified {report.checked:,} references ({checks}).")
    if args.checksums and report.unverified:
        out.print(f"{report.unverified:,} had no recorded checksum and were checked by size only.")
    if report.ok:
        out.print("No problems found.")
        return code
    out.print()
    rows = [
        (f.table, ", ".join(map(str, f.primary_key)), f.column, f.backend, f.path, f.problem)
        for f in report.findings
    ]
    out.print(_table(("table", "primary key", "column", "backend", "path", "problem"), rows))
    out.print()
    out.print(f"{len(report.findings):,} problem(s) found.")
    return code


def _plain(value: Any) -> Any:
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    return value


def _cmd_migrate(app: _Application, out: _Output) -> int:
    args = app.args
    if not args.dry_run and not args.yes:
        raise _Failure(
            EXIT_USAGE,
            "refusing to migrate without --yes: the rows are rewritten to point at "
            f"{args.destination!r}; try --dry-run first, then add --yes.",
        )
    if args.delete_source and args.dry_run:
        raise _Failure(EXIT_USAGE, "--delete-source cannot be combined with --dry-run.")
    if args.source == args.destination:
        raise _Failure(EXIT_USAGE, "--from and --to name the same backend.")
    from . import migration

    columns = _file_columns(app)
    database = _database(app)
    assert database is not None
    backends = [
        _resolve(args.source, columns, app, "--from backend"),
        _resolve(args.destination, columns, app, "--to backend"),
    ]
    options: dict[str, Any] = {
        "source": args.source,
        "destination": args.destination,
        "delete_source": args.delete_source,
        "dry_run": args.dry_run,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "progress": out.progress,
    }

    def work(engine: Engine) -> Any:
        _check_backends(backends)
        return migration.migrate(engine, columns, **options)

    tables = list({id(c.table): c.table for c in columns}.values())
    try:
        report = _with_database(app.runtime, database, tables, work)
    finally:
        out.progress.close()
    if args.dry_run:  # nothing is rewritten: only failures (e.g. unreadable objects) count
        failed = bool(getattr(report, "failures", None) or getattr(report, "failures_omitted", 0))
        code = EXIT_PROBLEMS if failed else EXIT_OK
    else:
        code = EXIT_OK if getattr(report, "ok", False) else EXIT_PROBLEMS
    details = _plain(report)
    if out.json:
        document: dict[str, Any] = {"command": "migrate", "ok": code == EXIT_OK, "exit_code": code}
        document.update(details if isinstance(details, Mapping) else {"report": details})
        document.update(ok=code == EXIT_OK, exit_code=code)  # (a dry run leaves rows behind)
        out.document(document)
        return code
    what = "dry run, nothing changed" if args.dry_run else "done"
    out.print(f"Migration {args.source} -> {args.destination} ({what})")
    out.print()
    rows: list[tuple[str, str]] = []
    failures: list[Any] = []
    skip = {"source", "destination", "dry_run", "ok"}
    if isinstance(details, Mapping):
        for name, value in details.items():
            if name in skip or value is None:
                continue
            label = name.replace("_", " ")
            if isinstance(value, (list, tuple)):
                failures.extend(value)
                rows.append((label, f"{len(value):,}"))
            elif name.startswith("bytes") and isinstance(value, int):
                rows.append((label, _size(value)))
            elif isinstance(value, int) and not isinstance(value, bool):
                rows.append((label, f"{value:,}"))
            else:
                rows.append((label, str(value)))
    else:
        rows.append(("report", str(details)))
    out.print(_table(None, rows))
    for failure in failures[:20]:
        if isinstance(failure, Mapping):
            key = ", ".join(map(str, failure.get("primary_key", ())))
            failure = (
                f"{failure.get('table')} ({key}) {failure.get('column')} "
                f"{failure.get('path')}: {failure.get('error')}"
            )
        out.print(f"failed: {failure}")
    if code != EXIT_OK:
        out.print()
        out.print("The migration is incomplete; fix the failures and run it again (it resumes).")
    return code


def _cmd_backends(app: _Application, out: _Output) -> int:
    args = app.args
    columns: list[FileColumn] = []
    if app.given:
        columns = find_file_columns(app.metadata())
    database = _database(app, required=False)
    backends: dict[str, Backend] = {}
    registries = app.registries(columns)
    for registry in registries:
        for key, backend in registry.backends.items():
            backends.setdefault(key, backend)
    if not backends:
        where = "the default registry `storages`" + (
            f" and {len(registries) - 1} other registr{'y' if len(registries) == 2 else 'ies'}"
            if len(registries) > 1
            else ""
        )
        raise _Failure(
            EXIT_USAGE,
            f"no backend is registered ({app.describe()}; {where} held none): pass --app "
            "with the module that registers them, or the application whose startup does "
            "(--app myapp.main:app, --app myapp.main:create_app).",
        )
    results: list[dict[str, Any]] = []

    def record(
        backend: Backend,
        error: BaseException | None,
        started: float,
        rule: dict[str, Any] | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "key": backend.key,
            "description": backend.describe(),
            "prefix": backend.prefix,
            "ok": error is None,
            "error": None if error is None else _probe_error(backend, error),
            "seconds": round(time.monotonic() - started, 3),
        }
        if args.check:
            entry["incomplete_uploads_rule"] = rule
        results.append(entry)

    def probe_all() -> dict[str, Any] | None:
        for backend in backends.values():
            started = time.monotonic()
            try:
                _probe(backend)
                rule = _lifecycle(backend) if args.check else None
            except Exception as exc:
                record(backend, exc, started)
            else:
                record(backend, None, started, rule)
        return None if database is None else _check_database(database)

    if database is not None and database.is_async:  # in the bridge, on the command's loop
        db_result = app.runtime.run(_io.bridge(probe_all))
    else:
        db_result = probe_all()
    failed = [r for r in results if not r["ok"]]
    missing_rule = [
        r for r in results if (r.get("incomplete_uploads_rule") or {}).get("state") == "missing"
    ]
    if failed or (db_result and not db_result["ok"]):
        code = EXIT_UNAVAILABLE
    else:
        code = EXIT_PROBLEMS if missing_rule else EXIT_OK
    if out.json:
        out.document(
            {
                "command": "backends",
                "ok": code == EXIT_OK,
                "exit_code": code,
                "backends": results,
                "database": db_result,
            }
        )
        return code
    rows = [
        (r["key"], r["description"], r["prefix"] or "(root)", "OK" if r["ok"] else "FAIL",
         r["error"] or f"{r['seconds']:.2f} s")
        for r in results
    ]  # fmt: skip
    if db_result is not None:
        rows.append(("(database)", db_result["url"], "", "OK" if db_result["ok"] else "FAIL",
                     db_result["error"] or f"{db_result['seconds']:.2f} s"))  # fmt: skip
    out.print(_table(("backend", "store", "prefix", "status", "detail"), rows))
    if args.check:
        rules = [
            (r["key"], r["incomplete_uploads_rule"]["state"].replace("_", " "),
             r["incomplete_uploads_rule"]["detail"])
            for r in results
            if r.get("incomplete_uploads_rule")
        ]  # fmt: skip
        if rules:
            out.print()
            out.print("Incomplete multipart uploads (aborted by the store itself?):")
            out.print(_table(("backend", "rule", "detail"), rules))
        if missing_rule:
            out.print()
            out.print(
                "Add a lifecycle rule with AbortIncompleteMultipartUpload (e.g. after 1 "
                "day) to each bucket marked missing, or run `gc` regularly: uploads cut "
                "off by a crash are billed until they are aborted."
            )
    if failed or (db_result and not db_result["ok"]):
        out.print()
        out.print(
            f"{len(failed) + (1 if db_result and not db_result['ok'] else 0)} check(s) failed."
        )
    return code


def _rule_document(rule: _multipart.LifecycleRule) -> dict[str, Any]:
    return {"state": rule.state, "days": rule.days, "detail": rule.detail}


def _rule_error(exc: Exception) -> dict[str, Any]:
    detail = (
        redact(_line(exc))
        if isinstance(exc, StorageError)
        else redact(f"{type(exc).__name__}: {_line(exc)}")
    )
    return {"state": "not_checked", "days": None, "detail": detail}


def _lifecycle(backend: Backend) -> dict[str, Any]:
    try:
        rule = _io.run(
            _io.Call(_multipart.lifecycle_rule, _multipart.lifecycle_rule_async, backend)
        )
    except StorageError as exc:  # a store that refuses or lacks the call: reported, not fatal
        return _rule_error(exc)
    return _rule_document(rule)


def _check_database(database: _Database) -> dict[str, Any]:
    """Connect and `SELECT 1` (an async database's engine inside the greenlet bridge)."""
    started = time.monotonic()
    error: str | None = None
    engine = _create_engine(database)
    if isinstance(engine, AsyncEngine):
        engine = engine.sync_engine
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        error = database.scrub(_line(exc))
    finally:
        engine.dispose()
    return _db_result(database, error, started)


def _db_result(database: _Database, error: str | None, started: float) -> dict[str, Any]:
    return {
        "url": database.shown,
        "ok": error is None,
        "error": error,
        "seconds": round(time.monotonic() - started, 3),
    }


_COMMANDS: dict[str, Callable[[_Application, _Output], int]] = {
    "gc": _cmd_gc,
    "verify": _cmd_verify,
    "migrate": _cmd_migrate,
    "backends": _cmd_backends,
}


# -- entry points ---------------------------------------------------------------------------------
def run(
    argv: Sequence[str] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    app: object | None = None,
    prog: str = PROG,
) -> int:
    """Run the command line in this process and return its exit code (no exit).

    [`main`][sqlalchemy_obstore.cli.main] is the console entry point; `run` is for
    calling the command line from Python (it leaves the interpreter running).

    Args:
        argv: The arguments (default: `sys.argv[1:]`).
        stdout: Where the summary or JSON document goes (default `sys.stdout`).
        stderr: Where errors and the progress line go (default `sys.stderr`).
        app: An application already loaded (a Litestar, Starlette or FastAPI app):
            its startup runs as for `--app module:app`. Litestar's CLI passes its own
            (`litestar storage ...`).
        prog: The program name in messages and help.

    Returns:
        The exit code (see the module documentation).

    Example:
        >>> from sqlalchemy_obstore.cli import run
        >>> run(["gc", "--app", "myapp.models", "--json"])  # doctest: +SKIP
        0
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    out_stream = stdout if stdout is not None else sys.stdout
    err_stream = stderr if stderr is not None else sys.stderr
    runtime = Runtime()
    try:
        return _run(arguments, out_stream, err_stream, runtime, app, prog)
    finally:
        with contextlib.redirect_stdout(err_stream):  # the app's shutdown prints, if any
            warnings = runtime.close()
        for warning in warnings:
            err_stream.write(f"{prog}: warning: {warning}\n")


def _run(
    arguments: list[str],
    out_stream: IO[str],
    err_stream: IO[str],
    runtime: Runtime,
    preloaded: object | None,
    prog: str,
) -> int:
    wants_json = "--json" in arguments
    debug = "--debug" in arguments
    command = next((a for a in arguments if a in _COMMANDS), None)
    args: argparse.Namespace | None = None
    try:
        try:
            args = _parser(prog).parse_args(arguments)
        except SystemExit as exc:  # --help / --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        if debug:  # the library's own messages (not every SQL statement)
            handler = logging.StreamHandler(err_stream)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            library = logging.getLogger(__package__)
            library.addHandler(handler)
            library.setLevel(logging.INFO)
        target = None
        if preloaded is not None:
            target = Target(prog, None, app=preloaded, origin="loaded by the framework's CLI")
        application = _Application(args, runtime, err_stream, target)
        return _COMMANDS[args.command](application, _Output(args, out_stream, err_stream, prog))
    except KeyboardInterrupt:
        code, message = EXIT_INTERRUPTED, "interrupted."
    except BrokenPipeError:  # stdout closed early (`| head`): nothing more to say
        return EXIT_OK
    except _Failure as exc:
        code, message = exc.code, exc.message
    except ConfigurationError as exc:
        code, message = EXIT_USAGE, redact(_line(exc))
    except StorageError as exc:
        code, message = EXIT_UNAVAILABLE, redact(_line(exc))
    except DBAPIError as exc:
        code, message = EXIT_UNAVAILABLE, f"database error: {redact(_line(exc))}"
    except SQLAlchemyError as exc:
        code, message = EXIT_USAGE, f"database configuration error: {redact(_line(exc))}"
    except Exception as exc:
        code = EXIT_INTERNAL_ERROR
        message = (
            f"unexpected error: {type(exc).__name__}: {redact(_line(exc))} "
            "(run again with --debug for the traceback)"
        )
    if debug and code != EXIT_INTERRUPTED:
        traceback.print_exc(file=err_stream)
    err_stream.write(f"{prog}: error: {message}\n")
    if wants_json:
        document = {"command": command, "ok": False, "exit_code": code, "error": message}
        out_stream.write(json.dumps(document, indent=2) + "\n")
    return code


def _finish(code: int) -> NoReturn:
    """Flush and leave without the interpreter shutdown (see the module documentation)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        logging.shutdown()
    os._exit(code)


def main(
    argv: Sequence[str] | None = None, *, app: object | None = None, prog: str = PROG
) -> NoReturn:
    """The `sqlalchemy-obstore` console entry point: run, flush, and exit with the code.

    Ends the process with `os._exit` after flushing stdout and stderr, so that obstore's
    runtime threads cannot abort the interpreter's shutdown.

    Args:
        argv: The arguments (default: `sys.argv[1:]`).
        app: An application already loaded (see [`run`][sqlalchemy_obstore.cli.run]).
        prog: The program name in messages and help.

    Example:
        ```console
        $ sqlalchemy-obstore verify --app myapp.models --database-url sqlite:///app.db
        Verified 1,204 references (existence and size).
        No problems found.
        ```
    """
    try:
        code = run(argv, app=app, prog=prog)
    except KeyboardInterrupt:  # pressed while printing the output
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`| head`)
        code = EXIT_OK
    _finish(code)
