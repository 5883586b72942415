"""Every Python block of the docs runs, in order, as a reader follows each page.

One fresh interpreter per page (module state, registries and event loops never leak
from one page to the next), in a scratch directory, under `-W error`; the page's own
visible setup block runs before the blocks that need it, because that is where the page
puts it. The conventions the pages follow are in `tests/docs_snippets.py`. Pages that
need a server or a secret are given it through the environment the page names (read by
its setup block or by obstore); the page text is what runs.

Pages run elsewhere, in process, because their applications are then driven by real
requests: see `RUN_ELSEWHERE`.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs_snippets import DOCS, README, ROOT, code_blocks, page_files, runnable
from tests.servers import gcs_service_account_json

RUNNER = ROOT / "tests" / "docs_snippets.py"

RUN_ELSEWHERE = {
    "how-to/web-fastapi.md": "tests/integration/test_web_docs.py::test_the_fastapi_page",
    "how-to/uploads-from-requests.md": "tests/integration/test_web_docs.py::test_the_uploads_page",
    "how-to/web-litestar.md": (
        "tests/integration/test_web_litestar.py::test_the_documented_application"
    ),
    "how-to/testing.md": "tests/e2e/test_pytest_plugin.py::test_the_how_to_page_examples_run",
}
"""Pages whose blocks run, every one of them in order, in another test."""

SECTIONS = ("index.md", "tutorial.md", "concepts", "how-to", "backends", "explanation")


def pages() -> list[str]:
    found: list[str] = []
    for section in SECTIONS:
        path = DOCS / section
        paths = [path] if path.is_file() else sorted(path.glob("*.md"))
        found += [p.relative_to(DOCS).as_posix() for p in paths if code_blocks(p)]
    return found


WARNINGS = "error,ignore:The declarative_mixin decorator:DeprecationWarning"
"""Warnings are errors, as in the suite (pyproject's `filterwarnings`, whose one exception
for the pages' dependencies is repeated here: advanced-alchemy, imported by Litestar,
uses a decorator SQLAlchemy 2.1 deprecates)."""

NOT_RUN_EXPECTED = 3
"""Blocks marked `<!-- not run: reason -->` across the docs and the README: the index's
teaser (an excerpt of the Quickstart, which runs) and two downloads from the internet
(`from-url.md`)."""


def test_the_pages_and_their_blocks_are_accounted_for() -> None:
    """Every page with Python code is run here or by the test `RUN_ELSEWHERE` names, and
    the blocks that do not run are few, and each says why."""
    assert set(RUN_ELSEWHERE) <= set(pages())
    not_run = [
        f"{block.where}: {block.not_run}"
        for page in [README, *(DOCS / p for p in pages())]
        for block in code_blocks(page)
        if block.not_run is not None
    ]
    assert all(reason.rpartition(": ")[2] for reason in not_run)
    assert len(not_run) == NOT_RUN_EXPECTED, "\n".join(not_run)


def backends_without_a_prefix(code: str) -> list[str]:
    """The `ObstoreBackend(...)` calls in `code` on a real store (not a `memory://`
    literal) that give no `prefix=`."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name != "ObstoreBackend" or any(k.arg == "prefix" for k in node.keywords):
            continue
        url = node.args[1] if len(node.args) > 1 else None
        if isinstance(url, ast.Constant) and str(url.value).startswith("memory://"):
            continue  # a test double: nothing for gc to manage beyond the process
        found.append(ast.unparse(node))
    return found


def test_every_example_backend_has_a_prefix() -> None:
    """`gc` manages everything under a backend's prefix: an example on a real store
    without one teaches a backend whose gc manages the whole bucket (or directory)."""
    missing = [
        f"{block.where}: {call}"
        for page in [README, *sorted(DOCS.rglob("*.md"))]
        for block in code_blocks(page)
        for call in backends_without_a_prefix(block.code)
    ]
    missing += [
        f"{path.relative_to(ROOT)}: {call}"
        for path in sorted((ROOT / "examples").rglob("*.py"))
        for call in backends_without_a_prefix(path.read_text(encoding="utf-8"))
    ]
    assert missing == [], "\n".join(missing)


