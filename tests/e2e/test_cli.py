"""The `sqlalchemy-obstore` command line, end to end: real subprocesses, real servers.

Every test runs the installed console script (or `python -m sqlalchemy_obstore`) in a
fresh process against SQLite or PostgreSQL (sync and async drivers) and a local-files,
S3 (moto) or memory backend, with `--app tests.e2e.cli_app`: a module that registers its
backends and declares its models from environment variables, as an application would.
The test process builds the same backends and models to create data and to check what
the command did to the database and the store.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import obstore
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from sqlalchemy_obstore import FileObject, ObstoreBackend, _multipart, collect_garbage, storages
from sqlalchemy_obstore.cli import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    parse_duration,
    run,
)
from sqlalchemy_obstore.gc import Progress, verify_references
from tests.conftest import PG_SERVER
from tests.e2e.cli_app import build_backends, make_models, sync_url
from tests.servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("sqlalchemy-obstore")
APP = "tests.e2e.cli_app"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass
class CliApp:
    """One application: its environment, and in-process twins of its backends and models."""

    tmp: Path
    url: str
    spec: dict[str, dict[str, Any]]
    table: str
    engine: Engine
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.backends = {b.key: b for b in build_backends(self.spec)}
        for backend in self.backends.values():
            storages.register_backend(backend, replace=True)
        self.Base, self.Document = make_models(self.table)
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.tmp),
            "PYTHONFAULTHANDLER": "1",
            "DATABASE_URL": self.url,
            "SQLO_CLI_BACKENDS": json.dumps(self.spec),
            "SQLO_CLI_TABLE": self.table,
        }
        if "PYTHONPATH" in os.environ:  # the code under test, in a checkout not installed
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]

    def run(self, *args: str, module: bool = False, **env: str) -> Result:
        command = [sys.executable, "-m", "sqlalchemy_obstore"] if module else [str(SCRIPT)]
        done = subprocess.run(
            [*command, *args, "--app", APP],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def add(self, count: int, *, pages: int = 1) -> list[int]:
        """Rows with a file and `pages` page files each; returns their ids."""
        with Session(self.engine) as session:
            rows = [
                self.Document(
                    title=f"doc {i}",
                    file=FileObject(filename=f"doc-{i}.txt", content=f"doc {i}".encode()),
                    pages=[
                        FileObject(filename=f"p{i}-{j}.txt", content=f"page {i}.{j}".encode())
                        for j in range(pages)
                    ],
                )
                for i in range(count)
            ]
            session.add_all(rows)
            session.commit()
            return [row.id for row in rows]

    def orphan(self, backend: str = "files") -> str:
        """An object uploaded whose row never committed (a crash after the upload)."""
        return FileObject(filename="lost.txt", content=b"lost bytes", backend=backend).save().path

    def objects(self, key: str = "files") -> set[str]:
        backend = self.backends[key]
        return {info.path for info in backend.list_objects(backend.prefix)}

    def referenced(self) -> dict[int, list[FileObject]]:
        with Session(self.engine) as session:
            return {
                doc.id: [doc.file, *doc.pages]
                for doc in session.scalars(select(self.Document).order_by(self.Document.id))
            }


DATABASES = {
    "sqlite": "sqlite:///{tmp}/app.db",
    "sqlite-async": "sqlite+aiosqlite:///{tmp}/app.db",
    "pg": "postgresql+psycopg://{pg}",
    "pg-async": "postgresql+asyncpg://{pg}",
}


@pytest.fixture
def make_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., CliApp]]:
    engines: list[Engine] = []

    def make(database: str, **stores: str) -> CliApp:
        pg = ""
        if database.startswith("pg"):
            pg = f"{PG_SERVER}/{request.getfixturevalue('pg_database')}"
        url = DATABASES[database].format(tmp=tmp_path, pg=pg)
        spec: dict[str, dict[str, Any]] = {}
        for key, kind in (stores or {"files": "local"}).items():
            spec[key] = store_spec(request, tmp_path / key, kind)
        engine = create_engine(sync_url(url))
        engines.append(engine)
        app = CliApp(tmp_path, url, spec, f"cli_docs_{uuid.uuid4().hex[:8]}", engine)
        app.Base.metadata.create_all(engine)
        return app

    yield make
    for engine in engines:
        engine.dispose()


def store_spec(request: pytest.FixtureRequest, directory: Path, kind: str) -> dict[str, Any]:
    if kind == "local":
        directory.mkdir(parents=True, exist_ok=True)
        return {"fs": str(directory), "prefix": "files"}
    if kind == "memory":
        return {"fs": "memory://", "prefix": "files"}
    if kind == "seaweed":  # checks signatures: the real credentials
        seaweed = request.getfixturevalue("seaweed_server")
        return {
            "fs": f"s3://{seaweed.create_bucket()}/",
            "prefix": "files",
            "endpoint": seaweed.endpoint,
            "access_key_id": seaweed.access_key_id,
            "secret_access_key": seaweed.secret_access_key,
            "region": seaweed.region,
        }
    moto = request.getfixturevalue("moto_server")
    return {
        "fs": f"s3://{moto.create_bucket()}/",
        "prefix": "files",
        "endpoint": moto.endpoint,
        "access_key_id": "AKIACLITEST",
        "secret_access_key": SECRET,  # moto accepts any; it must never be printed
        "region": moto.region,
        "virtual_hosted_style_request": False,
    }


SECRET = f"cli-secret-{uuid.uuid4().hex}"


def assert_no_secret(result: Result) -> None:
    assert SECRET not in result.stdout
    assert SECRET not in result.stderr


# -- gc -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("database", "store"),
    [("sqlite", "local"), ("sqlite-async", "s3"), ("pg", "s3"), ("pg-async", "local")],
)
def test_gc_reports_orphans_and_deletes_only_when_confirmed(
    make_app: Callable[..., CliApp], database: str, store: str
) -> None:
    app = make_app(database, files=store)
    app.add(2, pages=1)  # 4 referenced objects
    orphans = {app.orphan(), app.orphan()}
    referenced = app.objects() - orphans
    assert len(referenced) == 4

    # default grace period (24 h): the fresh orphans may belong to open transactions
    young = app.run("gc", "--json")
    assert young.code == EXIT_OK, young
    report = young.json()
    assert report["dry_run"] is True
    assert report["totals"] == {
        "scanned": 6,
        "referenced": 4,
        "too_young": 2,
        "orphaned": 0,
        "deleted": 0,
        "bytes_freed": 0,
        "incomplete_uploads": 0,
        "incomplete_uploads_stale": 0,
        "incomplete_uploads_aborted": 0,
    }
    # ... and says which ones it kept as too young
    assert set(report["backends"]["files"]["too_young_paths"]) == orphans
    assert report["unsafe_grace_period"] is False
    kept = app.run("gc")
    assert "Too young, kept" in kept.stdout
    assert all(f"files: {path}" in kept.stdout for path in orphans)

    dry = app.run("gc", "--grace-period", "0", "--json")
    assert dry.code == EXIT_OK, dry
    files = dry.json()["backends"]["files"]
    assert set(files["orphan_paths"]) == orphans
    assert (files["orphaned"], files["deleted"]) == (2, 0)
    assert app.objects() == referenced | orphans  # a dry run deletes nothing

    assert app.run("gc", "--grace-period", "0", "--fail-on-orphans").code == EXIT_PROBLEMS

    refused = app.run("gc", "--delete", "--grace-period", "0")
    assert refused.code == EXIT_USAGE, refused
    assert "--yes" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert app.objects() == referenced | orphans

    # A grace period under the safe floor deletes nothing without the loud override ...
    unsafe = app.run("gc", "--delete", "--yes", "--grace-period", "5m")
    assert unsafe.code == EXIT_USAGE, unsafe
    assert "--unsafe-grace-period" in unsafe.stderr
    assert "Traceback" not in unsafe.stderr
    assert app.objects() == referenced | orphans
    # ... and with it (nothing else writes here), it warns and deletes.
    deleted = app.run(
        "gc", "--delete", "--yes", "--grace-period", "0s", "--unsafe-grace-period", "--json"
    )
    assert deleted.code == EXIT_OK, deleted
    assert "WARNING: --unsafe-grace-period" in deleted.stderr
    document = deleted.json()
    assert document["unsafe_grace_period"] is True
    assert document["ok"] is True
    assert document["totals"]["deleted"] == 2
    assert document["totals"]["bytes_freed"] == 2 * len(b"lost bytes")
    assert app.objects() == referenced  # referenced objects survive; orphans are gone
    assert_no_secret(deleted)

    again = app.run("gc", "--grace-period", "0", "--fail-on-orphans")
    assert again.code == EXIT_OK, again
    assert "orphaned" in again.stdout  # the human table


@pytest.mark.parametrize("database", ["sqlite-async", "pg-async"])
def test_gc_on_a_memory_backend_seeded_by_the_app(
    make_app: Callable[..., CliApp], database: str
) -> None:
    # A memory store lives in one process: the app module seeds it (3 rows, 2 orphans).
    app = make_app(database, files="memory")
    seed = json.dumps({"rows": 3, "orphans": 2})
    dry = app.run("gc", "--grace-period", "0", "--json", SQLO_CLI_SEED=seed)
    assert dry.code == EXIT_OK, dry
    files = dry.json()["backends"]["files"]
    assert (files["scanned"], files["referenced"], files["orphaned"]) == (5, 3, 2)
    assert all(path.endswith(("/lost-0.txt", "/lost-1.txt")) for path in files["orphan_paths"])

    real = app.run(
        "gc",
        "--delete",
        "--yes",
        "--grace-period",
        "0",
        "--unsafe-grace-period",
        "--json",
        SQLO_CLI_SEED=seed,
    )
    assert real.code == EXIT_OK, real
    totals = real.json()["totals"]
    assert (totals["referenced"], totals["orphaned"], totals["deleted"]) == (3, 2, 2)


def test_gc_backend_filter_and_human_summary(make_app: Callable[..., CliApp]) -> None:
    app = make_app("sqlite", files="local", other="local")
    app.add(1)
    lost = app.orphan("other")
    only_files = app.run("gc", "--grace-period", "0", "--backend", "files", "--json")
    assert only_files.code == EXIT_OK, only_files
    assert set(only_files.json()["backends"]) == {"files"}
    both = app.run("gc", "--grace-period", "0", "--backend", "files", "--backend", "other")
    assert both.code == EXIT_OK, both
    assert f"other: {lost}" in both.stdout
    assert "delete them with --delete --yes" in both.stdout
    unknown = app.run("gc", "--backend", "nope")
    assert unknown.code == EXIT_USAGE
    assert "'nope' is not registered" in unknown.stderr


# -- verify -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("database", "store"), [("sqlite-async", "local"), ("pg", "local"), ("pg-async", "s3")]
)
def test_verify_finds_a_deleted_and_a_tampered_object(
    make_app: Callable[..., CliApp], database: str, store: str
) -> None:
    app = make_app(database, files=store)
    ids = app.add(3, pages=0)
    clean = app.run("verify", "--checksums", "--json")
    assert clean.code == EXIT_OK, clean
    assert clean.json()["checked"] == 3
    assert clean.json()["findings"] == []

    rows = app.referenced()
    missing, tampered = rows[ids[0]][0], rows[ids[1]][0]
    backend = app.backends["files"]
    backend.delete(missing.path)  # deleted by hand
    original = backend.get_bytes(tampered.path)
    obstore.put(backend.store, tampered.path, bytes(reversed(original)))  # same size

    sizes_only = app.run("verify", "--json")
    assert sizes_only.code == EXIT_PROBLEMS, sizes_only
    assert [(f["primary_key"], f["problem"]) for f in sizes_only.json()["findings"]] == [
        ([ids[0]], "missing")
    ]

    result = app.run("verify", "--checksums", "--json")
    assert result.code == EXIT_PROBLEMS, result
    document = result.json()
    assert document["ok"] is False
    assert document["exit_code"] == EXIT_PROBLEMS
    assert document["checked"] == 3
    found = {(f["primary_key"][0], f["problem"]) for f in document["findings"]}
    assert found == {(ids[0], "missing"), (ids[1], "checksum_mismatch")}
    for finding in document["findings"]:
        assert finding["table"] == app.table
        assert finding["column"] == "file"
        assert finding["backend"] == "files"
        assert finding["path"] in {missing.path, tampered.path}
    assert_no_secret(result)

    human = app.run("verify", "--checksums", module=True)
    assert human.code == EXIT_PROBLEMS, human
    assert "checksum_mismatch" in human.stdout
    assert "2 problem(s) found." in human.stdout


# -- migrate ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("database", "source", "destination"),
    [("sqlite-async", "local", "s3"), ("pg", "s3", "local"), ("pg-async", "local", "local")],
)
def test_migrate_end_to_end(
    make_app: Callable[..., CliApp], database: str, source: str, destination: str
) -> None:
    app = make_app(database, files=source, archive=destination)
    app.add(3, pages=2)
    before = {
        id_: [(f.path, f.get_content()) for f in files] for id_, files in app.referenced().items()
    }
    source_objects = app.objects("files")
    assert len(source_objects) == 9

    refused = app.run("migrate", "--from", "files", "--to", "archive")
    assert refused.code == EXIT_USAGE, refused
    assert "--yes" in refused.stderr

    dry = app.run("migrate", "--from", "files", "--to", "archive", "--dry-run", "--json")
    assert dry.code == EXIT_OK, dry
    assert dry.json()["dry_run"] is True
    assert dry.json()["rows_rewritten"] == 3
    assert app.objects("archive") == set()
    assert all(f.backend == "files" for files in app.referenced().values() for f in files)

    moved = app.run(
        "migrate", "--from", "files", "--to", "archive", "--yes", "--delete-source",
        "--concurrency", "4", "--json",
    )  # fmt: skip
    assert moved.code == EXIT_OK, moved
    report = moved.json()
    assert report["ok"] is True
    assert (report["rows_rewritten"], report["objects_copied"], report["rows_remaining"]) == (
        3,
        9,
        0,
    )
    assert report["objects_deleted"] == 9
    after = app.referenced()
    for id_, files in after.items():
        assert all(f.backend == "archive" for f in files)
        assert [(f.path, f.get_content()) for f in files] == before[id_]  # every byte equal
    assert app.objects("files") == set()
    assert app.objects("archive") == source_objects
    assert_no_secret(moved)

    again = app.run("migrate", "--from", "files", "--to", "archive", "--yes")
    assert again.code == EXIT_OK, again  # idempotent
    assert "rows rewritten" in again.stdout
    assert app.run("verify", "--checksums").code == EXIT_OK


@pytest.mark.parametrize("database", ["sqlite", "sqlite-async"])
def test_migrate_refuses_a_destination_outside_the_prefix_and_fails_old_rows_alone(
    make_app: Callable[..., CliApp], database: str
) -> None:
    app = make_app(database, files="local", archive="local")
    app.add(2)
    archive = app.backends["archive"]  # (its own directory: `list_objects()` sees it all)

    def state() -> dict[int, list[tuple[str | None, str | None]]]:
        return {i: [(f.backend, f.path) for f in fs] for i, fs in app.referenced().items()}

    before = state()
    # 1. the archive under another prefix: the copies would land outside it
    elsewhere = json.dumps({**app.spec, "archive": {**app.spec["archive"], "prefix": "media"}})
    for extra in (["--yes"], ["--dry-run"], ["--yes", "--delete-source", "--json"]):
        refused = app.run(
            "migrate", "--from", "files", "--to", "archive", *extra, SQLO_CLI_BACKENDS=elsewhere
        )
        assert refused.code == EXIT_USAGE, refused
        assert len(refused.stderr.strip().splitlines()) == 1, refused
        assert "Backend 'archive' (prefix 'media') cannot hold the paths" in refused.stderr
        assert "neither delete them nor collect them as garbage" in refused.stderr
        assert (
            "Give 'archive' the same prefix as 'files' ('files'), or a prefix that contains it."
            in refused.stderr
        )
        if "--json" in extra:
            assert refused.json()["exit_code"] == EXIT_USAGE
            assert "cannot hold the paths" in refused.json()["error"]
    assert {info.path for info in archive.list_objects()} == set()  # nothing copied
    assert state() == before  # no row flipped
    assert len(app.objects("files")) == 4  # nothing deleted

    # 2. the same prefix, and a row from before the source had its prefix: it fails alone
    unprefixed = ObstoreBackend("files-before", app.backends["files"].store)  # as it was then
    unprefixed.put("legacy/old.txt", b"old bytes")
    with Session(app.engine) as session:
        legacy = FileObject(backend="files", path="legacy/old.txt", size=9, filename="old.txt")
        session.add(app.Document(title="old", file=legacy))
        session.commit()
    result = app.run("migrate", "--from", "files", "--to", "archive", "--yes")
    assert result.code == EXIT_PROBLEMS, result
    assert "failed: " in result.stdout
    assert "legacy/old.txt: not migrated: the path lies outside the prefix 'files'" in (
        result.stdout
    )
    after = state()
    for id_, files in before.items():  # the other rows moved
        assert after[id_] == [("archive", path) for _, path in files]
    assert [files for id_, files in after.items() if id_ not in before] == [
        [("files", "legacy/old.txt")]
    ]
    assert not archive.exists("legacy/old.txt")
    assert {info.path for info in archive.list_objects()} == app.objects("archive")


# -- reprocess ----------------------------------------------------------------------------------
def png(size: tuple[int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (9, 99, 199)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("database", "store"), [("sqlite", "local"), ("pg-async", "s3")])
def test_reprocess_end_to_end(make_app: Callable[..., CliApp], database: str, store: str) -> None:
    app = make_app(database, files=store)
    with Session(app.engine) as session:  # stored before the column had an image policy
        for i, size in enumerate([(80, 40), (30, 60)]):
            file = FileObject(filename=f"p{i}.png", content=png(size))
            session.add(app.Document(title=f"photo {i}", file=file))
        session.add(app.Document(title="text", file=FileObject(filename="a.txt", content=b"a")))
        session.commit()
    policy = {"SQLO_CLI_RENDITIONS": json.dumps([["thumb", 16, 16]])}

    refused = app.run("reprocess", **policy)
    assert refused.code == EXIT_USAGE, refused
    assert "--yes" in refused.stderr
    no_policy = app.run("reprocess", "--dry-run")
    assert no_policy.code == EXIT_USAGE, no_policy
    assert "image policy" in no_policy.stderr

    dry = app.run("reprocess", "--dry-run", "--json", **policy)
    assert dry.code == EXIT_OK, dry
    assert (dry.json()["renditions_built"], dry.json()["facts_recorded"]) == (2, 2)
    assert all(not files[0].renditions for files in app.referenced().values())

    done = app.run(
        "reprocess", "--yes", "--json", "--batch-size", "1", "--column", f"{app.table}.file",
        **policy,
    )  # fmt: skip
    assert done.code == EXIT_OK, done
    report = done.json()
    assert (report["rows_updated"], report["renditions_built"], report["ok"]) == (2, 2, True)
    files = [files[0] for files in app.referenced().values()]
    assert [(f.width, f.height) for f in files] == [(80, 40), (30, 60), (None, None)]
    thumbs = [f.renditions["thumb"] for f in files[:2]]
    assert [(t.width, t.height) for t in thumbs] == [(16, 8), (8, 16)]
    assert [t.size for t in thumbs] == [len(t.get_content()) for t in thumbs]
    assert_no_secret(done)

    again = app.run("reprocess", "--yes", **policy)
    assert again.code == EXIT_OK, again
    assert "images up to date" in again.stdout
    assert app.run("verify", "--checksums").code == EXIT_OK


# -- backends -----------------------------------------------------------------------------------
def test_backends_lists_and_checks_every_backend(make_app: Callable[..., CliApp]) -> None:
    app = make_app("pg-async", files="local", cloud="s3")
    result = app.run("backends", "--json")
    assert result.code == EXIT_OK, result
    document = result.json()
    by_key = {b["key"]: b for b in document["backends"]}
    assert set(by_key) == {"files", "cloud"}
    assert all(b["ok"] and b["error"] is None for b in by_key.values())
    assert "s3" in by_key["cloud"]["description"]
    assert by_key["cloud"]["prefix"] == "files"
    assert document["database"]["ok"] is True
    assert_no_secret(result)

    human = app.run("backends", module=True)
    assert human.code == EXIT_OK, human
    assert "OK" in human.stdout
    assert "(database)" in human.stdout


@pytest.mark.parametrize("store", ["s3", "seaweed"])
def test_backends_check_reports_the_rule_that_aborts_incomplete_uploads(
    make_app: Callable[..., CliApp], request: pytest.FixtureRequest, store: str
) -> None:
    app = make_app("sqlite", files="local", cloud=store)
    plain = app.run("backends", "--json")
    assert plain.code == EXIT_OK, plain
    assert "incomplete_uploads_rule" not in plain.json()["backends"][0]  # only with --check

    missing = app.run("backends", "--check", "--json")
    assert missing.code == EXIT_PROBLEMS, missing
    rules = {b["key"]: b["incomplete_uploads_rule"] for b in missing.json()["backends"]}
    assert rules["cloud"]["state"] == "missing"
    assert rules["files"]["state"] == "not_needed"
    text = app.run("backends", "--check")
    assert text.code == EXIT_PROBLEMS
    assert "AbortIncompleteMultipartUpload" in text.stdout
    assert_no_secret(text)

    spec = app.spec["cloud"]
    server = request.getfixturevalue("moto_server" if store == "s3" else "seaweed_server")
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=spec["access_key_id"],
        aws_secret_access_key=spec["secret_access_key"],
        region_name=server.region,
    )
    bucket = spec["fs"][len("s3://") :].strip("/")
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "abort-incomplete-uploads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }
            ]
        },
    )
    ok = app.run("backends", "--check", "--json")
    assert ok.code == EXIT_OK, ok
    cloud = next(b for b in ok.json()["backends"] if b["key"] == "cloud")
    assert cloud["incomplete_uploads_rule"]["state"] == "set"
    assert cloud["incomplete_uploads_rule"]["days"] == 1


def test_gc_aborts_an_upload_cut_off_by_kill_9(make_app: Callable[..., CliApp]) -> None:
    app = make_app("pg-async", files="seaweed")
    app.add(1)
    backend = app.backends["files"]
    path = f"files/{uuid.uuid4().hex}/huge.bin"
    writer = subprocess.Popen(
        [
            sys.executable, "-m", "tests.integration.multipart_writer",
            json.dumps({"key": "files", **app.spec["files"]}), path,
        ],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "uploading"
    deadline = time.monotonic() + 30
    while not _multipart.list_incomplete_uploads(backend, backend.prefix):
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.05)
    writer.kill()  # SIGKILL: nothing in the process can abort the upload
    writer.wait(timeout=30)
    writer.stdout.close()

    young = app.run("gc", "--json")
    assert young.code == EXIT_OK, young
    uploads = young.json()["backends"]["files"]["incomplete_uploads"]
    assert (uploads["found"], uploads["too_young"], uploads["stale"]) == (1, 1, 0)
    assert uploads["too_young_paths"] == [path]

    dry = app.run("gc", "--grace-period", "0")  # a dry run: reports it as stale
    assert dry.code == EXIT_OK, dry
    assert "Incomplete multipart uploads:" in dry.stdout
    assert f"files: {path}" in dry.stdout
    assert app.run("gc", "--grace-period", "0", "--fail-on-orphans").code == EXIT_PROBLEMS
    assert len(_multipart.list_incomplete_uploads(backend, backend.prefix)) == 1

    real = app.run(
        "gc", "--delete", "--yes", "--grace-period", "0", "--unsafe-grace-period", "--json"
    )
    assert real.code == EXIT_OK, real
    assert real.json()["totals"]["incomplete_uploads_aborted"] == 1
    assert _multipart.list_incomplete_uploads(backend, backend.prefix) == []
    assert app.run("verify").code == EXIT_OK  # the rows were never touched


@pytest.mark.parametrize("database", ["sqlite", "sqlite-async"])
def test_an_unreachable_store_exits_3(make_app: Callable[..., CliApp], database: str) -> None:
    app = make_app(database, files="local", cloud="s3")
    app.spec["cloud"]["endpoint"] = f"http://127.0.0.1:{free_port()}"  # nothing listens
    app.spec["cloud"]["retry_config"] = {"max_retries": 1}  # fail fast (default: 10 retries)
    app.env["SQLO_CLI_BACKENDS"] = json.dumps(app.spec)
    result = app.run("backends")
    assert result.code == EXIT_UNAVAILABLE, result
    assert "FAIL" in result.stdout
    assert "1 check(s) failed." in result.stdout
    assert "Traceback" not in result.stderr
    document = app.run("backends", "--json").json()
    cloud = next(b for b in document["backends"] if b["key"] == "cloud")
    assert cloud["ok"] is False
    assert "list failed on backend 'cloud'" in cloud["error"]
    assert document["exit_code"] == EXIT_UNAVAILABLE

    gc = app.run("gc", "--backend", "cloud", "--json")
    assert gc.code == EXIT_UNAVAILABLE, gc
    assert "backend 'cloud' is not reachable" in gc.json()["error"]
    assert_no_secret(gc)


def test_an_unreachable_database_exits_3(make_app: Callable[..., CliApp]) -> None:
    app = make_app("sqlite", files="local")
    for url in (
        f"postgresql+asyncpg://user:hunter2pw@127.0.0.1:{free_port()}/nope",
        f"postgresql+psycopg://user:hunter2pw@127.0.0.1:{free_port()}/nope",
    ):
        result = app.run("verify", "--database-url", url)
        assert result.code == EXIT_UNAVAILABLE, result
        assert result.stderr.startswith("sqlalchemy-obstore: error: cannot reach the database")
        assert "hunter2pw" not in result.stderr + result.stdout
        assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_app_attribute_names_the_target(make_app: Callable[..., CliApp]) -> None:
    app = make_app("sqlite", files="local")
    app.add(2)
    # --app is repeatable; the same base reached twice (module scan and attribute) counts once
    for extra in ([], ["--app", f"{APP}:Base"], ["--app", f"{APP}:Base.metadata"]):
        result = app.run("verify", "--json", *extra)
        assert result.code == EXIT_OK, (extra, result)
        assert result.json()["checked"] == 4, extra


# -- usage errors and interruption --------------------------------------------------------------
def test_usage_errors_exit_2_with_one_line(make_app: Callable[..., CliApp], tmp_path: Path) -> None:
    app = make_app("sqlite", files="local")
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["frobnicate"], {}, "invalid choice"),
        (["gc", "--grace-period", "soon"], {}, "is not a duration"),
        (["gc", "--batch-size", "0"], {}, "must be at least 1"),
        (["gc", "--delete", "--dry-run"], {}, "not allowed with argument"),
        (["verify"], {"DATABASE_URL": ""}, "no database"),
        (["verify", "--database-url", "nonsense"], {}, "could not be parsed"),
        (["verify", "--database-url", "sqlite:///nowhere/missing.db"], {}, "does not exist"),
        (["migrate", "--from", "files", "--to", "nope", "--yes"], {}, "'nope' is not registered"),
        (["migrate", "--from", "files", "--to", "files", "--yes"], {}, "same backend"),
        (["verify", "--app", f"{APP}:Nope"], {}, "has no 'Nope'"),
        (["verify", "--app", f"{APP}:TABLE_ENV"], {}, "expected a MetaData"),
        (["verify", "--app", ":Base"], {}, "expected MODULE or MODULE:ATTRIBUTE"),
        (["verify", "--app", "tests.e2e.broken_module_xyz"], {}, "no module named"),
    ]
    for args, env, message in cases:
        result = app.run(*args, **env)
        assert result.code == EXIT_USAGE, (args, result)
        assert message in result.stderr, (args, result)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result)

    done = subprocess.run(
        [str(SCRIPT), "verify", "--app", "no_such_module_here", "--json"],
        cwd=tmp_path,
        env=app.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == EXIT_USAGE
    document = json.loads(done.stdout)  # --json: the error is a JSON document too
    assert document == {
        "command": "verify",
        "ok": False,
        "exit_code": EXIT_USAGE,
        "error": document["error"],
    }
    assert "no module named 'no_such_module_here'" in document["error"]

    # the app declares a table the database does not have
    missing = app.run("verify", SQLO_CLI_TABLE="not_created_table")
    assert missing.code == EXIT_USAGE, missing
    assert "not_created_table" in missing.stderr


@pytest.mark.parametrize("database", ["sqlite", "sqlite-async"])
def test_ctrl_c_exits_130_without_a_traceback(
    make_app: Callable[..., CliApp], database: str
) -> None:
    app = make_app(database, files="local")
    result = app.run("gc", SQLO_CLI_INTERRUPT="1")
    assert result.code == EXIT_INTERRUPTED, result
    assert result.stderr.strip() == "sqlalchemy-obstore: error: interrupted."


# -- clean exit and terminal output -------------------------------------------------------------
def test_twenty_consecutive_runs_against_s3_exit_cleanly(make_app: Callable[..., CliApp]) -> None:
    """obstore's async runtime can abort the interpreter at exit (SIGABRT, 134); never here."""
    app = make_app("sqlite-async", files="s3")
    ids = app.add(4, pages=1)
    app.backends["files"].delete(app.referenced()[ids[0]][1].path)  # one broken reference
    app.orphan()
    codes = []
    for i in range(20):
        if i % 2 == 0:
            result = app.run("gc", "--grace-period", "0", "--json")
            expected = EXIT_OK
            assert result.json()["totals"]["orphaned"] == 1, result
        else:
            result = app.run("verify", "--checksums", "--json")
            expected = EXIT_PROBLEMS
            assert len(result.json()["findings"]) == 1, result
        codes.append(result.code)
        assert result.code == expected, (i, result)
    assert codes == [EXIT_OK, EXIT_PROBLEMS] * 10


