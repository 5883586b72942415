"""The document library's tables and upload rules.

A document is either a plain file (PDF, text, ...) or an image. Both go to the same
backend, but images get their own column, whose policy checks that the bytes really are
an image and generates a 256 px thumbnail stored next to the original.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import DateTime, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_obstore import FileObject, StoredObject, UploadPolicy
from sqlalchemy_obstore.processing import ImagePolicy, Rendition

BACKEND = "library"
"""The key the storage backend is registered under (see `app.create_app`)."""

MIB = 1024 * 1024
MAX_UPLOAD_SIZE = 20 * MIB
"""Largest accepted upload; requests are refused above it, the policies enforce it too."""
MULTIPART_THRESHOLD = 8 * MIB
"""On S3, direct uploads above this go up as multipart uploads (in parallel parts)."""

DOCUMENT_TYPES = (
    "application/pdf",
    "text/plain",
    "text/csv",
    "text/markdown",
    "application/json",
    "application/zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.oasis.opendocument.text",
)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")

DOCUMENTS = UploadPolicy(
    max_size=MAX_UPLOAD_SIZE,
    # Setting allowed types turns sniffing on: the bytes decide, not the client's claim.
    allowed_content_types=DOCUMENT_TYPES,
)
IMAGES = UploadPolicy(
    max_size=MAX_UPLOAD_SIZE,
    allowed_content_types=IMAGE_TYPES,
    image=ImagePolicy(
        max_pixels=40_000_000,
        renditions=(Rendition("thumb", 256, 256, format="WEBP"),),
    ),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always read back as aware UTC.

    SQLite stores no offset, so a plain `DateTime(timezone=True)` reads back naive there:
    the list would show `2025-01-01T10:00:00` where the upload answered
    `2025-01-01T10:00:00Z`. This keeps one spelling on every database.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: stored as UTC, read back without the offset
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Document(Base):
    """One uploaded document: exactly one of `file` and `image` is set."""

    __tablename__ = "library_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND, policy=DOCUMENTS))
    image: Mapped[FileObject | None] = mapped_column(StoredObject(BACKEND, policy=IMAGES))

    @property
    def attachment(self) -> FileObject:
        """The stored file, whichever column holds it."""
        stored = self.image if self.image is not None else self.file
        assert stored is not None, "a document always has a file or an image"
        return stored

    @property
    def thumbnail(self) -> FileObject | None:
        """The image's thumbnail rendition, when the document is an image."""
        return self.image.renditions.get("thumb") if self.image is not None else None
