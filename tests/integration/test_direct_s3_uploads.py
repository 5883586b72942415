"""S3 direct uploads the store itself bounds: POST forms with a policy, presigned multipart.

The client's side is real HTTP (httpx), against SeaweedFS, which checks SigV4
signatures and POST policies, and moto, which checks neither (every refusal asserted
on SeaweedFS is asserted to be *accepted* by moto, so the suite knows which server
proves what; redeem and `complete` still catch what moto let through).

"Nothing stored" is measured: a head of the key, and the multipart uploads listed
under the backend's prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import httpx
import pytest

from sqlalchemy_obstore import (
    ExpiredUploadTicketError,
    FileTooLargeError,
    InvalidContentTypeError,
    InvalidObjectPathError,
    ObjectNotFoundError,
    ObstoreBackend,
    ReplayedUploadTicketError,
    UploadPartsError,
    storages,
)
from sqlalchemy_obstore import _multipart as multipart
from sqlalchemy_obstore.tickets import UploadGrant, UploadTickets
from tests.integration.backends import s3_backend
from tests.integration.web_apps import BACKEND, SCAN_LIMIT, SECRET, Scan
from tests.servers import S3Server

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 64
BIG = b"%PDF-1.7\n" + bytes(range(256)) * (11 * MIB // 256)  # 11 MiB: two parts of 8 MiB


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture(params=["seaweed", "moto"])
def s3(request: pytest.FixtureRequest) -> tuple[ObstoreBackend, S3Server]:
    """The uploads backend on SeaweedFS (policies checked) and moto (not checked)."""
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    backend = s3_backend(server, key=BACKEND, prefix=f"direct-{uuid.uuid4().hex[:10]}")
    storages.register_backend(backend)
    return backend, server


def checks(server: S3Server) -> bool:
    """Whether the server enforces signatures and POST policies (SeaweedFS; not moto)."""
    return server.checks_signatures


def post(http: httpx.Client, grant: UploadGrant, data: bytes, **changes: str) -> httpx.Response:
    """The browser's form: the grant's fields (some changed), then the file, last."""
    fields = {**grant.fields, **changes}
    return http.post(grant.url, data=fields, files={"file": (grant.filename, data)})


def incomplete(backend: ObstoreBackend) -> list[str]:
    """The paths of the multipart uploads in progress under the backend's prefix."""
    return [u.path for u in multipart.list_incomplete_uploads(backend, backend.prefix)]


def put_parts(http: httpx.Client, urls: dict[int, str], grant: UploadGrant, data: bytes) -> dict:
    """PUT each part's bytes to its URL; the ETags the store answered."""
    assert grant.part_size is not None
    etags = {}
    for number, url in urls.items():
        start = (number - 1) * grant.part_size
        response = http.put(url, content=data[start : start + grant.part_size])
        assert response.status_code == 200, response.text
        etags[number] = response.headers["etag"]
    return etags


# -- POST with a policy -----------------------------------------------------------------------
def test_a_post_within_the_policy_is_stored_then_redeemed(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client
) -> None:
    backend, _ = s3
    tickets = UploadTickets(SECRET)
    grant = tickets.issue(Scan.file, "contract.pdf")
    assert grant.method == "POST"
    assert grant.url.endswith("/test-bucket/")
    assert list(grant.fields)[:4] == ["key", "Content-Type", "Content-Disposition",
                                      "success_action_status"]  # fmt: skip
    assert grant.fields["key"] == grant.upload_path
    assert {"policy", "x-amz-signature"} <= set(grant.fields)
    assert grant.fields["x-amz-signature"] not in repr(grant)
    assert grant.fields["policy"] not in repr(grant)
    response = post(http, grant, PDF)
    assert response.status_code == 204, response.text
    info = backend.head(grant.upload_path)
    assert info.content_type == "application/pdf"
    assert info.attributes["Content-Disposition"].startswith("attachment;")

    file = tickets.redeem(grant.ticket)
    assert (file.path, file.size, file.content_type) == (grant.path, len(PDF), "application/pdf")
    assert file.get_content() == PDF
    assert not backend.exists(grant.upload_path)


