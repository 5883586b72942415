"""The pytest plugin: fixtures for testing an application that uses sqlalchemy-obstore.

Installed with the package and loaded by pytest automatically (a `pytest11` entry point
named after this module, as anyio and hypothesis ship theirs). It adds only fixtures
whose names start with `obstore_`, one marker and three ini options; nothing runs unless
a test asks for one of its fixtures. Turn it off with
`-p no:sqlalchemy_obstore.pytest_plugin`; where plugin autoloading is disabled
(`PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`), load it with `-p sqlalchemy_obstore.pytest_plugin`
or `pytest_plugins = ["sqlalchemy_obstore.pytest_plugin"]` (both are harmless when it is
already loaded).

Storage:

- `obstore_registry`: the registry your code uses (`storages`, or the one named by the
  `obstore_registry` ini option), isolated for the test. A fresh memory backend is
  registered under each configured key, and every backend registered before or during
  the test (a module-level `register_backend`, a Litestar plugin or a lifespan starting
  in a test client) is replaced by a memory stand-in with its settings (prefix, key
  layout, upload policy): no test reaches real storage through the registry. Restored
  afterwards.
- `obstore_memory_backends` / `obstore_memory_backend`: those memory backends, by key /
  the first one.
- `obstore_faults`: a `FaultInjectingBackend` in front of the first key's backend.
- `obstore_file_factory`: a `FileFactory` seeded with the test's id.

The keys come from the `obstore_backends` marker, else the `obstore_backends` ini option,
else every `StoredObject(backend=...)` key in `obstore_metadata`.

Database:

- `obstore_metadata`: your models' metadata, from the `obstore_metadata` ini option
  (`package.models:Base`); override the fixture to provide it otherwise.
- `obstore_engine` / `obstore_session`: a SQLite database file (in `tmp_path`) with the
  tables created, and a `Session` on it.
- `obstore_async_engine` / `obstore_async_session`: the same with `aiosqlite`.
- `obstore_session_options`: keyword arguments of both sessions (default
  `{"expire_on_commit": False}`).

The async fixtures run under pytest-asyncio in auto and strict mode, and under anyio's
pytest plugin in tests marked `anyio` (also when pytest-asyncio is installed). The
module itself imports neither pytest-asyncio nor an async database driver.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from .backends import ObstoreBackend
from .errors import MissingDependencyError
from .registry import BackendRegistry, storages
from .testing import FaultInjectingBackend, FileFactory, inject_faults, memory_backends

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

try:  # optional: the async fixtures are marked for it when it is installed
    import pytest_asyncio as _pytest_asyncio
except ImportError:  # pragma: no cover - exercised where pytest-asyncio is absent
    _pytest_asyncio = None  # type: ignore[assignment]
pytest_asyncio: ModuleType | None = _pytest_asyncio

__all__ = (
    "obstore_async_engine",
    "obstore_async_session",
    "obstore_backend_keys",
    "obstore_engine",
    "obstore_faults",
    "obstore_file_factory",
    "obstore_memory_backend",
    "obstore_memory_backends",
    "obstore_metadata",
    "obstore_registry",
    "obstore_session",
    "obstore_session_options",
)

_MARKER = "obstore_backends"
_INI_BACKENDS = "obstore_backends"
_INI_METADATA = "obstore_metadata"
_INI_REGISTRY = "obstore_registry"


# -- configuration ---------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's ini options."""
    parser.addini(
        _INI_BACKENDS,
        type="args",
        default=[],
        help="sqlalchemy-obstore: backend keys that get a fresh memory backend in each test "
        "using obstore_registry (space-separated)",
    )
    parser.addini(
        _INI_METADATA,
        type="string",
        default="",
        help="sqlalchemy-obstore: your models' DeclarativeBase or MetaData as "
        "'package.module:name'; the obstore engines create its tables",
    )
    parser.addini(
        _INI_REGISTRY,
        type="string",
        default="",
        help="sqlalchemy-obstore: the BackendRegistry your application uses, as "
        "'package.module:name' (default: sqlalchemy_obstore.storages)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the `obstore_backends` marker."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*keys): backend keys that get a fresh memory backend in this test "
        "(sqlalchemy-obstore's obstore_registry fixture); overrides the ini option",
    )