def test_progress_line_only_on_a_terminal(make_app: Callable[..., CliApp]) -> None:
    app = make_app("sqlite", files="local")
    app.add(3)
    plain = app.run("gc", "--grace-period", "0")
    assert plain.code == EXIT_OK
    assert plain.stderr == ""  # not a terminal: no progress line

    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [str(SCRIPT), "gc", "--grace-period", "0", "--app", APP],
            cwd=ROOT,
            env=app.env,
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=120,
            check=False,
        )
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    terminal = b"".join(chunks).decode()
    assert done.returncode == EXIT_OK
    assert "\rstaging: 3" in terminal  # the first batch (3 files); redraws are throttled
    assert "\rscanning files: 6" in terminal
    assert terminal.endswith("\r")  # the line is erased before the summary
    assert "\r" not in done.stdout
    assert "scanned" in done.stdout


def test_json_output_is_the_only_output(make_app: Callable[..., CliApp]) -> None:
    app = make_app("sqlite", files="local")
    app.add(1)
    result = app.run("verify", "--json", "--checksums", module=True)
    assert result.code == EXIT_OK
    assert result.stderr == ""
    assert result.json() == {
        "command": "verify",
        "ok": True,
        "exit_code": 0,
        "checksums": True,
        "checked": 2,
        "unverified": 0,
        "findings": [],
    }


