"""One large-object measurement in a fresh process (started by `run.py`).

    python benchmarks/large.py --impl ours|raw|equal --op path|stream|aiter|download \
        --file SOURCE --size BYTES --key KEY [--s3 JSON | --local DIR]

The implementations:

- `ours`: `FileObject(content=...).save()` / `save_async()` / `iter_chunks()`, with the
  library's defaults (multipart parts of 5 MiB, 4 in flight; downloads in 5 MiB chunks);
- `raw`: obstore's `put` / `put_async` / `get().stream()` with obstore's defaults
  (parts of 5 MiB, 12 in flight; downloads in chunks of at least 10 MiB);
- `equal`: raw obstore given the library's settings (`chunk_size=5 MiB`,
  `max_concurrency=4`; `stream(min_chunk_size=5 MiB)`): memory at equal settings.

Prints one JSON line: wall seconds, CPU seconds of the process (`getrusage`: user +
system time of every thread) and peak RSS growth (bytes) of the operation itself
(peak RSS = `VmHWM` on Linux, `getrusage(RUSAGE_SELF).ru_maxrss` elsewhere).
The baseline high-water mark is taken after imports, store set-up and a 1 KiB warm-up
put (which starts obstore's runtime), so growth is what the big transfer adds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import obstore
from obstore.store import LocalStore, S3Store

from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
from sqlalchemy_obstore.backends import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY

CHUNK = 8 * 1024 * 1024


def _peak() -> int:
    """Peak RSS of this process in bytes.

    Linux's `ru_maxrss` survives fork + exec, so a child started by a big parent would
    report the parent's peak; `VmHWM` belongs to this process image alone. Elsewhere
    fall back to `ru_maxrss` (KiB on Linux, bytes on macOS).
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _run(args: argparse.Namespace, store: Any) -> None:
    source = Path(args.file)
    if args.impl == "ours":
        if args.op == "download":
            f = FileObject(filename="big.bin", path=args.key, backend="large")
            total = sum(len(c) for c in f.iter_chunks())
            assert total == args.size, total
        elif args.op == "path":
            FileObject(filename="big.bin", content=source, backend="large").save()
        elif args.op == "stream":
            with source.open("rb") as fh:
                FileObject(filename="big.bin", content=fh, backend="large").save()
        else:
            f = FileObject(filename="big.bin", content=_file_chunks(source), backend="large")
            asyncio.run(f.save_async())
        return
    # raw obstore: its defaults ("raw"), or the library's settings ("equal")
    equal = args.impl == "equal"
    put: dict[str, Any] = (
        {"chunk_size": DEFAULT_CHUNK_SIZE, "max_concurrency": DEFAULT_MAX_CONCURRENCY}
        if equal
        else {}
    )
    if args.op == "download":
        result = obstore.get(store, args.key)
        stream = result.stream(min_chunk_size=DEFAULT_CHUNK_SIZE) if equal else result.stream()
        total = sum(len(c) for c in stream)
        assert total == args.size, total
    elif args.op == "path":
        obstore.put(store, args.key, source, **put)
    elif args.op == "stream":
        with source.open("rb") as fh:
            obstore.put(store, args.key, fh, **put)
    else:

        async def upload() -> None:
            await obstore.put_async(store, args.key, _file_chunks(source), **put)

        asyncio.run(upload())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["ours", "raw", "equal"], required=True)
    parser.add_argument("--op", choices=["path", "stream", "aiter", "download"], required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--s3")
    parser.add_argument("--local")
    args = parser.parse_args()
    store: Any = S3Store(**json.loads(args.s3)) if args.s3 else LocalStore(args.local)
    storages.register_backend(ObstoreBackend("large", store))
    obstore.put(store, f"warmup/{os.getpid()}", b"x" * 1024)

    before = _peak()
    cpu, start = _cpu(), time.perf_counter()
    _run(args, store)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    after = _peak()
    time.sleep(0.3)  # let obstore's runtime settle before the interpreter goes down
    sys.stdout.write(json.dumps({"wall": wall, "cpu": cpu, "rss_growth": after - before}) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
