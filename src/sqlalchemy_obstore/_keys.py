"""The implementation of `sqlalchemy_obstore.keys`, documented and imported there."""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ._errors import (
    ConfigurationError,
    InvalidFilenameError,
    InvalidKeySegmentError,
    InvalidObjectPathError,
)

__all__ = (
    "DEFAULT_FILENAME",
    "MAX_FILENAME_BYTES",
    "MAX_SEGMENT_BYTES",
    "KeyContext",
    "KeyFunction",
    "KeyPrefixFunction",
    "KeySegment",
    "build_key",
    "check_filename",
    "check_object_path",
    "join_key",
    "key_safe_name",
    "key_segment",
    "row_key_prefix",
    "sanitize_filename",
    "uuid_key",
    "validate_key",
)

KeyFunction = Callable[[str], str]
"""Makes the key of a new object, relative to the backend/column prefix.

It receives the key-safe leaf name (see [`key_safe_name`][sqlalchemy_obstore.keys.key_safe_name])
and must return a fresh, relative key (`a/b/name.ext`) every time it is called.
"""

KeySegment = str | int | uuid.UUID
"""A value a [`KeyPrefixFunction`][sqlalchemy_obstore.keys.KeyPrefixFunction] may put in
a key: each one becomes exactly one segment (see
[`key_segment`][sqlalchemy_obstore.keys.key_segment])."""


@dataclass(frozen=True, slots=True)
class KeyContext:
    """What a column's key prefix function is given when the session uploads a file.

    Built once per row and column at flush (so every file of a `multiple=True` list,
    and every rendition, lands under the same prefix), and only for a row that has
    something to upload.

    Attributes:
        instance: The mapped object being flushed. Values the application set are there;
            values the database assigns (an autoincrement primary key, a server or
            Python-side column `default=`) are not yet: the upload comes before the
            INSERT.
        attribute: The name of the mapped attribute (`"file"`).
        column: The column's [`StoredObject`][sqlalchemy_obstore.types.StoredObject].

    Example:
        >>> def by_tenant(ctx: KeyContext) -> tuple[object, ...]:
        ...     return ("tenants", ctx.instance.tenant_id, ctx.attribute)
    """

    instance: Any
    attribute: str
    column: Any


KeyPrefixFunction = Callable[[KeyContext], KeySegment | Sequence[KeySegment]]
"""Derives the key prefix of a column's new files from the row:
`StoredObject(key_prefix=function)`.

It receives a [`KeyContext`][sqlalchemy_obstore.keys.KeyContext] and returns the prefix
as segments: a tuple or list of strings, integers and UUIDs (`("tenants", 42)` gives
`tenants/42`), or a single one. Each is checked by
[`key_segment`][sqlalchemy_obstore.keys.key_segment], so a value holding `/` can never add
segments, and `..`, an empty string or `None` raise
[`InvalidKeySegmentError`][sqlalchemy_obstore.errors.InvalidKeySegmentError]. The key
goes on below the prefix as usual (`<uuid>/<name>`, or the column's `key_function`): the
row chooses the folder, never the object.

It runs inside the session's flush, so it must not do I/O (inside an `AsyncSession` it
runs in SQLAlchemy's greenlet bridge): read values already on the row, or relationships
already loaded.
"""

DEFAULT_FILENAME = "file"
MAX_FILENAME_BYTES = 200
"""Upper bound, in UTF-8 bytes, for a sanitised filename (keeps room for prefixes)."""

_MAX_EXTENSION_CHARS = 16
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_KEY_UNSAFE = re.compile(r"[^\w.\-()+@~]+")
_REPEATED_UNDERSCORE = re.compile(r"_{2,}")


def _strip_invisible(text: str) -> str:
    # Cc: control characters including NUL; Cf: format characters such as the
    # right-to-left override (U+202E) and zero-width joiners; Cs/Co/Cn: surrogates,
    # private-use and unassigned code points.
    return "".join(
        ch for ch in text if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co", "Cn"}
    )