def test_the_store_refuses_what_the_policy_excludes(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client
) -> None:
    """Each refusal leaves nothing behind on SeaweedFS; moto takes everything."""
    backend, server = s3
    tickets = UploadTickets(SECRET)
    grant = tickets.issue(Scan.file, "contract.pdf")
    other_key = f"{backend.prefix}/elsewhere/contract.pdf"
    attempts: dict[str, tuple[bytes, dict[str, str], str]] = {
        "too large": (PDF + bytes(SCAN_LIMIT), {}, grant.upload_path),
        "another type": (b"<html><script>1</script></html>", {"Content-Type": "text/html"},
                         grant.upload_path),
        "inline": (PDF, {"Content-Disposition": "inline"}, grant.upload_path),
        "another key": (PDF, {"key": other_key}, other_key),
        "an extra field": (PDF, {"x-amz-meta-owner": "mallory"}, grant.upload_path),
    }  # fmt: skip
    for what, (data, changes, key) in attempts.items():
        response = post(http, grant, data, **changes)
        if checks(server):
            assert response.status_code in (400, 403), (what, response.text)
            assert not backend.exists(key), what
        else:
            assert response.status_code == 204, what  # moto enforces no policy
            backend.delete(key)
    if checks(server):
        assert "EntityTooLarge" in post(http, grant, PDF + bytes(SCAN_LIMIT)).text

    # A form past its expiry: the policy says so, the store refuses it.
    earlier = datetime.now(timezone.utc) - timedelta(minutes=10)
    late = UploadTickets(SECRET, clock=lambda: earlier).issue(Scan.file, "late.pdf", expires_in=60)
    response = post(http, late, PDF)
    if checks(server):
        assert response.status_code == 403
        assert "expired" in response.text.lower()
        assert not backend.exists(late.upload_path)
    else:
        assert response.status_code == 204

    # The untouched form still works, and redeems.
    assert post(http, grant, PDF).status_code == 204
    assert tickets.redeem(grant.ticket).size == len(PDF)
    assert incomplete(backend) == []


def test_a_declared_size_is_the_only_size_the_store_takes(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client
) -> None:
    backend, server = s3
    tickets = UploadTickets(SECRET)
    grant = tickets.issue(Scan.file, "exact.pdf", size=len(PDF))
    assert grant.size == len(PDF)
    shorter = post(http, grant, PDF[:-1])
    if checks(server):
        assert shorter.status_code == 400
        assert not backend.exists(grant.upload_path)
        assert post(http, grant, PDF).status_code == 204
        assert tickets.redeem(grant.ticket).size == len(PDF)
    else:  # moto stored the short file: redeem refuses it and deletes it
        assert shorter.status_code == 204
        with pytest.raises(Exception, match="shorter than its declared size"):
            tickets.redeem(grant.ticket)
        assert not backend.exists(grant.path)

    with pytest.raises(FileTooLargeError):  # refused before anything is signed
        tickets.issue(Scan.file, "huge.pdf", size=SCAN_LIMIT + 1)


def test_the_declared_type_is_pinned_and_checked_when_issued(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client
) -> None:
    tickets = UploadTickets(SECRET)
    with pytest.raises(InvalidContentTypeError):
        tickets.issue(Scan.file, "page.pdf", content_type="text/html")
    images = tickets.issue(BACKEND, "photo", content_types=["image/*"], content_type="image/png")
    assert images.fields["Content-Type"] == "image/png"
    assert images.fields["Content-Disposition"].startswith("inline;")  # a passive type
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    assert post(http, images, png).status_code == 204
    assert tickets.redeem(images.ticket).content_type == "image/png"
    # no declared type and an extension the list does not allow: a download
    unknown = tickets.issue(BACKEND, "scan", content_types=["application/pdf"])
    assert unknown.fields["Content-Type"] == "application/octet-stream"
    assert unknown.fields["Content-Disposition"].startswith("attachment;")
    assert post(http, unknown, PDF).status_code == 204
    assert tickets.redeem(unknown.ticket).content_type == "application/pdf"  # sniffed


