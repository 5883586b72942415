"""Every Python block of the docs runs, in order, as a reader follows each page.

One fresh interpreter per page (module state, registries and event loops never leak
from one page to the next), in a scratch directory, under `-W error`; the page's own
setup block runs first, because it is the page's first block. The conventions the pages
follow are in `tests/docs_snippets.py`. Pages that need a server are given one through
the environment their setup block reads (with a documented default); the page text is
what runs.

Pages run elsewhere, in process, because their applications are then driven by real
requests: see `RUN_ELSEWHERE`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs_snippets import DOCS, README, ROOT, code_blocks, page_files, runnable

RUNNER = ROOT / "tests" / "docs_snippets.py"

RUN_ELSEWHERE = {
    "how-to/web-fastapi.md": "tests/integration/test_web_docs.py::test_the_fastapi_page",
    "how-to/uploads-from-requests.md": "tests/integration/test_web_docs.py::test_the_uploads_page",
    "how-to/web-litestar.md": (
        "tests/integration/test_web_litestar.py::test_the_documented_application"
    ),
    "how-to/testing.md": (
        "tests/e2e/test_pytest_plugin.py::test_the_how_to_page_examples_run"
    ),
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


NOT_RUN_EXPECTED = 0
"""Blocks marked `<!-- not run: reason -->` across the docs (and the README)."""


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


S3_PAGES = {"concepts/backends.md", "how-to/migration.md"}
"""Pages whose `s3://my-bucket/` examples do I/O: obstore finds the bucket through its
environment variables (`AWS_ENDPOINT`, ...), which these pages document."""


S3_STORAGE_URL_PAGES = {"how-to/operations.md"}
"""Pages whose setup reads `STORAGE_URL` (memory by default), run on S3 here: what they
show (incomplete multipart uploads) is about S3."""


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
    """The environment a page's setup block reads: servers for the pages about them."""
    env: dict[str, str] = {}
    if page in S3_PAGES or page in S3_STORAGE_URL_PAGES:
        env.update(request.getfixturevalue("s3_environment"))
    if page in S3_STORAGE_URL_PAGES:
        env["STORAGE_URL"] = "s3://my-bucket/"
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
        "PYTHONWARNINGS": "error",
        **page_environment(page, request),
    }
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
