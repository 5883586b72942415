"""The command line's arguments: the parser of every command and its option types."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import NoReturn

from ._cli_output import EXIT_USAGE, PROG, Failure, seconds_text
from ._gc import DEFAULT_GRACE_PERIOD, MIN_GRACE_PERIOD
from ._version import __version__

__all__ = ("build_parser", "parse_duration")


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([wdhms]?)", re.IGNORECASE)


_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(value: str) -> timedelta:
    """Parse a duration such as `24h`, `30m`, `90s`, `7d`, `1h30m` or `3600` (seconds).

    Args:
        value: Numbers, each followed by a unit (`w`, `d`, `h`, `m`, `s`; none means
            seconds).

    Returns:
        The duration.

    Raises:
        ValueError: If `value` is not a duration.

    Example:
        >>> parse_duration("1h30m"), parse_duration("90")
        (datetime.timedelta(seconds=5400), datetime.timedelta(seconds=90))
    """
    text_ = value.strip()
    seconds, position = 0.0, 0
    while position < len(text_):
        match = _DURATION.match(text_, position)
        if match is None:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2).lower()]
        position = match.end()
        while position < len(text_) and text_[position] in " ,":
            position += 1
    if not text_ or position != len(text_):
        raise ValueError(f"{value!r} is not a duration; use e.g. 24h, 30m, 90s, 7d or 3600.")
    return timedelta(seconds=seconds)


def _duration(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Failure(EXIT_USAGE, f"{message} (see `{self.prog} --help`)")


_EPILOG = """\
exit codes: 0 ok, 1 problems found, 2 usage or configuration error,
3 database or storage unreachable (or an operation on it failed), 70 internal error,
130 interrupted."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help="SQLAlchemy database URL (default: the engine the --app application holds, "
        "else $DATABASE_URL); an async driver (+asyncpg, +aiosqlite) runs the async API",
    )
    common.add_argument(
        "--app",
        metavar="MODULE[:ATTR]",
        action="append",
        default=[],
        help="module or application to load (repeatable). A module registers the "
        "backends and declares the models when imported; ATTR names a MetaData, "
        "declarative base or list of them, or a Litestar/Starlette/FastAPI app (or a "
        "function returning one, e.g. myapp:create_app) whose startup runs first, so "
        "the backends its plugin or lifespan registers and the engine it holds are used "
        "(default: every base and MetaData in the module, and its app or create_app())",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document only")
    common.add_argument("--no-progress", action="store_true", help="no progress line")
    common.add_argument("--debug", action="store_true", help="show tracebacks and log INFO")

    parser = _Parser(
        prog=prog,
        description="Operate sqlalchemy-obstore file columns: garbage collection, reference "
        "verification, migration between backends and backend checks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="show the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gc = sub.add_parser(
        "gc",
        parents=[common],
        help="find (and delete) objects no row references",
        description="List each backend's managed prefix and report (or, with --delete "
        "--yes, delete) the objects that no row references and that are older than the "
        "grace period. A dry run by default.",
        epilog=_EPILOG,
    )
    mode = gc.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only report (the default)")
    mode.add_argument("--delete", action="store_true", help="delete the orphans (needs --yes)")
    gc.add_argument("--yes", action="store_true", help="confirm a destructive run")
    gc.add_argument(
        "--grace-period",
        type=_duration,
        default=DEFAULT_GRACE_PERIOD,
        metavar="DURATION",
        help="keep unreferenced objects younger than this (24h, 30m, 90s, 7d; default 24h); "
        f"--delete refuses less than {seconds_text(MIN_GRACE_PERIOD)}",
    )
    gc.add_argument(
        "--unsafe-grace-period",
        action="store_true",
        help=f"let --delete use a grace period under {seconds_text(MIN_GRACE_PERIOD)}: "
        "uploads of transactions in flight are deleted and their rows break; only when "
        "no application is writing",
    )
    gc.add_argument(
        "--backend",
        action="append",
        default=None,
        metavar="KEY",
        help="collect in this backend only (repeatable; default: every backend in use)",
    )
    gc.add_argument(
        "--fail-on-orphans",
        action="store_true",
        help="exit with 1 when a dry run finds orphans (for CI and monitoring)",
    )
    gc.add_argument(
        "--batch-size",
        type=_positive,
        default=1000,
        metavar="N",
        help="rows per fetch, objects per listing page and per delete (default %(default)s)",
    )
    gc.add_argument(
        "--report-limit",
        type=_positive,
        default=1000,
        metavar="N",
        help="orphan paths listed per backend in a dry run (default 1000)",
    )

    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="find rows whose object is missing or changed",
        description="Check that every referenced object exists with the recorded size "
        "(and, with --checksums, the recorded checksum).",
        epilog=_EPILOG,
    )
    verify.add_argument(
        "--checksums", action="store_true", help="also read every object back and hash it"
    )
    verify.add_argument(
        "--batch-size",
        type=_positive,
        default=1000,
        metavar="N",
        help="rows per fetch (default %(default)s)",
    )

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="copy referenced objects to another backend and rewrite the rows",
        description="Copy every object referenced in backend FROM to backend TO, rewrite "
        "the rows, verify, and optionally delete the source objects. Resumable and "
        "idempotent: run it again after an interruption.",
        epilog=_EPILOG,
    )
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="KEY",
        help="the backend whose objects move (required)",
    )
    migrate.add_argument(
        "--to",
        dest="destination",
        required=True,
        metavar="KEY",
        help="the backend they move to; registered like the source (required)",
    )
    migrate.add_argument(
        "--delete-source", action="store_true", help="delete source objects once verified"
    )
    migrate.add_argument("--yes", action="store_true", help="confirm (rows are rewritten)")
    migrate.add_argument("--dry-run", action="store_true", help="only report what would move")
    migrate.add_argument(
        "--concurrency",
        type=_positive,
        default=8,
        metavar="N",
        help="objects copied at once (default %(default)s)",
    )
    migrate.add_argument(
        "--batch-size",
        type=_positive,
        default=500,
        metavar="N",
        help="rows per batch; each batch is committed (default %(default)s)",
    )

    reprocess = sub.add_parser(
        "reprocess",
        parents=[common],
        help="build missing or changed renditions and record image sizes of stored files",
        description="Bring the images stored in columns with an image policy up to it: "
        "build the renditions a row lacks or holds made to another spec, record missing "
        "widths and heights. Rows are rewritten with compare-and-swap, in committed "
        "batches; run it again to resume.",
        epilog=_EPILOG,
    )
    reprocess.add_argument(
        "--column",
        action="append",
        default=None,
        metavar="TABLE.COLUMN",
        help="reprocess this column only (repeatable; default: every column with an image policy)",
    )
    reprocess.add_argument(
        "--yes", action="store_true", help="confirm (renditions are stored, rows rewritten)"
    )
    reprocess.add_argument(
        "--dry-run", action="store_true", help="only count what would be done (reads no image)"
    )
    reprocess.add_argument(
        "--concurrency",
        type=_positive,
        default=4,
        metavar="N",
        help="images processed at once with an async database (default %(default)s)",
    )
    reprocess.add_argument(
        "--batch-size",
        type=_positive,
        default=100,
        metavar="N",
        help="rows per batch; each batch is committed (default %(default)s)",
    )
    reprocess.add_argument(
        "--start-after",
        action="append",
        default=None,
        metavar="TABLE=KEY",
        help="skip the rows of TABLE up to this primary key (JSON; a list for a composite "
        "key), as a progress line or an earlier run reported (repeatable)",
    )

    backends = sub.add_parser(
        "backends",
        parents=[common],
        help="list the registered backends and check that each is reachable",
        description="List every registered backend (without secrets) and check it: one "
        "listing page under its prefix. With a database URL, the database is checked too.",
        epilog=_EPILOG,
    )
    backends.add_argument(
        "--check",
        action="store_true",
        help="also check the store's settings: whether the bucket aborts incomplete "
        "multipart uploads by itself (an AbortIncompleteMultipartUpload lifecycle rule); "
        "exit 1 when an S3 bucket has none",
    )
    return parser