async def test_post_grants_from_async_code(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client
) -> None:
    tickets = UploadTickets(SECRET)
    grant = await tickets.issue_async(Scan.file, "async.pdf", size=len(PDF))
    assert grant.method == "POST"
    assert post(http, grant, PDF).status_code == 204
    assert (await tickets.redeem_async(grant.ticket)).size == len(PDF)


# -- presigned multipart ----------------------------------------------------------------------
@pytest.fixture
def big_tickets() -> UploadTickets:
    """Multipart above 10 MiB (the default is 100 MiB), 8 MiB parts."""
    return UploadTickets(SECRET, multipart_threshold=10 * MIB)


def test_multipart_upload_with_part_urls_then_complete_and_redeem(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client, big_tickets: UploadTickets
) -> None:
    backend, _ = s3
    grant = big_tickets.issue(BACKEND, "big.pdf", size=len(BIG), content_type="application/pdf")
    assert (grant.method, grant.url, grant.part_size, grant.part_count) == (
        "MULTIPART", "", 8 * MIB, 2,
    )  # fmt: skip
    assert grant.upload_path == grant.path  # no staging copy: completing ends the URLs
    assert grant.upload_id
    assert incomplete(backend) == [grant.path]

    urls = big_tickets.part_urls(grant.ticket)
    assert sorted(urls) == [1, 2]
    etags = put_parts(http, urls, grant, BIG)
    big_tickets.complete(grant.ticket, etags)
    big_tickets.complete(grant.ticket)  # a retried completion is harmless
    assert incomplete(backend) == []
    info = backend.head(grant.path)
    assert (info.size, info.content_type) == (len(BIG), "application/pdf")
    assert info.attributes["Content-Disposition"].startswith("attachment;")

    file = big_tickets.redeem(grant.ticket)
    assert (file.path, file.size, file.content_type) == (grant.path, len(BIG), "application/pdf")
    assert file.get_content() == BIG
    with pytest.raises(ReplayedUploadTicketError):
        big_tickets.part_urls(grant.ticket, [1])
    with pytest.raises(ReplayedUploadTicketError):
        big_tickets.complete(grant.ticket)


def test_a_part_url_takes_its_planned_length_only(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client, big_tickets: UploadTickets
) -> None:
    backend, server = s3
    grant = big_tickets.issue(BACKEND, "big.pdf", size=len(BIG))
    urls = big_tickets.part_urls(grant.ticket, [2, 1])
    tail = BIG[8 * MIB :]
    longer = http.put(urls[2], content=tail + b"more")
    if checks(server):
        # The length is signed: the store refuses another one.
        assert longer.status_code == 403
        assert http.put(urls[2], content=tail[:-1]).status_code == 403
        other = urls[2].replace("partNumber=2", "partNumber=3")  # the URL names its part
        assert http.put(other, content=tail).status_code == 403
        with pytest.raises(UploadPartsError) as missing:
            big_tickets.complete(grant.ticket)
        assert missing.value.missing == (1, 2)
        put_parts(http, urls, grant, BIG)
        big_tickets.complete(grant.ticket)
        assert big_tickets.redeem(grant.ticket).size == len(BIG)
    else:
        # moto took the longer part: `complete` finds it in ListParts and aborts.
        assert longer.status_code == 200
        assert http.put(urls[1], content=BIG[: 8 * MIB]).status_code == 200
        with pytest.raises(FileTooLargeError):
            big_tickets.complete(grant.ticket)
        assert incomplete(backend) == []
        assert not backend.exists(grant.path)