def check_filename(name: str) -> str:
    """Return `name` if it can be stored as a filename, else raise a typed error.

    A filename is display data and is kept as given, with two exceptions that no store
    can keep: NUL (PostgreSQL rejects it in text and JSON) and lone surrogates (`"\\udc80"`,
    which is what `os.fsdecode` makes of undecodable bytes and what a JSON `\\udc80`
    escape decodes to with `json.loads`: not text, so it cannot be encoded as UTF-8 for
    a JSON column, an HTTP header or an object key). Such names are refused, never
    silently changed; an application that wants to accept anything passes the name
    through [`sanitize_filename`][sqlalchemy_obstore.keys.sanitize_filename] first.

    Used by every entry point that takes a filename: `FileObject(filename=...)` and
    assignment, `from_upload`, `file_from_stream`, `UploadTickets.issue`; names a
    remote server suggests (`from_url`) are sanitised instead.

    Raises:
        InvalidFilenameError: If `name` is not a string or holds NUL or a lone surrogate.

    Example:
        >>> check_filename("résumé.pdf")
        'résumé.pdf'
        >>> check_filename("a\\udc80.txt")
        Traceback (most recent call last):
        ...
        sqlalchemy_obstore.errors.InvalidFilenameError: The filename 'a\\udc80.txt' cannot be stored: it holds a lone surrogate (not text) at position 1. Pass it through sanitize_filename() first, or refuse the upload.
    """  # noqa: E501
    if not isinstance(name, str):
        raise InvalidFilenameError(f"A filename must be a string, not {type(name).__name__}.")
    if "\x00" in name:
        raise InvalidFilenameError(
            f"The filename {ascii(name)[:80]} cannot be stored: it holds a NUL character at "
            f"position {name.index(chr(0))}. Pass it through sanitize_filename() first, or "
            "refuse the upload."
        )
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidFilenameError(
                f"The filename {ascii(name)[:80]} cannot be stored: it holds a lone surrogate "
                f"(not text) at position {exc.start}. Pass it through sanitize_filename() "
                "first, or refuse the upload."
            ) from None
    return name


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > _MAX_EXTENSION_CHARS or not ext.isalnum():
        return name, ""
    return stem, "." + ext


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def sanitize_filename(name: object, *, max_bytes: int = MAX_FILENAME_BYTES) -> str:
    """Return a harmless display name for an untrusted filename.

    Directory parts (POSIX and Windows, including drive letters and UNC paths), `.` and
    `..`, control characters, NUL and invisible format characters (such as the
    right-to-left override) are removed; Unicode is normalised to NFC; whitespace is
    collapsed; leading dots are dropped so the name is never hidden; the result is
    bounded to `max_bytes` UTF-8 bytes while keeping the extension. An empty result
    becomes `"file"` (keeping the extension when there was one).

    Args:
        name: The untrusted name, typically from an upload.
        max_bytes: Maximum length of the result in UTF-8 bytes.

    Returns:
        A non-empty leaf name without any path separator.

    Raises:
        InvalidFilenameError: If `name` is not a string.

    Example:
        >>> sanitize_filename("../../etc/passwd")
        'passwd'
        >>> sanitize_filename("C:\\\\Users\\\\me\\\\report.pdf")
        'report.pdf'
    """
    if not isinstance(name, str):
        raise InvalidFilenameError(f"A filename must be a string, not {type(name).__name__}.")
    text = unicodedata.normalize("NFC", name)
    text = _strip_invisible(text)
    # Treat both separators as directory separators and keep the last real segment.
    segments = [s for s in re.split(r"[\\/]+", text) if s.strip() not in {"", ".", ".."}]
    leaf = segments[-1] if segments else ""
    leaf = " ".join(leaf.split())  # collapse and trim whitespace
    # Drive-relative leftovers such as "C:report.pdf" (repeatedly, and with the dots and
    # spaces around them, so that sanitising a result again changes nothing).
    previous = None
    while previous != leaf:
        previous = leaf
        leaf = re.sub(r"^[A-Za-z]:", "", leaf).lstrip(". ").rstrip(". ")
    stem, ext = _split_extension(leaf)
    if not stem:
        stem = DEFAULT_FILENAME
    ext_bytes = len(ext.encode("utf-8"))
    stem = _truncate_utf8(stem, max(1, max_bytes - ext_bytes)).rstrip(". ") or DEFAULT_FILENAME
    return stem + ext


