"""Every example in examples/ runs from a clean working directory and says what it did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, cwd: Path, extra_env: dict[str, str] | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONFAULTHANDLER": "1", "HOME": str(cwd)}
    if "PYTHONPATH" in os.environ:  # the code under test, in a checkout not installed
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_quickstart_saves_reads_replaces_and_deletes(tmp_path: Path) -> None:
    out = run_example("quickstart.py", tmp_path)
    assert "read:     b'Revenue went up.'" in out
    assert "streamed: b'line 0\\nline 1\\nline 2\\n'" in out
    assert "replaced: quickstart/" in out
    assert "objects left under the prefix: []" in out
    # it used SQLite and local files under ./var by default
    assert (tmp_path / "var" / "quickstart.db").exists()
    assert (tmp_path / "var" / "files").is_dir()


def test_quickstart_is_repeatable(tmp_path: Path) -> None:
    run_example("quickstart.py", tmp_path)
    out = run_example("quickstart.py", tmp_path)
    assert "objects left under the prefix: []" in out


@pytest.fixture(scope="module")
def transactions_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    return run_example("transactions.py", tmp_path_factory.mktemp("transactions"))


@pytest.mark.parametrize(
    ("step", "count"),
    [
        ("added an album with a cover and 3 photos", 4),
        ("replaced the cover, flushed (old kept)", 5),
        ("committed (old cover deleted)", 4),
        ("rolled back (its upload removed)", 4),
        ("savepoint 2 rolled back", 5),
        ("removed a photo (delete-orphan cascade)", 4),
        ("deleted the album", 0),
    ],
)
def test_transactions_example(transactions_output: str, step: str, count: int) -> None:
    out = transactions_output
    line = next(line for line in out.splitlines() if line.startswith(step))
    assert line.endswith(f"objects in storage: {count}")


def test_quickstart_against_s3_and_postgresql(
    tmp_path: Path, moto_server: Any, pg_database: str
) -> None:
    """The README's "real servers" path: configuration from environment variables only."""
    from tests.conftest import PG_SERVER

    bucket = moto_server.create_bucket()
    env = {
        "DATABASE_URL": f"postgresql+asyncpg://{PG_SERVER}/{pg_database}",
        "STORAGE_URL": f"s3://{bucket}/",
        "AWS_ENDPOINT": moto_server.endpoint,
        "AWS_ACCESS_KEY_ID": moto_server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto_server.secret_access_key,
        "AWS_REGION": moto_server.region,
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }
    out = run_example("quickstart.py", tmp_path, extra_env=env)
    assert "store=S3Store(bucket=" in out
    assert "signed:   http://" in out
    assert "X-Amz-Signature=" in out
    assert "page:     2 signed URLs" in out
    assert "read:     b'Revenue went up.'" in out
    assert "objects left under the prefix: []" in out
