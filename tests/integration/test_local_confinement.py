"""A local-files backend never follows a symbolic link below its root.

Next to the storage root lives `outside/` with a secret file and a directory. Links to
them are planted inside the root (a linked file, a linked directory at the top and
deeper down, a dangling link, and a link that points back inside the root), and every
operation of the backend — reads (whole, streamed, ranges, head), writes (one buffer,
streamed multipart, async), copies, deletes, listings, the garbage collector and the
HMAC-signed route — is tried through each, sync and async. Each is refused with
`PathEscapeError` (listings skip the links), and the files outside are never read,
changed or removed.

The races (a directory swapped for a link while an operation runs) are staged
deterministically: the attacker's move runs right after the library's check, the worst
moment, and what each operation guarantees then is asserted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.routing import Mount

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    PathEscapeError,
    StoragePermissionError,
    StoredObject,
    collect_garbage,
    storages,
)
from sqlalchemy_obstore._local import LocalRoot
from sqlalchemy_obstore.contrib.starlette import storage_lifespan, storage_routes

SECRET = b"outside secret"
SIGNING = "s" * 32


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "dir" / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "dir" / "inner.txt").write_bytes(SECRET)
    (outside / "dir" / "deep" / "x.txt").write_bytes(SECRET)
    (root / "real" / "sub").mkdir(parents=True)
    (root / "real" / "ok.txt").write_bytes(b"inside")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside / "dir")
    (root / "real" / "deeplink").symlink_to(outside / "dir")
    (root / "dangling").symlink_to(outside / "nothing-here")
    (root / "innerlink").symlink_to(root / "real")  # points inside the root: refused too
    return {"root": root, "outside": outside}


@pytest.fixture
def local(tree: dict[str, Path]) -> ObstoreBackend:
    backend = ObstoreBackend("local", tree["root"])
    storages.register_backend(backend)
    return backend


def snapshot(outside: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(outside)): p.read_bytes()
        for p in sorted(outside.rglob("*"))
        if p.is_file()
    }


LINKED_KEYS = [
    "link.txt",  # a linked file
    "dirlink/inner.txt",  # a linked directory at the top
    "dirlink/deep/x.txt",  # ... and a path through it
    "real/deeplink/inner.txt",  # a linked directory deeper down
    "dangling",  # a link to nothing
    "dangling/x.txt",
    "innerlink/ok.txt",  # a link that stays inside: still never followed
]


async def run(mode: str, sync: Callable[[], Any], async_: Callable[[], Any]) -> Any:
    return sync() if mode == "sync" else await async_()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("key", LINKED_KEYS)
async def test_reads_through_a_link_are_refused(
    local: ObstoreBackend, tree: dict[str, Path], key: str, mode: str
) -> None:
    before = snapshot(tree["outside"])
    reads: list[tuple[Callable[[], Any], Callable[[], Any]]] = [
        (lambda: local.get_bytes(key), lambda: local.get_bytes_async(key)),
        (lambda: local.head(key), lambda: local.head_async(key)),
        (lambda: local.exists(key), lambda: local.exists_async(key)),
        (lambda: local.get_range(key, 0, 5), lambda: local.get_range_async(key, 0, 5)),
        (lambda: local.get_suffix(key, 5), lambda: local.get_suffix_async(key, 5)),
        (lambda: list(local.iter_chunks(key)), lambda: collect(local.iter_chunks_async(key))),
    ]
    for sync, async_ in reads:
        with pytest.raises(PathEscapeError) as info:
            await run(mode, sync, async_)
        assert info.value.path == key
        assert info.value.backend == "local"
        assert isinstance(info.value, StoragePermissionError)
        assert SECRET.decode() not in str(info.value)
        assert str(tree["outside"]) not in str(info.value)  # the target is not revealed
    assert snapshot(tree["outside"]) == before


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("key", [*LINKED_KEYS, "dirlink/new.txt", "real/deeplink/new/x.txt"])
async def test_writes_through_a_link_are_refused(
    local: ObstoreBackend, tree: dict[str, Path], key: str, mode: str
) -> None:
    before = snapshot(tree["outside"])
    big = [b"x" * (1 << 20)] * 12  # 12 MiB: a streamed multipart upload
    writes: list[tuple[Callable[[], Any], Callable[[], Any]]] = [
        (lambda: local.put(key, b"data"), lambda: local.put_async(key, b"data")),
        (
            lambda: local.put(key, b"data", create_only=True),
            lambda: local.put_async(key, b"data", create_only=True),
        ),
        (lambda: local.put(key, iter(big)), lambda: local.put_async(key, iter(big))),
        (  # what FileObject.save calls
            lambda: local.put_buffer(key, b"data", {"Content-Type": "text/plain"}, None),
            lambda: local.put_buffer_async(key, b"data", {"Content-Type": "text/plain"}, None),
        ),
        (lambda: local.put(key, iter(big)), lambda: local.put_async(key, stream(big))),
    ]
    for sync, async_ in writes:
        with pytest.raises(PathEscapeError):
            await run(mode, sync, async_)
    assert snapshot(tree["outside"]) == before
    assert not (tree["outside"] / "dir" / "new.txt").exists()
    assert (tree["root"] / "link.txt").is_symlink()  # not replaced either


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("key", LINKED_KEYS)
async def test_copies_and_deletes_through_a_link_are_refused(
    local: ObstoreBackend, tree: dict[str, Path], key: str, mode: str
) -> None:
    before = snapshot(tree["outside"])
    with pytest.raises(PathEscapeError):  # as the source: nothing is copied in
        await run(
            mode,
            lambda: local.copy(key, "real/copied.txt"),
            lambda: local.copy_async(key, "real/copied.txt"),
        )
    assert not (tree["root"] / "real" / "copied.txt").exists()
    with pytest.raises(PathEscapeError):  # as the destination: nothing is copied out
        await run(
            mode,
            lambda: local.copy("real/ok.txt", key),
            lambda: local.copy_async("real/ok.txt", key),
        )
    with pytest.raises(PathEscapeError):
        await run(mode, lambda: local.delete(key), lambda: local.delete_async(key))
    with pytest.raises(PathEscapeError):  # in a batch too
        await run(
            mode,
            lambda: local.delete(["real/missing.txt", key]),
            lambda: local.delete_async(["real/missing.txt", key]),
        )
    assert snapshot(tree["outside"]) == before
    assert os.path.lexists(tree["root"] / key.split("/")[0])  # the link itself stays


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_listings_skip_links_and_log_them(
    local: ObstoreBackend, tree: dict[str, Path], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tree["root"] / "real" / "sub" / "deeper.txt").write_bytes(b"deeper")
    (tree["root"] / "loop").symlink_to(tree["root"])  # a loop would break obstore's walk
    with caplog.at_level(logging.WARNING, logger="sqlalchemy_obstore.local"):
        if mode == "sync":
            listed = [info.path for info in local.list_objects()]
        else:
            listed = [info.path async for info in local.list_objects_async()]
    assert sorted(listed) == ["real/ok.txt", "real/sub/deeper.txt"]
    skipped = {record.args[0] for record in caplog.records if record.args}
    assert skipped >= {"link.txt", "dirlink", "real/deeplink", "dangling", "innerlink", "loop"}
    assert {info.path for info in local.list_objects("real")} == {
        "real/ok.txt",
        "real/sub/deeper.txt",
    }
    assert [i.path for i in local.list_objects("real", offset="real/ok.txt")] == [
        "real/sub/deeper.txt"
    ]
    with pytest.raises(PathEscapeError):  # a listing *through* a link is refused
        list(local.list_objects("dirlink"))
    assert list(local.list_objects("no/such/prefix")) == []


def test_listing_reports_what_obstore_reports(local: ObstoreBackend) -> None:
    listed = next(i for i in local.list_objects() if i.path == "real/ok.txt")
    head = local.head("real/ok.txt")
    assert (listed.size, listed.etag, listed.last_modified) == (
        head.size,
        head.etag,
        head.last_modified,
    )


def test_files_through_the_public_api(local: ObstoreBackend, tree: dict[str, Path]) -> None:
    with pytest.raises(PathEscapeError):
        FileObject(path="dirlink/inner.txt", backend="local").get_content()
    with pytest.raises(PathEscapeError):
        FileObject(path="link.txt", backend="local").iter_chunks().__next__()
    saved = FileObject(filename="a.txt", content=b"fine", backend="local").save()
    assert saved.get_content() == b"fine"
    saved.delete()
    assert not (tree["root"] / saved.path).exists()


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "confined_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject("local"))


def test_garbage_collection_never_reaches_outside(
    local: ObstoreBackend, tree: dict[str, Path], tmp_path: Path
) -> None:
    from datetime import timedelta

    engine = create_engine(f"sqlite:///{tmp_path / 'gc.db'}")
    Base.metadata.create_all(engine)
    (tree["root"] / "loop").symlink_to(tree["root"])
    before = snapshot(tree["outside"])
    dry = collect_garbage(engine, Base, grace_period=timedelta(0))
    assert dry.backends["local"].orphan_paths == ["real/ok.txt"]  # nothing through a link
    assert dry.backends["local"].errors == []  # the loop does not break the listing
    report = collect_garbage(
        engine, Base, grace_period=timedelta(0), dry_run=False, allow_unsafe_grace_period=True
    )
    assert (report.backends["local"].deleted, report.backends["local"].errors) == (1, [])
    assert snapshot(tree["outside"]) == before
    assert (tree["root"] / "dirlink").is_symlink()
    engine.dispose()


async def test_the_hmac_signed_route_refuses_links(
    local: ObstoreBackend, tree: dict[str, Path]
) -> None:
    app = Starlette(routes=[Mount("/_storage", app=storage_routes(signing_secret=SIGNING))])
    async with storage_lifespan([], signing_secret=SIGNING):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for key in ("link.txt", "dirlink/inner.txt"):
                url = local.sign(key, expires_in=60)
                refused = await client.get(url)  # the route never streams it
                assert refused.status_code == 403
                assert b"outside" not in refused.content
            url = local.sign("dirlink/upload.bin", method="PUT", expires_in=60)
            assert (await client.put(url, content=b"upload")).status_code == 403
            ok = local.sign("real/ok.txt", expires_in=60)
            assert (await client.get(ok)).content == b"inside"
    assert not (tree["outside"] / "dir" / "upload.bin").exists()


# -- races: the attacker moves right after the library's check --------------------------------
@pytest.fixture
def attacker(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Callable[[], None]], None]:
    """Run `move` once, right after the walk of `key` (the worst moment for the check)."""

    def arm(key: str, move: Callable[[], None]) -> None:
        original = LocalRoot._walk
        armed = [True]

        def walk(self: LocalRoot, walked: str, operation: str) -> Any:
            result = original(self, walked, operation)
            if walked == key and armed[0]:
                armed[0] = False
                move()
            return result

        monkeypatch.setattr(LocalRoot, "_walk", walk)

    return arm


def swap_for_link(directory: Path, target: Path) -> Callable[[], None]:
    def move() -> None:
        directory.rename(directory.with_name(directory.name + ".moved"))
        directory.symlink_to(target)

    return move


@pytest.fixture
def victim(tree: dict[str, Path]) -> Path:
    """`root/d/f.txt`, with `outside/d/f.txt` (a secret) ready to be swapped in."""
    (tree["root"] / "d").mkdir()
    (tree["root"] / "d" / "f.txt").write_bytes(b"inside")
    (tree["outside"] / "d").mkdir()
    (tree["outside"] / "d" / "f.txt").write_bytes(SECRET)
    return tree["root"] / "d"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("swap_back", [False, True])
async def test_race_a_read_never_returns_bytes_from_outside(
    local: ObstoreBackend,
    tree: dict[str, Path],
    victim: Path,
    attacker: Any,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    swap_back: bool,
) -> None:
    # After the check, `d` becomes a link to outside/d: obstore opens outside/d/f.txt.
    attacker("d/f.txt", swap_for_link(victim, tree["outside"] / "d"))
    if swap_back:  # ... and the attacker restores `d` before the library looks again
        original = LocalRoot.opened

        def opened(self: LocalRoot, *args: Any) -> None:
            victim.unlink()
            victim.with_name("d.moved").rename(victim)
            original(self, *args)

        monkeypatch.setattr(LocalRoot, "opened", opened)
    with pytest.raises(PathEscapeError) as info:
        await run(
            mode, lambda: local.get_bytes("d/f.txt"), lambda: local.get_bytes_async("d/f.txt")
        )
    # Either way nothing is returned; with the link gone, only the inode tells.
    assert ("appeared on the way" in str(info.value)) is swap_back


def test_race_a_delete_never_removes_a_file_outside(
    local: ObstoreBackend, tree: dict[str, Path], victim: Path, attacker: Any
) -> None:
    # Deletes go through directory descriptors: the swap cannot redirect them. The file
    # that was inside (now moved aside) is the one deleted; the outside one stays.
    attacker("d/f.txt", swap_for_link(victim, tree["outside"] / "d"))
    local.delete("d/f.txt")
    assert (tree["outside"] / "d" / "f.txt").read_bytes() == SECRET
    assert not (tree["root"] / "d.moved" / "f.txt").exists()


def test_race_a_copy_from_outside_is_detected_and_undone(
    local: ObstoreBackend, tree: dict[str, Path], victim: Path, attacker: Any
) -> None:
    attacker("d/f.txt", swap_for_link(victim, tree["outside"] / "d"))
    with pytest.raises(PathEscapeError, match="appeared on the way"):
        local.copy("d/f.txt", "real/stolen.txt")
    assert not (tree["root"] / "real" / "stolen.txt").exists()  # the copy was removed
    assert (tree["outside"] / "d" / "f.txt").read_bytes() == SECRET


def test_race_a_write_is_detected(
    local: ObstoreBackend, tree: dict[str, Path], victim: Path, attacker: Any
) -> None:
    # The documented limit: a write whose directory is swapped for a link after the
    # check is reported, but obstore has written its (new) file by then.
    attacker("d/new.txt", swap_for_link(victim, tree["outside"] / "d"))
    with pytest.raises(PathEscapeError):
        local.put("d/new.txt", b"data")
    assert (tree["outside"] / "d" / "f.txt").read_bytes() == SECRET  # not overwritten
    assert (tree["outside"] / "d" / "new.txt").exists()  # the limit, as documented


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_race_a_directory_another_writer_creates_meanwhile_is_opened(
    local: ObstoreBackend, tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # Concurrent uploads share new parent directories: this walk's open finds nothing,
    # and another writer creates the directory before the check that follows. That is
    # no escape and no failure (it once failed a migration with "No object at"): the
    # directory is opened again and the write goes through.
    original = LocalRoot._open_dir
    created: list[str] = []

    def open_dir(self: LocalRoot, name: str, parent: int) -> int:
        try:
            return original(self, name, parent)
        except FileNotFoundError:
            if name == "fresh" and not created:
                os.mkdir(name, dir_fd=parent)  # the other writer, at the worst moment
                created.append(name)
            raise

    monkeypatch.setattr(LocalRoot, "_open_dir", open_dir)
    await run(
        mode,
        lambda: local.put("fresh/new.txt", b"data"),
        lambda: local.put_async("fresh/new.txt", b"data"),
    )
    assert created == ["fresh"]
    assert (tree["root"] / "fresh" / "new.txt").read_bytes() == b"data"
    assert local.get_bytes("fresh/new.txt") == b"data"


def test_the_root_itself_may_be_a_link(tmp_path: Path) -> None:
    # The configured root is trusted configuration: resolved once, then confined.
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "root-link").symlink_to(real)
    backend = ObstoreBackend("via-link", tmp_path / "root-link")
    backend.put("a/b.txt", b"ok")
    assert backend.get_bytes("a/b.txt") == b"ok"
    assert [i.path for i in backend.list_objects()] == ["a/b.txt"]
    backend.delete("a/b.txt")
    assert list(real.iterdir()) == []


def test_invalid_keys_are_still_refused(local: ObstoreBackend) -> None:
    for key in ("../outside/secret.txt", "a/../../x", "a//b"):
        with pytest.raises(ValueError):
            local.delete(key)
        with pytest.raises(ValueError):
            local.get_bytes(key)
