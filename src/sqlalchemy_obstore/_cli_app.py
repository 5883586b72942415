"""How the command line finds the application: `--app` targets, the app's startup, what it holds.

An `--app MODULE[:ATTR]` target gives the command line three things: the models (the
`StoredObject` columns), the backends, and the database. A module that registers its
backends when imported gives the first two by being imported. The applications the
docs teach register them in their startup instead (the Litestar plugin, a Starlette or
FastAPI lifespan) and hold the engine in their state, so a target may also be (or
build) an ASGI application: the command line then runs the application's startup through
the ASGI lifespan protocol, on the event loop every async step of the command shares,
and its shutdown at the end.

Nothing here prints or exits: failures are `AppLoadError`s the command line reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect as pyinspect
import os
import sys
import traceback
from collections.abc import Awaitable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from sqlalchemy import Engine, MetaData
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, DeclarativeBaseNoMeta, sessionmaker

from ._errors import redact
from ._registry import BackendRegistry

__all__ = (
    "AppLoadError",
    "Runtime",
    "Target",
    "app_kind",
    "find_engines",
    "find_registries",
    "app_metadata",
    "load_targets",
    "loaded_metadata",
)

_T = TypeVar("_T")

_APP_CLASSES = (("litestar", "Litestar"), ("starlette.applications", "Starlette"))
_FACTORY_NAMES = ("create_app",)
_APP_NAMES = ("app", "application")
_SHUTDOWN_TIMEOUT = 30.0


class AppLoadError(Exception):
    """An `--app` target could not be loaded or started; `unavailable` for I/O failures."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unavailable = unavailable


def _leaf(exc: BaseException) -> BaseException:
    """The first error inside (nested) exception groups: what the user needs to read."""
    while type(exc).__name__.endswith("ExceptionGroup"):
        inner = getattr(exc, "exceptions", None)
        if not inner:
            break
        exc = inner[0]
    return exc


