"""The public surface is explicit: `__all__` lists exactly the public names, all documented."""

from __future__ import annotations

import ast
import importlib
import importlib.resources
import inspect
import typing
from pathlib import Path
from types import GenericAlias

import pytest

import sqlalchemy_obstore

PUBLIC_MODULES = [
    "sqlalchemy_obstore",
    "sqlalchemy_obstore.backends",
    "sqlalchemy_obstore.cloudfront",
    "sqlalchemy_obstore.cli",
    "sqlalchemy_obstore.composite",
    "sqlalchemy_obstore.contrib.alembic",
    "sqlalchemy_obstore.contrib.msgspec",
    "sqlalchemy_obstore.contrib.litestar",
    "sqlalchemy_obstore.contrib.starlette",
    "sqlalchemy_obstore.errors",
    "sqlalchemy_obstore.file_object",
    "sqlalchemy_obstore.gc",
    "sqlalchemy_obstore.keys",
    "sqlalchemy_obstore.lifecycle",
    "sqlalchemy_obstore.migration",
    "sqlalchemy_obstore.processing",
    "sqlalchemy_obstore.registry",
    "sqlalchemy_obstore.signing",
    "sqlalchemy_obstore.telemetry",
    "sqlalchemy_obstore.remote",
    "sqlalchemy_obstore.reprocessing",
    "sqlalchemy_obstore.testing",
    "sqlalchemy_obstore.tickets",
    "sqlalchemy_obstore.types",
    "sqlalchemy_obstore.uploads",
    "sqlalchemy_obstore.validation",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_lists_every_public_class_and_function(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    for attr, value in vars(module).items():
        if attr.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__module__", None) == name:
            assert attr in exported, f"{name}.{attr} is public but not in __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names a missing {attr}"


REEXPORTING = [  # public modules over a private implementation module
    name for name in PUBLIC_MODULES if "_adopt" in vars(importlib.import_module(name))
]


@pytest.mark.parametrize("name", REEXPORTING)
def test_a_reexport_module_shows_only_its_all(name: str) -> None:
    """A public module over an implementation module (`lifecycle` over `_lifecycle`) shows
    nothing public beyond `__all__`, and names itself the `__module__` of the classes and
    functions defined there, so reprs, tracebacks and pickles name the documented path.
    """
    module = importlib.import_module(name)
    package, _, leaf = name.rpartition(".")
    implementation = importlib.import_module(f"{package}._{leaf}")
    exported = set(module.__all__)
    assert exported == set(implementation.__all__)
    # (pytest's assertion rewriting adds names like `@py_builtins`: not identifiers)
    public = {attr for attr in vars(module) if attr.isidentifier() and attr[0] != "_"}
    assert public == exported, f"{name} shows {sorted(public - exported)} beyond __all__"
    for attr in exported:
        value = getattr(module, attr)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ != implementation.__name__, f"{name}.{attr}: private home"


@pytest.mark.parametrize("name", REEXPORTING)
def test_adopted_classes_keep_resolvable_type_hints(name: str) -> None:
    """`typing.get_type_hints` resolves a class's annotations in the module its
    `__module__` names; after adoption that is the public module, which lacks the
    implementation's imports. What resolved in the implementation module still resolves.
    """
    module = importlib.import_module(name)
    package, _, leaf = name.rpartition(".")
    implementation = vars(importlib.import_module(f"{package}._{leaf}"))
    for attr in module.__all__:
        value = getattr(module, attr)
        if not inspect.isclass(value) or value.__module__ != name:
            continue
        try:
            expected = typing.get_type_hints(value, globalns=implementation)
        except NameError:
            continue  # a name imported for type checking only: never resolvable at run time
        assert typing.get_type_hints(value) == expected, f"{name}.{attr}"


SOURCE = Path(sqlalchemy_obstore.__file__).parent


def _module_of(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, node: ast.ImportFrom) -> str:
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1] if node.level else []
    return ".".join([*base, *([node.module] if node.module else [])])


@pytest.mark.parametrize(
    "path", sorted(SOURCE.rglob("*.py")), ids=lambda p: str(p.relative_to(SOURCE))
)
def test_no_module_imports_another_modules_private_name(path: Path) -> None:
    """`from ._lifecycle import enable_tracking` is fine; `from ._x import _helper` is not."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            continue
        source = _imported(path, node) if node.level else (node.module or "")
        if not source.startswith("sqlalchemy_obstore"):
            continue
        for alias in node.names:
            target = f"{source}.{alias.name}"
            dunder = alias.name.startswith("__") and alias.name.endswith("__")
            if alias.name.startswith("_") and not dunder and not _is_module(target):
                raise AssertionError(f"{path.name}:{node.lineno} imports {target}")


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_a_reexported_class_pickles_by_its_documented_path() -> None:
    import pickle

    from sqlalchemy_obstore.errors import ObjectNotFoundError
    from sqlalchemy_obstore.processing import Rendition

    error = ObjectNotFoundError("gone")
    assert type(pickle.loads(pickle.dumps(error))) is ObjectNotFoundError
    assert b"sqlalchemy_obstore.errors" in pickle.dumps(error)
    assert ObjectNotFoundError.__module__ == "sqlalchemy_obstore.errors"
    assert repr(Rendition).startswith("<class 'sqlalchemy_obstore.processing.Rendition'")


@pytest.mark.parametrize("name", sorted(sqlalchemy_obstore.__all__))
def test_every_public_name_is_documented(name: str) -> None:
    value = getattr(sqlalchemy_obstore, name)
    if isinstance(value, GenericAlias):
        return  # a type alias (`KeyFunction`; Python 3.10 reports it as a class)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert inspect.getdoc(value), f"sqlalchemy_obstore.{name} has no docstring"
        if inspect.isclass(value):
            for member, attr in vars(value).items():
                if member.startswith("_") or not callable(attr):
                    continue
                assert inspect.getdoc(getattr(value, member)), f"{name}.{member} has no docstring"


def test_package_ships_type_information() -> None:
    assert (importlib.resources.files("sqlalchemy_obstore") / "py.typed").is_file()
