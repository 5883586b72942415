"""The backend registry: registration, lookup errors, temporary swaps, thread safety."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest

from sqlalchemy_obstore import (
    BackendAlreadyRegisteredError,
    BackendNotFoundError,
    BackendRegistry,
    ConfigurationError,
    ObstoreBackend,
    StorageError,
    storages,
)


def memory(key: str) -> ObstoreBackend:
    return ObstoreBackend(key, "memory://")


@pytest.fixture
def registry() -> BackendRegistry:
    return BackendRegistry()


def test_register_get_unregister(registry: BackendRegistry) -> None:
    backend = memory("uploads")
    registry.register_backend(backend)
    assert registry.get_backend("uploads") is backend
    assert registry.unregister_backend("uploads") is backend
    assert "uploads" not in registry
    with pytest.raises(BackendNotFoundError):
        registry.get_backend("uploads")


def test_duplicate_key_is_refused(registry: BackendRegistry) -> None:
    first, second = memory("uploads"), memory("uploads")
    registry.register_backend(first)
    with pytest.raises(BackendAlreadyRegisteredError, match="replace=True") as info:
        registry.register_backend(second)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ConfigurationError)
    assert info.value.backend == "uploads"
    assert registry.get_backend("uploads") is first


def test_duplicate_key_with_replace(registry: BackendRegistry) -> None:
    first, second = memory("uploads"), memory("uploads")
    registry.register_backend(first)
    registry.register_backend(second, replace=True)
    assert registry.get_backend("uploads") is second
    assert len(registry) == 1


def test_not_found_error_lists_registered_keys(registry: BackendRegistry) -> None:
    registry.register_backend(memory("b-images"))
    registry.register_backend(memory("a-docs"))
    with pytest.raises(BackendNotFoundError) as info:
        registry.get_backend("avatars")
    error = info.value
    assert isinstance(error, LookupError)
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, StorageError)
    assert error.backend == "avatars"
    assert set(error.registered) == {"a-docs", "b-images"}
    message = str(error)
    assert "'avatars'" in message
    assert "'a-docs', 'b-images'" in message  # sorted, both listed
    assert "register_backend" in message


def test_not_found_error_on_empty_registry(registry: BackendRegistry) -> None:
    with pytest.raises(BackendNotFoundError, match=r"registered: none") as info:
        registry.get_backend("x")
    assert info.value.registered == ()


def test_not_found_is_catchable_as_lookup_error(registry: BackendRegistry) -> None:
    with pytest.raises(LookupError):
        registry.get_backend("missing")


def test_unregister_unknown_key(registry: BackendRegistry) -> None:
    registry.register_backend(memory("known"))
    with pytest.raises(BackendNotFoundError, match="'known'"):
        registry.unregister_backend("unknown")
    assert "known" in registry


def test_contains(registry: BackendRegistry) -> None:
    registry.register_backend(memory("a"))
    assert "a" in registry
    assert "b" not in registry
    assert None not in registry
    assert 1 not in registry


def test_iteration_len_and_backends_snapshot(registry: BackendRegistry) -> None:
    a, b = memory("a"), memory("b")
    registry.register_backend(a)
    registry.register_backend(b)
    assert sorted(registry) == ["a", "b"]
    assert len(registry) == 2
    snapshot = registry.backends
    assert isinstance(snapshot, Mapping)
    assert dict(snapshot) == {"a": a, "b": b}
    with pytest.raises(TypeError):
        snapshot["c"] = memory("c")  # type: ignore[index]
    registry.register_backend(memory("c"))
    assert "c" not in snapshot  # a snapshot, not a live view
    assert "c" in registry.backends


def test_iteration_while_registering_does_not_fail(registry: BackendRegistry) -> None:
    registry.register_backend(memory("a"))
    registry.register_backend(memory("b"))
    for key in registry:
        registry.register_backend(memory(f"{key}-copy"))
    assert sorted(registry) == ["a", "a-copy", "b", "b-copy"]


def test_clear(registry: BackendRegistry) -> None:
    registry.register_backend(memory("a"))
    registry.clear()
    assert len(registry) == 0
    assert list(registry) == []


def test_repr_lists_keys_only() -> None:
    registry = BackendRegistry()
    registry.register_backend(
        ObstoreBackend(
            "s3",
            "s3://bucket/",
            region="eu-west-1",
            access_key_id="AKIAFAKEKEYID",
            secret_access_key="fake/secret+value",
        )
    )
    registry.register_backend(memory("m"))
    text = repr(registry)
    assert text == "BackendRegistry(keys=['m', 's3'])"
    assert "fake/secret+value" not in text


def test_default_registry_is_a_backend_registry() -> None:
    assert isinstance(storages, BackendRegistry)
    assert list(storages) == []  # the autouse fixture isolates it


# -- temporary ------------------------------------------------------------------------------------
def test_temporary_adds_and_restores(registry: BackendRegistry) -> None:
    outer = memory("outer")
    registry.register_backend(outer)
    inner = memory("inner")
    with registry.temporary(inner) as same:
        assert same is registry
        assert registry.get_backend("inner") is inner
        assert registry.get_backend("outer") is outer
    assert "inner" not in registry
    assert registry.get_backend("outer") is outer


def test_temporary_replaces_and_restores_same_key(registry: BackendRegistry) -> None:
    original = memory("uploads")
    registry.register_backend(original)
    replacement = memory("uploads")
    with registry.temporary(replacement):
        assert registry.get_backend("uploads") is replacement
    assert registry.get_backend("uploads") is original


def test_temporary_undoes_changes_made_inside(registry: BackendRegistry) -> None:
    kept = memory("kept")
    registry.register_backend(kept)
    with registry.temporary():
        registry.register_backend(memory("added-inside"))
        registry.unregister_backend("kept")
        assert "kept" not in registry
    assert sorted(registry) == ["kept"]
    assert registry.get_backend("kept") is kept


def test_temporary_restores_on_exception(registry: BackendRegistry) -> None:
    original = memory("uploads")
    registry.register_backend(original)

    class Boom(Exception):
        pass

    def fail_inside() -> None:
        with registry.temporary(memory("uploads"), memory("extra")):
            registry.register_backend(memory("inside"))
            raise Boom

    with pytest.raises(Boom):
        fail_inside()
    assert sorted(registry) == ["uploads"]
    assert registry.get_backend("uploads") is original


def test_temporary_clear(registry: BackendRegistry) -> None:
    registry.register_backend(memory("a"))
    registry.register_backend(memory("b"))
    only = memory("only")
    with registry.temporary(only, clear=True):
        assert list(registry) == ["only"]
        with pytest.raises(BackendNotFoundError, match="'only'"):
            registry.get_backend("a")
    assert sorted(registry) == ["a", "b"]


def test_temporary_clear_restores_on_exception(registry: BackendRegistry) -> None:
    registry.register_backend(memory("a"))

    def fail_inside() -> None:
        with registry.temporary(clear=True):
            assert len(registry) == 0
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert list(registry) == ["a"]


def test_temporary_nested(registry: BackendRegistry) -> None:
    with registry.temporary(memory("one")):
        with registry.temporary(memory("two")):
            assert sorted(registry) == ["one", "two"]
        assert sorted(registry) == ["one"]
    assert list(registry) == []


def test_temporary_on_default_registry() -> None:
    backend = memory("uploads")
    with storages.temporary(backend):
        assert storages.get_backend("uploads") is backend
    assert "uploads" not in storages


def test_registries_are_independent(registry: BackendRegistry) -> None:
    registry.register_backend(memory("private"))
    assert "private" not in storages


# -- threads --------------------------------------------------------------------------------------
def test_many_threads_register_and_read() -> None:
    registry = BackendRegistry()
    registry.register_backend(memory("shared"))
    threads_count, per_thread = 16, 40
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                key = f"t{n}-{i}"
                backend = memory(key)
                registry.register_backend(backend)
                assert registry.get_backend(key) is backend
                assert registry.get_backend("shared").key == "shared"
                assert key in registry
                list(registry)  # iterate while others write
                if i % 2:
                    assert registry.unregister_backend(key) is backend
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = {f"t{n}-{i}" for n in range(threads_count) for i in range(0, per_thread, 2)}
    assert set(registry) == expected | {"shared"}
    assert len(registry) == len(expected) + 1


def test_concurrent_replace_leaves_one_of_the_candidates() -> None:
    registry = BackendRegistry()
    candidates = [memory("uploads") for _ in range(32)]
    start = threading.Barrier(len(candidates))

    def replace(backend: ObstoreBackend) -> None:
        start.wait()
        registry.register_backend(backend, replace=True)

    threads = [threading.Thread(target=replace, args=(b,)) for b in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert any(registry.get_backend("uploads") is b for b in candidates)
    assert len(registry) == 1


def test_concurrent_duplicate_registration_only_one_wins() -> None:
    registry = BackendRegistry()
    candidates = [memory("uploads") for _ in range(32)]
    start = threading.Barrier(len(candidates))
    refused: list[BaseException] = []

    def register(backend: ObstoreBackend) -> None:
        start.wait()
        try:
            registry.register_backend(backend)
        except BackendAlreadyRegisteredError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=register, args=(b,)) for b in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refused) == len(candidates) - 1