def key_safe_name(name: str, *, max_bytes: int = MAX_FILENAME_BYTES) -> str:
    """Return a leaf suitable as the last segment of an object key.

    Starts from [`sanitize_filename`][sqlalchemy_obstore.keys.sanitize_filename] and
    keeps only letters, digits and `-_.()+@~`; everything else (spaces, `%`, `#`, `?`,
    quotes, ...) becomes `_`. Windows device names (`CON`, `NUL`, ...) are prefixed so
    that a local-file backend can store them anywhere.

    Example:
        >>> key_safe_name("my report (final)#2.pdf")
        'my_report_(final)_2.pdf'
    """
    leaf = sanitize_filename(name, max_bytes=max_bytes)
    leaf = _KEY_UNSAFE.sub("_", leaf)
    leaf = _REPEATED_UNDERSCORE.sub("_", leaf).strip("_") or DEFAULT_FILENAME
    if leaf.startswith("."):
        leaf = DEFAULT_FILENAME + leaf
    # Windows treats `NUL.tar.gz` as the device too: compare the part before the first dot.
    if leaf.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        leaf = "_" + leaf
    return leaf


def uuid_key(name: str) -> str:
    """The default [`KeyFunction`][sqlalchemy_obstore.keys.KeyFunction]: `<uuid4 hex>/<name>`.

    Example:
        >>> key = uuid_key("report.pdf")
        >>> len(key.split("/")[0]), key.split("/")[1]
        (32, 'report.pdf')
    """
    return f"{_uuid4_hex()}/{name}"


_UUIDS_PER_DRAW = 256
_uuid_pool: list[str] = []
"""Random UUID4 hex strings drawn ahead, `os.urandom` read once per 256 keys."""
# The version (4) and RFC 4122 variant bits of every UUID of a draw, as one integer mask
# and one integer of bits: bytes 6 and 8 of each 16 keep 4 and 6 random bits.
_UUID_KEEP = int(_UUIDS_PER_DRAW * "ffffffffffff0fff3fffffffffffffff", 16)
_UUID_SET = int(_UUIDS_PER_DRAW * "00000000000040008000000000000000", 16)


def _uuid4_hex() -> str:
    """`uuid.uuid4().hex`, from `os.urandom` like `uuid4`, without a system call per key.

    Keys come from a pool filled by one `os.urandom` read per 256 keys (the same
    CSPRNG `uuid4` uses, with the same version and variant bits). `list.pop` is atomic,
    so threads never share a key; a forked child empties the pool it inherited (see
    `os.register_at_fork` below), so parent and child never hand out the same keys.
    """
    try:
        return _uuid_pool.pop()
    except IndexError:
        _draw_uuids()
        return _uuid_pool.pop()


def _draw_uuids() -> None:
    size = 16 * _UUIDS_PER_DRAW
    # (the bits of all 256 UUIDs set in two big-integer operations, not byte by byte)
    raw = int.from_bytes(os.urandom(size), "big") & _UUID_KEEP | _UUID_SET
    text = raw.to_bytes(size, "big").hex()
    _uuid_pool.extend([text[i : i + 32] for i in range(0, 2 * size, 32)])


if hasattr(os, "register_at_fork"):  # (not on Windows, which has no fork)
    os.register_at_fork(after_in_child=_uuid_pool.clear)


@lru_cache(maxsize=1024)
def _safe_leaf(filename: str) -> str:
    """`key_safe_name(filename)`, validated as a key segment; cached per name."""
    return validate_key(key_safe_name(filename))


@lru_cache(maxsize=256)
def _checked_prefix(prefix: str | None) -> str:
    """The joined, validated form of a key prefix ("" for none); cached per prefix."""
    joined = join_key(prefix)
    return validate_key(joined) if joined else joined


def join_key(*parts: str | None) -> str:
    """Join key segments with `/`, ignoring empty parts and stray slashes.

    Example:
        >>> join_key("uploads/", None, "/docs", "a/b.txt")
        'uploads/docs/a/b.txt'
    """
    # Drop empty segments anywhere, so a configured prefix such as "uploads//docs" works.
    return "/".join(s for p in parts if p for s in p.split("/") if s)


