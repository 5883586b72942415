"""The Litestar example app in a real browser: headless Chromium driven by Playwright.

Starts `python -m examples.litestar_app --port 0` in a subprocess (SQLite + local files in
a temporary directory), then uploads through the page's form, sees the document listed
with its thumbnail, downloads it and compares the bytes, follows the signed link, uploads
straight to storage with a ticket, and deletes. A screenshot is saved under
`tests/e2e/artifacts/` (git-ignored; CI keeps it as an artifact).

A second test replays the stored XSS of issue 13 (an uploaded `text/xsl` HTML page) on
every download path of `tests/e2e/xss_app.py` and checks that its script never runs.

Debian's `chromium` is used (no browser download). Without it the test skips locally, and
fails in CI (`CI=true` or `SQLALCHEMY_OBSTORE_REQUIRE_SERVERS=1`).
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
STARTUP_TIMEOUT = 60.0
PDF = b"%PDF-1.4\n% browser upload\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"


def _required() -> bool:
    return (
        os.environ.get("CI", "").strip().lower() == "true"
        or os.environ.get("SQLALCHEMY_OBSTORE_REQUIRE_SERVERS") == "1"
    )


def _unavailable(reason: str) -> None:
    hint = "Install Debian's chromium (apt-get install chromium) and `pip install playwright`."
    if _required():
        pytest.fail(f"{reason}. {hint} (CI forbids skipping the browser test)", pytrace=False)
    pytest.skip(f"{reason}. {hint}")


def _png() -> bytes:
    from PIL import Image

    ramp = Image.linear_gradient("L").resize((480, 320))
    image = Image.merge(
        "RGB", (ramp, ramp.rotate(90).resize((480, 320)), Image.new("L", (480, 320), 160))
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@contextlib.contextmanager
def serve_example_app(tmp_path: Path, **environ: str) -> Iterator[str]:
    """Run the example app in a subprocess on a free 127.0.0.1 port; yield its URL.

    `environ` adds to (or replaces) the app's settings, e.g. an S3 `STORAGE_URL`.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONFAULTHANDLER": "1",
        "PYTHONUNBUFFERED": "1",
        "LIBRARY_DATA_DIR": str(tmp_path / "data"),
        "STORAGE_SIGNING_SECRET": "browser-test-secret-0123456789abcdef",
        **environ,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.litestar_app", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        url = None
        while url is None:
            try:
                line = lines.get(timeout=STARTUP_TIMEOUT)
            except queue.Empty:
                pytest.fail("the example app printed no address:\n" + "".join(output))
            if line is None:
                pytest.fail("the example app exited:\n" + "".join(output))
            if "running on http://" in line:
                url = line.split("running on ", 1)[1].split()[0].rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            reader.join(timeout=30)
            assert proc.stdout is not None
            proc.stdout.close()
    assert code == 0, "".join(output)


