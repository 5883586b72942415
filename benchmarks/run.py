"""Benchmark runner: sqlalchemy-obstore against raw obstore doing the same work.

When advanced-alchemy is installed, its file objects do the same work too (the "aa"
columns); large-object cases have no peer.

    python benchmarks/run.py            # full size (nox -s bench)
    python benchmarks/run.py --quick    # CI size (nox -s bench-quick)
    python benchmarks/run.py --cases sign,orm --rounds 9

Every small case runs in a fresh interpreter; so does every large-object transfer.
Prints Markdown tables and writes `bench-<stamp>.json` / `.md` plus `latest.json` /
`latest.md` to `--out-dir`. See docs/performance.md for what every case measures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import obstore
import pgdb
import report
import sqlalchemy
from cases import PEER_VERSION, Context, Result, SkipCase, all_cases
from obstore.store import LocalStore, S3Store
from timing import rotation

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1024 * 1024
LARGE_OPS = ("path", "stream", "aiter", "download")
LARGE_IMPLS = ("ours", "raw", "equal")
SERVERS = ("moto", "seaweed")
#: What `--quick` changes (the CI size: it checks the harness, its numbers are rough).
QUICK: dict[str, Any] = {
    "n": 200,
    "fast_n": 2000,
    "rounds": 3,
    "orm_sizes": "100",
    "orm_rows": 200,
    "select_reads": 2000,
    "servers": "seaweed",
    "large_sizes": "16",
    "large_rounds": 1,
    "large_targets": "seaweed",
}


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _sizes(value: str) -> list[int]:
    return [int(v) for v in _names(value) if int(v) > 0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="ops per round, slower cases (1000)")
    p.add_argument(
        "--fast-n",
        type=int,
        default=10_000,
        help="ops per round, cases under 10 us per op: memory saves, signing (10000)",
    )
    p.add_argument("--rounds", type=int, default=7, help="timed rounds after a warm-up (7)")
    p.add_argument(
        "--orm-sizes",
        default="100,1000,10000",
        help="rows per commit of the ORM insert cases (100,1000,10000)",
    )
    p.add_argument(
        "--orm-rows",
        type=int,
        default=1000,
        help="ORM rows per round at least: smaller sizes commit several times (1000)",
    )
    p.add_argument("--select-n", type=int, default=1000, help="rows per SELECT (1000)")
    p.add_argument(
        "--select-reads",
        type=int,
        default=10_000,
        help="rows read per round at least: repeated SELECTs of --select-n rows (10000)",
    )
    p.add_argument(
        "--servers",
        default="moto,seaweed",
        help="S3 servers to start for the save/ORM cases (moto,seaweed; '' for none)",
    )
    p.add_argument("--no-s3", action="store_true", help="start no S3 server (= --servers '')")
    p.add_argument(
        "--large-sizes",
        default="64,256,1024",
        help="large-object sizes in MiB ('' or 0 to skip; default 64,256,1024)",
    )
    p.add_argument(
        "--large-rounds",
        type=int,
        default=3,
        help="fresh processes per implementation, operation and size (3)",
    )
    p.add_argument(
        "--large-targets",
        default="seaweed,moto",
        help="where large objects go: seaweed, moto, local (default seaweed,moto)",
    )
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI size (checks the harness; its numbers are rough): --n 200 --fast-n 2000 "
        "--rounds 3 --orm-sizes 100 --orm-rows 200 --select-reads 2000 --servers seaweed "
        "--large-sizes 16 --large-rounds 1 --large-targets seaweed (options given "
        "explicitly still win)",
    )
    p.add_argument(
        "--cases",
        default="",
        help="comma-separated substrings; run only cases whose name contains one "
        "(e.g. 'sign,save/memory,large')",
    )
    p.add_argument(
        "--same-process",
        action="store_true",
        help="run the small cases one after another in this process (default: each case "
        "in a fresh process, so no case inherits the heap and garbage of the ones before)",
    )
    # internal: run one small case in this process and print its result (see _case_child)
    p.add_argument("--child-case", help=argparse.SUPPRESS)
    p.add_argument("--child-context", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:  # the CI size; options given explicitly still win
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    if args.no_s3:
        args.servers = ""
    args.server_names = [s for s in _names(args.servers) if s in SERVERS]
    args.sizes = _sizes(args.large_sizes)
    args.targets = _names(args.large_targets)
    args.filters = _names(args.cases)
    return args


def selected(name: str, filters: list[str]) -> bool:
    return not filters or any(f in name for f in filters)


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def s3_servers(names: list[str]) -> Iterator[dict[str, dict[str, Any]]]:
    """S3Store kwargs of each named server, started on free 127.0.0.1 ports.

    The servers are the test suite's (`tests/servers.py`); one that is not installed is
    skipped with a note.
    """
    sys.path.insert(0, str(ROOT))
    from tests.servers import ServerUnavailable, run_moto, run_seaweed

    starters = {"moto": run_moto, "seaweed": run_seaweed}
    running: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for name in names:
            try:
                server = stack.enter_context(starters[name]("bench"))
            except ServerUnavailable as exc:
                print(f"! {name} cases skipped: {exc}", file=sys.stderr)
                continue
            running[name] = server.store_kwargs()
        yield running


def _case_names(args: argparse.Namespace, work: Path) -> list[str]:
    """Names of the small cases the filters select (with every server assumed running)."""
    ctx = _context(args, work, {s: {} for s in args.server_names}, "postgres")
    return [name for name, _ in all_cases(ctx) if selected(name, args.filters)]


def _context(
    args: argparse.Namespace, work: Path, servers: dict[str, dict[str, Any]], pg: str | None
) -> Context:
    return Context(
        n=args.n,
        fast_n=args.fast_n,
        rounds=args.rounds,
        workdir=work,
        servers=servers,
        pg_url=pg,
        orm_sizes=tuple(_sizes(args.orm_sizes)),
        orm_rows=args.orm_rows,
        select_n=args.select_n,
        select_reads=args.select_reads,
    )


# --------------------------------------------------------------------------- small cases

_RESULT, _SKIPPED = "bench-result: ", "bench-skipped: "


def _case_child(args: argparse.Namespace) -> None:
    """`--child-case NAME`: run that one small case here and print its outcome."""
    fields = json.loads(args.child_context)
    fields["workdir"] = Path(fields["workdir"])
    fields["orm_sizes"] = tuple(fields["orm_sizes"])
    ctx = Context(**fields)
    (case,) = [case for name, case in all_cases(ctx) if name == args.child_case]
    try:
        result = case()
    except SkipCase as exc:
        print(_SKIPPED + str(exc), flush=True)
        return
    print(_RESULT + json.dumps(asdict(result)), flush=True)


def _small_case(name: str, ctx: Context) -> dict[str, Any]:
    """Run one small case in a fresh interpreter (see `--same-process`)."""
    fields = dataclasses.asdict(ctx)
    fields["workdir"] = str(ctx.workdir)
    argv = [sys.executable, str(HERE / "run.py"), "--child-case", name]
    argv += ["--child-context", json.dumps(fields)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3 * 3600)
    for line in done.stdout.splitlines():
        if line.startswith(_RESULT):
            result: dict[str, Any] = json.loads(line[len(_RESULT) :])
            return result
        if line.startswith(_SKIPPED):
            raise SkipCase(line[len(_SKIPPED) :])
    raise RuntimeError(f"case {name} exited {done.returncode}:\n{done.stderr}")


def _progress(result: dict[str, Any]) -> None:
    cells = []
    for base, label in (("raw", "raw"), ("same", "same work"), ("bridge", "bridge")):
        wall = report.ratio(result, "ours", base, "wall")
        cpu = report.ratio(result, "ours", base, "cpu")
        if wall is not None and cpu is not None:
            cells.append(f"÷ {label} {wall.median:5.2f}x wall {cpu.median:5.2f}x CPU")
    took = f"{result['seconds']:6.1f} s " if "seconds" in result else ""
    print(f"  {result['case']:<40} {took}{'; '.join(cells)}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- large objects


def _write_source(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as fh:
        for _ in range(size // MIB):
            fh.write(block)


def _transfer(impl: str, op: str, source: Path, size: int, key: str, target: list[str]) -> Any:
    argv = [sys.executable, str(HERE / "large.py"), "--impl", impl, "--op", op]
    argv += ["--file", str(source), "--size", str(size), "--key", key, *target]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:6])} exited {done.returncode}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cleanup(store: Any, keep: str) -> None:
    # Only the large cases' own keys: the small cases leave hundreds of thousands of
    # objects in the same bucket, and listing all of them took SeaweedFS past the
    # client's timeout (a full run lost its large-object part that way, twice).
    paths = [
        m["path"]
        for impl in LARGE_IMPLS
        for page in obstore.list(store, prefix=f"{impl}/")
        for m in page
        if m["path"] != keep
    ]
    if paths:
        obstore.delete(store, paths)


def _large_names(args: argparse.Namespace, target: str) -> list[tuple[str, int, str]]:
    """(case name, size in MiB, operation) of the selected large-object cases of `target`."""
    return [
        (f"large/{target}/{op}/{mib}MiB", mib, op)
        for mib in args.sizes
        for op in LARGE_OPS
        if selected(f"large/{target}/{op}/{mib}MiB", args.filters)
    ]


def _large_target(
    name: str, servers: dict[str, dict[str, Any]], work: Path
) -> tuple[Any, list[str], str] | None:
    """(store, large.py arguments, description) of a large-object target."""
    if name == "local":
        local = work / "large-store"
        local.mkdir(exist_ok=True)
        return LocalStore(local), ["--local", str(local)], "local disk"
    if name not in servers:
        print(f"! large/{name} skipped: the server is not running", file=sys.stderr)
        return None
    return S3Store(**servers[name]), ["--s3", json.dumps(servers[name])], name


def large_cases(
    args: argparse.Namespace, servers: dict[str, dict[str, Any]], work: Path
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for target_name in args.targets:
        try:
            _large_target_cases(args, servers, work, target_name, results)
        except Exception as exc:  # a server that dies mid-run must not cost the others
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"! large/{target_name} stopped: {reason}", file=sys.stderr, flush=True)
            failures: list[str] = args.large_failures
            failures.append(f"large/{target_name}: {reason}")
    return results


def _large_target_cases(
    args: argparse.Namespace,
    servers: dict[str, dict[str, Any]],
    work: Path,
    target_name: str,
    results: list[dict[str, Any]],
) -> None:
    """The large-object cases of one target, appended to `results` as each completes."""
    cases = _large_names(args, target_name)
    found = _large_target(target_name, servers, work) if cases else None
    if found is None:
        return
    store, target, where = found
    for mib in args.sizes:
        ops = [op for _, size, op in cases if size == mib]
        if not ops:
            continue
        size = mib * MIB
        source = work / f"source-{mib}.bin"
        _write_source(source, size)
        download_key = f"download/{mib}.bin"
        if "download" in ops:
            obstore.put(store, download_key, source)
        for op in ops:
            runs: dict[str, list[Any]] = {impl: [] for impl in LARGE_IMPLS}
            # one fresh process per implementation, in an order rotated every round
            for order in rotation(list(LARGE_IMPLS), args.large_rounds):
                for impl in order:
                    key = download_key if op == "download" else f"{impl}/{op}.bin"
                    runs[impl].append(_transfer(impl, op, source, size, key, target))
                    _cleanup(store, download_key)
            result = Result(
                f"large/{target_name}/{op}/{mib}MiB",
                "MiB/s",
                mib,
                {
                    impl: {
                        "label": impl,
                        "wall": [m["wall"] for m in runs[impl]],
                        "cpu": [m["cpu"] for m in runs[impl]],
                    }
                    for impl in LARGE_IMPLS
                },
                where,
                target_name if target_name != "local" else "",
                {"rss_growth": {i: [m["rss_growth"] for m in runs[i]] for i in LARGE_IMPLS}},
            )
            results.append(asdict(result))
            _progress(results[-1])
        source.unlink()
        with contextlib.suppress(Exception):
            obstore.delete(store, download_key)


# --------------------------------------------------------------------------- environment


def _cpu_info() -> tuple[str, bool]:
    """The CPU model and whether it has SHA extensions (Linux `/proc/cpuinfo`)."""
    model, flags = platform.processor() or "?", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("?", ""):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = value
    return model, "sha_ni" in flags.split() or "sha2" in flags.split()


def _sha256_speed() -> dict[str, Any]:
    """CPU time of `hashlib.sha256` on 1 KiB (best of 5 x 20,000) and on 16 MiB (GB/s)."""
    kib, block = b"x" * 1024, b"x" * (16 * MIB)
    best = min(
        _cpu_of(lambda: [hashlib.sha256(kib).hexdigest() for _ in range(20_000)]) for _ in range(5)
    )
    big = min(_cpu_of(lambda: hashlib.sha256(block).digest()) for _ in range(3))
    return {
        "openssl": ssl.OPENSSL_VERSION,
        "us_per_kib": best / 20_000 * 1e6,
        "gb_per_s": len(block) / big / 1e9,
    }


def _cpu_of(fn: Any) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    model, sha_ni = _cpu_info()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "obstore": version("obstore"),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlalchemy_obstore": version("sqlalchemy-obstore"),
        "advanced_alchemy": PEER_VERSION,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "sha256": {"sha_ni": sha_ni, **_sha256_speed()},
        "platform": platform.platform(),
        "n": args.n,
        "fast_n": args.fast_n,
        "rounds": args.rounds,
        "orm_sizes": _sizes(args.orm_sizes),
        "servers": args.server_names,
        "large_sizes_mib": args.sizes,
        "large_targets": args.targets,
        "large_rounds": args.large_rounds,
        "quick": args.quick,
        "loadavg_start": _load(),
    }


def write(out_dir: Path, env: dict[str, Any], results: list[dict[str, Any]], text: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = env["date"].replace(":", "").replace("+0000", "Z")
    payload = json.dumps({"environment": env, "results": results}, indent=2)
    for name in (f"bench-{stamp}", "latest"):
        (out_dir / f"{name}.json").write_text(payload + "\n")
        (out_dir / f"{name}.md").write_text(text)
    print(f"wrote {out_dir / 'latest.json'} and {out_dir / 'latest.md'}", file=sys.stderr)


# --------------------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    if args.child_case:
        _case_child(args)
        return 0
    env = environment(args)
    args.large_failures = env["large_failures"] = []
    work = Path(tempfile.mkdtemp(prefix="sqlalchemy-obstore-bench-"))
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        names = _case_names(args, work)
        large_servers = [] if args.no_s3 else [t for t in args.targets if t in SERVERS]
        wanted = [
            s
            for s in dict.fromkeys([*args.server_names, *large_servers])
            if any(f"/{s}/" in n for n in names) or _large_names(args, s)
        ]
        needs_pg = any("/postgres/" in n for n in names)
        with s3_servers(wanted) as servers, contextlib.ExitStack() as stack:
            database = stack.enter_context(pgdb.private_database()) if needs_pg else None
            pg = pgdb.url("asyncpg", database) if database else None
            # the save and ORM cases use --servers (a server may run for large objects only)
            small = {k: v for k, v in servers.items() if k in args.server_names}
            ctx = _context(args, work, small, pg)
            for name, case in all_cases(ctx):
                if not selected(name, args.filters):
                    continue
                case_started = time.perf_counter()
                try:
                    result = asdict(case()) if args.same_process else _small_case(name, ctx)
                except SkipCase as exc:
                    print(f"  {name:<40} skipped: {exc}", file=sys.stderr, flush=True)
                    continue
                result["seconds"] = round(time.perf_counter() - case_started, 1)
                _progress(result)
                results.append(result)
            if args.sizes:
                results.extend(large_cases(args, servers, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    env["loadavg_end"] = _load()
    env["seconds"] = round(time.perf_counter() - started, 1)
    text = report.markdown(env, results)
    print(text)
    write(args.out_dir, env, results, text)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:
        traceback.print_exc()
        code = 1
    # obstore's async runtime can abort the interpreter while it shuts down right after
    # async network calls: give it a moment, flush, and leave without finalisation.
    time.sleep(0.3)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
