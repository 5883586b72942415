"""Verification: rows whose object is missing or differs from what the row recorded.

[`verify_references`][sqlalchemy_obstore.gc.verify_references] streams every reference
of the target's file columns (renditions and list items included) and checks each with
a `head` request, and with `check_checksums=True` by reading it back and hashing it. It
is the opposite check of garbage collection (objects no row references), and `gc`
re-exports it with its report types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from sqlalchemy import Connection, Engine, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._column import stored_files, without_renditions
from ._errors import (
    BackendNotFoundError,
    ChecksumMismatchError,
    ConfigurationError,
    FileObjectError,
    ObjectNotFoundError,
    StorageError,
)
from ._file_columns import FileColumn, target_columns
from ._file_object import FileObject
from ._gc_sql import raw_value
from ._io import Call, bridge_bind, run
from ._progress import Progress, ProgressCallback
from ._registry import BackendRegistry, storages
from ._telemetry import run_span

__all__ = (
    "Finding",
    "Problem",
    "VerificationReport",
    "verify_references",
    "verify_references_async",
)

Problem: TypeAlias = Literal[
    "missing", "size_mismatch", "checksum_mismatch", "unknown_backend", "error"
]
"""What is wrong with a reference found by `verify_references`."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken reference.

    Attributes:
        table: The table name.
        primary_key: The row's primary key values (empty for a table without one).
        column: The column name.
        backend: The backend key the reference names.
        path: The object path.
        problem: `missing`, `size_mismatch`, `checksum_mismatch`, `unknown_backend` or
            `error`.
        detail: A readable explanation.
    """

    table: str
    primary_key: tuple[Any, ...]
    column: str
    backend: str
    path: str
    problem: Problem
    detail: str


@dataclass(slots=True)
class VerificationReport:
    """The outcome of [`verify_references`][sqlalchemy_obstore.gc.verify_references].

    Attributes:
        checked: References checked (renditions included).
        unverified: References whose checksum could not be checked (none recorded);
            only counted with `check_checksums=True`.
        findings: The broken references.
    """

    checked: int = 0
    unverified: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no reference is broken."""
        return not self.findings


def _check_entry(
    data: Mapping[str, Any],
    backend_key: str,
    column: FileColumn,
    registry: BackendRegistry | None,
    check_checksums: bool,
    report: VerificationReport,
) -> tuple[Problem, str] | None:
    path: str = data["path"]
    try:
        if registry is not None:
            backend = registry.get_backend(backend_key)
        else:
            backend = (column.stored_type.registry or storages).get_backend(backend_key)
    except BackendNotFoundError as exc:
        return "unknown_backend", str(exc)
    try:
        info = run(Call(backend.head, backend.head_async, path))
    except ObjectNotFoundError:
        return "missing", "the object does not exist"
    except StorageError as exc:
        return "error", str(exc)
    size = data.get("size")
    if isinstance(size, int) and size != info.size:
        return "size_mismatch", f"recorded size {size}, stored object has {info.size} bytes"
    if not check_checksums:
        return None
    if not data.get("checksum"):
        report.unverified += 1
        return None
    stripped = without_renditions(data)
    resolver = BackendRegistry()  # resolves to the very backend checked above
    resolver.register_backend(backend)
    try:
        file = FileObject.from_dict(stripped, default_backend=backend.key, registry=resolver)
        run(Call(file.verify, file.verify_async))
    except ChecksumMismatchError as exc:
        return "checksum_mismatch", str(exc)
    except ObjectNotFoundError:
        return "missing", "the object disappeared during verification"
    except (FileObjectError, StorageError) as exc:
        return "error", str(exc)
    return None


