"""A process that starts a large multipart upload and keeps it going until it is killed.

Run as `python -m tests.integration.multipart_writer '<backend json>' <path>`: it builds
the backend the way an application does (`ObstoreBackend(key, fs, **config)`), and
streams an endless body of 5 MiB chunks to `path` with the sync `put` (a multipart
upload). It prints `uploading` once the first part has been handed over. The tests kill
it with SIGKILL in the middle of the upload: no `finally`, no abort can run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy_obstore import ObstoreBackend

CHUNK = 5 * 1024 * 1024


def body() -> Iterator[bytes]:
    chunk = b"m" * CHUNK
    for index in range(10_000):
        yield chunk
        if index == 1:
            print("uploading", flush=True)
        time.sleep(0.2)


def main() -> None:
    spec = json.loads(sys.argv[1])
    fs = spec.pop("fs")
    backend = ObstoreBackend(spec.pop("key"), Path(fs) if spec.pop("local", False) else fs, **spec)
    backend.put(sys.argv[2], body())


if __name__ == "__main__":
    main()
