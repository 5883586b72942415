"""The backend registry: resolves the backend key stored in a column to a backend.

[`storages`][sqlalchemy_obstore.storages] is the default, process-wide registry that
columns and file objects use unless told otherwise. Applications register their backends
once at start-up (in their lifespan); tests swap backends in and out with
[`BackendRegistry.temporary`][sqlalchemy_obstore.registry.BackendRegistry.temporary], and keep
test backends registered against an application that registers its own at start-up with
[`BackendRegistry.override`][sqlalchemy_obstore.registry.BackendRegistry.override]. Code that
needs isolation (multi-tenant apps, parallel tests) can create its own
[`BackendRegistry`][sqlalchemy_obstore.BackendRegistry] and pass it to `StoredObject`.

Reads are lock-free (a lookup reads an immutable snapshot); writes take a lock and
publish a new snapshot, so the registry is safe to use from several threads.

A registry may name a **default backend** (`register_backend(..., default=True)` or
[`set_default`][sqlalchemy_obstore.registry.BackendRegistry.set_default]): a
`StoredObject()` column or a `FileObject` that names no backend uses it, and records its
key. There is no implicit default (not the first backend registered): a file that names
no backend in a registry without a default raises
[`NoDefaultBackendError`][sqlalchemy_obstore.errors.NoDefaultBackendError].

A registry also tells the application about objects the session lifecycle left behind
in its backends (a delete that failed after a commit or a rollback, a commit whose
outcome is unknown): see
[`BackendRegistry.add_orphan_listener`][sqlalchemy_obstore.registry.BackendRegistry.add_orphan_listener].
"""

# In the implementation's order, which the reference page follows.
from ._registry import (  # noqa: I001
    OrphanReason,
    OrphanReport,
    OrphanListener,
    StandIn,
    BackendRegistry,
    report_orphans,
    storages,
)
from ._public import adopt as _adopt

__all__ = (
    "BackendRegistry",
    "OrphanListener",
    "OrphanReason",
    "OrphanReport",
    "StandIn",
    "report_orphans",
    "storages",
)

_adopt(globals())