def test_a_page_has_at_most_one_setup_block() -> None:
    for page in pages():
        setups = [b.where for b in code_blocks(page) if 'title="Setup' in b.info]
        assert len(setups) <= 1, setups


GCS = "https://storage.googleapis.com"

SECRETS = {
    "STORAGE_SIGNING_SECRET": "docs-signing-secret-of-at-least-32-bytes",
    "UPLOAD_TICKET_SECRET": "docs-ticket-secret-of-at-least-32-bytes!",
    "AZURE_STORAGE_ACCOUNT_KEY": "ZG9jcy1hY2NvdW50LWtleS1ub3QtYS1yZWFsLW9uZQ==",
}

PAGE_ENVIRONMENT: dict[str, set[str]] = {
    "concepts/backends.md": {"s3"},
    "how-to/migration.md": {"s3"},
    "how-to/upload-policy.md": {"s3"},
    "how-to/operations.md": {"s3", "STORAGE_URL=s3"},
    "how-to/direct-uploads.md": {"s3", "STORAGE_URL=s3", "secrets"},
    "how-to/signed-urls-local.md": {"secrets"},
    "backends/azure.md": {"secrets"},
    "backends/gcs.md": {"gcs"},
    "backends/s3.md": {"s3", "cloudfront"},
    "how-to/cdn.md": {"s3", "cloudfront"},
}
"""What each page is given. `s3`: obstore's environment for a local S3 server (moto) with
the `my-bucket` the pages name; `STORAGE_URL=s3`: the page's setup reads `STORAGE_URL`
(memory by default) and what the page shows is about S3; `secrets`: the secrets the page
reads from the environment; `gcs`: a service-account key (a throwaway RSA key) in
`GOOGLE_SERVICE_ACCOUNT_KEY`; `cloudfront`: a throwaway RSA key in `CLOUDFRONT_PRIVATE_KEY`."""


def throwaway_rsa_pem() -> str:
    """A fresh 2048-bit RSA private key, PEM (PKCS#8)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="session")
def s3_environment(moto_server: Any) -> dict[str, str]:
    """obstore's environment for a local S3 server (moto) with the docs' `my-bucket`."""
    moto_server.create_bucket("my-bucket")
    return {
        "AWS_ENDPOINT": moto_server.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": moto_server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto_server.secret_access_key,
    }


def page_environment(page: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment a page reads, as `PAGE_ENVIRONMENT` says."""
    given = PAGE_ENVIRONMENT.get(page, set())
    env: dict[str, str] = {}
    if "s3" in given:
        env.update(request.getfixturevalue("s3_environment"))
    if "STORAGE_URL=s3" in given:
        env["STORAGE_URL"] = "s3://my-bucket/"
    if "secrets" in given:
        env.update(SECRETS)
    if "cloudfront" in given:  # a key group's private key: a throwaway RSA key
        env["CLOUDFRONT_PRIVATE_KEY"] = throwaway_rsa_pem()
    if "gcs" in given:  # a service-account key with a throwaway RSA key: signs locally
        env["GOOGLE_SERVICE_ACCOUNT_KEY"] = gcs_service_account_json(GCS)
    return env


@pytest.mark.parametrize("page", [p for p in pages() if p not in RUN_ELSEWHERE])
def test_the_page_runs_as_written(
    page: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    blocks = runnable(code_blocks(page))
    assert blocks
    page_files(blocks)  # a malformed file layout fails here, before anything runs
    env: dict[str, Any] = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONFAULTHANDLER": "1",
        "PYTHONWARNINGS": WARNINGS,
        **page_environment(page, request),
    }
    if "PYTHONPATH" in os.environ:  # the code under test, in a checkout not installed
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(DOCS / page)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
