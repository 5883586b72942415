"""OpenTelemetry spans and counters: the one module that imports `opentelemetry`.

With the `telemetry` extra installed (`opentelemetry-api`), the library reports:

- a span per storage operation of an
  [`ObstoreBackend`][sqlalchemy_obstore.backends.ObstoreBackend] (`upload`, `delete`,
  `sign`), made by [`traced`][sqlalchemy_obstore._telemetry.traced] around its sync and
  async methods alike, and one per run of the garbage collector, the verification and
  the migration ([`run_span`][sqlalchemy_obstore._telemetry.run_span]);
- counters of objects left in storage by the session lifecycle and of objects the
  garbage collector deleted ([`count_orphans`][sqlalchemy_obstore._telemetry.count_orphans],
  [`count_collected`][sqlalchemy_obstore._telemetry.count_collected]).

Without the package every helper here does nothing and `traced` leaves the methods as
they are. With the API but no SDK (nothing would record), a backend operation pays one
call layer and one attribute read (about 0.15 µs): the tracer is looked up only once a
tracer provider exists. Spans never carry credentials, signed URLs or message text that
could hold them; object paths (user data) only with
`configure_telemetry(record_paths=True)`.
"""

from __future__ import annotations

import functools
import inspect
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, TypeAlias, TypeVar

from typing_extensions import ParamSpec

from ._errors import redact
from ._version import __version__

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # the `telemetry` extra is not installed: every helper does nothing
    _metrics = None  # type: ignore[assignment]
    _trace = None  # type: ignore[assignment]

__all__ = (
    "ATTRIBUTES",
    "INSTRUMENTATION_NAME",
    "METRICS",
    "SPAN_NAMES",
    "Describe",
    "Facts",
    "RunSpan",
    "Value",
    "available",
    "configure_telemetry",
    "count_collected",
    "count_orphans",
    "run_span",
    "traced",
)

_P = ParamSpec("_P")
_R = TypeVar("_R")

INSTRUMENTATION_NAME = "sqlalchemy_obstore"
"""The name of the library's tracer and meter (the instrumentation scope)."""

Operation = Literal["upload", "delete", "sign", "gc", "verify", "migrate"]

SPAN_NAMES: dict[str, str] = {
    operation: f"sqlalchemy_obstore.{operation}"
    for operation in ("upload", "delete", "sign", "gc", "verify", "migrate")
}
"""The span name of each operation."""

BACKEND = "sqlalchemy_obstore.backend"
STORE = "sqlalchemy_obstore.store"
OPERATION = "sqlalchemy_obstore.operation"
OUTCOME = "sqlalchemy_obstore.outcome"
SIZE = "sqlalchemy_obstore.object.size"
COUNT = "sqlalchemy_obstore.object.count"
PATH = "sqlalchemy_obstore.object.path"
METHOD = "sqlalchemy_obstore.sign.method"
EXPIRES_IN = "sqlalchemy_obstore.sign.expires_in"
ERROR_TYPE = "error.type"  # (OpenTelemetry's semantic convention)
REASON = "sqlalchemy_obstore.orphan.reason"

ATTRIBUTES = (BACKEND, STORE, OPERATION, OUTCOME, SIZE, COUNT, PATH, METHOD, EXPIRES_IN)
"""The attributes of backend operation spans (`error.type` besides, on failure)."""

ORPHANED = "sqlalchemy_obstore.orphaned_objects"
COLLECTED = "sqlalchemy_obstore.gc.deleted_objects"
FREED = "sqlalchemy_obstore.gc.freed_bytes"
METRICS = (ORPHANED, COLLECTED, FREED)
"""The names of the library's counters."""

Value: TypeAlias = "str | bool | int | float | Sequence[str]"
"""A span attribute's value."""
Facts: TypeAlias = "Mapping[str, Value]"
"""Span attributes."""
Describe = Callable[..., "tuple[Facts, str | None]"]
"""What a traced method's call is about: its attributes, and its object path if one."""


class _Settings:
    """What `configure_telemetry` set, and what was looked up from it."""

    __slots__ = ("counters", "meter_provider", "record_paths", "tracer")

    def __init__(self) -> None:
        self.meter_provider: Any = None
        self.record_paths = False
        self.tracer: Any = None  # looked up once a provider exists
        self.counters: dict[str, Any] | None = None


_settings = _Settings()
_inside: ContextVar[bool] = ContextVar("sqlalchemy_obstore_traced", default=False)
"""Set while a traced operation runs: an operation built on another makes one span."""


def available() -> bool:
    """Whether `opentelemetry-api` is installed."""
    return _trace is not None


