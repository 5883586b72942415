"""Incomplete multipart uploads: find and abort them, and read the rule that expires them.

A multipart upload that is neither completed nor aborted keeps its parts, invisible to
an object listing and billed as storage, until someone aborts it. obstore aborts the
uploads it sees fail, but a process killed during an upload (or a completion that
fails) leaves one behind, and obstore has no call to list them. This module makes the
few S3 requests needed, with the request model and drivers of
[`_s3_requests`][sqlalchemy_obstore._s3_requests]:

- `ListMultipartUploads` under a prefix and `AbortMultipartUpload` of one upload, used
  by the garbage collector;
- `GetBucketLifecycleConfiguration`, to tell whether the bucket expires incomplete
  uploads itself (an `AbortIncompleteMultipartUpload` rule), used by
  `sqlalchemy-obstore backends --check`.

Each is an operation without I/O (a generator of requests); each public function picks
the driver for its caller.

What applies elsewhere (see [`support`][sqlalchemy_obstore._multipart.support]):
Azure discards uncommitted blocks after seven days on its own; GCS keeps XML-API
multipart uploads until they are aborted, but the library does not list them there (a
lifecycle rule, `AbortIncompleteMultipartUpload` exists on GCS too, is the remedy);
local files: obstore stages a multipart upload in a `<key>#<n>` file that its listing
hides, so those files are found by walking the directory; memory stores lose
everything with the process.

A store whose credentials come from the instance or container (IMDS, ECS, web identity)
cannot be checked this way; the lifecycle rule is then the way to expire leftovers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, TypeAlias, TypeVar

from . import _io
from ._errors import UnsupportedOperationError
from ._s3_requests import (
    Operation,
    Request,
    Target,
    failure,
    parse_xml,
    run_async,
    run_sync,
    s3_target,
    store_backend,
)
from .backends import Backend

__all__ = (
    "IncompleteUpload",
    "LifecycleRule",
    "abort_operation",
    "abort_upload",
    "abort_upload_async",
    "last_activity",
    "lifecycle_rule",
    "lifecycle_rule_async",
    "list_incomplete_uploads",
    "list_incomplete_uploads_async",
    "may_hold_uploads",
    "parse_time",
    "support",
)

_T = TypeVar("_T")
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class IncompleteUpload:
    """A multipart upload that was started and neither completed nor aborted.

    Attributes:
        path: The object key it would create, relative to the backend's store (as the
            backend's other paths are).
        upload_id: The store's id of the upload.
        initiated: When the upload was started (the store's clock).
    """

    path: str
    upload_id: str
    initiated: datetime


RuleState: TypeAlias = Literal["set", "missing", "not_checked", "not_needed"]


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    """Whether the store expires incomplete multipart uploads under a backend's prefix.

    Attributes:
        state: `set` (an enabled `AbortIncompleteMultipartUpload` rule covers the
            prefix), `missing` (none does), `not_checked` (it could not be read, see
            `detail`) or `not_needed` (the store discards leftovers itself, or has
            none).
        days: The rule's `DaysAfterInitiation`, when set.
        detail: A readable explanation.
    """

    state: RuleState
    days: int | None
    detail: str


# -- what applies to which store ------------------------------------------------------------------
def support(backend: Backend) -> str | None:
    """`None` when incomplete uploads can be listed in `backend`, else why not.

    Example:
        >>> from sqlalchemy_obstore import ObstoreBackend
        >>> support(ObstoreBackend("a", "az://container/", account_name="x", skip_signature=True))
        'Azure discards uncommitted blocks after 7 days by itself'
    """
    store = store_backend(backend)
    if store is None:
        return f"{type(backend).__name__} does not expose an obstore store to inspect"
    if store.kind == "s3":
        target = s3_target(store)
        return target if isinstance(target, str) else None
    if store.kind == "local":
        return None
    return _NOT_LISTABLE.get(store.kind, f"{store.kind} stores have no multipart uploads to list")


def may_hold_uploads(backend: Backend) -> bool:
    """Whether incomplete uploads can outlive a process in this store (not in memory)."""
    store = store_backend(backend)
    return store is None or store.kind not in ("memory", "http")


_NOT_LISTABLE = {
    "azure": "Azure discards uncommitted blocks after 7 days by itself",
    "gcs": (
        "GCS multipart uploads are not listed by the library: set a lifecycle rule "
        "(AbortIncompleteMultipartUpload) on the bucket"
    ),
    "memory": "memory stores keep no multipart uploads after the process ends",
    "http": "HTTP stores have no multipart uploads",
}


# -- the operations (no I/O) ----------------------------------------------------------------------
_RIGHTS = (  # what the requests of this module need
    "s3:ListBucketMultipartUploads, s3:AbortMultipartUpload, s3:GetLifecycleConfiguration"
)


_TIMESTAMP = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:?\d\d)?"
)


def parse_time(text: str | None) -> datetime:
    """An S3 timestamp (`2026-01-02T03:04:05.000Z`, any fraction, any offset) in UTC.

    Unreadable or missing: the epoch, which reads as "long ago" (the collector then
    looks at the upload's parts before it decides anything).
    """
    match = _TIMESTAMP.match((text or "").strip())
    if match is None:
        return datetime.fromtimestamp(0, timezone.utc)
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = match["zone"] or "Z"
    zone = "+00:00" if zone == "Z" else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    moment = datetime.fromisoformat(f"{match['base']}.{fraction}{zone}")
    return moment.astimezone(timezone.utc)


def _list(target: Target, prefix: str) -> Operation[list[IncompleteUpload]]:
    """Every incomplete upload whose key starts with the store key `prefix`, page by page."""
    found: list[IncompleteUpload] = []
    markers: list[tuple[str, str]] = []
    while True:
        query = [("uploads", ""), ("max-uploads", str(_PAGE)), ("prefix", prefix), *markers]
        response = yield Request("GET", target.url(query=query))
        if response.status != 200:
            raise failure(response, target, "listing incomplete multipart uploads", rights=_RIGHTS)
        root = parse_xml(response, target, "listing incomplete multipart uploads")
        for upload in root.iter("Upload"):
            key = upload.findtext("Key") or ""
            path = target.path(key)
            if path is None or not key.startswith(prefix):
                continue
            upload_id = upload.findtext("UploadId") or ""
            found.append(
                IncompleteUpload(path, upload_id, parse_time(upload.findtext("Initiated")))
            )
        truncated = (root.findtext("IsTruncated") or "").strip().lower() == "true"
        key_marker = root.findtext("NextKeyMarker") or ""
        id_marker = root.findtext("NextUploadIdMarker") or ""
        if not truncated or not (key_marker or id_marker):
            return found
        if markers == [("key-marker", key_marker), ("upload-id-marker", id_marker)]:
            return found  # a server that repeats its page: stop rather than loop
        markers = [("key-marker", key_marker), ("upload-id-marker", id_marker)]


def _activity(target: Target, upload: IncompleteUpload) -> Operation[datetime | None]:
    """When the upload last changed: its newest part, else its start; `None` if gone."""
    latest = upload.initiated
    marker = ""
    url_key = target.key(upload.path)
    while True:
        query = [("uploadId", upload.upload_id), ("max-parts", str(_PAGE))]
        if marker:
            query.append(("part-number-marker", marker))
        response = yield Request("GET", target.url(url_key, query))
        if response.status == 404:
            return None
        if response.status != 200:
            raise failure(response, target, f"listing the parts of {upload.path!r}", rights=_RIGHTS)
        root = parse_xml(response, target, f"listing the parts of {upload.path!r}")
        for part in root.iter("Part"):
            latest = max(latest, parse_time(part.findtext("LastModified")))
        truncated = (root.findtext("IsTruncated") or "").strip().lower() == "true"
        following = (root.findtext("NextPartNumberMarker") or "").strip()
        if not truncated or not following or following == marker:
            return latest
        marker = following


def abort_operation(target: Target, upload: IncompleteUpload) -> Operation[bool]:
    """Abort one upload; `False` when it was already gone (completed or aborted).

    `upload.initiated` plays no part: an `IncompleteUpload` built from a key and an
    upload id alone (a direct upload's, see `_s3_uploads`) is aborted the same way.
    """
    response = yield Request(
        "DELETE", target.url(target.key(upload.path), [("uploadId", upload.upload_id)])
    )
    if response.status in (200, 204):
        return True
    if response.status == 404:
        return False
    what = f"aborting the multipart upload of {upload.path!r}"
    raise failure(response, target, what, rights=_RIGHTS)


def _covers(rule_prefix: str, managed: str) -> bool:
    return not rule_prefix or managed.startswith(rule_prefix)


def _lifecycle(target: Target, managed_prefix: str) -> Operation[LifecycleRule]:
    response = yield Request("GET", target.url(query=[("lifecycle", "")]))
    if response.status == 404:
        return LifecycleRule("missing", None, "the bucket has no lifecycle configuration")
    if response.status != 200:
        raise failure(response, target, "reading the bucket's lifecycle rules", rights=_RIGHTS)
    root = parse_xml(response, target, "reading the bucket's lifecycle rules")
    best: tuple[int, str] | None = None
    for rule in root.iter("Rule"):
        if (rule.findtext("Status") or "").strip() != "Enabled":
            continue
        days_text = rule.findtext("AbortIncompleteMultipartUpload/DaysAfterInitiation")
        if not days_text or not days_text.strip().isdigit():
            continue
        filter_ = rule.find("Filter")
        if filter_ is not None and filter_.find("And/Tag") is not None:
            continue  # a tag filter never matches an upload
        prefix = (
            (filter_.findtext("Prefix") or filter_.findtext("And/Prefix") or "")
            if filter_ is not None
            else (rule.findtext("Prefix") or "")
        )
        if not _covers(prefix, managed_prefix):
            continue
        days = int(days_text)
        name = (rule.findtext("ID") or "").strip() or "(unnamed)"
        if best is None or days < best[0]:
            best = (days, name)
    if best is None:
        return LifecycleRule(
            "missing",
            None,
            "no enabled rule aborts incomplete multipart uploads under "
            f"{managed_prefix or '(the whole bucket)'!r}",
        )
    return LifecycleRule(
        "set", best[0], f"rule {best[1]!r} aborts incomplete uploads after {best[0]} day(s)"
    )


# -- the driver and the bucket -------------------------------------------------------------------
def _run(target: Target, operation: Operation[_T]) -> _T:
    """Run with the driver that suits the caller: async inside the greenlet bridge."""
    call: _io.Call[_T] = _io.Call(run_sync, run_async, target, operation)
    return _io.run(call)


def _checked_target(backend: Backend) -> Target:
    store = store_backend(backend)
    reason = support(backend)
    if store is None or reason is not None or store.kind != "s3":
        raise UnsupportedOperationError(
            f"Incomplete multipart uploads cannot be listed in backend {backend.key!r}: {reason}.",
            backend=backend.key,
        )
    target = s3_target(store)
    assert not isinstance(target, str)  # support() said so
    return target


# -- local files: obstore's staging files -------------------------------------------------------
# obstore's LocalStore writes a multipart upload to `<key>#<n>` next to the destination and
# renames it on completion (deletes it on abort). A killed process leaves that file, which
# obstore's own listing hides. Here it is found by walking the directory; "aborting" it is
# deleting the file.
_STAGED = re.compile(r"^(?P<name>.+)#(?P<n>\d+)$")


def _local_root(backend: Backend) -> Path | None:
    store = store_backend(backend)
    if store is None or store.kind != "local":
        return None
    root = getattr(store.store, "prefix", None)
    return Path(root) if root is not None else None


def _local_list(root: Path, prefix: str | None) -> list[IncompleteUpload]:
    base = root / prefix.strip("/") if prefix else root
    found = []
    for directory, _, names in os.walk(base):
        for name in names:
            match = _STAGED.match(name)
            if match is None:
                continue
            file = Path(directory) / name
            try:
                modified = file.stat().st_mtime
            except FileNotFoundError:
                continue
            path = (Path(directory) / match["name"]).relative_to(root).as_posix()
            found.append(
                IncompleteUpload(path, name, datetime.fromtimestamp(modified, timezone.utc))
            )
    return found


def _local_staged(root: Path, upload: IncompleteUpload) -> Path:
    staged = (root / upload.path).parent / upload.upload_id
    if not _STAGED.match(upload.upload_id) or root not in staged.parents:
        raise UnsupportedOperationError(f"{upload.upload_id!r} is not a staging file name.")
    return staged


def _local_activity(root: Path, upload: IncompleteUpload) -> datetime | None:
    try:
        modified = _local_staged(root, upload).stat().st_mtime
    except FileNotFoundError:
        return None
    return datetime.fromtimestamp(modified, timezone.utc)


def _local_abort(root: Path, upload: IncompleteUpload) -> bool:
    try:
        _local_staged(root, upload).unlink()
    except FileNotFoundError:
        return False
    return True


# -- the entry points of this private module ------------------------------------------------------
def _managed_key_prefix(target: Target, prefix: str | None) -> str:
    key = target.key(prefix.strip("/")) if prefix else target.store_prefix
    return key + "/" if key else ""


def list_incomplete_uploads(backend: Backend, prefix: str | None) -> list[IncompleteUpload]:
    """The incomplete uploads under `prefix` (directory-like; `None`: the whole store).

    Sync, or async through the greenlet bridge when called there (local files are
    always walked synchronously).

    Raises:
        UnsupportedOperationError: If the store cannot be asked (see `support`).
        MissingDependencyError: Without httpx (`pip install 'sqlalchemy-obstore[http]'`).
        StorageError: If a request fails.
    """
    root = _local_root(backend)
    if root is not None:
        return _local_list(root, prefix)
    target = _checked_target(backend)
    return _run(target, _list(target, _managed_key_prefix(target, prefix)))


async def list_incomplete_uploads_async(
    backend: Backend, prefix: str | None
) -> list[IncompleteUpload]:
    """Async version of
    [`list_incomplete_uploads`][sqlalchemy_obstore._multipart.list_incomplete_uploads].
    """
    root = _local_root(backend)
    if root is not None:
        return _local_list(root, prefix)
    target = _checked_target(backend)
    return await run_async(target, _list(target, _managed_key_prefix(target, prefix)))


def last_activity(backend: Backend, upload: IncompleteUpload) -> datetime | None:
    """When `upload` last received a part (else when it started); `None` if it is gone.

    An upload older than a grace period may still be running (a large file on a slow
    link): its newest part tells. Sync, or async through the greenlet bridge.
    """
    root = _local_root(backend)
    if root is not None:
        return _local_activity(root, upload)
    target = _checked_target(backend)
    return _run(target, _activity(target, upload))


def abort_upload(backend: Backend, upload: IncompleteUpload) -> bool:
    """Abort `upload`; `False` if it no longer existed. Sync, or async in the bridge."""
    root = _local_root(backend)
    if root is not None:
        return _local_abort(root, upload)
    target = _checked_target(backend)
    return _run(target, abort_operation(target, upload))


async def abort_upload_async(backend: Backend, upload: IncompleteUpload) -> bool:
    """Async version of [`abort_upload`][sqlalchemy_obstore._multipart.abort_upload]."""
    root = _local_root(backend)
    if root is not None:
        return _local_abort(root, upload)
    target = _checked_target(backend)
    return await run_async(target, abort_operation(target, upload))


def _lifecycle_plan(backend: Backend) -> tuple[Target, str] | LifecycleRule:
    store = store_backend(backend)
    if store is None:
        return LifecycleRule("not_checked", None, support(backend) or "not an obstore backend")
    if store.kind == "azure":
        return LifecycleRule("not_needed", None, _NOT_LISTABLE["azure"])
    if store.kind == "local":
        return LifecycleRule(
            "not_needed", None, "local files: the garbage collector removes staging files"
        )
    if store.kind in ("memory", "http"):
        return LifecycleRule("not_needed", None, _NOT_LISTABLE[store.kind])
    if store.kind == "gcs":
        return LifecycleRule(
            "not_checked",
            None,
            "GCS: check the bucket's lifecycle for AbortIncompleteMultipartUpload yourself "
            "(gcloud storage buckets describe)",
        )
    target = s3_target(store)
    if isinstance(target, str):
        return LifecycleRule("not_checked", None, target)
    return target, _managed_key_prefix(target, backend.prefix)


def lifecycle_rule(backend: Backend) -> LifecycleRule:
    """Whether the store expires incomplete uploads under the backend's prefix (sync).

    Never raises for a store that cannot be checked: that is the `not_checked` state.

    Raises:
        StorageError: If the store could be asked and the request failed.
        MissingDependencyError: Without httpx.
    """
    plan = _lifecycle_plan(backend)
    if isinstance(plan, LifecycleRule):
        return plan
    target, prefix = plan
    return run_sync(target, _lifecycle(target, prefix))


async def lifecycle_rule_async(backend: Backend) -> LifecycleRule:
    """Async version of [`lifecycle_rule`][sqlalchemy_obstore._multipart.lifecycle_rule]."""
    plan = _lifecycle_plan(backend)
    if isinstance(plan, LifecycleRule):
        return plan
    target, prefix = plan
    return await run_async(target, _lifecycle(target, prefix))
