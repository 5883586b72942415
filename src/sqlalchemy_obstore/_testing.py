"""The implementation of `sqlalchemy_obstore.testing`, documented and imported there."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from obstore.store import MemoryStore

from ._delegating import DelegatingBackend
from ._errors import StorageOperationError
from ._file_object import FileObject
from ._registry import BackendRegistry, storages
from .backends import Backend, ObstoreBackend, UploadBody, UrlSigner

__all__ = (
    "FaultInjectingBackend",
    "FileFactory",
    "InjectedFault",
    "Operation",
    "inject_faults",
    "make_file",
    "memory_backends",
    "memory_stand_in",
)

Operation: TypeAlias = Literal["put", "part", "delete", "head", "get", "copy", "list", "sign"]
"""Operations a `FaultInjectingBackend` can fail. `part` is one multipart chunk."""


class InjectedFault(StorageOperationError):
    """The error a `FaultInjectingBackend` raises when a fault is due."""


@contextmanager
def memory_backends(
    *keys: str,
    registry: BackendRegistry | None = None,
    clear: bool = False,
    sticky: bool = False,
) -> Iterator[dict[str, ObstoreBackend]]:
    """Register a fresh memory backend under each key for the duration of a block.

    Backends already registered under those keys come back afterwards, and so does
    everything else the block registered or unregistered.

    With `sticky=True` the block keeps storage in memory against an application that
    registers its own backends (in a Litestar plugin, a lifespan, at import): it uses
    [`BackendRegistry.override`][sqlalchemy_obstore.registry.BackendRegistry.override]
    with [`memory_stand_in`][sqlalchemy_obstore.testing.memory_stand_in] for every key.
    A backend registered under one of `keys` (before or inside the block) is replaced by
    a memory backend with its settings that shares the yielded backend's content; one
    registered under any other key by a fresh memory stand-in. Registering never raises
    `BackendAlreadyRegisteredError` there, and
    [`registry.displaced`][sqlalchemy_obstore.registry.BackendRegistry.displaced] shows
    what the application registered.

    Args:
        *keys: Backend keys your models use (`StoredObject("uploads")` → `"uploads"`).
        registry: The registry to patch (default: `storages`).
        clear: Hide every other registered backend inside the block.
        sticky: Stand in for every backend registered before or inside the block.

    Yields:
        The new backends by key.

    Example:
        >>> from sqlalchemy_obstore import FileObject, storages
        >>> with memory_backends("uploads") as backends:
        ...     f = FileObject(filename="a.txt", content=b"x", backend="uploads").save()
        ...     [o.path for o in backends["uploads"].list_objects()] == [f.path]
        True
        >>> with memory_backends("uploads", sticky=True) as backends:
        ...     # what an application's start-up does:
        ...     storages.register_backend(ObstoreBackend("uploads", "memory://", prefix="docs"))
        ...     f = FileObject(filename="a.txt", content=b"x", backend="uploads").save()
        ...     f.path.startswith("docs/"), backends["uploads"].get_bytes(f.path)
        (True, b'x')
    """
    target = registry if registry is not None else storages
    created = {key: ObstoreBackend(key, "memory://") for key in keys}
    with ExitStack() as stack:
        if sticky:
            if clear:
                stack.enter_context(target.temporary(clear=True))
            stack.enter_context(
                target.override(*created.values(), stand_in=memory_stand_in, every_key=True)
            )
        else:
            stack.enter_context(target.temporary(*created.values(), clear=clear))
        yield created


def _memory_store(backend: Backend | None) -> MemoryStore | None:
    """The memory store behind `backend` (through wrappers), if it keeps content in memory."""
    while isinstance(backend, DelegatingBackend):
        backend = backend.inner
    if isinstance(backend, ObstoreBackend) and isinstance(backend.store, MemoryStore):
        return backend.store
    return None


def memory_stand_in(backend: Backend, current: Backend | None = None) -> ObstoreBackend:
    """A memory backend that stands in for `backend` in tests.

    It has `backend`'s key, prefix, key layout, checksum algorithm, upload policy, public
    base URL and URL signer, so uploads are checked and laid out as in production, and
    keeps the content in memory: in `current`'s store when `current` keeps its content
    in memory (the backend the key resolves to now, so what a test stored stays
    visible), else in a new, empty store. The signature is that of a
    [`StandIn`][sqlalchemy_obstore.registry.StandIn] for
    [`BackendRegistry.override`][sqlalchemy_obstore.registry.BackendRegistry.override].

    Args:
        backend: The backend to stand in for (an application's S3 backend, say).
        current: A backend whose memory store to share.

    Example:
        >>> from sqlalchemy_obstore import ObstoreBackend
        >>> production = ObstoreBackend("uploads", "s3://bucket/", prefix="docs",
        ...                             region="eu-west-1", skip_signature=True)
        >>> memory_stand_in(production)
        ObstoreBackend(key='uploads', store=MemoryStore(), prefix='docs')
    """
    store = _memory_store(current)
    signer: UrlSigner | None = backend.url_signer
    if signer is None and current is not None:
        signer = current.url_signer
    return ObstoreBackend(
        backend.key,
        store if store is not None else MemoryStore(),
        prefix=backend.prefix,
        public_base_url=backend.public_base_url,
        key_function=backend.key_function,
        checksum_algorithm=backend.checksum_algorithm,
        policy=backend.policy,
        url_signer=signer,
    )


def make_file(
    filename: str = "file.bin",
    *,
    size: int = 1024,
    content: bytes | None = None,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    backend: str | None = None,
    seed: int | str | None = 0,
) -> FileObject:
    """A pending `FileObject` with generated content.

    Args:
        filename: Display name (its extension drives the guessed content type).
        size: Number of bytes to generate when `content` is not given.
        content: Exact content to use instead of generated bytes.
        content_type: Explicit content type.
        metadata: Custom metadata.
        backend: Backend key (default: the column's, once assigned).
        seed: Seed for reproducible bytes (an int or a string); `None` for fresh random
            bytes.

    Example:
        >>> f = make_file("report.pdf", size=10)
        >>> f.has_pending_content, f.content_type
        (True, 'application/pdf')
    """
    if content is None:
        content = random.Random(seed).randbytes(size)
    return FileObject(
        filename=filename,
        content=content,
        content_type=content_type,
        metadata=metadata,
        backend=backend,
    )


class FileFactory:
    """Makes pending `FileObject`s with reproducible, distinct content and names.

    The n-th file of two factories with the same seed is the same file (name, bytes,
    type); the files of one factory differ from each other. The pytest plugin's
    `obstore_file_factory` fixture is one seeded with the test's id.

    Args:
        seed: Seed of the whole sequence (a string or an int).
        size: Default size in bytes of generated content.
        backend: Default backend key of the files (default: the column's, once assigned).

    Attributes:
        count: How many files the factory has made.

    Example:
        >>> make = FileFactory(seed="test_upload")
        >>> first, second = make(), make("report.pdf", size=10)
        >>> first.filename, second.filename, second.content_type, make.count
        ('file-1.bin', 'report.pdf', 'application/pdf', 2)
        >>> with memory_backends("uploads"):
        ...     again = FileFactory(seed="test_upload", backend="uploads")().save()
        ...     other = FileFactory(seed="test_other", backend="uploads")().save()
        >>> first.filename == again.filename, again.checksum == other.checksum
        (True, False)
    """

    def __init__(self, seed: int | str = 0, *, size: int = 1024, backend: str | None = None):
        self.seed = seed
        self.size = size
        self.backend = backend
        self.count = 0

    def __call__(
        self,
        filename: str | None = None,
        *,
        size: int | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        backend: str | None = None,
    ) -> FileObject:
        """The next file.

        Args:
            filename: Display name (default `file-<n>.bin`); its extension drives the
                guessed content type.
            size: Bytes to generate (default: the factory's `size`).
            content: Exact content instead of generated bytes.
            content_type: Explicit content type.
            metadata: Custom metadata.
            backend: Backend key (default: the factory's).
        """
        self.count += 1
        return make_file(
            filename or f"file-{self.count}.bin",
            size=self.size if size is None else size,
            content=content,
            content_type=content_type,
            metadata=metadata,
            backend=backend or self.backend,
            seed=f"{self.seed}/{self.count}",
        )

    def __repr__(self) -> str:
        return f"FileFactory(seed={self.seed!r}, count={self.count})"


@dataclass
class _Fault:
    operation: Operation
    nth: int | None
    remaining: int
    probability: float | None
    message: str


class FaultInjectingBackend(DelegatingBackend):
    """A backend wrapper that fails chosen operations, for testing error handling.

    Register it in place of the real backend (it takes the wrapped backend's key by
    default), or let [`inject_faults`][sqlalchemy_obstore.testing.inject_faults] do it.
    Calls are counted per operation in `calls`; every injected failure is appended to
    `injected`. A `put_buffer` (the one-request write of a small `FileObject.save`)
    counts and fails as a `put`, and reaches the wrapped backend's own `put_buffer`, so
    a fault meets the write production makes. Its URL signer is the wrapped backend's:
    setting one on the wrapper (as `attach_signer` does) sets it on the wrapped backend,
    which signs.

    Args:
        inner: The backend that does the real work.
        key: Register under another key.
        seed: Seed for probability-based faults.

    Example:
        >>> from sqlalchemy_obstore import ObstoreBackend
        >>> flaky = FaultInjectingBackend(ObstoreBackend("uploads", "memory://"))
        >>> flaky.fail("put", nth=2)
        >>> _ = flaky.put("a", b"1")
        >>> flaky.put("b", b"2")
        Traceback (most recent call last):
        ...
        sqlalchemy_obstore.testing.InjectedFault: injected fault: put #2 ...
    """

    def __init__(self, inner: Backend, *, key: str | None = None, seed: int | None = None):
        # It takes the wrapped backend's policy and URL signer too, so uploads through it
        # are checked exactly as they are through the backend it stands in for.
        super().__init__(key or inner.key, inner)
        self.calls: Counter[str] = Counter()
        self.injected: list[InjectedFault] = []
        self._faults: list[_Fault] = []
        self._random = random.Random(seed)

    @property
    def url_signer(self) -> UrlSigner | None:
        """The wrapped backend's URL signer (setting it sets the wrapped backend's)."""
        return self.inner.url_signer

    @url_signer.setter
    def url_signer(self, signer: UrlSigner | None) -> None:
        self.inner.url_signer = signer

    def _wrap(self, inner: Backend) -> FaultInjectingBackend:
        """Wrap `inner` from now on, taking its settings; faults and counters stay."""
        DelegatingBackend.__init__(self, self.key, inner)
        return self

    # -- configuring faults ---------------------------------------------------------------------
    def fail(
        self,
        operation: Operation,
        *,
        nth: int | None = None,
        times: int = 1,
        probability: float | None = None,
        message: str = "injected fault",
    ) -> None:
        """Make `operation` fail.

        Args:
            operation: Which operation (`part` is one chunk of a streamed upload).
            nth: Fail the n-th call from now on (1-based; counted per operation). With
                neither `nth` nor `probability`, the next call fails.
            times: How many calls fail (consecutive, starting at `nth`).
            probability: Fail each call with this probability instead.
            message: Message of the raised `InjectedFault`.
        """
        start = None if probability is not None else self.calls[operation] + (nth or 1)
        self._faults.append(_Fault(operation, start, times, probability, message))

    def clear_faults(self) -> None:
        """Remove every configured fault."""
        self._faults.clear()

    def _check(self, operation: Operation, path: str | None = None) -> None:
        self.calls[operation] += 1
        count = self.calls[operation]
        for fault in self._faults:
            if fault.operation != operation or fault.remaining <= 0:
                continue
            if fault.probability is not None:
                due = self._random.random() < fault.probability
            else:
                due = fault.nth is not None and count >= fault.nth
            if due:
                fault.remaining -= 1
                error = InjectedFault(
                    f"{fault.message}: {operation} #{count}",
                    backend=self.key,
                    path=path,
                    operation=operation,
                )
                self.injected.append(error)
                raise error

    def _parts(self, body: Iterator[Any], path: str) -> Iterator[Any]:
        for chunk in body:
            self._check("part", path)
            yield chunk

    async def _parts_async(self, body: AsyncIterator[Any], path: str) -> AsyncIterator[Any]:
        async for chunk in body:
            self._check("part", path)
            yield chunk

    # -- DelegatingBackend's hooks: every operation checks for a due fault, then delegates --------
    def _route(self, operation: Operation, path: str | None) -> Backend:
        self._check(operation, path)
        return self.inner

    def _wrap_body(self, body: UploadBody, path: str) -> UploadBody:
        if isinstance(body, Iterator):
            return self._parts(body, path)
        if isinstance(body, AsyncIterator):
            return self._parts_async(body, path)
        return body

    # -- description ------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"fault-injecting wrapper of {self.inner.describe()}"

    def __repr__(self) -> str:
        return f"FaultInjectingBackend({self.inner!r})"


@contextmanager
def inject_faults(
    key: str, *, registry: BackendRegistry | None = None, seed: int | None = None
) -> Iterator[FaultInjectingBackend]:
    """Wrap the backend registered under `key` in a `FaultInjectingBackend` for a block.

    The wrapper stays registered under `key` against the code under test (through
    [`BackendRegistry.override`][sqlalchemy_obstore.registry.BackendRegistry.override]):
    when an application registers a backend under `key` inside the block, the wrapper
    keeps its faults and counters and wraps from then on a memory stand-in of that
    backend sharing the wrapped memory store (or, when it wrapped no memory backend, the
    backend registered). The registry is restored on exit.

    Args:
        key: The backend key whose backend to wrap.
        registry: The registry to patch (default: `storages`).
        seed: Seed for probability-based faults.

    Yields:
        The wrapper, registered under `key`.

    Raises:
        BackendNotFoundError: If nothing is registered under `key`.

    Example:
        >>> from sqlalchemy_obstore import FileObject
        >>> with memory_backends("uploads"), inject_faults("uploads") as flaky:
        ...     flaky.fail("put")
        ...     FileObject(filename="a.txt", content=b"x", backend="uploads").save()
        Traceback (most recent call last):
        ...
        sqlalchemy_obstore.testing.InjectedFault: injected fault: put #1 ...
    """
    target = registry if registry is not None else storages
    flaky = FaultInjectingBackend(target.get_backend(key), seed=seed)

    def follow(registered: Backend, current: Backend | None) -> Backend:
        inner = flaky.inner
        if registered is inner:  # what it wraps already
            return flaky
        in_memory = _memory_store(inner) is not None
        return flaky._wrap(memory_stand_in(registered, inner) if in_memory else registered)

    with target.override(flaky, stand_in=follow):
        yield flaky
