"""Helpers for testing applications that use sqlalchemy-obstore.

The [pytest plugin](../how-to/testing.md) (`sqlalchemy_obstore.pytest_plugin`) wraps these
in fixtures; they work without pytest too.

- [`memory_backends`][sqlalchemy_obstore.testing.memory_backends]: register fresh memory
  backends under your production keys for the duration of a test, then restore the
  registry. With `sticky=True` they stay registered against an application that
  registers its own backends when it starts.
- [`memory_stand_in`][sqlalchemy_obstore.testing.memory_stand_in]: a memory backend with
  another backend's key and settings (prefix, key layout, checksum, upload policy).
- [`make_file`][sqlalchemy_obstore.testing.make_file] and
  [`FileFactory`][sqlalchemy_obstore.testing.FileFactory]: `FileObject`s with generated,
  reproducible content.
- [`FaultInjectingBackend`][sqlalchemy_obstore.testing.FaultInjectingBackend] and
  [`inject_faults`][sqlalchemy_obstore.testing.inject_faults]: wrap any backend and fail
  the n-th put, delete, head, get or multipart part (or fail at random with a given
  probability), to test how your code behaves when storage breaks.

Example (a pytest fixture, without the plugin):

    import pytest
    from sqlalchemy_obstore.testing import memory_backends

    @pytest.fixture(autouse=True)
    def storage():
        with memory_backends("uploads", "avatars") as backends:
            yield backends
"""

# In the implementation's order, which the reference page follows.
from ._testing import (  # noqa: I001
    Operation,
    InjectedFault,
    memory_backends,
    memory_stand_in,
    make_file,
    FileFactory,
    FaultInjectingBackend,
    inject_faults,
)
from ._public import adopt as _adopt

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

_adopt(globals())
