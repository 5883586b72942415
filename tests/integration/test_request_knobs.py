"""Request timeouts and retries per backend: the knobs take effect, failures are typed.

With obstore's defaults a dead S3 makes each request fail only after ten retries (seconds)
and a frozen one holds a request for up to its 30 s timeout, times the retries. These
tests point a backend at a *frozen* server (a socket that accepts connections and never
answers, which is what a client sees of a stopped process) and at a *dead* one (a closed
port), and check that `timeout`, `connect_timeout`, `max_retries` and `retry_timeout`
bound the time to a typed `StorageOperationError`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from sqlalchemy_obstore import ConfigurationError, ObstoreBackend, StorageOperationError
from tests.servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def frozen_port() -> Iterator[int]:
    """A port whose server accepts connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
    listener.close()
    for connection in held:
        connection.close()
    thread.join(timeout=5)


def s3(port: int, **knobs: Any) -> ObstoreBackend:
    return ObstoreBackend(
        "knobs",
        "s3://bucket/",
        endpoint=f"http://127.0.0.1:{port}",
        access_key_id="key",
        secret_access_key="secret",
        region="us-east-1",
        **knobs,
    )


def timed_put(backend: ObstoreBackend) -> tuple[float, StorageOperationError]:
    started = time.monotonic()
    with pytest.raises(StorageOperationError) as caught:
        backend.put("a.txt", b"data")
    return time.monotonic() - started, caught.value


def test_frozen_server_with_a_one_second_timeout_fails_in_about_a_second(frozen_port: int) -> None:
    elapsed, error = timed_put(s3(frozen_port, timeout=1, max_retries=0))
    assert 0.9 <= elapsed < 3.0, elapsed
    assert error.backend == "knobs"
    assert error.path == "a.txt"
    assert "secret" not in str(error)


async def test_async_requests_obey_the_same_timeout(frozen_port: int) -> None:
    backend = s3(frozen_port, timeout=timedelta(seconds=1), max_retries=0)
    started = time.monotonic()
    with pytest.raises(StorageOperationError):
        await backend.put_async("a.txt", b"data")
    with pytest.raises(StorageOperationError):
        await backend.head_async("a.txt")
    assert time.monotonic() - started < 5.0
    # and the event loop stayed free meanwhile
    assert await asyncio.wait_for(asyncio.sleep(0, result=True), timeout=1)


def test_retries_multiply_the_timeout_and_retry_timeout_bounds_them(frozen_port: int) -> None:
    elapsed, _ = timed_put(s3(frozen_port, timeout=0.5, max_retries=2))
    assert 1.4 <= elapsed < 6.0, elapsed  # three attempts of 0.5 s, plus backoff
    bounded, _ = timed_put(s3(frozen_port, timeout=0.5, max_retries=10, retry_timeout=1))
    assert bounded < 4.0, bounded  # no retry starts after 1 s


def test_dead_server_without_retries_fails_at_once() -> None:
    elapsed, error = timed_put(s3(free_port(), max_retries=0, connect_timeout=1))
    assert elapsed < 1.0, elapsed
    assert "put failed" in str(error)


def test_knobs_land_in_obstores_nested_options(frozen_port: int) -> None:
    # The nested spelling obstore documents works the same way.
    nested = s3(frozen_port, client_options={"timeout": "1s"}, retry_config={"max_retries": 0})
    elapsed, _ = timed_put(nested)
    assert elapsed < 3.0
    # Both spellings at once, for one knob, are refused; other nested options are kept.
    with pytest.raises(ConfigurationError, match="timeout is given twice"):
        s3(frozen_port, timeout=1, client_options={"timeout": "2s"})
    combined = s3(frozen_port, timeout=1, max_retries=0, client_options={"user_agent": "probe"})
    assert timed_put(combined)[0] < 3.0


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"timeout": 0}, "timeout must be positive"),
        ({"timeout": "soon"}, "timeout must be a number of seconds or a timedelta"),
        ({"connect_timeout": -1}, "connect_timeout must be positive"),
        ({"retry_timeout": True}, "retry_timeout must be a number"),
        ({"max_retries": -1}, "max_retries must be a whole number"),
        ({"max_retries": 1.5}, "max_retries must be a whole number"),
    ],
)
def test_bad_knob_values_are_refused(knobs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        s3(free_port(), **knobs)


def test_knobs_are_accepted_by_every_network_store() -> None:
    knobs = {"timeout": 5, "connect_timeout": 1, "max_retries": 2, "retry_timeout": 10}
    gcs = ObstoreBackend("g", "gs://bucket/", skip_signature=True, **knobs)
    azure = ObstoreBackend(
        "a", "az://container/", account_name="acct", skip_signature=True, **knobs
    )
    assert (gcs.kind, azure.kind) == ("gcs", "azure")
    with pytest.raises(ConfigurationError, match="memory:// takes no configuration"):
        ObstoreBackend("m", "memory://", timeout=1)