def configure_telemetry(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    record_paths: bool = False,
) -> None:
    """Choose where the library's spans and counters go, and whether paths are recorded.

    Optional: by default the library uses OpenTelemetry's global providers (those set
    with `trace.set_tracer_provider` / `metrics.set_meter_provider`, or by the
    `opentelemetry-instrument` agent), as soon as they are set.

    Args:
        tracer_provider: A `TracerProvider` to use instead of the global one.
        meter_provider: A `MeterProvider` to use instead of the global one.
        record_paths: Record object paths (`sqlalchemy_obstore.object.path`) and the
            (redacted) messages and stack traces of errors. Off by default: paths and
            the messages that name them are your users' data (file names, user ids).

    Raises:
        MissingDependencyError: If a provider is given but `opentelemetry-api` is not
            installed.

    Example:
        >>> from sqlalchemy_obstore.telemetry import configure_telemetry
        >>> configure_telemetry(record_paths=False)  # the defaults: global providers
    """
    if _trace is None and (tracer_provider is not None or meter_provider is not None):
        from ._errors import MissingDependencyError

        raise MissingDependencyError("opentelemetry-api", "telemetry")
    global _source
    _source = _default_source if tracer_provider is None else _Given(tracer_provider)
    _settings.meter_provider = meter_provider
    _settings.record_paths = bool(record_paths)
    _settings.tracer = None
    _settings.counters = None


class _NoProvider:
    """Stands for OpenTelemetry's trace module where there is none."""

    _TRACER_PROVIDER: Any = None


class _PublicLookup:
    """The global provider through the public call (an API without the module attribute)."""

    @property
    def _TRACER_PROVIDER(self) -> Any:  # (named as the attribute it stands for)
        provider = _trace.get_tracer_provider()
        return None if isinstance(provider, _trace.ProxyTracerProvider) else provider


class _Given:
    """A tracer provider given to `configure_telemetry`."""

    def __init__(self, provider: Any) -> None:
        self._TRACER_PROVIDER = provider


# Where every traced call reads the tracer provider: `_source._TRACER_PROVIDER`, one
# attribute read, `None` while nothing could record. By default that is the module
# attribute OpenTelemetry's `set_tracer_provider` sets (it has existed since
# OpenTelemetry 1.0): the public `get_tracer_provider()` reads the environment on each
# call until a provider is set, close to a microsecond (a tenth of a small save), so it
# is used only where the attribute is missing, or when the environment names a
# provider to load (`OTEL_PYTHON_TRACER_PROVIDER`).
_default_source: Any
if _trace is None:
    _default_source = _NoProvider()
elif hasattr(_trace, "_TRACER_PROVIDER") and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ:
    _default_source = _trace
else:
    _default_source = _PublicLookup()
_source: Any = _default_source


def _tracer() -> Any:
    """The tracer, once a tracer provider exists; `None` while nothing could record."""
    tracer = _settings.tracer
    if tracer is not None:
        return tracer
    provider = _source._TRACER_PROVIDER
    if provider is None:
        return None
    _settings.tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__)
    return _settings.tracer


