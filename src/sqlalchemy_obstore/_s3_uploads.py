"""S3 uploads straight from a browser: POST forms with a policy, presigned multipart.

obstore signs GET and PUT URLs, but not the two ways S3 offers to let a browser upload
with limits the store itself enforces:

- a **POST form** (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html>):
  the browser posts `multipart/form-data` with fields the server chose and signed in a
  *policy*. S3 refuses the upload, before it stores anything, when the body's length
  is outside `content-length-range`, when a field differs from the policy (the key,
  `Content-Type`, `Content-Disposition`), when a field the policy does not name is
  added, or when the policy has expired. One POST creates objects up to 5 GiB.
- a **presigned multipart upload**
  (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html>): the
  server starts the upload (`CreateMultipartUpload`, which fixes the object's
  `Content-Type` and `Content-Disposition`), signs one `PUT ?partNumber=&uploadId=`
  URL per part with the part's exact `Content-Length` among the signed headers (S3
  refuses a body of any other length), and completes it (`ListParts` to check every
  part against the plan, then `CompleteMultipartUpload`) or aborts it. Up to 10,000
  parts of up to 5 GiB each: objects far beyond what one request can carry, uploaded
  in parallel and resumable part by part.

Signing is [`_sigv4`][sqlalchemy_obstore._sigv4]'s. The requests use the transport of
[`_s3_requests`][sqlalchemy_obstore._s3_requests]: each operation here is a generator
that yields unsigned [`Request`][sqlalchemy_obstore._s3_requests.Request]s and receives
[`Response`][sqlalchemy_obstore._s3_requests.Response]s, without I/O, and
[`run_sync`][sqlalchemy_obstore._s3_requests.run_sync] /
[`run_async`][sqlalchemy_obstore._s3_requests.run_async] send them. The credentials
and addresses are the store's (see
[`s3_target`][sqlalchemy_obstore._s3_requests.s3_target]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape

from ._body import PART_LIMITS, PartLimits, part_size
from ._errors import (
    FileTooLargeError,
    ObjectNotFoundError,
    StorageOperationError,
    UploadPartsError,
)
from ._multipart import IncompleteUpload, abort_operation
from ._s3_requests import Operation, Request, Target, failure, parse_xml
from ._sigv4 import Credentials, post_policy_fields, presign_url

__all__ = (
    "MAX_PART_URLS",
    "MAX_POST_SIZE",
    "PartPlan",
    "PostForm",
    "UploadedPart",
    "abort",
    "check_parts",
    "create",
    "finish",
    "list_parts",
    "part_url",
    "plan_parts",
    "post_form",
)

MAX_POST_SIZE = 5 * 1024**3
"""The largest object one POST (or one PUT) creates on S3: 5 GiB."""
MAX_PART_URLS = 1000
"""The most part URLs signed in one call (a client asks for more in batches)."""
POST_SUCCESS_STATUS = "204"
"""What S3 answers a successful POST (`success_action_status`): no body to parse."""

_RIGHTS = "s3:PutObject, s3:ListMultipartUploadParts, s3:AbortMultipartUpload"
_EPOCH = datetime.fromtimestamp(0, timezone.utc)


# -- POST forms -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PostForm:
    """Where a browser posts an upload, and the form fields to send before the file.

    Attributes:
        url: The bucket's URL.
        fields: The fields, in order; the file goes last, in a field named `file`.
    """

    url: str
    fields: dict[str, str]


def post_form(
    target: Target,
    credentials: Credentials,
    *,
    path: str,
    content_type: str,
    content_disposition: str,
    min_size: int,
    max_size: int,
    expires_in: timedelta,
    now: datetime | None = None,
) -> PostForm:
    """A signed POST form that creates exactly one object with exactly these attributes.

    The policy pins the bucket, the key, `Content-Type`, `Content-Disposition` and
    `success_action_status` to the values given here (the client sends them unchanged,
    and S3 refuses any other value or any field the policy does not name), and bounds
    the file's length with `content-length-range`.

    Args:
        target: The bucket.
        credentials: Who signs.
        path: The backend path of the object.
        content_type: The type the object is stored with.
        content_disposition: The disposition it is stored with (and served with).
        min_size: The smallest accepted length.
        max_size: The largest accepted length (at most 5 GiB).
        expires_in: How long the form may be posted.
        now: The signing time (default: now).

    Returns:
        The form.

    Raises:
        ValueError: For sizes outside `0 <= min_size <= max_size <= 5 GiB`.
    """
    if not 0 <= min_size <= max_size <= MAX_POST_SIZE:
        raise ValueError(
            f"A POST upload takes 0 <= min_size <= max_size <= {MAX_POST_SIZE} bytes, "
            f"not {min_size}..{max_size}."
        )
    fields = {
        "key": target.key(path),
        "Content-Type": content_type,
        "Content-Disposition": content_disposition,
        "success_action_status": POST_SUCCESS_STATUS,
    }
    signed = post_policy_fields(
        credentials=credentials,
        region=target.region,
        expires_in=expires_in,
        conditions=[{"bucket": target.bucket}, ["content-length-range", min_size, max_size]],
        fields=fields,
        now=now,
    )
    return PostForm(url=target.url(), fields=signed)


# -- the part plan --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartPlan:
    """How a file of known size is cut into the parts of a multipart upload.

    Every part is `part_size` bytes long but the last, which holds the rest.

    Attributes:
        size: The file's size.
        part_size: The length of every part but the last.
    """

    size: int
    part_size: int

    @property
    def count(self) -> int:
        """How many parts (at least one, possibly empty)."""
        return max(1, -(-self.size // self.part_size))

    def length(self, number: int) -> int:
        """The exact length of part `number` (1-based).

        Example:
            >>> plan = PartPlan(size=12, part_size=5)
            >>> plan.count, [plan.length(n) for n in (1, 2, 3)]
            (3, [5, 5, 2])
        """
        if not 1 <= number <= self.count:
            raise ValueError(f"part {number} is outside 1..{self.count}")
        return min(self.part_size, self.size - (number - 1) * self.part_size)


def plan_parts(size: int, preferred: int, limits: PartLimits | None = None) -> PartPlan:
    """The part plan of a `size`-byte file: `preferred` parts, larger when needed.

    Parts are at least the store's minimum (5 MiB on S3) and grow (to whole MiB) when
    `size` needs more than the store's 10,000 parts.

    Raises:
        TooManyPartsError: If `size` does not fit even in 10,000 parts of 5 GiB.

    Example:
        >>> plan_parts(100 * 1024**3, 8 * 1024**2).part_size // 1024**2
        11
    """
    limits = limits or PART_LIMITS["s3"]
    return PartPlan(size, part_size(size, max(preferred, limits.min_part_size), limits))


def part_url(
    target: Target,
    credentials: Credentials,
    *,
    path: str,
    upload_id: str,
    number: int,
    length: int,
    expires_in: timedelta,
    now: datetime | None = None,
) -> str:
    """The presigned `PUT` URL of one part, bound to its upload, number and exact length.

    `Content-Length` is among the signed headers: S3 recomputes the signature with the
    length the request carries, so a body of any other length is refused (403).
    Browsers set the header from the body themselves.
    """
    query = [("partNumber", str(number)), ("uploadId", upload_id)]
    return presign_url(
        "PUT",
        target.url(target.key(path), query),
        credentials=credentials,
        region=target.region,
        expires_in=expires_in,
        headers={"content-length": str(length)},
        now=now,
    )


# -- the requests (no I/O) ------------------------------------------------------------------------
def create(
    target: Target, path: str, *, content_type: str, content_disposition: str
) -> Operation[str]:
    """`CreateMultipartUpload` of `path`, with the object's attributes; the upload id."""
    response = yield Request(
        "POST",
        target.url(target.key(path), [("uploads", "")]),
        headers={"Content-Type": content_type, "Content-Disposition": content_disposition},
    )
    what = f"starting a multipart upload of {path!r}"
    if response.status != 200:
        raise failure(response, target, what, rights=_RIGHTS)
    upload_id = (parse_xml(response, target, what).findtext("UploadId") or "").strip()
    if not upload_id:
        raise StorageOperationError(
            f"{what} on backend {target.backend!r}: the store answered without an UploadId.",
            backend=target.backend,
            path=path,
            operation="create multipart upload",
        )
    return upload_id