@pytest.fixture
def app_url(tmp_path: Path) -> Iterator[str]:
    """The example app on local files, in a subprocess on a free 127.0.0.1 port."""
    with serve_example_app(tmp_path) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed")
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        _unavailable(f"chromium not found at {CHROMIUM}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def test_upload_list_download_delete_in_chromium(
    browser: Any, app_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(app_url + "/")
    expect(page.locator("h1")).to_have_text("Document library")
    expect(page.locator("p.empty")).to_be_visible()

    # upload a document and an image through the form
    (tmp_path / "report.pdf").write_bytes(PDF)
    (tmp_path / "cover.png").write_bytes(_png())
    for title, name in (("Annual report", "report.pdf"), ("Cover", "cover.png")):
        page.fill("#upload input[name=title]", title)
        page.set_input_files("#upload input[name=file]", str(tmp_path / name))
        with page.expect_navigation():
            page.click("#upload button[type=submit]")
    items = page.locator("li.document")
    expect(items).to_have_count(2)
    report = items.filter(has_text="Annual report")
    cover = items.filter(has_text="Cover")
    expect(report.locator(".filename")).to_have_text("report.pdf")
    expect(cover.locator("img.thumb")).to_be_visible()
    # the thumbnail really decoded in the browser
    width = cover.locator("img.thumb").evaluate("img => img.complete && img.naturalWidth")
    assert width == 256

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "document-library.png"), full_page=True)

    # download through the streaming route (a real browser download)
    with page.expect_download() as download_info:
        report.locator("a.download").click()
    download = download_info.value
    assert download.suggested_filename == "report.pdf"
    assert Path(download.path()).read_bytes() == PDF

    # the signed link, followed by the browser's own fetch (302 to /_storage/...)
    href = report.locator("a.signed").get_attribute("href")
    fetched = page.evaluate(
        """async (href) => {
            const r = await fetch(href);
            const body = Array.from(new Uint8Array(await r.arrayBuffer()));
            return {status: r.status, url: r.url, body};
        }""",
        href,
    )
    assert fetched["status"] == 200
    assert "signature=" in fetched["url"]
    assert bytes(fetched["body"]) == PDF

    # straight to storage: signed PUT + ticket, from the page's script
    if page.locator("#direct-upload").count():
        direct_bytes = b"%PDF-1.7\n% straight to storage\n" + bytes(range(255, -1, -1)) * 16
        (tmp_path / "direct.pdf").write_bytes(direct_bytes)
        page.fill("#direct-upload input[name=title]", "Direct upload")
        page.set_input_files("#direct-upload input[name=file]", str(tmp_path / "direct.pdf"))
        with page.expect_navigation():
            page.click("#direct-upload button[type=submit]")
        direct = page.locator("li.document").filter(has_text="Direct upload")
        expect(direct).to_have_count(1)
        with page.expect_download() as direct_info:
            direct.locator("a.download").click()
        assert Path(direct_info.value.path()).read_bytes() == direct_bytes
        page.screenshot(path=str(ARTIFACTS / "document-library-direct.png"), full_page=True)
        with page.expect_navigation():
            direct.locator("button.delete").click()

    # a refused upload: the page says why, nothing is added
    (tmp_path / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    page.set_input_files("#upload input[name=file]", str(tmp_path / "drawing.svg"))
    with page.expect_navigation():
        page.click("#upload button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("Upload refused")
    expect(page.locator("li.document")).to_have_count(2)

    # delete both; the list ends empty
    for title in ("Annual report", "Cover"):
        with page.expect_navigation():
            page.locator("li.document").filter(has_text=title).locator("button.delete").click()
        expect(page.locator("li.document").filter(has_text=title)).to_have_count(0)
    expect(page.locator("p.empty")).to_be_visible()
    gone = page.request.get(app_url + "/api/documents")
    assert gone.json() == []
    files = tmp_path / "data" / "files"
    assert [p for p in files.rglob("*") if p.is_file()] == []
    context.close()


# -- issue 13: an uploaded text/xsl page never runs its script ------------------------------------
@pytest.fixture
def xss_app(tmp_path: Path) -> Iterator[str]:
    """`tests/e2e/xss_app.py` under uvicorn on a free 127.0.0.1 port."""
    from tests.integration.uvicorn_probe import uvicorn_server

    with uvicorn_server("tests.e2e.xss_app:create_app", {}, tmp_path / "xss.log") as (url, _):
        yield url


def test_an_uploaded_text_xsl_page_does_not_run_in_chromium(browser: Any, xss_app: str) -> None:
    """The stored-XSS of issue 13, replayed in a real browser on every download path.

    The payload is HTML with a script, declared `text/xsl`. Served by the app itself as
    `text/html` (the control) Chromium runs it: the script requests `/pwned`. Uploaded
    and served by the library (`file_response`, the signed-URL route, `signed_redirect`;
    stored as declared, and stored under a `text/*` policy that sniffs it) it never
    runs: as declared it is an attachment (a download) with `CSP: sandbox` and
    `nosniff`; sniffed, it is stored as `text/plain` and shown as text. A PNG uploaded
    the same way still displays inline.
    """
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()

    def hits() -> list[str]:
        result: list[str] = page.request.get(xss_app + "/hits").json()
        return result

    # The detector works: the app's own text/html page runs the script.
    page.goto(xss_app + "/control")
    page.wait_for_function("document.title === 'PWNED'")
    page.wait_for_timeout(200)
    assert hits() == ["/control"]

    def upload(name: str, content_type: str, data: bytes, *, policy: str = "") -> dict[str, str]:
        query = f"name={name}&type={content_type}" + (f"&policy={policy}" if policy else "")
        answer: dict[str, str] = page.request.post(f"{xss_app}/upload?{query}", data=data).json()
        return answer

    from tests.e2e.xss_app import PAYLOAD

    declared = upload("style.xsl", "text/xsl", PAYLOAD)
    assert declared["content_type"] == "text/xsl"  # no policy: the declared type is kept
    sniffed = upload("style.xsl", "text/xsl", PAYLOAD, policy="text")
    assert sniffed["content_type"] == "text/plain"  # what the bytes prove
    png = upload("photo.png", "image/png", _png(), policy="text")

    def urls(key: str) -> list[str]:
        signed_url = page.request.get(f"{xss_app}/files/{key}/signed").text()
        return [
            f"{xss_app}/files/{key}",  # file_response
            xss_app + signed_url,  # the signed-URL route
            f"{xss_app}/files/{key}/link",  # signed_redirect
        ]

    for url in urls(declared["id"]):
        with (
            page.expect_download() as download_info,
            # navigating to an attachment starts a download instead of a page
            pytest.raises(PlaywrightError, match=r"Download is starting|ERR_ABORTED"),
        ):
            page.goto(url)
        download = download_info.value
        assert download.suggested_filename == "style.xsl"
        assert Path(download.path()).read_bytes() == PAYLOAD

    for url in urls(sniffed["id"]):
        response = page.goto(url)
        assert response is not None
        assert response.status == 200
        headers = response.headers
        assert headers["content-type"] == "text/plain"
        assert headers["content-disposition"].startswith("inline;")
        assert headers["content-security-policy"] == "sandbox"
        assert headers["x-content-type-options"] == "nosniff"
        # shown as text: the markup is visible, no element was built from it
        assert "<script>" in page.locator("body").inner_text()
        assert page.title() != "PWNED"

    for url in urls(png["id"]):
        response = page.goto(url)
        assert response is not None
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-disposition"].startswith("inline;")
        assert response.headers["content-security-policy"] == "sandbox"
        # Chromium's image viewer shows it (the sandbox does not stop an image)
        assert page.locator("img").evaluate("img => img.complete && img.naturalWidth") == 480

    page.wait_for_timeout(500)  # time for any stray request to arrive
    assert hits() == ["/control"]
    context.close()