def _import_object(spec: str, option: str) -> Any:
    """Import `package.module:name` (or `package.module.name`)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise pytest.UsageError(
            f"The {option} ini option takes 'package.module:name', got {spec!r}."
        )
    module = importlib.import_module(module_name)
    try:
        value = module
        for part in attribute.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise pytest.UsageError(
            f"The {option} ini option names {spec!r}, but {module_name!r} has no {attribute!r}."
        ) from None
    return value


def _metadata_of(value: Any, origin: str) -> MetaData:
    from sqlalchemy import MetaData

    metadata = value if isinstance(value, MetaData) else getattr(value, "metadata", None)
    if not isinstance(metadata, MetaData):
        raise pytest.UsageError(
            f"{origin} must be a DeclarativeBase subclass or a MetaData, "
            f"not {type(value).__name__}."
        )
    return metadata


def _configured_registry(config: pytest.Config) -> BackendRegistry:
    spec = str(config.getini(_INI_REGISTRY)).strip()
    if not spec:
        return storages
    registry = _import_object(spec, _INI_REGISTRY)
    if not isinstance(registry, BackendRegistry):
        raise pytest.UsageError(
            f"The {_INI_REGISTRY} ini option must name a BackendRegistry, "
            f"not {type(registry).__name__}."
        )
    return registry


# -- storage ---------------------------------------------------------------------------------------
@pytest.fixture
def obstore_metadata(pytestconfig: pytest.Config) -> MetaData | None:
    """Your models' `MetaData`, from the `obstore_metadata` ini option; `None` without one.

    The engine fixtures create its tables, and `obstore_backend_keys` takes the backend
    keys of its `StoredObject` columns when no key is configured. Override this fixture
    to provide the metadata another way:

        @pytest.fixture
        def obstore_metadata():
            return Base.metadata
    """
    spec = str(pytestconfig.getini(_INI_METADATA)).strip()
    if not spec:
        return None
    return _metadata_of(_import_object(spec, _INI_METADATA), f"The {_INI_METADATA} ini option")


@pytest.fixture
def obstore_backend_keys(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config
) -> tuple[str, ...]:
    """The backend keys that get a fresh memory backend in this test.

    From the closest `@pytest.mark.obstore_backends("uploads", ...)` marker, else the
    `obstore_backends` ini option, else the keys of every `StoredObject` column in
    `obstore_metadata` (sorted).
    """
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None:
        keys = tuple(marker.args)
        if not keys or not all(isinstance(key, str) and key for key in keys):
            raise pytest.UsageError(
                f"@pytest.mark.{_MARKER} takes backend keys (non-empty strings), "
                f"got {marker.args!r}."
            )
        return keys
    configured = [str(key) for key in pytestconfig.getini(_INI_BACKENDS)]
    if configured:
        return tuple(dict.fromkeys(configured))
    metadata: MetaData | None = request.getfixturevalue("obstore_metadata")
    if metadata is None:
        return ()
    from .types import StoredObject

    # (a column on the registry's default backend counts when a default is chosen)
    found = {
        column.type.resolved_backend
        for table in metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, StoredObject)
    }
    return tuple(sorted(key for key in found if key is not None))


@pytest.fixture
def obstore_memory_backends(
    obstore_backend_keys: tuple[str, ...], pytestconfig: pytest.Config
) -> Iterator[Mapping[str, ObstoreBackend]]:
    """A fresh memory backend per key of `obstore_backend_keys`, registered for the test.

    The registry (`storages`, or the one the `obstore_registry` ini option names) is
    isolated as [`memory_backends(..., sticky=True)`][sqlalchemy_obstore.testing.memory_backends]
    does it: every backend registered before or during the test is replaced by a memory
    stand-in with its settings; under these keys the stand-in shares the memory store
    of the backend yielded here, so what the code under test stores is visible in it.
    Restored after the test.
    """
    registry = _configured_registry(pytestconfig)
    with memory_backends(*obstore_backend_keys, registry=registry, sticky=True) as backends:
        yield backends


@pytest.fixture
def obstore_registry(
    obstore_memory_backends: Mapping[str, ObstoreBackend], pytestconfig: pytest.Config
) -> BackendRegistry:
    """The backend registry your code uses, isolated for this test.

    Every configured key resolves to a fresh memory backend (`obstore_memory_backends`),
    and whatever the code under test registers (an application starting in a test
    client, a lifespan) is replaced by a memory stand-in with the same settings; its
    [`displaced`][sqlalchemy_obstore.registry.BackendRegistry.displaced] mapping shows
    what was registered. Everything is restored after the test.
    """
    return _configured_registry(pytestconfig)


@pytest.fixture
def obstore_memory_backend(
    obstore_memory_backends: Mapping[str, ObstoreBackend], obstore_backend_keys: tuple[str, ...]
) -> ObstoreBackend:
    """The memory backend of the first key of `obstore_backend_keys`."""
    if not obstore_backend_keys:
        raise pytest.UsageError(
            "obstore_memory_backend needs a backend key: mark the test "
            f"@pytest.mark.{_MARKER}('uploads'), set '{_INI_BACKENDS} = uploads' in the "
            f"pytest configuration, or give the {_INI_METADATA} ini option."
        )
    return obstore_memory_backends[obstore_backend_keys[0]]


@pytest.fixture
def obstore_faults(
    obstore_registry: BackendRegistry,
    obstore_memory_backend: ObstoreBackend,
    obstore_backend_keys: tuple[str, ...],
) -> Iterator[FaultInjectingBackend]:
    """A `FaultInjectingBackend` registered in front of the first key's memory backend.

    Configure faults with `obstore_faults.fail("put", nth=2)`; it keeps them when the
    application registers its own backend under the key (see
    [`inject_faults`][sqlalchemy_obstore.testing.inject_faults]). For another key, use
    `inject_faults(key)` in the test.
    """
    with inject_faults(obstore_backend_keys[0], registry=obstore_registry) as flaky:
        yield flaky


@pytest.fixture
def obstore_file_factory(request: pytest.FixtureRequest) -> FileFactory:
    """A [`FileFactory`][sqlalchemy_obstore.testing.FileFactory] seeded with the test's id.

    `obstore_file_factory()` returns the next pending `FileObject` (`file-1.bin`,
    `file-2.bin`, ... of 1 KiB); the same test gets the same files on every run.
    """
    return FileFactory(seed=request.node.nodeid)


# -- databases -------------------------------------------------------------------------------------
@pytest.fixture
def obstore_session_options() -> dict[str, Any]:
    """Keyword arguments for the `Session` and `AsyncSession` fixtures.

    Default `{"expire_on_commit": False}`: attributes stay loaded after a commit, as
    async code needs. Override the fixture to change them.
    """
    return {"expire_on_commit": False}


def _sqlite_events(engine: Engine) -> None:
    """SQLite closer to a server database: real SAVEPOINTs (SQLAlchemy's recipe), enforced
    foreign keys, and WAL, so a test's open session does not block the app's writes."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


_SQLITE_ARGS = {"timeout": 30}


@pytest.fixture
def obstore_engine(tmp_path: Path, obstore_metadata: MetaData | None) -> Iterator[Engine]:
    """A SQLite engine on a file in `tmp_path`, with `obstore_metadata`'s tables created.

    SAVEPOINTs (`session.begin_nested()`) and foreign keys work as on a server database,
    and the file is in WAL mode: a test's session reading the database does not block
    the application under test from writing (it sees the new rows in its next
    transaction).
    """
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'obstore.sqlite'}", connect_args=_SQLITE_ARGS)
    _sqlite_events(engine)
    if obstore_metadata is not None:
        obstore_metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def obstore_session(
    obstore_engine: Engine,
    obstore_registry: BackendRegistry,
    obstore_session_options: dict[str, Any],
) -> Iterator[Session]:
    """A `Session` on `obstore_engine`, with storage isolated by `obstore_registry`."""
    from sqlalchemy.orm import Session

    with Session(obstore_engine, **obstore_session_options) as session:
        yield session


