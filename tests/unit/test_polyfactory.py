"""polyfactory builds usable `FileObject`s: the provider, the SQLAlchemy factory, persistence.

Written as an application's test module would be, with the pytest plugin's fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pytest
from polyfactory.factories import DataclassFactory
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory
from sqlalchemy import MetaData, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    FileTooLargeError,
    ObstoreBackend,
    StoredObject,
    UploadPolicy,
)
from sqlalchemy_obstore.contrib.polyfactory import (
    FileObjectProviderMixin,
    ObstoreSQLAlchemyFactory,
    save_pending_files,
)

pytestmark = pytest.mark.obstore_backends("uploads")


class Base(DeclarativeBase):
    pass


class Report(Base):
    __tablename__ = "polyfactory_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    file: Mapped[FileObject] = mapped_column(StoredObject("uploads", key_prefix="reports"))
    cover: Mapped[Optional[FileObject]] = mapped_column(  # noqa: UP045  # SQLAlchemy evaluates it
        StoredObject("uploads", policy=UploadPolicy(max_size=64)), nullable=True
    )
    pages: Mapped[list[FileObject]] = mapped_column(
        StoredObject("uploads", multiple=True), default=list
    )


@pytest.fixture
def obstore_metadata() -> MetaData:
    return Base.metadata


class ReportFactory(ObstoreSQLAlchemyFactory[Report]):
    __allow_none_optionals__ = False
    __obstore_file_size__ = (1, 64)
    __min_collection_length__ = 1
    __max_collection_length__ = 3
    __randomize_collection_length__ = True


def content(file: FileObject) -> bytes:
    data = file.__dict__["_content"]
    assert isinstance(data, bytes)
    return data


def test_a_plain_factory_builds_unusable_files() -> None:
    """The problem the provider solves: polyfactory alone builds a file with nothing in it,
    and random values for a list column."""

    class PlainFactory(SQLAlchemyFactory[Report]):
        __allow_none_optionals__ = False

    with pytest.raises(ValueError, match="A list column holds FileObjects"):
        PlainFactory.build()
    report = PlainFactory.build(pages=[])
    assert isinstance(report.file, FileObject)
    assert not report.file.has_pending_content
    assert report.file.path is None


def test_build_gives_pending_files_in_every_column() -> None:
    report = ReportFactory.build()
    for file in (report.file, report.cover, *report.pages):
        assert isinstance(file, FileObject)
        assert file.has_pending_content
        assert file.path is None
        assert file.backend == "uploads"  # the column's, taken on assignment
        assert file.filename
        assert 1 <= len(content(file)) <= 64
    assert 1 <= len(report.pages) <= 3
    assert isinstance(report.title, str)


def test_seed_random_makes_the_files_reproducible() -> None:
    def files(seed: int) -> list[tuple[str, bytes]]:
        ReportFactory.seed_random(seed)
        report = ReportFactory.build()
        return [(f.filename, content(f)) for f in (report.file, report.cover, *report.pages)]

    assert files(7) == files(7)
    assert files(7) != files(8)


def test_optional_file_columns_are_none_at_times_by_default() -> None:
    class Optionals(ObstoreSQLAlchemyFactory[Report]):
        pass

    Optionals.seed_random(1)
    covers = [Optionals.build().cover for _ in range(40)]
    assert any(cover is None for cover in covers)
    assert any(isinstance(cover, FileObject) for cover in covers)


def test_create_sync_uploads_the_files_with_the_row(
    obstore_session: Session, obstore_memory_backend: ObstoreBackend
) -> None:
    class Persisted(ReportFactory):
        __session__ = obstore_session

    report = Persisted.create_sync()
    stored = sorted(info.path for info in obstore_memory_backend.list_objects())
    files = [report.file, report.cover, *report.pages]
    assert stored == sorted(f.path or "" for f in files)
    assert (report.file.path or "").startswith("reports/")
    loaded = obstore_session.scalars(select(Report)).one()
    assert loaded.file.get_content() == obstore_memory_backend.get_bytes(report.file.path or "")


async def test_create_async_uploads_the_files_with_the_row(
    obstore_async_session: AsyncSession, obstore_memory_backend: ObstoreBackend
) -> None:
    class Persisted(ReportFactory):
        __async_session__ = obstore_async_session

    reports = await Persisted.create_batch_async(3)
    files = [f for r in reports for f in (r.file, r.cover, *r.pages)]
    stored = [info.path async for info in obstore_memory_backend.list_objects_async()]
    assert sorted(stored) == sorted(f.path or "" for f in files)
    first = reports[0]
    assert await first.file.get_content_async() == await obstore_memory_backend.get_bytes_async(
        first.file.path or ""
    )


def test_obstore_save_stores_files_as_they_are_built(
    obstore_memory_backend: ObstoreBackend,
) -> None:
    class Stored(ReportFactory):
        __obstore_save__ = True

    report = Stored.build()
    for file in (report.file, report.cover, *report.pages):
        assert not file.has_pending_content
        assert file.path is not None
        assert obstore_memory_backend.get_bytes(file.path)
        assert file.size == len(obstore_memory_backend.get_bytes(file.path))
    assert (report.file.path or "").startswith("reports/")  # the column's key prefix


def test_obstore_save_applies_the_column_policy(obstore_registry: object) -> None:
    class TooBig(ReportFactory):
        __obstore_save__ = True
        __obstore_file_size__ = (65, 100)  # the cover column allows 64 bytes

    with pytest.raises(FileTooLargeError):
        TooBig.build()


def test_stored_files_commit_with_their_row(
    obstore_session: Session, obstore_memory_backend: ObstoreBackend
) -> None:
    class Stored(ReportFactory):
        __obstore_save__ = True
        __session__ = obstore_session

    report = Stored.create_sync()
    paths = sorted(f.path or "" for f in (report.file, report.cover, *report.pages))
    assert sorted(i.path for i in obstore_memory_backend.list_objects()) == paths
    obstore_session.expire_all()
    assert obstore_session.get(Report, report.id) is not None


def test_build_file_object_can_be_overridden() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8

    class Covers(ReportFactory):
        @classmethod
        def build_file_object(cls) -> FileObject:
            return FileObject(filename="cover.png", content=png)

    report = Covers.build()
    assert report.file.filename == "cover.png"
    assert content(report.file) == png


def test_save_pending_files_skips_what_is_stored(obstore_memory_backend: ObstoreBackend) -> None:
    report = ReportFactory.build()
    save_pending_files(report)
    first = report.file.path
    save_pending_files(report)
    assert report.file.path == first
    assert len(list(obstore_memory_backend.list_objects())) == 2 + len(report.pages)


@dataclass
class Upload:
    name: str
    file: FileObject
    attachments: list[FileObject]


class UploadFactory(FileObjectProviderMixin, DataclassFactory[Upload]):
    __obstore_file_size__ = (5, 5)


def test_the_provider_works_for_other_factories() -> None:
    upload = UploadFactory.build()
    assert upload.file.has_pending_content
    assert len(content(upload.file)) == 5
    assert all(isinstance(f, FileObject) for f in upload.attachments)


def test_the_mixin_is_not_a_factory_for_any_model() -> None:
    assert not FileObjectProviderMixin.is_supported_type(Upload)
    assert UploadFactory.is_supported_type(Upload)
    assert ObstoreSQLAlchemyFactory.is_supported_type(Report)

    @dataclass
    class Plain:
        value: int

    class PlainFactory(DataclassFactory[Plain]):
        pass

    assert isinstance(PlainFactory.build().value, int)  # other factories are unaffected


def test_nested_models_get_files_too() -> None:
    @dataclass
    class Folder:
        uploads: list[Upload]

    class FolderFactory(FileObjectProviderMixin, DataclassFactory[Folder]):
        __min_collection_length__ = 1
        __randomize_collection_length__ = True

    folder: Any = FolderFactory.build()
    assert folder.uploads
    assert all(isinstance(u.file, FileObject) for u in folder.uploads)
