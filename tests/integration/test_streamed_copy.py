"""Uploads whose body streams from another backend (one obstore call inside another).

obstore's own sync `put` pulls an iterator body inside its runtime; a body that itself
makes a sync obstore call (another backend's `iter_chunks`) used to end in a pyo3
`PanicException` ("Cannot start a runtime from within a runtime"), a `BaseException`
no `except Exception` catches. These tests copy objects larger than one part between
backends, sync and async, and check bytes, recorded fields and that a refused stream
leaves nothing (no object, no pending multipart upload on S3).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy_obstore import (
    FileObject,
    FileTooLargeError,
    ObstoreBackend,
    StorageOperationError,
    UploadPolicy,
    storages,
)
from sqlalchemy_obstore._store_errors import translate
from tests.integration.test_upload_policy import _empty, _memory_target, _moto_target

MIB = 1024 * 1024
SIZE = 12 * MIB + 123  # three 5 MiB parts, the last one short


@pytest.fixture
def source(tmp_path: Path) -> tuple[ObstoreBackend, bytes]:
    backend = ObstoreBackend("source", tmp_path / "source")
    storages.register_backend(backend)
    data = os.urandom(SIZE)
    backend.put("big.bin", data)
    return backend, data


@pytest.fixture(params=["memory", "moto"])
def destination(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return _memory_target()
    return _moto_target(request.getfixturevalue("moto_server"))


def _check_saved(f: FileObject, target: Any, data: bytes) -> None:
    assert f.is_saved
    assert f.size == len(data)
    assert f.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert f.etag
    assert target.backend.get_bytes(f.path) == data
    assert target.backend.head(f.path).content_type == "application/octet-stream"


def test_sync_save_streams_from_another_backends_iter_chunks(
    source: tuple[ObstoreBackend, bytes], destination: Any
) -> None:
    backend, data = source
    f = FileObject(
        filename="big.bin", content=backend.iter_chunks("big.bin"), backend=destination.key
    ).save()
    _check_saved(f, destination, data)


def test_sync_save_streams_from_a_saved_files_iter_chunks(
    source: tuple[ObstoreBackend, bytes], destination: Any
) -> None:
    _, data = source
    original = FileObject(filename="big.bin", path="big.bin", backend="source", size=SIZE)
    copy = FileObject(
        filename="big.bin", content=original.iter_chunks(), backend=destination.key
    ).save()
    _check_saved(copy, destination, data)


async def test_async_save_streams_from_another_backends_sync_iter_chunks(
    source: tuple[ObstoreBackend, bytes], destination: Any
) -> None:
    backend, data = source
    f = await FileObject(
        filename="big.bin", content=backend.iter_chunks("big.bin"), backend=destination.key
    ).save_async()
    _check_saved(f, destination, data)
    result = await destination.backend.put_async("raw.bin", backend.iter_chunks("big.bin"))
    assert result.etag
    assert destination.backend.get_bytes("raw.bin") == data


def test_backend_put_of_a_small_iterator_keeps_create_only(destination: Any) -> None:
    target = destination.backend
    target.put("a.bin", iter([b"one", b"two"]), create_only=True)
    assert target.get_bytes("a.bin") == b"onetwo"
    with pytest.raises(Exception) as caught:
        target.put("a.bin", iter([b"three"]), create_only=True)
    assert type(caught.value).__name__ == "ObjectExistsError"
    assert target.get_bytes("a.bin") == b"onetwo"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_size_limit_while_streaming_from_another_backend_leaves_nothing(
    source: tuple[ObstoreBackend, bytes], destination: Any, mode: str
) -> None:
    backend, _ = source
    f = FileObject(
        filename="big.bin", content=backend.iter_chunks("big.bin"), backend=destination.key
    )
    policy = UploadPolicy(max_size=8 * MIB)
    if mode == "sync":
        with pytest.raises(FileTooLargeError):
            f.save(policy=policy)
    else:
        with pytest.raises(FileTooLargeError):
            await f.save_async(policy=policy)
    assert destination.leftovers() == _empty(destination)


def test_a_failing_source_aborts_the_upload_and_raises_its_error(destination: Any) -> None:
    class SourceBroke(Exception):
        pass

    def body() -> Iterator[bytes]:
        yield os.urandom(6 * MIB)
        yield os.urandom(6 * MIB)
        raise SourceBroke

    with pytest.raises(SourceBroke):
        destination.backend.put("broken.bin", body())
    assert destination.leftovers() == _empty(destination)


def test_a_rust_panic_is_a_typed_storage_error(tmp_path: Path) -> None:
    # A file-like body is read by obstore itself, inside its runtime; one whose read()
    # makes a sync obstore call panics there. The caller gets a typed error instead.
    source = ObstoreBackend("source", tmp_path / "source")
    source.put("x.bin", b"x" * 100)
    target = ObstoreBackend("target", "memory://")

    class Reader:
        def __init__(self) -> None:
            self.position = 0

        def read(self, size: int = -1) -> bytes:
            if self.position >= 100:
                return b""
            data = source.get_range("x.bin", self.position, 10)
            self.position += 10
            return data

        def seek(self, offset: int, whence: int = 0) -> int:
            return 0

        def tell(self) -> int:
            return 0

    with pytest.raises(StorageOperationError, match="async API"):
        target.put("y.bin", Reader())  # type: ignore[arg-type]
    assert list(target.list_objects()) == []
    assert translate(target, KeyboardInterrupt(), "put", "x.bin") is None