def _verify_all(
    connection: Connection,
    columns: list[FileColumn],
    registry: BackendRegistry | None,
    check_checksums: bool,
    batch_size: int,
    progress: ProgressCallback | None = None,
) -> VerificationReport:
    report = VerificationReport()
    for column in columns:
        keys = list(column.table.primary_key.columns)
        stmt = select(*keys, raw_value(column)).execution_options(yield_per=batch_size)
        for partition in connection.execute(stmt).partitions():
            for row in partition:
                for data, backend_key in stored_files(row[-1], column.stored_type.backend):
                    report.checked += 1
                    problem = _check_entry(
                        data, backend_key, column, registry, check_checksums, report
                    )
                    if problem is not None:
                        report.findings.append(
                            Finding(
                                table=column.table.fullname,
                                primary_key=tuple(row[:-1]),
                                column=column.column.name,
                                backend=backend_key,
                                path=data["path"],
                                problem=problem[0],
                                detail=problem[1],
                            )
                        )
                    if progress is not None:
                        progress(Progress("verifying", report.checked))
    return report


def verify_references(
    engine_or_connection: Engine | Connection,
    target: Any,
    *,
    check_checksums: bool = False,
    registry: BackendRegistry | None = None,
    batch_size: int = 1000,
    progress: ProgressCallback | None = None,
) -> VerificationReport:
    """Check that every referenced object exists and matches what its row recorded.

    Each reference (renditions included) is checked with a `head` request: missing
    objects and size differences are reported. With `check_checksums=True` every object
    is also read back and hashed
    ([`FileObject.verify`][sqlalchemy_obstore.file_object.FileObject.verify]). Rows are
    streamed; only the primary key and the JSON column are selected.

    Args:
        engine_or_connection: The database.
        target: A `MetaData`, a declarative base, or a sequence of them.
        check_checksums: Also re-read and hash every object (reads all the bytes).
        registry: Resolve backend keys here instead of the columns' registries or
            `storages`.
        batch_size: Rows per fetch.
        progress: Called with a [`Progress`][sqlalchemy_obstore.gc.Progress] after every
            reference checked.

    Returns:
        A [`VerificationReport`][sqlalchemy_obstore.gc.VerificationReport].

    Example:
        >>> from sqlalchemy import Column, Integer, MetaData, Table, create_engine
        >>> from sqlalchemy_obstore import StoredObject
        >>> metadata = MetaData()
        >>> _ = Table("docs", metadata, Column("id", Integer, primary_key=True),
        ...           Column("file", StoredObject("uploads")))
        >>> engine = create_engine("sqlite://")
        >>> metadata.create_all(engine)
        >>> report = verify_references(engine, metadata)
        >>> report.ok, report.checked
        (True, 0)
        >>> engine.dispose()
    """
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1.")
    columns = target_columns(target)
    facts = {"sqlalchemy_obstore.verify.check_checksums": check_checksums}
    with run_span("verify", facts) as span:
        if isinstance(engine_or_connection, Connection):
            report = _verify_all(
                engine_or_connection, columns, registry, check_checksums, batch_size, progress
            )
        else:
            with engine_or_connection.connect() as connection:
                report = _verify_all(
                    connection, columns, registry, check_checksums, batch_size, progress
                )
        span.record(
            {
                "sqlalchemy_obstore.verify.checked": report.checked,
                "sqlalchemy_obstore.verify.unverified": report.unverified,
                "sqlalchemy_obstore.verify.findings": len(report.findings),
            }
        )
    return report


async def verify_references_async(
    engine_or_connection: AsyncEngine | AsyncConnection,
    target: Any,
    *,
    check_checksums: bool = False,
    registry: BackendRegistry | None = None,
    batch_size: int = 1000,
    progress: ProgressCallback | None = None,
) -> VerificationReport:
    """Async version of [`verify_references`][sqlalchemy_obstore.gc.verify_references].

    Example:
        >>> async def main(engine, Base):  # doctest: +SKIP
        ...     report = await verify_references_async(engine, Base, check_checksums=True)
        ...     return [f"{f.table} {f.primary_key}: {f.problem}" for f in report.findings]
    """
    return await bridge_bind(
        engine_or_connection,
        verify_references,
        target,
        check_checksums=check_checksums,
        registry=registry,
        batch_size=batch_size,
        progress=progress,
    )
