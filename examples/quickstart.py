"""Quickstart: declare a file column, save, read, stream, replace and delete files.

Runs on SQLite + local files under ./var by default. Point it at real servers with
environment variables:

    DATABASE_URL=postgresql+asyncpg://user@127.0.0.1/app \
    STORAGE_URL=s3://my-bucket/ AWS_REGION=eu-west-1 \
    python examples/quickstart.py

(obstore reads the usual AWS_*, GOOGLE_* and AZURE_* variables for credentials.)
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    StoredObject,
    sign_files_async,
    storages,
)

VAR = Path("var").resolve()
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite+aiosqlite:///{VAR / 'quickstart.db'}")
STORAGE_URL = os.environ.get("STORAGE_URL", (VAR / "files").as_uri())


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "quickstart_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    file: Mapped[FileObject | None] = mapped_column(StoredObject("uploads"))
    attachments: Mapped[list[FileObject]] = mapped_column(
        StoredObject("uploads", multiple=True), default=list
    )


def stored_keys(backend: ObstoreBackend) -> list[str]:
    return sorted(info.path for info in backend.list_objects(backend.prefix))


async def main() -> None:
    VAR.mkdir(exist_ok=True)
    backend = ObstoreBackend("uploads", STORAGE_URL, prefix="quickstart")
    storages.register_backend(backend)
    print(f"database: {DATABASE_URL.split('@')[-1]}")
    print(f"storage:  {backend!r}")

    engine = create_async_engine(DATABASE_URL)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    Session = async_sessionmaker(engine, expire_on_commit=False)

    async def chunks():  # any async iterator streams straight into storage
        for i in range(3):
            yield f"line {i}\n".encode()

    async with Session() as session:
        doc = Document(
            title="Quarterly report",
            file=FileObject(filename="report.txt", content=b"Revenue went up."),
            attachments=[FileObject(filename="notes.txt", content=chunks())],
        )
        session.add(doc)
        await session.commit()  # uploads happen during the flush, before the INSERT
        print(f"saved:    {doc.file!r}")
        print(f"          checksum {doc.file.checksum}")

        loaded = (await session.scalars(select(Document).where(Document.id == doc.id))).one()
        print(f"read:     {await loaded.file.get_content_async()!r}")
        streamed = [chunk async for chunk in loaded.attachments[0].iter_chunks_async()]
        print(f"streamed: {b''.join(streamed)!r}")
        if backend.supports_signing:
            print(f"signed:   {await loaded.file.sign_async(expires_in=600)}")
            # a page of files at once: cached URLs reused, the rest in one call per backend
            page = await sign_files_async([loaded.file, *loaded.attachments], expires_in=600)
            print(f"page:     {len(page)} signed URLs, the first one reused from the cache")

        old_path = loaded.file.path
        loaded.file = FileObject(filename="report-v2.txt", content=b"Revenue went way up.")
        await session.commit()  # new file uploaded; the old one deleted after the commit
        print(f"replaced: {old_path} -> {loaded.file.path}")

        await session.delete(loaded)
        await session.commit()  # the row is gone, and so are its files
        print(f"deleted:  row {doc.id}; objects left under the prefix: {stored_keys(backend)}")

    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
    # obstore's async runtime can race interpreter shutdown right after network calls;
    # give its threads a moment before exiting.
    time.sleep(0.3)
