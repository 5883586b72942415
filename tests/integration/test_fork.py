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
- gunicorn with `--preload` (a real gunicorn master and its forked workers, WSGI sync
  workers and `uvicorn.workers.UvicornWorker` ASGI workers): an app that makes a storage
  call at import time answers with `ForkedProcessError` at once, while the same app
  without that call - or with the call moved to gunicorn's `post_fork` or
  `post_worker_init` hook - and without `--preload` works;
- uvicorn with `--workers 2` (spawned workers, ASGI): an app that makes a storage call at
  import time works;
- Celery (a real `celery worker`, Redis as broker and result backend, `tests/celery_app.py`):
  with a storage call at import time the prefork pool forks after it, and every task's
  storage call fails at once with `ForkedProcessError`, reported as the task's failure,
  while the worker lives on; with the call in `worker_process_init` or without it, and
  with the `solo` and `threads` pools, tasks commit a file and read it back.
"""

from __future__ import annotations

import contextlib
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
from urllib.parse import urlsplit

import httpx
import pytest

from sqlalchemy_obstore import ForkedProcessError
from tests.conftest import unavailable
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
    return [f"stored by {os.getpid()}; start-up check: {checked()}".encode()]


def checked():
    """Whether a gunicorn hook ran the start-up check in this worker."""
    done = storages.get_backend("forked").exists(f"worker-start-check/{os.getpid()}")
    return "done" if done else "none"
'''

ASGI_APP = """
\"\"\"An ASGI app that stores one object per request (the fork tests' uvicorn app).\"\"\"

import os
import uuid

from sqlalchemy_obstore import StorageError, storages
from tests.fork_workers import backend

storages.register_backend(backend(os.environ["S3_ENDPOINT"], os.environ["S3_BUCKET"]))
if os.environ.get("STORE_AT_IMPORT") == "1":
    storages.get_backend("forked").put("import-time-check", b"ok")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    try:
        await storages.get_backend("forked").put_async(f"request/{uuid.uuid4().hex}", b"hello")
    except StorageError as exc:
        status, body = 503, f"{type(exc).__name__}: {exc}"
    else:
        done = await storages.get_backend("forked").exists_async(
            f"worker-start-check/{os.getpid()}"
        )
        status, body = 200, f"stored by {os.getpid()}; start-up check: {'done' if done else 'none'}"
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})
"""

GUNICORN_CONFIG = """
import os

from sqlalchemy_obstore import storages


def start_up_check():
    # start-up storage checks belong in a hook with --preload: after the fork, per worker
    storages.get_backend("forked").put(f"worker-start-check/{os.getpid()}", b"ok")


if os.environ["GUNICORN_HOOK"] == "post_fork":

    def post_fork(server, worker):
        start_up_check()

else:

    def post_worker_init(worker):
        start_up_check()