# -- async fixtures --------------------------------------------------------------------------------
_ASYNC_IMPLEMENTATIONS: dict[Callable[..., Any], Callable[..., Any]] = {}
"""Registered async fixture → its unmarked implementation (what anyio gets to run)."""


def _async_fixture(implementation: Callable[..., Any], name: str) -> Any:
    """Register an async generator fixture that pytest-asyncio (auto or strict) runs.

    With pytest-asyncio installed the registered function is marked for it, as
    `@pytest_asyncio.fixture` does; in a test that uses anyio, `pytest_fixture_setup`
    below hands anyio the unmarked implementation instead, so the fixture runs on the
    test's event loop either way.
    """
    if pytest_asyncio is None:
        return pytest.fixture(implementation, name=name)

    @functools.wraps(implementation)
    async def registered(**kwargs: Any) -> AsyncIterator[Any]:
        async for value in implementation(**kwargs):
            yield value

    _ASYNC_IMPLEMENTATIONS[registered] = implementation
    return pytest_asyncio.fixture(registered, name=name)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # old-style: works with every pytest
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Iterator[None]:
    """Let anyio run this plugin's async fixtures in tests that use anyio."""
    registered = fixturedef.func
    implementation = None
    candidate = registered  # pytest-asyncio < 1.0 wraps it at collection (functools.wraps)
    while candidate is not None and implementation is None:
        implementation = _ASYNC_IMPLEMENTATIONS.get(candidate)
        candidate = getattr(candidate, "__wrapped__", None)
    if implementation is None or "anyio_backend" not in request.fixturenames:
        yield
        return
    fixturedef.func = _own_arguments_only(implementation)
    try:
        yield
    finally:
        fixturedef.func = registered


