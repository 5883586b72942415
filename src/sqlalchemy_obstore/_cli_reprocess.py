"""The `reprocess` command: late renditions and image sizes for files stored before."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from ._cli_output import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, Failure, Output, size_text, table
from ._cli_resources import (
    Application,
    check_backends,
    file_columns,
    find_database,
    resolve_backend,
    with_database,
)
from ._file_columns import FileColumn

__all__ = ("reprocess_command",)


def _chosen(columns: list[FileColumn], names: Sequence[str] | None) -> list[FileColumn]:
    """The columns `--column` names (`table.column`), or all of them."""
    if not names:
        return columns
    by_name = {column.name: column for column in columns}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise Failure(
            EXIT_USAGE,
            f"--column {unknown[0]!r} is not a file column of the --app models "
            f"(known: {', '.join(sorted(by_name))}).",
        )
    return [by_name[name] for name in dict.fromkeys(names)]


def _cursor(values: Sequence[str] | None) -> dict[str, tuple[Any, ...]]:
    """`--start-after TABLE=KEY` (KEY: a JSON value, or a JSON list for a composite key)."""
    cursor: dict[str, tuple[Any, ...]] = {}
    for value in values or ():
        name, sep, key = value.partition("=")
        try:
            parsed = json.loads(key) if sep else None
        except ValueError:
            parsed = key  # a bare string key
        if not sep or not name or parsed is None:
            raise Failure(EXIT_USAGE, f"--start-after takes TABLE=KEY, not {value!r}.")
        cursor[name] = tuple(parsed) if isinstance(parsed, list) else (parsed,)
    return cursor


def reprocess_command(app: Application, out: Output) -> int:
    """`reprocess`: build missing or changed renditions and record missing image sizes."""
    args = app.args
    if not args.dry_run and not args.yes:
        raise Failure(
            EXIT_USAGE,
            "refusing to reprocess without --yes: renditions are uploaded and rows "
            "rewritten; try --dry-run first, then add --yes.",
        )
    from . import _reprocessing as reprocessing
    from ._errors import ConfigurationError

    columns = _chosen(file_columns(app), args.column)
    cursor = _cursor(args.start_after)
    database = find_database(app)
    assert database is not None
    keys = sorted({c.stored_type.backend for c in columns if c.stored_type.backend is not None})
    backends = [resolve_backend(key, columns, app, "backend") for key in keys]

    def work(engine: Engine) -> Any:
        check_backends(backends)
        return reprocessing.reprocess(
            engine,
            columns,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            start_after=cursor,
            progress=out.progress,
        )

    tables = list({id(c.table): c.table for c in columns}.values())
    try:
        report = with_database(app.runtime, database, tables, work)
    except ConfigurationError as exc:
        if "image policy" not in str(exc):
            raise
        raise Failure(
            EXIT_USAGE,
            "no chosen column has an image policy (StoredObject(policy=UploadPolicy("
            "image=ImagePolicy(...))) or its backend's): nothing to reprocess.",
        ) from exc
    finally:
        out.progress.close()
    code = EXIT_OK if report.ok else EXIT_PROBLEMS
    details = report.as_dict()
    if out.json:
        out.document({"command": "reprocess", **details, "ok": code == EXIT_OK, "exit_code": code})
        return code
    what = "dry run, nothing changed" if args.dry_run else "done"
    out.print(f"Reprocess ({what})")
    out.print()
    rows: list[tuple[str, str]] = []
    for name, value in details.items():
        if name in {"dry_run", "ok", "failures"}:
            continue
        label = name.replace("_", " ")
        if isinstance(value, list):
            rows.append((label, ", ".join(map(str, value)) or "-"))
        elif name.startswith("bytes"):
            rows.append((label, size_text(value)))
        else:
            rows.append((label, f"{value:,}"))
    rows.append(("failures", f"{len(report.failures) + report.failures_omitted:,}"))
    out.print(table(None, rows))
    for failure in report.failures[:20]:
        key = ", ".join(map(str, failure.primary_key))
        out.print(
            f"failed: {failure.table} ({key}) {failure.column} {failure.path}: {failure.error}"
        )
    if code != EXIT_OK:
        out.print()
        out.print("Some images are not up to date; fix the failures and run it again (it resumes).")
    return code
