"""The private SigV4 signer against a server that checks signatures (SeaweedFS).

Header signing is exercised by every incomplete-upload request in
test_multipart_cleanup.py; here the two helpers meant for direct uploads: a presigned
URL for one part of a multipart upload, and a presigned POST form. SeaweedFS accepts
them, and refuses a tampered, an expired, and an out-of-policy request. (moto accepts
any signature, so it proves nothing here.)
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import boto3
import httpx
import pytest

from sqlalchemy_obstore._sigv4 import Credentials, encode_path, post_policy_fields, presign_url
from tests.servers import SeaweedServer

pytestmark = pytest.mark.integration

PART = b"z" * (5 * 1024 * 1024)


def credentials(server: SeaweedServer) -> Credentials:
    return Credentials(server.access_key_id, server.secret_access_key)


def test_presigned_part_urls_upload_a_multipart_object(seaweed_server: SeaweedServer) -> None:
    server = seaweed_server
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=server.region,
    )
    key = f"presigned/{uuid.uuid4().hex}/a b+ü.bin"
    upload_id = client.create_multipart_upload(Bucket=server.bucket, Key=key)["UploadId"]
    base = f"{server.endpoint}/{server.bucket}/{encode_path(key)}"

    def part_url(number: int, *, expires_in: int = 300, now: datetime | None = None) -> str:
        return presign_url(
            "PUT",
            f"{base}?partNumber={number}&uploadId={upload_id}",
            credentials=credentials(server),
            region=server.region,
            expires_in=expires_in,
            now=now,
        )

    with httpx.Client(trust_env=False, timeout=30) as http:
        first = http.put(part_url(1), content=PART)
        second = http.put(part_url(2), content=b"tail")
        assert (first.status_code, second.status_code) == (200, 200)
        tampered = part_url(3).replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert http.put(tampered, content=b"x").status_code == 403
        expired = part_url(3, expires_in=1, now=datetime.now(timezone.utc) - timedelta(minutes=5))
        assert http.put(expired, content=b"x").status_code == 403
        other_key = part_url(3).replace("a%20b", "c%20d")  # the URL names another object
        assert http.put(other_key, content=b"x").status_code == 403
    client.complete_multipart_upload(
        Bucket=server.bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": first.headers["etag"]},
                {"PartNumber": 2, "ETag": second.headers["etag"]},
            ]
        },
    )
    assert client.head_object(Bucket=server.bucket, Key=key)["ContentLength"] == len(PART) + 4


def test_presigned_post_forms_are_accepted_within_their_policy(
    seaweed_server: SeaweedServer,
) -> None:
    server = seaweed_server
    key = f"posted/{uuid.uuid4().hex}/form.txt"
    fields = post_policy_fields(
        credentials=credentials(server),
        region=server.region,
        expires_in=300,
        conditions=[
            {"bucket": server.bucket},
            ["starts-with", "$key", "posted/"],
            ["content-length-range", 1, 1000],
        ],
        fields={"key": key},
    )
    url = f"{server.endpoint}/{server.bucket}"
    with httpx.Client(trust_env=False, timeout=30) as http:

        def post(form: dict[str, str], content: bytes) -> httpx.Response:
            return http.post(url, data=form, files={"file": ("form.txt", content)})

        assert post(fields, b"hello form").status_code in (200, 201, 204)
        assert post({**fields, "key": "elsewhere/x.txt"}, b"x").status_code == 403
        assert post({**fields, "x-amz-signature": "0" * 64}, b"x").status_code == 403
        assert post(fields, b"x" * 2000).status_code == 400  # over content-length-range
        assert http.get(f"{url}/{key}", follow_redirects=False).status_code in (403, 401)
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=server.region,
    )
    assert client.get_object(Bucket=server.bucket, Key=key)["Body"].read() == b"hello form"
