"""`DelegatingBackend`, the base of the wrappers: everything reaches the wrapped backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from sqlalchemy_obstore import (
    FileObject,
    FileTooLargeError,
    InvalidExpiryError,
    MirrorBackend,
    ObjectExistsError,
    ObjectNotFoundError,
    ObstoreBackend,
    OverlayBackend,
    storages,
)
from sqlalchemy_obstore._copy import copy_object
from sqlalchemy_obstore._delegating import Call, DelegatingBackend
from sqlalchemy_obstore.backends import Backend
from sqlalchemy_obstore.testing import FaultInjectingBackend, InjectedFault
from sqlalchemy_obstore.validation import UploadPolicy


class Recording(DelegatingBackend):
    """Records what `_route` is asked, the way a subclass hooks into every operation."""

    def __init__(self, key: str, inner: Backend) -> None:
        super().__init__(key, inner)
        self.routed: list[tuple[Call, str | None]] = []

    def _route(self, call: Call, path: str | None) -> Backend:
        self.routed.append((call, path))
        return self.inner


@pytest.fixture
def inner() -> ObstoreBackend:
    return ObstoreBackend("inner", "memory://", prefix="p", policy=UploadPolicy(max_size=10))


@pytest.fixture
def wrapper(inner: ObstoreBackend) -> Recording:
    return Recording("outer", inner)


def test_configuration_and_capabilities_are_the_inner_backends(
    inner: ObstoreBackend, wrapper: Recording
) -> None:
    assert wrapper.key == "outer"
    assert wrapper.inner is inner
    for name in ("prefix", "public_base_url", "key_function", "checksum_algorithm", "policy"):
        assert getattr(wrapper, name) == getattr(inner, name), name
    assert wrapper.url_signer is inner.url_signer
    assert wrapper.supports_signing is inner.supports_signing
    assert wrapper.supports_attributes is inner.supports_attributes
    assert wrapper.max_sign_expiry == inner.max_sign_expiry
    assert wrapper.upload_headers == inner.upload_headers
    assert wrapper.describe() == inner.describe()
    assert repr(wrapper) == f"Recording(key='outer', inner={inner!r})"
    assert wrapper.never_waits is inner.never_waits is True


def test_a_wrapper_never_waits_only_when_no_store_it_writes_to_waits(tmp_path: Any) -> None:
    memory = ObstoreBackend("m", "memory://", prefix="p")
    other = ObstoreBackend("o", "memory://", prefix="p")
    local = ObstoreBackend("l", f"file://{tmp_path}", prefix="p")
    assert memory.never_waits
    assert not local.never_waits
    assert FaultInjectingBackend(memory).never_waits
    assert not FaultInjectingBackend(local).never_waits
    assert MirrorBackend("mm", memory, [other]).never_waits
    assert not MirrorBackend("ml", memory, [local]).never_waits
    assert not MirrorBackend("lm", local, [memory]).never_waits
    assert OverlayBackend("om", memory, other).never_waits
    assert not OverlayBackend("ol", local, memory).never_waits
    assert not OverlayBackend("lo", memory, local).never_waits


def test_sync_operations_are_forwarded(inner: ObstoreBackend, wrapper: Recording) -> None:
    wrapper.put("p/a", b"hello", attributes={"Content-Type": "text/plain"})
    assert inner.get_bytes("p/a") == b"hello"
    assert wrapper.get_bytes("p/a") == b"hello"
    assert wrapper.get_range("p/a", 1, 3) == b"ell"
    assert b"".join(wrapper.iter_chunks("p/a")) == b"hello"
    assert wrapper.head("p/a").content_type == "text/plain"
    assert wrapper.exists("p/a")
    assert not wrapper.exists("p/missing")
    wrapper.copy("p/a", "p/b")
    assert [o.path for o in wrapper.list_objects()] == ["p/a", "p/b"]
    wrapper.delete(["p/a", "p/b"])
    assert list(inner.list_objects()) == []
    with pytest.raises(ObjectNotFoundError):
        wrapper.head("p/a")
    assert wrapper.routed == [
        ("put", "p/a"),
        ("get", "p/a"),
        ("get", "p/a"),
        ("get", "p/a"),
        ("head", "p/a"),
        ("head", "p/a"),  # exists() asks head()
        ("head", "p/missing"),
        ("copy", "p/a"),
        ("list", None),
        ("delete", None),  # several paths: no single path
        ("head", "p/a"),
    ]


async def test_async_operations_are_forwarded(inner: ObstoreBackend, wrapper: Recording) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"hel"
        yield b"lo"

    await wrapper.put_async("p/a", body())
    assert await wrapper.get_bytes_async("p/a") == b"hello"
    assert await wrapper.get_range_async("p/a", 1, 3) == b"ell"
    assert [c async for c in wrapper.iter_chunks_async("p/a")] == [b"hello"]
    assert (await wrapper.head_async("p/a")).size == 5
    assert await wrapper.exists_async("p/a")
    await wrapper.copy_async("p/a", "p/b")
    assert [o.path async for o in wrapper.list_objects_async("")] == ["p/a", "p/b"]
    await wrapper.delete_async("p/a")
    assert [o.path for o in inner.list_objects()] == ["p/b"]
    assert [call for call, _ in wrapper.routed] == [
        *("put", "get", "get", "get", "head", "head", "copy", "list", "delete"),
    ]


async def test_signing_is_forwarded_with_its_errors(wrapper: Recording) -> None:
    assert wrapper.sign("p/a", expires_in=60).startswith("/_storage/inner/p/a?")
    with pytest.raises(InvalidExpiryError):  # the inner backend's refusal
        await wrapper.sign_async(["p/a", "p/b"], method="PUT", expires_in=10**9)
    assert wrapper.routed == [("sign", "p/a"), ("sign", None)]


def _chunks(count: int) -> Iterator[bytes]:
    for i in range(count):
        yield bytes([i]) * 100


def test_sync_copies_stream_through_the_wrappers_put(
    inner: ObstoreBackend, wrapper: Recording
) -> None:
    bodies: list[object] = []
    wrapper._wrap_body = lambda body, path: bodies.append(body) or body  # type: ignore[method-assign]
    source = ObstoreBackend("source", "memory://")
    source.put("p/big", _chunks(10), chunk_size=128)  # (under the inner backend's prefix)
    copy_object(source, wrapper, "p/big", size=1000, attributes=None, chunk_size=128)
    assert inner.get_bytes("p/big") == b"".join(_chunks(10))
    assert wrapper.routed == [("put", "p/big")]
    assert len(bodies) == 1
    assert isinstance(bodies[0], Iterator)  # streamed, not joined


def test_the_wrappers_keep_their_own_names_for_the_inner_backend() -> None:
    primary, mirror = ObstoreBackend("a", "memory://"), ObstoreBackend("b", "memory://")
    mirrored = MirrorBackend("m", primary, [mirror])
    assert mirrored.primary is mirrored.inner is primary
    mirrored.primary = mirror
    assert mirrored.inner is mirror
    base, top = ObstoreBackend("base", "memory://"), ObstoreBackend("top", "memory://")
    overlaid = OverlayBackend("o", base, top)
    assert overlaid.overlay is overlaid.inner is top
    assert overlaid.public_base_url is None


def test_a_sync_copy_into_the_fault_injecting_wrapper_meets_its_part_faults(
    inner: ObstoreBackend,
) -> None:
    flaky = FaultInjectingBackend(inner)
    flaky.fail("part", nth=3)
    source = ObstoreBackend("source", "memory://")
    source.put("p/big", _chunks(10), chunk_size=128)
    with pytest.raises(InjectedFault):
        copy_object(source, flaky, "p/big", size=1000, attributes=None, chunk_size=128)
    assert flaky.calls["put"] == 1
    assert not inner.exists("p/big")  # the streamed upload was aborted: nothing stored


def test_the_fault_injecting_wrapper_keeps_the_inner_policy(inner: ObstoreBackend) -> None:
    """Standing in for a backend, it checks uploads as that backend does."""
    flaky = FaultInjectingBackend(inner)
    assert inner.policy is not None
    assert flaky.policy is inner.policy
    assert flaky.url_signer is inner.url_signer
    storages.register_backend(flaky)
    with pytest.raises(FileTooLargeError):
        FileObject(filename="big.bin", content=b"x" * 11, backend=flaky.key).save()
    assert flaky.calls["put"] == 0  # refused before anything reached the store


# -- put_buffer: the buffered, create-only write of the backend contract ---------------------------
def test_put_buffer_is_forwarded_and_routed_as_a_put(
    inner: ObstoreBackend, wrapper: Recording
) -> None:
    wrapper.put_buffer("p/a", b"hello", {"Content-Type": "text/plain"})
    assert inner.get_bytes("p/a") == b"hello"
    assert inner.head("p/a").content_type == "text/plain"
    with pytest.raises(ObjectExistsError):  # create-only
        wrapper.put_buffer("p/a", b"again")
    assert wrapper.routed == [("put", "p/a"), ("put", "p/a")]


async def test_put_buffer_async_is_forwarded_and_routed_as_a_put(
    inner: ObstoreBackend, wrapper: Recording
) -> None:
    await wrapper.put_buffer_async("p/a", b"hello")
    assert inner.get_bytes("p/a") == b"hello"
    with pytest.raises(ObjectExistsError):
        await wrapper.put_buffer_async("p/a", b"again")
    assert wrapper.routed == [("put", "p/a"), ("put", "p/a")]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_buffered_save_through_the_fault_injecting_wrapper_takes_put_buffer(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faults meet the same write as production: the inner backend's put_buffer."""
    inner = ObstoreBackend("buffered", "memory://")
    flaky = FaultInjectingBackend(inner)
    storages.register_backend(flaky)
    written: list[str] = []
    monkeypatch.setattr(inner, "put", None)  # the buffered save never falls back to put
    monkeypatch.setattr(inner, "put_async", None)
    for name in ("put_buffer", "put_buffer_async"):
        real = getattr(inner, name)

        def spy(path: str, *args: Any, real: Any = real, name: str = name) -> Any:
            written.append(name)
            return real(path, *args)

        monkeypatch.setattr(inner, name, spy)

    async def save(file: FileObject) -> FileObject:
        return file.save() if mode == "sync" else await file.save_async()

    file = await save(FileObject(filename="a.txt", content=b"hi", backend="buffered"))
    assert inner.get_bytes(file.path or "") == b"hi"
    assert written[0] == ("put_buffer" if mode == "sync" else "put_buffer_async")
    flaky.fail("put")
    failing = FileObject(filename="b.txt", content=b"hi", backend="buffered")
    with pytest.raises(InjectedFault):
        await save(failing)
    assert failing.has_pending_content
    assert flaky.calls["put"] == 2
    assert [o.path for o in inner.list_objects()] == [file.path]


