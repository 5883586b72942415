"""The implementation of `sqlalchemy_obstore.reprocessing`, documented and imported there.

The entry points: they check the options, find the columns the target names and the
image policy of each (`_targets`), and start the run (`_reprocess_run`) on a connection.
What a run reports is defined in `_reprocess_report`, what a stored image needs in
`_reprocess_plan`, and the work on one image in `_reprocess_image`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._errors import ConfigurationError
from ._file_columns import FileColumn, target_columns
from ._io import bridge_bind
from ._processing import ImagePolicy
from ._registry import BackendRegistry, storages
from ._reprocess_plan import Target
from ._reprocess_report import ReprocessFailure, ReprocessProgress, ReprocessReport
from ._reprocess_run import Reprocessing
from ._row_batches import on_connection
from ._types import StoredObject
from ._validation import UploadPolicy, effective_policy
from .backends import DEFAULT_CHUNK_SIZE

__all__ = (
    "ReprocessFailure",
    "ReprocessProgress",
    "ReprocessReport",
    "reprocess",
    "reprocess_async",
)


def _columns(target: Any) -> list[FileColumn]:
    """The columns `target` names: `Model.column`s, `Column`s, or what migrate takes."""
    items = list(target) if isinstance(target, (list, tuple)) else [target]
    found: list[FileColumn] = []
    rest: list[Any] = []
    for item in items:
        column = getattr(item, "expression", item)
        if isinstance(column, Column) and isinstance(column.type, StoredObject):
            if not isinstance(column.table, Table):
                raise ConfigurationError(f"Column {column!r} belongs to no table.")
            found.append(FileColumn(column.table, column, column.type))
        else:
            rest.append(item)
    if rest:
        found.extend(target_columns(rest if isinstance(target, (list, tuple)) else target))
    return found


def _targets(
    columns: list[FileColumn],
    policy: ImagePolicy | UploadPolicy | None,
    registry: BackendRegistry,
    report: ReprocessReport,
) -> list[Target]:
    targets = []
    for column in columns:
        image: ImagePolicy | None
        if isinstance(policy, ImagePolicy):
            image = policy
        elif isinstance(policy, UploadPolicy):
            image = policy.image
        else:
            stored = column.stored_type
            backend_policy = None
            if stored.backend is not None:
                chosen = stored.registry or registry
                backend_policy = getattr(chosen.get_backend(stored.backend), "policy", None)
            merged = effective_policy(backend_policy, stored.policy)
            image = merged.image if merged is not None else None
        if image is None:
            report.columns_skipped.append(column.name)
        else:
            targets.append(Target(column, image, column.stored_type.registry or registry))
    return targets


def reprocess(
    bind: Engine | Connection,
    target: Any,
    *,
    policy: ImagePolicy | UploadPolicy | None = None,
    registry: BackendRegistry = storages,
    dry_run: bool = False,
    batch_size: int = 100,
    concurrency: int = 4,
    start_after: Mapping[str, Sequence[Any]] | None = None,
    progress: Callable[[ReprocessProgress], object] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    report_limit: int = 1000,
) -> ReprocessReport:
    """Build missing or changed renditions, and record missing image sizes, of stored files.

    See the module documentation for the whole procedure: images are read and decoded
    one at a time per worker under the image memory budget, new renditions are stored
    under fresh keys before their row is rewritten (compare-and-swap: a row the
    application changes meanwhile is never overwritten), and the renditions they
    replace are deleted only after the commit. Running it again resumes an interrupted
    run; a row already up to date costs no storage call.

    Args:
        bind: The database. With an `Engine` every batch is committed on its own (an
            interrupted run keeps its progress); with a `Connection` the run stays
            inside the caller's transaction and leaves it open.
        target: A mapped column (`Photo.image`), a `StoredObject` `Column`, a list of
            them, or a `MetaData`, a declarative base or a sequence of them (every
            `StoredObject` column in them).
        policy: The image policy to bring the files to (an `ImagePolicy`, or an
            `UploadPolicy` holding one). By default each column's own: its backend's
            policy layered with the column's, as uploads use it. Columns without an
            image policy are skipped (listed in `report.columns_skipped`).
        registry: Where backend keys are resolved (a column's own registry first).
        dry_run: Only count what would be done, from the rows alone: nothing is read
            from storage or written.
        batch_size: Rows read, and rewritten in one transaction, at a time.
        concurrency: Images processed at once by the async version (the sync version
            does one at a time). Each holds its original in memory (at most
            `ImagePolicy.max_bytes`) and reserves its decoding memory from the
            process-wide image budget.
        start_after: Skip, per table (by its full name), the rows up to this primary
            key: `{progress.table: progress.last_key}` resumes after the last batch a
            progress callback saw.
        progress: Called with a
            [`ReprocessProgress`][sqlalchemy_obstore.reprocessing.ReprocessProgress]
            after every batch (a plain function, also for `reprocess_async`). An
            exception it raises stops the run (what was committed stays).
        chunk_size: Streaming read size.
        report_limit: Failures listed in the report (the rest are counted).

    Returns:
        A [`ReprocessReport`][sqlalchemy_obstore.reprocessing.ReprocessReport].

    Raises:
        ConfigurationError: For options below 1, a table without a primary key, or a
            target with no image-policy column.
        BackendNotFoundError: If a backend key is not registered.

    Example:
        >>> from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert
        >>> from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, storages
        >>> from sqlalchemy_obstore.processing import ImagePolicy, Rendition
        >>> import io
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (64, 32)).save(buffer, "PNG")
        >>> metadata = MetaData()
        >>> photos = Table("photos", metadata, Column("id", Integer, primary_key=True),
        ...                Column("image", StoredObject("media")))
        >>> engine = create_engine("sqlite://")
        >>> metadata.create_all(engine)
        >>> policy = ImagePolicy(renditions=(Rendition("thumb", 16, 16),))
        >>> with storages.temporary(ObstoreBackend("media", "memory://")):
        ...     f = FileObject(filename="a.png", content=buffer.getvalue(), backend="media")
        ...     with engine.begin() as conn:
        ...         _ = conn.execute(insert(photos), {"id": 1, "image": f.save()})
        ...     report = reprocess(engine, photos.c.image, policy=policy)
        ...     with engine.connect() as conn:
        ...         image = conn.execute(photos.select()).one().image
        >>> report.renditions_built, image.width, image.renditions["thumb"].width
        (1, 64, 16)
        >>> engine.dispose()
    """
    if batch_size < 1 or concurrency < 1 or chunk_size < 1 or report_limit < 0:
        raise ConfigurationError("batch_size, concurrency and chunk_size must be at least 1.")
    if policy is not None and not isinstance(policy, (ImagePolicy, UploadPolicy)):
        raise ConfigurationError(
            f"policy takes an ImagePolicy or an UploadPolicy, not {type(policy).__name__}."
        )
    report = ReprocessReport(dry_run=dry_run)
    targets = _targets(_columns(target), policy, registry, report)
    if not targets:
        raise ConfigurationError(
            "No column of the target has an image policy: pass policy=ImagePolicy(...), or "
            "name columns whose StoredObject (or backend) policy has one."
        )

    def work(connection: Connection, owns: bool) -> ReprocessReport:
        return Reprocessing(
            connection,
            targets,
            owns_connection=owns,
            dry_run=dry_run,
            batch_size=batch_size,
            concurrency=concurrency,
            chunk_size=chunk_size,
            report_limit=report_limit,
            start_after=start_after or {},
            progress=progress,
            report=report,
        ).run()

    return on_connection(bind, work)


async def reprocess_async(
    bind: AsyncEngine | AsyncConnection,
    target: Any,
    *,
    policy: ImagePolicy | UploadPolicy | None = None,
    registry: BackendRegistry = storages,
    dry_run: bool = False,
    batch_size: int = 100,
    concurrency: int = 4,
    start_after: Mapping[str, Sequence[Any]] | None = None,
    progress: Callable[[ReprocessProgress], object] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    report_limit: int = 1000,
) -> ReprocessReport:
    """Async version of [`reprocess`][sqlalchemy_obstore.reprocessing.reprocess].

    Takes an `AsyncEngine` or `AsyncConnection`; storage and image work are awaited,
    with up to `concurrency` images processed at once.

    Example:
        >>> async def main(engine):  # doctest: +SKIP
        ...     report = await reprocess_async(engine, Photo.image, concurrency=8)
        ...     assert report.ok, report.as_dict()
    """
    return await bridge_bind(
        bind,
        reprocess,
        target,
        policy=policy,
        registry=registry,
        dry_run=dry_run,
        batch_size=batch_size,
        concurrency=concurrency,
        start_after=start_after,
        progress=progress,
        chunk_size=chunk_size,
        report_limit=report_limit,
    )
