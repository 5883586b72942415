"""Garbage collection at scale: a memory backend of N+N/100 objects, N rows in a database.

    python benchmarks/gc_scale.py                     # 1,000,000 rows (nox -s bench)
    python benchmarks/gc_scale.py --objects 20000     # CI size (nox -s bench-quick)
    python benchmarks/gc_scale.py --databases postgres

For each database (`--databases`, default `sqlite,postgres`) it builds a table of
`--objects` rows, each referencing one object: a SQLite file on disk (`executemany` of
prepared JSON documents) and a table in a private PostgreSQL database (`COPY`; the
server is `$SQLALCHEMY_OBSTORE_PG`, default `postgres@127.0.0.1:5432`, and the
database is dropped afterwards). Then it measures `collect_garbage` (sync; psycopg on
PostgreSQL) twice, each in a fresh process: a dry run and a real delete. Each process
fills a memory backend with the referenced objects plus 1% orphans (random keys, so
orphans are spread over every listing page, as in production), resets its peak-RSS
mark, and runs the collector with `grace_period=0`.

Reported per run: wall time, CPU time of the process (PostgreSQL's own is not in it),
objects scanned per second, that rate as a fraction of the rate of listing the store
alone, and peak RSS growth during the collection (Linux `VmHWM`, reset through
`/proc/self/clear_refs` after the fill, so the fill's own peak does not hide it). The
counts are checked exactly: every orphan found (dry run) or deleted (real run), every
referenced object kept.

A third fresh process per database lists the store alone (`backend.list_objects` of the
managed prefix): the rate the collector is compared with. obstore's `MemoryStore`
materialises a whole listing when its first page is asked for (S3, GCS and Azure list
page by page), so that process's peak RSS growth is the listing's; the difference is
the collector's own memory.

Writes `gc-scale-<stamp>.json` / `.md` and `gc-scale-latest.json` / `.md` to
`--out-dir` (default `benchmarks/results`, next to `run.py`'s output).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgdb

HERE = Path(__file__).resolve().parent
TABLE = "gc_bench_documents"
PAYLOAD = b"0123456789abcdef"  # 16 bytes per object: the test is about counts, not bytes
BACKEND = "bench"
PHASES = ("dry-run", "delete", "list-only")
PREFIX = "files"
DATABASES = ("sqlite", "postgres")


def object_path(i: int) -> str:
    """A deterministic, random-looking key (`<prefix>/<hex>/doc-<i>.bin`, as key layouts go)."""
    digest = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).hexdigest()
    return f"{PREFIX}/{digest}/doc-{i}.bin"


def orphan_count(rows: int, rate: float) -> int:
    return max(1, round(rows * rate))


def models() -> Any:
    from sqlalchemy import Column, Integer, MetaData, Table

    from sqlalchemy_obstore import StoredObject

    metadata = MetaData()
    Table(
        TABLE,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("file", StoredObject(BACKEND)),
    )
    return metadata


# --------------------------------------------------------------------------- database


def _documents(start: int, stop: int, stamp: str) -> Iterator[tuple[int, str]]:
    """(id, JSON document) of rows `start` to `stop - 1`, row i referencing object i."""
    for i in range(start, stop):
        yield (
            i + 1,
            json.dumps(
                {
                    "v": 1,
                    "backend": BACKEND,
                    "path": object_path(i),
                    "filename": f"doc-{i}.bin",
                    "content_type": "application/octet-stream",
                    "size": len(PAYLOAD),
                    "etag": None,
                    "version": None,
                    "checksum": None,
                    "last_modified": stamp,
                    "metadata": {},
                }
            ),
        )


def build_database(url: str, rows: int) -> float:
    """The table with `rows` rows, each referencing `object_path(i)`; seconds taken."""
    from sqlalchemy import create_engine

    started = time.perf_counter()
    engine = create_engine(url)
    models().create_all(engine)
    engine.dispose()
    stamp = dt.datetime.now(dt.timezone.utc).isoformat()
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            batch = 50_000
            for start in range(0, rows, batch):
                documents = list(_documents(start, min(start + batch, rows), stamp))
                connection.executemany(f"INSERT INTO {TABLE} (id, file) VALUES (?, ?)", documents)
                connection.commit()
            connection.execute("PRAGMA journal_mode=DELETE")
        finally:
            connection.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY {TABLE} (id, file) FROM STDIN") as copy,
            ):
                for row in _documents(0, rows, stamp):
                    copy.write_row(row)
            conn.execute(f"ANALYZE {TABLE}")
    return time.perf_counter() - started


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str | None]:
    """A SQLAlchemy (sync) URL of an empty database of `kind`; None when unavailable."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'gc.db'}"
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("! PostgreSQL skipped: psycopg is not installed", file=sys.stderr)
        yield None
        return
    with pgdb.private_database("sqlo_gc_bench") as name:
        yield None if name is None else pgdb.url("psycopg", name)


