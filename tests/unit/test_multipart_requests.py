"""The I/O-free core of the incomplete-upload requests: URLs, pages, answers, lifecycle rules.

Each operation is a generator of requests; these tests answer it with the XML S3
documents (as AWS documents them) and check what it asks next and what it concludes.
The same operations run against moto and SeaweedFS in
tests/integration/test_multipart_cleanup.py.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from sqlalchemy_obstore import ObstoreBackend, StoragePermissionError, UnsupportedOperationError
from sqlalchemy_obstore import _multipart as mp
from sqlalchemy_obstore._s3_requests import Request, Response, Target, _seconds, s3_target
from sqlalchemy_obstore._sigv4 import Credentials
from sqlalchemy_obstore.errors import StorageOperationError

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def s3(url: str = "s3://bucket/", **config: Any) -> ObstoreBackend:
    config.setdefault("access_key_id", "AKID")
    config.setdefault("secret_access_key", "secret")
    return ObstoreBackend("s3", url, **config)


def target(backend: ObstoreBackend) -> Target:
    found = s3_target(backend)
    assert not isinstance(found, str), found
    return found


def drive(operation: Generator[Request, Response, Any], *answers: Response) -> Any:
    """Answer the operation's requests in turn; return (requests, result)."""
    requests = [next(operation)]
    for answer in answers:
        try:
            requests.append(operation.send(answer))
        except StopIteration as stop:
            return requests, stop.value
    raise AssertionError(f"the operation asked for more: {requests[-1]}")


def query(request: Request) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))


def page(uploads: list[tuple[str, str, str]], *, next_key: str = "", next_id: str = "") -> bytes:
    items = "".join(
        f"<Upload><Key>{k}</Key><UploadId>{u}</UploadId><Initiated>{t}</Initiated></Upload>"
        for k, u, t in uploads
    )
    truncated = "true" if next_key else "false"
    return (
        f"<ListMultipartUploadsResult {NS}><Bucket>bucket</Bucket>{items}"
        f"<IsTruncated>{truncated}</IsTruncated><NextKeyMarker>{next_key}</NextKeyMarker>"
        f"<NextUploadIdMarker>{next_id}</NextUploadIdMarker></ListMultipartUploadsResult>"
    ).encode()


# -- where requests go ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "config", "bucket_url"),
    [
        ("s3://bucket/", {"region": "eu-west-1"}, "https://s3.eu-west-1.amazonaws.com/bucket"),
        (
            "s3://bucket/",
            {"region": "eu-west-1", "virtual_hosted_style_request": True},
            "https://bucket.s3.eu-west-1.amazonaws.com",
        ),
        ("s3://bucket/", {"endpoint": "http://127.0.0.1:9000/"}, "http://127.0.0.1:9000/bucket"),
        (
            "s3://bucket/",
            {"endpoint": "https://bucket.minio.example", "virtual_hosted_style_request": True},
            "https://bucket.minio.example",
        ),
    ],
)
def test_bucket_urls_follow_obstores_addressing(
    url: str, config: dict[str, Any], bucket_url: str
) -> None:
    assert target(s3(url, **config)).bucket_url == bucket_url


def test_region_and_endpoint_fall_back_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert target(s3()).region == "ap-south-1"
    assert target(s3(region="us-west-2")).region == "us-west-2"


