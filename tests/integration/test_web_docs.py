"""The web how-to pages' code, run block by block as a reader follows each page.

`docs/how-to/web-fastapi.md` and `docs/how-to/uploads-from-requests.md` (the Litestar
page runs in `test_web_litestar.py`; every other page in `tests/e2e/test_docs_code.py`):
every block runs in order in one module, under `filterwarnings=error` (so a deprecated
way of declaring a dependency fails here), and the applications they build answer real
requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from sqlalchemy_obstore import storages
from tests.docs_snippets import run_in_process
from tests.integration.web_scenarios import SECRET, asgi_lifespan

BASE = "http://testserver"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
HTML = b"<html><script>alert(1)</script></html>"


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def test_the_fastapi_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    monkeypatch.setenv("STORAGE_URL", (tmp_path / "files").as_uri())
    monkeypatch.setenv("STORAGE_SIGNING_SECRET", SECRET)
    page = run_in_process("how-to/web-fastapi.md")

    async with asgi_lifespan(page.app), client_of(page.app) as client:
        created = await client.post(
            "/documents", files={"file": ("q3.pdf", PDF, "application/pdf")}
        )
        assert created.status_code == 201, created.text
        doc = created.json()
        assert doc["file"]["path"].startswith("uploads/")
        assert doc["file"]["url"].startswith("/_storage/uploads/uploads/")
        assert (await client.get(doc["file"]["url"])).content == PDF

        listed = (await client.get("/documents")).json()
        assert [d["id"] for d in listed] == [doc["id"]]
        assert (await client.get(listed[0]["file"]["url"])).content == PDF

        download = await client.get(f"/documents/{doc['id']}/download")
        assert download.content == PDF
        assert download.headers["content-disposition"].startswith("attachment")
        assert (await client.get(f"/documents/{doc['id']}/view")).content == PDF
        link = await client.get(f"/documents/{doc['id']}/link")
        assert link.status_code == 302
        assert (await client.get(link.headers["location"])).content == PDF

        assert (await client.get("/backends")).json() == ["uploads"]
        store = (await client.get("/uploads/store")).json()
        assert store["prefix"] == "uploads"
        assert "local" in store["store"]

        refused = await client.post("/documents", files={"file": ("x.html", HTML, "text/html")})
        assert refused.status_code == 415, refused.text
        assert refused.json()["error"] == "InvalidContentTypeError"
    assert "uploads" not in storages  # unregistered at shutdown

    async with asgi_lifespan(page.by_hand):  # the pieces alone
        assert storages.get_backend("media").url_signer is not None
    assert "media" not in storages


async def test_the_uploads_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    page = run_in_process("how-to/uploads-from-requests.md")
    try:
        async with asgi_lifespan(page.fastapi_app), client_of(page.fastapi_app) as client:
            created = await client.post(
                "/documents", files={"file": ("a.pdf", PDF, "application/pdf")}
            )
            assert created.status_code == 201, created.text
            assert created.json()["file"]["path"].startswith("uploads/docs/")
            refused = await client.post("/documents", files={"file": ("x.pdf", HTML, "a/pdf")})
            assert refused.status_code == 415, refused.text  # sniffed: HTML, not a PDF
            raw = await client.put("/raw/b.pdf", content=PDF)
            assert raw.status_code == 201, raw.text
            assert raw.json()["file"]["size"] == len(PDF)

        page.litestar_app.register(page.put_raw)
        transport = httpx.ASGITransport(app=page.litestar_app)
        async with (
            asgi_lifespan(page.litestar_app),
            httpx.AsyncClient(transport=transport, base_url=BASE) as client,
        ):
            created = await client.post(
                "/documents", files={"file": ("c.pdf", PDF, "application/pdf")}
            )
            assert created.status_code == 201, created.text
            refused = await client.post("/documents", files={"file": ("x.pdf", HTML, "a/pdf")})
            assert refused.status_code == 415, refused.text
            assert refused.json()["error"] == "InvalidContentTypeError"
            raw = await client.put("/raw/d.pdf", content=PDF)
            assert raw.status_code == 200, raw.text  # (Litestar's default for PUT)

        assert page.custom_app.exception_handlers[page.StorageError] is page.storage_error
        assert (
            len(page.custom_app.exception_handlers) == len(page.FastAPI().exception_handlers) + 1
        )  # nothing installed besides the app's own handler
        backend = storages.get_backend("uploads")
        assert len(list(backend.list_objects(backend.prefix))) == 4
    finally:
        await page.engine.dispose()
