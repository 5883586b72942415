"""The public surface is explicit: `__all__` lists exactly the public names, all documented."""

from __future__ import annotations

import importlib
import importlib.resources
import inspect
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
