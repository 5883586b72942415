"""A real uvicorn server in a subprocess, and its peak memory, for bounded-memory tests.

Shared by the upload tests (`test_uploads.py`) and the signed-URL route tests
(`test_web_memory.py`): both stream a body far larger than the allowed memory growth
through a server and read its peak RSS (`VmHWM`) before and after.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy_obstore.backends import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY

ROOT = Path(__file__).resolve().parents[2]

MAX_GROWTH = DEFAULT_CHUNK_SIZE * (DEFAULT_MAX_CONCURRENCY + 1) + 32 * 1024 * 1024
"""Allowed peak-RSS growth of a server streaming any amount of data.

obstore keeps up to `max_concurrency` parts of `chunk_size` in flight while it uploads
(more when the request arrives faster than the store writes); on top of that come the
server's and framework's buffers. The bound does not depend on the body's size.
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss(pid: int) -> int:
    """Peak resident memory of process `pid` in bytes (Linux `VmHWM`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@contextmanager
def uvicorn_server(factory: str, env: Mapping[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """Serve the app factory `module:function` on 127.0.0.1; yields (base URL, pid)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc (Linux)")
    port = free_port()
    with log.open("wb") as output:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                factory,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
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
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def pattern_chunks(
    total: int, digest: Any, *, seed: bytes = b"seed", chunk: int = 1024 * 1024
) -> Iterator[bytes]:
    """`total` bytes of a non-repeating pattern in `chunk`-sized pieces, fed to `digest`."""
    block = hashlib.sha256(seed).digest() * (chunk // 32)
    sent = 0
    counter = 0
    while sent < total:
        piece = (counter.to_bytes(8, "big") + block[8:])[: min(chunk, total - sent)]
        digest.update(piece)
        sent += len(piece)
        counter += 1
        yield piece