async def test_a_backend_that_overrides_put_writes_buffers_through_it() -> None:
    """`put_buffer` defaults to `put` for a class that changes `put` and not it."""

    class Counting(ObstoreBackend):
        puts: list[tuple[str, bool]]

        def put(self, path: str, body: Any, **kwargs: Any) -> Any:
            self.puts.append(("put", kwargs["create_only"]))
            return super().put(path, body, **kwargs)

        async def put_async(self, path: str, body: Any, **kwargs: Any) -> Any:
            self.puts.append(("put_async", kwargs["create_only"]))
            return await super().put_async(path, body, **kwargs)

    class Wrapped(FaultInjectingBackend):
        puts: list[str]

        def put(self, path: str, body: Any, **kwargs: Any) -> Any:
            self.puts.append("put")
            return super().put(path, body, **kwargs)

    counting = Counting("counting", "memory://")
    counting.puts = []
    storages.register_backend(counting)
    FileObject(filename="a.txt", content=b"hi", backend="counting").save()
    await FileObject(filename="a.txt", content=b"hi", backend="counting").save_async()
    assert counting.puts == [("put", True), ("put_async", True)]
    with pytest.raises(ObjectExistsError):
        counting.put_buffer(next(iter(counting.list_objects())).path, b"again")

    wrapped = Wrapped(ObstoreBackend("wrapped", "memory://"))
    wrapped.puts = []
    storages.register_backend(wrapped)
    FileObject(filename="a.txt", content=b"hi", backend="wrapped").save()
    await FileObject(filename="a.txt", content=b"hi", backend="wrapped").save_async()
    assert wrapped.puts == ["put"]  # put_async is not overridden: forwarded as put_buffer
    assert wrapped.calls["put"] == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_composites_write_a_buffered_save_through_their_put(mode: str) -> None:
    primary, mirror = ObstoreBackend("p", "memory://"), ObstoreBackend("m", "memory://")
    storages.register_backend(MirrorBackend("mirrored", primary, [mirror]))
    base, top = ObstoreBackend("base", "memory://"), ObstoreBackend("top", "memory://")
    storages.register_backend(OverlayBackend("overlaid", base, top))
    for key in ("mirrored", "overlaid"):
        file = FileObject(filename="a.txt", content=b"hi", backend=key)
        path = (file.save() if mode == "sync" else await file.save_async()).path or ""
        stores = [primary, mirror] if key == "mirrored" else [top]
        assert [s.get_bytes(path) for s in stores] == [b"hi"] * len(stores)
    assert list(base.list_objects()) == []


