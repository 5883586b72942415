"""pytest plugin: session-scoped fixtures for the local storage emulators.

Load it from ``tests/conftest.py`` with::

    pytest_plugins = ["tests.conftest_servers"]

(it also works as a top-level module ``conftest_servers`` when ``tests/`` is on
``sys.path``; use one name only, or the fixtures are registered twice).

Fixtures (each starts its server lazily, once per session, on free 127.0.0.1 ports):

* ``moto_server`` -> :class:`tests.servers.MotoServer`
* ``seaweed_server`` -> :class:`tests.servers.SeaweedServer`
* ``azurite_server`` -> :class:`tests.servers.AzuriteServer`
* ``fake_gcs_server`` -> :class:`tests.servers.FakeGcsServer`

A server whose binary is missing makes its tests *skip* with an install hint, or
*fail* when ``SQLALCHEMY_OBSTORE_REQUIRE_SERVERS=1`` (CI). A server that is installed
but does not start is an error either way.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, NoReturn, TypeVar

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

if TYPE_CHECKING or __package__:  # imported as "tests.conftest_servers"
    from .servers import (
        AzuriteServer,
        FakeGcsServer,
        MotoServer,
        SeaweedServer,
        ServerUnavailable,
        run_azurite,
        run_fake_gcs,
        run_moto,
        run_seaweed,
    )
else:  # imported as top-level "conftest_servers" with tests/ on sys.path
    from servers import (
        AzuriteServer,
        FakeGcsServer,
        MotoServer,
        SeaweedServer,
        ServerUnavailable,
        run_azurite,
        run_fake_gcs,
        run_moto,
        run_seaweed,
    )

__all__ = ["azurite_server", "fake_gcs_server", "moto_server", "seaweed_server"]

REQUIRE_SERVERS_ENV = "SQLALCHEMY_OBSTORE_REQUIRE_SERVERS"

_T = TypeVar("_T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs a local storage emulator (moto/SeaweedFS/Azurite/fake-gcs)"
    )


def _servers_required() -> bool:
    return os.environ.get(REQUIRE_SERVERS_ENV, "").strip() == "1"


def _unavailable(name: str, exc: ServerUnavailable) -> NoReturn:
    message = f"{name} unavailable: {exc.reason}. Install with: {exc.install_hint}"
    if _servers_required():
        pytest.fail(f"{message} ({REQUIRE_SERVERS_ENV}=1)", pytrace=False)
    pytest.skip(reason=message)


def _serve(name: str, run: Callable[[], contextlib.AbstractContextManager[_T]]) -> Iterator[_T]:
    stack = contextlib.ExitStack()
    try:
        info = stack.enter_context(run())
    except ServerUnavailable as exc:
        stack.close()
        _unavailable(name, exc)
    with stack:
        yield info


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto_server (S3, no signature checks) with bucket ``test-bucket``."""
    yield from _serve("moto_server", run_moto)


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[SeaweedServer]:
    """SeaweedFS ``weed mini`` (S3, SigV4 checked) with bucket ``test-bucket``."""
    yield from _serve("SeaweedFS", run_seaweed)


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    """Azurite blob service (in memory) with container ``test-container``."""
    yield from _serve("Azurite", run_azurite)


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[FakeGcsServer]:
    """fake-gcs-server (memory backend) with bucket ``test-bucket``; seed via ``.seed()``."""
    yield from _serve("fake-gcs-server", run_fake_gcs)
