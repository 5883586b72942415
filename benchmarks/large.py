"""One large-object measurement in a fresh process (started by `run.py`).

    python benchmarks/large.py --impl ours|raw --op path|stream|aiter|download \
        --file SOURCE --size BYTES --key KEY [--s3 JSON | --local DIR]

Prints one JSON line: wall seconds and peak RSS growth (bytes) of the operation itself
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
    elif args.op == "download":
        total = sum(len(c) for c in obstore.get(store, args.key).stream())
        assert total == args.size, total
    elif args.op == "path":
        obstore.put(store, args.key, source)
    elif args.op == "stream":
        with source.open("rb") as fh:
            obstore.put(store, args.key, fh)
    else:

        async def put() -> None:
            await obstore.put_async(store, args.key, _file_chunks(source))

        asyncio.run(put())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["ours", "raw"], required=True)
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
    start = time.perf_counter()
    _run(args, store)
    wall = time.perf_counter() - start
    after = _peak()
    time.sleep(0.3)  # let obstore's runtime settle before the interpreter goes down
    sys.stdout.write(json.dumps({"wall": wall, "rss_growth": after - before}) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
