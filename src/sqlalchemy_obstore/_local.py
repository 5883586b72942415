"""A local-files backend stays inside its root: no symbolic link below it is ever followed.

obstore's `LocalStore` canonicalises its root once, when it is created, and then maps a
key to `<root>/<key>` and lets the operating system resolve that path, following every
symbolic link on the way. A link anywhere below the root (`root/uploads -> /etc`,
`root/a/b.txt -> ~/.ssh/id_rsa`) would let reads, writes, copies, deletes and listings
reach files outside it. [`LocalRoot`][] closes that for
[`ObstoreBackend`][sqlalchemy_obstore.ObstoreBackend]:

* **Every key is walked from the root without following links** before obstore sees
  it: each directory is opened relative to the one above with `O_NOFOLLOW`, and the
  leaf is `lstat`-ed relative to its directory, so the walk itself cannot be redirected
  while it runs. A symbolic link anywhere on the way (to a file or a directory,
  wherever it points, dangling or not) raises
  [`PathEscapeError`][sqlalchemy_obstore.PathEscapeError] and obstore is not called.
* **Reads are verified after obstore opened the file.** obstore reports the inode of
  the file it opened (in the local entity tag, `<inode>-<mtime>-<size>`): it must be the
  inode the walk found, or the one a fresh walk finds now; otherwise a link was swapped
  in between and the read is refused before any byte is handed out.
* **Writes and copies are verified after the fact**: the object now at the key, reached
  without links, must be the inode obstore wrote (a copy: the source's inode, since
  obstore copies by hard link). A copy that fails the check is removed again.
* **Deletes do not go through obstore** but through directory file descriptors
  (`unlinkat` relative to a directory opened with `O_NOFOLLOW` at every level): a
  delete can never reach outside the root, whatever happens concurrently.
* **Listings walk the tree themselves** with directory file descriptors, never enter a
  linked directory and skip (and log) linked files; obstore reports each file's
  metadata, checked against the walk's inode.

What this guarantees against a *concurrent* attacker who can rename entries inside the
root while an operation runs: deletes and listings are race-free; reads never hand out
bytes of a file outside the root; a write or copy whose parent directory is swapped for
a link during the operation is detected and reported, but a write may by then have
created its new file outside the root (the library only writes fresh keys, so it does
not overwrite an existing file there). Hard links are files of the root like any other
(the library's own copies are hard links inside the root).

Platforms without `dir_fd` support (Windows) check each path component with `lstat`
instead, which refuses links that exist when an operation starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from ._errors import PathEscapeError
from ._logging import library_logger

__all__ = ("LocalRoot",)

logger = library_logger("sqlalchemy_obstore.local")

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _Link:
    """The marker for "a symbolic link is in the way" (see `LocalRoot._open_dir_if_any`)."""


_LINK = _Link()
_CREATED_MEANWHILE_RETRIES = 3
_FDS = os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd and bool(_NOFOLLOW)


def inode_of(etag: str | None) -> int | None:
    """The inode in obstore's local entity tag (`"<inode hex>-<mtime hex>-<size hex>"`).

    Example:
        >>> inode_of('"20e7c7-661e54abc60ac-7"')
        2156487
        >>> inode_of(None) is None
        True
    """
    if not etag:
        return None
    head = etag.strip().strip('"').split("-", 1)[0]
    try:
        return int(head, 16)
    except ValueError:
        return None


class LocalRoot:
    """Confines the keys of one local-files backend to its root directory.

    Args:
        root: The store's root directory (resolved here: the configured root may itself
            be a link, which is trusted configuration).
        backend: The backend key, for error messages.
    """

    __slots__ = ("backend", "root")

    def __init__(self, root: str | Path, backend: str) -> None:
        self.root = os.path.realpath(root)
        self.backend = backend

    def __repr__(self) -> str:
        return f"LocalRoot({self.root!r})"

    # -- the walk ---------------------------------------------------------------------------
    @staticmethod
    def _segments(key: str) -> list[str] | None:
        """The key's path segments as obstore reads them; `None` for a key obstore refuses."""
        segments = key.strip("/").split("/")
        if any(s in {"", ".", ".."} or "\x00" in s for s in segments):
            return None  # obstore refuses such keys itself, before touching the disk
        return segments

    def _escape(self, key: str, operation: str, link: str | None = None) -> PathEscapeError:
        """The refusal; `link` names the linked directory on the way (`None`: the object
        itself; `""`: a link that appeared while the operation ran)."""
        if link is None:
            what = f"{key!r} is a symbolic link"
        elif link:
            what = f"{link!r}, a directory on the way to {key!r}, is a symbolic link"
        else:
            what = f"a symbolic link appeared on the way to {key!r} during the operation"
        return PathEscapeError(
            f"{operation} refused on backend {self.backend!r}: {what}. Links below a local "
            "backend's root are never followed (they could lead outside it): remove the "
            "link, or make the real directory the backend's root.",
            backend=self.backend,
            path=key,
        )

    def _open_dir(self, name: str, parent: int) -> int:
        return os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=parent)

    def _open_chain(self, segments: list[str], key: str, operation: str) -> list[int] | None:
        """Open the root and each directory in `segments` below it, never through a link.

        Returns:
            The descriptors, root first (the caller closes them), or `None` (nothing
            left open) when a directory on the way is missing or is not a directory.

        Raises:
            PathEscapeError: If a directory on the way is a symbolic link.
        """
        fds = [os.open(self.root, _DIR_FLAGS)]
        try:
            for index, name in enumerate(segments):
                opened = self._open_dir_if_any(name, fds[-1])
                if isinstance(opened, _Link):
                    raise self._escape(key, operation, "/".join(segments[: index + 1]))
                if opened is None:
                    for fd in fds:
                        os.close(fd)
                    return None
                fds.append(opened)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def _open_dir_if_any(self, name: str, parent: int) -> int | _Link | None:
        """Open directory `name` below `parent` without following a link.

        Returns its descriptor; `_LINK` if `name` is a symbolic link; `None` if it is
        missing or is not a directory. A directory that another writer creates while
        this runs (the open saw nothing, the check after it a directory) is opened
        again; any other failure to open a real directory is raised.
        """
        for _attempt in range(_CREATED_MEANWHILE_RETRIES):
            try:
                return self._open_dir(name, parent)
            except OSError as exc:
                try:
                    info = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    return None
                if stat.S_ISLNK(info.st_mode):
                    return _LINK
                if not stat.S_ISDIR(info.st_mode):
                    return None
                if not isinstance(exc, FileNotFoundError):
                    raise  # a real directory that would not open (permissions, too many files)
        return None  # created and removed over and over: treat it as missing

    def _walk(self, key: str, operation: str) -> tuple[list[int] | None, int | None]:
        """Open the key's directories without following links and `lstat` its leaf.

        Returns:
            The directory descriptors (root first; the caller closes them) and the
            leaf's inode: `(None, None)` when a directory on the way is missing,
            `(fds, None)` when only the leaf is.

        Raises:
            PathEscapeError: If a component is a symbolic link.
        """
        segments = self._segments(key)
        if segments is None:
            return None, None
        fds = self._open_chain(segments[:-1], key, operation)
        if fds is None:
            return None, None
        try:
            info = os.stat(segments[-1], dir_fd=fds[-1], follow_symlinks=False)
        except FileNotFoundError:
            return fds, None
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if stat.S_ISLNK(info.st_mode):
            for fd in fds:
                os.close(fd)
            raise self._escape(key, operation)
        return fds, info.st_ino

    def _walk_paths(self, key: str, operation: str) -> int | None:
        """`check` where directory descriptors are not available: `lstat` each component."""
        segments = self._segments(key)
        if segments is None:
            return None
        path = self.root
        for index, name in enumerate(segments):
            path = os.path.join(path, name)
            try:
                info = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISLNK(info.st_mode):
                link = None if index == len(segments) - 1 else "/".join(segments[: index + 1])
                raise self._escape(key, operation, link)
        return info.st_ino

    # -- what the backend calls ---------------------------------------------------------
    def check(self, key: str, operation: str) -> int | None:
        """Refuse `key` if a symbolic link lies on its path; the inode of its file, if any.

        Raises:
            PathEscapeError: If a component of the key is a symbolic link.
        """
        if not _FDS:  # pragma: no cover - Windows
            return self._walk_paths(key, operation)
        fds, inode = self._walk(key, operation)
        for fd in fds or ():
            os.close(fd)
        return inode

    def opened(self, key: str, operation: str, etag: str | None, checked: int | None) -> None:
        """Check that the file obstore opened for `key` is the one inside the root.

        Args:
            key: The object key.
            operation: For the error message.
            etag: The entity tag obstore reported for the opened file.
            checked: The inode `check` found before the operation.

        Raises:
            PathEscapeError: If obstore opened another file (a link was swapped in).
        """
        opened = inode_of(etag)
        if opened is not None and opened == checked:
            return  # the very file the walk found inside the root
        now = self.check(key, operation)
        if opened is None or opened == now:
            return
        raise self._escape(key, operation, "")

    def written(self, key: str, operation: str, inode: int | None) -> None:
        """Check that what is now at `key` (reached without links) is what was written.

        Raises:
            PathEscapeError: If a link appeared on the way during the write.
        """
        now = self.check(key, operation)
        if inode is not None and now is not None and now != inode:
            raise self._escape(key, operation, "")

    def copied(self, source: str, destination: str, checked: int | None) -> None:
        """Check a copy: obstore copies by hard link, so the destination must be the
        source's inode (the one the walk found); otherwise the copy is removed again.

        Raises:
            PathEscapeError: If obstore copied another file (a link was swapped in).
        """
        now = self.check(destination, "copy")
        expected = checked if checked is not None else self.check(source, "copy")
        if now is not None and now == expected:
            return
        with suppress(OSError, PathEscapeError):
            self.delete(destination)
        raise self._escape(destination, "copy", "")

    def delete(self, key: str) -> bool:
        """Delete the file at `key` through directory descriptors; `False` if it is missing.

        Empty directories left behind are removed, up to (not including) the root, as
        obstore's `automatic_cleanup` does.

        Raises:
            PathEscapeError: If a component of the key, or the object itself, is a link.
        """
        if not _FDS:  # pragma: no cover - Windows: checked, then deleted by path
            if self._walk_paths(key, "delete") is None:
                return False
            os.unlink(os.path.join(self.root, *key.strip("/").split("/")))
            return True
        if self._segments(key) is None:
            raise ValueError(f"Invalid object key {key!r}: no empty, '.' or '..' segments.")
        fds, inode = self._walk(key, "delete")
        if fds is None:
            return False
        try:
            if inode is None:
                return False
            segments = key.strip("/").split("/")
            try:
                os.unlink(segments[-1], dir_fd=fds[-1])
            except FileNotFoundError:
                return False
            for index in range(len(segments) - 2, -1, -1):  # empty parents, deepest first
                try:
                    os.rmdir(segments[index], dir_fd=fds[index])
                except OSError:
                    break  # not empty (or gone): stop there
            return True
        finally:
            for fd in fds:
                os.close(fd)

    def files(self, prefix: str | None) -> Iterator[tuple[str, int]]:
        """Every regular file below `prefix`, as `(key, inode)`, never through a link.

        Linked files and directories are skipped and logged. Entries that disappear
        while the walk runs are skipped.

        Raises:
            PathEscapeError: If `prefix` itself leads through a link.
        """
        start = (prefix or "").strip("/")
        if not _FDS:  # pragma: no cover - Windows
            yield from self._files_by_path(start)
            return
        segments = self._segments(start) if start else []
        if segments is None:
            return
        fds = self._open_chain(segments, start, "list")
        if fds is None:
            return
        for fd in fds[:-1]:
            os.close(fd)
        yield from self._scan(fds[-1], start)

    def _scan(self, fd: int, base: str) -> Iterator[tuple[str, int]]:
        """Walk the directory `fd` (closed here), depth first, files before subdirectories."""
        try:
            directories = []
            with os.scandir(fd) as entries:
                for entry in entries:
                    key = f"{base}/{entry.name}" if base else entry.name
                    if entry.is_symlink():
                        self._skipped(key)
                    elif entry.is_dir(follow_symlinks=False):
                        directories.append((entry.name, key))
                    elif entry.is_file(follow_symlinks=False):
                        yield key, entry.inode()
            for name, key in directories:
                child = self._open_dir_if_any(name, fd)
                if isinstance(child, _Link):
                    self._skipped(key)  # replaced by a link since it was listed
                elif child is not None:
                    yield from self._scan(child, key)
        finally:
            os.close(fd)

    def _skipped(self, key: str) -> None:
        logger.warning(
            "Skipped %r in a listing of backend %r: it is a symbolic link, and links below "
            "a local backend's root are never followed.",
            key,
            self.backend,
        )

    def _files_by_path(self, start: str) -> Iterator[tuple[str, int]]:  # pragma: no cover
        if start:
            self._walk_paths(start + "/x", "list")  # refuses a linked directory on the way
        top = os.path.join(self.root, *start.split("/")) if start else self.root
        if not os.path.isdir(top) or os.path.islink(top):
            return
        for directory, dirs, names in os.walk(top, followlinks=False):
            relative = os.path.relpath(directory, self.root).replace(os.sep, "/")
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
            for name in names:
                path = os.path.join(directory, name)
                if not os.path.islink(path):
                    key = name if relative == "." else f"{relative}/{name}"
                    yield key, os.lstat(path).st_ino
