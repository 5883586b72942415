"""Alembic autogenerate support: render `StoredObject` columns in migrations.

Without help, autogenerate writes a `StoredObject` column as
`sqlalchemy_obstore.types.StoredObject(...)` with no import and only some of its
arguments. Wire [`render_item`][sqlalchemy_obstore.contrib.alembic.render_item] into
`env.py` and migrations get `StoredObject(...)` with its arguments, plus
`from sqlalchemy_obstore import StoredObject` among their imports:

```python
from sqlalchemy_obstore.contrib.alembic import render_item

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_item=render_item,
)
```

Already have a `render_item` of your own? Combine both with
[`chain_render_items`][sqlalchemy_obstore.contrib.alembic.chain_render_items].

The database column is JSON (JSONB on PostgreSQL) whatever the arguments are: they only
steer the ORM (where files go, how they are checked). Arguments that cannot be written as
Python source (a `registry` object, a `key_function` or a `key_prefix` function that is
a lambda or a local function, an `UploadPolicy` with `validators` or an `image` policy)
are therefore left out, and a comment in the rendered call names each one, so the
migration is always valid Python and creates the same column. A `key_function` or
`key_prefix` function that is a module-level function is rendered by its import path.

Alembic is not imported at runtime by this module.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .._types import StoredObject
from .._validation import UploadPolicy

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext

__all__ = ("RenderItem", "chain_render_items", "render_item", "render_stored_object")

RenderItem = Callable[[str, Any, "AutogenContext"], "str | Literal[False]"]
"""The signature of Alembic's `render_item` hook."""

_OMITTED_NOTE = "sqlalchemy-obstore: not rendered (no effect on the schema): "


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Alembic `render_item` hook that renders `StoredObject` column types.

    Args:
        type_: What Alembic renders (`"type"`, `"server_default"`, ...).
        obj: The object to render.
        autogen_context: Alembic's autogenerate context; the needed imports are added to
            its `imports`.

    Returns:
        The Python source of the `StoredObject(...)` call, or `False` for everything
        else (Alembic then renders it as usual).

    Example:
        >>> from types import SimpleNamespace
        >>> from sqlalchemy_obstore import StoredObject
        >>> ctx = SimpleNamespace(imports=set())
        >>> render_item("type", StoredObject("uploads", multiple=True), ctx)
        "StoredObject('uploads', multiple=True)"
        >>> sorted(ctx.imports)
        ['from sqlalchemy_obstore import StoredObject']
        >>> render_item("server_default", None, ctx)
        False
    """
    if type_ != "type" or not isinstance(obj, StoredObject):
        return False
    return render_stored_object(obj, autogen_context.imports)


def render_stored_object(column_type: StoredObject, imports: set[str] | None = None) -> str:
    """The Python source of a `StoredObject` call, adding its imports to `imports`.

    Arguments that cannot be written as source are left out and named in a comment
    inside the call (the result is then several lines, still one valid expression).

    Args:
        column_type: The column type to render.
        imports: A set of import lines to extend (Alembic's `autogen_context.imports`).

    Returns:
        The source, for example `StoredObject('uploads', key_prefix='scans')`.

    Example:
        >>> from sqlalchemy_obstore import StoredObject, UploadPolicy
        >>> print(render_stored_object(StoredObject("b", policy=UploadPolicy(max_size=10))))
        StoredObject('b', policy=UploadPolicy(max_size=10))
    """
    imports = imports if imports is not None else set()
    imports.add("from sqlalchemy_obstore import StoredObject")
    key = column_type.backend_key  # (a column on the default backend renders without one)
    args = [] if key is None else [repr(key)]
    omitted: list[str] = []
    if column_type.multiple:
        args.append("multiple=True")
    for argument, function in (
        ("key_prefix", column_type.key_prefix),
        ("key_function", column_type.key_function),
    ):
        if function is None:
            continue
        if isinstance(function, str):
            args.append(f"{argument}={function!r}")
            continue
        path = _import_path(function)
        if path is None:
            omitted.append(f"{argument}={_describe(function)}")
        else:
            module, name = path
            imports.add(f"import {module}")
            args.append(f"{argument}={module}.{name}")
    if column_type.keep_replaced:
        args.append("keep_replaced=True")
    if not column_type.track:
        args.append("track=False")
    if column_type.cache_control is not None:
        args.append(f"cache_control={column_type.cache_control!r}")
    if column_type.registry is not None:
        omitted.append(f"registry={_describe(column_type.registry)}")
    if column_type.policy is not None:
        policy, left_out = _render_policy(column_type.policy)
        omitted.extend(left_out)
        if policy is not None:
            imports.add("from sqlalchemy_obstore import UploadPolicy")
            args.append(f"policy={policy}")
    if not omitted:
        return f"StoredObject({', '.join(args)})"
    comment = "# " + _OMITTED_NOTE + ", ".join(omitted)
    return f"StoredObject(\n    {', '.join(args)},\n    {comment}\n)"


def chain_render_items(*hooks: RenderItem) -> RenderItem:
    """One `render_item` hook that asks `render_item` first, then each of `hooks`.

    The first hook that returns something other than `False` wins.

    Args:
        *hooks: Your existing `render_item` functions.

    Returns:
        The combined hook, for `context.configure(render_item=...)`.

    Example:
        >>> from types import SimpleNamespace
        >>> def mine(type_, obj, autogen_context):
        ...     return "MyType()" if obj == "mine" else False
        >>> hook = chain_render_items(mine)
        >>> ctx = SimpleNamespace(imports=set())
        >>> hook("type", "mine", ctx), hook("type", "other", ctx)
        ('MyType()', False)
    """
    chain: tuple[RenderItem, ...] = (render_item, *hooks)

    def chained(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
        for hook in chain:
            rendered = hook(type_, obj, autogen_context)
            if rendered is not False:
                return rendered
        return False

    return chained


def _describe(value: object) -> str:
    name = getattr(value, "__qualname__", None)
    if callable(value) and isinstance(name, str):
        text = name if name.startswith("<") else f"<{name}>"
    else:
        text = f"<{type(value).__qualname__} object>"
    return text.replace("\n", " ").replace("\r", " ")


def _import_path(func: object) -> tuple[str, str] | None:
    """`(module, qualified name)` when `func` can be imported back by that path."""
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(name, str) or module == "__main__":
        return None
    if "<" in name or not all(part.isidentifier() for part in [*module.split("."), name]):
        return None
    if "." in name:
        return None
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return (module, name) if found is func else None


def _render_policy(policy: UploadPolicy) -> tuple[str | None, list[str]]:
    """Source of the data fields of `policy`, and the fields left out."""
    omitted = []
    if policy.validators:
        omitted.append("policy.validators")
    if policy.image is not None:
        omitted.append("policy.image")
    fields = []
    for item in dataclasses.fields(policy):
        if item.name in ("validators", "image"):
            continue
        value = getattr(policy, item.name)
        if value != item.default:
            fields.append(f"{item.name}={value!r}")
    if not fields and omitted:
        return None, omitted
    return f"UploadPolicy({', '.join(fields)})", omitted
