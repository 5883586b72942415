"""obstore and `fork()`: a forked child fails at once instead of hanging forever.

obstore runs every request, sync or async, on one Tokio runtime per process, started by
the first call. The runtime's threads do not survive `fork()`: in a child forked after
that first call, every obstore call that does I/O waits forever, on an existing store
or on one built in the child (measured with obstore 0.12.1 against moto: sync and async
calls hang; tokio-rs/tokio#4301). gunicorn `--preload`, Celery's prefork pool and
`multiprocessing`'s `fork` start method all fork.

`backends.py` calls obstore only through `obs`, a namespace holding obstore's functions:

- until the first call in a process, each function is a small wrapper that records the
  use and then puts obstore's own functions in place, so from then on a call costs
  exactly what calling obstore directly costs: there is no check on the hot path;
- in a child forked after such a use (`os.register_at_fork`), every function is
  replaced by one that raises `ForkedProcessError` at once, saying what to do.

A child forked before any use works normally: its first call starts its own runtime.

The first async call also makes the interpreter wait `_EXIT_GRACE` (0.1 s) at exit, so
that obstore's runtime threads finish before Python finalises (see there why).
Store constructors (`S3Store(...)`, `from_url`) start no runtime and stay as they are.
"""

from __future__ import annotations

import atexit
import os
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import obstore

from ._errors import ForkedProcessError

__all__ = ("obs", "obstore_used_in")

_PURE = frozenset({"parse_scheme"})  # obstore functions that never touch the runtime
_REAL: dict[str, Callable[..., Any]] = {
    name: value
    for name in dir(obstore)
    if not name.startswith("_")
    and isinstance(value := getattr(obstore, name), types.BuiltinFunctionType)
    and name not in _PURE
}

_used_in: int | None = None  # the pid whose obstore runtime has been started, if any


def obstore_used_in() -> int | None:
    """The pid of the process whose obstore calls started obstore's runtime, if any.

    In a child forked after the parent's first call, this is the parent's pid.
    """
    return _used_in


_EXIT_GRACE = 0.1
"""Seconds the interpreter waits at exit after obstore's async calls were used.

obstore's runtime threads may still be finishing callbacks into Python (the HTTP
connection pool's last tasks) when a script's `asyncio.run()` returns; if the interpreter
finalises under them, the process aborts (SIGABRT, exit status 134: the tokio-thread vs
`Py_Finalize` race, PyO3/pyo3-async-runtimes#40). Measured against moto: 7 of 20 runs of
a five-upload script aborted with no wait, none in 20 with 50 ms or 200 ms.
"""


def _record_use(name: str) -> None:
    global _used_in
    if _used_in is None:
        _used_in = os.getpid()
    if name.endswith("_async") and not _ASYNC_SEEN:
        _ASYNC_SEEN.append(name)
        atexit.register(time.sleep, _EXIT_GRACE)


def _first_use(
    name: str, function: Callable[..., Any], group: tuple[str, ...]
) -> Callable[..., Any]:
    """A stand-in that records the first use of its `group`, then puts obstore's own in."""

    def call(*args: Any, **kwargs: Any) -> Any:
        _record_use(name)
        for real_name in group:  # from now on: obstore's functions, bare
            setattr(_namespace, real_name, _REAL[real_name])
        return function(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _refusal(name: str, parent: int) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ForkedProcessError(
            f"obstore.{name} cannot run in this process (pid {os.getpid()}): it was forked "
            f"from pid {parent} after that process had made a storage call, and obstore's "
            "I/O runtime does not survive fork() - the call would wait forever. Fork the "
            "workers before the first storage call (gunicorn without --preload, Celery's "
            "worker_process_init for work done at start-up), or start them with 'spawn' or "
            "'forkserver' (multiprocessing.get_context('spawn')). See the deployment guide "
            "of sqlalchemy-obstore.",
            parent_pid=parent,
        )

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


def _after_fork_in_child() -> None:
    if _used_in is None:
        return  # the parent never started the runtime: the child starts its own
    for name in _REAL:
        setattr(_namespace, name, _refusal(name, _used_in))


_namespace = types.SimpleNamespace(
    **{name: getattr(obstore, name) for name in dir(obstore) if not name.startswith("_")}
)
_ASYNC_SEEN: list[str] = []  # the first async function called, once there was one
_ASYNC = tuple(name for name in _REAL if name.endswith("_async"))
_SYNC = tuple(name for name in _REAL if not name.endswith("_async"))
for _group in (_SYNC, _ASYNC):
    for _name in _group:
        setattr(_namespace, _name, _first_use(_name, _REAL[_name], _group))
if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)

if TYPE_CHECKING:
    import obstore as obs
else:
    obs = _namespace
