"""S3 direct uploads and part sizes without a server: the decisions and the requests.

The requests of `_s3_uploads` are generators answered here by hand (as in
`test_multipart_requests.py`); the round trips against SeaweedFS and moto are in
`tests/integration/test_direct_s3_uploads.py` and `test_part_sizes.py`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

import pytest

from sqlalchemy_obstore import (
    ConfigurationError,
    FileObject,
    FileTooLargeError,
    FileTooSmallError,
    InvalidContentTypeError,
    InvalidUploadTicketError,
    ObjectNotFoundError,
    ObstoreBackend,
    StoredObject,
    TooManyPartsError,
    UnsupportedOperationError,
    UploadPartsError,
    storages,
)
from sqlalchemy_obstore import _s3_requests as s3r
from sqlalchemy_obstore import _s3_uploads as s3u
from sqlalchemy_obstore.backends import PART_LIMITS, PartLimits, SizedBody, part_size
from sqlalchemy_obstore.signing import HmacUrlSigner
from sqlalchemy_obstore.tickets import UploadTickets
from sqlalchemy_obstore.validation import UploadPolicy

SECRET = "unit-test-upload-ticket-secret-0123456789"
MIB = 1024 * 1024
NOW = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)


def s3_store(key: str = "s3", url: str = "s3://bucket/", **config: Any) -> ObstoreBackend:
    """An S3 backend that signs offline (no server is contacted by these tests)."""
    config = {
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "secret-example-key",
        "region": "eu-west-1",
        "endpoint": "http://127.0.0.1:9",
        **config,
    }
    return ObstoreBackend(key, url, **config)


def target(backend: ObstoreBackend) -> s3r.Target:
    found = s3r.s3_target(backend)
    assert not isinstance(found, str), found
    return found


def drive(operation: Generator[s3r.Request, s3r.Response, Any], *answers: s3r.Response) -> Any:
    """Answer the operation's requests in turn; return (requests, result)."""
    requests = [next(operation)]
    for answer in answers:
        try:
            requests.append(operation.send(answer))
        except StopIteration as stop:
            return requests, stop.value
    raise AssertionError(f"the operation asked for more: {requests[-1]}")


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def parts_page(parts: list[tuple[int, int, str]], *, more: str = "") -> bytes:
    items = "".join(
        f"<Part><PartNumber>{n}</PartNumber><Size>{size}</Size><ETag>{escape(etag)}</ETag></Part>"
        for n, size, etag in parts
    )
    truncated = "true" if more else "false"
    return (
        f'<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{items}'
        f"<IsTruncated>{truncated}</IsTruncated><NextPartNumberMarker>{more}"
        "</NextPartNumberMarker></ListPartsResult>"
    ).encode()


# -- part sizes -----------------------------------------------------------------------------------
def test_part_size_keeps_the_preferred_size_while_it_fits() -> None:
    limits = PART_LIMITS["s3"]
    assert part_size(None, 5 * MIB, limits) == 5 * MIB  # unknown length: as asked
    assert part_size(10_000 * 5 * MIB, 5 * MIB, limits) == 5 * MIB  # exactly 10,000 parts
    assert part_size(10_000 * 5 * MIB + 1, 5 * MIB, limits) == 6 * MIB  # grows to whole MiB
    assert part_size(10**15, 5 * MIB, None) == 5 * MIB  # local files, memory: no limit
    assert part_size(100, 0, limits) == 1


def test_part_size_grows_until_the_store_refuses() -> None:
    limits = PART_LIMITS["s3"]
    largest = 10_000 * 5 * 1024**3
    assert part_size(largest, 5 * MIB, limits) == 5 * 1024**3
    with pytest.raises(TooManyPartsError) as info:
        part_size(largest + 1, 5 * MIB, limits, backend="b", path="p")
    assert (info.value.limit, info.value.size_seen) == (largest, largest + 1)
    assert (info.value.backend, info.value.path) == ("b", "p")
    assert isinstance(info.value, FileTooLargeError)
    azure = PART_LIMITS["azure"]
    assert part_size(50_000 * 5 * MIB + 1, 5 * MIB, azure) == 6 * MIB


def test_a_sized_body_carries_its_length_and_closes_its_source() -> None:
    closed = []

    def source() -> Generator[bytes, None, None]:
        try:
            yield b"abc"
            yield b"def"
        finally:
            closed.append(True)

    body = SizedBody(source(), 6)
    assert next(body) == b"abc"
    body.close()
    assert closed == [True]


