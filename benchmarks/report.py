"""Markdown tables of a benchmark run (`run.py` writes them to `latest.md`).

Three tables:

1. **Ratios**, one row per small case: ours over each baseline, per round, in wall time
   and in CPU time, as `median (min-max over rounds)`. Lower is better; 1.00x is the
   baseline's speed.
2. **Every contender**, one row per contender of each case: what it does, its rate and
   its wall and CPU time per operation.
3. **Large objects**: throughput, wall and CPU ratios, and peak RSS growth against raw
   obstore with its defaults and with the library's settings (4 parts of 5 MiB).
"""

from __future__ import annotations

import statistics
from typing import Any

from timing import FAST_OPS, FAST_SECONDS, Spread, paired_ratios

MIB = 1024 * 1024
DASH = "\u2013"  # between the min and the max of a range

CONTENDER_NAMES = {
    "ours": "ours",
    "raw": "raw obstore",
    "same": "raw, same work",
    "bridge": "raw, async bridge",
    "aa": "advanced-alchemy",
    "equal": "raw, our settings",
}


def _ratio(spread: Spread | None) -> str:
    if spread is None:
        return "-"
    return f"{spread.median:.2f}x ({spread.low:.2f}{DASH}{spread.high:.2f})"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def ratio(result: dict[str, Any], top: str, bottom: str, clock: str) -> Spread | None:
    """Per-round `top / bottom` in `clock` ("wall" or "cpu"); None when either is missing."""
    contenders = result["contenders"]
    if top not in contenders or bottom not in contenders:
        return None
    return paired_ratios(contenders[top][clock], contenders[bottom][clock])


def per_op(result: dict[str, Any], name: str, clock: str) -> float:
    """Median seconds per operation of contender `name`."""
    seconds: float = statistics.median(result["contenders"][name][clock])
    return seconds / result["ops"]


def _notes(result: dict[str, Any]) -> str:
    notes = [result["notes"]] if result["notes"] else []
    fast = result["unit"] == "ops/s" and per_op(result, "raw", "cpu") < FAST_SECONDS
    if fast and result["ops"] < FAST_OPS:
        notes.append(f"**only {result['ops']:,} ops per round (want {FAST_OPS:,})**")
    if result["cpu_scope"]:
        notes.append(f"CPU: this process only, not {result['cpu_scope']}")
    return "; ".join(notes)


def header(env: dict[str, Any]) -> str:
    aa = f", advanced-alchemy {env['advanced_alchemy']}" if env.get("advanced_alchemy") else ""
    sha = env.get("sha256", {})
    load = env.get("loadavg_start"), env.get("loadavg_end")
    return (
        f"Python {env['python']}, obstore {env['obstore']}, SQLAlchemy {env['sqlalchemy']}, "
        f"sqlalchemy-obstore {env['sqlalchemy_obstore']}{aa}; {env['cpus']} CPUs "
        f"({env.get('cpu_model', '?')}, SHA extensions: {'yes' if sha.get('sha_ni') else 'no'}; "
        f"{sha.get('openssl', '?')}: SHA-256 of 1 KiB {sha.get('us_per_kib', 0):.2f} µs CPU, "
        f"{sha.get('gb_per_s', 0):.2f} GB/s), {env['platform']}; "
        f"n={env['n']}, {env['fast_n']:,} for cases under 10 µs per op, "
        f"{env['rounds']} timed rounds after a warm-up, order rotated every round; "
        f"load average {load[0]} at the start, {load[1]} at the end; {env['date']}"
        f"{' (quick run)' if env.get('quick') else ''}"
        + "".join(f"; **stopped: {failure}**" for failure in env.get("large_failures", []))
    )


def ratios_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| case | per round | ours | ÷ raw, wall | ÷ raw, CPU | ÷ same work, wall "
        "| ÷ same work, CPU | ÷ async bridge, wall | aa ÷ raw, wall | notes |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        ours = r["ops"] / statistics.median(r["contenders"]["ours"]["wall"])
        lines.append(
            f"| {r['case']} | {r['ops']:,} | {_rate(ours)} {r['unit']} "
            f"| {_ratio(ratio(r, 'ours', 'raw', 'wall'))} "
            f"| {_ratio(ratio(r, 'ours', 'raw', 'cpu'))} "
            f"| {_ratio(ratio(r, 'ours', 'same', 'wall'))} "
            f"| {_ratio(ratio(r, 'ours', 'same', 'cpu'))} "
            f"| {_ratio(ratio(r, 'ours', 'bridge', 'wall'))} "
            f"| {_ratio(ratio(r, 'aa', 'raw', 'wall'))} | {_notes(r)} |"
        )
    return lines


def contenders_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"| case | contender | what it does | ops/s, median (min{DASH}max) | µs per op, wall "
        "| µs per op, CPU |",
        "|---|---|---|--:|--:|--:|",
    ]
    for r in results:
        for name, c in r["contenders"].items():
            rates = Spread.of([r["ops"] / t for t in c["wall"]])
            lines.append(
                f"| {r['case']} | {CONTENDER_NAMES.get(name, name)} | {c['label']} "
                f"| {_rate(rates.median)} ({_rate(rates.low)}{DASH}{_rate(rates.high)}) "
                f"| {per_op(r, name, 'wall') * 1e6:,.2f} | {per_op(r, name, 'cpu') * 1e6:,.2f} |"
            )
    return lines


def large_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| case | ours | ÷ raw, wall | ÷ raw, CPU | ÷ raw at our settings, wall "
        "| peak RSS growth, MiB: ours / raw / raw at our settings | notes |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        ours = r["ops"] / statistics.median(r["contenders"]["ours"]["wall"])
        rss = " / ".join(
            f"{statistics.median(r['extra']['rss_growth'][name]) / MIB:.1f}"
            for name in ("ours", "raw", "equal")
            if name in r["extra"]["rss_growth"]
        )
        lines.append(
            f"| {r['case']} | {_rate(ours)} MiB/s | {_ratio(ratio(r, 'ours', 'raw', 'wall'))} "
            f"| {_ratio(ratio(r, 'ours', 'raw', 'cpu'))} "
            f"| {_ratio(ratio(r, 'ours', 'equal', 'wall'))} | {rss} | {_notes(r)} |"
        )
    return lines


def markdown(env: dict[str, Any], results: list[dict[str, Any]]) -> str:
    small = [r for r in results if r["unit"] == "ops/s"]
    large = [r for r in results if r["unit"] == "MiB/s"]
    lines = [header(env), ""]
    if small:
        lines += ["### Ratios", "", *ratios_table(small), ""]
    if large:
        lines += ["### Large objects", "", *large_table(large), ""]
    if small:
        lines += ["### Every contender", "", *contenders_table(small), ""]
    return "\n".join(lines)
