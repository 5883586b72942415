"""How the collector groups its work: live re-checks per group of candidates, deletes per batch.

The live re-check scans the file columns, so doing it once per listing page made a
collection over N rows cost (pages x N); `benchmarks/gc_scale.py` showed it (100,000
rows: 34 s). Candidates of several pages are re-checked together, and the groups
double: with a fixed group of 10,000, a store with 100,000 orphans over 1,000,000 rows
took ten scans (31 s of 55 s), a million orphans a hundred.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlalchemy_obstore import (
    FileObject,
    ObstoreBackend,
    collect_garbage,
    collect_garbage_async,
    storages,
)
from sqlalchemy_obstore import _gc as gc_module
from sqlalchemy_obstore.testing import FaultInjectingBackend
from tests.integration.test_gc import LATER, make_models

pytestmark = pytest.mark.integration


def populate(engine: Engine, backend: ObstoreBackend) -> Any:
    """300 objects under the prefix; every third one (100, on every page) an orphan."""
    base, doc = make_models(backend.key)
    base.metadata.create_all(engine)
    rows = []
    for i in range(300):
        path = f"data/{i:05d}"
        backend.put(path, b"xy")
        if i % 3:
            rows.append({"id": i, "file": FileObject(backend=backend.key, path=path), "pages": []})
    with engine.begin() as conn:
        conn.execute(insert(doc.__table__), rows)
    return base


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the live re-checks the collector makes."""
    calls: list[int] = []
    original = gc_module._live_references

    def counting(connection: Any, columns: Any, candidates: Any) -> set[str]:
        calls.append(candidates.count)
        return original(connection, columns, candidates)

    monkeypatch.setattr(gc_module, "_live_references", counting)
    return calls


def test_one_live_recheck_for_all_candidates_of_a_small_run(
    sqlite_engine: Engine, spy: list[int]
) -> None:
    backend = ObstoreBackend("bulk", "memory://", prefix="data")
    faulty = FaultInjectingBackend(backend)  # counts the delete calls
    storages.register_backend(faulty)
    base = populate(sqlite_engine, backend)
    report = collect_garbage(sqlite_engine, base, **LATER, dry_run=False, batch_size=7)
    assert (report.scanned, report.referenced, report.orphaned) == (300, 200, 100)
    assert report.deleted == 100
    assert report.bytes_freed == 200
    assert spy == [100]  # not one per page (43 pages)
    assert faulty.calls["delete"] == 15  # deletes still go in batches of batch_size (7)
    assert len(list(backend.list_objects("data"))) == 200


async def test_candidates_are_rechecked_in_groups_that_double(
    sqlite_async_engine: AsyncEngine, spy: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gc_module, "_RECHECK_SIZE", 20)
    backend = ObstoreBackend("bulk", "memory://", prefix="data")
    storages.register_backend(backend)
    writer = create_engine(sqlite_async_engine.url.set(drivername="sqlite"))
    base = populate(writer, backend)
    writer.dispose()
    report = await collect_garbage_async(sqlite_async_engine, base, **LATER, batch_size=7)
    assert report.orphaned == 100
    assert sorted(report.backends["bulk"].orphan_paths) == [
        f"data/{i:05d}" for i in range(0, 300, 3)
    ]
    assert sum(spy) == 100
    # full groups of at least 20, then 40 (a page adds up to 7 at a time), then the rest
    assert len(spy) == 3
    assert 20 <= spy[0] < 20 + 7
    assert 40 <= spy[1] < 40 + 7
    assert 0 < spy[2] < 80


