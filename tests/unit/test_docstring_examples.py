"""Every example in the package's docstrings runs and shows what it says.

The reference docs are generated from these docstrings, so an example that no longer
runs would be a wrong page. Examples use memory backends only: nothing leaves the
process.
"""

from __future__ import annotations
import __future__

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import sqlalchemy_obstore


def _modules() -> list[str]:
    found = [sqlalchemy_obstore.__name__]
    prefix = sqlalchemy_obstore.__name__ + "."
    found += [info.name for info in pkgutil.walk_packages(sqlalchemy_obstore.__path__, prefix)]
    return sorted(name for name in found if not name.endswith("__main__"))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    # The examples run as a user's code would: without the module's own
    # `from __future__ import annotations`, which would leave the annotations of an
    # example's mapped class as strings SQLAlchemy looks up in the library's module.
    globs = {k: v for k, v in vars(module).items() if v is not __future__.annotations}
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name, globs=globs):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