def _line(exc: BaseException) -> str:
    exc = _leaf(exc)
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    return redact(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


# -- what a target is ---------------------------------------------------------------------------
def app_kind(value: object) -> str | None:
    """`"Litestar"`, `"Starlette"`, `"FastAPI"`... when `value` is such an application.

    Only frameworks already imported are checked: an application object cannot exist
    without its framework's module.
    """
    for module_name, class_name in _APP_CLASSES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(value, cls):
            return type(value).__name__
    return None


def _is_declarative_base(value: object) -> bool:
    return (
        pyinspect.isclass(value)
        and isinstance(getattr(value, "metadata", None), MetaData)
        and hasattr(value, "registry")
    )


@dataclass
class Target:
    """One `--app` target: its module, the models it names and the application it is."""

    spec: str
    module: ModuleType | None
    metadata: list[MetaData] = field(default_factory=list)
    app: Any = None
    origin: str = ""  # how the application was found ("create_app()", "app", ...)
    factory_module: ModuleType | None = None  # where the factory that built `app` lives

    @property
    def app_name(self) -> str:
        kind = app_kind(self.app) or type(self.app).__name__
        return f"the {kind} app {self.spec}" + (f" ({self.origin})" if self.origin else "")


def _import(spec: str, module_name: str, debug: bool) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does: the project's modules are importable
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(
                f"--app {spec!r}: no module named {exc.name!r} (run from the project "
                "directory, or set PYTHONPATH)."
            ) from exc
        raise AppLoadError(f"--app {spec!r}: importing it failed: {_line(exc)}") from exc
    except Exception as exc:
        if debug:
            traceback.print_exc()
        raise AppLoadError(f"--app {spec!r}: importing it failed: {_line(exc)}") from exc


def _call_factory(spec: str, factory: Any, debug: bool) -> Any:
    try:
        value = factory()
    except Exception as exc:
        if debug:
            traceback.print_exc()
        raise AppLoadError(
            f"--app {spec!r}: calling the factory {getattr(factory, '__name__', factory)}() "
            f"failed: {_line(exc)}"
        ) from exc
    if pyinspect.isawaitable(value):
        with contextlib.suppress(Exception):
            value.close()  # type: ignore[attr-defined]
        raise AppLoadError(
            f"--app {spec!r}: the factory is a coroutine function; name the application "
            "object or a plain function returning it."
        )
    return value


def _add_models(target: Target, value: Any, origin: str) -> bool:
    """Add a MetaData, declarative base or list of them; whether `value` was one."""
    if isinstance(value, MetaData):
        target.metadata.append(value)
        return True
    if _is_declarative_base(value):
        target.metadata.append(value.metadata)
        return True
    if isinstance(value, (list, tuple)) and value:
        if not all(isinstance(v, MetaData) or _is_declarative_base(v) for v in value):
            return False
        for item in value:
            _add_models(target, item, origin)
        return True
    return False


def _resolve_attribute(target: Target, module: ModuleType, attribute: str, debug: bool) -> None:
    spec = target.spec
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AppLoadError(f"--app {spec!r}: {module.__name__} has no {attribute!r}.") from None
    if _add_models(target, value, spec):
        return
    if app_kind(value) is not None:
        target.app = value
        return
    if pyinspect.isfunction(value) or pyinspect.ismethod(value):
        built = _call_factory(spec, value, debug)
        if app_kind(built) is None:
            raise AppLoadError(
                f"--app {spec!r}: {attribute}() returned a {type(built).__name__}; expected "
                "a Litestar, Starlette or FastAPI application."
            )
        target.app, target.origin = built, f"{attribute}()"
        target.factory_module = sys.modules.get(getattr(value, "__module__", ""))
        return
    raise AppLoadError(
        f"--app {spec!r} is a {type(value).__name__}; expected a MetaData, a declarative "
        "base or a list of them, a Litestar, Starlette or FastAPI application, or a "
        "function returning one."
    )


def _discover(target: Target, module: ModuleType, debug: bool) -> None:
    """A module without `:ATTR`: its models, and its application as Litestar's CLI finds it."""
    values = vars(module)
    for value in list(values.values()):
        if isinstance(value, MetaData) or _is_declarative_base(value):
            _add_models(target, value, target.spec)
    named = [(name, values.get(name)) for name in _APP_NAMES]
    for name, value in [*named, *values.items()]:
        if app_kind(value) is not None:
            target.app, target.origin = value, name
            return
    for name in _FACTORY_NAMES:
        factory = values.get(name)
        if pyinspect.isfunction(factory):
            built = _call_factory(target.spec, factory, debug)
            if app_kind(built) is not None:
                target.app, target.origin = built, f"{name}()"
                target.factory_module = sys.modules.get(getattr(factory, "__module__", ""))
            return


def load_targets(specs: Sequence[str], debug: bool = False) -> list[Target]:
    """Import every `--app` target and resolve what it names (models, an application).

    `MODULE:ATTR` names a `MetaData`, a declarative base or a list of them, an
    application (Litestar, Starlette, FastAPI), or a function building one (called
    without arguments, like Litestar's `--app module:create_app`). A bare `MODULE`
    contributes every declarative base and `MetaData` it holds, plus its application:
    `app` or `application`, any other application object, or else a `create_app()`
    factory.

    Raises:
        AppLoadError: If a module cannot be imported or a name does not resolve.
    """
    targets: list[Target] = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        if not module_name:
            raise AppLoadError(f"--app {spec!r}: expected MODULE or MODULE:ATTRIBUTE.")
        module = _import(spec, module_name, debug)
        target = Target(spec, module)
        if attribute:
            _resolve_attribute(target, module, attribute, debug)
        else:
            _discover(target, module, debug)
        targets.append(target)
    return targets


def _module_metadata(module: ModuleType | None) -> list[MetaData]:
    if module is None:
        return []
    return [
        value.metadata if _is_declarative_base(value) else value
        for value in list(vars(module).values())
        if isinstance(value, MetaData) or _is_declarative_base(value)
    ]


def app_metadata(target: Target) -> list[MetaData]:
    """The models an application names: its advanced-alchemy configs' `metadata`, else the
    declarative bases of the module that defines it (or its factory)."""
    found: list[MetaData] = []
    for plugin in getattr(getattr(target.app, "plugins", None), "init", ()) or ():
        configs = getattr(plugin, "config", None)
        for config in configs if isinstance(configs, (list, tuple)) else [configs]:
            metadata = getattr(config, "metadata", None)
            if isinstance(metadata, MetaData):
                found.append(metadata)
    if found:
        return found
    return _module_metadata(target.factory_module) or _module_metadata(target.module)


def loaded_metadata() -> list[MetaData]:
    """The `MetaData` of every declarative base loaded in this process.

    Used when the targets name an application but no models: importing the application
    imported its models.
    """
    found: dict[int, MetaData] = {}
    pending: list[type[Any]] = [DeclarativeBase, DeclarativeBaseNoMeta]
    seen: set[int] = set()
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            pending.append(sub)
            metadata = getattr(sub, "metadata", None)
            if isinstance(metadata, MetaData):
                found.setdefault(id(metadata), metadata)
    return list(found.values())


# -- the event loop and the application's lifespan ---------------------------------------------
class _Lifespan:
    """Drives one application's ASGI lifespan: `lifespan.startup`, later `lifespan.shutdown`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.started = False

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: Mapping[str, Any]) -> None:
        await self._outbox.put(dict(message))

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.target.app(scope, self._receive, self._send)
        finally:
            await self._outbox.put(None)

    def _failure(self, phase: str, message: Mapping[str, Any] | None) -> AppLoadError:
        error: BaseException | None = None
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
        if error is not None:
            leaf = _leaf(error)
            detail = _line(leaf)
            unavailable = isinstance(leaf, (DBAPIError, OSError))  # a database or a store
        else:
            text = str((message or {}).get("message") or "").strip().splitlines()
            detail, unavailable = redact(text[-1] if text else "no reason given"), False
        return AppLoadError(
            f"{phase} of {self.target.app_name} failed: {detail}", unavailable=unavailable
        )

    async def startup(self) -> None:
        self._task = asyncio.ensure_future(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        message = await self._outbox.get()
        if message is None:  # the application returned or raised before answering
            await asyncio.gather(self._task, return_exceptions=True)
            if self._task.cancelled() or self._task.exception() is None:
                return  # no lifespan support: nothing to start
            raise self._failure("the startup", None)
        if message.get("type") != "lifespan.startup.complete":
            with contextlib.suppress(BaseException):
                await self._task
            raise self._failure("the startup", message)
        self.started = True

    async def shutdown(self) -> str | None:
        """Run the shutdown; a warning line when it failed, else `None`."""
        task = self._task
        if task is None or task.done() or not self.started:
            return None
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            message = await asyncio.wait_for(self._outbox.get(), _SHUTDOWN_TIMEOUT)
        except asyncio.TimeoutError:
            task.cancel()
            return f"the shutdown of {self.target.app_name} did not finish within 30 s."
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(task), _SHUTDOWN_TIMEOUT)
        if message is not None and message.get("type") == "lifespan.shutdown.complete":
            return None
        if message is None and task.done() and not task.cancelled() and not task.exception():
            return None  # returned without a word: nothing failed
        return self._failure("the shutdown", message).message


class Runtime:
    """One event loop for a whole command, and the applications started on it.

    The application's lifespan, its engine and the command's async work must share one
    loop (an engine's connections belong to the loop that opened them), so async steps
    run through `run` instead of `asyncio.run`. Sync steps run between them, with the
    loop idle.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._apps: list[_Lifespan] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop

    def run(self, awaitable: Coroutine[Any, Any, _T] | Awaitable[_T]) -> _T:
        """Run `awaitable` to completion on the command's loop."""
        return self.loop.run_until_complete(awaitable)

    def start(self, target: Target) -> dict[str, Any]:
        """Run `target`'s application startup; returns its lifespan state.

        Raises:
            AppLoadError: If the startup fails.
        """
        lifespan = _Lifespan(target)
        self._apps.append(lifespan)
        self.run(lifespan.startup())
        return lifespan.state

    def close(self) -> list[str]:
        """Shut the applications down (last started first) and close the loop.

        Returns:
            Warnings about shutdowns that failed (they do not change the outcome).
        """
        warnings: list[str] = []
        if self._loop is None:
            return warnings
        loop = self._loop
        try:
            for lifespan in reversed(self._apps):
                try:
                    warning = loop.run_until_complete(lifespan.shutdown())
                except (Exception, KeyboardInterrupt) as exc:
                    warning = f"the shutdown of {lifespan.target.app_name} failed: {_line(exc)}"
                if warning:
                    warnings.append(warning)
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            self._loop = None
        return warnings


# -- what a started application holds -----------------------------------------------------------
def _state_items(app: Any) -> Iterator[tuple[str, Any]]:
    state = getattr(app, "state", None)
    if isinstance(state, Mapping):  # Litestar's State
        yield from ((f"app.state[{k!r}]", v) for k, v in state.items())
    else:  # Starlette's State keeps its values in a private dict
        values = getattr(state, "_state", None)
        if isinstance(values, dict):
            yield from ((f"app.state.{k}", v) for k, v in values.items())


def _places(target: Target, lifespan_state: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, value) for everything a target holds: app state, lifespan state, globals."""
    if target.app is not None:
        yield from _state_items(target.app)
        yield from ((f"the lifespan state[{k!r}]", v) for k, v in lifespan_state.items())
        for plugin in getattr(getattr(target.app, "plugins", None), "init", ()) or ():
            yield (f"the {type(plugin).__name__}", plugin)
    if target.module is not None:
        for name, value in list(vars(target.module).items()):
            if not name.startswith("__"):
                yield (f"{target.module.__name__}.{name}", value)


def _engine_of(value: Any) -> Engine | AsyncEngine | None:
    if isinstance(value, (Engine, AsyncEngine)):
        return value
    if isinstance(value, (sessionmaker, async_sessionmaker)):
        bind = value.kw.get("bind")
        if isinstance(bind, (Engine, AsyncEngine)):
            return bind
    return None


def find_engines(
    targets: Iterable[tuple[Target, Mapping[str, Any]]],
) -> list[tuple[str, Engine | AsyncEngine]]:
    """The engines the targets hold, with where each was found; one entry per engine.

    Looked for in the application's state (`app.state`: advanced-alchemy's
    `SQLAlchemyPlugin` keeps its engine there), its lifespan state, and the target
    module's globals: an `Engine`, an `AsyncEngine`, or a (async) `sessionmaker` bound
    to one.
    """
    found: dict[int, tuple[str, Engine | AsyncEngine]] = {}
    for target, lifespan_state in targets:
        for where, value in _places(target, lifespan_state):
            engine = _engine_of(value)
            if engine is not None:
                found.setdefault(id(engine), (where, engine))
    return list(found.values())


def find_registries(
    targets: Iterable[tuple[Target, Mapping[str, Any]]],
) -> list[BackendRegistry]:
    """The backend registries the applications use besides the default one.

    A plugin's or extension's configured `registry` (`ObstorePlugin`, the Starlette
    `StorageExtension` kept in `app.state`), and registries kept in the app's state.
    """
    found: dict[int, BackendRegistry] = {}
    for target, lifespan_state in targets:
        if target.app is None:
            continue
        candidates: list[Any] = [value for _, value in _state_items(target.app)]
        candidates += list(lifespan_state.values())
        candidates += list(getattr(getattr(target.app, "plugins", None), "init", ()) or ())
        for value in candidates:
            config = getattr(value, "config", None)
            owned = (getattr(value, "registry", None), getattr(config, "registry", None))
            for registry in (value, *owned):
                if isinstance(registry, BackendRegistry):
                    found.setdefault(id(registry), registry)
    return list(found.values())
