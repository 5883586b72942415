"""The `backends` command: list the backends, probe each, check the database and bucket rules."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _io, _multipart
from ._cli_output import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Failure,
    Output,
    error_line,
    table,
)
from ._cli_resources import (
    Application,
    Database,
    create_engine_for,
    find_database,
    probe,
    probe_error,
)
from ._errors import StorageError, redact
from ._gc import FileColumn, find_file_columns
from .backends import Backend

__all__ = ("backends_command",)


def backends_command(app: Application, out: Output) -> int:
    """`backends`: list and probe every registered backend (and the database, if any)."""
    args = app.args
    columns: list[FileColumn] = []
    if app.given:
        columns = find_file_columns(app.metadata())
    database = find_database(app, required=False)
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
        raise Failure(
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
            "error": None if error is None else probe_error(backend, error),
            "seconds": round(time.monotonic() - started, 3),
        }
        if args.check:
            entry["incomplete_uploads_rule"] = rule
        results.append(entry)

    def probe_all() -> dict[str, Any] | None:
        for backend in backends.values():
            started = time.monotonic()
            try:
                probe(backend)
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
    out.print(table(("backend", "store", "prefix", "status", "detail"), rows))
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
            out.print(table(("backend", "rule", "detail"), rules))
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
        redact(error_line(exc))
        if isinstance(exc, StorageError)
        else redact(f"{type(exc).__name__}: {error_line(exc)}")
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


def _check_database(database: Database) -> dict[str, Any]:
    """Connect and `SELECT 1` (an async database's engine inside the greenlet bridge)."""
    started = time.monotonic()
    error: str | None = None
    engine = create_engine_for(database)
    if isinstance(engine, AsyncEngine):
        engine = engine.sync_engine
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        error = database.scrub(error_line(exc))
    finally:
        engine.dispose()
    return _db_result(database, error, started)


def _db_result(database: Database, error: str | None, started: float) -> dict[str, Any]:
    return {
        "url": database.shown,
        "ok": error is None,
        "error": error,
        "seconds": round(time.monotonic() - started, 3),
    }