def test_listing_pages_through_every_upload_under_the_prefix() -> None:
    backend = s3("s3://bucket/root/", endpoint="http://127.0.0.1:9000", prefix="uploads")
    found = target(backend)
    assert found.store_prefix == "root"
    operation = mp._list(found, mp._managed_key_prefix(found, backend.prefix))
    first = page(
        [("root/uploads/a b.bin", "u1", "2026-01-02T03:04:05.000Z")],
        next_key="root/uploads/a b.bin",
        next_id="u1",
    )
    second = page(
        [
            ("root/uploads/c.bin", "u2", "2026-01-03T00:00:00.000Z"),
            ("root/other/d.bin", "u3", "2026-01-03T00:00:00.000Z"),  # not asked for
        ]
    )
    requests, uploads = drive(operation, Response(200, first), Response(200, second))
    assert [r.method for r in requests] == ["GET", "GET"]
    assert urlsplit(requests[0].url).path == "/bucket/"
    assert query(requests[0]) == {"uploads": "", "max-uploads": "1000", "prefix": "root/uploads/"}
    assert query(requests[1])["key-marker"] == "root/uploads/a b.bin"
    assert query(requests[1])["upload-id-marker"] == "u1"
    assert uploads == [
        mp.IncompleteUpload(
            "uploads/a b.bin", "u1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        ),
        mp.IncompleteUpload("uploads/c.bin", "u2", datetime(2026, 1, 3, tzinfo=timezone.utc)),
    ]


def test_a_server_repeating_its_page_does_not_loop() -> None:
    found = target(s3(endpoint="http://127.0.0.1:9000"))
    same = page([("k", "u", "2026-01-01T00:00:00Z")], next_key="k", next_id="u")
    operation = mp._list(found, "")
    requests, uploads = drive(operation, Response(200, same), Response(200, same))
    assert len(requests) == 2
    assert len(uploads) == 2


def test_activity_is_the_newest_part() -> None:
    found = target(s3(endpoint="http://127.0.0.1:9000"))
    upload = mp.IncompleteUpload("k.bin", "id/1", datetime(2010, 11, 10, tzinfo=timezone.utc))
    parts = (
        f"<ListPartsResult {NS}><Part><PartNumber>1</PartNumber>"
        "<LastModified>2026-05-01T10:00:00.000Z</LastModified></Part>"
        "<Part><PartNumber>2</PartNumber><LastModified>2026-05-01T11:00:00.000Z</LastModified>"
        "</Part><IsTruncated>false</IsTruncated></ListPartsResult>"
    ).encode()
    requests, latest = drive(mp._activity(found, upload), Response(200, parts))
    assert query(requests[0]) == {"uploadId": "id/1", "max-parts": "1000"}
    assert latest == datetime(2026, 5, 1, 11, tzinfo=timezone.utc)
    _, gone = drive(mp._activity(found, upload), Response(404, b""))
    assert gone is None


def test_abort_sends_a_delete_and_tolerates_a_vanished_upload() -> None:
    found = target(s3("s3://bucket/root/", endpoint="http://127.0.0.1:9000"))
    upload = mp.IncompleteUpload("dir/a+b.bin", "x~y", datetime.now(timezone.utc))
    requests, done = drive(mp.abort_operation(found, upload), Response(204, b""))
    assert requests[0].method == "DELETE"
    assert urlsplit(requests[0].url).path == "/bucket/root/dir/a%2Bb.bin"
    assert query(requests[0]) == {"uploadId": "x~y"}
    assert done is True
    assert drive(mp.abort_operation(found, upload), Response(404, b""))[1] is False


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            403,
            b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
            StoragePermissionError,
        ),
        (501, b"<Error><Code>NotImplemented</Code></Error>", UnsupportedOperationError),
        (500, b"<Error><Code>InternalError</Code></Error>", StorageOperationError),
        (200, b"<not xml", StorageOperationError),
    ],
)
def test_failures_become_typed_errors(status: int, body: bytes, error: type[Exception]) -> None:
    operation = mp._list(target(s3(endpoint="http://127.0.0.1:9000")), "")
    next(operation)
    with pytest.raises(error) as caught:
        operation.send(Response(status, body))
    assert "secret" not in str(caught.value)


# -- lifecycle rules ------------------------------------------------------------------------------
def rules(*xml: str) -> Response:
    return Response(
        200, f"<LifecycleConfiguration {NS}>{''.join(xml)}</LifecycleConfiguration>".encode()
    )


def rule(
    prefix: str | None, days: int | None, *, status: str = "Enabled", tag: bool = False
) -> str:
    if tag:
        tags = "<Tag><Key>k</Key><Value>v</Value></Tag>"
        filter_ = f"<Filter><And><Prefix>{prefix or ''}</Prefix>{tags}</And></Filter>"
    elif prefix is None:
        filter_ = "<Filter></Filter>"
    else:
        filter_ = f"<Filter><Prefix>{prefix}</Prefix></Filter>"
    abort = (
        f"<AbortIncompleteMultipartUpload><DaysAfterInitiation>{days}</DaysAfterInitiation>"
        "</AbortIncompleteMultipartUpload>"
        if days is not None
        else "<Expiration><Days>30</Days></Expiration>"
    )
    return f"<Rule><ID>r-{prefix}-{days}</ID>{filter_}<Status>{status}</Status>{abort}</Rule>"


