"""The project's own scripts keep what issue #16 asked of them.

* `scripts/ensure-postgres.sh` (run by `nox -s tests`) changes the system (installs
  PostgreSQL, edits `pg_hba.conf`) only when allowed: `CI=true` or
  `SQLALCHEMY_OBSTORE_SETUP_POSTGRES=1`. It runs here against stand-ins for the system's
  commands on `PATH` (they record their calls), so nothing on this machine is touched.
* `.ci/run` runs the unit and database suites on every Python the package claims.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENSURE_POSTGRES = ROOT / "scripts" / "ensure-postgres.sh"
BASH = "/bin/bash"


def stand_ins(directory: Path, log: Path, commands: dict[str, str]) -> Path:
    """A `bin` directory of shell scripts, each logging its name and arguments to `log`
    then running its body."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for name, body in commands.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{body}\n')
        script.chmod(0o755)
    return bin_dir


def run_ensure_postgres(bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(ENSURE_POSTGRES)],
        env={"PATH": str(bin_dir), **env},  # the stand-ins only: no real pg_*, apt-get, id
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "env",
    [{}, {"CI": "false"}, {"SQLALCHEMY_OBSTORE_SETUP_POSTGRES": "0"}],
    ids=["nothing", "CI=false", "SETUP_POSTGRES=0"],
)
def test_ensure_postgres_installs_nothing_unless_allowed(
    tmp_path: Path, env: dict[str, str]
) -> None:
    log = tmp_path / "calls"
    bin_dir = stand_ins(tmp_path, log, {"apt-get": "exit 1", "id": "echo 0"})  # as root
    result = run_ensure_postgres(bin_dir, **env)
    assert result.returncode == 1  # not fatal: the nox session accepts 1, the tests skip
    assert "PostgreSQL is not installed; the PostgreSQL tests will skip" in result.stderr
    assert "SQLALCHEMY_OBSTORE_SETUP_POSTGRES=1" in result.stderr  # says how to allow it
    calls = log.read_text() if log.exists() else ""
    assert "apt-get" not in calls


@pytest.mark.parametrize(
    "env",
    [{"CI": "true"}, {"SQLALCHEMY_OBSTORE_SETUP_POSTGRES": "1"}],
    ids=["CI=true", "SETUP_POSTGRES=1"],
)
def test_ensure_postgres_installs_when_allowed(tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "calls"
    # (the stand-in apt-get fails to install, so the script stops there, after asking)
    bin_dir = stand_ins(tmp_path, log, {"apt-get": '[ "$1" = update ]', "id": "echo 0"})
    result = run_ensure_postgres(bin_dir, **env)
    assert result.returncode == 1
    assert "installing PostgreSQL from Debian's packages" in result.stderr
    assert "apt-get install -y -qq postgresql" in log.read_text()


def test_ensure_postgres_leaves_pg_hba_alone_unless_allowed(tmp_path: Path) -> None:
    """Installed but down: it starts the cluster, and says (not does) what it would
    change in `pg_hba.conf`."""
    log = tmp_path / "calls"
    answered = tmp_path / "answered"
    bin_dir = stand_ins(
        tmp_path,
        log,
        {
            # down until the cluster is started
            "pg_isready": f'[ -e "{answered}" ]',
            "pg_ctlcluster": f'touch "{answered}"',
            "ls": "echo 99",  # a cluster version no machine has: /etc/postgresql/99/main
            "psql": "echo ' test | postgres | UTF8'",
            "apt-get": "exit 1",
            "id": "echo 0",
        },
    )
    for tool in ("grep", "cut", "sort", "tail", "seq", "touch"):  # the real ones
        real = shutil.which(tool)
        assert real is not None, tool
        (bin_dir / tool).symlink_to(real)
    result = run_ensure_postgres(bin_dir)
    assert result.returncode == 0, result.stderr
    assert "leaving /etc/postgresql/99/main/pg_hba.conf as it is" in result.stderr
    assert "pg_hba.conf.new" not in result.stderr  # no attempt to write it
    calls = log.read_text()
    assert "pg_ctlcluster --skip-systemctl-redirect 99 main start" in calls
    assert "apt-get" not in calls

    answered.unlink()  # allowed, it would write it (here it cannot: there is no such cluster)
    allowed = run_ensure_postgres(bin_dir, SQLALCHEMY_OBSTORE_SETUP_POSTGRES="1")
    assert "/etc/postgresql/99/main/pg_hba.conf.new" in allowed.stderr
    assert "leaving" not in allowed.stderr


def claimed_pythons() -> set[str]:
    """The `Programming Language :: Python :: 3.x` classifiers of pyproject.toml (read
    with a pattern: `tomllib` is not in Python 3.10, which runs these tests too)."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = set(re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject))
    oldest = min(found, key=lambda version: int(version[2:]))
    assert f'requires-python = ">={oldest}"' in pyproject
    return found


def test_ci_runs_the_suites_on_every_claimed_python() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    oldest = re.search(r"py310=\$\(find_python (3\.\d+)\)", ci)
    assert oldest is not None
    assert re.search(r"nox -s tests-oldest --force-python \"\$py310\"", ci)
    loop = re.search(r"for version in ([\d. ]+); do\n(.*?)\ndone", ci, re.DOTALL)
    assert loop is not None
    assert "nox -s tests-python --force-python" in loop.group(2)
    assert {oldest.group(1), *loop.group(1).split()} == claimed_pythons()
    assert "nox -s tests\n" in ci  # the whole suite, on python3's version (skipped in the loop)
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert '@nox.session(name="tests-python")' in noxfile