"""


@pytest.fixture
def gunicorn_app(tmp_path: Path) -> Path:
    try:
        import gunicorn  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        unavailable("gunicorn and uvicorn are not installed", "Run the tests with `nox -s tests`.")
    (tmp_path / "fork_app.py").write_text(GUNICORN_APP)
    (tmp_path / "fork_asgi_app.py").write_text(ASGI_APP)
    (tmp_path / "gunicorn_conf.py").write_text(GUNICORN_CONFIG)
    return tmp_path


def _gunicorn(
    app_dir: Path,
    moto: MotoServer,
    *,
    preload: bool,
    store_at_import: bool,
    hook: str | None,
    worker_class: str,
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
        "--worker-class",
        worker_class,
        "--chdir",
        str(app_dir),
        "--pythonpath",
        str(REPO_ROOT),
        *(["--preload"] if preload else []),
        *(["--config", str(app_dir / "gunicorn_conf.py")] if hook else []),
        "fork_app:app" if worker_class == "sync" else "fork_asgi_app:app",
    ]
    yield from _serve(
        app_dir, moto, argv, port, store_at_import=store_at_import, env={"GUNICORN_HOOK": hook}
    )


def _serve(
    app_dir: Path,
    moto: MotoServer,
    argv: list[str],
    port: int,
    *,
    store_at_import: bool,
    env: dict[str, str | None] | None = None,
) -> Iterator[str]:
    environment = {
        **os.environ,
        "S3_ENDPOINT": moto.endpoint,
        "S3_BUCKET": moto.bucket,
        "STORE_AT_IMPORT": "1" if store_at_import else "0",
        "PYTHONPATH": os.pathsep.join([str(app_dir), str(REPO_ROOT)]),
        **{name: value for name, value in (env or {}).items() if value is not None},
    }
    log = app_dir / f"server-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=environment, stdout=out, stderr=subprocess.STDOUT)
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
        (True, True, None, 503),  # the master started obstore's runtime, then forked
        (True, False, None, 200),  # preloaded, but no storage call before the fork
        (True, False, "post_worker_init", 200),  # the start-up check moved to a hook
        (True, False, "post_fork", 200),  # ... or to this one
        (False, True, None, 200),  # no preload: each worker imports the app itself
    ],
    ids=[
        "preload-store-at-import",
        "preload",
        "preload-post-worker-init",
        "preload-post-fork",
        "no-preload",
    ],
)
@pytest.mark.parametrize("worker_class", ["sync", "uvicorn.workers.UvicornWorker"])
def test_gunicorn(
    gunicorn_app: Path,
    moto_server: MotoServer,
    worker_class: str,
    preload: bool,
    store_at_import: bool,
    hook: str | None,
    expected: int,
) -> None:
    for url in _gunicorn(
        gunicorn_app,
        moto_server,
        preload=preload,
        store_at_import=store_at_import,
        hook=hook,
        worker_class=worker_class,
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
                stored, check = response.text.split("; ")
                pids.add(stored.rsplit(" ", 1)[-1])
                assert check == f"start-up check: {'done' if hook else 'none'}", response.text
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


# -- Celery ----------------------------------------------------------------------------------------
REDIS_URL = os.environ.get("SQLALCHEMY_OBSTORE_REDIS", "redis://127.0.0.1:6379/0")
CELERY_ANSWER_WITHIN = 20.0
"""Seconds from sending a task to its result: generous for a loaded machine, far below a hang."""
CELERY_TASKS = ("tests.celery_app.store_and_read", "tests.celery_app.store_and_read_async")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server the Celery tests use as broker and result backend."""
    try:
        import celery  # noqa: F401
        import redis
    except ImportError:
        unavailable("celery[redis] is not installed", "Run the tests with `nox -s tests`.")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        where = urlsplit(REDIS_URL)
        unavailable(
            f"Redis is not reachable at {where.hostname}:{where.port} ({type(exc).__name__})",
            "Start it (bash scripts/ensure-redis.sh) or set "
            "SQLALCHEMY_OBSTORE_REDIS=redis://host:port/db.",
        )
    finally:
        client.close()
    return REDIS_URL


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