@pytest.mark.parametrize(
    ("answer", "state", "days"),
    [
        (
            Response(404, b"<Error><Code>NoSuchLifecycleConfiguration</Code></Error>"),
            "missing",
            None,
        ),
        (rules(rule(None, 3)), "set", 3),
        (rules(rule("", 1)), "set", 1),
        (rules(rule("uploads/", 2)), "set", 2),  # the managed prefix is under it
        (rules(rule("upl", 2)), "set", 2),
        (rules(rule("other/", 2)), "missing", None),
        (rules(rule(None, 2, status="Disabled")), "missing", None),
        (rules(rule(None, None)), "missing", None),  # an expiration rule, not an abort rule
        (rules(rule(None, 5, tag=True)), "missing", None),  # a tag filter never matches uploads
        (rules(rule(None, 7), rule("uploads/", 1)), "set", 1),  # the quickest one
        ("<legacy>", "set", 4),
    ],
)
def test_lifecycle_rules_that_cover_the_managed_prefix(
    answer: Any, state: str, days: int | None
) -> None:
    if answer == "<legacy>":  # the pre-2019 form: a Prefix on the rule, no Filter
        answer = rules(
            "<Rule><ID>old</ID><Prefix></Prefix><Status>Enabled</Status>"
            "<AbortIncompleteMultipartUpload><DaysAfterInitiation>4</DaysAfterInitiation>"
            "</AbortIncompleteMultipartUpload></Rule>"
        )
    found = target(s3(endpoint="http://127.0.0.1:9000"))
    requests, result = drive(mp._lifecycle(found, "uploads/"), answer)
    assert query(requests[0]) == {"lifecycle": ""}
    assert (result.state, result.days) == (state, days)


def test_what_applies_to_each_store() -> None:
    memory = ObstoreBackend("m", "memory://")
    assert not mp.may_hold_uploads(memory)
    assert mp.lifecycle_rule(memory).state == "not_needed"
    azure = ObstoreBackend("a", "az://c/", account_name="acct", skip_signature=True)
    assert mp.lifecycle_rule(azure).state == "not_needed"
    gcs = ObstoreBackend("g", "gs://bucket/", skip_signature=True)
    assert mp.lifecycle_rule(gcs).state == "not_checked"
    assert "lifecycle rule" in (mp.support(gcs) or "")
    assert mp.support(s3()) is None
    with pytest.raises(UnsupportedOperationError, match="cannot be listed"):
        mp.list_incomplete_uploads(gcs, None)


def test_credentials_come_from_the_store_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    explicit = target(s3(session_token="tok")).credentials()
    assert explicit == Credentials("AKID", "secret", "tok")
    no_keys = ObstoreBackend("s3", "s3://bucket/", region="us-east-1")
    reason = mp.support(no_keys)
    assert reason is not None
    assert "instance, container or web identity" in reason
    assert mp.lifecycle_rule(no_keys).state == "not_checked"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    assert target(no_keys).credentials() == Credentials("ENVKEY", "envsecret", None)
    public = target(ObstoreBackend("s3", "s3://bucket/", skip_signature=True))
    assert public.credentials() is None  # unsigned requests


def test_a_credential_provider_is_asked() -> None:
    from obstore.store import S3Store

    def provider() -> dict[str, Any]:
        return {
            "access_key_id": "FROMPROVIDER",
            "secret_access_key": "s",
            "token": "t",
            "expires_at": datetime.now(timezone.utc) + timedelta(minutes=5),
        }

    backend = ObstoreBackend("s3", S3Store("bucket", credential_provider=provider))  # type: ignore[arg-type]
    assert target(backend).credentials() == Credentials("FROMPROVIDER", "s", "t")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2m 3s", 123.0), ("30s", 30.0), ("1h", 3600.0), ("bogus", 7.0), ("", 7.0)],
)
def test_obstore_durations_are_read(text: str, seconds: float) -> None:
    assert _seconds(text, 7.0) == seconds
    assert _seconds(timedelta(seconds=2), 7.0) == 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05.000Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        (
            "2026-01-02T03:04:05.123456789Z",
            datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc),
        ),
        ("2026-01-02T05:04:05+02:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2026-01-02T03:04:05", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("yesterday", datetime(1970, 1, 1, tzinfo=timezone.utc)),
        (None, datetime(1970, 1, 1, tzinfo=timezone.utc)),
    ],
)
def test_timestamps_of_every_server_are_read(text: str | None, expected: datetime) -> None:
    assert mp.parse_time(text) == expected
