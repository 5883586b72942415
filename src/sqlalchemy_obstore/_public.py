"""Public modules re-export their implementation and name themselves its home.

Each documented module (`sqlalchemy_obstore.lifecycle`, ...) is a thin module that
imports its public names from a private implementation module (`_lifecycle`) and calls
`adopt`, so that reprs, tracebacks and pickles name the documented path rather than the
private one.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import MutableMapping, Sequence

__all__ = ("adopt",)


def adopt(namespace: MutableMapping[str, object], *, parts: Sequence[str] = ()) -> None:
    """Make the public module owning `namespace` the `__module__` of what it re-exports.

    Only the classes and functions defined in the module's own implementation module
    (`pkg._name` for `pkg.name`), or in one of the private modules named in `parts`
    (`("_name_report",)`: an implementation split over several modules), change;
    names re-exported from elsewhere keep theirs.
    `typing.get_type_hints` looks a class's annotations up in the module its
    `__module__` names, which holds only the public names, so a class's string
    annotations are resolved first, in the module that defines the class; one that
    cannot be resolved there either (a name imported for type checking only) stays a
    string.
    """
    public = str(namespace["__name__"])
    package, _, name = public.rpartition(".")
    homes = {f"{package}._{name}", *(f"{package}.{part}" for part in parts)}
    exported = namespace["__all__"]
    assert isinstance(exported, (tuple, list))
    for attr in exported:
        value = namespace[attr]
        class_or_function = inspect.isclass(value) or inspect.isfunction(value)
        if not class_or_function or value.__module__ not in homes:
            continue
        if inspect.isclass(value):
            _resolve_annotations(value, vars(sys.modules[value.__module__]))
        value.__module__ = public


def _resolve_annotations(cls: type, namespace: dict[str, object]) -> None:
    # in place: the class's own dict (`inspect.get_annotations` returns a copy)
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    for field, annotation in annotations.items():
        if isinstance(annotation, str):
            try:
                annotations[field] = eval(annotation, dict(namespace), dict(vars(cls)))
            except Exception:  # unresolvable before adoption too: left as it was
                continue
