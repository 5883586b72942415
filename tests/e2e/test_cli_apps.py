"""The command line on applications written as the docs teach, in real subprocesses.

The backends are registered by the application's startup (the Litestar plugin, a
FastAPI lifespan, the Starlette extension) and the engine lives in the application
(advanced-alchemy's plugin, the lifespan state, `app.state`): `--app module:app` runs
the startup (ASGI lifespan), finds both, and runs the shutdown at the end. No
`DATABASE_URL` is set in any of these runs. Also `litestar storage ...` on the example
app, through Litestar's CLI plugin protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from sqlalchemy_obstore import FileObject, ObstoreBackend, storages
from sqlalchemy_obstore.cli import EXIT_OK, EXIT_USAGE
from tests.e2e.cli_app import make_models

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("sqlalchemy-obstore")
APPS = "tests.e2e.cli_web_apps"
SECRET = "example-app-cli-secret-0123456789abcdef"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def execute(command: list[str], env: dict[str, str]) -> Result:
    base = {"PATH": "/usr/bin:/bin", "PYTHONFAULTHANDLER": "1"}
    if "PYTHONPATH" in os.environ:  # the code under test, in a checkout not installed
        base["PYTHONPATH"] = os.environ["PYTHONPATH"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@dataclass
class WebApp:
    """The environment of `tests.e2e.cli_web_apps`, and in-process twins to seed and check."""

    tmp: Path
    env: dict[str, str]
    table: str
    directory: Path
    marker: Path

    def cli(self, *args: str) -> Result:
        return execute([str(SCRIPT), *args], self.env)

    def seed(self, rows: int, orphans: int) -> set[str]:
        """Rows with a file each, and unreferenced objects; returns the orphans' paths."""
        Base, Document = make_models(self.table, "web")
        backend = ObstoreBackend("web", self.directory, prefix="uploads")
        storages.register_backend(backend)
        engine = create_engine(f"sqlite:///{self.tmp / 'web.db'}")
        try:
            Base.metadata.create_all(engine)
            with Session(engine) as session:
                session.add_all(
                    Document(title=str(i), file=FileObject(filename=f"{i}.txt", content=b"kept"))
                    for i in range(rows)
                )
                session.commit()
        finally:
            engine.dispose()
        return {
            FileObject(filename="lost.txt", content=b"lost", backend="web").save().path
            for _ in range(orphans)
        }

    def objects(self) -> set[str]:
        backend = storages.get_backend("web")
        return {info.path for info in backend.list_objects(backend.prefix)}


@pytest.fixture
def web(tmp_path: Path) -> WebApp:
    directory = tmp_path / "files"
    directory.mkdir()
    table = f"web_docs_{uuid.uuid4().hex[:8]}"
    env = {
        "HOME": str(tmp_path),
        "SQLO_WEB_DIR": str(directory),
        "SQLO_WEB_DB": f"sqlite+aiosqlite:///{tmp_path / 'web.db'}",
        "SQLO_WEB_TABLE": table,
        "SQLO_WEB_MARKER": str(tmp_path / "stopped"),
    }
    return WebApp(tmp_path, env, table, directory, tmp_path / "stopped")


APP_TARGETS = {
    "litestar-plugin": f"{APPS}:litestar_app",
    "litestar-factory": f"{APPS}:create_litestar_app",
    "fastapi-lifespan": f"{APPS}:fastapi_app",
    "fastapi-factory": f"{APPS}:create_fastapi_app",
    "starlette-extension": f"{APPS}:create_starlette_app",
}


@pytest.mark.parametrize("target", APP_TARGETS.values(), ids=APP_TARGETS.keys())
def test_backends_lists_what_the_app_registers_at_startup(web: WebApp, target: str) -> None:
    result = web.cli("backends", "--app", target, "--json")
    assert result.code == EXIT_OK, result
    document = result.json()  # stdout holds the JSON document only (the app's prints: stderr)
    assert [(b["key"], b["prefix"], b["ok"]) for b in document["backends"]] == [
        ("web", "uploads", True)
    ]
    assert document["database"]["url"] == web.env["SQLO_WEB_DB"]  # the app's own engine
    assert document["database"]["ok"] is True
    assert web.marker.read_text() == "stopped"  # the shutdown ran too


@pytest.mark.parametrize("target", ["litestar-plugin", "fastapi-lifespan"])
def test_gc_and_verify_use_the_apps_backends_and_engine(web: WebApp, target: str) -> None:
    app = APP_TARGETS[target]
    assert web.cli("backends", "--app", app).code == EXIT_OK  # creates the table
    orphans = web.seed(rows=3, orphans=2)

    verified = web.cli("verify", "--app", app, "--json")
    assert verified.code == EXIT_OK, verified
    assert verified.json()["checked"] == 3

    dry = web.cli("gc", "--app", app, "--grace-period", "0", "--json")
    assert dry.code == EXIT_OK, dry
    assert set(dry.json()["backends"]["web"]["orphan_paths"]) == orphans
    assert dry.json()["warnings"] == []  # the backend has a prefix

    deleted = web.cli(
        "gc", "--app", app, "--delete", "--yes", "--grace-period", "0", "--unsafe-grace-period"
    )
    assert deleted.code == EXIT_OK, deleted
    assert not orphans & web.objects()
    assert len(web.objects()) == 3


