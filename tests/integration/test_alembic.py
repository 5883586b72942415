"""Alembic autogenerate renders `StoredObject` columns into migrations that run.

Each test runs a real `alembic revision --autogenerate` in a temporary script directory
(with an `env.py` wired to `render_item`), imports nothing by hand, and then runs
`alembic upgrade head` on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

alembic = pytest.importorskip("alembic")

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select, text  # noqa: E402
from sqlalchemy.dialects.postgresql import JSONB  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.types import JSON  # noqa: E402

from sqlalchemy_obstore import (  # noqa: E402
    BackendRegistry,
    FileObject,
    StoredObject,
    UploadPolicy,
)
from sqlalchemy_obstore.keys import uuid_key  # noqa: E402

ENV_PY = """
from alembic import context

from sqlalchemy_obstore.contrib.alembic import chain_render_items

config = context.config
target_metadata = config.attributes["metadata"]


def include_name(name, type_, parent_names):
    # The PostgreSQL test database is shared: look only at this test's tables.
    return type_ != "table" or name in target_metadata.tables


def render_nothing(type_, obj, autogen_context):
    return False


context.configure(
    connection=config.attributes["connection"],
    target_metadata=target_metadata,
    render_item=chain_render_items(render_nothing),
    include_name=include_name,
    version_table=config.attributes["version_table"],
)
with context.begin_transaction():
    context.run_migrations()
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, sqlite_engine: Engine) -> Engine:
    if request.param == "sqlite":
        return sqlite_engine
    pg: Engine = request.getfixturevalue("pg_engine")
    return pg


@pytest.fixture
def script_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(ENV_PY)
    template = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
    shutil.copy(template, directory / "script.py.mako")
    return directory


class Migrations:
    """Autogenerate and apply migrations for one metadata on one engine."""

    def __init__(self, engine: Engine, directory: Path, metadata: MetaData) -> None:
        self.engine = engine
        self.directory = directory
        self.metadata = metadata
        self.version_table = f"alembic_version_{uuid.uuid4().hex[:8]}"

    def _run(self, action: Any, *args: Any, **kwargs: Any) -> Any:
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        with self.engine.begin() as connection:
            config.attributes.update(
                connection=connection,
                metadata=self.metadata,
                version_table=self.version_table,
            )
            return action(config, *args, **kwargs)

    def revision(self) -> str:
        script = self._run(command.revision, message="files", autogenerate=True)
        return Path(script.path).read_text()

    def upgrade(self) -> None:
        self._run(command.upgrade, "head")

    def drop(self) -> None:
        with self.engine.begin() as connection:
            for table in self.metadata.tables:
                connection.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
            connection.execute(text(f'DROP TABLE IF EXISTS "{self.version_table}"'))


@pytest.fixture
def migrations(engine: Engine, script_dir: Path) -> Iterator[Migrations]:
    created = Migrations(engine, script_dir, MetaData())
    yield created
    created.drop()


def _table_name() -> str:
    return f"docs_{uuid.uuid4().hex[:8]}"


def test_autogenerate_renders_stored_object_and_upgrade_creates_json_column(
    migrations: Migrations, engine: Engine
) -> None:
    name = _table_name()
    Table(
        name,
        migrations.metadata,
        Column("id", Integer, primary_key=True),
        Column("file", StoredObject("uploads", key_prefix="docs", cache_control="no-cache")),
        Column(
            "scans",
            StoredObject(
                "uploads",
                multiple=True,
                keep_replaced=True,
                track=False,
                key_function=uuid_key,
                policy=UploadPolicy(max_size=1024, allowed_content_types=("image/*",)),
            ),
        ),
    )

    source = migrations.revision()

    assert "from sqlalchemy_obstore import StoredObject" in source
    assert "from sqlalchemy_obstore import UploadPolicy" in source
    assert "import sqlalchemy_obstore.keys" in source
    assert "StoredObject('uploads', key_prefix='docs', cache_control='no-cache')" in source
    assert (
        "StoredObject('uploads', multiple=True, key_function=sqlalchemy_obstore.keys.uuid_key, "
        "keep_replaced=True, track=False, policy=UploadPolicy(max_size=1024, "
        "allowed_content_types=('image/*',)))"
    ) in source
    assert "sqlalchemy_obstore.types" not in source
    compile(source, "migration.py", "exec")

    migrations.upgrade()

    columns = {c["name"]: c["type"] for c in inspect(engine).get_columns(name)}
    expected = JSONB if engine.dialect.name == "postgresql" else JSON
    assert isinstance(columns["file"], expected)
    assert isinstance(columns["scans"], expected)

    # The migrated table stores and reads files through the column type.
    table = migrations.metadata.tables[name]
    with engine.begin() as connection:
        connection.execute(
            table.insert().values(id=1, file=FileObject(backend="uploads", path="docs/a.txt"))
        )
        stored = connection.execute(select(table.c.file)).scalar_one()
    assert stored == FileObject(backend="uploads", path="docs/a.txt")


def test_unrenderable_arguments_become_a_comment_and_the_migration_still_runs(
    migrations: Migrations, engine: Engine
) -> None:
    name = _table_name()
    Table(
        name,
        migrations.metadata,
        Column("id", Integer, primary_key=True),
        Column(
            "file",
            StoredObject(
                "uploads",
                key_function=lambda filename: f"x/{filename}",
                registry=BackendRegistry(),
                policy=UploadPolicy(max_size=10, validators=[lambda file, head: None]),
            ),
        ),
        Column(
            "avatar",
            StoredObject("uploads", policy=UploadPolicy(validators=[lambda file, head: None])),
        ),
    )

    source = migrations.revision()

    assert "# sqlalchemy-obstore: not rendered (no effect on the schema): " in source
    assert "key_function=<" in source
    assert "registry=<BackendRegistry object>" in source
    assert "policy.validators" in source
    assert "policy=UploadPolicy(max_size=10)" in source
    assert "lambda" not in source.split("# sqlalchemy-obstore")[0]
    compile(source, "migration.py", "exec")

    migrations.upgrade()

    columns = {c["name"]: c["type"] for c in inspect(engine).get_columns(name)}
    expected = JSONB if engine.dialect.name == "postgresql" else JSON
    assert isinstance(columns["file"], expected)
    assert isinstance(columns["avatar"], expected)


def test_autogenerate_after_upgrade_finds_no_changes(migrations: Migrations) -> None:
    Table(
        _table_name(),
        migrations.metadata,
        Column("id", Integer, primary_key=True),
        Column("file", StoredObject("uploads")),
    )
    migrations.revision()
    migrations.upgrade()

    source = migrations.revision()

    assert "op.add_column" not in source
    assert "op.alter_column" not in source
    assert "op.create_table" not in source
    assert "op.drop_" not in source