# -- backend operations ----------------------------------------------------------------------------
def traced(
    operation: Operation, describe: Describe
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Make a span of each call of a backend method, sync or async (the same decorator).

    `describe` receives the call's arguments (the backend first) and returns its
    attributes and object path. A call made while another traced call runs (a method
    built on another one) makes no span of its own. While no tracer provider exists the
    method is called straight away (one attribute read); without OpenTelemetry the
    method is left as it is.
    """
    name = SPAN_NAMES[operation]

    def decorate(method: Callable[_P, _R]) -> Callable[_P, _R]:
        if _trace is None:
            return method  # (no OpenTelemetry: not even a call more)
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def traced_async(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                if _source._TRACER_PROVIDER is None:
                    return await method(*args, **kwargs)  # (nothing could record)
                tracer = _tracer()
                if tracer is None or _inside.get():
                    return await method(*args, **kwargs)
                span, token = _begin(tracer, name, operation, describe, args, kwargs)
                try:
                    result = await method(*args, **kwargs)
                except BaseException as exc:
                    _fail(span, exc)
                    raise
                finally:
                    _inside.reset(token)
                    span.end()
                return result

            return traced_async  # type: ignore[return-value]

        @functools.wraps(method)
        def traced_sync(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if _source._TRACER_PROVIDER is None:
                return method(*args, **kwargs)  # (nothing could record)
            tracer = _tracer()
            if tracer is None or _inside.get():
                return method(*args, **kwargs)
            span, token = _begin(tracer, name, operation, describe, args, kwargs)
            try:
                return method(*args, **kwargs)
            except BaseException as exc:
                _fail(span, exc)
                raise
            finally:
                _inside.reset(token)
                span.end()

        return traced_sync

    return decorate


def _begin(
    tracer: Any,
    name: str,
    operation: str,
    describe: Describe,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> tuple[Any, Any]:
    """Start the span of one call (not made current: nothing below it makes spans)."""
    backend = args[0]
    kind = _trace.SpanKind.INTERNAL if operation == "sign" else _trace.SpanKind.CLIENT
    span = tracer.start_span(name, kind=kind)
    if span.is_recording():
        facts, path = describe(*args, **kwargs)
        span.set_attributes(
            {
                OPERATION: operation,
                BACKEND: backend.key,
                STORE: getattr(backend, "kind", type(backend).__name__),
                OUTCOME: "success",  # (replaced on failure)
                **facts,
            }
        )
        if path is not None and _settings.record_paths:
            span.set_attribute(PATH, path)
    return span, _inside.set(True)


def _fail(span: Any, exc: BaseException) -> None:
    """Mark `span` failed by `exc`: its type always, its message only with paths on."""
    if not span.is_recording():
        return
    error_type = _error_type(exc)
    span.set_attribute(OUTCOME, "failure")
    span.set_attribute(ERROR_TYPE, error_type)
    if _settings.record_paths:
        # Error messages name paths; they never hold secrets (redacted once more here,
        # for exceptions that are not the library's own).
        description = redact(str(exc))
        span.record_exception(
            exc,
            attributes={
                "exception.message": description,
                "exception.stacktrace": redact("".join(traceback.format_exception(exc))),
            },
        )
    else:
        description = error_type
        span.add_event("exception", {"exception.type": error_type})
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, description))


def _error_type(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


# -- runs: garbage collection, verification, migration ---------------------------------------------
class RunSpan:
    """The span of one run, or nothing (no tracer provider, or no `opentelemetry`)."""

    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def record(self, facts: Facts, *, complete: bool = True) -> None:
        """Add what the run found; `complete=False`: it ended with errors (`partial`)."""
        span = self._span
        if span is not None and span.is_recording():
            span.set_attributes(facts)
            if not complete:
                span.set_attribute(OUTCOME, "partial")


@contextmanager
def run_span(operation: Operation, facts: Facts) -> Iterator[RunSpan]:
    """A span around one run (made current: the backend operations it does nest in it)."""
    tracer = _tracer()
    if tracer is None:
        yield RunSpan(None)
        return
    with tracer.start_as_current_span(
        SPAN_NAMES[operation],
        kind=_trace.SpanKind.INTERNAL,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if span.is_recording():
            span.set_attributes({OPERATION: operation, OUTCOME: "success", **facts})
        try:
            yield RunSpan(span)
        except BaseException as exc:
            _fail(span, exc)
            raise


# -- counters --------------------------------------------------------------------------------------
def _counters() -> dict[str, Any] | None:
    counters = _settings.counters
    if counters is not None or _metrics is None:
        return counters
    provider = _settings.meter_provider
    # The global meter: a stand-in until a provider is set, then the real one.
    meter = (
        _metrics.get_meter(INSTRUMENTATION_NAME, __version__)
        if provider is None
        else provider.get_meter(INSTRUMENTATION_NAME, __version__)
    )
    counters = _settings.counters = {
        ORPHANED: meter.create_counter(
            ORPHANED,
            unit="{object}",
            description="Objects the session lifecycle left in storage (a delete that "
            "failed, or a commit of unknown outcome); the garbage collector removes them.",
        ),
        COLLECTED: meter.create_counter(
            COLLECTED,
            unit="{object}",
            description="Orphaned objects the garbage collector deleted.",
        ),
        FREED: meter.create_counter(
            FREED, unit="By", description="Bytes of the orphans the garbage collector deleted."
        ),
    }
    return counters


def count_orphans(backend: str, reason: str, objects: int) -> None:
    """Count `objects` left in `backend` by the session lifecycle, and why."""
    counters = _counters()
    if counters is not None and objects:
        counters[ORPHANED].add(objects, {BACKEND: backend, REASON: reason})


def count_collected(backend: str, objects: int, size: int) -> None:
    """Count `objects` (`size` bytes in all) the garbage collector deleted from `backend`."""
    counters = _counters()
    if counters is not None and objects:
        attributes = {BACKEND: backend}
        counters[COLLECTED].add(objects, attributes)
        counters[FREED].add(size, attributes)
