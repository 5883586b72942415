"""Downloads through CloudFront, uploads signed by the store: one S3 backend, both signers.

SeaweedFS checks SigV4, so every upload here (a `FileObject.sign_upload()` PUT, an
upload ticket's POST form, a raw `backend.sign(..., method="PUT")`) proves the store
still signs uploads when a `read_signer` is set. The download URLs are CloudFront's;
no CloudFront runs here, so they are checked by `tests/cloudfront_viewer.py` (the
documented verification, with the public key) and their path is shown to name the
stored object, which SeaweedFS then serves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sqlalchemy_obstore import FileObject, InvalidExpiryError, ObstoreBackend, storages
from sqlalchemy_obstore.cloudfront import CloudFrontSigner
from sqlalchemy_obstore.tickets import UploadTickets
from tests.cloudfront_viewer import check
from tests.integration.backends import s3_backend
from tests.servers import SeaweedServer

pytestmark = pytest.mark.integration

CDN = "https://media.example.com"
KEY_ID = "K3EXAMPLEKEYID"
SECRET = "a-ticket-secret-of-32-bytes-or-more!"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def backend(seaweed_server: SeaweedServer, key: rsa.RSAPrivateKey) -> Iterator[ObstoreBackend]:
    cdn = CloudFrontSigner(CDN, KEY_ID, key, max_expires_in=timedelta(days=30))
    backend = s3_backend(
        seaweed_server, key="cdn-media", prefix=f"cdn-{uuid.uuid4().hex[:10]}", read_signer=cdn
    )
    with storages.temporary(backend):
        yield backend


def object_of(url: str) -> str:
    """The object key a CloudFront URL names (the distribution's origin is the bucket)."""
    return unquote(urlsplit(url).path).removeprefix("/")


def test_downloads_sign_through_the_cdn_and_uploads_through_the_store(
    backend: ObstoreBackend,
    seaweed_server: SeaweedServer,
    key: rsa.RSAPrivateKey,
    http: httpx.Client,
) -> None:
    keys = {KEY_ID: key.public_key()}
    saved = FileObject(
        filename="Quarterly report (v2).txt", content=b"numbers", backend="cdn-media"
    ).save()
    assert saved.path is not None

    url = saved.sign(expires_in=600)
    assert url.startswith(f"{CDN}/{backend.prefix}/")
    check(url, keys, now=time.time())
    assert object_of(url) == saved.path
    assert backend.get_bytes(object_of(url)) == b"numbers"
    assert saved.sign(expires_in=600) == url  # cached on the file, as before
    # longer than S3 allows, within the CDN signer's limit: downloads only
    check(saved.sign(expires_in=timedelta(days=20)), keys, now=time.time())

    # Uploads: a presigned S3 PUT, which SeaweedFS checks.
    upload = FileObject(filename="direct.txt", backend="cdn-media")
    signed = upload.sign_upload(expires_in=300)
    assert signed.url.startswith(seaweed_server.endpoint)
    assert "X-Amz-Signature=" in signed.url
    response = http.put(signed.url, content=b"uploaded", headers=dict(signed.headers))
    assert response.status_code == 200, response.text
    tampered = signed.url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert http.put(tampered, content=b"forged").status_code == 403
    upload.refresh()
    assert upload.get_content() == b"uploaded"
    check(upload.sign(expires_in=60), keys, now=time.time())
    with pytest.raises(InvalidExpiryError, match="upload URL"):
        FileObject(filename="long.txt", backend="cdn-media").sign_upload(
            expires_in=timedelta(days=8)
        )

    raw = backend.sign(f"{backend.prefix}/raw.bin", method="PUT", expires_in=60)
    assert http.put(raw, content=b"raw").status_code == 200
    assert backend.get_bytes(f"{backend.prefix}/raw.bin") == b"raw"


async def test_upload_tickets_keep_signing_with_the_store(
    backend: ObstoreBackend, key: rsa.RSAPrivateKey, http: httpx.Client
) -> None:
    tickets = UploadTickets(SECRET)
    grant = await tickets.issue_async("cdn-media", "notes.txt", max_size=1024)
    assert grant.method == "POST"  # an S3 POST policy, signed with the store's keys
    response = http.post(
        grant.url, data=dict(grant.fields), files={"file": (grant.filename, b"ticket body")}
    )
    assert response.status_code in {200, 201, 204}, response.text
    file = await tickets.redeem_async(grant.ticket)
    assert await file.get_content_async() == b"ticket body"
    url = await file.sign_async(expires_in=300)
    check(url, {KEY_ID: key.public_key()}, now=time.time())
    assert object_of(url) == file.path
