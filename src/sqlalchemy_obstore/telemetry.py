"""Observability: OpenTelemetry spans and counters (the `telemetry` extra).

Install `sqlalchemy-obstore[telemetry]` (it adds `opentelemetry-api`) and configure an
OpenTelemetry SDK in the application as usual; the library then reports to the global
tracer and meter providers, named `sqlalchemy_obstore`:

- `sqlalchemy_obstore.upload`, `sqlalchemy_obstore.delete`, `sqlalchemy_obstore.sign`:
  one span per storage operation of an `ObstoreBackend` (a save, a flush's uploads, a
  delete after a commit, a migration's copies, ...; a cached signed URL makes none),
  with the backend key, the kind of store, the operation, the outcome, and the size
  (uploads, when known beforehand) or the number of objects;
- `sqlalchemy_obstore.gc`, `sqlalchemy_obstore.verify`, `sqlalchemy_obstore.migrate`:
  one span per run, with what its report counts; the storage operations of the run
  are its children.

Counters: `sqlalchemy_obstore.orphaned_objects` (objects the session lifecycle left
in storage, by backend and `sqlalchemy_obstore.orphan.reason`),
`sqlalchemy_obstore.gc.deleted_objects` and `sqlalchemy_obstore.gc.freed_bytes`.

Never recorded: credentials, signed URLs, query strings, file contents, metadata. Object
paths and error messages (which name paths) only with
`configure_telemetry(record_paths=True)`. Without `opentelemetry-api` nothing is
imported and nothing is done. See the how-to guide *Observability with OpenTelemetry*.

Example:
    >>> from sqlalchemy_obstore.telemetry import SPAN_NAMES, configure_telemetry
    >>> SPAN_NAMES["upload"]
    'sqlalchemy_obstore.upload'
    >>> configure_telemetry()  # the defaults: global providers, no paths
"""

from __future__ import annotations

from ._telemetry import (
    ATTRIBUTES,
    INSTRUMENTATION_NAME,
    METRICS,
    SPAN_NAMES,
    available,
    configure_telemetry,
)

__all__ = (
    "ATTRIBUTES",
    "INSTRUMENTATION_NAME",
    "METRICS",
    "SPAN_NAMES",
    "available",
    "configure_telemetry",
)