def test_complete_checks_every_part_and_the_clients_etags(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client, big_tickets: UploadTickets
) -> None:
    backend, _ = s3
    grant = big_tickets.issue(BACKEND, "big.pdf", size=len(BIG))
    urls = big_tickets.part_urls(grant.ticket)
    assert http.put(urls[1], content=BIG[: 8 * MIB]).status_code == 200
    with pytest.raises(UploadPartsError, match="parts 2 are missing") as info:
        big_tickets.complete(grant.ticket)
    assert info.value.missing == (2,)
    etags = put_parts(http, urls, grant, BIG)
    with pytest.raises(UploadPartsError, match="ETags differ"):
        big_tickets.complete(grant.ticket, {1: etags[1], 2: '"0123456789abcdef"'})
    with pytest.raises(UploadPartsError):
        big_tickets.complete(grant.ticket, [{"PartNumber": 1}])
    assert not backend.exists(grant.path)  # nothing completed so far
    big_tickets.complete(
        grant.ticket, [{"PartNumber": n, "ETag": etag} for n, etag in etags.items()]
    )
    assert backend.head(grant.path).size == len(BIG)


def test_abort_drops_the_parts(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client, big_tickets: UploadTickets
) -> None:
    backend, server = s3
    grant = big_tickets.issue(BACKEND, "big.pdf", size=len(BIG))
    urls = big_tickets.part_urls(grant.ticket, [1])
    assert http.put(urls[1], content=BIG[: 8 * MIB]).status_code == 200
    assert incomplete(backend) == [grant.path]
    assert big_tickets.abort(grant.ticket) is True
    assert incomplete(backend) == []
    # Aborting again: S3 and moto answer 404 (False); SeaweedFS answers 204 (True).
    assert big_tickets.abort(grant.ticket) is checks(server)
    with pytest.raises(ObjectNotFoundError, match="no longer exists"):
        big_tickets.complete(grant.ticket)
    late = http.put(urls[1], content=BIG[: 8 * MIB])
    assert late.status_code in (404, 500), late.text  # NoSuchUpload (moto: a 500)
    with pytest.raises(ObjectNotFoundError):
        big_tickets.redeem(grant.ticket)
    assert not backend.exists(grant.path)


def test_an_abandoned_multipart_upload_is_what_the_collector_aborts(
    s3: tuple[ObstoreBackend, S3Server], big_tickets: UploadTickets
) -> None:
    """The collector lists uploads under the backend's prefix and aborts idle ones."""
    backend, _ = s3
    grant = big_tickets.issue(BACKEND, "abandoned.pdf", size=len(BIG))
    [found] = multipart.list_incomplete_uploads(backend, backend.prefix)
    assert (found.path, found.upload_id) == (grant.path, grant.upload_id)
    assert multipart.abort_upload(backend, found) is True  # what gc does past its grace
    with pytest.raises(ObjectNotFoundError):
        big_tickets.complete(grant.ticket)


def test_part_urls_end_with_the_uploads_time(
    s3: tuple[ObstoreBackend, S3Server], big_tickets: UploadTickets
) -> None:
    now = [datetime.now(timezone.utc)]
    tickets = UploadTickets(SECRET, multipart_threshold=10 * MIB, clock=lambda: now[0])
    grant = tickets.issue(BACKEND, "slow.pdf", size=len(BIG), expires_in=600)
    url = tickets.part_urls(grant.ticket, [1])[1]
    assert "X-Amz-Expires=600" in url
    now[0] += timedelta(seconds=590)
    assert "X-Amz-Expires=10" in tickets.part_urls(grant.ticket, [1])[1]
    now[0] += timedelta(seconds=10)
    with pytest.raises(ExpiredUploadTicketError, match="no more part URLs"):
        tickets.part_urls(grant.ticket, [1])
    with pytest.raises(UploadPartsError, match="numbered 1 to 2"):
        tickets.part_urls(grant.ticket, [3])
    assert tickets.abort(grant.ticket) is True


