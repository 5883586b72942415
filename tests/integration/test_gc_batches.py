"""How the collector groups its work: live re-checks per group of candidates, deletes per batch.

The live re-check scans the file columns, so doing it once per listing page made a
collection over N rows cost (pages x N); `benchmarks/gc_scale.py` showed it (100,000
rows: 34 s). Candidates of several pages are now re-checked together.
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
from sqlalchemy_obstore import gc as gc_module
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

    def counting(connection: Any, columns: Any, paths: Any) -> set[str]:
        calls.append(len(paths))
        return original(connection, columns, paths)

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


async def test_candidates_are_rechecked_in_bounded_groups(
    sqlite_async_engine: AsyncEngine, spy: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gc_module, "_RECHECK_SIZE", 30)  # memory stays bounded by the group
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
    assert all(30 <= size < 30 + 7 for size in spy[:-1])  # full groups: 30 to 36 candidates
    assert 0 < spy[-1] < 30 + 7
