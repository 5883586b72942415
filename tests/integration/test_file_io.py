"""Saving and reading files on the server-less backends (memory and local files).

Each behaviour is written once and run through the sync API (`save`, `get_content`,
...) and the async API (`save_async`, `get_content_async`, ...) via the `io` fixture.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy_obstore import (
    BackendNotFoundError,
    FileObject,
    InvalidFileObjectError,
    NoContentError,
    NoDefaultBackendError,
    ObjectNotFoundError,
    ObstoreBackend,
    SaveOptions,
    StorageError,
    storages,
)

KEY = re.compile(r"^[0-9a-f]{32}/[^/]+$")
MiB = 1 << 20


class IO:
    """Runs a FileObject operation through the sync or the async API."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    @property
    def is_async(self) -> bool:
        return self.mode == "async"

    async def call(self, file: FileObject, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await getattr(file, f"{name}_async")(*args, **kwargs)
        return getattr(file, name)(*args, **kwargs)

    async def save(self, file: FileObject, **kwargs: Any) -> FileObject:
        saved: FileObject = await self.call(file, "save", **kwargs)
        return saved

    async def read(self, file: FileObject) -> bytes:
        data: bytes = await self.call(file, "get_content")
        return data

    async def chunks(self, file: FileObject, chunk_size: int) -> list[bytes]:
        if self.is_async:
            return [c async for c in file.iter_chunks_async(chunk_size)]
        return list(file.iter_chunks(chunk_size))

    async def get_range(self, file: FileObject, start: int, length: int) -> bytes:
        data: bytes = await self.call(file, "get_range", start, length)
        return data

    async def exists(self, file: FileObject) -> bool:
        result: bool = await self.call(file, "exists")
        return result

    async def delete(self, file: FileObject) -> None:
        await self.call(file, "delete")

    async def refresh(self, file: FileObject) -> FileObject:
        refreshed: FileObject = await self.call(file, "refresh")
        return refreshed


@pytest.fixture(params=["sync", "async"])
def io_(request: pytest.FixtureRequest) -> IO:
    return IO(request.param)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking content of `size` bytes."""
    block = hashlib.sha256(str(size).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def sync_chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def async_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- saving from every content kind ----------------------------------------------------------------
CONTENT_KINDS = [
    "bytes",
    "bytearray",
    "memoryview",
    "path",
    "file",
    "open-file",
    "iterator",
    "list",
]


def make_content(kind: str, data: bytes, tmp_path: Path) -> Any:
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind in {"path", "open-file"}:
        source = tmp_path / "source.bin"
        source.write_bytes(data)
        return source if kind == "path" else source.open("rb")
    if kind == "file":
        return io.BytesIO(data)
    if kind == "iterator":
        return sync_chunks(data, 1000)
    if kind == "list":
        return list(sync_chunks(data, 1000))
    raise AssertionError(kind)


def assert_saved(file: FileObject, backend: ObstoreBackend, data: bytes) -> None:
    assert file.is_saved
    assert not file.has_pending_content
    assert file.backend == backend.key
    assert file.path is not None
    assert file.size == len(data)
    assert file.checksum == sha256(data)
    assert file.etag  # every store reports one
    assert file.last_modified is not None
    assert file.last_modified.tzinfo is not None
    assert backend.get_bytes(file.path) == data


@pytest.mark.parametrize("kind", CONTENT_KINDS)
@pytest.mark.parametrize("size", [0, 10, 3000])
async def test_save_each_content_kind(
    io_: IO, backend: ObstoreBackend, tmp_path: Path, kind: str, size: int
) -> None:
    data = pattern(size)
    content = make_content(kind, data, tmp_path)
    try:
        file = FileObject(filename="report.pdf", content=content, backend=backend.key)
        assert await io_.save(file) is file
    finally:
        if hasattr(content, "close"):
            content.close()
    assert_saved(file, backend, data)
    assert file.path is not None
    assert KEY.match(file.path)
    assert file.path.endswith("/report.pdf")
    assert file.content_type == "application/pdf"
    assert await io_.read(file) == data


@pytest.mark.parametrize("kind", ["bytes", "path", "file", "iterator"])
async def test_save_streams_content_larger_than_a_part(
    io_: IO, backend: ObstoreBackend, tmp_path: Path, kind: str
) -> None:
    data = pattern(MiB + 12345)
    content = make_content(kind, data, tmp_path)
    try:
        file = FileObject(filename="big.bin", content=content, backend=backend.key)
        await io_.save(file, chunk_size=64 * 1024)
    finally:
        if hasattr(content, "close"):
            content.close()
    assert_saved(file, backend, data)


async def test_save_from_async_iterator(backend: ObstoreBackend) -> None:
    for size, chunk_size in [(0, 5), (3000, 1000), (MiB + 7, 64 * 1024)]:
        data = pattern(size)
        file = FileObject(filename="a.bin", content=async_chunks(data, 4096), backend=backend.key)
        await file.save_async(chunk_size=chunk_size)
        assert_saved(file, backend, data)
        assert await file.get_content_async() == data


async def test_async_iterator_with_sync_save_is_a_typed_error(backend: ObstoreBackend) -> None:
    data = b"async only"
    file = FileObject(filename="a.txt", content=async_chunks(data, 3), backend=backend.key)
    with pytest.raises(InvalidFileObjectError, match="save_async"):
        file.save()
    assert file.has_pending_content
    assert file.path is None
    assert list(backend.list_objects()) == []  # nothing was stored
    await file.save_async()  # the iterator was not consumed
    assert file.get_content() == data


async def test_memoryview_of_other_formats(io_: IO, backend: ObstoreBackend) -> None:
    import array

    numbers = array.array("i", range(100))
    file = FileObject(filename="n.bin", content=memoryview(numbers), backend=backend.key)
    await io_.save(file)
    assert await io_.read(file) == numbers.tobytes()
    assert file.size == len(numbers.tobytes())


async def test_iterator_of_mixed_buffers(io_: IO, backend: ObstoreBackend) -> None:
    parts: list[Any] = [b"ab", bytearray(b"cd"), memoryview(b"ef")]
    file = FileObject(filename="m.bin", content=iter(parts), backend=backend.key)
    await io_.save(file)
    assert await io_.read(file) == b"abcdef"
    assert file.checksum == sha256(b"abcdef")


async def test_file_object_is_read_from_its_position(io_: IO, backend: ObstoreBackend) -> None:
    handle = io.BytesIO(b"headerBODY")
    handle.seek(6)
    file = await io_.save(FileObject(filename="x", content=handle, backend=backend.key))
    assert await io_.read(file) == b"BODY"
    assert not handle.closed  # the caller's handle stays open


async def test_metadata_and_attributes_are_stored(io_: IO, backend: ObstoreBackend) -> None:
    file = FileObject(
        filename="résumé.txt",
        content=b"hi",
        backend=backend.key,
        metadata={"owner": "alice", "note": "ünïcode stays in the column"},
    )
    await io_.save(file, options=SaveOptions(cache_control="max-age=60"))
    assert file.path is not None
    info = backend.head(file.path)
    assert info.size == 2
    if backend.supports_attributes:
        assert info.content_type == "text/plain"
        assert info.metadata == {"owner": "alice"}  # non-ASCII values are column-only
        assert info.attributes["Cache-Control"] == "max-age=60"
        assert "filename*=UTF-8''r%C3%A9sum%C3%A9.txt" in info.attributes["Content-Disposition"]
    assert file.metadata == {"owner": "alice", "note": "ünïcode stays in the column"}


async def test_two_saves_of_the_same_name_never_collide(io_: IO, backend: ObstoreBackend) -> None:
    first = await io_.save(FileObject(filename="same.txt", content=b"1", backend=backend.key))
    second = await io_.save(FileObject(filename="same.txt", content=b"2", backend=backend.key))
    assert first.path != second.path
    assert await io_.read(first) == b"1"
    assert await io_.read(second) == b"2"


async def test_hostile_filename_stays_inside_the_store(
    io_: IO, backend: ObstoreBackend, tmp_path: Path
) -> None:
    file = FileObject(filename="../../../etc/passwd", content=b"x", backend=backend.key)
    await io_.save(file)
    assert file.path is not None
    assert file.path.endswith("/passwd")
    assert ".." not in file.path.split("/")
    assert file.filename == "../../../etc/passwd"  # the display name is kept
    if backend.kind == "local":
        stored = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert all((tmp_path / "store") in p.parents for p in stored)


async def test_save_with_prefix_and_key_function(io_: IO, tmp_path: Path) -> None:
    backend = ObstoreBackend("prefixed", "memory://", prefix="uploads")
    storages.register_backend(backend)
    file = FileObject(filename="a.txt", content=b"x", backend="prefixed")
    await io_.save(file, key_prefix="docs", key_function=lambda leaf: f"2024/{leaf}")
    assert file.path == "uploads/docs/2024/a.txt"
    # A second save to the same computed key is refused rather than overwriting.
    again = FileObject(filename="a.txt", content=b"y", backend="prefixed")
    with pytest.raises(StorageError):
        await io_.save(again, key_prefix="docs", key_function=lambda leaf: f"2024/{leaf}")
    assert again.has_pending_content
    assert await io_.read(file) == b"x"


async def test_save_without_checksum(io_: IO) -> None:
    storages.register_backend(ObstoreBackend("plain", "memory://", checksum_algorithm=None))
    file = await io_.save(FileObject(filename="a", content=b"abc", backend="plain"))
    assert file.checksum is None
    assert file.size == 3


async def test_save_with_other_checksum_algorithm(io_: IO) -> None:
    storages.register_backend(ObstoreBackend("md5", "memory://", checksum_algorithm="md5"))
    file = await io_.save(FileObject(filename="a", content=b"abc", backend="md5"))
    assert file.checksum == "md5:" + hashlib.md5(b"abc").hexdigest()


async def test_saving_a_stored_file_again_is_a_no_op(io_: IO, backend: ObstoreBackend) -> None:
    file = await io_.save(FileObject(filename="a", content=b"abc", backend=backend.key))
    path, etag = file.path, file.etag
    assert await io_.save(file) is file
    assert (file.path, file.etag) == (path, etag)


async def test_stream_content_is_read_once(io_: IO, backend: ObstoreBackend) -> None:
    reads = 0

    def counted() -> Iterator[bytes]:
        nonlocal reads
        reads += 1
        yield b"once"

    file = await io_.save(FileObject(filename="a", content=counted(), backend=backend.key))
    assert reads == 1
    assert await io_.read(file) == b"once"


# -- errors when saving ----------------------------------------------------------------------------
async def test_saving_with_no_content_is_an_error(io_: IO, backend: ObstoreBackend) -> None:
    file = FileObject(filename="empty.txt", backend=backend.key)
    with pytest.raises(NoContentError, match="no content"):
        await io_.save(file)
    assert file.path is None


async def test_unknown_backend(io_: IO, backend: ObstoreBackend) -> None:
    file = FileObject(filename="a.txt", content=b"x", backend="nowhere")
    with pytest.raises(BackendNotFoundError) as info:
        await io_.save(file)
    assert isinstance(info.value, LookupError)
    assert backend.key in str(info.value)  # lists what is registered
    assert file.has_pending_content


async def test_no_backend_at_all(io_: IO) -> None:
    # No backend named and no default backend chosen: a typed error saying what to do.
    file = FileObject(filename="a.txt", content=b"x")
    with pytest.raises(NoDefaultBackendError, match="set_default"):
        await io_.save(file)
    assert file.has_pending_content
    assert file.backend is None


async def test_unreadable_path_content(io_: IO, backend: ObstoreBackend, tmp_path: Path) -> None:
    file = FileObject(content=tmp_path / "does-not-exist.bin", backend=backend.key)
    with pytest.raises(InvalidFileObjectError, match="Cannot read content"):
        await io_.save(file)
    assert file.path is None


async def test_failing_iterator_stores_nothing(io_: IO, backend: ObstoreBackend) -> None:
    class SourceBroke(Exception):
        pass

    def broken() -> Iterator[bytes]:
        yield b"x" * 1000
        raise SourceBroke("disconnected")

    file = FileObject(filename="a", content=broken(), backend=backend.key)
    with pytest.raises(SourceBroke):
        await io_.save(file, chunk_size=100)
    assert file.path is None
    assert [o.path for o in backend.list_objects()] == []


# -- reading ---------------------------------------------------------------------------------------
@pytest.fixture
def data() -> bytes:
    return pattern(100_000)


async def saved(io_: IO, backend: ObstoreBackend, data: bytes) -> FileObject:
    return await io_.save(FileObject(filename="data.bin", content=data, backend=backend.key))


async def test_read_whole(io_: IO, backend: ObstoreBackend, data: bytes) -> None:
    file = await saved(io_, backend, data)
    assert await io_.read(file) == data


@pytest.mark.parametrize("chunk_size", [1000, 4096, 1 << 20])
async def test_iter_chunks(io_: IO, backend: ObstoreBackend, data: bytes, chunk_size: int) -> None:
    file = await saved(io_, backend, data)
    chunks = await io_.chunks(file, chunk_size)
    assert b"".join(chunks) == data
    assert all(type(c) is bytes for c in chunks)
    assert all(len(c) >= chunk_size for c in chunks[:-1])  # chunk_size is a minimum
    if backend.kind == "local" and chunk_size < len(data):
        assert len(chunks) > 1  # streamed from disk (memory hands out its one buffer)


async def test_iter_chunks_of_empty_file(io_: IO, backend: ObstoreBackend) -> None:
    file = await io_.save(FileObject(filename="e", content=b"", backend=backend.key))
    assert b"".join(await io_.chunks(file, 1000)) == b""


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [
        (0, 10, slice(0, 10)),
        (500, 1000, slice(500, 1500)),
        (99_990, 10, slice(99_990, 100_000)),
        (99_990, 1000, slice(99_990, 100_000)),  # shorter at the end
        (0, 10**9, slice(0, 100_000)),
        (100_000, 10, slice(0, 0)),  # exactly at the end
        (100_001, 10, slice(0, 0)),  # past the end
        (10**9, 1, slice(0, 0)),
        (5, 0, slice(0, 0)),
    ],
)
async def test_get_range(
    io_: IO,
    backend: ObstoreBackend,
    data: bytes,
    start: int,
    length: int,
    expected: slice,
) -> None:
    file = await saved(io_, backend, data)
    assert await io_.get_range(file, start, length) == data[expected]


async def test_get_range_of_empty_file(io_: IO, backend: ObstoreBackend) -> None:
    file = await io_.save(FileObject(filename="e", content=b"", backend=backend.key))
    assert await io_.get_range(file, 0, 10) == b""


@pytest.mark.parametrize(("start", "length"), [(-1, 5), (0, -5)])
async def test_get_range_refuses_negative_values(
    io_: IO, backend: ObstoreBackend, data: bytes, start: int, length: int
) -> None:
    file = await saved(io_, backend, data)
    with pytest.raises(ValueError, match="range"):
        await io_.get_range(file, start, length)


async def test_refresh(io_: IO, backend: ObstoreBackend, data: bytes) -> None:
    file = await saved(io_, backend, data)
    expected = (file.size, file.etag)
    file.size, file.etag, file.last_modified = None, None, None
    assert await io_.refresh(file) is file
    assert (file.size, file.etag) == expected
    assert file.last_modified is not None
    assert file.content_type == "application/octet-stream"


async def test_refresh_picks_up_an_upload_made_elsewhere(io_: IO, backend: ObstoreBackend) -> None:
    # As after a signed-URL upload: the object exists, the FileObject knows only its key.
    backend.put("direct/photo.png", b"\x89PNG....", attributes={"Content-Type": "image/png"})
    file = FileObject(backend=backend.key, path="direct/photo.png", content_type="x/unknown")
    await io_.refresh(file)
    assert file.size == 8
    assert file.etag
    if backend.supports_attributes:
        assert file.content_type == "image/png"
    else:
        assert file.content_type == "x/unknown"  # nothing stored to refresh it from


async def test_exists_and_delete(io_: IO, backend: ObstoreBackend, data: bytes) -> None:
    file = await saved(io_, backend, data)
    assert await io_.exists(file)
    await io_.delete(file)
    await io_.delete(file)  # idempotent
    assert not await io_.exists(file)
    with pytest.raises(ObjectNotFoundError) as info:
        await io_.read(file)
    error = info.value
    assert isinstance(error, FileNotFoundError)
    assert error.backend == backend.key
    assert error.path == file.path
    with pytest.raises(ObjectNotFoundError):
        await io_.refresh(file)
    with pytest.raises(ObjectNotFoundError):
        await io_.chunks(file, 1000)
    with pytest.raises(ObjectNotFoundError):
        await io_.get_range(file, 0, 10)
    with pytest.raises(FileNotFoundError):
        await io_.get_range(file, 10**6, 10)


async def test_missing_object_is_a_file_not_found_error(io_: IO, backend: ObstoreBackend) -> None:
    file = FileObject(backend=backend.key, path="never/was.txt")
    assert not await io_.exists(file)
    with pytest.raises(FileNotFoundError):
        await io_.read(file)


async def test_unsaved_file_cannot_be_read(io_: IO, backend: ObstoreBackend) -> None:
    file = FileObject(filename="a", content=b"x", backend=backend.key)
    assert not await io_.exists(file)
    with pytest.raises(NoContentError, match="not been saved"):
        await io_.read(file)
    with pytest.raises(NoContentError):
        await io_.delete(file)
    with pytest.raises(NoContentError):
        await io_.refresh(file)


# -- large streamed saves --------------------------------------------------------------------------
async def test_streamed_save_pulls_the_iterator_lazily(io_: IO, tmp_path: Path) -> None:
    """The upload is under way while the iterator still produces: it is streamed."""
    root = tmp_path / "store"
    storages.register_backend(ObstoreBackend("local", root))
    total = 24
    pulled = 0
    staged_while_pulling: list[str] = []
    digest = hashlib.sha256()

    def produce(i: int) -> bytes:
        nonlocal pulled
        pulled += 1
        if i == total - 1:  # the last chunk: earlier parts are being written already
            staged_while_pulling.extend(p.name for p in root.rglob("*") if p.is_file())
        chunk = bytes([i]) * MiB
        digest.update(chunk)
        return chunk

    def chunks() -> Iterator[bytes]:
        for i in range(total):
            yield produce(i)

    async def achunks() -> AsyncIterator[bytes]:
        for i in range(total):
            yield produce(i)

    file = FileObject(
        filename="big.bin", content=achunks() if io_.is_async else chunks(), backend="local"
    )
    await io_.save(file, chunk_size=5 * MiB)
    assert pulled == total
    assert file.size == total * MiB
    assert file.checksum == "sha256:" + digest.hexdigest()
    # obstore's local multipart upload writes "<key>#<id>" and renames it at the end.
    assert staged_while_pulling
    assert all(name.startswith("big.bin#") for name in staged_while_pulling)
    assert [p.name for p in root.rglob("*") if p.is_file()] == ["big.bin"]


STREAMED_SAVE = textwrap.dedent(
    """
    import asyncio, hashlib, json, os, resource, sys
    from pathlib import Path
    from sqlalchemy_obstore import FileObject, ObstoreBackend, storages

    root, mode, chunks_count, max_concurrency = (
        Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    )
    MiB = 1 << 20
    storages.register_backend(ObstoreBackend("local", root))
    state = {"pulled": 0}
    digest = hashlib.sha256()

    def produce(i):
        state["pulled"] += 1
        chunk = bytes([i % 256]) * MiB  # a fresh 1 MiB buffer each time
        digest.update(chunk)
        return chunk

    def chunks():
        for i in range(chunks_count):
            yield produce(i)

    async def achunks():
        for i in range(chunks_count):
            yield produce(i)

    # Warm up imports, the obstore runtimes and the allocator with a tiny save.
    FileObject(filename="w", content=b"w", backend="local").save()
    asyncio.run(FileObject(filename="w", content=b"w", backend="local").save_async())

    options = {} if max_concurrency == 0 else {"max_concurrency": max_concurrency}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "sync":
        file = FileObject(filename="big.bin", content=chunks(), backend="local").save(**options)
    else:
        file = asyncio.run(
            FileObject(filename="big.bin", content=achunks(), backend="local").save_async(
                **options
            )
        )
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "growth_mib": (after - before) / 1024,  # ru_maxrss is in KiB on Linux
        "pulled": state["pulled"],
        "size": file.size,
        "checksum": file.checksum,
        "expected_checksum": "sha256:" + digest.hexdigest(),
        "stored_size": (root / file.path).stat().st_size,
    }), flush=True)
    # obstore 0.12 can abort (SIGABRT) at interpreter shutdown after put_async with an
    # async iterator, when a tokio thread drops the iterator while Python finalizes.
    # The measurement is done; leave without running finalization.
    os._exit(0)
    """
)


def run_streamed_save(root: Path, mode: str, chunks: int, max_concurrency: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", STREAMED_SAVE, str(root), mode, str(chunks), str(max_concurrency)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_64_mib_streamed_save_does_not_hold_the_file_in_memory(tmp_path: Path, mode: str) -> None:
    # Peak memory of a streamed upload is about chunk_size x max_concurrency: the parts
    # obstore has in flight. With the defaults (5 MiB x 12 = 60 MiB) that window is as
    # large as this file, so bound it to 2 parts to make "not the whole file" visible.
    result = run_streamed_save(tmp_path / "store", mode, chunks=64, max_concurrency=2)
    assert result["pulled"] == 64
    assert result["size"] == result["stored_size"] == 64 * MiB
    assert result["checksum"] == result["expected_checksum"]
    assert result["growth_mib"] < 40, result


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_streamed_save_memory_is_bounded_with_default_settings(tmp_path: Path) -> None:
    # With the default part size and concurrency, memory is bounded by the in-flight
    # window (~60 MiB), not by the file: a 256 MiB file stays far below its size.
    result = run_streamed_save(tmp_path / "store", "sync", chunks=256, max_concurrency=0)
    assert result["pulled"] == 256
    assert result["size"] == result["stored_size"] == 256 * MiB
    assert result["checksum"] == result["expected_checksum"]
    assert result["growth_mib"] < 100, result


@pytest.mark.parametrize("chunk_size", [4, 7, 1024 * 1024])
async def test_iter_chunks_keeps_its_chunk_size_on_every_store(
    backend: ObstoreBackend, chunk_size: int
) -> None:
    # Memory and local stores hand over an object whole: it is cut to size all the same,
    # so tests against them meet the chunks the application will meet on S3.
    data = bytes(range(256)) * (3 * 1024 * 1024 // 256 + 7)
    file = FileObject(filename="big.bin", content=data, backend=backend.key).save()
    expected = [len(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]
    chunks = list(file.iter_chunks(chunk_size=chunk_size))
    assert [len(c) for c in chunks] == expected
    assert b"".join(chunks) == data
    assert [len(c) async for c in file.iter_chunks_async(chunk_size=chunk_size)] == expected