async def test_multipart_from_async_code(
    s3: tuple[ObstoreBackend, S3Server], big_tickets: UploadTickets
) -> None:
    backend, _ = s3
    grant = await big_tickets.issue_async(BACKEND, "async.pdf", size=len(BIG))
    assert grant.method == "MULTIPART"
    urls = await big_tickets.part_urls_async(grant.ticket, range(1, 3))
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        for number, url in urls.items():
            start = (number - 1) * 8 * MIB
            response = await client.put(url, content=BIG[start : start + 8 * MIB])
            assert response.status_code == 200
    await big_tickets.complete_async(grant.ticket)
    assert (await big_tickets.redeem_async(grant.ticket)).size == len(BIG)
    other = await big_tickets.issue_async(BACKEND, "dropped.pdf", size=len(BIG))
    assert await big_tickets.abort_async(other.ticket) is True
    assert incomplete(backend) == []


def test_methods_per_store_and_per_upload(s3: tuple[ObstoreBackend, S3Server]) -> None:
    tickets = UploadTickets(SECRET, multipart_threshold=10 * MIB)
    assert tickets.issue(BACKEND, "a.pdf").method == "POST"
    assert tickets.issue(BACKEND, "a.pdf", size=10 * MIB).method == "POST"
    big = tickets.issue(BACKEND, "a.pdf", size=10 * MIB + 1)
    assert big.method == "MULTIPART"
    assert tickets.abort(big.ticket)
    assert tickets.issue(BACKEND, "a.pdf", method="put").method == "PUT"
    small = tickets.issue(BACKEND, "a.pdf", size=1, method="multipart")
    assert (small.method, small.part_count, small.part_size) == ("MULTIPART", 1, 8 * MIB)
    assert tickets.abort(small.ticket)
    assert UploadTickets(SECRET, s3_method="put").issue(BACKEND, "a.pdf").method == "PUT"


def test_a_multipart_upload_left_outside_a_changed_prefix_is_not_completed(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client
) -> None:
    """The application moves its uploads to another prefix while a client is uploading:
    the upload's key is now outside the backend's prefix, where the backend could never
    delete the object, so no part URL is signed and the upload is not completed (before
    any request); aborting it still works."""
    backend, server = s3
    tickets = UploadTickets(SECRET)
    grant = tickets.issue(BACKEND, "a.pdf", size=len(PDF), method="multipart")
    put_parts(http, tickets.part_urls(grant.ticket), grant, PDF)
    moved = s3_backend(server, key=BACKEND, prefix=f"{backend.prefix}-moved")
    storages.register_backend(moved, replace=True)
    with pytest.raises(InvalidObjectPathError, match="-moved/'") as raised:
        tickets.part_urls(grant.ticket)
    assert (raised.value.backend, raised.value.path) == (BACKEND, grant.path)
    with pytest.raises(InvalidObjectPathError):
        tickets.complete(grant.ticket)
    assert not backend.exists(grant.path)  # not completed
    assert tickets.abort(grant.ticket) is True
    assert incomplete(backend) == []


def boto(server: S3Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=server.region,
    )


def test_a_multipart_object_has_the_planned_parts(
    s3: tuple[ObstoreBackend, S3Server], http: httpx.Client, big_tickets: UploadTickets
) -> None:
    _, server = s3
    grant = big_tickets.issue(BACKEND, "big.pdf", size=len(BIG))
    put_parts(http, big_tickets.part_urls(grant.ticket), grant, BIG)
    big_tickets.complete(grant.ticket)
    head = boto(server).head_object(Bucket=server.bucket, Key=grant.path, PartNumber=1)
    assert (head["PartsCount"], head["ContentLength"]) == (2, 8 * MIB)
