"""Process scenarios for the fork tests, run in a fresh interpreter.

`python -m tests.fork_workers SCENARIO ENDPOINT BUCKET WORKDIR` prints one JSON object
per storage call a worker process made: ``{"call": ..., "outcome": "ok" | error type,
"seconds": ..., "message": ...}``, or ``"outcome": "hang"`` when a worker had not
answered after `HANG_AFTER` seconds (it is killed then). Scenarios:

- ``fork-after-use``: the parent makes a storage call, then forks (multiprocessing's
  `fork` start method): the worker must fail at once with `ForkedProcessError`;
- ``fork-before-use``: the parent only builds its backends, forks, and uses storage
  after: the worker works, and so does the parent;
- ``spawn-after-use`` / ``forkserver-after-use``: the parent makes a storage call, then
  starts the worker with `spawn` / `forkserver`: the worker works.

Each worker makes three calls on the S3 server: a sync put on the backend it inherited
(or rebuilt, with spawn), an async put on a backend built in the worker, and a
`Session.commit()` that uploads a file (SQLite under WORKDIR). A fresh interpreter
matters: whether the parent has started obstore's runtime is the whole point.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
import uuid
import warnings
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, storages

HANG_AFTER = 20.0
KEY = "forked"


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "fork_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(KEY))


def backend(endpoint: str, bucket: str, key: str = KEY) -> ObstoreBackend:
    """A backend on the moto server (no signature checks)."""
    return ObstoreBackend(
        key,
        f"s3://{bucket}/",
        endpoint=endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        region="us-east-1",
        virtual_hosted_style_request=False,
    )


def _timed(call: str, function: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        function()
        outcome, message = "ok", ""
    except Exception as exc:
        outcome, message = type(exc).__name__, str(exc)
    return {
        "call": call,
        "outcome": outcome,
        "seconds": round(time.perf_counter() - start, 4),
        "message": message,
    }


def worker(endpoint: str, bucket: str, workdir: str, results: Any) -> None:
    """Make the three storage calls and send what happened."""
    if KEY not in storages:  # spawn / forkserver: a fresh interpreter
        storages.register_backend(backend(endpoint, bucket))
    inherited = storages.get_backend(KEY)
    name = uuid.uuid4().hex
    results.put(_timed("sync put", lambda: inherited.put(f"{name}/sync", b"sync")))

    async def put_async() -> None:
        await backend(endpoint, bucket, "fresh").put_async(f"{name}/async", b"async")

    results.put(_timed("async put", lambda: asyncio.run(put_async())))

    def commit() -> None:
        engine = create_engine(f"sqlite:///{workdir}/{name}.sqlite")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(Doc(file=FileObject(filename="a.txt", content=b"in a worker")))
            session.commit()
        engine.dispose()

    results.put(_timed("session commit", commit))


def run(scenario: str, endpoint: str, bucket: str, workdir: str) -> list[dict[str, Any]]:
    method, when = scenario.split("-", 1)
    parent = backend(endpoint, bucket)
    storages.register_backend(parent)
    if when == "after-use":
        parent.put("parent/before", b"parent")  # starts obstore's runtime in this process
    context = multiprocessing.get_context(method)
    results = context.Queue()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a multi-threaded process (obstore's runtime
        # threads) may deadlock: exactly what this scenario is about.
        warnings.simplefilter("ignore", DeprecationWarning)
        process = context.Process(target=worker, args=(endpoint, bucket, workdir, results))
        process.start()
    found = []
    deadline = time.monotonic() + HANG_AFTER
    for call in ("sync put", "async put", "session commit"):
        try:
            found.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except Exception:
            found.append({"call": call, "outcome": "hang", "seconds": HANG_AFTER})
            process.kill()
            break
    process.join(10)
    if when == "before-use":
        found.append(_timed("parent put after the fork", lambda: parent.put("parent/x", b"x")))
    return found


if __name__ == "__main__":
    for line in run(*sys.argv[1:5]):
        print(json.dumps(line), flush=True)
