"""Incomplete multipart uploads: none left by a failure or a cancellation, leftovers collected.

A multipart upload that is neither completed nor aborted keeps its parts (billed, and
invisible to an object listing). These tests list the uploads on real S3 servers (moto
and SeaweedFS, which checks every signature) after each way an upload can end badly:

* the body fails (sync and async, `put` and `put_async`, a streamed copy): obstore or the
  library aborts the upload;
* the awaiting task is cancelled: obstore alone would drop the upload without aborting it
  (measured: one incomplete upload per cancellation); `put_async` aborts it first;
* the process is killed (SIGKILL) mid-upload: nothing in the process can run, so the
  garbage collector finds the leftover, keeps it while it is younger than the grace
  period or still receiving parts, and aborts it afterwards;
* local files: obstore stages an upload in a `<key>#<n>` file its listing hides; the
  collector removes those too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, insert

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    StorageError,
    _multipart,
    collect_garbage,
    collect_garbage_async,
    storages,
)
from sqlalchemy_obstore._copy import copy_object
from sqlalchemy_obstore._s3_requests import Response
from tests.integration.backends import azurite_backend
from tests.integration.test_gc import make_models
from tests.servers import S3Server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 5 * 1024 * 1024
PART = b"p" * CHUNK


@pytest.fixture(params=["moto", "seaweed"])
def server(request: pytest.FixtureRequest) -> S3Server:
    fixture = "moto_server" if request.param == "moto" else "seaweed_server"
    served: S3Server = request.getfixturevalue(fixture)
    return served


def backend_config(server: S3Server, prefix: str) -> dict[str, Any]:
    return {
        "fs": f"s3://{server.bucket}/",
        "endpoint": server.endpoint,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "prefix": prefix,
    }


@pytest.fixture
def s3(server: S3Server) -> ObstoreBackend:
    """An S3 backend with a prefix of its own (the bucket is shared by the session)."""
    config = backend_config(server, f"mpu-{uuid.uuid4().hex[:10]}")
    backend = ObstoreBackend("s3", config.pop("fs"), **config)
    storages.register_backend(backend)
    return backend


def boto(server: S3Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=server.region,
    )


def left(backend: ObstoreBackend) -> list[str]:
    """Keys of the incomplete uploads under the backend's prefix."""
    return sorted(u.path for u in _multipart.list_incomplete_uploads(backend, backend.prefix))


def key(backend: ObstoreBackend, name: str) -> str:
    return f"{backend.prefix}/{uuid.uuid4().hex}/{name}"


# -- listing and aborting, checked against boto3 -----------------------------------------------
def test_listing_and_aborting_agree_with_boto3(server: S3Server, s3: ObstoreBackend) -> None:
    client = boto(server)
    keys = [key(s3, "a b+c=d ü.bin"), key(s3, "plain.bin"), f"{s3.prefix}-sibling/x.bin"]
    for name in keys:
        upload = client.create_multipart_upload(Bucket=server.bucket, Key=name)
        client.upload_part(
            Bucket=server.bucket, Key=name, UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
        )
    ours = _multipart.list_incomplete_uploads(s3, s3.prefix)
    theirs = client.list_multipart_uploads(Bucket=server.bucket, Prefix=f"{s3.prefix}/")
    assert sorted((u.path, u.upload_id) for u in ours) == sorted(
        (u["Key"], u["UploadId"]) for u in theirs["Uploads"]
    )
    assert sorted(u.path for u in ours) == sorted(keys[:2])  # the sibling prefix is not ours
    # A store with a prefix of its own (s3://bucket/<prefix>/) reports store-relative paths.
    config = backend_config(server, "")
    config.pop("prefix")
    nested = ObstoreBackend("nested", f"{config.pop('fs')}{s3.prefix}/", **config)
    assert sorted(u.path for u in _multipart.list_incomplete_uploads(nested, None)) == sorted(
        name.split("/", 1)[1] for name in keys[:2]
    )
    for upload in ours:
        assert _multipart.last_activity(s3, upload) is not None
        _multipart.abort_upload(s3, upload)
    assert left(s3) == []
    remaining = client.list_multipart_uploads(Bucket=server.bucket, Prefix=f"{s3.prefix}")
    assert [u["Key"] for u in remaining.get("Uploads", [])] == [keys[2]]
    client.abort_multipart_upload(
        Bucket=server.bucket, Key=keys[2], UploadId=remaining["Uploads"][0]["UploadId"]
    )


