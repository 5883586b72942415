"""Signed PUT and GET of 256 MiB through a real uvicorn server keep its memory bounded.

The server (Litestar plugin or Starlette router, local-files backend) runs in a
subprocess; its peak RSS (`VmHWM`) is read before and after streaming the body in and
out, and must grow by far less than the object's size: the body is never held whole.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sqlalchemy_obstore.signing import HmacUrlSigner
from tests.integration.uvicorn_probe import MAX_GROWTH, pattern_chunks, peak_rss, uvicorn_server
from tests.integration.web_signed_app import BACKEND, SECRET

SIZE = 256 * 1024 * 1024
assert MAX_GROWTH < SIZE // 2


@pytest.fixture(params=["litestar", "starlette"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """uvicorn serving one app on 127.0.0.1; yields (base URL, pid, store directory)."""
    store = tmp_path / "store"
    store.mkdir()
    factory = f"tests.integration.web_signed_app:uvicorn_{request.param}"
    with uvicorn_server(factory, {"W1_STORE_DIR": str(store)}, tmp_path / "uvicorn.log") as (
        base,
        pid,
    ):
        yield base, pid, store


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
        before = peak_rss(pid)

        sent = hashlib.sha256()
        response = http.put(
            url("big/huge.bin", "PUT"), content=pattern_chunks(SIZE, sent, seed=b"w1")
        )
        assert response.status_code == 200, response.text
        after_upload = peak_rss(pid)

        received = hashlib.sha256()
        length = 0
        with http.stream("GET", url("big/huge.bin", "GET")) as download:
            assert download.status_code == 200
            assert download.headers["content-length"] == str(SIZE)
            for chunk in download.iter_bytes():
                received.update(chunk)
                length += len(chunk)
        after_download = peak_rss(pid)

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
