"""The README's Python blocks run as written, in a fresh interpreter, as a reader pastes them.

The quickstart runs twice: as printed (memory backend), and with the backend line swapped
for the production line its comment shows, pointed at a local S3 server (moto), so that
both halves of what the README promises are checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs_snippets import README, code_blocks


def python_blocks() -> list[str]:
    """The README's ```python blocks, in order."""
    return [block.code for block in code_blocks(README)]


def run(
    code: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONFAULTHANDLER": "1"}
    base["PYTHONWARNINGS"] = "error"  # as the suite: a warning on the way is a failure
    if "PYTHONPATH" in os.environ:  # the code under test, in a checkout not installed
        base["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_has_a_quickstart() -> None:
    blocks = python_blocks()
    assert blocks, "no ```python block in the README"
    assert "asyncio.run(main())" in blocks[0]


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_python_block_runs_as_written(index: int, tmp_path: Path) -> None:
    block = python_blocks()[index]
    result = run(block, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    if "sign_async" in block:
        assert "/_storage/uploads/uploads/" in result.stdout  # the signed URL was printed


def test_the_quickstart_runs_on_s3_with_its_production_line(
    tmp_path: Path, moto_server: Any
) -> None:
    quickstart = python_blocks()[0]
    production = re.search(r"# In production: (ObstoreBackend\(.*\))\n", quickstart)
    assert production is not None
    line = production.group(1).replace("s3://my-bucket/", f"s3://{moto_server.bucket}/")
    line = line.replace(
        'region="eu-west-1"',
        f'region="us-east-1", endpoint="{moto_server.endpoint}", allow_http=True, '
        'access_key_id="testing", secret_access_key="testing", '
        "virtual_hosted_style_request=False",
    )
    code = re.sub(
        r"storages\.register_backend\(ObstoreBackend\(\"uploads\", \"memory://\".*\)\)\n",
        f"storages.register_backend({line})\n",
        quickstart,
    )
    assert code != quickstart
    result = run(code, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "X-Amz-Signature=" in result.stdout
