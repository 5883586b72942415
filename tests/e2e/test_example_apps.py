"""The example apps (examples/litestar_app, examples/fastapi_app.py) through test clients.

Every endpoint of both apps: upload (documents and images, refused uploads), list, get,
streamed download with Range and conditional requests, the thumbnail, the signed-URL
redirect followed to the bytes, delete; the Litestar page (form upload, delete) and its
direct-to-storage upload; and the PostgreSQL + S3 configuration from environment variables.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sqlalchemy_obstore import storages

pytest.importorskip("litestar")
pytest.importorskip("fastapi")
PIL_Image = pytest.importorskip("PIL.Image")

SECRET = "example-app-test-secret-0123456789abcdef"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
FRAMEWORKS = ["litestar", "fastapi"]


def png(width: int = 640, height: int = 400) -> bytes:
    out = io.BytesIO()
    PIL_Image.new("RGB", (width, height), (30, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def make_client(framework: str, settings: dict[str, Any] | None) -> Any:
    """A test client for one example app; `settings=None` reads them from the environment."""
    if framework == "litestar":
        from examples.litestar_app import Settings, create_app
        from litestar.testing import TestClient as LitestarClient

        app = create_app(Settings(**settings) if settings is not None else None)
        return LitestarClient(app)
    from examples import fastapi_app

    with warnings.catch_warnings():
        # Starlette 1.x prefers the `httpx2` package for its test client; httpx still works.
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient as StarletteClient

    fast = fastapi_app.create_app(
        fastapi_app.Settings(**settings) if settings is not None else None
    )
    return StarletteClient(fast)


@pytest.fixture(params=FRAMEWORKS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    settings = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'library.db'}",
        "storage_url": (tmp_path / "files").as_uri(),
        "signing_secret": SECRET,
    }
    with make_client(request.param, settings) as test_client:
        test_client.framework = request.param
        yield test_client


def stored_keys() -> list[str]:
    backend = storages.get_backend("library")
    return sorted(info.path for info in backend.list_objects(backend.prefix))


def upload(client: Any, name: str, data: bytes, ctype: str, title: str = "") -> httpx.Response:
    return client.post("/api/documents", files={"file": (name, data, ctype)}, data={"title": title})


def follow_signed(client: Any, doc_id: int) -> bytes:
    """The signed redirect, then its target: the app's storage route or the store."""
    redirect = client.get(f"/documents/{doc_id}/signed", follow_redirects=False)
    assert redirect.status_code in (302, 303, 307), redirect.text
    location = redirect.headers["location"]
    assert "signature" in location.lower() or "x-amz-signature" in location.lower()
    if location.startswith(("http://127.0.0.1", "http://localhost")):
        target = httpx.get(location)  # S3: the store serves it
    else:
        target = client.get(location)
    assert target.status_code == 200, target.text
    return target.content


# -- JSON API, both frameworks ---------------------------------------------------------------------
def test_upload_list_get_download_delete_document(client: Any) -> None:
    created = upload(client, "report.pdf", PDF, "application/pdf", "Quarterly report")
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["title"] == "Quarterly report"
    assert doc["kind"] == "document"
    assert doc["thumbnail"] is None
    assert doc["file"]["filename"] == "report.pdf"
    assert doc["file"]["content_type"] == "application/pdf"
    assert doc["file"]["size"] == len(PDF)
    assert doc["file"]["backend"] == "library"
    assert doc["file"]["path"].startswith("documents/")
    # every file in the JSON carries a signed URL that downloads its bytes
    assert "signature=" in doc["file"]["url"]
    assert client.get(doc["file"]["url"]).content == PDF
    assert stored_keys() == [doc["file"]["path"]]

    listed = client.get("/api/documents")
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()] == [doc["id"]]
    # the same timestamp, spelled the same, in the upload's answer and in the list
    assert listed.json()[0]["created_at"] == doc["created_at"]
    assert doc["created_at"].endswith("Z")
    assert client.get(listed.json()[0]["file"]["url"]).content == PDF
    one = client.get(f"/api/documents/{doc['id']}")
    assert one.status_code == 200
    assert one.json()["file"]["path"] == doc["file"]["path"]

    body = client.get(doc["links"]["download"])
    assert body.status_code == 200
    assert body.content == PDF
    assert body.headers["content-type"].startswith("application/pdf")
    assert body.headers["content-length"] == str(len(PDF))
    assert body.headers["accept-ranges"] == "bytes"
    assert "attachment" in body.headers["content-disposition"]
    assert "report.pdf" in body.headers["content-disposition"]
    assert body.headers["etag"]

    assert follow_signed(client, doc["id"]) == PDF

    gone = client.delete(f"/api/documents/{doc['id']}")
    assert gone.status_code == 204
    assert client.get(f"/api/documents/{doc['id']}").status_code == 404
    assert client.get(doc["links"]["download"]).status_code == 404
    assert client.get("/api/documents").json() == []
    assert stored_keys() == []