# -- signing one file: `Backend.sign_download`, forwarded ------------------------------------------
def _s3(key: str) -> ObstoreBackend:
    return ObstoreBackend(
        key,
        "s3://bucket/",
        region="eu-west-1",
        access_key_id="AKIAFAKEKEYID0000001",
        secret_access_key="s" * 40,
    )


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_wrapped_backend_signs_files_through_the_wrapper(use_async: bool) -> None:
    """`FileObject.sign` takes the same path through a wrapper as through the store."""
    flaky = FaultInjectingBackend(_s3("s3"))
    storages.register_backend(flaky)
    file = FileObject(backend="s3", path="k/a.txt")

    async def sign() -> str:
        return await file.sign_async(expires_in=60) if use_async else file.sign(expires_in=60)

    flaky.fail("sign")
    with pytest.raises(InjectedFault):
        await sign()
    url = await sign()
    assert url.startswith("https://s3.eu-west-1.amazonaws.com/bucket/k/a.txt?")
    assert "X-Amz-Expires=60&" in url
    assert await sign() == url  # cached on the file: not signed again
    assert flaky.calls["sign"] == 2


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_backend_that_overrides_sign_signs_every_file_with_it(use_async: bool) -> None:
    """Without its own `sign_download`, a subclass's `sign` is not bypassed."""

    class Rewriting(ObstoreBackend):
        def sign(self, paths, **kwargs):  # type: ignore[no-untyped-def,override]
            return "https://cdn.example/" + paths if isinstance(paths, str) else paths

        async def sign_async(self, paths, **kwargs):  # type: ignore[no-untyped-def,override]
            return self.sign(paths, **kwargs)

    storages.register_backend(Rewriting("s3", "s3://bucket/", region="eu-west-1"))
    file = FileObject(backend="s3", path="k/a.txt")
    url = await file.sign_async() if use_async else file.sign()
    assert url == "https://cdn.example/k/a.txt"
    assert Rewriting.sign_download is Backend.sign_download
    assert ObstoreBackend.sign_download is not Backend.sign_download


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_an_overlay_signs_a_file_with_the_store_holding_it(use_async: bool) -> None:
    from sqlalchemy_obstore.signing import HmacUrlSigner

    base, top = ObstoreBackend("base", "memory://"), ObstoreBackend("top", "memory://")
    base.url_signer = HmacUrlSigner("b" * 32, base_url="https://base.example")
    top.url_signer = HmacUrlSigner(
        "t" * 32, base_url="https://top.example", max_expires_in=timedelta(seconds=60)
    )
    base.put("a.txt", b"old")
    top.put("b.txt", b"new")
    storages.register_backend(OverlayBackend("o", base, top))
    old, new = FileObject(backend="o", path="a.txt"), FileObject(backend="o", path="b.txt")

    async def sign(file: FileObject, expires_in: int = 30) -> str:
        if use_async:
            return await file.sign_async(expires_in=expires_in)
        return file.sign(expires_in=expires_in)

    assert (await sign(old)).startswith("https://base.example/base/a.txt?")
    assert (await sign(new)).startswith("https://top.example/top/b.txt?")
    with pytest.raises(InvalidExpiryError):  # the limit of the store that signs
        await sign(FileObject(backend="o", path="b.txt"), 120)


def test_a_backend_that_checks_lifetimes_its_own_way_signs_files_with_that_check() -> None:
    class Strict(ObstoreBackend):
        def check_expiry(self, expires_in: int | float | timedelta) -> timedelta:
            if expires_in not in (60, timedelta(seconds=60)):
                raise InvalidExpiryError("only one minute")
            return super().check_expiry(expires_in)

    storages.register_backend(
        Strict(
            "s3",
            "s3://bucket/",
            region="eu-west-1",
            access_key_id="AKIAFAKEKEYID0000001",
            secret_access_key="s" * 40,
        )
    )
    assert "X-Amz-Expires=60&" in FileObject(backend="s3", path="k").sign(expires_in=60)
    with pytest.raises(InvalidExpiryError, match="one minute"):
        FileObject(backend="s3", path="k").sign(expires_in=120)
