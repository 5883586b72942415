"""`BackendRegistry.override`: test backends that stay registered against the code under test."""

from __future__ import annotations

import threading

import pytest

from sqlalchemy_obstore import (
    BackendNotFoundError,
    BackendRegistry,
    ConfigurationError,
    ObstoreBackend,
)
from sqlalchemy_obstore.backends import Backend


def memory(key: str, **kwargs: object) -> ObstoreBackend:
    return ObstoreBackend(key, "memory://", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> BackendRegistry:
    return BackendRegistry()


def test_registering_a_pinned_key_keeps_the_override(registry: BackendRegistry) -> None:
    test_backend = memory("uploads")
    app_backend = memory("uploads", prefix="app")
    with registry.override(test_backend):
        registry.register_backend(app_backend)  # no BackendAlreadyRegisteredError
        assert registry.get_backend("uploads") is test_backend
        assert registry.backends["uploads"] is test_backend
        assert registry.displaced == {"uploads": app_backend}
        registry.register_backend(memory("uploads"), replace=True)
        assert registry.get_backend("uploads") is test_backend
    assert "uploads" not in registry
    assert registry.displaced == {}


def test_other_keys_register_as_usual(registry: BackendRegistry) -> None:
    other = memory("avatars")
    with registry.override(memory("uploads")):
        registry.register_backend(other)
        assert registry.get_backend("avatars") is other
        assert registry.unregister_backend("avatars") is other
        registry.register_backend(other)
    assert "avatars" not in registry  # restored as it was


def test_unregistering_removes_only_the_app_registration(registry: BackendRegistry) -> None:
    test_backend = memory("uploads")
    app_backend = memory("uploads")
    with registry.override(test_backend):
        assert registry.unregister_backend("uploads") is test_backend  # nothing displaced
        assert registry.get_backend("uploads") is test_backend
        registry.register_backend(app_backend)
        assert registry.unregister_backend("uploads") is app_backend
        assert registry.displaced == {}
        assert registry.get_backend("uploads") is test_backend
        with pytest.raises(BackendNotFoundError):
            registry.unregister_backend("never-registered")


def test_an_app_startup_and_shutdown_cycle_twice(registry: BackendRegistry) -> None:
    """What the Litestar plugin and storage_lifespan do: unregister only their own backend."""
    test_backend = memory("uploads")
    app_backend = memory("uploads")
    with registry.override(test_backend):
        for _ in range(2):
            registry.register_backend(app_backend)
            if registry.backends.get("uploads") is app_backend:  # the lifespans' check
                registry.unregister_backend("uploads")
            assert registry.get_backend("uploads") is test_backend


def test_backends_registered_before_the_block_are_displaced(registry: BackendRegistry) -> None:
    production = memory("uploads", prefix="prod")
    registry.register_backend(production)
    test_backend = memory("uploads")
    with registry.override(test_backend):
        assert registry.get_backend("uploads") is test_backend
        assert registry.displaced == {"uploads": production}
    assert registry.get_backend("uploads") is production
    assert registry.displaced == {}


def test_stand_in_builds_what_the_key_resolves_to(registry: BackendRegistry) -> None:
    calls: list[tuple[Backend, Backend | None]] = []
    test_backend = memory("uploads")

    def stand_in(registered: Backend, current: Backend | None) -> Backend:
        calls.append((registered, current))
        return memory(registered.key, prefix=registered.prefix)

    app_backend = memory("uploads", prefix="app")
    with registry.override(test_backend, stand_in=stand_in):
        assert registry.get_backend("uploads") is test_backend
        registry.register_backend(app_backend)
        resolved = registry.get_backend("uploads")
        assert resolved is not app_backend
        assert resolved is not test_backend
        assert resolved.prefix == "app"
        assert calls == [(app_backend, test_backend)]
        registry.register_backend(memory("avatars"))  # not caught without every_key
        assert len(calls) == 1


def test_every_key_stands_in_for_everything(registry: BackendRegistry) -> None:
    before = memory("before")
    registry.register_backend(before)
    seen: list[str] = []

    def stand_in(registered: Backend, current: Backend | None) -> Backend:
        seen.append(registered.key)
        assert current is None
        return memory(registered.key)

    with registry.override(stand_in=stand_in, every_key=True):
        assert registry.get_backend("before") is not before  # stood in at entry
        late = memory("late")
        registry.register_backend(late)
        assert registry.get_backend("late") is not late
        assert registry.displaced == {"before": before, "late": late}
        assert seen == ["before", "late"]
    assert registry.get_backend("before") is before
    assert "late" not in registry


def test_every_key_needs_a_stand_in(registry: BackendRegistry) -> None:
    with (
        pytest.raises(ConfigurationError, match="needs a stand_in"),
        registry.override(every_key=True),
    ):
        pass


def test_a_stand_in_must_keep_the_key(registry: BackendRegistry) -> None:
    with registry.override(memory("uploads"), stand_in=lambda b, c: memory("other")):
        with pytest.raises(ConfigurationError, match="must keep the key"):
            registry.register_backend(memory("uploads"))
        assert registry.get_backend("uploads").key == "uploads"


def test_registering_the_override_itself_is_a_no_op(registry: BackendRegistry) -> None:
    test_backend = memory("uploads")
    with registry.override(test_backend):
        registry.register_backend(test_backend)
        assert registry.displaced == {}


def test_nested_blocks_the_innermost_decides(registry: BackendRegistry) -> None:
    outer, inner = memory("uploads"), memory("uploads")
    app_backend = memory("uploads")
    with registry.override(outer):
        registry.register_backend(app_backend)
        with registry.override(inner):
            assert registry.get_backend("uploads") is inner
            assert registry.displaced == {"uploads": app_backend}  # still the app's
            registry.register_backend(memory("uploads"))
            assert registry.get_backend("uploads") is inner
        assert registry.get_backend("uploads") is outer
        assert registry.displaced == {"uploads": app_backend}


def test_clear_keeps_overrides(registry: BackendRegistry) -> None:
    test_backend = memory("uploads")
    with registry.override(test_backend):
        registry.register_backend(memory("uploads"))
        registry.register_backend(memory("other"))
        registry.clear()
        assert list(registry) == ["uploads"]
        assert registry.displaced == {}


def test_restored_after_an_exception(registry: BackendRegistry) -> None:
    production = memory("uploads")
    registry.register_backend(production)
    with pytest.raises(RuntimeError, match="boom"), registry.override(memory("uploads")):
        raise RuntimeError("boom")
    assert registry.get_backend("uploads") is production
    registry.register_backend(memory("uploads"), replace=True)  # no override left behind
    assert registry.get_backend("uploads") is not production


def test_temporary_inside_an_override_registers_deliberately(registry: BackendRegistry) -> None:
    test_backend, real = memory("uploads"), memory("uploads")
    with registry.override(test_backend):
        with registry.temporary(real):
            assert registry.get_backend("uploads") is real
        assert registry.get_backend("uploads") is test_backend


def test_concurrent_registrations_under_an_override(registry: BackendRegistry) -> None:
    test_backend = memory("uploads")
    errors: list[BaseException] = []

    def register(n: int) -> None:
        try:
            for _ in range(50):
                registry.register_backend(memory("uploads"))
                registry.register_backend(memory(f"k{n}"), replace=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with registry.override(test_backend):
        threads = [threading.Thread(target=register, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert registry.get_backend("uploads") is test_backend
        assert sorted(registry) == ["k0", "k1", "k2", "k3", "uploads"]