def test_range_and_conditional_downloads(client: Any) -> None:
    doc = upload(client, "data.pdf", PDF, "application/pdf").json()
    url = doc["links"]["download"]

    part = client.get(url, headers={"Range": "bytes=10-109"})
    assert part.status_code == 206
    assert part.content == PDF[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(PDF)}"
    assert part.headers["content-length"] == "100"

    tail = client.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206
    assert tail.content == PDF[-16:]

    beyond = client.get(url, headers={"Range": f"bytes={len(PDF) + 10}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(PDF)}"

    etag = client.get(url).headers["etag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_image_gets_a_thumbnail(client: Any) -> None:
    image = png(640, 400)
    created = upload(client, "photo.png", image, "image/png")
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["kind"] == "image"
    assert doc["title"] == "photo.png"
    assert doc["file"]["content_type"] == "image/png"
    assert doc["thumbnail"]["content_type"] == "image/webp"

    thumb = client.get(doc["links"]["thumbnail"])
    assert thumb.status_code == 200
    assert thumb.headers["content-type"].startswith("image/webp")
    with PIL_Image.open(io.BytesIO(thumb.content)) as decoded:
        assert decoded.size == (256, 160)  # fits 256x256, aspect ratio kept
    assert client.get(doc["links"]["download"]).content == image
    assert len(stored_keys()) == 2  # the original and its thumbnail

    assert client.delete(doc["links"]["self"]).status_code == 204
    assert stored_keys() == []


@pytest.mark.parametrize(
    ("name", "data", "ctype", "error", "status"),
    [
        ("page.html", b"<html><script>alert(1)</script></html>", "text/html", "ContentType", 415),
        (
            "x.svg",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            "image/svg+xml",
            "ContentType",
            415,
        ),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png", "Image", 422),
    ],
)
def test_refused_uploads_store_nothing(
    client: Any, name: str, data: bytes, ctype: str, error: str, status: int
) -> None:
    """The integrations answer refusals with their status (no handler in the apps)."""
    refused = upload(client, name, data, ctype)
    assert refused.status_code == status, refused.text
    assert error in refused.json()["error"]
    assert refused.json()["detail"]
    assert client.get("/api/documents").json() == []
    assert stored_keys() == []


def test_the_bytes_decide_not_the_declared_type(client: Any) -> None:
    """A PDF that claims to be a PNG is stored as what it is: a document, not an image."""
    created = upload(client, "fake.png", PDF, "image/png")
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "document"
    assert created.json()["file"]["content_type"] == "application/pdf"
    assert created.json()["thumbnail"] is None


def test_too_large_upload_is_refused_while_streaming(client: Any) -> None:
    from examples.litestar_app.models import MAX_UPLOAD_SIZE

    body = b"x" * (MAX_UPLOAD_SIZE + 1)  # plain text, one byte over the policies' limit
    refused = upload(client, "big.txt", body, "text/plain")
    assert refused.status_code == 413, refused.text[:500]
    assert refused.json()["error"] == "FileTooLargeError"
    assert client.get("/api/documents").json() == []
    assert stored_keys() == []


def test_openapi_describes_files(client: Any) -> None:
    schema = client.get(
        "/schema/openapi.json" if client.framework == "litestar" else "/openapi.json"
    )
    assert schema.status_code == 200
    spec = schema.json()
    assert "/api/documents" in spec["paths"]
    out = spec["components"]["schemas"]["DocumentOut"]["properties"]["file"]
    if "$ref" in out:  # Pydantic names the FileObject schema
        out = spec["components"]["schemas"][out["$ref"].rsplit("/", 1)[1]]
    assert "path" in out["properties"]


def test_unknown_document_is_404(client: Any) -> None:
    for url in ("/api/documents/999", "/documents/999/download", "/documents/999/signed"):
        assert client.get(url).status_code == 404
    assert client.delete("/api/documents/999").status_code == 404


def test_tampered_signed_url_is_refused(client: Any) -> None:
    doc = upload(client, "a.pdf", PDF, "application/pdf").json()
    location = client.get(f"/documents/{doc['id']}/signed", follow_redirects=False).headers[
        "location"
    ]
    forged = location.replace("signature=", "signature=A")
    assert client.get(forged).status_code in (400, 403)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_short_signing_secret_is_refused(framework: str, tmp_path: Path) -> None:
    from sqlalchemy_obstore import ConfigurationError

    settings = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'library.db'}",
        "storage_url": (tmp_path / "files").as_uri(),
        "signing_secret": "too-short",
    }
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        make_client(framework, settings)


# -- the Litestar page -----------------------------------------------------------------------------
@pytest.fixture
def litestar_client(tmp_path: Path) -> Iterator[Any]:
    settings = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'library.db'}",
        "storage_url": (tmp_path / "files").as_uri(),
        "signing_secret": SECRET,
    }
    with make_client("litestar", settings) as test_client:
        yield test_client


