"""Multipart part sizes that fit the object (S3's 10,000-part limit), on real S3 servers.

The store's limits are module data (`backends.PART_LIMITS`); the tests shrink them to
two or three parts so that a few MiB reach the limit instead of 48 GiB. The part count
and size of a stored object are read back from the server (`HeadObject` with
`partNumber=1` answers `PartsCount` and the first part's length); "nothing uploaded" is
measured as no object and no multipart upload in progress under the test's prefix.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    StoredObject,
    TooManyPartsError,
    backends,
    storages,
)
from sqlalchemy_obstore import _multipart as multipart
from sqlalchemy_obstore.backends import PartLimits, SizedBody
from tests.integration.backends import s3_backend
from tests.servers import S3Server

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
KEY = "parts"


@pytest.fixture(params=["seaweed", "moto"])
def s3(request: pytest.FixtureRequest) -> tuple[ObstoreBackend, S3Server]:
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    backend = s3_backend(server, key=KEY, prefix=f"parts-{uuid.uuid4().hex[:10]}")
    storages.register_backend(backend)
    return backend, server


@pytest.fixture
def two_parts(monkeypatch: pytest.MonkeyPatch) -> PartLimits:
    """S3 as if it took two parts of 5 to 8 MiB (instead of 10,000 of 5 MiB to 5 GiB)."""
    limits = PartLimits(max_parts=2, max_part_size=8 * MIB, min_part_size=5 * MIB)
    monkeypatch.setitem(backends.PART_LIMITS, "s3", limits)
    return limits


def parts_of(server: S3Server, key: str) -> tuple[int, int]:
    """`(parts count, first part's length)` of a stored object."""
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=server.region,
    )
    head = client.head_object(Bucket=server.bucket, Key=key, PartNumber=1)
    return head.get("PartsCount", 1), head["ContentLength"]


def nothing_under(backend: ObstoreBackend) -> bool:
    """No object and no multipart upload in progress under the backend's prefix."""
    objects = list(backend.list_objects(backend.prefix))
    return objects == [] and multipart.list_incomplete_uploads(backend, backend.prefix) == []


def chunks(total: int, size: int = MIB) -> Iterator[bytes]:
    """A stream of unknown length (a generator): `total` bytes in `size` pieces."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield bytes([sent // MIB % 251]) * piece
        sent += piece


async def achunks(total: int) -> AsyncIterator[bytes]:
    for chunk in chunks(total):
        yield chunk


def test_a_path_of_known_length_gets_parts_that_fit(
    s3: tuple[ObstoreBackend, S3Server], two_parts: PartLimits, tmp_path: Path
) -> None:
    _, server = s3
    source = tmp_path / "twelve.bin"
    source.write_bytes(b"".join(chunks(12 * MIB)))
    # 5 MiB parts would need three: the file's length makes them 6 MiB.
    file = FileObject(filename="twelve.bin", content=source, backend=KEY).save()
    assert parts_of(server, file.path or "") == (2, 6 * MIB)
    assert file.size == 12 * MIB
    assert file.get_content() == source.read_bytes()


async def test_a_path_of_known_length_fits_from_async_code(
    s3: tuple[ObstoreBackend, S3Server], two_parts: PartLimits, tmp_path: Path
) -> None:
    _, server = s3
    source = tmp_path / "eleven.bin"
    source.write_bytes(b"".join(chunks(11 * MIB)))
    file = await FileObject(filename="eleven.bin", content=source, backend=KEY).save_async()
    assert parts_of(server, file.path or "") == (2, 6 * MIB)


def test_an_open_file_and_a_sized_body_tell_their_length(
    s3: tuple[ObstoreBackend, S3Server], two_parts: PartLimits, tmp_path: Path
) -> None:
    backend, server = s3
    source = tmp_path / "eleven.bin"
    source.write_bytes(b"".join(chunks(11 * MIB)))
    with source.open("rb") as handle:
        file = FileObject(filename="eleven.bin", content=handle, backend=KEY).save()
    assert parts_of(server, file.path or "") == (2, 6 * MIB)
    # A body the caller sized itself (e.g. from a declared Content-Length).
    path = f"{backend.prefix}/sized.bin"
    backend.put(path, SizedBody(chunks(11 * MIB), 11 * MIB))
    assert parts_of(server, path) == (2, 6 * MIB)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_stream_of_unknown_length_stops_at_the_part_limit(
    s3: tuple[ObstoreBackend, S3Server], two_parts: PartLimits, mode: str
) -> None:
    backend, _ = s3
    file = FileObject(
        filename="stream.bin",
        content=chunks(11 * MIB) if mode == "sync" else achunks(11 * MIB),
        backend=KEY,
    )
    save = file.save_async if mode == "async" else None
    with pytest.raises(TooManyPartsError) as info:
        await save() if save is not None else file.save()
    error = info.value
    assert (error.max_parts, error.part_size, error.limit) == (2, 5 * MIB, 10 * MIB)
    assert error.size_seen > 10 * MIB
    assert "chunk_size" in str(error)
    assert nothing_under(backend)  # the upload was aborted: no object, no parts left
    # Within the limit, the same stream goes up.
    stored = FileObject(filename="ten.bin", content=chunks(10 * MIB), backend=KEY).save()
    assert stored.size == 10 * MIB


def open_files() -> set[str]:
    """The paths this process holds open (Linux)."""
    fds = Path("/proc/self/fd")
    found = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            found.add(os.readlink(fd))
    return found


def test_a_known_length_that_cannot_fit_is_refused_before_anything_is_sent(
    s3: tuple[ObstoreBackend, S3Server], two_parts: PartLimits, tmp_path: Path
) -> None:
    backend, _ = s3
    source = tmp_path / "seventeen.bin"
    source.write_bytes(b"".join(chunks(17 * MIB)))  # more than 2 parts of at most 8 MiB
    with pytest.raises(TooManyPartsError) as info:
        FileObject(filename="seventeen.bin", content=source, backend=KEY).save()
    assert info.value.size_seen == 17 * MIB
    assert info.value.limit == 16 * MIB
    assert "split the content" in str(info.value)
    assert nothing_under(backend)  # no multipart upload was even started
    assert str(source) not in open_files()  # the refused body let go of its file at once
    with pytest.raises(TooManyPartsError):
        backend.put(f"{backend.prefix}/big.bin", bytes(17 * MIB))
    assert nothing_under(backend)


class Base(DeclarativeBase):
    pass


class Archive(Base):
    __tablename__ = "archives"
    id: Mapped[int] = mapped_column(primary_key=True)
    # Streams of unknown length up to 2 x 8 MiB here (10,000 x 8 MiB = 78 GiB on S3).
    blob: Mapped[Any] = mapped_column(StoredObject(KEY, chunk_size=8 * MIB))


def test_a_columns_chunk_size_sets_the_part_size_of_its_streams(
    s3: tuple[ObstoreBackend, S3Server], two_parts: PartLimits, tmp_path: Path
) -> None:
    _, server = s3
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        row = Archive(blob=FileObject(filename="dump.bin", content=chunks(15 * MIB)))
        session.add(row)
        session.commit()
        assert parts_of(server, row.blob.path) == (2, 8 * MIB)
        assert row.blob.size == 15 * MIB
    assert repr(Archive.__table__.c.blob.type).endswith("chunk_size=8388608)")
    engine.dispose()
