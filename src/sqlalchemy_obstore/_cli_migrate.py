"""The `migrate` command: move the referenced objects to another backend, and its report."""

from __future__ import annotations

from collections.abc import Mapping
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

__all__ = ("migrate_command",)


def _plain(value: Any) -> Any:
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    return value


def migrate_command(app: Application, out: Output) -> int:
    """`migrate`: copy the referenced objects to another backend and rewrite the rows."""
    args = app.args
    if not args.dry_run and not args.yes:
        raise Failure(
            EXIT_USAGE,
            "refusing to migrate without --yes: the rows are rewritten to point at "
            f"{args.destination!r}; try --dry-run first, then add --yes.",
        )
    if args.delete_source and args.dry_run:
        raise Failure(EXIT_USAGE, "--delete-source cannot be combined with --dry-run.")
    if args.source == args.destination:
        raise Failure(EXIT_USAGE, "--from and --to name the same backend.")
    from . import _migration as migration
    from ._migration_copy import check_destination

    columns = file_columns(app)
    database = find_database(app)
    assert database is not None
    backends = [
        resolve_backend(args.source, columns, app, "--from backend"),
        resolve_backend(args.destination, columns, app, "--to backend"),
    ]
    # A destination whose prefix would not hold the copies: refused before anything is
    # copied, or even connected to (a ConfigurationError: exit 2, its message says why).
    check_destination(*backends)
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
        check_backends(backends)
        return migration.migrate(engine, columns, **options)

    tables = list({id(c.table): c.table for c in columns}.values())
    try:
        report = with_database(app.runtime, database, tables, work)
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
                rows.append((label, size_text(value)))
            elif isinstance(value, int) and not isinstance(value, bool):
                rows.append((label, f"{value:,}"))
            else:
                rows.append((label, str(value)))
    else:
        rows.append(("report", str(details)))
    out.print(table(None, rows))
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
