"""The `sqlalchemy-obstore` command line: garbage collection, verification, migration, checks.

```text
sqlalchemy-obstore gc       --app myapp.models [--delete --yes] [--grace-period 24h]
sqlalchemy-obstore verify   --app myapp.models [--checksums]
sqlalchemy-obstore migrate  --app myapp.models --from local --to s3 --yes
sqlalchemy-obstore reprocess --app myapp.models [--dry-run | --yes] [--column photos.image]
sqlalchemy-obstore backends --app myapp.models [--check]
```

(`python -m sqlalchemy_obstore ...` is the same; with the Litestar plugin, `litestar
storage ...` too.) Every command takes one or more `--app module[:attribute]` targets:

- a module that registers the backends and declares the models when it is imported;
  the file columns are found in the named attribute (a `MetaData`, a declarative base
  or a list of them) or, without one, in every declarative base and `MetaData` the
  module holds;
- an application (Litestar, Starlette, FastAPI: `--app myapp.main:app`), or a function
  returning one (`--app myapp.main:create_app`), or a module holding one (its `app`,
  `application`, or `create_app()`): its startup runs first through the ASGI lifespan
  protocol (the backends the Litestar plugin or a lifespan registers are registered;
  the engine it creates is there), and its shutdown at the end. Without models named,
  the application's are used: advanced-alchemy's `metadata`, else the declarative
  bases of the module defining the application (or its factory), else every
  declarative base loaded.

The database is `--database-url`, else the engine the application holds (in its state,
its lifespan state, advanced-alchemy's `SQLAlchemyPlugin`, or the module's globals),
else the `DATABASE_URL` environment variable. An async URL or engine
(`postgresql+asyncpg://`, `sqlite+aiosqlite://`) runs the async API, a sync one the
sync API.

Output: a summary table on stdout (and a progress line on stderr when stderr is a
terminal), or with `--json` one JSON document on stdout and nothing else. Errors are one
line on stderr, without a traceback unless `--debug` is given, and never show secrets.

Exit codes:

- `0`: success; nothing wrong found.
- `1`: problems found: broken references (`verify`), orphans (or stale incomplete
  multipart uploads) in a dry run with `--fail-on-orphans` (`gc`), an incomplete
  migration (`migrate`), images left behind (`reprocess`: failures, rows the
  application changed meanwhile), a bucket without a rule that aborts incomplete multipart
  uploads (`backends --check`).
- `2`: usage or configuration error: a bad option, a missing `--yes`, a module that
  cannot be imported, an application whose startup fails, a backend that is not
  registered, a missing table.
- `3`: the database or a storage backend is unreachable, or an operation on it failed.
- `70`: an unexpected internal error (a bug: run again with `--debug` and report it).
- `130`: interrupted (Ctrl-C).

**Clean exit.** obstore runs its async I/O on a Rust (tokio) runtime whose threads can
race the interpreter's shutdown and abort the process (SIGABRT, exit status 134) right
after async network calls. [`main`][sqlalchemy_obstore.cli.main] therefore disposes the
engines, flushes stdout and stderr and ends the process with `os._exit`, skipping the
interpreter shutdown: the exit status is always the one documented above.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import IO, NoReturn

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ._cli_app import Runtime, Target
from ._cli_backends import backends_command
from ._cli_gc import gc_command, verify_command
from ._cli_migrate import migrate_command
from ._cli_output import (
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    PROG,
    Failure,
    Output,
    error_line,
)
from ._cli_parser import build_parser, parse_duration
from ._cli_reprocess import reprocess_command
from ._cli_resources import Application
from ._errors import ConfigurationError, StorageError, redact

__all__ = (
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "main",
    "parse_duration",
    "run",
)

_COMMANDS: dict[str, Callable[[Application, Output], int]] = {
    "gc": gc_command,
    "verify": verify_command,
    "migrate": migrate_command,
    "reprocess": reprocess_command,
    "backends": backends_command,
}


# -- entry points ---------------------------------------------------------------------------------
def run(
    argv: Sequence[str] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    app: object | None = None,
    prog: str = PROG,
) -> int:
    """Run the command line in this process and return its exit code (no exit).

    [`main`][sqlalchemy_obstore.cli.main] is the console entry point; `run` is for
    calling the command line from Python (it leaves the interpreter running).

    Args:
        argv: The arguments (default: `sys.argv[1:]`).
        stdout: Where the summary or JSON document goes (default `sys.stdout`).
        stderr: Where errors and the progress line go (default `sys.stderr`).
        app: An application already loaded (a Litestar, Starlette or FastAPI app):
            its startup runs as for `--app module:app`. Litestar's CLI passes its own
            (`litestar storage ...`).
        prog: The program name in messages and help.

    Returns:
        The exit code (see the module documentation).

    Example:
        >>> from sqlalchemy_obstore.cli import run
        >>> run(["gc", "--app", "myapp.models", "--json"])  # doctest: +SKIP
        0
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    out_stream = stdout if stdout is not None else sys.stdout
    err_stream = stderr if stderr is not None else sys.stderr
    runtime = Runtime()
    try:
        return _run(arguments, out_stream, err_stream, runtime, app, prog)
    finally:
        with contextlib.redirect_stdout(err_stream):  # the app's shutdown prints, if any
            warnings = runtime.close()
        for warning in warnings:
            err_stream.write(f"{prog}: warning: {warning}\n")