def test_a_wrong_secret_is_refused_with_a_typed_error(seaweed_server: S3Server) -> None:
    config = backend_config(seaweed_server, "anywhere")
    config["secret_access_key"] = "not-the-secret"
    backend = ObstoreBackend("wrong", config.pop("fs"), **config)
    with pytest.raises(
        StorageError, match="refused listing incomplete multipart uploads"
    ) as caught:
        _multipart.list_incomplete_uploads(backend, backend.prefix)
    assert "not-the-secret" not in str(caught.value)


# -- failures and cancellations leave nothing -------------------------------------------------
class BodyFailed(Exception):
    pass


def failing(parts: int) -> Iterator[bytes]:
    for _ in range(parts):
        yield PART
    raise BodyFailed


async def failing_async(parts: int) -> AsyncIterator[bytes]:
    for _ in range(parts):
        yield PART
    raise BodyFailed


async def test_a_failing_body_leaves_no_upload(s3: ObstoreBackend) -> None:
    paths = [key(s3, f"fail-{n}.bin") for n in range(3)]
    with pytest.raises(BodyFailed):
        s3.put(paths[0], failing(3))
    with pytest.raises(BodyFailed):
        await s3.put_async(paths[1], failing_async(3))
    with pytest.raises(BodyFailed):
        await s3.put_async(paths[2], failing(3))  # a sync iterator in the async API
    assert left(s3) == []
    assert not any(s3.exists(path) for path in paths)


async def hanging_async(parts: int) -> AsyncIterator[bytes]:
    for _ in range(parts):
        yield PART
    await asyncio.sleep(3600)  # a client that stopped sending
    yield PART


def hanging(parts: int) -> Iterator[bytes]:
    for _ in range(parts):
        yield PART
    time.sleep(5)  # a slow source read in a worker thread
    yield PART


@pytest.mark.parametrize("kind", ["async iterator", "sync iterator", "buffer"])
async def test_a_cancelled_put_async_aborts_its_upload(s3: ObstoreBackend, kind: str) -> None:
    path = key(s3, "cancelled.bin")
    body: Any = {
        "async iterator": lambda: hanging_async(3),
        "sync iterator": lambda: hanging(3),
        "buffer": lambda: PART * 6,
    }[kind]()
    task = asyncio.ensure_future(s3.put_async(path, body))
    if kind == "buffer":
        await asyncio.sleep(0)  # cancelled as soon as it has started
    else:
        deadline = time.monotonic() + 30
        while not left(s3):  # cancelled in the middle: the upload exists, parts went up
            assert time.monotonic() < deadline, "the upload never started"
            await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10
    assert left(s3) == []
    assert not s3.exists(path)  # neither a partial nor a completed object


async def test_cancellation_without_the_library_would_leak(s3: ObstoreBackend) -> None:
    """Why `put_async` shields the upload: obstore alone drops it without an abort."""
    import obstore

    path = key(s3, "raw.bin")
    task = asyncio.ensure_future(obstore.put_async(s3.store, path, hanging_async(3)))
    deadline = time.monotonic() + 30
    while not left(s3):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    assert left(s3) == [path]
    for upload in _multipart.list_incomplete_uploads(s3, s3.prefix):
        _multipart.abort_upload(s3, upload)