def test_page_upload_list_and_delete(litestar_client: Any) -> None:
    client = litestar_client
    empty = client.get("/")
    assert empty.status_code == 200
    assert empty.headers["content-type"].startswith("text/html")
    assert 'enctype="multipart/form-data"' in empty.text
    assert "No documents yet" in empty.text

    posted = client.post(
        "/documents",
        files={"file": ("cover.png", png(300, 300), "image/png")},
        data={"title": "Cover <art>"},
        follow_redirects=False,
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == "/"
    page = client.get("/").text
    assert "Cover &lt;art&gt;" in page  # escaped
    doc = client.get("/api/documents").json()[0]
    assert f'src="/documents/{doc["id"]}/thumbnail"' in page
    assert f'href="/documents/{doc["id"]}/download"' in page
    assert f'href="/documents/{doc["id"]}/signed"' in page

    deleted = client.post(f"/documents/{doc['id']}/delete", follow_redirects=False)
    assert deleted.status_code == 303
    assert "No documents yet" in client.get("/").text
    assert stored_keys() == []


def test_page_shows_a_refused_upload(litestar_client: Any) -> None:
    refused = litestar_client.post(
        "/documents",
        files={"file": ("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")},
        data={"title": ""},
    )
    assert refused.status_code == 422
    assert "Upload refused" in refused.text
    assert 'role="alert"' in refused.text
    assert stored_keys() == []


def test_direct_upload_with_a_ticket(litestar_client: Any) -> None:
    client = litestar_client
    grant = client.post(
        "/api/uploads",
        json={"filename": "notes.pdf", "size": len(PDF), "content_type": "application/pdf"},
    )
    assert grant.status_code == 201, grant.text
    g = grant.json()
    put = client.request(g["method"], g["url"], content=PDF, headers=g.get("headers") or {})
    assert put.status_code in (200, 201, 204), put.text
    done = client.post("/api/uploads/complete", json={"ticket": g["ticket"], "title": "Notes"})
    assert done.status_code == 201, done.text
    doc = done.json()
    assert doc["title"] == "Notes"
    assert doc["file"]["size"] == len(PDF)
    assert client.get(doc["links"]["download"]).content == PDF

    replay = client.post("/api/uploads/complete", json={"ticket": g["ticket"]})
    assert replay.status_code == 409
    assert "Replayed" in replay.json()["error"]
    forged = client.post("/api/uploads/complete", json={"ticket": g["ticket"][:-2] + "xx"})
    assert forged.status_code == 400
    assert forged.json()["error"] == "InvalidUploadTicketError"


def test_completing_a_direct_upload_that_never_happened_is_404(litestar_client: Any) -> None:
    """direct-uploads.md: `ObjectNotFoundError` (nothing uploaded yet) is a 404, not a 500."""
    client = litestar_client
    grant = client.post("/api/uploads", json={"filename": "never.pdf"}).json()
    early = client.post("/api/uploads/complete", json={"ticket": grant["ticket"]})
    assert early.status_code == 404, early.text
    assert early.json()["error"] == "ObjectNotFoundError"
    assert early.json()["detail"]
    assert client.get("/api/documents").json() == []
    # nothing was spent: the client may still upload and complete
    put = client.request(
        grant["method"], grant["url"], content=PDF, headers=grant.get("headers") or {}
    )
    assert put.status_code in (200, 201, 204), put.text
    done = client.post("/api/uploads/complete", json={"ticket": grant["ticket"]})
    assert done.status_code == 201, done.text


def test_fastapi_dependencies_give_the_registry_and_the_backend(tmp_path: Path) -> None:
    settings = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'library.db'}",
        "storage_url": (tmp_path / "files").as_uri(),
        "signing_secret": SECRET,
    }
    with make_client("fastapi", settings) as client:
        info = client.get("/api/storage")
        assert info.status_code == 200, info.text
        assert info.json()["backends"] == ["library"]
        assert "local" in info.json()["library"]
    assert "library" not in storages  # unregistered at shutdown