def _run(
    arguments: list[str],
    out_stream: IO[str],
    err_stream: IO[str],
    runtime: Runtime,
    preloaded: object | None,
    prog: str,
) -> int:
    wants_json = "--json" in arguments
    debug = "--debug" in arguments
    command = next((a for a in arguments if a in _COMMANDS), None)
    args: argparse.Namespace | None = None
    try:
        try:
            args = build_parser(prog).parse_args(arguments)
        except SystemExit as exc:  # --help / --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        if debug:  # the library's own messages (not every SQL statement)
            handler = logging.StreamHandler(err_stream)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            library = logging.getLogger(__package__)
            library.addHandler(handler)
            library.setLevel(logging.INFO)
        target = None
        if preloaded is not None:
            target = Target(prog, None, app=preloaded, origin="loaded by the framework's CLI")
        application = Application(args, runtime, err_stream, target)
        return _COMMANDS[args.command](application, Output(args, out_stream, err_stream, prog))
    except KeyboardInterrupt:
        code, message = EXIT_INTERRUPTED, "interrupted."
    except BrokenPipeError:  # stdout closed early (`| head`): nothing more to say
        return EXIT_OK
    except Failure as exc:
        code, message = exc.code, exc.message
    except ConfigurationError as exc:
        code, message = EXIT_USAGE, redact(error_line(exc))
    except StorageError as exc:
        code, message = EXIT_UNAVAILABLE, redact(error_line(exc))
    except DBAPIError as exc:
        code, message = EXIT_UNAVAILABLE, f"database error: {redact(error_line(exc))}"
    except SQLAlchemyError as exc:
        code, message = EXIT_USAGE, f"database configuration error: {redact(error_line(exc))}"
    except Exception as exc:
        code = EXIT_INTERNAL_ERROR
        message = (
            f"unexpected error: {type(exc).__name__}: {redact(error_line(exc))} "
            "(run again with --debug for the traceback)"
        )
    if debug and code != EXIT_INTERRUPTED:
        traceback.print_exc(file=err_stream)
    err_stream.write(f"{prog}: error: {message}\n")
    if wants_json:
        document = {"command": command, "ok": False, "exit_code": code, "error": message}
        out_stream.write(json.dumps(document, indent=2) + "\n")
    return code


def _finish(code: int) -> NoReturn:
    """Flush and leave without the interpreter shutdown (see the module documentation)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        logging.shutdown()
    os._exit(code)


def main(
    argv: Sequence[str] | None = None, *, app: object | None = None, prog: str = PROG
) -> NoReturn:
    """The `sqlalchemy-obstore` console entry point: run, flush, and exit with the code.

    Ends the process with `os._exit` after flushing stdout and stderr, so that obstore's
    runtime threads cannot abort the interpreter's shutdown.

    Args:
        argv: The arguments (default: `sys.argv[1:]`).
        app: An application already loaded (see [`run`][sqlalchemy_obstore.cli.run]).
        prog: The program name in messages and help.

    Example:
        ```console
        $ sqlalchemy-obstore verify --app myapp.models --database-url sqlite:///app.db
        Verified 1,204 references (existence and size).
        No problems found.
        ```
    """
    try:
        code = run(argv, app=app, prog=prog)
    except KeyboardInterrupt:  # pressed while printing the output
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`| head`)
        code = EXIT_OK
    _finish(code)