# -- in-process pieces ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800),
     ("1h30m", 5400), ("1.5h", 5400), ("2w", 1209600)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "soon", "5 years", "-1h", "1h-"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["gc", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "--grace-period" in out
    assert "exit codes" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy_obstore import __version__

    assert run(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"sqlalchemy-obstore {__version__}"
    done = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, f"sqlalchemy-obstore {__version__}")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("gc", ["--batch-size N  rows per fetch, objects per listing page", "(default 1000)"]),
        ("verify", ["--batch-size N  rows per fetch (default 1000)"]),
        (
            "migrate",
            [
                "--from KEY", "the backend whose objects move (required)",
                "--to KEY", "the backend they move to",
                "--concurrency N  objects copied at once (default 8)",
                "--batch-size N   rows per batch; each batch is committed (default 500)",
            ],
        ),
    ],
)  # fmt: skip
def test_every_option_has_help_with_its_default(
    capsys: pytest.CaptureFixture[str], command: str, expected: list[str]
) -> None:
    assert run([command, "--help"]) == EXIT_OK
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for text in expected:
        assert " ".join(text.split()) in out, text


def test_gc_warns_when_it_manages_a_bucket_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backend without a prefix: gc would call every unreferenced object there an orphan."""
    url = f"sqlite:///{tmp_path / 'root.db'}"
    Base, _ = make_models("cli_documents")  # the table tests.e2e.cli_app declares
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    (tmp_path / "bucket").mkdir()
    storages.register_backend(ObstoreBackend("files", tmp_path / "bucket"), replace=True)
    args = ["gc", "--app", APP, "--database-url", url]
    assert run(args) == EXIT_OK
    err = capsys.readouterr().err
    assert "WARNING: backend 'files' has no prefix, so gc manages the whole root of" in err
    assert 'prefix="uploads"' in err
    assert run([*args, "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert "has no prefix" in json.loads(captured.out)["warnings"][0]
    assert "has no prefix" in captured.err

    # with a prefix (or on memory, which nothing else shares): no warning
    for backend in (
        ObstoreBackend("files", tmp_path / "bucket", prefix="files"),
        ObstoreBackend("files", "memory://"),
    ):
        storages.register_backend(backend, replace=True)
        assert run([*args, "--json"]) == EXIT_OK
        captured = capsys.readouterr()
        assert json.loads(captured.out)["warnings"] == []
        assert "WARNING" not in captured.err


def test_progress_callbacks_of_gc_and_verify(tmp_path: Path) -> None:
    Base, Document = make_models("progress_docs")
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    Base.metadata.create_all(engine)
    backend = ObstoreBackend("files", "memory://", prefix="files")
    storages.register_backend(backend)
    with Session(engine) as session:
        session.add_all(
            Document(title=str(i), file=FileObject(filename="a.txt", content=b"a"))
            for i in range(5)
        )
        session.commit()
    FileObject(filename="lost.txt", content=b"x", backend="files").save()
    updates: list[Progress] = []
    collect_garbage(engine, Base, grace_period=timedelta(0), batch_size=2, progress=updates.append)
    staging = [u.done for u in updates if u.phase == "staging"]
    scanning = [(u.done, u.backend) for u in updates if u.phase == "scanning"]
    assert staging == [2, 4, 5]
    assert scanning == [(2, "files"), (4, "files"), (6, "files")]
    checked: list[Progress] = []
    verify_references(engine, Base, progress=checked.append)
    assert [u.done for u in checked] == [1, 2, 3, 4, 5]
    assert {u.phase for u in checked} == {"verifying"}
    engine.dispose()
