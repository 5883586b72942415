"""Integration-test plumbing: statistics of the randomized lifecycle scripts.

`tests/integration/test_lifecycle_random.py` counts what its generated scripts did
(scripts, steps, operations, faults injected by kind, errors seen) into the
`lifecycle_stats` fixture; the counts are printed at the end of the run, even with `-q`,
so a CI log shows how hard the invariants were pushed.
"""

from __future__ import annotations

from collections import Counter

import pytest

LIFECYCLE_STATS = pytest.StashKey[dict[str, Counter[str]]]()

_SUMMARY_ORDER = ("scripts", "steps", "commits", "savepoint rollbacks", "rollbacks")


@pytest.fixture(scope="session")
def lifecycle_stats(pytestconfig: pytest.Config) -> dict[str, Counter[str]]:
    """Counters by variant (`sqlite-sync`, ...), shown in the terminal summary."""
    return pytestconfig.stash.setdefault(LIFECYCLE_STATS, {})


def _format(counter: Counter[str]) -> list[str]:
    lines = [", ".join(f"{key}: {counter[key]}" for key in _SUMMARY_ORDER if key in counter)]
    for group in ("fault", "error", "op"):
        items = sorted((k, v) for k, v in counter.items() if k.startswith(group + "."))
        if items:
            listed = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in items)
            lines.append(f"  {group}s: {listed}")
    rest = sorted(
        (k, v)
        for k, v in counter.items()
        if k not in _SUMMARY_ORDER and not k.startswith(("fault.", "error.", "op."))
    )
    if rest:
        lines.append("  " + ", ".join(f"{k}: {v}" for k, v in rest))
    return lines


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    stats = config.stash.get(LIFECYCLE_STATS, None)
    if not stats:
        return
    terminalreporter.section("randomized lifecycle scripts")
    for variant, counter in sorted(stats.items()):
        lines = _format(counter)
        terminalreporter.write_line(f"{variant}: {lines[0]}")
        for line in lines[1:]:
            terminalreporter.write_line(line)
