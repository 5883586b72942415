"""The pytest plugin, as a user gets it: a small project run by pytest in a subprocess.

The project (`myapp`) registers its production backend at import, README-style (local
files under `$MYAPP_STORAGE`, prefix `prod`, a 4 KiB policy), and configures the plugin
in `pytest.ini` only: `obstore_backends`, `obstore_metadata`. Nothing in it loads the
plugin, so every run also proves the `pytest11` entry point; `--strict-config` and
`--strict-markers` prove the ini options and the marker are registered, and
`filterwarnings = error` that the fixtures warn about nothing.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.docs_snippets import code_blocks, page_files, runnable

pytest_plugins = ["pytester"]

MODELS = """
    from sqlalchemy import String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from sqlalchemy_obstore import FileObject, StoredObject


    class Base(DeclarativeBase):
        pass


    class Document(Base):
        __tablename__ = "documents"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(100))
        file: Mapped[FileObject] = mapped_column(StoredObject("uploads", key_prefix="docs"))
        pages: Mapped[list[FileObject]] = mapped_column(
            StoredObject("uploads", multiple=True), default=list
        )


    class Profile(Base):
        __tablename__ = "profiles"
        id: Mapped[int] = mapped_column(primary_key=True)
        avatar: Mapped[FileObject | None] = mapped_column(StoredObject("avatars"), nullable=True)
"""

STORAGE = """
    import os

    from sqlalchemy_obstore import ObstoreBackend, UploadPolicy, storages

    # registered at import, as the README shows
    storages.register_backend(
        ObstoreBackend(
            "uploads", os.environ["MYAPP_STORAGE"], prefix="prod",
            policy=UploadPolicy(max_size=4096),
        )
    )
"""

CONFTEST = """
    import myapp.storage  # noqa: F401  # the application, imported as tests do
"""

TEST_SYNC = """
    import pytest
    from sqlalchemy import select, text

    from myapp.models import Document
    from sqlalchemy_obstore import FileTooLargeError
    from sqlalchemy_obstore.testing import FileFactory, InjectedFault


    def stored(backend):
        return sorted(info.path for info in backend.list_objects())


    def test_keys(obstore_backend_keys, pytestconfig):
        if pytestconfig.getini("obstore_backends"):
            assert obstore_backend_keys == ("uploads", "avatars")
        else:  # every StoredObject key of obstore_metadata
            assert obstore_backend_keys == ("avatars", "uploads")


    def test_registry_is_isolated(obstore_registry, obstore_memory_backends):
        assert set(obstore_memory_backends) == {"uploads", "avatars"}
        uploads = obstore_registry.get_backend("uploads")
        assert (uploads.kind, uploads.prefix) == ("memory", "prod")  # the app's settings
        assert obstore_registry.displaced["uploads"].kind == "local"  # what the app registered
        assert obstore_registry.get_backend("avatars") is obstore_memory_backends["avatars"]


    def test_session_uploads_to_memory(
        obstore_session, obstore_memory_backend, obstore_file_factory
    ):
        doc = Document(
            title="t",
            file=obstore_file_factory("a.txt", size=100),
            pages=[obstore_file_factory(), obstore_file_factory()],
        )
        obstore_session.add(doc)
        obstore_session.commit()
        assert doc.file.path.startswith("prod/docs/")
        assert len(stored(obstore_memory_backend)) == 3
        loaded = obstore_session.scalars(select(Document)).one()
        assert loaded.file.get_content() == obstore_memory_backend.get_bytes(doc.file.path)


    def test_each_test_starts_empty(obstore_memory_backend, obstore_session):
        assert stored(obstore_memory_backend) == []
        assert obstore_session.scalars(select(Document)).all() == []


    def test_the_app_policy_holds(obstore_session, obstore_file_factory, obstore_memory_backend):
        obstore_session.add(Document(title="t", file=obstore_file_factory(size=4097)))
        with pytest.raises(FileTooLargeError):
            obstore_session.commit()
        assert stored(obstore_memory_backend) == []


    def test_faults(obstore_session, obstore_faults, obstore_file_factory, obstore_memory_backend):
        obstore_faults.fail("put", nth=2)
        obstore_session.add(
            Document(title="t", file=obstore_file_factory(), pages=[obstore_file_factory()])
        )
        with pytest.raises(InjectedFault):
            obstore_session.commit()
        obstore_session.rollback()
        assert stored(obstore_memory_backend) == []  # the upload that succeeded was undone


    def test_savepoint_rollback_deletes_its_uploads(
        obstore_session, obstore_file_factory, obstore_memory_backend
    ):
        obstore_session.add(Document(title="kept", file=obstore_file_factory()))
        obstore_session.flush()
        with obstore_session.begin_nested() as savepoint:
            obstore_session.add(Document(title="undone", file=obstore_file_factory()))
            obstore_session.flush()
            assert len(stored(obstore_memory_backend)) == 2
            savepoint.rollback()
        obstore_session.commit()
        assert len(stored(obstore_memory_backend)) == 1


    def test_a_reader_does_not_block_a_writer(obstore_engine):
        with obstore_engine.connect() as reader, obstore_engine.connect() as writer:
            reader.execute(text("SELECT count(*) FROM documents")).scalar_one()  # open read
            writer.execute(
                text("INSERT INTO documents (title, file, pages) VALUES ('x', 'null', '[]')")
            )
            writer.commit()


    @pytest.mark.obstore_backends("avatars")
    def test_marker_overrides_the_ini(obstore_backend_keys, obstore_memory_backend):
        assert obstore_backend_keys == ("avatars",)
        assert obstore_memory_backend.key == "avatars"


    def test_file_factory_is_reproducible(obstore_file_factory, request):
        again = FileFactory(seed=request.node.nodeid)
        first, second = obstore_file_factory(), obstore_file_factory()
        assert first.filename == "file-1.bin"
        assert first.__dict__["_content"] == again().__dict__["_content"]
        assert second.__dict__["_content"] == again().__dict__["_content"]