def validate_key(key: str) -> str:
    """Check that `key` is a well-formed relative object key and return it.

    A key must be non-empty, relative, and have no empty, `.` or `..` segment and no
    control characters.

    Raises:
        ConfigurationError: If the key is malformed (typically a custom key function bug).
    """
    if not isinstance(key, str):
        raise ConfigurationError(
            f"Invalid object key {key!r}: a key must be a string. Check the key_function in use."
        )
    segments = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(s in {"", ".", ".."} for s in segments)
        or _strip_invisible(key) != key
    ):
        raise ConfigurationError(
            f"Invalid object key {key!r}: keys must be relative, with no empty, '.' or '..' "
            "segments and no control characters. Check the key_function in use."
        )
    return key


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""What a malformed path holds: an empty, `.` or `..` segment (so also a leading or
trailing `/`), a control character, or a backslash. No key this library writes has one,
and a store may resolve such a path to another object than the one named (obstore drops
a leading `/`; a local-files store reads `\\` as a separator on Windows). (Every write
checks its path, so the test is made of `str` methods: a regular expression searched
over the whole path costs several times more.)"""


def check_object_path(path: str) -> str:
    """Check that a stored object path is a well-formed relative key and return it.

    Stored paths come from rows, request bodies and application code, so they are
    checked before they reach a store: a path must be a non-empty string of `/`-separated
    segments, none of them empty, `.` or `..`, with no control character and no
    backslash. (Keys the library generates always pass.)

    Args:
        path: The object path (key) to check.

    Returns:
        `path`, unchanged.

    Raises:
        InvalidObjectPathError: If the path is malformed; the message says why (an
            `InvalidFileObjectError`).

    Example:
        >>> check_object_path("uploads/1f0c/report.pdf")
        'uploads/1f0c/report.pdf'
        >>> from sqlalchemy_obstore import InvalidObjectPathError
        >>> try:
        ...     check_object_path("uploads/../secrets.txt")
        ... except InvalidObjectPathError:
        ...     print("refused")
        refused
    """
    if path.__class__ is not str:
        raise InvalidObjectPathError(f"An object path must be a string, not {type(path).__name__}.")
    segments = path.split("/")
    if (
        "" in segments
        or "." in segments
        or ".." in segments
        or "\\" in path
        or (not path.isprintable() and _CONTROL_CHARACTER.search(path) is not None)
    ):
        raise InvalidObjectPathError(
            f"Invalid object path {path!r}: a path is a non-empty, relative key with no empty, "
            "'.' or '..' segment, no leading or trailing '/', no backslash and no control "
            "character. Paths in rows are written by the library; fix or null the row that "
            "holds this one."
        )
    return path


def build_key(
    filename: str | None,
    *,
    prefix: str | None = None,
    key_function: KeyFunction | None = None,
) -> str:
    """Generate a fresh object key for a file called `filename`.

    Args:
        filename: The display name; only its key-safe form is used in the key.
        prefix: Prefix segments (backend prefix, column prefix) to put in front.
        key_function: How to lay out the key below the prefix; defaults to
            [`uuid_key`][sqlalchemy_obstore.keys.uuid_key].

    Returns:
        The full object key.

    Example:
        >>> key = build_key("../../etc/passwd", prefix="uploads")
        >>> key.startswith("uploads/") and key.endswith("/passwd")
        True
    """
    if (key_function is None or key_function is uuid_key) and (
        filename is None or type(filename) is str
    ):
        # The default layout, `<prefix>/<uuid4 hex>/<safe name>`: its parts are each
        # validated (and cached), and a valid prefix, a hex segment and a valid leaf make
        # a valid key, so the whole key needs no second check. (Written out here: this
        # runs once per save.)
        leaf = _safe_leaf(filename or DEFAULT_FILENAME)
        try:
            token = _uuid_pool.pop()
        except IndexError:
            token = _uuid4_hex()
        base = _checked_prefix(prefix) if prefix else ""
        return f"{base}/{token}/{leaf}" if base else f"{token}/{leaf}"
    leaf = key_safe_name(filename or DEFAULT_FILENAME)
    # Validate the key function's own result first: join_key would strip a leading "/".
    relative = validate_key((key_function or uuid_key)(leaf))
    return validate_key(join_key(prefix, relative))


MAX_SEGMENT_BYTES = 128
"""Upper bound, in UTF-8 bytes, for one key segment taken from a row."""

_SEGMENT = re.compile(r"[\w.\-()+@~]+")
"""The characters of [`key_safe_name`][sqlalchemy_obstore.keys.key_safe_name]'s output."""


