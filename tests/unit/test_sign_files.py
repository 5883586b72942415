"""`sign_files` / `sign_files_async`: many files' URLs, one store call per backend.

S3 and Azure backends with static fake credentials sign offline (pure CPU); a memory
backend signs through an `HmacUrlSigner`. No request leaves the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sqlalchemy_obstore import (
    FileObject,
    InvalidExpiryError,
    InvalidFileObjectError,
    NoContentError,
    ObstoreBackend,
    UnsupportedOperationError,
    sign_files,
    sign_files_async,
    storages,
)
from sqlalchemy_obstore.signing import HmacUrlSigner

SECRET = "s" * 40


class CountingBackend(ObstoreBackend):
    """A real `ObstoreBackend` that records the path lists its `sign` is called with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []
        self._outer = True

    def _record(self, paths: Any) -> None:
        if self._outer:
            self.batches.append([paths] if isinstance(paths, str) else list(paths))

    def sign(self, paths: Any, **kwargs: Any) -> Any:
        self._record(paths)
        return super().sign(paths, **kwargs)

    async def sign_async(self, paths: Any, **kwargs: Any) -> Any:
        self._record(paths)
        self._outer = False  # (with static credentials it signs inline through sign())
        try:
            return await super().sign_async(paths, **kwargs)
        finally:
            self._outer = True


def s3(key: str = "s3") -> CountingBackend:
    backend = CountingBackend(
        key,
        "s3://bucket/",
        region="eu-west-1",
        access_key_id="AKIAFAKEKEYID0000001",
        secret_access_key=SECRET,
    )
    storages.register_backend(backend)
    return backend


def memory_with_signer(key: str = "mem") -> CountingBackend:
    backend = CountingBackend(key, "memory://")
    backend.url_signer = HmacUrlSigner(SECRET, base_url="https://app.example/files")
    storages.register_backend(backend)
    return backend


def stored(backend: str, *names: str) -> list[FileObject]:
    return [FileObject(backend=backend, path=f"k/{name}") for name in names]


def path_of(url: str) -> str:
    return urlsplit(url).path


def expires(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]


async def sign(use_async: bool, files: Sequence[FileObject], **kwargs: Any) -> list[str]:
    return await sign_files_async(files, **kwargs) if use_async else sign_files(files, **kwargs)


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def use_async(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_urls_come_back_in_order_one_batch_per_backend(use_async: bool) -> None:
    a, b = s3("a"), memory_with_signer("b")
    files = [*stored("a", "1.txt"), *stored("b", "2.txt"), *stored("a", "3.txt", "4.txt")]

    urls = await sign(use_async, files)

    for url, name in zip(urls, ["1.txt", "2.txt", "3.txt", "4.txt"], strict=True):
        assert path_of(url).endswith(f"/k/{name}")
    assert urls[1].startswith("https://app.example/files/b/k/2.txt?")
    assert a.batches == [["k/1.txt", "k/3.txt", "k/4.txt"]]
    assert b.batches == [["k/2.txt"]]


async def test_signed_urls_are_cached_on_the_files(use_async: bool) -> None:
    backend = s3()
    files = stored("s3", "1.txt", "2.txt")

    urls = await sign(use_async, files)

    assert [f.sign() for f in files] == urls  # cache hits: the same strings
    assert backend.batches == [["k/1.txt", "k/2.txt"]]


async def test_cached_urls_are_reused_and_only_the_rest_is_signed(use_async: bool) -> None:
    backend = s3()
    first, second = stored("s3", "1.txt", "2.txt")
    cached = first.sign()
    backend.batches.clear()

    urls = await sign(use_async, [first, second])

    assert urls[0] is cached
    assert backend.batches == [["k/2.txt"]]


async def test_nothing_to_sign_makes_no_call(use_async: bool) -> None:
    backend = s3()
    files = stored("s3", "1.txt")
    files[0].sign()
    backend.batches.clear()

    assert await sign(use_async, files) == [files[0].sign()]
    assert await sign(use_async, []) == []
    assert backend.batches == []


async def test_lifetime_applies_to_every_url_and_is_cached_per_lifetime(use_async: bool) -> None:
    s3()
    files = stored("s3", "1.txt", "2.txt")

    short = await sign(use_async, files, expires_in=60)
    long = await sign(use_async, files, expires_in=timedelta(hours=2))

    assert [expires(u) for u in short] == ["60", "60"]
    assert [expires(u) for u in long] == ["7200", "7200"]
    assert files[0].sign(expires_in=60) == short[0]


async def test_hmac_urls_verify(use_async: bool) -> None:
    backend = memory_with_signer()
    files = stored("mem", "a b.txt")

    (url,) = await sign(use_async, files)

    signer = backend.url_signer
    assert isinstance(signer, HmacUrlSigner)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    signer.verify(
        "mem", "k/a b.txt", method="GET", expires=query["expires"], signature=query["signature"]
    )


async def test_refusals_are_typed_and_sign_nothing(use_async: bool, tmp_path: Path) -> None:
    backend = s3()
    storages.register_backend(ObstoreBackend("plain-local", tmp_path))
    good = stored("s3", "1.txt")

    with pytest.raises(NoContentError):
        await sign(use_async, [*good, FileObject(filename="new.txt", content=b"x")])
    with pytest.raises(InvalidFileObjectError, match="not dict"):
        await sign(use_async, [*good, {"path": "k/1.txt"}])  # type: ignore[list-item]
    with pytest.raises(UnsupportedOperationError):
        await sign(use_async, [*good, *stored("plain-local", "2.txt")])
    with pytest.raises(InvalidExpiryError):
        await sign(use_async, good, expires_in=timedelta(days=8))
    assert backend.batches == []
    assert good[0].__dict__["_sign_cache"] == {}  # nothing half-recorded