# --------------------------------------------------------------------------- one run (child)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(args: argparse.Namespace) -> dict[str, Any]:
    from datetime import timedelta

    import obstore
    from sqlalchemy import create_engine

    from sqlalchemy_obstore import ObstoreBackend, collect_garbage, storages

    rows, orphans = args.objects, orphan_count(args.objects, args.orphan_rate)
    backend = ObstoreBackend(BACKEND, "memory://", prefix=PREFIX)
    storages.register_backend(backend)
    metadata = models()
    engine = create_engine(args.db)

    started = time.perf_counter()
    store = backend.store
    for i in range(rows + orphans):  # rows reference 0..rows-1; the rest are orphans
        obstore.put(store, object_path(i), PAYLOAD)
    fill = time.perf_counter() - started
    time.sleep(0.01)  # every object strictly older than the scan start (grace period 0)

    gc.collect()
    reset = _reset_peak()
    baseline = _status("VmRSS") if reset else _status("VmHWM")
    cpu, started = time.process_time(), time.perf_counter()
    if args.phase == "list-only":
        listed = sum(1 for _ in backend.list_objects(backend.prefix))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        return {
            "phase": args.phase,
            "rows": rows,
            "objects": rows + orphans,
            "expected_orphans": orphans,
            "fill_seconds": round(fill, 2),
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "objects_per_second": round(listed / wall, 1),
            "peak_rss_growth_bytes": _status("VmHWM") - baseline,
            "peak_reset": reset,
            "rss_after_fill_bytes": baseline,
            "scanned": listed,
        }
    report = collect_garbage(
        engine,
        metadata,
        grace_period=timedelta(0),
        allow_unsafe_grace_period=True,  # no application writes during the benchmark
        dry_run=args.phase == "dry-run",
        batch_size=args.batch_size,
        report_limit=10,
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    growth = _status("VmHWM") - baseline
    remaining = sum(len(page) for page in obstore.list(store, PREFIX, chunk_size=10_000))
    engine.dispose()
    return {
        "phase": args.phase,
        "rows": rows,
        "objects": rows + orphans,
        "expected_orphans": orphans,
        "fill_seconds": round(fill, 2),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "objects_per_second": round(report.scanned / wall, 1),
        "peak_rss_growth_bytes": growth,
        "peak_reset": reset,
        "rss_after_fill_bytes": baseline,
        "scanned": report.scanned,
        "referenced": report.referenced,
        "too_young": report.too_young,
        "orphaned": report.orphaned,
        "deleted": report.deleted,
        "bytes_freed": report.bytes_freed,
        "references": report.references,
        "errors": report.all_errors,
        "objects_left": remaining,
    }


def check(result: dict[str, Any]) -> list[str]:
    """What is wrong with a measurement's counts (empty when exactly right)."""
    rows, orphans, phase = result["rows"], result["expected_orphans"], result["phase"]
    if phase == "list-only":
        ok = result["scanned"] == rows + orphans
        return [] if ok else [f"list-only: listed {result['scanned']}, expected {rows + orphans}"]
    expected = {
        "scanned": rows + orphans,
        "references": rows,
        "referenced": rows,
        "too_young": 0,
        "orphaned": orphans,
        "deleted": 0 if phase == "dry-run" else orphans,
        "bytes_freed": 0 if phase == "dry-run" else orphans * len(PAYLOAD),
        "objects_left": rows + orphans if phase == "dry-run" else rows,
        "errors": [],
    }
    return [
        f"{phase}: {name} is {result[name]!r}, expected {value!r}"
        for name, value in expected.items()
        if result[name] != value
    ]


# --------------------------------------------------------------------------- driver


def run_child(args: argparse.Namespace, db: str, phase: str) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--phase", phase]
    argv += ["--db", db, "--objects", str(args.objects)]
    argv += ["--orphan-rate", str(args.orphan_rate), "--batch-size", str(args.batch_size)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=4 * 3600)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} run exited {done.returncode}:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    import sqlalchemy

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "obstore": version("obstore"),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlalchemy_obstore": version("sqlalchemy-obstore"),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "rows": args.objects,
        "orphan_rate": args.orphan_rate,
        "batch_size": args.batch_size,
    }


