"""The code blocks of the README and the docs, and a runner that follows a page as a reader.

The one helper for every test that runs documentation code: `tests/e2e/test_docs_code.py`
(every page), `tests/e2e/test_readme.py`, the web pages in `tests/integration/
test_web_docs.py` and `test_web_litestar.py` (`run_in_process`), and the testing page in
`tests/e2e/test_pytest_plugin.py`.

The conventions the pages follow:

- Every ```` ```python ```` block of a page runs, in order, in one namespace, as if pasted
  into one file or into `python -m asyncio`: a block may `await` at top level, and all
  blocks share one event loop. A block without top-level `await` runs as plain code, so
  `asyncio.run()` works in it.
- What a page's examples need and do not show (imports, a SQLite database, a memory
  backend, sample bytes) is in one visible block titled `title="Setup"`, introduced by a
  sentence, before the first block that needs it: first on the page, or right after the
  model a page opens with. Servers and secrets come from the environment the setup (or
  obstore) reads, which the page names.
- A page whose first block starts with a file name comment (`# models.py`,
  `# pytest.ini` in an ```` ```ini ```` block) is a page of files: each block goes into the
  file it names, or, unnamed, into the file of the block before it. The reader's scripts
  then run with `python`, in the order the page introduces them, and its `test_*.py`
  files with `pytest`.
- A block just below `<!-- not run: <reason> -->` does not run; the reason is required,
  and `test_docs_code.py` counts such blocks.

`python tests/docs_snippets.py docs/<page>.md` follows one page by hand; run it in a
scratch directory (pages write files there).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import runpy
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<language>[\w+-]*)[ \t]*(?P<info>.*)$")
_HEADING = re.compile(r"^#{1,6} ")
_NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")
_FILE_NAME = re.compile(r"^#\s*(?P<name>[\w/.-]+\.(?:py|ini|toml|cfg))\b")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: Path
    line: int
    """1-based line of the block's first line of code (the one after the fence)."""
    language: str
    info: str
    """The rest of the fence's info string, e.g. `title="Setup"`."""
    code: str
    """The code, dedented to the fence's indentation."""
    heading: str
    """The nearest heading above the block (`## A complete application`), or `""`."""
    not_run: str | None
    """The reason given by a `<!-- not run: reason -->` comment just above the block."""

    @property
    def file_name(self) -> str | None:
        """The file this block starts, when its first line is a comment naming one."""
        match = _FILE_NAME.match(self.code)
        return match.group("name") if match else None

    @property
    def where(self) -> str:
        """`docs/page.md:line`, for messages and tracebacks."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path | str, language: str | None = "python") -> list[Block]:
    """The fenced code blocks of a Markdown page, in order (of one `language`, or all).

    Fences indented in admonitions, tabs and lists count; their code is dedented.
    """
    path = page if isinstance(page, Path) else DOCS / page
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    heading = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence is None:
            if _HEADING.match(line):
                heading = line.strip()
            index += 1
            continue
        indent = fence.group("indent")
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != f"{indent}```":
            end += 1
        body = "\n".join(
            text[len(indent) :] if text.startswith(indent) else text.lstrip()
            for text in lines[index + 1 : end]
        )
        previous = lines[index - 1] if index else ""
        not_run = _NOT_RUN.match(previous)
        if language is None or fence.group("language") == language:
            found.append(
                Block(
                    page=path,
                    line=index + 2,
                    language=fence.group("language"),
                    info=fence.group("info"),
                    code=textwrap.dedent(body) + "\n",
                    heading=heading,
                    not_run=not_run.group("reason") if not_run else None,
                )
            )
        index = end + 1
    return found


def compile_block(block: Block) -> types.CodeType:
    """Compile a block with its page's line numbers, top-level `await` allowed."""
    tree = ast.parse(block.code, filename=str(block.page))
    ast.increment_lineno(tree, block.line - 1)
    code: types.CodeType = compile(
        tree, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    return code


def run_blocks(blocks: list[Block], namespace: dict[str, object]) -> None:
    """Run blocks in order in one namespace and one event loop, as a reader pastes them.

    A block with top-level `await` runs to completion on the shared loop (as in
    `python -m asyncio`); the others run as plain code, so `asyncio.run()` works in them.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        for block in blocks:
            code = compile_block(block)
            if code.co_flags & inspect.CO_COROUTINE:
                loop.run_until_complete(eval(code, namespace))
            else:
                exec(code, namespace)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def run_in_process(
    page: str, module: types.ModuleType | None = None, *, until: str | None = None
) -> types.ModuleType:
    """Run a page's blocks in this process, for tests that then drive what they built.

    The blocks run in order in a module of their own, registered in `sys.modules` (as
    frameworks resolving annotations expect): from the first block not yet run in
    `module` (a fresh module when `None`) up to, not including, the first block under the
    heading `until` (to the end when `None`). Pass the returned module back to run the
    rest. Blocks with top-level `await` need a page of their own (`follow_page`).
    """
    blocks = runnable(code_blocks(page))
    if module is None:
        name = "docs_" + re.sub(r"\W", "_", page.removesuffix(".md"))
        module = sys.modules[name] = types.ModuleType(name)
    start: int = getattr(module, "__docs_next_block__", 0)
    stop = next(
        (i for i, block in enumerate(blocks) if i >= start and block.heading == until),
        len(blocks),
    )
    if until is not None and stop == len(blocks):
        message = f"docs/{page}: no block under {until!r} after block {start}"
        raise ValueError(message)
    for block in blocks[start:stop]:
        code = compile_block(block)
        if code.co_flags & inspect.CO_COROUTINE:
            message = f"{block.where}: top-level await cannot run in this process"
            raise TypeError(message)
        exec(code, vars(module))
    module.__docs_next_block__ = stop  # type: ignore[attr-defined]
    return module


@dataclass(frozen=True)
class PageFile:
    """A file a page tells its reader to create, from the blocks that make it up."""

    name: str
    blocks: list[Block]

    @property
    def is_test(self) -> bool:
        """Whether the file is a pytest module (run with pytest, not python)."""
        return Path(self.name).name.startswith("test_")


def page_files(blocks: list[Block]) -> list[PageFile]:
    """Group blocks into the files they name; `[]` when the page names none.

    A block without a file name goes into the file of the block before it.
    """
    files: list[PageFile] = []
    for block in blocks:
        if block.file_name is not None:
            files.append(PageFile(block.file_name, [block]))
        elif files:
            files[-1].blocks.append(block)
        elif any(b.file_name for b in blocks):
            message = f"{block.where}: a block before the page's first file name"
            raise ValueError(message)
    return files


def runnable(blocks: list[Block]) -> list[Block]:
    """The blocks that run (those without a `<!-- not run: reason -->`)."""
    for block in blocks:
        if block.not_run == "":
            message = f"{block.where}: `<!-- not run: -->` needs a reason"
            raise ValueError(message)
    return [block for block in blocks if block.not_run is None]


def follow_page(page: Path, directory: Path) -> None:
    """Do what a reader of `page` does, in `directory` (the current directory).

    Without file names, every runnable Python block runs in order in one `__main__`
    namespace. With them, the files are written (configuration files in other languages
    too, when they start with their name) and run: scripts with `python`, in the order
    the page introduces them, then the `test_*.py` modules with `pytest`.
    """
    blocks = runnable(code_blocks(page, language=None))
    python = [block for block in blocks if block.language == "python"]
    files = page_files([b for b in blocks if b.language == "python" or b.file_name])
    if not files:
        main = types.ModuleType("__main__")
        main.__file__ = str(directory / "main.py")
        sys.modules["__main__"] = main
        run_blocks(python, vars(main))
        return
    for file in files:
        path = directory / file.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(block.code for block in file.blocks), encoding="utf-8")
    scripts = [f.name for f in files if f.name.endswith(".py") and not f.is_test]
    tests = [f.name for f in files if f.name.endswith(".py") and f.is_test]
    for script in scripts:  # `python <script>`
        subprocess.run([sys.executable, __file__, "--script", script], cwd=directory, check=True)
    if tests:  # `pytest <tests>`
        subprocess.run([sys.executable, __file__, "--pytest", *tests], cwd=directory, check=True)


def _exit(code: int) -> NoReturn:
    """End the process without the interpreter's shutdown, as `sqlalchemy-obstore` does.

    obstore's async runtime (tokio) can abort the process (SIGABRT, 134) when its threads
    race the interpreter's finalisation after async calls; that is not the page's doing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str]) -> NoReturn:
    """`PAGE`, or (for the files a page writes) `--script FILE` or `--pytest FILE...`."""
    # The reader's directory comes first on sys.path (their `models.py`), this one not at all.
    sys.path[0] = str(Path.cwd())
    if argv[0] == "--script":
        runpy.run_path(argv[1], run_name="__main__")
        _exit(0)
    if argv[0] == "--pytest":
        import pytest

        _exit(int(pytest.main(["-q", "-p", "no:cacheprovider", *argv[1:]])))
    follow_page(Path(argv[0]).resolve(), Path.cwd())
    _exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
