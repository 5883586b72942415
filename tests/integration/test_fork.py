"""A process forked after obstore started its runtime fails at once; supported patterns work.

obstore's Tokio runtime does not survive `fork()`: without the guard in
`sqlalchemy_obstore._fork`, a worker forked after the parent's first storage call hangs
forever on its first storage call (sync or async, on an inherited store or on a new
one). Each scenario runs in a fresh interpreter (`tests/fork_workers.py`) against the
moto S3 server, so that the parent's state is exactly what the scenario says.

- `multiprocessing` with `fork` after a storage call: every call in the worker - a sync
  put, an async put on a new backend, a `Session.commit()` uploading a file - raises
  `ForkedProcessError` within a fraction of a second, naming what to do;
- `fork` before any storage call, `spawn` and `forkserver`: the worker works;
- gunicorn with `--preload` (a real gunicorn master and its forked workers, WSGI): an app
  that makes a storage call at import time answers with `ForkedProcessError` at once,
  while the same app without that call - or with the call moved to gunicorn's
  `post_worker_init` hook - and without `--preload` works;
- uvicorn with `--workers 2` (spawned workers, ASGI): an app that makes a storage call at
  import time works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import REPO_ROOT, MotoServer, free_port

pytestmark = pytest.mark.integration


def run_scenario(scenario: str, moto: MotoServer, workdir: Path) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fork_workers",
            scenario,
            moto.endpoint,
            moto.bucket,
            str(workdir),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


def test_fork_after_a_storage_call_fails_fast(moto_server: MotoServer, tmp_path: Path) -> None:
    results = run_scenario("fork-after-use", moto_server, tmp_path)
    assert [r["call"] for r in results] == ["sync put", "async put", "session commit"]
    for result in results:
        assert result["outcome"] == "ForkedProcessError", result
        assert result["seconds"] < 2.0, result  # at once, not after a timeout
        assert "forked from pid" in result["message"]
        assert "spawn" in result["message"]
        assert "--preload" in result["message"]


@pytest.mark.parametrize("scenario", ["fork-before-use", "spawn-after-use", "forkserver-after-use"])
def test_supported_start_methods_work(
    scenario: str, moto_server: MotoServer, tmp_path: Path
) -> None:
    results = run_scenario(scenario, moto_server, tmp_path)
    assert len(results) == (4 if scenario == "fork-before-use" else 3)
    for result in results:
        assert result["outcome"] == "ok", result


# -- gunicorn --------------------------------------------------------------------------------------
GUNICORN_APP = '''
"""A WSGI app that stores one object per request (the fork tests' gunicorn app)."""

import os
import uuid

from sqlalchemy_obstore import StorageError, storages
from tests.fork_workers import backend

storages.register_backend(backend(os.environ["S3_ENDPOINT"], os.environ["S3_BUCKET"]))
if os.environ.get("STORE_AT_IMPORT") == "1":
    storages.get_backend("forked").put("import-time-check", b"ok")


def app(environ, start_response):
    try:
        storages.get_backend("forked").put(f"request/{uuid.uuid4().hex}", b"hello")
    except StorageError as exc:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [f"{type(exc).__name__}: {exc}".encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"stored by {os.getpid()}".encode()]
'''

ASGI_APP = """
\"\"\"An ASGI app that stores one object per request (the fork tests' uvicorn app).\"\"\"

import os
import uuid

from sqlalchemy_obstore import storages
from tests.fork_workers import backend

storages.register_backend(backend(os.environ["S3_ENDPOINT"], os.environ["S3_BUCKET"]))
storages.get_backend("forked").put("import-time-check", b"ok")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await storages.get_backend("forked").put_async(f"request/{uuid.uuid4().hex}", b"hello")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"stored by {os.getpid()}".encode()})
"""

GUNICORN_CONFIG = """
from sqlalchemy_obstore import storages


def post_worker_init(worker):
    # start-up storage checks belong here with --preload: after the fork, in each worker
    storages.get_backend("forked").put("worker-start-check", b"ok")
"""


@pytest.fixture
def gunicorn_app(tmp_path: Path) -> Path:
    pytest.importorskip("gunicorn", reason="gunicorn is in the test dependencies")
    (tmp_path / "fork_app.py").write_text(GUNICORN_APP)
    (tmp_path / "fork_asgi_app.py").write_text(ASGI_APP)
    (tmp_path / "gunicorn_conf.py").write_text(GUNICORN_CONFIG)
    return tmp_path


def _gunicorn(
    app_dir: Path, moto: MotoServer, *, preload: bool, store_at_import: bool, hook: bool
) -> Iterator[str]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--chdir",
        str(app_dir),
        "--pythonpath",
        str(REPO_ROOT),
        *(["--preload"] if preload else []),
        *(["--config", str(app_dir / "gunicorn_conf.py")] if hook else []),
        "fork_app:app",
    ]
    yield from _serve(app_dir, moto, argv, port, store_at_import=store_at_import)


def _serve(
    app_dir: Path, moto: MotoServer, argv: list[str], port: int, *, store_at_import: bool
) -> Iterator[str]:
    env = {
        **os.environ,
        "S3_ENDPOINT": moto.endpoint,
        "S3_BUCKET": moto.bucket,
        "STORE_AT_IMPORT": "1" if store_at_import else "0",
        "PYTHONPATH": os.pathsep.join([str(app_dir), str(REPO_ROOT)]),
    }
    log = app_dir / f"server-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("preload", "store_at_import", "hook", "expected"),
    [
        (True, True, False, 503),  # the master started obstore's runtime, then forked
        (True, False, False, 200),  # preloaded, but no storage call before the fork
        (True, False, True, 200),  # the start-up check moved to post_worker_init
        (False, True, False, 200),  # no preload: each worker imports the app itself
    ],
    ids=["preload-store-at-import", "preload", "preload-post-worker-init", "no-preload"],
)
def test_gunicorn(
    gunicorn_app: Path,
    moto_server: MotoServer,
    preload: bool,
    store_at_import: bool,
    hook: bool,
    expected: int,
) -> None:
    for url in _gunicorn(
        gunicorn_app, moto_server, preload=preload, store_at_import=store_at_import, hook=hook
    ):
        pids = set()
        for _ in range(6):
            start = time.perf_counter()
            response = httpx.get(url, timeout=30)
            assert time.perf_counter() - start < 5, "a worker hung"
            assert response.status_code == expected, response.text
            if expected == 503:
                assert response.text.startswith("ForkedProcessError"), response.text
            else:
                pids.add(response.text.rsplit(" ", 1)[-1])
        assert expected == 503 or pids


def test_uvicorn_workers(gunicorn_app: Path, moto_server: MotoServer) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        "--log-level",
        "warning",
        "fork_asgi_app:app",
    ]
    for url in _serve(gunicorn_app, moto_server, argv, port, store_at_import=True):
        for _ in range(4):
            response = httpx.get(url, timeout=30)
            assert response.status_code == 200, response.text
            assert response.text.startswith("stored by")
