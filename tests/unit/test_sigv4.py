"""The private SigV4 signer: AWS's published examples, then botocore as a reference.

Requests the library signs itself (listing and aborting incomplete multipart uploads,
reading lifecycle rules; later presigned POST forms and part URLs) must be accepted by
S3. Three layers of evidence: AWS's own worked examples (fixed inputs, published
signatures), agreement with botocore on generated keys, queries and headers, and
SeaweedFS, which checks signatures (tests/integration/test_multipart_cleanup.py).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlalchemy_obstore._sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    Credentials,
    canonical_request,
    encode_path,
    encode_query,
    post_policy_fields,
    presign_url,
    sign_headers,
    signing_key,
    string_to_sign,
)

botocore_auth = pytest.importorskip("botocore.auth")
botocore_awsrequest = pytest.importorskip("botocore.awsrequest")
botocore_credentials = pytest.importorskip("botocore.credentials")

# The example credentials of AWS's S3 SigV4 documentation.
DOC_CREDENTIALS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
DOC_TIME = datetime(2013, 5, 24, tzinfo=timezone.utc)
T0 = datetime(2026, 3, 1, 12, 30, 45, tzinfo=timezone.utc)


def signature_of(authorization: str) -> str:
    return authorization.rsplit("Signature=", 1)[1]


# -- AWS's worked examples -------------------------------------------------------------------------
def test_aws_example_get_object_with_a_range() -> None:
    """ "Example: GET Object" of the S3 SigV4 header-signing documentation."""
    headers = sign_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        credentials=DOC_CREDENTIALS,
        region="us-east-1",
        headers={"Range": "bytes=0-9"},
        now=DOC_TIME,
    )
    assert headers["x-amz-content-sha256"] == EMPTY_SHA256
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_aws_example_get_bucket_lifecycle() -> None:
    """ "Example: GET Bucket Lifecycle" (a sub-resource query with an empty value)."""
    headers = sign_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/?lifecycle",
        credentials=DOC_CREDENTIALS,
        region="us-east-1",
        now=DOC_TIME,
    )
    assert signature_of(headers["Authorization"]) == (
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    )


def test_aws_example_list_objects_query() -> None:
    """ "Example: Get Bucket (List Objects)": query parameters are sorted and encoded."""
    headers = sign_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J",
        credentials=DOC_CREDENTIALS,
        region="us-east-1",
        now=DOC_TIME,
    )
    assert signature_of(headers["Authorization"]) == (
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_aws_example_put_object_with_a_body() -> None:
    """ "Example: PUT Object": the body's hash and extra headers are signed."""
    body = b"Welcome to Amazon S3."
    headers = sign_headers(
        "PUT",
        "https://examplebucket.s3.amazonaws.com/test$file.text",
        credentials=DOC_CREDENTIALS,
        region="us-east-1",
        headers={
            "Date": "Fri, 24 May 2013 00:00:00 GMT",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
        },
        body=body,
        now=DOC_TIME,
    )
    assert signature_of(headers["Authorization"]) == (
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    )


def test_aws_example_presigned_url() -> None:
    """The presigned-URL example of the S3 query-signing documentation."""
    url = presign_url(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        credentials=DOC_CREDENTIALS,
        region="us-east-1",
        expires_in=86400,
        now=DOC_TIME,
    )
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Amz-Signature"] == (
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    assert query["X-Amz-Credential"] == "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
    assert query["X-Amz-SignedHeaders"] == "host"


def test_aws_generic_vector_get_vanilla_and_the_building_blocks() -> None:
    """AWS's SigV4 test suite `get-vanilla`, through each building block in turn."""
    canonical, signed = canonical_request(
        "GET",
        "/",
        [],
        {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"},
        EMPTY_SHA256,
    )
    assert signed == "host;x-amz-date"
    assert canonical == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        f"host;x-amz-date\n{EMPTY_SHA256}"
    )
    text = string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", canonical)
    assert text.splitlines()[-1] == (
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    )
    # The derived-key example of AWS's SigV4 documentation (service "iam").
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"


# -- agreement with botocore ----------------------------------------------------------------------
def botocore_headers(
    method: str,
    url: str,
    credentials: Credentials,
    region: str,
    headers: dict[str, str],
    body: bytes,
) -> str:
    creds = botocore_credentials.Credentials(
        credentials.access_key_id, credentials.secret_access_key, credentials.session_token
    )
    request = botocore_awsrequest.AWSRequest(method=method, url=url, headers=headers, data=body)
    with mock.patch.object(botocore_auth, "get_current_datetime", return_value=T0):
        botocore_auth.S3SigV4Auth(creds, "s3", region).add_auth(request)
    return str(request.headers["Authorization"])


def botocore_presigned(
    method: str, url: str, credentials: Credentials, region: str, expires: int
) -> dict[str, str]:
    creds = botocore_credentials.Credentials(
        credentials.access_key_id, credentials.secret_access_key, credentials.session_token
    )
    request = botocore_awsrequest.AWSRequest(method=method, url=url)
    with mock.patch.object(botocore_auth, "get_current_datetime", return_value=T0):
        botocore_auth.S3SigV4QueryAuth(creds, "s3", region, expires=expires).add_auth(request)
    return dict(parse_qsl(urlsplit(request.url).query))


KEY_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
keys = st.text(KEY_CHARS, min_size=1, max_size=40).filter(lambda k: not k.startswith("/"))
query_values = st.text(KEY_CHARS, max_size=20)
credentials_st = st.builds(
    Credentials,
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=20),
    st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=20, max_size=40),
    st.none() | st.text("abcdefABCDEF0123456789+/=", min_size=10, max_size=60),
)