MIB = 1024 * 1024


def _postgres_version(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()
    return f"PostgreSQL {version.split()[0]}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def markdown(env: dict[str, Any], results: list[dict[str, Any]]) -> str:
    first = results[0]
    lines = [
        f"GC over {env['rows']:,} rows and {first['objects']:,} memory-backend objects "
        f"({first['expected_orphans']:,} orphans), batch size {env['batch_size']}; "
        f"Python {env['python']}, obstore {env['obstore']}, SQLAlchemy {env['sqlalchemy']}, "
        f"SQLite {env['sqlite']}, {env.get('postgres') or 'PostgreSQL not measured'}, "
        f"{env['cpus']} CPUs; {env['date']}. "
        + " ".join(f"{db} table built in {s:.1f} s." for db, s in env["build_seconds"].items()),
        "",
        "| database | run | wall time | CPU time | objects/s | ÷ listing rate "
        "| peak RSS growth | of which the collector's own | scanned | orphaned | deleted "
        "| counts |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for db in env["build_seconds"]:
        runs = [r for r in results if r["database"] == db]
        listing = next((r for r in runs if r["phase"] == "list-only"), None)
        for r in runs:
            growth = r["peak_rss_growth_bytes"]
            own = share = "-"
            if listing is not None and r is not listing:
                own = f"{(growth - listing['peak_rss_growth_bytes']) / MIB:,.1f} MiB"
                share = f"{r['objects_per_second'] / listing['objects_per_second']:.2f}"
            name = (
                "listing the memory store alone"
                if r is listing
                else f"collect_garbage, {r['phase']}"
            )
            lines.append(
                f"| {db} | {name} | {r['wall_seconds']:,.1f} s | {r['cpu_seconds']:,.1f} s "
                f"| {r['objects_per_second']:,.0f} | {share} "
                f"| {growth / MIB:,.1f} MiB | {own} | {r['scanned']:,} "
                f"| {_count(r.get('orphaned'))} | {_count(r.get('deleted'))} "
                f"| {'exact' if not check(r) else 'WRONG'} |"
            )
    return "\n".join(lines) + "\n"


def write(out_dir: Path, env: dict[str, Any], results: list[dict[str, Any]], text: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = env["date"].replace(":", "").replace("+0000", "Z")
    payload = json.dumps({"environment": env, "results": results}, indent=2)
    for name in (f"gc-scale-{stamp}", "gc-scale-latest"):
        (out_dir / f"{name}.json").write_text(payload + "\n")
        (out_dir / f"{name}.md").write_text(text)
    print(f"wrote {out_dir / 'gc-scale-latest.json'} and .md", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--objects", type=int, default=1_000_000, help="rows (default 1,000,000)")
    p.add_argument("--orphan-rate", type=float, default=0.01, help="orphans per row (0.01)")
    p.add_argument("--batch-size", type=int, default=1000, help="collect_garbage batch_size")
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    p.add_argument(
        "--databases",
        default=",".join(DATABASES),
        help="where the rows live: sqlite, postgres (default both)",
    )
    p.add_argument("--quick", action="store_true", help="CI size: --objects 20000")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:  # the CI size; an explicit --objects still wins
        p.set_defaults(objects=20_000)
        args = p.parse_args(argv)
    args.database_names = [d.strip() for d in args.databases.split(",") if d.strip()]
    unknown = set(args.database_names) - set(DATABASES)
    if unknown:
        p.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    env = environment(args)
    env["build_seconds"] = {}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sqlalchemy-obstore-gc-bench-") as work:
        for kind in args.database_names:
            with database(kind, Path(work)) as url:
                if url is None:
                    continue
                if kind == "postgres":
                    env["postgres"] = _postgres_version(url)
                print(f"building {args.objects:,} rows in {kind} ...", file=sys.stderr, flush=True)
                env["build_seconds"][kind] = build_database(url, args.objects)
                for phase in PHASES:
                    print(f"  {kind}: {phase} (fresh process) ...", file=sys.stderr, flush=True)
                    results.append({"database": kind, **run_child(args, url, phase)})
    if not results:
        print("! no database to measure", file=sys.stderr)
        return 1
    text = markdown(env, results)
    print(text)
    write(args.out_dir, env, results, text)
    problems = [p for r in results for p in check(r)]
    for problem in problems:
        print(f"! {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
