"""Benchmark runner: sqlalchemy-obstore against raw obstore doing the same work.

When advanced-alchemy is installed, its file objects do the same work too (the "aa"
columns); large-object cases have no peer.

    python benchmarks/run.py            # full size (nox -s bench)
    python benchmarks/run.py --quick    # CI size (nox -s bench-quick)
    python benchmarks/run.py --cases sign,orm --rounds 7

Prints a Markdown table and writes `bench-<stamp>.json` / `.md` plus `latest.json` /
`latest.md` to `--out-dir`. See docs/performance.md for what every case measures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
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
import sqlalchemy
from cases import PEER_VERSION, Context, Result, SkipCase, all_cases
from obstore.store import LocalStore, S3Store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1024 * 1024
LARGE_OPS = ("path", "stream", "aiter", "download")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="operations per round (default 1000)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds; the median is reported")
    p.add_argument(
        "--large-sizes",
        default="64,256,1024",
        help="comma-separated large-object sizes in MiB ('' or 0 to skip; default 64,256,1024)",
    )
    p.add_argument(
        "--large-rounds",
        type=int,
        default=3,
        help="fresh processes per impl/size, the median is reported (default 3)",
    )
    p.add_argument(
        "--large-target",
        choices=["s3", "local"],
        default="s3",
        help="where large objects go (s3 = local moto server; default)",
    )
    p.add_argument("--out-dir", type=Path, default=HERE / "results")
    p.add_argument("--quick", action="store_true", help="CI size: --n 200 --rounds 3, 16 MiB")
    p.add_argument(
        "--cases",
        default="",
        help="comma-separated substrings; run only cases whose name contains one "
        "(e.g. 'sign,save/memory,large')",
    )
    p.add_argument("--no-s3", action="store_true", help="do not start moto; skip S3 cases")
    p.add_argument(
        "--same-process",
        action="store_true",
        help="run the small cases one after another in this process (default: each case "
        "in a fresh process, so no case inherits the heap and garbage of the ones before)",
    )
    # internal: run one small case in this process and print its result (see _case_child)
    p.add_argument("--child-case", help=argparse.SUPPRESS)
    p.add_argument("--child-workdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-s3", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.rounds, args.large_sizes, args.large_rounds = 200, 3, "16", 1
    args.sizes = [int(s) for s in args.large_sizes.split(",") if s.strip() and int(s) > 0]
    args.filters = [c.strip() for c in args.cases.split(",") if c.strip()]
    return args


def selected(name: str, filters: list[str]) -> bool:
    return not filters or any(f in name for f in filters)


@contextlib.contextmanager
def moto(enabled: bool) -> Iterator[dict[str, Any] | None]:
    """S3Store kwargs of a moto server on a free 127.0.0.1 port (None when skipped)."""
    if not enabled:
        yield None
        return
    sys.path.insert(0, str(ROOT))
    from tests.servers import ServerUnavailable, run_moto

    try:
        server_cm = run_moto("bench")
        server = server_cm.__enter__()
    except ServerUnavailable as exc:
        print(f"! S3 cases skipped: {exc}", file=sys.stderr)
        yield None
        return
    try:
        yield server.store_kwargs()
    finally:
        server_cm.__exit__(None, None, None)


# --------------------------------------------------------------------------- large objects


def _write_source(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as fh:
        for _ in range(size // MIB):
            fh.write(block)


def _child(impl: str, op: str, source: Path, size: int, key: str, target: list[str]) -> Any:
    argv = [sys.executable, str(HERE / "large.py"), "--impl", impl, "--op", op]
    argv += ["--file", str(source), "--size", str(size), "--key", key, *target]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:6])} exited {done.returncode}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_RESULT, _SKIPPED = "bench-result: ", "bench-skipped: "


def _case_child(args: argparse.Namespace) -> None:
    """`--child-case NAME`: run that one small case here and print its outcome."""
    s3 = json.loads(args.child_s3) if args.child_s3 else None
    ctx = Context(n=args.n, rounds=args.rounds, workdir=args.child_workdir, s3_kwargs=s3)
    (case,) = [case for name, case in all_cases(ctx) if name == args.child_case]
    try:
        result = case()
    except SkipCase as exc:
        print(_SKIPPED + str(exc), flush=True)
        return
    print(_RESULT + json.dumps(asdict(result)), flush=True)


def _small_case(name: str, args: argparse.Namespace, s3: Any, work: Path) -> Result:
    """Run one small case in a fresh interpreter (see `--same-process`)."""
    argv = [sys.executable, str(HERE / "run.py"), "--child-case", name, "--n", str(args.n)]
    argv += ["--rounds", str(args.rounds), "--child-workdir", str(work)]
    if s3 is not None:
        argv += ["--child-s3", json.dumps(s3)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    for line in done.stdout.splitlines():
        if line.startswith(_RESULT):
            return Result(**json.loads(line[len(_RESULT) :]))
        if line.startswith(_SKIPPED):
            raise SkipCase(line[len(_SKIPPED) :])
    raise RuntimeError(f"case {name} exited {done.returncode}:\n{done.stderr}")


def _cleanup(store: Any, keep: str) -> None:
    paths = [m["path"] for page in obstore.list(store) for m in page if m["path"] != keep]
    if paths:
        obstore.delete(store, paths)


def large_cases(args: argparse.Namespace, s3: dict[str, Any] | None, work: Path) -> list[Result]:
    results: list[Result] = []
    if s3 is not None and args.large_target == "s3":
        store: Any = S3Store(**s3)
        target, where = ["--s3", json.dumps(s3)], "s3 (moto)"
    else:
        local = work / "large-store"
        local.mkdir()
        store = LocalStore(local)
        target, where = ["--local", str(local)], "local disk"
    for mib in args.sizes:
        ops = [op for op in LARGE_OPS if selected(f"large/{op}/{mib}MiB", args.filters)]
        if not ops:
            continue
        size = mib * MIB
        source = work / f"source-{mib}.bin"
        _write_source(source, size)
        download_key = f"download/{mib}.bin"
        if "download" in ops:
            obstore.put(store, download_key, source)
        for op in ops:
            runs: dict[str, list[Any]] = {"ours": [], "raw": []}
            for _ in range(args.large_rounds):
                for impl in ("ours", "raw"):
                    key = download_key if op == "download" else f"raw/{op}.bin"
                    runs[impl].append(_child(impl, op, source, size, key, target))
                    _cleanup(store, download_key)
            best = {i: sorted(runs[i], key=lambda m: m["wall"])[len(runs[i]) // 2] for i in runs}
            ours, raw = best["ours"], best["raw"]
            growth = (
                f"peak RSS +{ours['rss_growth'] / MIB:.1f} vs +{raw['rss_growth'] / MIB:.1f} MiB"
            )
            results.append(
                Result(
                    f"large/{op}/{mib}MiB",
                    "MiB/s",
                    mib / ours["wall"],
                    mib / raw["wall"],
                    ours["wall"] / raw["wall"],
                    f"{where}; {growth}",
                    {"ours": ours, "raw": raw, "size": size},
                )
            )
        source.unlink()
        with contextlib.suppress(Exception):
            obstore.delete(store, download_key)
    return results


# --------------------------------------------------------------------------- report


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "obstore": version("obstore"),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlalchemy_obstore": version("sqlalchemy-obstore"),
        "advanced_alchemy": PEER_VERSION,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "n": args.n,
        "rounds": args.rounds,
        "large_sizes_mib": args.sizes,
        "quick": args.quick,
    }


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _peer_cells(r: Result) -> str:
    """The advanced-alchemy rate and aa/raw time cells ("-" where it was not measured)."""
    if r.peer_rate is None or r.peer_ratio is None:
        return "| - | - "
    return f"| {_rate(r.peer_rate)} | {r.peer_ratio:.2f}x "


def markdown(env: dict[str, Any], results: list[Result]) -> str:
    peer = any(r.peer_rate is not None for r in results)
    aa = f", advanced-alchemy {env['advanced_alchemy']}" if env["advanced_alchemy"] else ""
    lines = [
        f"Python {env['python']}, obstore {env['obstore']}, SQLAlchemy {env['sqlalchemy']}, "
        f"sqlalchemy-obstore {env['sqlalchemy_obstore']}{aa}, {env['cpus']} CPUs, "
        f"{env['platform']}; n={env['n']}, median of {env['rounds']} rounds after a warm-up; "
        f"{env['date']}{' (quick run)' if env['quick'] else ''}",
        "",
        "| case | ours | raw obstore | unit | ours/raw time "
        + ("| advanced-alchemy | aa/raw time " if peer else "")
        + "| notes |",
        "|---|--:|--:|---|--:|" + ("--:|--:|" if peer else "") + "---|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {_rate(r.ours_rate)} | {_rate(r.raw_rate)} | {r.unit} "
            f"| {r.ratio:.2f}x {_peer_cells(r) if peer else ''}| {r.notes} |"
        )
    return "\n".join(lines) + "\n"


def write(out_dir: Path, env: dict[str, Any], results: list[Result], text: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = env["date"].replace(":", "").replace("+0000", "Z")
    payload = json.dumps({"environment": env, "results": [asdict(r) for r in results]}, indent=2)
    for name in (f"bench-{stamp}", "latest"):
        (out_dir / f"{name}.json").write_text(payload + "\n")
        (out_dir / f"{name}.md").write_text(text)
    print(f"wrote {out_dir / 'latest.json'} and {out_dir / 'latest.md'}", file=sys.stderr)


def main() -> int:
    args = parse_args()
    if args.child_case:
        _case_child(args)
        return 0
    work = Path(tempfile.mkdtemp(prefix="sqlalchemy-obstore-bench-"))
    results: list[Result] = []
    started = time.perf_counter()
    try:
        needs_s3 = not args.no_s3 and (
            selected("save/s3/", args.filters)
            or (args.sizes and args.large_target == "s3" and selected("large/", args.filters))
        )
        with moto(needs_s3) as s3:
            ctx = Context(n=args.n, rounds=args.rounds, workdir=work, s3_kwargs=s3)
            for name, case in all_cases(ctx):
                if selected(name, args.filters):
                    try:
                        result = case() if args.same_process else _small_case(name, args, s3, work)
                    except SkipCase as exc:
                        print(f"  {name:<28} skipped: {exc}", file=sys.stderr, flush=True)
                        continue
                    aa = "" if result.peer_ratio is None else f"  aa {result.peer_ratio:5.2f}x"
                    print(
                        f"  {name:<28} ratio {result.ratio:5.2f}x{aa}", file=sys.stderr, flush=True
                    )
                    results.append(result)
            if args.sizes:
                results.extend(large_cases(args, s3, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    env = environment(args)
    env["seconds"] = round(time.perf_counter() - started, 1)
    text = markdown(env, results)
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