def test_a_stream_past_the_limit_fails_at_the_part_that_does_not_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory stores have no limit; give them S3's (shrunk) to count the parts."""
    monkeypatch.setitem(PART_LIMITS, "memory", PartLimits(max_parts=3, max_part_size=10))
    backend = ObstoreBackend("m", "memory://")
    sent = []

    def stream(n: int) -> Generator[bytes, None, None]:
        for _ in range(n):
            sent.append(1)
            yield b"xx"

    backend.put("ok", stream(6), chunk_size=4)  # 12 bytes: 3 parts of 4
    assert backend.get_bytes("ok") == b"x" * 12
    sent.clear()
    with pytest.raises(TooManyPartsError) as info:
        backend.put("no", stream(100), chunk_size=4)
    assert (info.value.limit, info.value.size_seen) == (12, 14)
    assert len(sent) == 7  # read no further than the chunk past the limit
    assert not backend.exists("no")
    # known length: parts grow (3 parts of 5 bytes hold 13 bytes), or it is refused
    backend.put("grown", SizedBody([b"y" * 13], 13), chunk_size=4)
    with pytest.raises(TooManyPartsError):
        backend.put("refused", b"z" * 31, chunk_size=4)
    with pytest.raises(TooManyPartsError):
        backend.put("refused", SizedBody(stream(16), 32), chunk_size=4)


async def test_an_async_stream_past_the_limit_fails_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PART_LIMITS, "memory", PartLimits(max_parts=2, max_part_size=10))
    backend = ObstoreBackend("m", "memory://")

    async def stream() -> Any:
        for _ in range(10):
            yield b"xx"

    with pytest.raises(TooManyPartsError):
        await backend.put_async("no", stream(), chunk_size=4)
    assert not await backend.exists_async("no")


def test_stored_object_takes_a_chunk_size() -> None:
    column = StoredObject("b", chunk_size=16 * MIB)
    assert column.save_options.chunk_size == 16 * MIB
    assert StoredObject("b").save_options.chunk_size == 5 * MIB
    assert "chunk_size=16777216" in repr(column)
    assert StoredObject("b", chunk_size="8 MiB").chunk_size == 8 * MIB
    for wrong in (0, -1, 1.5, True, "5 M", "0.5 B"):
        with pytest.raises(ConfigurationError, match="chunk_size"):
            StoredObject("b", chunk_size=wrong)  # type: ignore[arg-type]