"""

TEST_ASYNC = """
    import pytest
    from sqlalchemy import select

    from myapp.models import Document, Profile
    from sqlalchemy_obstore.testing import InjectedFault

    pytestmark = pytest.mark.asyncio


    async def test_async_session(
        obstore_async_session, obstore_memory_backends, obstore_file_factory
    ):
        profile = Profile(avatar=obstore_file_factory("me.png"))
        obstore_async_session.add(profile)
        await obstore_async_session.commit()
        avatars = obstore_memory_backends["avatars"]
        content = await profile.avatar.get_content_async()
        assert await avatars.get_bytes_async(profile.avatar.path) == content


    async def test_async_faults(
        obstore_async_session, obstore_faults, obstore_file_factory, obstore_memory_backend
    ):
        obstore_faults.fail("put")
        obstore_async_session.add(Document(title="t", file=obstore_file_factory()))
        with pytest.raises(InjectedFault):
            await obstore_async_session.commit()
        await obstore_async_session.rollback()
        assert list(obstore_memory_backend.list_objects()) == []
        assert (await obstore_async_session.scalars(select(Document))).all() == []
"""

TEST_ANYIO = """
    import asyncio

    import pytest

    from myapp.models import Document

    pytestmark = pytest.mark.anyio


    @pytest.fixture
    def anyio_backend():
        return "asyncio"


    @pytest.fixture
    async def loop_of_fixtures(obstore_async_session):
        return asyncio.get_running_loop()


    async def test_anyio_runs_the_async_fixtures(
        obstore_async_session, obstore_file_factory, obstore_memory_backend, loop_of_fixtures
    ):
        assert asyncio.get_running_loop() is loop_of_fixtures  # one event loop for all
        doc = Document(title="t", file=obstore_file_factory())
        obstore_async_session.add(doc)
        await obstore_async_session.commit()
        assert obstore_memory_backend.get_bytes(doc.file.path) == await doc.file.get_content_async()