def _own_arguments_only(implementation: Callable[..., Any]) -> Callable[..., Any]:
    """`implementation`, ignoring arguments it does not take (pytest-asyncio < 1.0 adds
    `event_loop` to the fixture's arguments at collection)."""
    own = set(inspect.signature(implementation).parameters)

    async def run(**kwargs: Any) -> AsyncIterator[Any]:
        async for value in implementation(**{k: v for k, v in kwargs.items() if k in own}):
            yield value

    return run


async def _obstore_async_engine(
    tmp_path: Path, obstore_metadata: MetaData | None
) -> AsyncIterator[AsyncEngine]:
    """An async SQLite engine (aiosqlite) on a file in `tmp_path`, with tables created.

    Like `obstore_engine`, on its own database file. Needs `aiosqlite`
    (`pip install 'sqlalchemy-obstore[sqlite]'`).
    """
    try:
        importlib.import_module("aiosqlite")
    except ImportError:
        raise MissingDependencyError("aiosqlite", "sqlite") from None
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'obstore-async.sqlite'}", connect_args=_SQLITE_ARGS
    )
    _sqlite_events(engine.sync_engine)
    try:
        if obstore_metadata is not None:
            async with engine.begin() as conn:
                await conn.run_sync(obstore_metadata.create_all)
        yield engine
    finally:
        await engine.dispose()


async def _obstore_async_session(
    obstore_async_engine: AsyncEngine,
    obstore_registry: BackendRegistry,
    obstore_session_options: dict[str, Any],
) -> AsyncIterator[AsyncSession]:
    """An `AsyncSession` on `obstore_async_engine`, storage isolated by `obstore_registry`."""
    from sqlalchemy.ext.asyncio import AsyncSession

    async with AsyncSession(obstore_async_engine, **obstore_session_options) as session:
        yield session


obstore_async_engine = _async_fixture(_obstore_async_engine, "obstore_async_engine")
"""An async SQLite engine (aiosqlite) on a file in `tmp_path`, with tables created.

Like `obstore_engine`, on its own database file. Needs `aiosqlite`
(`pip install 'sqlalchemy-obstore[sqlite]'`).
"""

obstore_async_session = _async_fixture(_obstore_async_session, "obstore_async_session")
"""An `AsyncSession` on `obstore_async_engine`, storage isolated by `obstore_registry`."""