@pytest.mark.parametrize("engine_fixture", ["sqlite_engine", "pg_engine"])
def test_the_groups_stop_doubling_at_the_largest(
    engine_fixture: str,
    request: pytest.FixtureRequest,
    spy: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine: Engine = request.getfixturevalue(engine_fixture)
    monkeypatch.setattr(gc_module, "_RECHECK_SIZE", 10)
    monkeypatch.setattr(gc_module, "_RECHECK_MAX", 20)
    backend = ObstoreBackend("bulk", "memory://", prefix="data")
    storages.register_backend(backend)
    base = populate(engine, backend)
    report = collect_garbage(engine, base, **LATER, dry_run=False, batch_size=7)
    assert report.deleted == 100
    assert sum(spy) == 100
    assert 10 <= spy[0] < 10 + 7
    assert all(20 <= size < 20 + 7 for size in spy[1:-1])
    assert len(list(backend.list_objects("data"))) == 200


ODD_VALUES: list[Any] = [
    {"path": "plain"},
    {"path": "own", "backend": "other"},
    {"path": "empty-backend", "backend": ""},
    {"path": "null-backend", "backend": None},
    {"path": "false-backend", "backend": False},  # falsy: the column's backend
    {"path": "number-backend", "backend": 5},  # not a key: no reference
    {"path": ""},
    {"path": 7},
    {"path": {"nested": "x"}},
    {"backend": "other"},
    {"path": "with-null-renditions", "renditions": None},
    {"path": "with-list-renditions", "renditions": ["x"]},
    {"path": "main", "backend": "other", "renditions": {"thumb": {"path": "thumb"}}},
    {"renditions": {"thumb": {"path": "orphan-rendition", "backend": ""}}},
    [{"path": "item-1"}, {"path": "item-2", "backend": "other"}, "junk", None],
    [],
    "a string",
    42,
    None,
]


@pytest.mark.parametrize("engine_fixture", ["sqlite_engine", "pg_engine"])
def test_the_database_reads_the_references_the_walker_reads(
    engine_fixture: str, request: pytest.FixtureRequest
) -> None:
    from sqlalchemy import JSON, Column, Integer, MetaData, Table, select

    from sqlalchemy_obstore import StoredObject, _column, _gc_sql
    from sqlalchemy_obstore._file_columns import target_columns

    engine: Engine = request.getfixturevalue(engine_fixture)
    metadata = MetaData()
    table = Table(
        "odd_values",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("file", StoredObject("files")),
    )
    metadata.create_all(engine)
    raw = table.c.file.type.load_dialect_impl(engine.dialect)
    plain = Table("odd_values", MetaData(), Column("id", Integer), Column("file", raw or JSON))
    with engine.begin() as conn:  # raw JSON, bypassing the type's validation
        conn.execute(insert(plain), [{"id": i, "file": v} for i, v in enumerate(ODD_VALUES)])
    expected = [
        (backend, data["path"])
        for value in ODD_VALUES
        for data, backend in _column.stored_files(value, "files")
    ]
    (column,) = target_columns(metadata)
    with engine.connect() as conn:  # batches of 3 rows: plain and other rows in most
        refs = _gc_sql.ReferenceTable(conn, "odd_refs")
        refs.create()
        counts = list(refs.stage(column, 3))
        found = [tuple(row) for row in conn.execute(select(refs.table))]
        refs.drop()
    assert sorted(found) == sorted(expected)
    assert sum(counts) == len(expected)
    assert 1 < len(counts) <= len(ODD_VALUES) // 3 + 1  # batches of 3 rows (keyset ranges)
    assert ("files", "false-backend") in found
    assert not [ref for ref in found if ref[1] == "number-backend"]


def test_pages_are_looked_up_exactly_among_references_to_missing_objects(
    sqlite_engine: Engine,
) -> None:
    backend = ObstoreBackend("bulk", "memory://", prefix="data")
    storages.register_backend(backend)
    base, doc = make_models(backend.key)
    base.metadata.create_all(sqlite_engine)
    # Listed: data/a-0 ... ; referenced: those and 200 missing objects between them.
    rows = []
    for i in range(20):
        backend.put(f"data/a-{i:03d}", b"x")
        rows.append({"id": i, "file": FileObject(backend="bulk", path=f"data/a-{i:03d}")})
    for i in range(200):
        missing = FileObject(backend="bulk", path=f"data/a-005-missing-{i:03d}")
        rows.append({"id": 100 + i, "file": missing, "pages": []})
    backend.put("data/a-010-orphan", b"x")
    with sqlite_engine.begin() as conn:
        conn.execute(insert(doc.__table__), [{"pages": [], **row} for row in rows])
    report = collect_garbage(sqlite_engine, base, **LATER, batch_size=7)
    assert (report.scanned, report.referenced, report.orphaned) == (21, 20, 1)
    assert report.backends["bulk"].orphan_paths == ["data/a-010-orphan"]