class CeleryWorker:
    """A `celery worker` subprocess on the test's own queue, and a client that sends to it."""

    def __init__(self, process: subprocess.Popen[bytes], client: Any, log: Path) -> None:
        self.process = process
        self.client = client
        self.log = log

    def run(self, task: str, content: str) -> tuple[Any, Any, float]:
        """Send `task`, wait for its outcome; returns (result, outcome, seconds)."""
        start = time.perf_counter()
        result = self.client.send_task(task, args=[content])
        try:
            outcome = result.get(timeout=CELERY_ANSWER_WITHIN, propagate=False)
        except Exception as exc:  # celery.exceptions.TimeoutError: a hung pool process
            pytest.fail(
                f"{task}: no result after {CELERY_ANSWER_WITHIN} s ({exc!r})\n{self.tail()}"
            )
        return result, outcome, time.perf_counter() - start

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> tuple[int | None, list[int]]:
        """Warm shutdown (SIGTERM); returns the exit code and any process left in its group.

        Whatever happens, nothing of the worker outlives this call: after 30 s, or when a
        pool process is left behind, the whole process group is killed.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        left = _group_members(self.process.pid)
        if code is None or left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return code, left


@contextlib.contextmanager
def celery_worker(
    redis_url: str, moto: MotoServer, workdir: Path, *, pool: str, store_at: str
) -> Iterator[CeleryWorker]:
    """Start `celery -A tests.celery_app worker` with `pool`; stop it and clean Redis after.

    Every Redis key the worker and the client write starts with a prefix unique to this
    call, and the worker consumes only its own queue: runs that share the server (other
    tests, other checkouts) never see each other's tasks. The keys are deleted at the end.
    """
    import redis
    from celery import Celery

    tag = uuid.uuid4().hex[:12]
    prefix = f"sqlo-test-{tag}:"
    config = {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "broker_transport_options": {"global_keyprefix": prefix},
        "result_backend_transport_options": {"global_keyprefix": prefix},
        "task_default_queue": f"sqlo-test-{tag}",
        "broker_connection_retry_on_startup": True,
    }
    env = {
        **os.environ,
        "SQLO_CELERY_CONFIG": json.dumps(config),
        "S3_ENDPOINT": moto.endpoint,
        "S3_BUCKET": moto.bucket,
        "STORE_AT": store_at,
        "WORKDIR": str(workdir),
        "PYTHONPATH": str(REPO_ROOT),
    }
    argv = [
        sys.executable,
        "-m",
        "celery",
        "--app",
        "tests.celery_app",
        "worker",
        "--pool",
        pool,
        *(["--concurrency", "2"] if pool != "solo" else []),
        "--hostname",
        f"sqlo-{tag}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    log = workdir / f"celery-{pool}-{store_at}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: nothing of it outlives the test
        )
    client = Celery("sqlo_fork_tests_client")
    client.conf.update(config)
    worker = CeleryWorker(process, client, log)
    try:
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text():
            assert worker.alive(), worker.tail()
            assert time.monotonic() < deadline, "the worker did not start\n" + worker.tail()
            time.sleep(0.2)
        yield worker
    finally:
        client.close()
        worker.stop()
        keys = redis.Redis.from_url(redis_url)
        try:
            stale = list(keys.scan_iter(match=f"{prefix}*", count=1000))
            if stale:
                keys.delete(*stale)
        finally:
            keys.close()


def test_celery_prefork_after_a_storage_call_fails_fast(
    redis_url: str, moto_server: MotoServer, tmp_path: Path
) -> None:
    """A storage call at import: the prefork pool forks after it; tasks fail, fast."""
    with celery_worker(
        redis_url, moto_server, tmp_path, pool="prefork", store_at="import"
    ) as worker:
        parent = worker.process.pid
        pool_pids = set()
        for task in CELERY_TASKS * 2:
            result, outcome, seconds = worker.run(task, "never stored")
            assert result.state == "FAILURE", (task, result.state, outcome)
            # rebuilt by Celery from the result backend as the library's own type
            assert isinstance(outcome, ForkedProcessError), (task, outcome)
            assert f"forked from pid {parent} " in str(outcome), outcome
            assert "worker_process_init" in str(outcome)
            assert "ForkedProcessError" in result.traceback
            assert seconds < CELERY_ANSWER_WITHIN, (task, seconds)
            assert worker.alive(), worker.tail()
            pool_pids.add(int(str(outcome).split("(pid ", 1)[1].split(")", 1)[0]))
        assert parent not in pool_pids  # the failures came from the forked pool processes
        code, left = worker.stop()
        assert code == 0, worker.tail()
        assert left == []


@pytest.mark.parametrize(
    ("pool", "store_at"),
    [
        ("prefork", "worker_process_init"),  # the start-up call moved after the fork
        ("prefork", "nowhere"),  # no storage call before the fork
        ("solo", "import"),  # no fork: tasks run in the worker process itself
        ("threads", "import"),
    ],
    ids=["prefork-worker-process-init", "prefork-no-startup-call", "solo", "threads"],
)
def test_celery_supported_patterns_work(
    redis_url: str, moto_server: MotoServer, tmp_path: Path, pool: str, store_at: str
) -> None:
    """Each task commits a row with a file on S3, then reads the file back in a new session."""
    with celery_worker(redis_url, moto_server, tmp_path, pool=pool, store_at=store_at) as worker:
        parent = worker.process.pid
        for number, task in enumerate(CELERY_TASKS * 2):
            content = f"{task} #{number}"
            result, outcome, seconds = worker.run(task, content)
            assert result.state == "SUCCESS", (task, result.state, result.traceback)
            assert outcome["read"] == content
            assert seconds < CELERY_ANSWER_WITHIN, (task, seconds)
            if pool == "prefork":
                assert outcome["pid"] != parent
                # worker_process_init ran in this very pool process, before the task
                expected = outcome["pid"] if store_at == "worker_process_init" else None
                assert outcome["started_in"] == expected
            else:
                assert outcome["pid"] == outcome["started_in"] == parent
        code, left = worker.stop()
        assert code == 0, worker.tail()
        assert left == []
