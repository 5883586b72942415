"""Memory stays bounded however large the file: streamed uploads and downloads.

Each transfer runs in a fresh Python process (this file, run as a script) that reports
the growth of its peak resident set size (`VmHWM`) over the transfer alone: the
baseline is taken after imports, backend set-up and a small warm-up upload and download
(which start obstore's runtime). The same transfer is measured at 64 MiB and at
256 MiB, and both growths must stay under one fixed bound that is far smaller than the
smaller file: memory does not grow with the size of the object.

Linux only (`/proc/self/status`); the CI runs Linux.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.servers import S3Server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)"
    ),
]

MIB = 1024 * 1024
SIZES_MIB = (64, 256)
BOUND_MIB = 60
"""Largest peak-RSS growth allowed for any transfer, whatever its size.

The default multipart settings keep at most 4 parts of 5 MiB in flight, and a streamed
download holds about one 5 MiB chunk at a time; obstore's buffers, the HTTP client and
the allocator's per-thread arenas of obstore's runtime add some more: a streamed S3
download measured 15-32 MiB on a quiet machine and up to 50 MiB on a loaded one. 60 MiB
is still under the 64 MiB file and under a quarter of the 256 MiB one, so holding either
whole fails the test.
"""
BLOCK = 1 * MIB
KEY = "bounds"


# -- the measured process --------------------------------------------------------------
def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _stream(size: int) -> Iterator[bytes]:
    """`size` bytes in 1 MiB chunks; one block reused, so the source itself holds ~1 MiB."""
    block = os.urandom(BLOCK)
    for _ in range(size // BLOCK):
        yield block


def _child(target: dict[str, Any], op: str, size: int, arg: str) -> dict[str, Any]:
    from sqlalchemy_obstore import FileObject, ObstoreBackend, storages

    if target["kind"] == "local":
        backend = ObstoreBackend(KEY, Path(target["directory"]))
    else:
        backend = ObstoreBackend(KEY, f"s3://{target['bucket']}/", **target["config"])
    storages.register_backend(backend)
    warm = FileObject(filename="warm.bin", content=os.urandom(64 * 1024), backend=KEY).save()
    assert sum(len(c) for c in warm.iter_chunks()) == 64 * 1024

    before = _peak_rss()
    result: dict[str, Any] = {}
    if op == "upload-iterator":
        file = FileObject(filename="big.bin", content=_stream(size), backend=KEY).save()
        result = {"path": file.path, "size": file.size}
    elif op == "upload-path":
        file = FileObject(content=Path(arg), backend=KEY).save()
        result = {"path": file.path, "size": file.size}
    else:
        file = FileObject(path=arg, backend=KEY)
        result = {"size": sum(len(chunk) for chunk in file.iter_chunks())}
    result["growth"] = _peak_rss() - before
    return result


def _main() -> None:
    target, op, size, arg = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    result = _child(target, op, size, arg)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    time.sleep(0.2)  # let obstore's runtime settle before leaving (see emulators.md)
    os._exit(0)


# -- the tests --------------------------------------------------------------------------
def _measure(target: dict[str, Any], op: str, size: int, arg: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(target), op, str(size), arg],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _check(target: dict[str, Any], tmp_path: Path) -> None:
    growths: dict[str, int] = {}
    for mib in SIZES_MIB:
        size = mib * MIB
        streamed = _measure(target, "upload-iterator", size)
        assert streamed["size"] == size
        growths[f"upload from an iterator, {mib} MiB"] = streamed["growth"]

        source = tmp_path / f"source-{mib}.bin"
        with source.open("wb") as fh:
            for block in _stream(size):
                fh.write(block)
        from_path = _measure(target, "upload-path", size, str(source))
        source.unlink()
        assert from_path["size"] == size
        growths[f"upload from a path, {mib} MiB"] = from_path["growth"]

        download = _measure(target, "download", size, streamed["path"])
        assert download["size"] == size
        growths[f"streamed download, {mib} MiB"] = download["growth"]
    report = {name: f"{growth / MIB:.1f} MiB" for name, growth in growths.items()}
    assert all(growth < BOUND_MIB * MIB for growth in growths.values()), report


def test_local_files_memory_is_bounded(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _check({"kind": "local", "directory": str(store)}, tmp_path)


def test_s3_memory_is_bounded(moto_server: S3Server, tmp_path: Path) -> None:
    config = {
        "endpoint": moto_server.endpoint,
        "access_key_id": moto_server.access_key_id,
        "secret_access_key": moto_server.secret_access_key,
        "region": moto_server.region,
        "virtual_hosted_style_request": False,
    }
    _check({"kind": "s3", "bucket": moto_server.bucket, "config": config}, tmp_path)


if __name__ == "__main__":
    _main()
