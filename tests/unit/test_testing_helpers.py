"""The pytest helpers in `sqlalchemy_obstore.testing`: memory backends (also sticky, against
an application that registers its own), memory stand-ins, generated files and the
fault-injecting backend (the tool the lifecycle tests rely on, so it is tested too)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sqlalchemy_obstore import (
    BackendNotFoundError,
    BackendRegistry,
    FileObject,
    FileTooLargeError,
    ObstoreBackend,
    StorageError,
    StorageOperationError,
    UploadPolicy,
    storages,
)
from sqlalchemy_obstore.signing import HmacUrlSigner, attach_signer, detach_signer
from sqlalchemy_obstore.testing import (
    FaultInjectingBackend,
    FileFactory,
    InjectedFault,
    inject_faults,
    make_file,
    memory_backends,
    memory_stand_in,
)


# -- memory_backends ------------------------------------------------------------------------------
def test_memory_backends_registers_fresh_memory_backends() -> None:
    with memory_backends("uploads", "avatars") as backends:
        assert set(backends) == {"uploads", "avatars"}
        for key, backend in backends.items():
            assert isinstance(backend, ObstoreBackend)
            assert backend.kind == "memory"
            assert backend.key == key
            assert storages.get_backend(key) is backend
        assert backends["uploads"] is not backends["avatars"]
    assert "uploads" not in storages
    assert "avatars" not in storages


def test_memory_backends_restores_what_was_registered() -> None:
    production = ObstoreBackend("uploads", "memory://")
    storages.register_backend(production)
    with memory_backends("uploads") as backends:
        assert storages.get_backend("uploads") is backends["uploads"] is not production
        storages.register_backend(ObstoreBackend("added-inside", "memory://"))
    assert storages.get_backend("uploads") is production
    assert "added-inside" not in storages


def test_memory_backends_restores_after_an_exception() -> None:
    production = ObstoreBackend("uploads", "memory://")
    storages.register_backend(production)
    with pytest.raises(RuntimeError, match="boom"), memory_backends("uploads"):
        raise RuntimeError("boom")
    assert storages.get_backend("uploads") is production


def test_memory_backends_clear_hides_every_other_backend() -> None:
    other = ObstoreBackend("other", "memory://")
    storages.register_backend(other)
    with memory_backends("uploads") as backends:
        assert "other" in storages
    with memory_backends("uploads", clear=True) as backends:
        assert list(storages) == ["uploads"]
        assert storages.get_backend("uploads") is backends["uploads"]
        with pytest.raises(BackendNotFoundError):
            storages.get_backend("other")
    assert storages.get_backend("other") is other
    assert "uploads" not in storages


def test_memory_backends_patches_the_given_registry_only() -> None:
    registry = BackendRegistry()
    with memory_backends("uploads", registry=registry) as backends:
        assert registry.get_backend("uploads") is backends["uploads"]
        assert "uploads" not in storages
    assert "uploads" not in registry


def test_memory_backends_start_empty_each_time() -> None:
    with memory_backends("uploads") as backends:
        saved = FileObject(filename="a.txt", content=b"x", backend="uploads").save()
        assert [o.path for o in backends["uploads"].list_objects()] == [saved.path]
    with memory_backends("uploads") as backends:
        assert list(backends["uploads"].list_objects()) == []


# -- memory_stand_in and memory_backends(sticky=True) ----------------------------------------------
def nothing_stored_in(directory: Path) -> bool:
    return not directory.exists() or not any(directory.rglob("*"))


def production_backend(tmp_path: Path, **kwargs: object) -> ObstoreBackend:
    """A real backend: local files in a directory the tests check stays empty."""
    return ObstoreBackend("uploads", tmp_path / "real", **kwargs)  # type: ignore[arg-type]


def test_memory_stand_in_takes_every_setting_but_the_store(tmp_path: Path) -> None:
    def key_function(filename: str) -> str:
        return f"k/{filename}"

    signer = HmacUrlSigner("s" * 32)
    policy = UploadPolicy(max_size=10)
    real = production_backend(
        tmp_path,
        prefix="docs",
        public_base_url="https://cdn.example.com",
        key_function=key_function,
        checksum_algorithm="md5",
        policy=policy,
        url_signer=signer,
    )
    stand_in = memory_stand_in(real)
    assert (stand_in.key, stand_in.kind) == ("uploads", "memory")
    assert stand_in.prefix == "docs"
    assert stand_in.public_base_url == "https://cdn.example.com"
    assert stand_in.key_function is key_function
    assert stand_in.checksum_algorithm == "md5"
    assert stand_in.policy is policy
    assert stand_in.url_signer is signer
    assert memory_stand_in(real).store is not stand_in.store  # a fresh store each time


def test_memory_stand_in_shares_the_current_memory_store(tmp_path: Path) -> None:
    current = ObstoreBackend("uploads", "memory://")
    current.put("a", b"1")
    stand_in = memory_stand_in(production_backend(tmp_path, prefix="docs"), current)
    assert stand_in.store is current.store
    assert stand_in.get_bytes("a") == b"1"
    wrapped = FaultInjectingBackend(current)
    assert memory_stand_in(production_backend(tmp_path), wrapped).store is current.store
    not_memory = production_backend(tmp_path)
    assert memory_stand_in(production_backend(tmp_path), not_memory).kind == "memory"


def test_memory_stand_in_keeps_the_current_signer_when_the_backend_has_none(
    tmp_path: Path,
) -> None:
    signer = HmacUrlSigner("s" * 32)
    current = ObstoreBackend("uploads", "memory://", url_signer=signer)
    assert memory_stand_in(production_backend(tmp_path), current).url_signer is signer


def test_sticky_memory_backends_stand_in_for_what_the_app_registers(tmp_path: Path) -> None:
    real = production_backend(tmp_path, prefix="docs", policy=UploadPolicy(max_size=100))
    with memory_backends("uploads", sticky=True) as backends:
        storages.register_backend(real)  # what an application's start-up does
        resolved = storages.get_backend("uploads")
        assert isinstance(resolved, ObstoreBackend)
        assert resolved.kind == "memory"
        assert resolved.prefix == "docs"
        assert storages.displaced == {"uploads": real}

        saved = FileObject(filename="a.txt", content=b"x", backend="uploads").save()
        assert saved.path is not None
        assert saved.path.startswith("docs/")
        assert backends["uploads"].get_bytes(saved.path) == b"x"  # the same memory store
        with pytest.raises(FileTooLargeError):  # the application's policy holds
            FileObject(filename="b.txt", content=b"y" * 101, backend="uploads").save()

        if storages.backends.get("uploads") is real:  # the lifespans' shutdown check
            storages.unregister_backend("uploads")
        storages.register_backend(real)  # a second start-up in the same test
    assert "uploads" not in storages
    assert nothing_stored_in(tmp_path / "real")


def test_sticky_memory_backends_stand_in_for_every_key(tmp_path: Path) -> None:
    module_level = ObstoreBackend("avatars", tmp_path / "avatars", prefix="a")
    storages.register_backend(module_level)  # a README-style registration at import
    with memory_backends("uploads", sticky=True) as backends:
        avatars = storages.get_backend("avatars")
        assert isinstance(avatars, ObstoreBackend)
        assert (avatars.kind, avatars.prefix) == ("memory", "a")
        late = ObstoreBackend("thumbs", tmp_path / "thumbs")
        storages.register_backend(late)
        thumbs = storages.get_backend("thumbs")
        assert isinstance(thumbs, ObstoreBackend)
        assert thumbs.kind == "memory"
        assert storages.get_backend("uploads") is backends["uploads"]
        for key in ("avatars", "thumbs", "uploads"):
            FileObject(filename="f.txt", content=b"f", backend=key).save()
    assert storages.get_backend("avatars") is module_level
    assert "thumbs" not in storages
    assert nothing_stored_in(tmp_path / "avatars")
    assert nothing_stored_in(tmp_path / "thumbs")


def test_sticky_memory_backends_with_clear(tmp_path: Path) -> None:
    storages.register_backend(ObstoreBackend("other", "memory://"))
    with memory_backends("uploads", sticky=True, clear=True):
        assert list(storages) == ["uploads"]
        storages.register_backend(production_backend(tmp_path))
        assert storages.get_backend("uploads").prefix is None
    assert list(storages) == ["other"]


def test_app_signer_attaches_to_the_stand_ins(tmp_path: Path) -> None:
    signer = HmacUrlSigner("s" * 32, base_url="/_storage")
    with memory_backends("uploads", sticky=True):
        storages.register_backend(production_backend(tmp_path))
        assert attach_signer(storages, signer) == ["uploads"]  # what the lifespans do next
        saved = FileObject(filename="a.txt", content=b"x", backend="uploads").save()
        assert saved.sign(expires_in=60).startswith("/_storage/uploads/")
        assert detach_signer(storages, signer) == ["uploads"]


# -- FileFactory -----------------------------------------------------------------------------------
def test_file_factory_makes_distinct_reproducible_files() -> None:
    make = FileFactory(seed="tests/test_a.py::test_x")
    first, second = make(), make()
    assert (first.filename, second.filename) == ("file-1.bin", "file-2.bin")
    assert pending_bytes(first) != pending_bytes(second)
    assert len(pending_bytes(first)) == 1024
    assert make.count == 2
    again = FileFactory(seed="tests/test_a.py::test_x")
    assert pending_bytes(again()) == pending_bytes(first)
    assert pending_bytes(again()) == pending_bytes(second)
    other = FileFactory(seed="tests/test_a.py::test_y")
    assert pending_bytes(other()) != pending_bytes(first)
    assert "count=2" in repr(make)


def test_file_factory_options() -> None:
    make = FileFactory(seed=1, size=10, backend="uploads")
    file = make("photo.png", metadata={"owner": "ada"})
    assert (file.filename, file.content_type, file.backend) == ("photo.png", "image/png", "uploads")
    assert len(pending_bytes(file)) == 10
    assert file.metadata == {"owner": "ada"}
    assert len(pending_bytes(make(size=3))) == 3
    assert pending_bytes(make(content=b"exact")) == b"exact"
    assert make(content_type="text/csv").content_type == "text/csv"
    assert make(backend="avatars").backend == "avatars"


# -- make_file -------------------------------------------------------------------------------------
def pending_bytes(file: FileObject) -> bytes:
    content = file.__dict__["_content"]
    assert isinstance(content, bytes)
    return content


@pytest.mark.parametrize("size", [0, 1, 1024, 100_000])
def test_make_file_has_the_requested_size(size: int) -> None:
    file = make_file(size=size)
    assert file.has_pending_content
    assert file.path is None
    assert len(pending_bytes(file)) == size


def test_make_file_defaults() -> None:
    file = make_file()
    assert file.filename == "file.bin"
    assert len(pending_bytes(file)) == 1024
    assert file.content_type == "application/octet-stream"
    assert file.backend is None
    assert file.metadata == {}


def test_make_file_is_reproducible_with_a_seed() -> None:
    assert pending_bytes(make_file(size=256)) == pending_bytes(make_file(size=256))  # seed 0
    assert pending_bytes(make_file(size=256, seed=7)) == pending_bytes(make_file(size=256, seed=7))
    assert pending_bytes(make_file(size=256, seed=7)) != pending_bytes(make_file(size=256, seed=8))
    # a prefix of a longer file with the same seed: one stream of random bytes
    assert pending_bytes(make_file(size=512, seed=7))[:256] == pending_bytes(
        make_file(size=256, seed=7)
    )


def test_make_file_without_seed_is_random() -> None:
    first, second = make_file(size=64, seed=None), make_file(size=64, seed=None)
    assert pending_bytes(first) != pending_bytes(second)


def test_make_file_options() -> None:
    file = make_file(
        "report.pdf",
        content=b"%PDF-1.7",
        size=5,  # ignored: the content is given
        metadata={"owner": "ada"},
        backend="uploads",
    )
    assert pending_bytes(file) == b"%PDF-1.7"
    assert file.filename == "report.pdf"
    assert file.content_type == "application/pdf"
    assert file.metadata == {"owner": "ada"}
    assert file.backend == "uploads"
    assert make_file("data.bin", content_type="text/csv").content_type == "text/csv"


def test_make_file_saves_exactly_its_bytes() -> None:
    with memory_backends("uploads") as backends:
        file = make_file("a.bin", size=3000, seed=3, backend="uploads")
        data = pending_bytes(file)
        file.save()
        assert file.size == 3000
        assert file.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
        assert backends["uploads"].get_bytes(file.path or "") == data


# -- FaultInjectingBackend -------------------------------------------------------------------------
@pytest.fixture
def inner() -> ObstoreBackend:
    return ObstoreBackend("uploads", "memory://", prefix="p")


@pytest.fixture
def flaky(inner: ObstoreBackend) -> FaultInjectingBackend:
    return FaultInjectingBackend(inner)


def stored(backend: FaultInjectingBackend) -> list[str]:
    inner = backend.inner
    assert isinstance(inner, ObstoreBackend)
    return sorted(o.path for o in inner.list_objects())


def test_wrapper_mirrors_the_inner_backend(inner: ObstoreBackend) -> None:
    flaky = FaultInjectingBackend(inner)
    assert flaky.key == "uploads"
    assert flaky.prefix == inner.prefix == "p"
    assert flaky.checksum_algorithm == inner.checksum_algorithm
    assert flaky.supports_signing is inner.supports_signing
    assert flaky.supports_attributes is inner.supports_attributes
    assert flaky.max_sign_expiry == inner.max_sign_expiry
    assert "memory" in flaky.describe()
    assert repr(inner) in repr(flaky)
    assert FaultInjectingBackend(inner, key="flaky").key == "flaky"


def test_without_faults_everything_is_delegated(flaky: FaultInjectingBackend) -> None:
    flaky.put("p/a", b"hello")
    assert flaky.get_bytes("p/a") == b"hello"
    assert flaky.get_range("p/a", 1, 3) == b"ell"
    assert b"".join(flaky.iter_chunks("p/a")) == b"hello"
    assert flaky.head("p/a").size == 5
    assert flaky.exists("p/a")
    flaky.copy("p/a", "p/b")
    assert [o.path for o in flaky.list_objects()] == ["p/a", "p/b"]
    flaky.delete(["p/a", "p/b"])
    assert stored(flaky) == []
    assert flaky.calls == {"put": 1, "get": 3, "head": 2, "copy": 1, "list": 1, "delete": 1}
    assert flaky.injected == []


def test_the_next_call_fails_by_default(flaky: FaultInjectingBackend) -> None:
    flaky.fail("put")
    with pytest.raises(InjectedFault) as raised:
        flaky.put("p/a", b"1")
    error = raised.value
    assert isinstance(error, StorageOperationError)
    assert isinstance(error, StorageError)
    assert (error.backend, error.path, error.operation) == ("uploads", "p/a", "put")
    assert "injected fault: put #1" in str(error)
    assert stored(flaky) == []
    flaky.put("p/a", b"1")  # only once
    assert stored(flaky) == ["p/a"]
    assert flaky.injected == [error]


def test_nth_counts_from_when_the_fault_was_configured(flaky: FaultInjectingBackend) -> None:
    flaky.put("p/before", b"0")
    flaky.fail("put", nth=2)
    flaky.put("p/a", b"1")
    with pytest.raises(InjectedFault, match="put #3"):
        flaky.put("p/b", b"2")
    flaky.put("p/c", b"3")
    assert stored(flaky) == ["p/a", "p/before", "p/c"]
    assert flaky.calls["put"] == 4  # failed calls count too


def test_nth_and_times(flaky: FaultInjectingBackend) -> None:
    flaky.put("p/a", b"1")
    flaky.fail("head", nth=2, times=2)
    outcomes = []
    for _ in range(5):
        try:
            flaky.head("p/a")
        except InjectedFault:
            outcomes.append("fail")
        else:
            outcomes.append("ok")
    assert outcomes == ["ok", "fail", "fail", "ok", "ok"]
    assert [e.operation for e in flaky.injected] == ["head", "head"]


def test_faults_are_per_operation(flaky: FaultInjectingBackend) -> None:
    flaky.fail("delete", times=2)
    flaky.put("p/a", b"1")
    assert flaky.get_bytes("p/a") == b"1"
    for _ in range(2):
        with pytest.raises(InjectedFault):
            flaky.delete("p/a")
    flaky.delete("p/a")
    assert stored(flaky) == []


def test_several_faults_and_clear_faults(flaky: FaultInjectingBackend) -> None:
    flaky.fail("put", nth=1, message="first")
    flaky.fail("put", nth=3, message="third")
    with pytest.raises(InjectedFault, match="first"):
        flaky.put("p/a", b"1")
    flaky.put("p/b", b"2")
    with pytest.raises(InjectedFault, match="third"):
        flaky.put("p/c", b"3")
    flaky.fail("put")
    flaky.clear_faults()
    flaky.put("p/d", b"4")
    assert stored(flaky) == ["p/b", "p/d"]


def _pattern(backend: FaultInjectingBackend, calls: int) -> list[bool]:
    backend.put("x", b"x")
    failed = []
    for _ in range(calls):
        try:
            backend.head("x")
        except InjectedFault:
            failed.append(True)
        else:
            failed.append(False)
    return failed


def test_probability_is_reproducible_with_a_seed() -> None:
    def flaky(seed: int) -> FaultInjectingBackend:
        backend = FaultInjectingBackend(ObstoreBackend("u", "memory://"), seed=seed)
        backend.fail("head", probability=0.5, times=1000)
        return backend

    first, again, other = (
        _pattern(flaky(42), 200),
        _pattern(flaky(42), 200),
        _pattern(flaky(7), 200),
    )
    assert first == again
    assert first != other
    assert 60 < sum(first) < 140


def test_probability_bounds_and_times() -> None:
    never = FaultInjectingBackend(ObstoreBackend("u", "memory://"), seed=1)
    never.fail("head", probability=0.0, times=100)
    assert not any(_pattern(never, 50))
    always = FaultInjectingBackend(ObstoreBackend("u", "memory://"), seed=1)
    always.fail("head", probability=1.0, times=3)
    assert _pattern(always, 10) == [True] * 3 + [False] * 7


def chunks(count: int, size: int = 100) -> Iterator[bytes]:
    for i in range(count):
        yield bytes([i]) * size


async def achunks(count: int, size: int = 100) -> AsyncIterator[bytes]:
    for i in range(count):
        yield bytes([i]) * size


def test_part_faults_on_a_streamed_upload(flaky: FaultInjectingBackend) -> None:
    flaky.put("p/whole", chunks(5), chunk_size=128)
    assert flaky.calls["part"] == 5
    assert flaky.get_bytes("p/whole") == b"".join(chunks(5))

    flaky.fail("part", nth=3)
    with pytest.raises(InjectedFault) as raised:
        flaky.put("p/broken", chunks(5), chunk_size=128)
    assert (raised.value.operation, raised.value.path) == ("part", "p/broken")
    assert flaky.calls["part"] == 8  # the upload stopped at the failing part
    assert stored(flaky) == ["p/whole"]  # nothing of the broken upload is visible


def test_a_single_buffer_upload_has_no_parts(flaky: FaultInjectingBackend) -> None:
    flaky.fail("part")
    flaky.put("p/a", b"x" * 1000)
    assert flaky.calls["part"] == 0
    assert stored(flaky) == ["p/a"]


def test_part_faults_through_file_object_save(flaky: FaultInjectingBackend) -> None:
    with storages.temporary(flaky):
        flaky.fail("part", nth=2)
        file = FileObject(filename="big.bin", content=chunks(10), backend="uploads")
        with pytest.raises(InjectedFault):
            file.save(chunk_size=256)
        assert stored(flaky) == []
        assert file.path is None


async def test_async_twins_share_faults_and_counters(flaky: FaultInjectingBackend) -> None:
    flaky.fail("put", nth=2)
    await flaky.put_async("p/a", b"1")
    with pytest.raises(InjectedFault, match="put #2"):
        await flaky.put_async("p/b", b"2")
    flaky.put("p/c", b"3")
    assert flaky.calls["put"] == 3

    flaky.fail("get")
    with pytest.raises(InjectedFault):
        await flaky.get_bytes_async("p/a")
    assert await flaky.get_bytes_async("p/a") == b"1"
    assert await flaky.get_range_async("p/a", 0, 1) == b"1"
    assert [c async for c in flaky.iter_chunks_async("p/a")] == [b"1"]

    flaky.fail("head")
    with pytest.raises(InjectedFault):
        await flaky.head_async("p/a")
    assert (await flaky.head_async("p/a")).size == 1

    flaky.fail("copy")
    with pytest.raises(InjectedFault):
        await flaky.copy_async("p/a", "p/d")
    await flaky.copy_async("p/a", "p/d")

    flaky.fail("list")
    with pytest.raises(InjectedFault):
        flaky.list_objects_async()
    assert sorted([o.path async for o in flaky.list_objects_async()]) == ["p/a", "p/c", "p/d"]

    flaky.fail("delete")
    with pytest.raises(InjectedFault):
        await flaky.delete_async(["p/a", "p/c", "p/d"])
    await flaky.delete_async(["p/a", "p/c", "p/d"])
    assert stored(flaky) == []
    assert [e.operation for e in flaky.injected] == ["put", "get", "head", "copy", "list", "delete"]


async def test_async_part_faults(flaky: FaultInjectingBackend) -> None:
    flaky.fail("part", nth=2)
    with pytest.raises(InjectedFault):
        await flaky.put_async("p/broken", achunks(5), chunk_size=128)
    assert flaky.calls["part"] == 2
    await flaky.put_async("p/whole", achunks(5), chunk_size=128)
    assert flaky.get_bytes("p/whole") == b"".join(chunks(5))
    assert stored(flaky) == ["p/whole"]


def test_sign_faults_come_before_the_store_is_asked(flaky: FaultInjectingBackend) -> None:
    flaky.fail("sign")
    with pytest.raises(InjectedFault):
        flaky.sign("a")
    assert flaky.sign("a").startswith("/_storage/")  # the next call reaches the store
    assert flaky.calls["sign"] == 2


def test_registered_in_place_of_the_real_backend(inner: ObstoreBackend) -> None:
    flaky = FaultInjectingBackend(inner)
    with storages.temporary(flaky):
        flaky.fail("put")
        with pytest.raises(InjectedFault):
            FileObject(filename="a.txt", content=b"a", backend="uploads").save()
        saved = FileObject(filename="a.txt", content=b"a", backend="uploads").save()
    assert saved.path is not None
    assert saved.path.startswith("p/")
    assert inner.get_bytes(saved.path) == b"a"


def test_the_wrapper_signs_with_the_signer_set_on_it() -> None:
    inner = ObstoreBackend("uploads", "memory://")
    flaky = FaultInjectingBackend(inner)
    registry = BackendRegistry()
    registry.register_backend(flaky)
    signer = HmacUrlSigner("s" * 32, base_url="/files")
    assert attach_signer(registry, signer) == ["uploads"]
    assert inner.url_signer is signer
    assert flaky.url_signer is signer
    inner.put("a", b"1")
    assert flaky.sign("a").startswith("/files/uploads/a?")
    detach_signer(registry, signer)
    assert inner.url_signer is None


# -- inject_faults ---------------------------------------------------------------------------------
def test_inject_faults_wraps_the_registered_backend() -> None:
    with memory_backends("uploads") as backends:
        with inject_faults("uploads", seed=3) as flaky:
            assert storages.get_backend("uploads") is flaky
            assert flaky.inner is backends["uploads"]
            flaky.fail("put")
            with pytest.raises(InjectedFault):
                FileObject(filename="a.txt", content=b"a", backend="uploads").save()
            saved = FileObject(filename="a.txt", content=b"a", backend="uploads").save()
        assert storages.get_backend("uploads") is backends["uploads"]
        assert backends["uploads"].get_bytes(saved.path or "") == b"a"
    with pytest.raises(BackendNotFoundError), inject_faults("uploads"):
        pass


def test_inject_faults_follows_an_app_registration(tmp_path: Path) -> None:
    real = production_backend(tmp_path, prefix="docs")
    with memory_backends("uploads", sticky=True) as backends, inject_faults("uploads") as flaky:
        flaky.fail("put", nth=2)
        FileObject(filename="a.txt", content=b"a", backend="uploads").save()
        storages.register_backend(real)  # the application starts inside the block
        assert storages.get_backend("uploads") is flaky  # faults and counters kept
        assert flaky.prefix == "docs"
        with pytest.raises(InjectedFault, match="put #2"):
            FileObject(filename="b.txt", content=b"b", backend="uploads").save()
        saved = FileObject(filename="c.txt", content=b"c", backend="uploads").save()
        assert (saved.path or "").startswith("docs/")
        assert backends["uploads"].get_bytes(saved.path or "") == b"c"  # the shared store
        assert flaky.calls["put"] == 3
    assert nothing_stored_in(tmp_path / "real")


def test_inject_faults_after_the_app_registered(tmp_path: Path) -> None:
    real = production_backend(tmp_path, prefix="docs")
    with memory_backends("uploads", sticky=True):
        storages.register_backend(real)
        with inject_faults("uploads") as flaky:
            assert flaky.prefix == "docs"
            assert storages.get_backend("uploads") is flaky


def test_inject_faults_around_a_real_backend_follows_it(tmp_path: Path) -> None:
    first = ObstoreBackend("files", tmp_path / "one")
    second = ObstoreBackend("files", tmp_path / "two")
    storages.register_backend(first)
    with inject_faults("files") as flaky:
        assert flaky.inner is first
        storages.register_backend(second)
        assert flaky.inner is second
        FileObject(filename="a.txt", content=b"a", backend="files").save()
    assert storages.get_backend("files") is first
    assert not nothing_stored_in(tmp_path / "two")


def test_direct_save_retry_after_failed_multipart_rewinds_seekable_file() -> None:
    import io

    from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
    from sqlalchemy_obstore.testing import FaultInjectingBackend, InjectedFault

    flaky = FaultInjectingBackend(ObstoreBackend("retry", "memory://"))
    storages.register_backend(flaky)
    data = bytes(range(256)) * 4
    file = FileObject(filename="a.bin", content=io.BytesIO(data), backend="retry")
    flaky.fail("part", nth=2)
    with pytest.raises(InjectedFault):
        file.save(chunk_size=100)
    assert file.has_pending_content
    file.save(chunk_size=100)
    assert file.size == len(data)
    assert file.get_content() == data


def test_direct_save_retry_after_failed_stream_refuses_partial_content() -> None:
    from sqlalchemy_obstore import FileObject, NoContentError, ObstoreBackend, storages
    from sqlalchemy_obstore.testing import FaultInjectingBackend, InjectedFault

    flaky = FaultInjectingBackend(ObstoreBackend("retry", "memory://"))
    storages.register_backend(flaky)
    chunks = (bytes([i]) * 100 for i in range(10))
    file = FileObject(filename="a.bin", content=chunks, backend="retry")
    flaky.fail("put")
    with pytest.raises(InjectedFault):
        file.save(chunk_size=250)
    with pytest.raises(NoContentError, match="cannot be read twice"):
        file.save(chunk_size=250)
    assert list(flaky.inner.list_objects()) == []
