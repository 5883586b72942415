"""OpenTelemetry spans of backend operations, recorded by the real SDK (memory backend).

One span per operation, sync or async alike, with the backend, the store, the outcome
and sizes; a cached signed URL makes none; failures carry their error type, and their
message (which names the path) only with `record_paths=True`; and without
`opentelemetry` installed the library works exactly as before.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import sqlalchemy_obstore
from sqlalchemy_obstore import FileObject, InvalidObjectPathError, ObstoreBackend, storages
from sqlalchemy_obstore.telemetry import SPAN_NAMES, available
from tests.otel import Recorded, attribute_values, recording

UPLOAD, DELETE, SIGN = (SPAN_NAMES[n] for n in ("upload", "delete", "sign"))


@pytest.fixture
def otel() -> Iterator[Recorded]:
    with recording() as recorded:
        yield recorded


@pytest.fixture
def memory() -> ObstoreBackend:
    backend = ObstoreBackend("files", "memory://", prefix="docs")
    storages.register_backend(backend, default=True)
    return backend


def test_the_api_is_found() -> None:
    assert available()


def test_save_sign_delete_make_one_span_each(otel: Recorded, memory: ObstoreBackend) -> None:
    file = FileObject(filename="a.txt", content=b"hello").save()
    file.sign(expires_in=600)
    file.sign(expires_in=600)  # cached: no second span
    file.delete()

    assert [s.name for s in otel.spans()] == [UPLOAD, SIGN, DELETE]
    upload = otel.span(UPLOAD)
    assert upload.kind is SpanKind.CLIENT
    assert dict(upload.attributes or {}) == {
        "sqlalchemy_obstore.operation": "upload",
        "sqlalchemy_obstore.backend": "files",
        "sqlalchemy_obstore.store": "memory",
        "sqlalchemy_obstore.outcome": "success",
        "sqlalchemy_obstore.object.size": 5,
    }
    assert upload.status.status_code is StatusCode.UNSET
    sign = otel.span(SIGN)
    assert sign.kind is SpanKind.INTERNAL
    assert sign.attributes is not None
    assert sign.attributes["sqlalchemy_obstore.sign.method"] == "GET"
    assert sign.attributes["sqlalchemy_obstore.sign.expires_in"] == 600
    assert sign.attributes["sqlalchemy_obstore.object.count"] == 1
    assert otel.span(DELETE).attributes == {
        "sqlalchemy_obstore.operation": "delete",
        "sqlalchemy_obstore.backend": "files",
        "sqlalchemy_obstore.store": "memory",
        "sqlalchemy_obstore.outcome": "success",
        "sqlalchemy_obstore.object.count": 1,
    }
    assert not any(file.path in value for value in attribute_values(otel.spans()))


async def test_async_operations_make_one_span_each(otel: Recorded, memory: ObstoreBackend) -> None:
    # (on memory, put_buffer_async and sign_async call the sync methods: still one span)
    file = await FileObject(filename="a.txt", content=b"hello").save_async()
    await file.sign_async()
    await memory.sign_async([file.path or "", file.path or ""], method="PUT")
    await file.delete_async()

    assert [s.name for s in otel.spans()] == [UPLOAD, SIGN, SIGN, DELETE]
    batch = otel.spans(SIGN)[1]
    assert batch.attributes is not None
    assert batch.attributes["sqlalchemy_obstore.object.count"] == 2
    assert batch.attributes["sqlalchemy_obstore.sign.method"] == "PUT"


def test_a_streamed_upload_records_no_size_it_does_not_know(
    otel: Recorded, memory: ObstoreBackend
) -> None:
    chunks = iter([b"a" * 10, b"b" * 10])
    memory.put("docs/stream.bin", chunks)
    memory.put("docs/buffer.bin", b"c" * 7)

    first, second = otel.spans(UPLOAD)
    assert "sqlalchemy_obstore.object.size" not in (first.attributes or {})
    assert (second.attributes or {})["sqlalchemy_obstore.object.size"] == 7


@pytest.mark.parametrize("record_paths", [False, True])
def test_a_failure_records_its_type_and_its_message_only_with_paths_on(
    memory: ObstoreBackend, record_paths: bool
) -> None:
    outside = "elsewhere/secret-customer-42.pdf"  # outside the prefix: refused
    with recording(record_paths=record_paths) as otel:
        with pytest.raises(InvalidObjectPathError):
            memory.delete(outside)
        with pytest.raises(InvalidObjectPathError):
            memory.delete(outside)
    span = otel.spans(DELETE)[0]
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["sqlalchemy_obstore.outcome"] == "failure"
    assert attributes["error.type"] == "sqlalchemy_obstore.errors.InvalidObjectPathError"
    [event] = span.events
    assert event.name == "exception"
    values = attribute_values([span])
    if record_paths:
        assert attributes["sqlalchemy_obstore.object.path"] == outside
        assert event.attributes is not None
        assert outside in str(event.attributes["exception.message"])
        assert "Traceback" in str(event.attributes["exception.stacktrace"])
    else:
        assert not any("secret-customer" in value for value in values), values
        assert "sqlalchemy_obstore.object.path" not in attributes


def test_paths_are_recorded_when_asked(memory: ObstoreBackend) -> None:
    with recording(record_paths=True) as otel:
        file = FileObject(filename="a.txt", content=b"x").save()
    assert (otel.span(UPLOAD).attributes or {})["sqlalchemy_obstore.object.path"] == file.path


def test_nothing_is_recorded_once_the_providers_are_reset(memory: ObstoreBackend) -> None:
    with recording() as otel:
        pass
    FileObject(filename="a.txt", content=b"x").save()  # (back on the global providers)
    assert otel.spans() == []


def run_script(script: str, cwd: Path, *, block_opentelemetry: bool = False) -> str:
    """Run `script` in a fresh interpreter on this checkout; return what it printed."""
    prelude = "import sys; sys.modules['opentelemetry'] = None\n" if block_opentelemetry else ""
    source = Path(sqlalchemy_obstore.__file__).parents[1]
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"},
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_global_providers_are_used_from_the_moment_they_are_set(tmp_path: Path) -> None:
    # A fresh process: the global providers can be set once only.
    script = """
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from sqlalchemy_obstore import FileObject, ObstoreBackend, storages

        storages.register_backend(ObstoreBackend("m", "memory://"), default=True)
        FileObject(filename="before.txt", content=b"x").save()  # no provider yet

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        FileObject(filename="after.txt", content=b"xy").save().delete()
        print([(s.name, s.instrumentation_scope.name) for s in exporter.get_finished_spans()])
    """
    assert run_script(script, tmp_path) == (
        "[('sqlalchemy_obstore.upload', 'sqlalchemy_obstore'), "
        "('sqlalchemy_obstore.delete', 'sqlalchemy_obstore')]"
    )


def test_without_opentelemetry_everything_works_and_nothing_is_imported(
    tmp_path: Path,
) -> None:
    script = """
        import asyncio, sys
        from datetime import timedelta
        from sqlalchemy import Column, Integer, MetaData, Table, create_engine
        from sqlalchemy_obstore import (
            FileObject, MissingDependencyError, ObstoreBackend, StoredObject, storages,
            collect_garbage,
        )
        from sqlalchemy_obstore.telemetry import available, configure_telemetry

        storages.register_backend(ObstoreBackend("m", "memory://"), default=True)
        file = FileObject(filename="a.txt", content=b"hello").save()
        assert file.get_content() == b"hello" and file.sign().startswith("/_storage/m/")

        async def main():
            other = await FileObject(filename="b.txt", content=b"b").save_async()
            await other.sign_async()
            await other.delete_async()
        asyncio.run(main())

        metadata = MetaData()
        Table("t", metadata, Column("id", Integer, primary_key=True),
              Column("file", StoredObject("m")))
        engine = create_engine("sqlite://")
        metadata.create_all(engine)
        report = collect_garbage(engine, metadata, grace_period=timedelta(0), dry_run=False,
                                 allow_unsafe_grace_period=True)
        engine.dispose()
        assert report.deleted == 1, report
        assert not available()
        configure_telemetry(record_paths=True)  # harmless
        try:
            configure_telemetry(tracer_provider=object())
        except MissingDependencyError:
            pass
        else:
            raise AssertionError("a provider without the API must be refused")
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
    """
    assert run_script(script, tmp_path, block_opentelemetry=True) == "['opentelemetry']"
