"""What one stored image of a row needs from reprocessing, and the row once it is done.

Decided from the row alone, without I/O: a stored image (`image_backend`: a raw entry
with a path, and no content type but an image one) needs work (`needs`) when its
column's policy names a rendition it does not hold made to that spec, or when its width
and height are not recorded. The run (`_reprocess_run`) has each such `Work` done
(`_reprocess_image`), then writes back `applied`: a copy of the column's raw value with
the results, and the paths of the renditions they replace, deleted after the commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._column import ImageFacts, is_renditions
from ._file_columns import FileColumn
from ._processing import ImagePolicy, Rendition
from ._registry import BackendRegistry

__all__ = ("Target", "Work", "applied", "image_backend", "needs")


@dataclass(frozen=True, slots=True)
class Target:
    """A column to reprocess, with the image policy that applies to it."""

    column: FileColumn
    policy: ImagePolicy
    registry: BackendRegistry  # the column's own, else the one `reprocess` was given


@dataclass(slots=True)
class Work:
    """One stored image of a row that needs work."""

    target: Target
    index: int | None  # its position in a list column, `None` for a single-file column
    entry: Mapping[str, Any]
    backend: str
    build: tuple[Rendition, ...]  # renditions to (re)build
    facts: bool  # whether its width and height are missing
    # what doing it gave:
    image: ImageFacts | None = None
    renditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    written: int = 0
    error: str | None = None

    @property
    def path(self) -> str:
        path: str = self.entry["path"]
        return path


def _image_facts(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("width"), int)
        and isinstance(value.get("height"), int)
    )


def _spec(rendition: Mapping[str, Any] | None) -> Any:
    """The spec a stored rendition records it was made to (`None`: absent or unknown)."""
    facts = rendition.get("image") if rendition is not None else None
    return facts.get("spec") if isinstance(facts, Mapping) else None


def image_backend(entry: Any, default: str | None) -> str | None:
    """The backend of `entry` when it is a raw stored image (else `None`)."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
        return None
    backend = entry.get("backend") or default
    content_type = entry.get("content_type")
    if not isinstance(backend, str) or (
        isinstance(content_type, str) and not content_type.startswith("image/")
    ):
        return None
    return backend


def needs(target: Target, index: int | None, entry: Mapping[str, Any], backend: str) -> Work | None:
    """The work a raw stored image needs under `target`'s policy, if any."""
    held = entry.get("renditions") or {}
    if not is_renditions(held):
        held = {}
    build = tuple(r for r in target.policy.renditions if _spec(held.get(r.name)) != r.spec)
    facts = not _image_facts(entry.get("image"))
    if not build and not facts:
        return None
    return Work(target, index, entry, backend, build, facts)


def applied(data: Any, work: Work) -> tuple[Any, list[tuple[str, str]]]:
    """A copy of the raw column value `data` with `work`'s results; the paths it replaced."""
    if work.index is None:
        entry = dict(data)
    else:
        data = list(data)
        entry = dict(data[work.index])
    if work.image is not None and work.facts:
        entry["image"] = work.image.to_dict()
    gone: list[tuple[str, str]] = []
    if work.renditions:
        held = entry.get("renditions")
        renditions = dict(held) if is_renditions(held) else {}
        for name, new in work.renditions.items():
            previous = renditions.get(name)
            if previous is not None and previous.get("path") != new["path"]:
                gone.append((previous.get("backend") or work.backend, previous["path"]))
            renditions[name] = new
        entry["renditions"] = renditions
    if work.index is None:
        return entry, gone
    data[work.index] = entry
    return data, gone
