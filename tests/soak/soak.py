"""Reliability soak: concurrent AsyncSessions on PostgreSQL + SeaweedFS, under faults.

    python -m tests.soak.soak --duration 300          # `nox -s soak` runs the full one
    python -m tests.soak.soak --duration 12 --workers 2 --sessions 3 --json out.json

A coordinator starts its own SeaweedFS (S3 with signature checks), creates a private
PostgreSQL database, puts a protocol-aware proxy (`tests/pg_proxy.py`) between the
workers and PostgreSQL, and starts worker *processes*. Each worker runs `--sessions`
concurrent `AsyncSession`s (asyncpg), each a loop of transactions drawn at random:
insert a row with files, replace a row's file, append to its list, delete a row, a
transaction rolled back at the end, and a SAVEPOINT rolled back inside a committed
transaction. Some uploads are large enough to go multipart.

Meanwhile the coordinator injects the faults the consistency model must survive:

- **worker kills**: `kill -9` of a random worker (restarted at once);
- **S3 outages**: SeaweedFS frozen with SIGSTOP for `--freeze-for` seconds, then SIGCONT;
- **connection drops**: every connection cut by the proxy, or `pg_terminate_backend`;
- **lost COMMIT replies**: the proxy loses the reply to a COMMIT the server committed,
  with probability `--lost-reply` (the outcome is unknown to the session).

Then the faults stop, the workers finish their transaction and exit, and the
coordinator checks what is left: dangling references (a committed row whose object is
missing or of another size: must be 0, also checked by `verify_references`), orphans
before and after the garbage collector (`collect_garbage`, run with no grace period
since every writer has stopped), incomplete multipart uploads under the prefix (listed
with S3's ListMultipartUploads), and the p50/p99 commit latency. It prints a report
(and writes it as JSON with `--json`); the exit status is 1 if a reference dangles.

Workers append one JSON line per transaction to their own file (a killed worker loses
nothing it had written).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import String, create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    StorageError,
    StoredObject,
    collect_garbage,
    storages,
    verify_references,
)
from sqlalchemy_obstore._multipart import list_incomplete_uploads

KEY = "soak"
PG_SERVER = os.environ.get("SQLALCHEMY_OBSTORE_PG", "postgres@127.0.0.1:5432")
MiB = 1024 * 1024
LARGE = 6 * MiB  # above the 5 MiB part size: a multipart upload
_BLOCK = random.Random(0).randbytes(LARGE)


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "soak_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    file: Mapped[FileObject | None] = mapped_column(StoredObject(KEY))
    pages: Mapped[list[FileObject]] = mapped_column(StoredObject(KEY, multiple=True), default=list)


# -- configuration shared by the coordinator and the workers ---------------------------------
@dataclass
class Setup:
    database_url: str  # direct (psycopg)
    proxied_url: str  # through the proxy (asyncpg)
    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    prefix: str
    large_fraction: float


def backend(setup: Setup) -> ObstoreBackend:
    return ObstoreBackend(
        KEY,
        f"s3://{setup.bucket}/",
        prefix=setup.prefix,
        endpoint=setup.endpoint,
        access_key_id=setup.access_key_id,
        secret_access_key=setup.secret_access_key,
        region="us-east-1",
        virtual_hosted_style_request=False,
        # a frozen S3 fails requests after this instead of stalling commits for 30 s
        client_options={"timeout": "10s", "connect_timeout": "2s"},
    )


# -- the worker: N AsyncSessions, each a loop of random transactions ----------------------------
OPERATIONS = {
    "insert": 30,
    "replace": 20,
    "append": 20,
    "delete": 10,
    "rollback": 10,
    "savepoint_rollback": 10,
}


def content(rng: random.Random, setup: Setup) -> FileObject:
    if rng.random() < setup.large_fraction:
        start = rng.randrange(0, 1024)
        data = _BLOCK[start:] + _BLOCK[:start]
    else:
        data = rng.randbytes(rng.randrange(1, 64 * 1024))
    return FileObject(filename=f"f{rng.randrange(10**9)}.bin", content=data)


async def random_row(session: AsyncSession) -> Doc | None:
    statement = select(Doc).order_by(func.random()).limit(1).with_for_update(skip_locked=True)
    return (await session.scalars(statement)).first()


async def transaction(session: AsyncSession, op: str, rng: random.Random, setup: Setup) -> str:
    """Run one transaction of kind `op`; returns "commit" or "rollback" (what it ended with)."""
    if op == "insert":
        session.add(
            Doc(
                name=uuid.uuid4().hex,
                file=content(rng, setup),
                pages=[content(rng, setup) for _ in range(rng.randrange(0, 3))],
            )
        )
    elif op in ("replace", "append", "delete", "savepoint_rollback", "rollback"):
        row = await random_row(session)
        if row is None:
            session.add(Doc(name=uuid.uuid4().hex, file=content(rng, setup)))
        elif op == "replace":
            row.file = content(rng, setup)
        elif op == "append":
            row.pages.append(content(rng, setup))
        elif op == "delete":
            await session.delete(row)
        elif op == "rollback":
            row.file = content(rng, setup)
            row.pages.append(content(rng, setup))
            await session.flush()
            return "rollback"
        else:  # savepoint_rollback: a SAVEPOINT rolled back inside a committed transaction
            savepoint = await session.begin_nested()
            row.file = content(rng, setup)
            await session.flush()
            await savepoint.rollback()
            await session.refresh(row)  # the SAVEPOINT rollback expired it
            row.pages.append(content(rng, setup))
    return "commit"


async def session_loop(
    engine: AsyncEngine, setup: Setup, seed: int, stop: asyncio.Event, log: Any
) -> None:
    rng = random.Random(seed)
    names, weights = zip(*OPERATIONS.items(), strict=True)
    while not stop.is_set():
        op = rng.choices(names, weights)[0]
        record: dict[str, Any] = {"op": op}
        async with AsyncSession(engine, expire_on_commit=False) as session:
            try:
                ending = await transaction(session, op, rng, setup)
                if ending == "rollback":
                    await session.rollback()
                    record["outcome"] = "rolled back"
                else:
                    start = time.perf_counter()
                    await session.commit()
                    record["latency"] = time.perf_counter() - start
                    record["outcome"] = "committed"
            except Exception as exc:
                record["outcome"] = _failure(exc)
                with contextlib.suppress(Exception):
                    await session.rollback()
        log.write(json.dumps(record) + "\n")
        log.flush()


def _failure(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "failed: connection lost"
    if isinstance(exc, StorageError):
        return f"failed: storage ({type(exc).__name__})"
    return f"failed: {type(exc).__name__}"


async def worker(setup: Setup, sessions: int, seed: int, log_path: Path) -> None:
    storages.register_backend(backend(setup))
    engine = create_async_engine(
        setup.proxied_url, pool_size=sessions, max_overflow=sessions, pool_pre_ping=True
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with log_path.open("a") as log:
        await asyncio.gather(
            *(session_loop(engine, setup, seed * 1000 + n, stop, log) for n in range(sessions))
        )
    await engine.dispose()


# -- the coordinator ----------------------------------------------------------------------------
@dataclass
class Report:
    duration: float = 0.0
    workers: int = 0
    sessions_per_worker: int = 0
    operations: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    commits_ok: int = 0
    commits_failed: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    references: int = 0
    dangling: int = 0
    verify_findings: int = 0
    objects: int = 0
    orphans_before_gc: int = 0
    gc_deleted: int = 0
    orphans_after_gc: int = 0
    incomplete_multipart_uploads: int = 0
    incomplete_after_gc: int = 0
    commit_latency_p50_ms: float = 0.0
    commit_latency_p99_ms: float = 0.0

    def lines(self) -> list[str]:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.operations.items()))
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        return [
            f"soak: {self.duration:.0f} s, {self.workers} worker processes x "
            f"{self.sessions_per_worker} AsyncSessions (PostgreSQL + SeaweedFS)",
            f"operations ({sum(self.operations.values())}): {ops}",
            f"outcomes: {outcomes}",
            f"commits ok: {self.commits_ok}, commits failed: {self.commits_failed}",
            f"faults: {faults}",
            f"rows: {self.rows}, references: {self.references}, objects: {self.objects}",
            f"dangling references: {self.dangling} (verify_references findings: "
            f"{self.verify_findings})",
            f"orphans before gc: {self.orphans_before_gc}, deleted by gc: {self.gc_deleted}, "
            f"orphans after gc: {self.orphans_after_gc}",
            f"incomplete multipart uploads: {self.incomplete_multipart_uploads} before gc, "
            f"{self.incomplete_after_gc} after",
            f"commit latency: p50 {self.commit_latency_p50_ms:.1f} ms, "
            f"p99 {self.commit_latency_p99_ms:.1f} ms",
        ]


def _process_group_of_port(port: int) -> int:
    """The process group of the server listening with `-s3.port=<port>` (SeaweedFS)."""
    flag = f"-s3.port={port}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if flag in cmdline:
            return os.getpgid(int(pid))
    raise RuntimeError(f"no SeaweedFS process found for S3 port {port}")


class Workers:
    """The worker processes; each incarnation logs to its own file."""

    def __init__(self, setup: Setup, count: int, sessions: int, logs: Path) -> None:
        self.setup, self.sessions, self.logs = setup, sessions, logs
        self.incarnations = 0
        self.processes = [self._start() for _ in range(count)]

    def _start(self) -> subprocess.Popen[bytes]:
        self.incarnations += 1
        log = self.logs / f"worker-{self.incarnations}.jsonl"
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.soak.soak",
                "--worker",
                json.dumps(asdict(self.setup)),
                "--sessions",
                str(self.sessions),
                "--seed",
                str(self.incarnations),
                "--log",
                str(log),
            ],
            stderr=(self.logs / f"worker-{self.incarnations}.err").open("wb"),
        )

    def kill_one(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.processes))
        victim = self.processes[index]
        victim.kill()  # SIGKILL: no cleanup of any kind
        victim.wait()
        self.processes[index] = self._start()

    def stop(self, timeout: float = 60) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def records(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.logs.glob("worker-*.jsonl")):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a line cut by kill -9
                    found.append(json.loads(line))
        return found


def _create_database() -> tuple[Engine, str]:
    admin = create_engine(
        f"postgresql+psycopg://{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"sqlo_soak_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return admin, name


def run(args: argparse.Namespace) -> Report:
    from tests.pg_proxy import PgProxy
    from tests.servers import run_seaweed

    rng = random.Random(args.seed)
    report = Report(workers=args.workers, sessions_per_worker=args.sessions)
    faults: Counter[str] = Counter()
    admin, database = _create_database()
    url = f"postgresql+psycopg://{PG_SERVER}/{database}"
    check = create_engine(url)
    try:
        with (
            run_seaweed() as server,
            PgProxy(make_url(url).host or "127.0.0.1", make_url(url).port or 5432) as proxy,
            tempfile.TemporaryDirectory(prefix="sqlalchemy-obstore-soak-") as tmp,
        ):
            Base.metadata.create_all(check)
            setup = Setup(
                database_url=url,
                proxied_url=proxy.url(url.replace("+psycopg", "+asyncpg", 1)),
                endpoint=server.endpoint,
                bucket=server.bucket,
                access_key_id=server.access_key_id,
                secret_access_key=server.secret_access_key,
                prefix=f"soak-{uuid.uuid4().hex[:8]}",
                large_fraction=args.large_fraction,
            )
            s3_group = _process_group_of_port(int(server.endpoint.rsplit(":", 1)[1]))
            proxy.lose_commit_replies_randomly(args.lost_reply, seed=args.seed)
            workers = Workers(setup, args.workers, args.sessions, Path(tmp))
            started = time.monotonic()
            schedule = {
                "kill": args.kill_every,
                "freeze": args.freeze_every,
                "drop": args.drop_every,
            }
            due = {kind: started + every * (0.5 + rng.random()) for kind, every in schedule.items()}
            try:
                while time.monotonic() - started < args.duration:
                    now = time.monotonic()
                    for kind, when in due.items():
                        if now < when or not schedule[kind]:
                            continue
                        if kind == "kill":
                            workers.kill_one(rng)
                            faults["worker kill -9"] += 1
                        elif kind == "freeze":
                            os.killpg(s3_group, signal.SIGSTOP)
                            try:
                                time.sleep(args.freeze_for)
                            finally:
                                os.killpg(s3_group, signal.SIGCONT)
                            faults["S3 frozen (SIGSTOP)"] += 1
                        elif rng.random() < 0.5:
                            faults["connections cut (proxy)"] += proxy.drop_all()
                        else:
                            with check.connect() as conn:
                                faults["backends terminated (pg_terminate_backend)"] += len(
                                    conn.execute(
                                        text(
                                            "SELECT pg_terminate_backend(pid) FROM "
                                            "pg_stat_activity WHERE datname = :db AND "
                                            "pid <> pg_backend_pid()"
                                        ),
                                        {"db": database},
                                    ).all()
                                )
                        due[kind] = time.monotonic() + schedule[kind] * (0.5 + rng.random())
                    time.sleep(0.05)
            finally:
                proxy.disarm()
                workers.stop()
            report.duration = time.monotonic() - started
            faults["COMMIT replies lost (proxy)"] = proxy.replies_lost
            report.faults = dict(faults)
            _tally(report, workers.records())
            _check(report, check, setup, server)
    finally:
        check.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
    return report


def _tally(report: Report, records: list[dict[str, Any]]) -> None:
    report.operations = dict(Counter(r["op"] for r in records))
    report.outcomes = dict(Counter(r["outcome"] for r in records))
    report.commits_ok = report.outcomes.get("committed", 0)
    report.commits_failed = sum(v for k, v in report.outcomes.items() if k.startswith("failed"))
    latencies = sorted(r["latency"] for r in records if "latency" in r)
    if latencies:
        report.commit_latency_p50_ms = statistics.median(latencies) * 1000
        report.commit_latency_p99_ms = (
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        )


def _check(report: Report, check: Engine, setup: Setup, server: Any) -> None:
    registry_backend = backend(setup)
    storages.register_backend(registry_backend, replace=True)
    stored = {o.path: o.size for o in registry_backend.list_objects(registry_backend.prefix)}
    references: dict[str, int | None] = {}
    with check.connect() as conn:
        rows = conn.execute(select(Doc.__table__.c.file, Doc.__table__.c.pages)).all()
    for file, pages in rows:
        for value in [file, *(pages or [])]:
            if value is not None and value.path is not None:
                references[value.path] = value.size
    report.rows = len(rows)
    report.references = len(references)
    report.objects = len(stored)
    report.dangling = sum(1 for p, size in references.items() if stored.get(p) != size)
    report.verify_findings = len(verify_references(check, Base).findings)
    report.orphans_before_gc = len(stored.keys() - references.keys())
    report.incomplete_multipart_uploads = len(
        list_incomplete_uploads(registry_backend, registry_backend.prefix)
    )
    # every writer has stopped: nothing is in flight, so no grace period is needed
    garbage = collect_garbage(
        check, Base, grace_period=timedelta(0), dry_run=False, allow_unsafe_grace_period=True
    )
    report.incomplete_after_gc = len(
        list_incomplete_uploads(registry_backend, registry_backend.prefix)
    )
    report.gc_deleted = sum(b.deleted for b in garbage.backends.values())
    left = {o.path for o in registry_backend.list_objects(registry_backend.prefix)}
    report.orphans_after_gc = len(left - references.keys())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--sessions", type=int, default=6, help="AsyncSessions per worker")
    parser.add_argument("--kill-every", type=float, default=20.0, help="mean s between kills")
    parser.add_argument(
        "--freeze-every", type=float, default=30.0, help="mean s between S3 freezes"
    )
    parser.add_argument(
        "--freeze-for",
        type=float,
        default=12.0,
        help="seconds S3 stays frozen (the default outlasts the workers' 10 s request timeout)",
    )
    parser.add_argument("--drop-every", type=float, default=15.0, help="mean s between drops")
    parser.add_argument("--lost-reply", type=float, default=0.02, help="P(COMMIT reply lost)")
    parser.add_argument("--large-fraction", type=float, default=0.03, help="multipart uploads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(worker(Setup(**json.loads(args.worker)), args.sessions, args.seed, args.log))
        return 0
    report = run(args)
    for line in report.lines():
        print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 1 if report.dangling or report.verify_findings else 0


if __name__ == "__main__":
    sys.exit(main())
