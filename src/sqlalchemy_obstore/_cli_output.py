"""What a command prints and how it ends: exit codes, failures, tables, progress.

A command ends with an exit code (the `EXIT_*` constants, re-exported by
`sqlalchemy_obstore.cli`) or raises `Failure` with a code and a one-line message. Its
output goes through `Output`: the summary (plain tables) or the `--json` document on
stdout, warnings on stderr, and a `ProgressLine` on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import IO, Any

__all__ = (
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "PROG",
    "Failure",
    "Output",
    "ProgressLine",
    "error_line",
    "seconds_text",
    "size_text",
    "table",
)

EXIT_OK = 0
"""Success; nothing wrong was found."""
EXIT_PROBLEMS = 1
"""Problems were found (broken references, orphans with `--fail-on-orphans`, ...)."""
EXIT_USAGE = 2
"""A usage or configuration error."""
EXIT_UNAVAILABLE = 3
"""The database or a storage backend is unreachable, or an operation on it failed."""
EXIT_INTERNAL_ERROR = 70
"""An unexpected error (a bug)."""
EXIT_INTERRUPTED = 130
"""Interrupted by Ctrl-C (SIGINT)."""

PROG = "sqlalchemy-obstore"


class Failure(Exception):
    """Ends a command with a one-line message and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def seconds_text(delta: timedelta) -> str:
    """A duration as the CLI spells it: `24h`, `30m` or `90s`."""
    total = int(delta.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def error_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none)."""
    text_ = str(exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__


def size_text(count: int) -> str:
    """A byte count for people: `512 B`, `1.5 MiB`."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    """Rows as plain left-aligned columns (under `headers`, if given)."""
    body = [[str(c) for c in row] for row in rows]
    cells = body if headers is None else [list(headers), *body]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


class ProgressLine:
    """A one-line progress display on a terminal: count, bar when the total is known, rate."""

    def __init__(self, stream: IO[str] | None, label: str) -> None:
        self.stream = stream
        self.label = label
        self.key: tuple[str, str] = ("", "")
        self.start = self.last = 0.0
        self.start_done = 0
        self.width = 0

    def __call__(self, update: Any) -> None:
        if self.stream is None:
            return
        phase = str(getattr(update, "phase", "") or "")
        backend = str(getattr(update, "backend", None) or getattr(update, "table", "") or "")
        total = getattr(update, "total", None)
        extra = ""
        if hasattr(update, "done"):  # gc.Progress
            done = int(update.done)
        elif hasattr(update, "renditions_built"):  # reprocessing.ReprocessProgress
            done = int(update.rows_scanned)
            extra = (
                f" rows, {int(update.rows_updated):,} updated, "
                f"{int(update.renditions_built):,} renditions built"
            )
        elif phase == "delete":  # migrate.MigrationProgress
            done = int(getattr(update, "objects_deleted", 0))
        else:
            done = int(getattr(update, "objects_copied", 0)) + int(
                getattr(update, "objects_skipped", 0)
            )
            extra = (
                f" objects, {int(getattr(update, 'rows_rewritten', 0)):,} rows rewritten, "
                f"{size_text(int(getattr(update, 'bytes_copied', 0)))} copied"
            )
        now = time.monotonic()
        if (phase, backend) != self.key:
            self.key, self.start, self.start_done, self.last = (phase, backend), now, done, 0.0
        elif now - self.last < 0.1:
            return
        self.last = now
        elapsed = now - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        where = " ".join(part for part in (phase or self.label, backend) if part)
        line = f"{where}: {done:,}{extra}"
        if isinstance(total, int) and total > 0:
            share = min(done / total, 1.0)
            filled = int(share * 20)
            line = f"{where}: [{'#' * filled}{'.' * (20 - filled)}] {done:,}/{total:,}"
            line += f" {share:4.0%}"
        if elapsed > 0:
            line += f"  {rate:,.0f}/s"
        self._draw(line)

    def _draw(self, line: str) -> None:
        assert self.stream is not None
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def close(self) -> None:
        """Erase the line (the summary follows on stdout)."""
        if self.stream is not None and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


class Output:
    """Where a command writes: the summary or `--json` document, warnings, progress."""

    def __init__(
        self, args: argparse.Namespace, stdout: IO[str], stderr: IO[str], prog: str = PROG
    ) -> None:
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self.prog = prog
        self.warnings: list[str] = []
        self.json = bool(getattr(args, "json", False))
        show = not self.json and not getattr(args, "no_progress", False) and _isatty(stderr)
        self.progress = ProgressLine(stderr if show else None, getattr(args, "command", ""))

    def print(self, text_: str = "") -> None:
        self.stdout.write(text_ + "\n")

    def warn(self, message: str) -> None:
        """A warning on stderr (and in the `--json` document's `warnings`)."""
        self.warnings.append(message)
        self.stderr.write(f"{self.prog}: WARNING: {message}\n")

    def document(self, data: Mapping[str, Any]) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