"""

TEST_FACTORIES = """
    from sqlalchemy import select

    from myapp.models import Document
    from sqlalchemy_obstore.contrib.polyfactory import ObstoreSQLAlchemyFactory


    class DocumentFactory(ObstoreSQLAlchemyFactory[Document]):
        __min_collection_length__ = 1
        __randomize_collection_length__ = True


    def test_factory_rows_with_files(obstore_session, obstore_memory_backend):
        DocumentFactory.__session__ = obstore_session
        docs = DocumentFactory.create_batch_sync(3)
        paths = sorted(f.path for d in docs for f in (d.file, *d.pages))
        assert sorted(i.path for i in obstore_memory_backend.list_objects()) == paths
        assert len(obstore_session.scalars(select(Document)).all()) == 3
"""

INI = """
    [pytest]
    addopts = --strict-config --strict-markers -p no:cacheprovider
    pythonpath = .
    testpaths = tests
    asyncio_mode = strict
    asyncio_default_fixture_loop_scope = function
    filterwarnings =
        error
        ignore:The declarative_mixin decorator:DeprecationWarning
    obstore_backends = uploads avatars
    obstore_metadata = myapp.models:Base
"""


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's project; yields the production storage directory, which must stay empty."""
    storage = tmp_path / "production-storage"
    monkeypatch.setenv("MYAPP_STORAGE", storage.as_uri())
    pytester.makeini(textwrap.dedent(INI))
    pytester.mkpydir("myapp")
    for name, source in {"models": MODELS, "storage": STORAGE}.items():
        (pytester.path / "myapp" / f"{name}.py").write_text(textwrap.dedent(source))
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    tests = pytester.mkdir("tests")
    files = {
        "test_sync": TEST_SYNC,
        "test_async": TEST_ASYNC,
        "test_anyio": TEST_ANYIO,
        "test_factories": TEST_FACTORIES,
    }
    for name, source in files.items():
        (tests / f"{name}.py").write_text(textwrap.dedent(source))
    return storage


def nothing_stored_in(directory: Path) -> bool:
    return not directory.exists() or not any(directory.rglob("*"))


def test_the_plugin_in_strict_mode(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=14)
    assert nothing_stored_in(project)


def test_the_plugin_in_auto_mode(pytester: pytest.Pytester, project: Path) -> None:
    # pytest-asyncio's auto mode claims every async test, anyio's too: run those apart
    result = pytester.runpytest_subprocess(
        "-o", "asyncio_mode=auto", "--ignore=tests/test_anyio.py"
    )
    result.assert_outcomes(passed=13)
    assert nothing_stored_in(project)


def test_anyio_without_pytest_asyncio(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:asyncio", "tests/test_anyio.py", "tests/test_sync.py",
        # the ini options of the disabled plugin are unknown now
        "-o", "addopts=--strict-markers -p no:cacheprovider",
        "-W", "ignore::pytest.PytestConfigWarning",
    )  # fmt: skip
    result.assert_outcomes(passed=11)


