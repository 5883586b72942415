"""The `gc` and `verify` commands: garbage collection and reference checks, and their reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from ._cli_output import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Failure,
    Output,
    seconds_text,
    size_text,
    table,
)
from ._cli_resources import (
    Application,
    check_backends,
    file_columns,
    find_database,
    resolve_backend,
    with_database,
)
from ._gc import (
    DEFAULT_GRACE_PERIOD,
    MIN_GRACE_PERIOD,
    GarbageReport,
    VerificationReport,
    collect_garbage,
    verify_references,
)
from .backends import Backend

__all__ = ("gc_command", "verify_command")


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


def _warn_about_roots(backends: Sequence[Backend], out: Output) -> None:
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


def gc_command(app: Application, out: Output) -> int:
    """`gc`: report (or delete) the objects no row references."""
    args = app.args
    dry_run = not args.delete
    if not dry_run and not args.yes:
        raise Failure(
            EXIT_USAGE,
            "refusing to delete without --yes: `gc --delete` removes objects for good; "
            "run a dry run first, then add --yes.",
        )
    if args.grace_period < timedelta(0):
        raise Failure(EXIT_USAGE, "--grace-period must not be negative.")
    unsafe = args.grace_period < MIN_GRACE_PERIOD
    if unsafe and not dry_run and not args.unsafe_grace_period:
        raise Failure(
            EXIT_USAGE,
            f"refusing --delete with --grace-period {seconds_text(args.grace_period)}: "
            f"under {seconds_text(MIN_GRACE_PERIOD)} it would delete uploads of "
            "transactions that have not committed yet, and their rows would point at "
            f"nothing. Use --grace-period {seconds_text(MIN_GRACE_PERIOD)} or more (default "
            f"{seconds_text(DEFAULT_GRACE_PERIOD)}), or add --unsafe-grace-period only when "
            "no application is writing.",
        )
    if unsafe and not dry_run:
        out.stderr.write(
            f"{out.prog}: WARNING: --unsafe-grace-period: deleting with a grace period of "
            f"{seconds_text(args.grace_period)} (under the "
            f"{seconds_text(MIN_GRACE_PERIOD)} floor); uploads of transactions in flight "
            "will be deleted.\n"
        )
    columns = file_columns(app)
    database = find_database(app)
    assert database is not None
    keys = args.backend or sorted({c.stored_type.backend for c in columns})
    backends = [resolve_backend(key, columns, app, "backend") for key in keys]
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
        check_backends(backends)
        return collect_garbage(engine, columns, **options)

    tables = list({id(c.table): c.table for c in columns}.values())
    try:
        report = with_database(app.runtime, database, tables, work)
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


def _print_gc(report: GarbageReport, grace: timedelta, dry_run: bool, out: Output) -> None:
    title = "dry run, nothing deleted" if dry_run else "orphans deleted"
    out.print(
        f"Garbage collection ({title}); grace period {seconds_text(grace)}, "
        f"cutoff {report.cutoff:%Y-%m-%d %H:%M:%S} UTC; {report.references:,} references "
        "in the database"
    )
    if report.unsafe_grace_period:
        out.print(
            f"Note: the grace period is under the {seconds_text(MIN_GRACE_PERIOD)} safe floor: "
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
            size_text(b.bytes_freed),
        )
        for key, b in report.backends.items()
    ]
    rows.append(("total", "", report.scanned, report.referenced, report.too_young,
                 report.orphaned, report.deleted, size_text(report.bytes_freed)))  # fmt: skip
    headers = ("backend", "prefix", "scanned", "referenced", "too young", "orphaned", "deleted")
    out.print(table((*headers, "freed"), rows))
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


def _print_paths(out: Output, key: str, paths: Sequence[str], count: int) -> None:
    for path in paths[:20]:
        out.print(f"  {key}: {path}")
    more = count - min(len(paths), 20)
    if more > 0:
        out.print(f"  {key}: ... and {more:,} more (--json lists up to --report-limit)")


def _print_incomplete_uploads(report: GarbageReport, dry_run: bool, out: Output) -> None:
    checked = {k: b.incomplete_uploads for k, b in report.backends.items()}
    rows = [
        (key, u.found, u.too_young, u.stale, u.aborted) for key, u in checked.items() if u.checked
    ]
    notes = [(key, u.note) for key, u in checked.items() if not u.checked and u.note]
    if rows:
        out.print()
        out.print("Incomplete multipart uploads:")
        out.print(table(("backend", "found", "too young", "stale", "aborted"), rows))
        for key, uploads in checked.items():
            if dry_run and uploads.stale_paths:
                out.print(f"Stale uploads in {key} (abort them with --delete --yes):")
                _print_paths(out, key, uploads.stale_paths, uploads.stale)
    for key, note in notes:
        out.print(f"Incomplete multipart uploads in {key}: not checked ({note}).")


def verify_command(app: Application, out: Output) -> int:
    """`verify`: report the rows whose object is missing or changed."""
    args = app.args
    columns = file_columns(app)
    database = find_database(app)
    assert database is not None
    backends = [
        resolve_backend(key, columns, app, "backend")
        for key in sorted({c.stored_type.backend for c in columns})
    ]
    options: dict[str, Any] = {
        "check_checksums": args.checksums,
        "batch_size": args.batch_size,
        "progress": out.progress,
    }

    def work(engine: Engine) -> VerificationReport:
        check_backends(backends)
        return verify_references(engine, columns, **options)

    tables = list({id(c.table): c.table for c in columns}.values())
    try:
        report = with_database(app.runtime, database, tables, work)
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
    out.print(table(("table", "primary key", "column", "backend", "path", "problem"), rows))
    out.print()
    out.print(f"{len(report.findings):,} problem(s) found.")
    return code
