"""Recording the library's telemetry with the real OpenTelemetry SDK, in memory.

`recording()` gives the library a `TracerProvider` that exports to an
`InMemorySpanExporter` and a `MeterProvider` read by an `InMemoryMetricReader` (through
`configure_telemetry`, so nothing global is set and every test starts clean), and puts
the library back on the global providers afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sqlalchemy_obstore.telemetry import configure_telemetry


@dataclass
class Recorded:
    """What the library reported while recording."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """The finished spans (named `name`), in the order they ended."""
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span named `name`."""
        found = self.spans(name)
        assert len(found) == 1, [(s.name, dict(s.attributes or {})) for s in self.spans()]
        return found[0]

    def clear(self) -> None:
        self.exporter.clear()

    def counter(self, name: str) -> dict[frozenset[tuple[str, Any]], int]:
        """The counter `name`: its value for each set of attributes (empty: never added)."""
        values: dict[frozenset[tuple[str, Any]], int] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            values[frozenset((point.attributes or {}).items())] = point.value
        return values


@contextmanager
def recording(*, record_paths: bool = False) -> Iterator[Recorded]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    configure_telemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider, record_paths=record_paths
    )
    try:
        yield Recorded(exporter, reader)
    finally:
        configure_telemetry()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def attribute_values(spans: list[ReadableSpan]) -> list[str]:
    """Every attribute and event attribute value of `spans`, as text."""
    values: list[str] = []
    for span in spans:
        values += [str(v) for v in (span.attributes or {}).values()]
        for event in span.events:
            values += [str(v) for v in (event.attributes or {}).values()]
        if span.status.description:
            values.append(span.status.description)
    return values
