"""Every example in the package's docstrings runs and shows what it says.

The reference docs are generated from these docstrings, so an example that no longer
runs would be a wrong page. Examples use memory backends only: nothing leaves the
process.
"""

from __future__ import annotations
import __future__

import doctest
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import sqlalchemy_obstore


def _modules() -> list[str]:
    found = [sqlalchemy_obstore.__name__]
    prefix = sqlalchemy_obstore.__name__ + "."
    found += [info.name for info in pkgutil.walk_packages(sqlalchemy_obstore.__path__, prefix)]
    return sorted(name for name in found if not name.endswith("__main__"))


def _implementation(module: ModuleType) -> ModuleType:
    """The private module a public module re-exports (`pkg._name` for `pkg.name`), or itself."""
    package, _, name = module.__name__.rpartition(".")
    if not package:
        return module
    try:
        return importlib.import_module(f"{package}._{name}")
    except ImportError:
        return module


def _parts(module: ModuleType) -> set[ModuleType]:
    """The modules defining the methods of the classes `module` names itself the home of.

    The implementation module, or another private module the public one adopts from
    (`adopt(..., parts=...)`: an implementation split over several modules).
    """
    found = set()
    for value in vars(module).values():
        if not inspect.isclass(value) or value.__module__ != module.__name__:
            continue
        for member in vars(value).values():
            if inspect.isfunction(member) and member.__qualname__.startswith(
                f"{value.__qualname__}."
            ):
                home = inspect.getmodule(member)
                if home is not None:
                    found.add(home)
    return found


class _Finder(doctest.DocTestFinder):
    """Finds a re-exported class's examples under its public module, methods included.

    A public module's classes name it as their `__module__`, their methods still name the
    module that defines them; the examples of both belong to the public module.
    """

    def __init__(self, module: ModuleType) -> None:
        super().__init__(exclude_empty=True)
        self.homes = {module, _implementation(module), *_parts(module)}

    def _from_module(self, module: object, object: object) -> bool:
        found = inspect.getmodule(object)
        if found is None or inspect.isclass(object):
            return bool(super()._from_module(module, object))  # type: ignore[misc]
        is_method = "." in getattr(object, "__qualname__", "")
        return found is module or (is_method and found in self.homes)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    for public in _modules():  # a public module names itself the home of what it re-exports
        importlib.import_module(public)
    module: ModuleType = importlib.import_module(name)
    # The examples run as a user's code would: without the module's own
    # `from __future__ import annotations`, which would leave the annotations of an
    # example's mapped class as strings SQLAlchemy looks up in the library's module.
    # A public module's examples run in its implementation module's namespace.
    namespace = vars(_implementation(module))
    globs = {k: v for k, v in namespace.items() if v is not __future__.annotations}
    finder = _Finder(module)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name, globs=globs):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
