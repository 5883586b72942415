"""The image job of an upload under an `ImagePolicy`: check, normalise, render.

[`process_image`][sqlalchemy_obstore._image_job.process_image] (and its async twin) runs
the job on an image worker thread (see
[`ProcessingLimits`][sqlalchemy_obstore.processing.ProcessingLimits]): it opens and
inspects the header (`_image_work`, planned by `_image_plan`), reserves the memory the
plan needs, decodes once and encodes the normalised original and every rendition.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ._column import ImageFacts
from ._errors import ImageTooLargeError, InvalidImageError, StorageError
from ._image_work import inspect_image, mime, open_image, pil, render
from ._offload import hold_memory, run_in_worker, run_in_worker_async
from ._processing import ImagePolicy, Rendition

__all__ = (
    "Derived",
    "Processed",
    "process_image",
    "process_image_async",
    "rendition_filename",
)


@dataclass(frozen=True, slots=True)
class Derived:
    """One rendition, encoded."""

    rendition: Rendition
    data: bytes
    content_type: str
    size: tuple[int, int]  # width and height, as displayed

    @property
    def facts(self) -> ImageFacts:
        """What the column records of this rendition."""
        return ImageFacts(width=self.size[0], height=self.size[1], spec=self.rendition.spec)


@dataclass(frozen=True, slots=True)
class Processed:
    """What an image job made: the original to store and its renditions."""

    data: bytes  # what to store as the original (the input itself when not normalised)
    content_type: str
    renditions: tuple[Derived, ...]
    size: tuple[int, int]  # the stored original's width and height, as displayed

    @property
    def facts(self) -> ImageFacts:
        """What the column records of the original."""
        return ImageFacts(width=self.size[0], height=self.size[1])


def rendition_filename(filename: str, rendition: Rendition) -> str:
    """The display name of `rendition` of a file named `filename`."""
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return f"{stem}.{rendition.name}.{rendition.extension}"


def process_image(
    data: bytes,
    policy: ImagePolicy,
    *,
    backend: str | None = None,
    path: str | None = None,
    decode: bool = True,
) -> Processed:
    """Validate `data` against `policy`, normalise it and build its renditions.

    Blocks until done; the work runs on an image worker thread (see `ProcessingLimits`).
    Raises `InvalidImageError` (`ImageTooLargeError` for resource limits, from the
    header, before any pixel is decoded) and `MissingDependencyError` without Pillow.
    With `decode=False` and nothing to make (no `normalize`, no renditions) only the
    header is read: the size is learnt, the pixels are not checked.
    """
    return run_in_worker(functools.partial(_process, data, policy, backend, path, decode))


async def process_image_async(
    data: bytes,
    policy: ImagePolicy,
    *,
    backend: str | None = None,
    path: str | None = None,
    decode: bool = True,
) -> Processed:
    """`process_image`, awaited: the event loop keeps running meanwhile."""
    return await run_in_worker_async(
        functools.partial(_process, data, policy, backend, path, decode)
    )


def _process(
    data: bytes, policy: ImagePolicy, backend: str | None, path: str | None, decode: bool
) -> Processed:
    """The image job, on an image worker thread: reserve the memory it plans, then work."""
    Image = pil()
    try:
        job = inspect_image(
            open_image(data, policy, backend=backend, path=path),
            data,
            policy,
            backend=backend,
            path=path,
        )
        size = job.shown
        if not decode and policy.normalize is None and not policy.renditions:
            job.close()
            outputs = []
        else:
            # (The job is closed first, then the reservation goes back to the budget.)
            with hold_memory(job.estimate), job:
                outputs = render(job, backend=backend, path=path)
    except (StorageError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"The image is too large to decode safely: {exc}",
            limit=policy.max_pixels,
            actual=None,
            unit="pixels",
            backend=backend,
            path=path,
        ) from exc
    except Exception as exc:  # whatever Pillow raises on malformed input
        raise InvalidImageError(
            f"The content is not a readable image: {exc}", backend=backend, path=path
        ) from exc
    stored, content_type = data, mime(job.source.format)
    derived = []
    for target, encoded in outputs:
        if target.rendition is None:
            stored, content_type, size = encoded, mime(target.format), target.size
        else:
            derived.append(Derived(target.rendition, encoded, mime(target.format), target.size))
    return Processed(stored, content_type, tuple(derived), size)