def key_segment(value: object) -> str:
    """Return `value` as one object-key segment, or refuse it.

    Strings (subclasses such as `StrEnum` members included, by their value), integers
    and UUIDs are accepted. The text must already be a safe segment: letters, digits
    and `-_.()+@~`, no leading `.`, no Windows device name (`CON`, `NUL`, ...), Unicode
    in NFC form, at most `MAX_SEGMENT_BYTES` UTF-8 bytes. Nothing is rewritten: two
    different values never share a segment (and so a folder). To accept any text, pass
    it through [`key_safe_name`][sqlalchemy_obstore.keys.key_safe_name] first, knowing
    that different names may then meet.

    Raises:
        InvalidKeySegmentError: For `None`, a `bool`, any other type, or text that is
            not a safe segment (empty, `.`, `..`, holding `/`, `\\`, spaces, controls,
            ...).

    Example:
        >>> key_segment(42), key_segment("acme-corp")
        ('42', 'acme-corp')
        >>> from sqlalchemy_obstore import InvalidKeySegmentError
        >>> try:
        ...     key_segment("../admin")
        ... except InvalidKeySegmentError:
        ...     print("refused")
        refused
    """
    if isinstance(value, str):
        text = str.__str__(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        text = int.__repr__(value)
    elif isinstance(value, uuid.UUID):
        text = str(value)
    else:
        hint = (
            " (a value the database assigns at INSERT, such as an autoincrement id or a "
            "column default, is not there yet when the file is uploaded)"
            if value is None
            else ""
        )
        raise InvalidKeySegmentError(
            f"{_describe(value)} cannot be an object-key segment: a segment is a string, an "
            f"integer or a UUID{hint}."
        )
    problem = _segment_problem(text)
    if problem is not None:
        raise InvalidKeySegmentError(
            f"{text!r:.80} cannot be an object-key segment: {problem}. Segments taken from "
            "a row are never rewritten; validate the value when it is set, or pass it "
            "through key_safe_name() in the key prefix function."
        )
    return text


def _describe(value: object) -> str:
    return "None" if value is None else f"A {type(value).__name__} ({value!r:.60})"


def _segment_problem(text: str) -> str | None:
    if not text:
        return "it is empty"
    if text in {".", ".."}:
        return "'.' and '..' name no folder of their own"
    if not _SEGMENT.fullmatch(text):
        return "only letters, digits and '-_.()+@~' are allowed (no '/', '\\', space or control)"
    if text.startswith("."):
        return "it starts with '.'"
    if len(text.encode("utf-8")) > MAX_SEGMENT_BYTES:
        return f"it is longer than {MAX_SEGMENT_BYTES} bytes"
    if not unicodedata.is_normalized("NFC", text):
        return "it is not in Unicode NFC form"
    if text.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        return "it is a Windows device name"
    return None


def row_key_prefix(function: KeyPrefixFunction, context: KeyContext) -> str:
    """The key prefix `function` derives for a row: its segments, each checked, joined.

    What the session does at flush for a column with `key_prefix=function`; the result
    goes after the backend's prefix. An empty sequence gives `""` (no extra prefix).

    Raises:
        InvalidKeySegmentError: If the function returns something other than segments,
            or a segment [`key_segment`][sqlalchemy_obstore.keys.key_segment] refuses;
            the message names the class and attribute.

    Example:
        >>> class Invoice:
        ...     tenant_id = 42
        >>> row_key_prefix(
        ...     lambda ctx: ("tenants", ctx.instance.tenant_id), KeyContext(Invoice(), "pdf", None)
        ... )
        'tenants/42'
    """
    result = function(context)
    values: Sequence[object]
    values = result if isinstance(result, (list, tuple)) else (result,)
    try:
        return "/".join([key_segment(value) for value in values])
    except InvalidKeySegmentError as exc:
        where = f"{type(context.instance).__name__}.{context.attribute}"
        hint = (
            " Return the prefix as a tuple of segments, e.g. ('tenants', row.tenant_id): "
            "each value is one segment, so a value holding '/' cannot add folders."
            if isinstance(result, str) and "/" in result
            else ""
        )
        raise InvalidKeySegmentError(
            f"The key prefix function of {where} returned {_shown(result)}: {exc}{hint}"
        ) from None


def _shown(result: object) -> str:
    text = repr(result)
    return text if len(text) <= 120 else text[:117] + "..."