# -- PostgreSQL + S3, configured by environment variables ----------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_postgresql_and_s3_from_environment(
    framework: str,
    moto_server: Any,
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from tests.conftest import PG_SERVER

    bucket = moto_server.create_bucket()
    env = {
        "DATABASE_URL": f"postgresql+asyncpg://{PG_SERVER}/{pg_database}",
        "STORAGE_URL": f"s3://{bucket}/",
        "STORAGE_SIGNING_SECRET": SECRET,
        "AWS_ENDPOINT": moto_server.endpoint,
        "AWS_ACCESS_KEY_ID": moto_server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto_server.secret_access_key,
        "AWS_REGION": moto_server.region,
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # nothing may land in a local data directory

    with make_client(framework, None) as client:
        client.framework = framework
        doc = upload(client, "s3.pdf", PDF, "application/pdf", "On S3").json()
        assert doc["file"]["path"] in stored_keys()
        assert client.get(doc["links"]["download"]).content == PDF
        part = client.get(doc["links"]["download"], headers={"Range": "bytes=0-7"})
        assert (part.status_code, part.content) == (206, PDF[:8])
        # the store signs natively: the redirect goes straight to S3
        location = client.get(doc["links"]["signed"], follow_redirects=False).headers["location"]
        assert location.startswith(moto_server.endpoint)
        assert "X-Amz-Signature=" in location
        assert follow_signed(client, doc["id"]) == PDF
        # the JSON's URL is S3's own, and S3 serves the bytes from it
        for listed in client.get("/api/documents").json():
            assert listed["file"]["url"].startswith(moto_server.endpoint)
            assert httpx.get(listed["file"]["url"]).content == PDF

        image = upload(client, "s3.png", png(512, 512), "image/png").json()
        thumb = client.get(image["links"]["thumbnail"])
        assert thumb.status_code == 200
        assert thumb.headers["content-type"].startswith("image/webp")

        ids = {d["id"] for d in client.get("/api/documents").json()}
        assert {doc["id"], image["id"]} <= ids
        for d in (doc, image):
            assert client.delete(d["links"]["self"]).status_code == 204
        assert not {doc["file"]["path"], image["file"]["path"]} & set(stored_keys())
    assert list(tmp_path.iterdir()) == []


# -- the page's direct uploads on S3: the browser's protocol, replayed with httpx -----------------
def s3_environment(server: Any, bucket: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'library.db'}",
        "STORAGE_URL": f"s3://{bucket}/",
        "STORAGE_SIGNING_SECRET": SECRET,
        "AWS_ENDPOINT": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
        "AWS_REGION": server.region,
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }


