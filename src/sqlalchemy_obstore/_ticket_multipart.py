"""Multipart tickets after the grant: which part URLs to sign, and the parts' ETags.

A multipart grant's client asks for part URLs in batches (`part_numbers`,
`sign_parts`: each URL accepts exactly its part's planned length, until the upload's
time ends) and hands the parts back when it asks to complete (`etags` reads the shapes
a client may send them in).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ._errors import ExpiredUploadTicketError, UploadPartsError
from ._replay_guards import Clock
from ._s3_requests import Target
from ._s3_uploads import MAX_PART_URLS, PartPlan, part_url
from ._sigv4 import Credentials
from ._ticket_claims import Claims
from ._ticket_issue import signing_credentials
from .backends import Backend

__all__ = ("part_etags", "requested_parts", "sign_parts")


def requested_parts(
    claims: Claims, plan: PartPlan, part_numbers: Iterable[int] | None
) -> list[int]:
    """The part numbers to sign URLs for: the given ones (checked), or the first batch."""
    numbers = (
        list(range(1, min(plan.count, MAX_PART_URLS) + 1))
        if part_numbers is None
        else list(dict.fromkeys(part_numbers))
    )
    wrong = [
        n
        for n in numbers
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= plan.count
    ]
    if wrong or len(numbers) > MAX_PART_URLS:
        raise UploadPartsError(
            f"Ask for at most {MAX_PART_URLS} part URLs at a time, numbered 1 to "
            f"{plan.count}"
            + (f" (not {', '.join(repr(n) for n in wrong[:5])})" if wrong else "")
            + ".",
            backend=claims.backend,
            path=claims.path,
        )
    return numbers


def _part_window(claims: Claims, now: datetime) -> timedelta:
    """How long part URLs signed now live: until the upload's window closes."""
    assert claims.upload_until is not None
    left = claims.upload_until - now
    if left.total_seconds() < 1:
        raise ExpiredUploadTicketError(
            f"The time for this multipart upload ended at "
            f"{claims.upload_until.isoformat()}; no more part URLs are signed. "
            "Complete it if every part is uploaded, or ask for a new ticket.",
            expired_at=claims.upload_until,
            backend=claims.backend,
            path=claims.path,
        )
    return timedelta(seconds=math.ceil(left.total_seconds()))


def sign_parts(
    claims: Claims,
    plan: PartPlan,
    bucket: Target,
    numbers: list[int],
    credentials: Credentials | None,
    backend: Backend,
    clock: Clock,
) -> dict[int, str]:
    """The presigned URL of each part in `numbers`, valid until the upload's time ends."""
    assert claims.upload_id is not None
    lifetime = _part_window(claims, clock())
    signer = signing_credentials(credentials, backend)
    now = clock()
    return {
        number: part_url(
            bucket,
            signer,
            path=claims.path,
            upload_id=claims.upload_id,
            number=number,
            length=plan.length(number),
            expires_in=lifetime,
            now=now,
        )
        for number in numbers
    }


def part_etags(parts: Mapping[int, str] | Iterable[Any], claims: Claims) -> dict[int, str]:
    """`{part number: ETag}` from the shapes a client may send (see `complete`)."""
    items: list[Any] = (
        [{"PartNumber": number, "ETag": etag} for number, etag in parts.items()]
        if isinstance(parts, Mapping)
        else list(parts)
    )
    out: dict[int, str] = {}
    for item in items:
        given = item if isinstance(item, Mapping) else {}
        number = given.get("PartNumber", given.get("part_number"))
        etag = given.get("ETag", given.get("etag"))
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(etag, str):
            raise UploadPartsError(
                'Name each part as {part number: ETag}, or as {"PartNumber": n, "ETag": "..."}.',
                backend=claims.backend,
                path=claims.path,
            )
        out[number] = etag
    return out