def test_the_issue_reproduction_works_with_the_example_package(tmp_path: Path) -> None:
    """`sqlalchemy-obstore backends --app <package>`: its create_app() is found and started."""
    env = {"HOME": str(tmp_path), "LIBRARY_DATA_DIR": str(tmp_path / "library")}
    env["STORAGE_SIGNING_SECRET"] = SECRET
    for target in ("examples.litestar_app", "examples.fastapi_app:create_app"):
        result = execute([str(SCRIPT), "backends", "--app", target, "--json"], env)
        assert result.code == EXIT_OK, (target, result)
        document = result.json()
        assert [(b["key"], b["prefix"]) for b in document["backends"]] == [("library", "documents")]
        assert document["database"]["url"].endswith(str(tmp_path / "library" / "library.db"))
        verified = execute([str(SCRIPT), "verify", "--app", target, "--json"], env)
        assert verified.code == EXIT_OK, (target, verified)


def test_litestar_storage_commands_in_the_example_app(tmp_path: Path) -> None:
    litestar = [sys.executable, "-m", "litestar", "--app", "examples.litestar_app:create_app"]
    env = {
        "HOME": str(tmp_path),
        "LIBRARY_DATA_DIR": str(tmp_path / "library"),
        "STORAGE_SIGNING_SECRET": SECRET,
    }
    backends = execute([*litestar, "storage", "backends", "--json"], env)
    assert backends.code == EXIT_OK, backends
    document = backends.json()
    assert [(b["key"], b["prefix"], b["ok"]) for b in document["backends"]] == [
        ("library", "documents", True)
    ]
    assert document["database"]["ok"] is True

    gc = execute([*litestar, "storage", "gc", "--json"], env)
    assert gc.code == EXIT_OK, gc
    assert gc.json()["backends"]["library"]["prefix"] == "documents"

    usage = execute([*litestar, "storage", "gc", "--help"], env)
    assert usage.code == EXIT_OK, usage
    assert usage.stdout.startswith("usage: litestar storage gc")
    assert "--grace-period" in usage.stdout

    refused = execute([*litestar, "storage", "gc", "--delete"], env)
    assert refused.code == EXIT_USAGE, refused
    assert refused.stderr.strip().startswith("litestar storage: error: refusing to delete")
    # The grace-period floor holds on this entry point too.
    unsafe = execute([*litestar, "storage", "gc", "--delete", "--yes", "--grace-period", "0s"], env)
    assert unsafe.code == EXIT_USAGE, unsafe
    assert "refusing --delete with --grace-period 0s" in unsafe.stderr
    assert "--unsafe-grace-period" in unsafe.stderr

    listed = execute([*litestar, "--help"], env)
    assert listed.code == EXIT_OK, listed
    assert "storage" in listed.stdout


def test_errors_say_what_was_tried(web: WebApp) -> None:
    failing = web.cli("backends", "--app", f"{APPS}:create_failing_app")
    assert failing.code == EXIT_USAGE, failing
    assert "the startup of the Litestar app" in failing.stderr
    assert "RuntimeError: the configuration service is down" in failing.stderr
    assert len(failing.stderr.strip().splitlines()) == 1, failing

    no_db = web.cli("verify", "--app", f"{APPS}:create_app_without_database")
    assert no_db.code == EXIT_USAGE, no_db
    message = no_db.stderr
    assert "no database: pass --database-url or set DATABASE_URL" in message
    assert "started the FastAPI app" in message
    assert "app.state" in message  # where it looked
    # ... and with --database-url it works
    web.cli("backends", "--app", f"{APPS}:create_fastapi_app")  # creates the table
    url = web.env["SQLO_WEB_DB"]
    given = web.cli("verify", "--app", f"{APPS}:create_app_without_database", "--database-url", url)
    assert given.code == EXIT_OK, given

    # a failed shutdown is reported, and changes nothing about the outcome
    late = web.cli("backends", "--app", f"{APPS}:create_app_failing_at_shutdown", "--json")
    assert late.code == EXIT_OK, late
    assert late.json()["database"]["ok"] is True  # the engine in app.state
    assert "warning: the shutdown of the FastAPI app" in late.stderr
    assert "RuntimeError: could not flush the metrics" in late.stderr

    wrong = web.cli("verify", "--app", f"{APPS}:not_an_app")
    assert wrong.code == EXIT_USAGE, wrong
    assert "not_an_app() returned a int" in wrong.stderr

    nothing = execute(
        [str(SCRIPT), "backends", "--app", "tests.e2e.cli_app"],
        {**web.env, "SQLO_CLI_BACKENDS": "{}"},
    )
    assert nothing.code == EXIT_USAGE, nothing
    assert "no backend is registered (imported tests.e2e.cli_app;" in nothing.stderr
