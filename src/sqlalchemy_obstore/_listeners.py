"""Global SQLAlchemy event listeners, installed on purpose and at most once.

The session integration listens on SQLAlchemy's `Session`, `Mapper` and `Engine`
classes, so it serves every session, mapper and engine of the process. The listeners are
declared as [`Listener`][sqlalchemy_obstore._listeners.Listener] values in the modules
that implement them and installed in one place
([`lifecycle.install_listeners`][sqlalchemy_obstore.lifecycle.install_listeners], which
`import sqlalchemy_obstore` calls); installing again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event

__all__ = ("Listener",)


@dataclass(frozen=True, slots=True)
class Listener:
    """One event listener: `function` for event `name` of `target`.

    Args:
        target: The class listened on (`Session`, `Mapper`, `Engine`).
        name: The event's name.
        function: The listener.
        raw: SQLAlchemy's `raw=True` (the listener receives `InstanceState`s).
    """

    target: Any
    name: str
    function: Callable[..., Any]
    raw: bool = False

    @property
    def installed(self) -> bool:
        """Whether SQLAlchemy calls it now."""
        return event.contains(self.target, self.name, self.function)

    def install(self) -> None:
        """Have SQLAlchemy call it (unless it does already)."""
        if self.installed:
            return
        if self.raw:
            event.listen(self.target, self.name, self.function, raw=True)
        else:
            event.listen(self.target, self.name, self.function)

    def __str__(self) -> str:
        function = f"{self.function.__module__}.{self.function.__qualname__}"
        return f"{self.target.__name__}.{self.name} -> {function}"