@settings(max_examples=150, deadline=None)
@given(
    key=keys,
    prefix=query_values,
    credentials=credentials_st,
    method=st.sampled_from(["GET", "PUT", "DELETE", "POST"]),
    body=st.binary(max_size=64),
    region=st.sampled_from(["us-east-1", "eu-west-1", "auto"]),
)
def test_header_signatures_match_botocore(
    key: str, prefix: str, credentials: Credentials, method: str, body: bytes, region: str
) -> None:
    url = f"http://127.0.0.1:8333/bucket/{encode_path(key)}?" + encode_query(
        [("prefix", prefix), ("uploads", ""), ("max-uploads", "1000")]
    )
    headers = {"content-type": "application/xml"}
    ours = sign_headers(
        method, url, credentials=credentials, region=region, headers=headers, body=body, now=T0
    )
    theirs = botocore_headers(method, url, credentials, region, dict(headers), body)
    assert ours["Authorization"] == theirs
    assert ours.get("x-amz-security-token") == credentials.session_token


@settings(max_examples=150, deadline=None)
@given(
    key=keys,
    credentials=credentials_st,
    method=st.sampled_from(["GET", "PUT"]),
    part=st.integers(1, 10_000),
    expires=st.integers(1, 7 * 24 * 3600),
)
def test_presigned_urls_match_botocore(
    key: str, credentials: Credentials, method: str, part: int, expires: int
) -> None:
    url = f"https://bucket.s3.eu-west-1.amazonaws.com/{encode_path(key)}?" + encode_query(
        [("partNumber", str(part)), ("uploadId", "2~abc/def+ghi=")]
    )
    ours = dict(
        parse_qsl(
            urlsplit(
                presign_url(
                    method,
                    url,
                    credentials=credentials,
                    region="eu-west-1",
                    expires_in=expires,
                    now=T0,
                )
            ).query
        )
    )
    theirs = botocore_presigned(method, url, credentials, "eu-west-1", expires)
    assert ours == theirs


def test_presigned_url_keeps_the_path_encoding_it_signed() -> None:
    url = presign_url(
        "PUT",
        "http://127.0.0.1:9000/bucket/dir/a b+c.txt",
        credentials=Credentials("AKID", "secret"),
        region="us-east-1",
        expires_in=timedelta(minutes=5),
        now=T0,
    )
    assert urlsplit(url).path == "/bucket/dir/a%20b%2Bc.txt"
    # Already-encoded input gives the same URL (encoded once, never twice).
    again = presign_url(
        "PUT",
        "http://127.0.0.1:9000/bucket/dir/a%20b%2Bc.txt",
        credentials=Credentials("AKID", "secret"),
        region="us-east-1",
        expires_in=300,
        now=T0,
    )
    assert again == url


@pytest.mark.parametrize("expires", [0, -5, 7 * 24 * 3600 + 1, timedelta(days=8)])
def test_lifetimes_outside_one_second_to_seven_days_are_refused(expires: Any) -> None:
    with pytest.raises(ValueError, match="1 to 604800 seconds"):
        presign_url(
            "GET",
            "https://b.s3.amazonaws.com/k",
            credentials=Credentials("a", "b"),
            region="us-east-1",
            expires_in=expires,
        )
    with pytest.raises(ValueError, match="1 to 604800 seconds"):
        post_policy_fields(
            credentials=Credentials("a", "b"), region="us-east-1", expires_in=expires
        )


def test_unsigned_payload_is_signed_as_such() -> None:
    headers = sign_headers(
        "PUT",
        "https://b.s3.amazonaws.com/k",
        credentials=Credentials("a", "b"),
        region="us-east-1",
        payload_hash=UNSIGNED_PAYLOAD,
        now=T0,
    )
    assert headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD


# -- POST policy ----------------------------------------------------------------------------------
def test_post_policy_fields_sign_the_policy_document_with_the_days_key() -> None:
    credentials = Credentials("AKID", "secret/key", "session-token")
    fields = post_policy_fields(
        credentials=credentials,
        region="eu-west-1",
        expires_in=600,
        conditions=[{"bucket": "b"}, ["content-length-range", 1, 1024]],
        fields={"key": "uploads/x.txt", "Content-Type": "text/plain"},
        now=T0,
    )
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert policy["expiration"] == "2026-03-01T12:40:45.000Z"
    assert policy["conditions"] == [
        {"bucket": "b"},
        ["content-length-range", 1, 1024],
        {"key": "uploads/x.txt"},
        {"Content-Type": "text/plain"},
        {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
        {"x-amz-credential": "AKID/20260301/eu-west-1/s3/aws4_request"},
        {"x-amz-date": "20260301T123045Z"},
        {"x-amz-security-token": "session-token"},
    ]
    # The signature is botocore's signature of the same policy text with the same scope.
    creds = botocore_credentials.Credentials("AKID", "secret/key", "session-token")
    request = botocore_awsrequest.AWSRequest(method="POST", url="https://b.s3.amazonaws.com/")
    request.context["timestamp"] = "20260301T123045Z"
    expected = botocore_auth.SigV4Auth(creds, "s3", "eu-west-1").signature(
        fields["policy"], request
    )
    assert fields["x-amz-signature"] == expected
    assert fields["x-amz-security-token"] == "session-token"


def test_secrets_stay_out_of_reprs() -> None:
    text = repr(Credentials("AKID", "top-secret", "token-secret"))
    assert "AKID" in text
    assert "top-secret" not in text
    assert "token-secret" not in text