def direct_upload(client: Any, store: httpx.Client, name: str, data: bytes) -> dict[str, Any]:
    """What the page's script does: ask, upload by the grant's method, redeem."""
    asked = client.post(
        "/api/uploads",
        json={"filename": name, "size": len(data), "content_type": "application/pdf"},
    )
    assert asked.status_code == 201, asked.text
    grant = asked.json()
    if grant["method"] == "POST":
        sent = store.post(grant["url"], data=grant["fields"], files={"file": (name, data)})
        assert sent.status_code == 204, sent.text
    else:
        assert grant["method"] == "MULTIPART"
        numbers = list(range(1, grant["part_count"] + 1))
        urls = client.post("/api/uploads/parts", json={"ticket": grant["ticket"], "parts": numbers})
        assert urls.status_code == 201, urls.text
        for number, url in urls.json()["urls"].items():
            start = (int(number) - 1) * grant["part_size"]
            part = store.put(url, content=data[start : start + grant["part_size"]])
            assert part.status_code == 200, part.text
        done = client.post("/api/uploads/multipart", json={"ticket": grant["ticket"]})
        assert done.status_code == 204, done.text
    redeemed = client.post("/api/uploads/complete", json={"ticket": grant["ticket"], "title": name})
    assert redeemed.status_code == 201, redeemed.text
    return {"grant": grant, "document": redeemed.json()}


@pytest.mark.integration
def test_direct_uploads_post_and_multipart_on_seaweedfs(
    seaweed_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sqlalchemy_obstore import _multipart as multipart

    bucket = seaweed_server.create_bucket()
    for key, value in s3_environment(seaweed_server, bucket, tmp_path).items():
        monkeypatch.setenv(key, value)
    big = b"%PDF-1.7\n" + bytes(range(256)) * (12 * 1024 * 1024 // 256)  # 12 MiB: two parts
    with (
        make_client("litestar", None) as client,
        httpx.Client(timeout=60, trust_env=False) as store,
    ):
        small = direct_upload(client, store, "small.pdf", PDF)
        assert small["grant"]["method"] == "POST"
        assert client.get(small["document"]["links"]["download"]).content == PDF

        large = direct_upload(client, store, "large.pdf", big)
        assert (large["grant"]["method"], large["grant"]["part_count"]) == ("MULTIPART", 2)
        assert large["document"]["file"]["size"] == len(big)
        assert client.get(large["document"]["links"]["download"]).content == big

        # SeaweedFS enforces the form's policy: more bytes than declared are refused
        grant = client.post("/api/uploads", json={"filename": "x.pdf", "size": len(PDF)}).json()
        refused = store.post(grant["url"], data=grant["fields"], files={"file": ("x", PDF + b"!")})
        assert refused.status_code == 400
        assert not storages.get_backend("library").exists(grant["upload_path"])

        # a multipart upload the page gives up on is aborted: nothing stays in the store
        given_up = client.post("/api/uploads", json={"filename": "y.pdf", "size": len(big)}).json()
        assert (
            client.post("/api/uploads/abort", json={"ticket": given_up["ticket"]}).status_code
            == 204
        )
        backend = storages.get_backend("library")
        assert multipart.list_incomplete_uploads(backend, backend.prefix) == []
        keys = stored_keys()
        assert keys == sorted([small["grant"]["path"], large["grant"]["path"]])
