"""Public modules re-export their implementation and name themselves its home.

Each documented module (`sqlalchemy_obstore.lifecycle`, ...) is a thin module that
imports its public names from a private implementation module (`_lifecycle`) and calls
[`adopt`][sqlalchemy_obstore._public.adopt], so that reprs, tracebacks and pickles name
the documented path rather than the private one.
"""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping

__all__ = ("adopt",)


def adopt(namespace: MutableMapping[str, object]) -> None:
    """Make the public module owning `namespace` the `__module__` of what it re-exports.

    Only the classes and functions defined in the module's own implementation module
    (`pkg._name` for `pkg.name`) change; names re-exported from elsewhere keep theirs.
    """
    public = str(namespace["__name__"])
    package, _, name = public.rpartition(".")
    private = f"{package}._{name}"
    exported = namespace["__all__"]
    assert isinstance(exported, (tuple, list))
    for attr in exported:
        value = namespace[attr]
        class_or_function = inspect.isclass(value) or inspect.isfunction(value)
        if class_or_function and value.__module__ == private:
            value.__module__ = public
