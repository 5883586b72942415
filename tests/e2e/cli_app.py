"""An application module for the CLI tests, used as `--app tests.e2e.cli_app`.

Like a real application it registers its backends and declares its models when it is
imported, configured by the environment:

* `SQLO_CLI_BACKENDS`: JSON `{key: {"fs": url-or-path, "prefix": ..., **obstore config}}`;
  each entry becomes an `ObstoreBackend` registered in `storages`.
* `SQLO_CLI_TABLE`: the table name (tests sharing one PostgreSQL database use their own).
* `SQLO_CLI_COLUMN_BACKEND`: the backend key of the columns (default `files`).
* `SQLO_CLI_RENDITIONS`: JSON `[[name, width, height], ...]`: the `file` column gets an
  image policy making these renditions (an application that added one later).
* `SQLO_CLI_INTERRUPT=1`: every backend is wrapped so that listing it delivers a real
  SIGINT to the process (what Ctrl-C does in the middle of a run).
* `SQLO_CLI_SEED`: for a memory backend, which lives only in this process: JSON
  `{"rows": n, "orphans": m}`; the module creates the table, `n` rows with a file each
  and `m` unreferenced objects through a sync engine on `DATABASE_URL`.

The tests build the same backends and models in-process (`build_backends`,
`make_models`) to create data and inspect the results.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    Backend,
    FileObject,
    ObjectInfo,
    ObstoreBackend,
    StoredObject,
    UploadPolicy,
    storages,
)
from sqlalchemy_obstore.processing import ImagePolicy, Rendition
from sqlalchemy_obstore.testing import FaultInjectingBackend

BACKENDS_ENV = "SQLO_CLI_BACKENDS"
TABLE_ENV = "SQLO_CLI_TABLE"
COLUMN_BACKEND_ENV = "SQLO_CLI_COLUMN_BACKEND"
SEED_ENV = "SQLO_CLI_SEED"
INTERRUPT_ENV = "SQLO_CLI_INTERRUPT"
RENDITIONS_ENV = "SQLO_CLI_RENDITIONS"

_SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}


def build_backends(spec: dict[str, dict[str, Any]]) -> list[ObstoreBackend]:
    """The backends described by a `SQLO_CLI_BACKENDS` document."""
    backends = []
    for key, options in spec.items():
        config = dict(options)
        fs = config.pop("fs")
        if not str(fs).startswith(("memory:", "s3:", "file:")):
            fs = Path(fs)
        backends.append(ObstoreBackend(key, fs, **config))
    return backends


class CtrlCOnList(FaultInjectingBackend):
    """Delivers SIGINT to this process when the backend is listed (as Ctrl-C would)."""

    def list_objects(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> Iterator[ObjectInfo]:
        signal.raise_signal(signal.SIGINT)
        return super().list_objects(prefix, offset=offset)

    def list_objects_async(
        self, prefix: str | None = None, *, offset: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        signal.raise_signal(signal.SIGINT)
        return super().list_objects_async(prefix, offset=offset)


def make_models(
    table: str, backend: str = "files", renditions: list[list[Any]] | None = None
) -> tuple[type[DeclarativeBase], Any]:
    """A declarative base with one document model: a file and a list of files."""
    policy = None
    if renditions:
        made = tuple(Rendition(name, width, height) for name, width, height in renditions)
        policy = UploadPolicy(image=ImagePolicy(renditions=made))

    class Base(DeclarativeBase):
        pass

    class Document(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str]
        file: Mapped[FileObject | None] = mapped_column(StoredObject(backend, policy=policy))
        pages: Mapped[list[FileObject]] = mapped_column(
            StoredObject(backend, multiple=True), default=list
        )

    return Base, Document


def sync_url(url: str) -> str:
    """The sync twin of an async database URL (for seeding)."""
    parsed = make_url(url)
    return parsed.set(
        drivername=_SYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    ).render_as_string(hide_password=False)


def _seed(Base: Any, Document: Any, backend: ObstoreBackend, rows: int, orphans: int) -> None:
    engine = create_engine(sync_url(os.environ["DATABASE_URL"]))
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all(
                Document(
                    title=f"doc {i}",
                    file=FileObject(filename=f"doc-{i}.txt", content=f"content {i}".encode()),
                )
                for i in range(rows)
            )
            session.commit()
        for i in range(orphans):  # uploaded, never committed: a crash after the upload
            FileObject(filename=f"lost-{i}.txt", content=b"lost", backend=backend.key).save()
    finally:
        engine.dispose()


Base, Document = make_models(
    os.environ.get(TABLE_ENV, "cli_documents"),
    os.environ.get(COLUMN_BACKEND_ENV, "files"),
    json.loads(os.environ.get(RENDITIONS_ENV, "null")),
)
for _backend in build_backends(json.loads(os.environ.get(BACKENDS_ENV, "{}"))):
    _registered: Backend = CtrlCOnList(_backend) if os.environ.get(INTERRUPT_ENV) else _backend
    storages.register_backend(_registered, replace=True)
    if _backend.kind == "memory" and os.environ.get(SEED_ENV):
        _plan = json.loads(os.environ[SEED_ENV])
        _seed(Base, Document, _backend, int(_plan["rows"]), int(_plan["orphans"]))
