"""Backends made of backends: a mirror (write to several stores) and an overlay (sandbox).

- [`MirrorBackend`][sqlalchemy_obstore.composite.MirrorBackend] writes every object to a
  primary backend and to one or more mirrors, and reads from the primary. Register it
  under your backend key to move to another store with no downtime: new uploads land in
  both stores, [`migrate`][sqlalchemy_obstore.migration.migrate] backfills the old ones,
  then the primary is flipped (see the migration guide).
- [`OverlayBackend`][sqlalchemy_obstore.composite.OverlayBackend] reads through to a
  read-only *base* backend and sends every write and delete to an *overlay* backend, so a
  staging environment can run against production objects without changing them.

Both are [`Backend`][sqlalchemy_obstore.Backend] subclasses: register them in a registry
like any backend; columns name them by key.
"""

# In the implementation's order, which the reference page follows.
from ._composite import (
    TOMBSTONE_PREFIX,
    MirrorBackend,
    OverlayBackend,
)
from ._public import adopt as _adopt

__all__ = (
    "TOMBSTONE_PREFIX",
    "MirrorBackend",
    "OverlayBackend",
)

_adopt(globals())
