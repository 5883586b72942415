"""The example page's direct uploads to S3 in a real browser (Debian's Chromium).

The app runs in a subprocess on S3 (a fresh bucket on SeaweedFS, which checks
signatures and POST policies, and on moto, which applies bucket CORS rules); the page
is on another origin than the store, so every upload is a cross-origin request that the
bucket's CORS rule must allow. A small PDF goes up as a POST form, a 12 MiB one as a
multipart upload in parallel parts; both are listed and downloaded back through the app.

Measured, not assumed: both servers apply the bucket's CORS rule to preflights (a part
`PUT` from a page of another origin never reaches the store), but a POST form is a
"simple" request that the browser sends without a preflight: the store keeps it
whatever the rule says, and the rule only decides whether the page may read the
answer. The grant (one key, its limits, its expiry), not CORS, is what bounds a POST.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.e2e.test_browser import browser, serve_example_app  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
SMALL = b"%PDF-1.7\n% a small direct upload\n" + bytes(range(256)) * 8
LARGE = b"%PDF-1.7\n% a large direct upload\n" + bytes(range(255, -1, -1)) * (12 * MIB // 256)


@pytest.fixture(params=["seaweed", "moto"])
def s3_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any, str]]:
    """The example app on a fresh bucket; `(app URL, server, bucket)`."""
    server = request.getfixturevalue(f"{request.param}_server")
    bucket = server.create_bucket()
    environ = {
        "STORAGE_URL": f"s3://{bucket}/",
        "AWS_ENDPOINT": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
        "AWS_REGION": server.region,
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }
    with serve_example_app(tmp_path, **environ) as url:
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key_id,
            aws_secret_access_key=server.secret_access_key,
            region_name=server.region,
        )
        # What the bucket needs for browser uploads from the app's pages.
        client.put_bucket_cors(
            Bucket=bucket,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedOrigins": [url],
                        "AllowedMethods": ["GET", "PUT", "POST"],
                        "AllowedHeaders": ["*"],
                        "ExposeHeaders": ["ETag"],
                    }
                ]
            },
        )
        yield url, server, bucket


def test_post_and_multipart_uploads_from_the_page(
    browser: Any,  # noqa: F811
    s3_app: tuple[str, Any, str],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    app_url, server, bucket = s3_app
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    to_store: list[tuple[str, str]] = []
    page.on(
        "request",
        lambda request: (
            to_store.append((request.method, request.url))
            if request.url.startswith(server.endpoint)
            else None
        ),
    )
    page.goto(app_url + "/")
    expect(page.locator("#direct-upload")).to_be_visible()

    for name, data in (("small.pdf", SMALL), ("large.pdf", LARGE)):
        (tmp_path / name).write_bytes(data)
        page.fill("#direct-upload input[name=title]", name)
        page.set_input_files("#direct-upload input[name=file]", str(tmp_path / name))
        with page.expect_navigation(timeout=60_000):
            page.click("#direct-upload button[type=submit]")
        item = page.locator("li.document").filter(has_text=name)
        expect(item).to_have_count(1)
        with page.expect_download() as info:
            item.locator("a.download").click()
        assert Path(info.value.path()).read_bytes() == data

    posts = [url for method, url in to_store if method == "POST"]
    parts = sorted(url.split("partNumber=")[1].split("&")[0] for m, url in to_store
                   if m == "PUT" and "partNumber=" in url)  # fmt: skip
    assert len(posts) == 1  # the small file: one form
    assert parts == ["1", "2"]  # the large one: two parts of 8 MiB
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "direct-s3.png"), full_page=True)

    # A form whose policy does not admit the body: the store refuses it (SeaweedFS) and
    # the page can read the refusal; moto takes it (it checks no policy).
    outcome = page.evaluate(
        """async () => {
            const grant = await api("/api/uploads", {filename: "tiny.pdf", size: 10});
            const form = new FormData();
            for (const [k, v] of Object.entries(grant.fields)) { form.append(k, v); }
            form.append("file", new Blob(["%PDF-1.7 and more than ten bytes"]));
            const response = await fetch(grant.url, {method: "POST", body: form});
            return {status: response.status, body: await response.text()};
        }"""
    )
    if server.checks_signatures:
        assert outcome["status"] == 400
        assert "EntityTooLarge" in outcome["body"]
    else:
        assert outcome["status"] == 204

    # From a page of another origin (the same app as http://localhost:<port>, which the
    # rule does not name), with grants it somehow holds.
    # A POST form is a "simple" cross-origin request: the browser sends it without asking
    # first, so the store takes it whatever the CORS rule says (the rule only decides
    # whether the page may read the answer: SeaweedFS omits the CORS headers for a
    # foreign origin, moto reflects it). CORS does not protect a POST upload; the grant
    # does (one key, its limits, its expiry). A part PUT needs a preflight, which the
    # rule refuses on both servers: the part never reaches the store.
    def ask(path: str, body: dict[str, Any]) -> Any:
        return page.request.post(app_url + path, data=body).json()

    form = ask("/api/uploads", {"filename": "elsewhere.pdf", "size": len(SMALL)})
    parted = ask("/api/uploads", {"filename": "parted.pdf", "size": len(LARGE)})
    urls = ask("/api/uploads/parts", {"ticket": parted["ticket"], "parts": [1]})["urls"]
    other = context.new_page()
    other.goto(app_url.replace("127.0.0.1", "localhost") + "/")
    posted, put = other.evaluate(
        """async ([form, partUrl, body]) => {
            const attempt = async (request) => {
                try { return (await request()).status; } catch (error) { return String(error); }
            };
            const data = new FormData();
            for (const [k, v] of Object.entries(form.fields)) { data.append(k, v); }
            data.append("file", new Blob([new Uint8Array(body)]));
            return [
                await attempt(() => fetch(form.url, {method: "POST", body: data})),
                await attempt(() => fetch(partUrl, {method: "PUT", body: new Uint8Array(8)})),
            ];
        }""",
        [form, urls["1"], list(SMALL)],
    )
    assert posted == ("TypeError: Failed to fetch" if server.checks_signatures else 204)
    store = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=server.region,
    )
    stored = store.head_object(Bucket=bucket, Key=form["upload_path"])
    assert stored["ContentLength"] == len(SMALL)  # sent and kept, answer readable or not
    assert put == "TypeError: Failed to fetch"  # the preflight was refused
    listed = store.list_parts(Bucket=bucket, Key=parted["path"], UploadId=parted["upload_id"])
    assert listed.get("Parts", []) == []
    aborted = page.request.post(app_url + "/api/uploads/abort", data={"ticket": parted["ticket"]})
    assert aborted.status == 204
    context.close()