@dataclass(frozen=True, slots=True)
class UploadedPart:
    """One part the store holds: its number, length and ETag (quotes included)."""

    number: int
    size: int
    etag: str


def list_parts(target: Target, path: str, upload_id: str) -> Operation[list[UploadedPart] | None]:
    """Every part of an upload (`ListParts`, page by page); `None` if the upload is gone."""
    parts: dict[int, UploadedPart] = {}
    marker = ""
    what = f"listing the parts of the upload of {path!r}"
    while True:
        query = [("uploadId", upload_id), ("max-parts", "1000")]
        if marker:
            query.append(("part-number-marker", marker))
        response = yield Request("GET", target.url(target.key(path), query))
        if response.status == 404:
            return None
        if response.status != 200:
            raise failure(response, target, what, rights=_RIGHTS)
        root = parse_xml(response, target, what)
        for element in root.iter("Part"):
            try:
                number = int(element.findtext("PartNumber") or "")
                size = int(element.findtext("Size") or "")
            except ValueError:
                continue  # not a part we could have planned
            parts[number] = UploadedPart(number, size, (element.findtext("ETag") or "").strip())
        truncated = (root.findtext("IsTruncated") or "").strip().lower() == "true"
        following = (root.findtext("NextPartNumberMarker") or "").strip()
        if not truncated or not following or following == marker:
            return sorted(parts.values(), key=lambda part: part.number)
        marker = following