def test_keys_from_the_metadata(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess(
        "-o", "obstore_backends=", "tests/test_sync.py::test_keys"
    )
    result.assert_outcomes(passed=1)


def test_opting_out(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:sqlalchemy_obstore.pytest_plugin",
        "-o", "addopts=-p no:cacheprovider",
        "-W", "ignore::pytest.PytestConfigWarning",  # its ini options are unknown now
        "-W", "ignore::pytest.PytestUnknownMarkWarning",  # and so is its marker
        "tests/test_sync.py::test_registry_is_isolated",
    )  # fmt: skip
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'obstore_registry' not found*"])


def test_loading_it_again_is_harmless(pytester: pytest.Pytester, project: Path) -> None:
    pytester.makeconftest(
        textwrap.dedent(CONFTEST) + 'pytest_plugins = ["sqlalchemy_obstore.pytest_plugin"]\n'
    )
    result = pytester.runpytest_subprocess(
        "-p", "sqlalchemy_obstore.pytest_plugin", "tests/test_sync.py::test_registry_is_isolated"
    )  # fmt: skip
    result.assert_outcomes(passed=1)


def test_a_wrong_ini_option_names_itself(pytester: pytest.Pytester, project: Path) -> None:
    result = pytester.runpytest_subprocess(
        "-o", "obstore_metadata=myapp.models:Nope",
        "tests/test_sync.py::test_a_reader_does_not_block_a_writer",
    )  # fmt: skip
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*obstore_metadata ini option names 'myapp.models:Nope'*"])


# -- the how-to page's examples -------------------------------------------------------------------
PAGE = "how-to/testing.md"

READERS_APP = """
    from collections.abc import AsyncIterator
    from dataclasses import dataclass
    from typing import Annotated, Any

    from litestar import Litestar, post
    from litestar.datastructures import UploadFile
    from litestar.di import NamedDependency, Provide
    from litestar.enums import RequestEncodingType
    from litestar.params import Body
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from myapp.models import Document
    from sqlalchemy_obstore import FileObject, ObstoreBackend
    from sqlalchemy_obstore.contrib.litestar import ObstoreConfig, ObstorePlugin


    @dataclass
    class Upload:
        file: UploadFile


    @post("/documents")
    async def upload(
        data: Annotated[Upload, Body(media_type=RequestEncodingType.MULTI_PART)],
        db_session: NamedDependency[AsyncSession],
    ) -> dict[str, Any]:
        document = Document(title=data.file.filename, file=FileObject.from_upload(data.file))
        db_session.add(document)
        await db_session.commit()
        return {"id": document.id, "file": document.file}


    def create_app(sessions: async_sessionmaker[AsyncSession]) -> Litestar:
        async def db_session() -> AsyncIterator[AsyncSession]:
            async with sessions() as session:
                yield session

        storage = ObstorePlugin(
            ObstoreConfig(
                backends=[ObstoreBackend("uploads", "s3://myapp/", prefix="docs")],
                signing_secret="myapp-signing-secret-of-at-least-32-bytes",
                signed_url_expires_in=300,
            )
        )
        dependencies = {"db_session": Provide(db_session)}
        return Litestar([upload], plugins=[storage], dependencies=dependencies)
"""
"""The reader's application, as the page describes it (`create_app(sessionmaker)` registers
`ObstoreBackend("uploads", "s3://...", prefix="docs")` and signs URLs)."""

READERS_CONFTEST_CHECKS = """
    from sqlalchemy_obstore import ObstoreBackend, storages


    def test_the_plain_fixture(storage):
        assert storages.get_backend("uploads") is storage


    def test_a_temporary_registry(scratch_storage):
        assert list(storages) == ["uploads"]


    def test_overrides(stand_ins):
        storages.register_backend(ObstoreBackend("media", "s3://media/"))
        assert storages.get_backend("media").kind == "memory"
"""
"""Uses of the page's `conftest.py` fixtures (the page defines them, its tests do not use
them)."""


def test_the_how_to_page_examples_run(pytester: pytest.Pytester) -> None:
    """Every block of docs/how-to/testing.md runs as written, in the files the page names
    (`tests/docs_snippets.py`), with the page's configuration, the tutorial's `models.py`
    (the page's tests use its `Document`) and an application as the page describes."""
    (ini,) = code_blocks(PAGE, "ini")
    pytester.makefile(
        ".ini",
        pytest=ini.code + "pythonpath = .\naddopts = --strict-config --strict-markers\n"
        "filterwarnings =\n    error\n"
        "    ignore:The declarative_mixin decorator:DeprecationWarning\n",
    )
    pytester.mkpydir("myapp")
    (models,) = [b for b in code_blocks("tutorial.md") if b.file_name == "models.py"]
    (pytester.path / "myapp" / "models.py").write_text(models.code)
    (pytester.path / "myapp" / "app.py").write_text(textwrap.dedent(READERS_APP))
    files = page_files(runnable(code_blocks(PAGE)))
    assert [f.name for f in files] == [
        "tests/test_documents.py",
        "tests/test_app.py",
        "tests/test_faults.py",
        "tests/test_factories.py",
        "conftest.py",
    ]
    for file in files:
        path = pytester.path / file.name
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n\n".join(block.code for block in file.blocks))
    checks = pytester.path / "tests" / "test_conftest_fixtures.py"
    checks.write_text(textwrap.dedent(READERS_CONFTEST_CHECKS))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3 + 1 + 3 + 2 + 3)
