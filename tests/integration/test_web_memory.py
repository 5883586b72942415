"""Signed PUT and GET of 256 MiB through a real uvicorn server keep its memory bounded.

The server (Litestar plugin or Starlette router, local-files backend) runs in a
subprocess; its peak RSS (`VmHWM`) is read before and after streaming the body in and
out, and must grow by far less than the object's size: the body is never held whole.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sqlalchemy_obstore.backends import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY
from sqlalchemy_obstore.signing import HmacUrlSigner
from tests.integration.web_signed_app import BACKEND, SECRET

ROOT = Path(__file__).resolve().parents[2]
SIZE = 256 * 1024 * 1024
# Multipart parts in flight while uploading, plus slack for the interpreter and buffers.
MAX_GROWTH = DEFAULT_CHUNK_SIZE * (DEFAULT_MAX_CONCURRENCY + 1) + 32 * 1024 * 1024
assert MAX_GROWTH < SIZE // 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture(params=["litestar", "starlette"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """uvicorn serving one app on 127.0.0.1; yields (base URL, pid, store directory)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc (Linux)")
    store = tmp_path / "store"
    store.mkdir()
    port = _free_port()
    log = tmp_path / "uvicorn.log"
    env = {**os.environ, "W1_STORE_DIR": str(store), "PYTHONPATH": str(ROOT)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"tests.integration.web_signed_app:uvicorn_{request.param}",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                text = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"uvicorn exited with {process.returncode}:\n{text}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("uvicorn did not start listening within 60 s")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process.pid, store
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _chunks(total: int, digest: hashlib._Hash, size: int = 1024 * 1024) -> Iterator[bytes]:
    block = hashlib.sha256(b"w1").digest() * (size // 32)
    sent = 0
    counter = 0
    while sent < total:
        piece = (counter.to_bytes(8, "big") + block[8:])[: min(size, total - sent)]
        digest.update(piece)
        sent += len(piece)
        counter += 1
        yield piece


@pytest.mark.slow
def test_signed_put_and_get_of_256_mib_keep_memory_bounded(
    server: tuple[str, int, Path],
) -> None:
    base, pid, store = server
    signer = HmacUrlSigner(SECRET)
    deadline = int(time.time()) + 600

    def url(path: str, method: str) -> str:
        return signer.url_for(BACKEND, path, method=method, expires=deadline)

    with httpx.Client(base_url=base, timeout=300, trust_env=False) as http:
        # Warm up: imports, the first connection, obstore's runtime.
        assert http.put(url("warm/up.txt", "PUT"), content=b"warm up").status_code == 200
        assert http.get(url("warm/up.txt", "GET")).content == b"warm up"
        before = _peak_rss(pid)

        sent = hashlib.sha256()
        response = http.put(url("big/huge.bin", "PUT"), content=_chunks(SIZE, sent))
        assert response.status_code == 200, response.text
        after_upload = _peak_rss(pid)

        received = hashlib.sha256()
        length = 0
        with http.stream("GET", url("big/huge.bin", "GET")) as download:
            assert download.status_code == 200
            assert download.headers["content-length"] == str(SIZE)
            for chunk in download.iter_bytes():
                received.update(chunk)
                length += len(chunk)
        after_download = _peak_rss(pid)

        middle = http.get(
            url("big/huge.bin", "GET"), headers={"Range": f"bytes={SIZE // 2}-{SIZE // 2 + 99}"}
        )
        assert middle.status_code == 206
        assert len(middle.content) == 100

    assert length == SIZE
    assert received.hexdigest() == sent.hexdigest()
    stored = hashlib.sha256()
    with (store / "big" / "huge.bin").open("rb") as handle:
        while block := handle.read(1024 * 1024):
            stored.update(block)
    assert stored.hexdigest() == sent.hexdigest()
    mib = 2**20
    print(
        f"peak RSS {before / mib:.1f} -> {after_upload / mib:.1f} (PUT) -> "
        f"{after_download / mib:.1f} MiB (GET) for {SIZE // mib} MiB each way"
    )
    assert after_upload - before < MAX_GROWTH
    assert after_download - before < MAX_GROWTH