def _same_etag(one: str, other: str) -> bool:
    return one.strip().strip('"') == other.strip().strip('"')


def check_parts(
    plan: PartPlan,
    parts: Sequence[UploadedPart],
    etags: Mapping[int, str] | None,
    *,
    backend: str,
    path: str,
) -> list[UploadedPart]:
    """The parts to complete the upload with, once they match `plan` exactly.

    Args:
        plan: The ticket's part plan.
        parts: What the store holds (`list_parts`).
        etags: The ETags the client reports per part number (optional); each must be
            the store's, so that the object is made of the parts the client means.
        backend: For the errors.
        path: For the errors.

    Returns:
        The parts `1..plan.count`, in order.

    Raises:
        FileTooLargeError: A part beyond the plan's count, or longer than planned (the
            store did not enforce the signed length): the upload must be aborted.
        UploadPartsError: A part missing or shorter than planned, or an ETag that is
            not the store's (upload it again and complete again).
    """
    held = {part.number: part for part in parts}
    beyond = [part for part in parts if not 1 <= part.number <= plan.count]
    longer = [part for part in parts if part not in beyond and part.size > plan.length(part.number)]
    if beyond or longer:
        raise FileTooLargeError(
            limit=plan.size,
            size_seen=sum(part.size for part in parts),
            declared=True,
            backend=backend,
            path=path,
        )
    missing = [n for n in range(1, plan.count + 1) if n not in held]
    short = [n for n, part in held.items() if part.size < plan.length(n)]
    if missing or short:
        raise UploadPartsError(
            "The upload is not complete: "
            + (f"parts {_numbers(missing)} are missing" if missing else "")
            + ("; " if missing and short else "")
            + (f"parts {_numbers(short)} are shorter than planned" if short else "")
            + ". Upload them, then complete again.",
            missing=missing,
            backend=backend,
            path=path,
        )
    if etags is not None:
        wrong = sorted(
            n for n in range(1, plan.count + 1) if not _same_etag(etags.get(n, ""), held[n].etag)
        )
        if wrong:
            raise UploadPartsError(
                f"Parts {_numbers(wrong)} are not the ones the store holds (their ETags "
                "differ: uploaded again since, or not at all). Complete with the ETags of "
                "the last upload of each part.",
                backend=backend,
                path=path,
            )
    return [held[n] for n in range(1, plan.count + 1)]


def _numbers(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def _completion(parts: Sequence[UploadedPart]) -> bytes:
    items = "".join(
        f"<Part><PartNumber>{part.number}</PartNumber><ETag>{escape(part.etag)}</ETag></Part>"
        for part in parts
    )
    return (
        '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{items}</CompleteMultipartUpload>"
    ).encode()


def complete(
    target: Target, path: str, upload_id: str, parts: Sequence[UploadedPart]
) -> Operation[None]:
    """`CompleteMultipartUpload` with these parts (S3 may report an error inside a 200)."""
    response = yield Request(
        "POST",
        target.url(target.key(path), [("uploadId", upload_id)]),
        body=_completion(parts),
        headers={"Content-Type": "application/xml"},
    )
    what = f"completing the multipart upload of {path!r}"
    if response.status != 200 or parse_xml(response, target, what).tag == "Error":
        raise failure(response, target, what, rights=_RIGHTS)


def abort(target: Target, path: str, upload_id: str) -> Operation[bool]:
    """`AbortMultipartUpload`; `False` if the upload was gone already."""
    return abort_operation(target, IncompleteUpload(path, upload_id, _EPOCH))


def finish(
    target: Target,
    path: str,
    upload_id: str,
    plan: PartPlan,
    etags: Mapping[int, str] | None,
) -> Operation[None]:
    """Check the parts against `plan` and complete the upload (see `check_parts`).

    Parts beyond the plan abort the upload (nothing is kept) before the error is raised.
    An upload that is gone because it was completed already (the object is there, of
    the planned size) counts as done, so a retried completion succeeds.

    Raises:
        ObjectNotFoundError: If the upload is gone (aborted, or collected as stale).
        FileTooLargeError: If the parts make a larger file than planned (aborted).
        UploadPartsError: If parts are missing, short, or not the client's.
    """
    parts = yield from list_parts(target, path, upload_id)
    if parts is None:
        response = yield Request("HEAD", target.url(target.key(path)))
        if response.status == 200 and response.headers.get("content-length") == str(plan.size):
            return  # completed before
        raise ObjectNotFoundError(
            f"The multipart upload of {path!r} no longer exists: it was aborted, or "
            "collected after its ticket expired. Ask for a new ticket and upload again.",
            backend=target.backend,
            path=path,
        )
    try:
        chosen = check_parts(plan, parts, etags, backend=target.backend, path=path)
    except FileTooLargeError:
        yield from abort(target, path, upload_id)
        raise
    yield from complete(target, path, upload_id, chosen)
