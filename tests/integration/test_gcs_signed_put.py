"""GCS writes that a local server can prove: bytes sent through obstore's signed V4 URLs.

obstore writes to GCS through the XML API, which fake-gcs-server does not implement
(see docs/backends/gcs.md), so `put`, multipart uploads and copies cannot run here. A
signed PUT URL is the other way bytes reach a GCS bucket, and fake-gcs-server takes it:
obstore signs the URL, the test uploads through it with httpx, and obstore then reads,
lists and deletes the object, for object names that need percent-encoding. The
conformance suite runs the same path on every store (`sign.put`), and the session
lifecycle on top of it (`column.direct_upload`: upload tickets, commit, replace, delete
after commit). fake-gcs-server does not check signatures (asserted there too); GCS
signatures are verified offline, with the public key, in test_conformance.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from sqlalchemy_obstore import FileObject, ObjectNotFoundError, ObstoreBackend, storages
from sqlalchemy_obstore._attributes import content_disposition
from sqlalchemy_obstore.tickets import UploadTickets
from tests.integration.backends import fake_gcs_backend, gcs_seed
from tests.servers import FakeGcsServer

pytestmark = pytest.mark.integration

KEY = "gcs-signed"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def gcs(fake_gcs_server: FakeGcsServer) -> Iterator[ObstoreBackend]:
    backend = fake_gcs_backend(fake_gcs_server, key=KEY, prefix=f"signed-{uuid.uuid4().hex[:10]}")
    with storages.temporary(backend):
        yield backend


@pytest.mark.parametrize(
    "name", ["plain.txt", "with space/and+plus=eq&amp.bin", "ünïcode/日本語.txt"]
)
def test_signed_put_then_read_list_and_delete(
    gcs: ObstoreBackend, http: httpx.Client, name: str
) -> None:
    path = f"{gcs.prefix}/{name}"
    body = bytes(range(256)) * 4096 + name.encode()  # 1 MiB and a bit: several chunks
    url = gcs.sign(path, method="PUT", expires_in=300)
    assert "X-Goog-Signature=" in url
    response = http.put(url, content=body, headers=dict(gcs.upload_headers))
    assert response.status_code == 200, response.text

    info = gcs.head(path)
    assert (info.path, info.size) == (path, len(body))
    assert info.etag
    assert gcs.exists(path)
    assert gcs.get_bytes(path) == body
    assert gcs.get_range(path, 1000, 24) == body[1000:1024]
    assert b"".join(gcs.iter_chunks(path, chunk_size=256 * 1024)) == body
    assert [i.path for i in gcs.list_objects(gcs.prefix)] == [path]
    download = gcs.sign(path, expires_in=60)
    assert http.get(download).content == body

    gcs.delete(path)
    assert not gcs.exists(path)
    assert list(gcs.list_objects(gcs.prefix)) == []
    with pytest.raises(ObjectNotFoundError):
        gcs.get_bytes(path)
    gcs.delete(path)  # deleting a missing object is not an error


# -- issue 13: what GCS serves through its signed URLs follows the inline rule ---------------------
PAGE = b"<x>an XSLT file, they said</x><script>alert(document.domain)</script>"


def test_ticket_uploads_are_served_by_the_inline_rule(
    gcs: ObstoreBackend, http: httpx.Client
) -> None:
    """The grant's PUT headers set the disposition the store keeps and serves.

    (Redeem copies the staged object, which fake-gcs-server cannot do: the bytes are
    checked where they were uploaded; test_tickets.py runs redeem on S3 and Azure.)
    """
    tickets = UploadTickets("g" * 32)
    for name, declared, kind in (
        ("style.xsl", "text/html", "attachment"),  # the client may lie about the type
        ("../evil\u202egnp.svg", "image/svg+xml", "attachment"),
        ("photo.png", "image/png", "inline"),
    ):
        grant = tickets.issue(KEY, name)
        assert grant.method == "PUT"
        disposition = grant.headers["Content-Disposition"]
        assert disposition.startswith(f"{kind};")
        assert disposition.isascii()
        headers = {**gcs.upload_headers, **grant.headers, "Content-Type": declared}
        assert http.put(grant.url, content=PAGE, headers=headers).status_code == 200
        served = http.get(gcs.sign(grant.upload_path, expires_in=60))
        assert served.status_code == 200
        assert served.headers["content-disposition"] == disposition
        assert served.content == PAGE


def test_objects_saved_by_the_library_are_served_by_the_inline_rule(
    gcs: ObstoreBackend, fake_gcs_server: FakeGcsServer, http: httpx.Client
) -> None:
    """What `save()` stores (seeded through the JSON API: no XML-API writes here)."""
    for name, content_type, kind, shown in (
        ("../../evil\u202egnp.xsl", "text/xsl", "attachment", "evilgnp.xsl"),
        ("odd.thing", "text/x-anything", "attachment", "odd.thing"),
        ("photo.png", "image/png", "inline", "photo.png"),
    ):
        path = f"{gcs.prefix}/{uuid.uuid4().hex}/{shown}"
        attributes = {
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(name, content_type),
        }
        gcs_seed(fake_gcs_server, path, PAGE, attributes)
        url = FileObject(backend=KEY, path=path, filename=name).sign(expires_in=60)
        served = http.get(url)
        assert served.status_code == 200
        disposition = served.headers["content-disposition"]
        assert disposition.startswith(f"{kind};")
        assert disposition.endswith(f"filename*=UTF-8''{shown}")