@pytest.mark.parametrize("store", ["local", "azurite"])
async def test_other_stores_keep_nothing_of_a_failed_or_cancelled_upload(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Local files and Azure: a failing body (sync and async) and a cancelled `put_async`
    leave no object; on local files no staging file either (obstore deletes it).

    Azure has no call that aborts a block upload: the blocks a failed or cancelled
    upload staged stay uncommitted, invisible to listings, until Azure discards them
    after 7 days (see the operations guide).
    """
    root = tmp_path / "store"
    if store == "local":
        backend = ObstoreBackend("other", root, prefix="files")
    else:
        server = request.getfixturevalue("azurite_server")
        backend = azurite_backend(server, key="other", prefix=f"mpu-{uuid.uuid4().hex[:10]}")
    paths = [key(backend, f"{name}.bin") for name in ("sync", "async", "cancelled")]
    with pytest.raises(BodyFailed):
        backend.put(paths[0], failing(3))
    with pytest.raises(BodyFailed):
        await backend.put_async(paths[1], failing_async(3))
    task = asyncio.ensure_future(backend.put_async(paths[2], hanging_async(3)))
    if store == "local":
        deadline = time.monotonic() + 30
        while not any(p.is_file() and p.stat().st_size >= CHUNK for p in root.rglob("*")):
            assert time.monotonic() < deadline, "no part reached the staging file"
            await asyncio.sleep(0.05)
    else:
        await asyncio.sleep(1.0)  # the first blocks go up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(backend.exists(path) for path in paths)  # no partial, no completed object
    assert [info.path for info in backend.list_objects(backend.prefix)] == []
    if store == "local":
        assert left(backend) == []  # what the garbage collector would look for
        assert [p for p in root.rglob("*") if p.is_file()] == []


def test_a_failed_streamed_copy_aborts_its_upload(s3: ObstoreBackend, tmp_path: Path) -> None:
    source = ObstoreBackend("source", tmp_path / "source")  # streams in chunk_size pieces
    source.put("big.bin", PART * 4)
    seen: list[int] = []

    def see(chunk: bytes) -> bytes:
        seen.append(len(chunk))
        if len(seen) == 3:
            raise BodyFailed  # e.g. a checksum check that fails mid-copy
        return chunk

    target = key(s3, "copy.bin")
    with pytest.raises(BodyFailed):
        copy_object(
            source, s3, "big.bin", size=4 * CHUNK, attributes=None, chunk_size=CHUNK,
            see=see, destination_path=target,
        )  # fmt: skip
    assert left(s3) == []
    assert not s3.exists(target)  # not completed with what was written so far


# -- what a killed process leaves ------------------------------------------------------------------
def start_writer(spec: dict[str, Any], path: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.multipart_writer", json.dumps(spec), path],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "uploading"
    return process


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    if process.stdout is not None:
        process.stdout.close()


def later(seconds: float) -> Any:
    return lambda: datetime.now(timezone.utc) + timedelta(seconds=seconds)


def test_gc_aborts_what_a_killed_upload_left(
    seaweed_server: S3Server, sqlite_engine: Engine
) -> None:
    config = backend_config(seaweed_server, f"killed-{uuid.uuid4().hex[:8]}")
    backend = ObstoreBackend("s3", config["fs"], **{k: v for k, v in config.items() if k != "fs"})
    storages.register_backend(backend)
    base, _ = make_models("s3")
    base.metadata.create_all(sqlite_engine)
    path = key(backend, "huge.bin")
    writer = start_writer({"key": "s3", **config}, path)
    deadline = time.monotonic() + 30
    while not left(backend):
        assert time.monotonic() < deadline, "the killed process never started its upload"
        time.sleep(0.05)
    kill(writer)
    assert left(backend) == [path]
    assert not backend.exists(path)

    # Younger than the grace period: kept, and reported as such.
    fresh = collect_garbage(sqlite_engine, base, dry_run=False)
    uploads = fresh.backends["s3"].incomplete_uploads
    assert (uploads.checked, uploads.found, uploads.too_young, uploads.aborted) == (True, 1, 1, 0)
    assert uploads.too_young_paths == [path]
    # Past the grace period (two days later), a dry run names it; a real run aborts it.
    dry = collect_garbage(sqlite_engine, base, clock=later(2 * 86400))
    assert dry.backends["s3"].incomplete_uploads.stale_paths == [path]
    assert dry.incomplete_uploads_stale == 1
    assert left(backend) == [path]
    real = collect_garbage(sqlite_engine, base, clock=later(2 * 86400), dry_run=False)
    assert real.incomplete_uploads_aborted == 1
    assert real.all_errors == []
    assert left(backend) == []


async def test_an_upload_still_receiving_parts_is_kept(
    server: S3Server, s3: ObstoreBackend, sqlite_async_engine: Any
) -> None:
    """Started before the cutoff is not enough: the newest part must be older too.

    (moto dates every upload's start in 2010, so there the first check alone would
    abort an upload in progress.)
    """
    client = boto(server)
    path = key(s3, "slow.bin")
    upload = client.create_multipart_upload(Bucket=server.bucket, Key=path)
    client.upload_part(
        Bucket=server.bucket, Key=path, UploadId=upload["UploadId"], PartNumber=1, Body=PART
    )
    await asyncio.sleep(2.5)
    client.upload_part(
        Bucket=server.bucket, Key=path, UploadId=upload["UploadId"], PartNumber=2, Body=b"end"
    )
    base, _ = make_models("s3")
    async with sqlite_async_engine.begin() as conn:
        await conn.run_sync(base.metadata.create_all)
    report = await collect_garbage_async(
        sqlite_async_engine,
        base,
        grace_period=timedelta(seconds=1.5),
        allow_unsafe_grace_period=True,
        dry_run=False,
    )
    uploads = report.backends["s3"].incomplete_uploads
    assert (uploads.found, uploads.too_young, uploads.stale, uploads.aborted) == (1, 1, 0, 0)
    client.complete_multipart_upload(
        Bucket=server.bucket,
        Key=path,
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [
                {"PartNumber": n, "ETag": p["ETag"]}
                for n, p in enumerate(
                    client.list_parts(Bucket=server.bucket, Key=path, UploadId=upload["UploadId"])[
                        "Parts"
                    ],
                    start=1,
                )
            ]
        },
    )
    assert s3.head(path).size == CHUNK + 3  # the upload it kept completes


def test_gc_removes_the_staging_file_of_a_killed_local_upload(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    root = tmp_path / "store"
    backend = ObstoreBackend("files", root, prefix="files")
    storages.register_backend(backend)
    base, doc = make_models("files")
    base.metadata.create_all(sqlite_engine)
    kept = FileObject(filename="kept.txt", content=b"kept", backend="files").save()
    with sqlite_engine.begin() as conn:
        conn.execute(insert(doc.__table__), {"id": 1, "file": kept, "pages": []})
    path = key(backend, "huge.bin")
    writer = start_writer({"key": "files", "fs": str(root), "local": True, "prefix": "files"}, path)
    deadline = time.monotonic() + 30
    while not any("#" in p.name and p.stat().st_size >= CHUNK for p in root.rglob("*")):
        assert time.monotonic() < deadline, "no part reached the staging file"
        time.sleep(0.05)
    kill(writer)
    staged = [p for p in root.rglob("*") if "#" in p.name]
    assert len(staged) == 1
    assert [info.path for info in backend.list_objects("files")] == [kept.path]  # hidden

    dry = collect_garbage(sqlite_engine, base, clock=later(2 * 86400))
    uploads = dry.backends["files"].incomplete_uploads
    assert (uploads.checked, uploads.found, uploads.stale) == (True, 1, 1)
    assert uploads.stale_paths == [path]
    assert staged[0].exists()
    real = collect_garbage(sqlite_engine, base, clock=later(2 * 86400), dry_run=False)
    assert real.incomplete_uploads_aborted == 1
    assert not staged[0].exists()
    assert backend.get_bytes(kept.path or "") == b"kept"


def test_stores_without_listable_uploads_say_what_applies(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    azure = ObstoreBackend("az", "az://container/", account_name="acct", skip_signature=True)
    memory = ObstoreBackend("mem", "memory://")
    assert "7 days" in (_multipart.support(azure) or "")
    assert not _multipart.may_hold_uploads(memory)
    base, _ = make_models("mem")
    base.metadata.create_all(sqlite_engine)
    storages.register_backend(memory)
    report = collect_garbage(sqlite_engine, base)
    assert report.backends["mem"].incomplete_uploads.checked is False
    assert report.backends["mem"].incomplete_uploads.note is None  # nothing to say


def test_without_httpx_the_uploads_are_reported_as_not_checked(
    s3: ObstoreBackend, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = make_models("s3")
    base.metadata.create_all(sqlite_engine)
    monkeypatch.setitem(sys.modules, "httpx", None)  # as if the `http` extra were missing
    report = collect_garbage(sqlite_engine, base)
    uploads = report.backends["s3"].incomplete_uploads
    assert uploads.checked is False
    assert "pip install 'sqlalchemy-obstore[http]'" in (uploads.note or "")
    assert report.all_errors == []  # the objects were still collected


@pytest.mark.parametrize("store", ["local", "seaweed"])
@pytest.mark.parametrize("ending", ["client disconnects", "handler cancelled"])
async def test_the_signed_route_leaves_no_staging_upload(
    tmp_path: Path, ending: str, store: str, request: pytest.FixtureRequest
) -> None:
    """A PUT through the signed-URL route streams into a staging upload; cut it off.

    The route serves local and memory backends; it is run on SeaweedFS too because
    there a dropped upload would stay (obstore's local store deletes its staging file
    when the upload is dropped).
    """
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from sqlalchemy_obstore import BackendRegistry
    from sqlalchemy_obstore.contrib.starlette import storage_routes
    from sqlalchemy_obstore.signing import HmacUrlSigner

    signer = HmacUrlSigner("a-signing-secret-of-at-least-32-bytes!!")
    root = tmp_path / "store"
    if store == "local":
        backend = ObstoreBackend("files", root, url_signer=signer)
    else:
        config = backend_config(request.getfixturevalue("seaweed_server"), uuid.uuid4().hex)
        backend = ObstoreBackend("files", config.pop("fs"), url_signer=signer, **config)
    prefix = backend.prefix or ""

    def staged() -> bool:
        if store == "local":
            return any(p.is_file() and p.stat().st_size >= CHUNK for p in root.rglob("*"))
        return bool(_multipart.list_incomplete_uploads(backend, backend.prefix))

    registry = BackendRegistry()
    registry.register_backend(backend)
    app = Starlette(routes=[Mount("/_storage", storage_routes(registry=registry, signer=signer))])
    target = f"{prefix}/up/big.bin".lstrip("/")
    url = signer.url_for("files", target, method="PUT", expires=int(time.time()) + 60)
    path, _, query_string = url.partition("?")
    sent = 0
    stop = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent < 12:  # 12 MiB: more than two parts
            sent += 1
            return {"type": "http.request", "body": b"u" * (1024 * 1024), "more_body": True}
        if ending == "client disconnects":
            return {"type": "http.disconnect"}
        await stop.wait()  # the client stalls; the server gives up on the request
        return {"type": "http.disconnect"}

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query_string.encode(), "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80), "client": ("127.0.0.1", 50000),
    }  # fmt: skip
    task = asyncio.ensure_future(app(scope, receive, send))
    if ending == "handler cancelled":
        deadline = time.monotonic() + 30
        while not staged():
            assert time.monotonic() < deadline, "no part was staged"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the first parts go up
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await asyncio.wait_for(task, timeout=60)
    assert sent == 12
    if store == "local":
        assert [p for p in root.rglob("*") if p.is_file()] == []  # no object, no staging
    else:
        assert left(backend) == []
        assert [info.path for info in backend.list_objects(backend.prefix)] == []
    assert not backend.exists(target)


def test_a_refused_listing_is_a_note_not_a_failed_collection(
    s3: ObstoreBackend, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role without s3:ListBucketMultipartUploads: objects are still collected, exit 0."""
    base, _ = make_models("s3")
    base.metadata.create_all(sqlite_engine)
    orphan = FileObject(filename="lost.txt", content=b"lost", backend="s3").save()
    denied = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"

    def refused(target: Any, operation: Any) -> Any:
        next(operation)  # what the store answers a role without the right
        return operation.send(Response(403, denied))

    monkeypatch.setattr(_multipart, "_run", refused)
    report = collect_garbage(sqlite_engine, base, clock=later(2 * 86400), dry_run=False)
    assert report.all_errors == []
    assert report.deleted == 1
    assert not s3.exists(orphan.path or "")
    uploads = report.backends["s3"].incomplete_uploads
    assert uploads.checked is False
    assert "s3:ListBucketMultipartUploads" in (uploads.note or "")
