"""Run reports as JSON-ready data: what `migrate` and `reprocess` reports share.

Both reports are dataclasses with a `failures` list (each failure names its row by a
primary-key tuple, whose values may be of any column type) and an `ok` property; the
CLI prints them as JSON. One conversion serves both.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar, Protocol

__all__ = ("report_data",)


class _Report(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def failures(self) -> list[Any]: ...

    @property
    def ok(self) -> bool: ...


def report_data(report: _Report) -> dict[str, Any]:
    """`report` (a dataclass) as JSON-ready data: primary keys as lists, `ok` included."""
    data = asdict(report)
    data["failures"] = [
        {**asdict(f), "primary_key": [_jsonable(v) for v in f.primary_key]} for f in report.failures
    ]
    data["ok"] = report.ok
    return data


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
