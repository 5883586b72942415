"""The reliability soak, short: every fault kind at least once, no dangling reference.

`tests/soak/soak.py` is the full soak (`nox -s soak`, minutes long, not in CI); this
runs it for a few seconds with faults much closer together: worker processes killed
with SIGKILL, SeaweedFS frozen with SIGSTOP, connections cut by the proxy and by
`pg_terminate_backend`, COMMIT replies lost. It asserts what the full run must show:
commits went through despite the faults, no committed reference dangles (the
soak's own check and `verify_references`), and the garbage collector leaves no orphan.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_short_soak(pg_database: str, tmp_path: Path) -> None:
    # pg_database: PostgreSQL is reachable (or the test skips / fails in CI like the others)
    out = tmp_path / "soak.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.soak.soak",
            *("--duration", "12", "--workers", "2", "--sessions", "3"),
            *("--kill-every", "4", "--freeze-every", "5", "--freeze-for", "1.5"),
            *("--drop-every", "3", "--lost-reply", "0.05", "--seed", "1"),
            *("--json", str(out)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    print(completed.stdout)
    assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dangling"] == 0
    assert report["verify_findings"] == 0
    assert report["commits_ok"] > 50
    assert report["orphans_after_gc"] == 0
    assert report["incomplete_after_gc"] == 0  # killed multipart uploads aborted by gc
    faults = report["faults"]
    assert faults["worker kill -9"] >= 1
    assert faults["S3 frozen (SIGSTOP)"] >= 1
    assert faults["COMMIT replies lost (proxy)"] >= 1
    assert set(report["operations"]) == {
        "insert",
        "replace",
        "append",
        "delete",
        "rollback",
        "savepoint_rollback",
    }