# -- POST forms -----------------------------------------------------------------------------------
def policy_of(fields: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(base64.b64decode(fields["policy"]))
    return document


def test_a_post_form_pins_every_field_and_bounds_the_length() -> None:
    bucket = target(s3_store(url="s3://bucket/store-prefix/"))
    form = s3u.post_form(
        bucket,
        s3r.credentials_now(bucket) or pytest.fail("no credentials"),
        path="uploads/a.pdf",
        content_type="application/pdf",
        content_disposition='attachment; filename="a.pdf"',
        min_size=1,
        max_size=1000,
        expires_in=timedelta(minutes=5),
        now=NOW,
    )
    assert form.url == "http://127.0.0.1:9/bucket/"
    assert form.fields["key"] == "store-prefix/uploads/a.pdf"
    policy = policy_of(form.fields)
    assert policy["expiration"] == "2030-05-01T12:05:00.000Z"
    conditions = policy["conditions"]
    assert {"bucket": "bucket"} in conditions
    assert ["content-length-range", 1, 1000] in conditions
    for name in ("key", "Content-Type", "Content-Disposition", "success_action_status"):
        assert {name: form.fields[name]} in conditions
    assert form.fields["success_action_status"] == "204"
    with pytest.raises(ValueError, match="max_size"):
        s3u.post_form(
            bucket,
            s3r.credentials_now(bucket) or pytest.fail("no credentials"),
            path="a",
            content_type="a/b",
            content_disposition="attachment",
            min_size=0,
            max_size=s3u.MAX_POST_SIZE + 1,
            expires_in=timedelta(minutes=5),
        )


@pytest.fixture
def tickets() -> UploadTickets:
    return UploadTickets(SECRET, clock=lambda: NOW, multipart_threshold=10 * MIB)


def test_issue_chooses_post_on_s3_and_put_elsewhere(tickets: UploadTickets) -> None:
    storages.register_backend(s3_store())
    storages.register_backend(ObstoreBackend("mem", "memory://", url_signer=HmacUrlSigner(SECRET)))
    storages.register_backend(
        ObstoreBackend("az", "az://container/", account_name="acct", account_key="a2V5")
    )
    grant = tickets.issue("s3", "report.pdf", max_size=1000)
    assert (grant.method, grant.headers) == ("POST", {})
    assert ["content-length-range", 0, 1000] in policy_of(dict(grant.fields))["conditions"]
    assert grant.as_dict()["fields"] == dict(grant.fields)
    assert tickets.issue("mem", "report.pdf").method == "PUT"
    assert tickets.issue("az", "report.pdf").method == "PUT"
    with pytest.raises(UnsupportedOperationError, match="only S3"):
        tickets.issue("mem", "report.pdf", method="post")
    with pytest.raises(UnsupportedOperationError, match="only S3"):
        tickets.issue("az", "report.pdf", size=20 * MIB, method="multipart")
    # an S3 store the library cannot sign for: PUT by default, refused when POST is required
    storages.register_backend(
        ObstoreBackend("anon", "s3://public/", region="eu-west-1", skip_signature=True)
    )
    strict = UploadTickets(SECRET, s3_method="post")
    with pytest.raises(UnsupportedOperationError, match="does not sign"):
        strict.issue("anon", "a.pdf")
    assert strict.issue("mem", "a.pdf").method == "PUT"  # not S3: PUT as always


def test_post_ranges_follow_the_limits_and_the_declared_size(tickets: UploadTickets) -> None:
    storages.register_backend(s3_store(policy=UploadPolicy(min_size=10, max_size=1000)))
    ranged = policy_of(dict(tickets.issue("s3", "a.txt").fields))["conditions"]
    assert ["content-length-range", 10, 1000] in ranged
    exact = tickets.issue("s3", "a.txt", size=500)
    assert ["content-length-range", 500, 500] in policy_of(dict(exact.fields))["conditions"]
    assert exact.size == 500
    with pytest.raises(FileTooLargeError):
        tickets.issue("s3", "a.txt", size=1001)
    with pytest.raises(FileTooSmallError):
        tickets.issue("s3", "a.txt", size=9)
    for wrong in (-1, 1.5, True):
        with pytest.raises(ConfigurationError, match="size"):
            tickets.issue("s3", "a.txt", size=wrong)  # type: ignore[arg-type]
    storages.register_backend(s3_store("open"))
    unlimited = policy_of(dict(tickets.issue("open", "a.bin").fields))["conditions"]
    assert ["content-length-range", 0, s3u.MAX_POST_SIZE] in unlimited
    with pytest.raises(ConfigurationError, match="multipart"):
        tickets.issue("open", "a.bin", size=s3u.MAX_POST_SIZE + 1, method="post")
    with pytest.raises(ConfigurationError, match="size"):
        tickets.issue("open", "a.bin", method="multipart")
    with pytest.raises(ConfigurationError, match="method"):
        tickets.issue("open", "a.bin", method="patch")  # type: ignore[arg-type]


def test_the_stored_type_is_decided_when_issued(tickets: UploadTickets) -> None:
    storages.register_backend(s3_store())

    def stored(filename: str, **options: Any) -> tuple[str, str]:
        fields = tickets.issue("s3", filename, **options).fields
        return fields["Content-Type"], fields["Content-Disposition"].split(";")[0]

    assert stored("photo.png") == ("image/png", "inline")
    assert stored("page.html") == ("text/html", "attachment")  # active: never inline
    assert stored("photo", content_type="IMAGE/PNG; q=1") == ("image/png", "inline")
    assert stored("x.png", content_types=["application/pdf"]) == (
        "application/octet-stream", "attachment",
    )  # fmt: skip
    for declared in ("text/html", "image/svg+xml"):
        with pytest.raises(InvalidContentTypeError):
            tickets.issue("s3", "a.png", content_types=["image/png"], content_type=declared)
    for malformed in ("text", "text/html\r\nX: y", "a/b/c", ""):
        with pytest.raises(InvalidContentTypeError):
            tickets.issue("s3", "a.bin", content_type=malformed)


def test_redeem_holds_a_put_to_its_declared_size(tickets: UploadTickets) -> None:
    backend = ObstoreBackend("mem", "memory://", url_signer=HmacUrlSigner(SECRET))
    storages.register_backend(backend)
    grant = tickets.issue("mem", "a.txt", size=5)
    backend.put(grant.upload_path, b"four")
    with pytest.raises(FileTooSmallError, match="declared"):
        tickets.redeem(grant.ticket)
    grant = tickets.issue("mem", "a.txt", size=5)
    backend.put(grant.upload_path, b"hello")
    assert tickets.redeem(grant.ticket).size == 5


def test_multipart_calls_refuse_other_tickets(tickets: UploadTickets) -> None:
    storages.register_backend(s3_store())
    grant = tickets.issue("s3", "a.pdf")
    for call in (tickets.part_urls, tickets.complete, tickets.abort):
        with pytest.raises(InvalidUploadTicketError, match="not for a multipart"):
            call(grant.ticket)
    with pytest.raises(InvalidUploadTicketError):
        tickets.part_urls(grant.ticket[:-2] + "xx", [1])


def test_constructor_checks_the_new_options() -> None:
    with pytest.raises(ConfigurationError, match="s3_method"):
        UploadTickets(SECRET, s3_method="get")  # type: ignore[arg-type]
    for name in ("multipart_threshold", "part_size"):
        with pytest.raises(ConfigurationError, match=name):
            UploadTickets(SECRET, **{name: 0})
    with pytest.raises(ConfigurationError, match="multipart_expires_in"):
        UploadTickets(SECRET, multipart_expires_in=-1)


# -- the part plan and the multipart requests ----------------------------------------------------
def test_a_part_plan_cuts_the_file() -> None:
    plan = s3u.plan_parts(20 * MIB, 8 * MIB)
    assert (plan.count, [plan.length(n) for n in (1, 2, 3)]) == (3, [8 * MIB, 8 * MIB, 4 * MIB])
    assert s3u.plan_parts(16 * MIB, 8 * MIB).count == 2
    assert s3u.plan_parts(0, 8 * MIB).count == 1
    assert s3u.plan_parts(0, 8 * MIB).length(1) == 0
    assert s3u.plan_parts(1, 1).part_size == 5 * MIB  # S3's smallest part
    with pytest.raises(ValueError, match="outside"):
        plan.length(4)


def test_a_part_url_signs_its_number_upload_and_length() -> None:
    bucket = target(s3_store())
    url = s3u.part_url(
        bucket,
        s3r.credentials_now(bucket) or pytest.fail("no credentials"),
        path="dir/a b.bin",
        upload_id="up/1",
        number=3,
        length=1234,
        expires_in=timedelta(minutes=5),
        now=NOW,
    )
    assert url.startswith("http://127.0.0.1:9/bucket/dir/a%20b.bin?")
    found = query(url)
    assert (found["partNumber"], found["uploadId"]) == ("3", "up/1")
    assert found["X-Amz-SignedHeaders"] == "content-length;host"
    assert found["X-Amz-Expires"] == "300"


def test_create_sends_the_attributes_and_reads_the_upload_id() -> None:
    bucket = target(s3_store())
    operation = s3u.create(
        bucket, "a.pdf", content_type="application/pdf", content_disposition="attachment"
    )
    answer = (
        b"<InitiateMultipartUploadResult><UploadId>u-1</UploadId></InitiateMultipartUploadResult>"
    )
    requests, upload_id = drive(operation, s3r.Response(200, answer))
    assert upload_id == "u-1"
    assert (requests[0].method, query(requests[0].url)) == ("POST", {"uploads": ""})
    assert requests[0].headers == {
        "Content-Type": "application/pdf",
        "Content-Disposition": "attachment",
    }
    with pytest.raises(Exception, match="without an UploadId"):
        drive(s3u.create(bucket, "a", content_type="a/b", content_disposition="x"),
              s3r.Response(200, b"<Result/>"))  # fmt: skip


def test_list_parts_pages_and_reports_a_missing_upload() -> None:
    bucket = target(s3_store())
    first = parts_page([(1, 5, '"e1"'), (2, 5, '"e2"')], more="2")
    second = parts_page([(3, 1, '"e3"')])
    requests, parts = drive(
        s3u.list_parts(bucket, "a", "u"), s3r.Response(200, first), s3r.Response(200, second)
    )
    assert [p.number for p in parts] == [1, 2, 3]
    assert query(requests[1].url)["part-number-marker"] == "2"
    _, gone = drive(s3u.list_parts(bucket, "a", "u"), s3r.Response(404, b""))
    assert gone is None


def test_check_parts_against_the_plan() -> None:
    plan = s3u.PartPlan(size=12, part_size=5)
    part = s3u.UploadedPart

    def check(parts: list[Any], etags: dict[int, str] | None = None) -> list[Any]:
        return s3u.check_parts(plan, parts, etags, backend="b", path="p")

    good = [part(1, 5, '"a"'), part(2, 5, '"b"'), part(3, 2, '"c"')]
    assert check(list(reversed(good))) == good
    assert check(good, {1: "a", 2: '"b"', 3: "c"}) == good  # quotes or not
    with pytest.raises(UploadPartsError) as missing:
        check(good[:2])
    assert missing.value.missing == (3,)
    with pytest.raises(UploadPartsError, match="shorter"):
        check([good[0], part(2, 4, '"b"'), good[2]])
    with pytest.raises(FileTooLargeError):
        check([*good, part(4, 1, '"d"')])
    with pytest.raises(FileTooLargeError):
        check([good[0], good[1], part(3, 3, '"c"')])
    with pytest.raises(UploadPartsError, match="ETags differ"):
        check(good, {1: "a", 2: "b"})


def test_finish_completes_with_the_listed_parts() -> None:
    bucket = target(s3_store())
    plan = s3u.PartPlan(size=7, part_size=5)
    listed = parts_page([(1, 5, '"e&1"'), (2, 2, '"e2"')])
    requests, _ = drive(
        s3u.finish(bucket, "a.bin", "u", plan, None),
        s3r.Response(200, listed),
        s3r.Response(200, b"<CompleteMultipartUploadResult/>"),
    )
    complete = requests[1]
    assert (complete.method, query(complete.url)) == ("POST", {"uploadId": "u"})
    assert b'<Part><PartNumber>1</PartNumber><ETag>"e&amp;1"</ETag></Part>' in complete.body
    assert complete.body.endswith(b'<ETag>"e2"</ETag></Part></CompleteMultipartUpload>')
    # S3 may report a failed completion inside a 200
    with pytest.raises(Exception, match="InternalError"):
        drive(
            s3u.finish(bucket, "a.bin", "u", plan, None),
            s3r.Response(200, listed),
            s3r.Response(200, b"<Error><Code>InternalError</Code></Error>"),
        )


def test_finish_aborts_parts_beyond_the_plan() -> None:
    bucket = target(s3_store())
    plan = s3u.PartPlan(size=7, part_size=5)
    listed = parts_page([(1, 5, '"a"'), (2, 5, '"b"')])
    operation = s3u.finish(bucket, "a.bin", "u", plan, None)
    assert next(operation).method == "GET"
    abort = operation.send(s3r.Response(200, listed))
    assert (abort.method, query(abort.url)) == ("DELETE", {"uploadId": "u"})
    with pytest.raises(FileTooLargeError):
        operation.send(s3r.Response(204, b""))


def test_finish_of_an_upload_that_is_gone() -> None:
    bucket = target(s3_store())
    plan = s3u.PartPlan(size=7, part_size=5)
    done = s3r.Response(200, b"", {"content-length": "7"})
    requests, _ = drive(s3u.finish(bucket, "a", "u", plan, None), s3r.Response(404, b""), done)
    assert requests[1].method == "HEAD"  # completed before: nothing to do
    with pytest.raises(ObjectNotFoundError, match="no longer exists"):
        drive(
            s3u.finish(bucket, "a", "u", plan, None),
            s3r.Response(404, b""),
            s3r.Response(404, b""),
        )


def test_a_file_object_of_a_path_reaches_the_backend_with_its_length(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    backend = ObstoreBackend("m", "memory://")
    original = ObstoreBackend.put

    def spy(self: ObstoreBackend, path: str, body: Any, **options: Any) -> Any:
        seen.append(body)
        return original(self, path, body, **options)

    monkeypatch.setattr(ObstoreBackend, "put", spy)
    storages.register_backend(backend)
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 100)
    FileObject(filename="a.bin", content=source, backend="m").save(chunk_size=10)
    assert isinstance(seen[0], SizedBody)
    assert seen[0].size == 100


def test_refusals_have_their_http_status() -> None:
    from sqlalchemy_obstore.uploads import error_status

    assert error_status(UploadPartsError("parts 2 are missing")) == 400
    assert error_status(TooManyPartsError(part_size=5, max_parts=2, size_seen=11)) == 413


def test_a_store_whose_credentials_only_obstore_reaches(
    tickets: UploadTickets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials from the instance (IMDS): no POST or multipart; never a network call."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    storages.register_backend(
        ObstoreBackend("ec2", "s3://bucket/", region="eu-west-1", endpoint="http://127.0.0.1:9")
    )
    for method in ("post", "multipart"):
        with pytest.raises(UnsupportedOperationError, match="instance, container"):
            tickets.issue("ec2", "a.pdf", size=20 * MIB, method=method)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedOperationError, match="instance, container"):
        UploadTickets(SECRET, s3_method="post").issue("ec2", "a.pdf")


def test_a_minimum_above_what_a_post_carries(tickets: UploadTickets) -> None:
    storages.register_backend(s3_store(policy=UploadPolicy(min_size=6 * 1024**3)))
    with pytest.raises(ConfigurationError, match="multipart"):
        tickets.issue("s3", "huge.bin")
