"""Image processing keeps memory bounded and the event loop free, measured for real.

Each scenario runs in a fresh Python process (this file, run as a script) that reports
the growth of its peak resident set size (`VmHWM`) over the upload alone (the baseline
is taken after a small warm-up upload has imported Pillow's plugins and started the
image worker pool), the longest stall of a ticker coroutine sharing the event loop
with the upload, and the memory the library planned for the job (read from the
`ImageTooLargeError` a one-byte budget raises: a number computed from the header).

The image is the one the security review used: a 7000 x 7000 single-colour RGBA PNG,
about 200 KiB on disk, 196 MB once decoded, within the default 50 MP `max_pixels`.
Before the fix it peaked at 749 MiB (893 MiB with a normalised copy) and blocked the
event loop for seconds.

Linux only (`/proc/self/status`); the CI runs Linux.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
SIDE = 7000
"""The bomb's side: 49 MP, under the default 50 MP `max_pixels`."""


def flat_png(path: Path, side: int, rgba: bytes = b"\x0a\x14\x1e\xff") -> None:
    """Write a `side` x `side` single-colour RGBA PNG without ever holding its pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + rgba * side  # filter byte "none", then the pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


# -- the measured process --------------------------------------------------------------
def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _policy(name: str, **limits: Any) -> Any:
    from sqlalchemy_obstore.processing import ImagePolicy, Normalize, Rendition

    thumbnails = (Rendition("thumb", 256, 256), Rendition("card", 600, 400, "JPEG", mode="cover"))
    normalize = {
        "web": Normalize(2048, 2048, "WEBP"),
        "web1024": Normalize(1024, 1024, "WEBP"),
        "full-jpeg": Normalize(format="JPEG"),
    }.get(name)
    renditions = () if name == "validate" else thumbnails
    formats = ("PNG", "JPEG", "WEBP", "GIF", "TIFF")
    return ImagePolicy(
        normalize=normalize, renditions=renditions, allowed_formats=formats, **limits
    )


def _planned(data: bytes, policy: str) -> int:
    """The memory the library plans for this job, from a refusal under a 1-byte budget."""
    from sqlalchemy_obstore import FileObject, ImageTooLargeError, UploadPolicy

    try:
        FileObject(filename="b.png", content=data, backend="m").save(
            policy=UploadPolicy(image=_policy(policy, max_memory=1))
        )
    except ImageTooLargeError as exc:
        return int(exc.actual or 0)
    raise AssertionError("a one-byte budget admitted the image")


def _warm_up(policy: str) -> None:
    from sqlalchemy_obstore import FileObject, UploadPolicy

    small = Path(os.environ["WARM_UP_PNG"]).read_bytes()
    FileObject(filename="w.png", content=small, backend="m").save(
        policy=UploadPolicy(image=_policy(policy))
    )
    asyncio.run(
        FileObject(filename="w.png", content=small, backend="m").save_async(
            policy=UploadPolicy(image=_policy(policy))
        )
    )


async def _upload_while_ticking(data: bytes, policy: Any, copies: int) -> dict[str, Any]:
    from sqlalchemy_obstore import FileObject, ImageTooLargeError, UploadPolicy
    from tests.loop_stall import LoopStallProbe

    files = [FileObject(filename="b.png", content=data, backend="m") for _ in range(copies)]
    outcome: dict[str, Any] = {}
    async with LoopStallProbe() as probe:
        try:
            await asyncio.gather(*(f.save_async(policy=UploadPolicy(image=policy)) for f in files))
            outcome["renditions"] = sorted(files[0].renditions)
        except ImageTooLargeError as exc:
            outcome["refused"] = exc.unit
    outcome["stall"] = probe.stall
    return outcome


def _child(scenario: str, path: str, policy: str, copies: int, budget: int) -> dict[str, Any]:
    from sqlalchemy_obstore import FileObject, ObstoreBackend, UploadPolicy, storages
    from sqlalchemy_obstore.processing import ProcessingLimits, set_processing_limits

    # A local directory: stored objects do not stay in this process's memory.
    storages.register_backend(ObstoreBackend("m", Path(path).parent / "store"))
    if budget:
        set_processing_limits(ProcessingLimits(max_memory=budget))
    data = Path(path).read_bytes()
    planned = _planned(data, policy)
    _warm_up(policy)
    limits = {"max_memory": budget} if budget else {}
    chosen = _policy(policy, **limits)
    before = _peak_rss()
    if scenario == "async":
        result = asyncio.run(_upload_while_ticking(data, chosen, copies))
    else:  # sync: `copies` threads calling save() at once
        errors: list[BaseException] = []

        def upload() -> None:
            try:
                FileObject(filename="b.png", content=data, backend="m").save(
                    policy=UploadPolicy(image=chosen)
                )
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=upload) for _ in range(copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        result = {}
    result.update(growth=_peak_rss() - before, planned=planned)
    return result


def _main() -> None:
    scenario, path, policy, copies, budget = sys.argv[1:6]
    result = _child(scenario, path, policy, int(copies), int(budget))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


# -- the tests ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "bomb.png"
    flat_png(path, SIDE)
    assert 150_000 < path.stat().st_size < 260_000  # the review's "189 KiB PNG"
    return path


def _measure(
    image: Path, policy: str, *, scenario: str = "async", copies: int = 1, budget: int = 0
) -> dict[str, Any]:
    warm = image.parent / "warm.png"
    if not warm.exists():
        flat_png(warm, 64)
    done = subprocess.run(
        [sys.executable, __file__, scenario, str(image), policy, str(copies), str(budget)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env={**os.environ, "WARM_UP_PNG": str(warm), "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("policy", ["validate", "thumbnails"])
def test_the_review_bomb_is_processed_within_the_planned_memory(bomb: Path, policy: str) -> None:
    from sqlalchemy_obstore.processing import DEFAULT_MAX_MEMORY

    result = _measure(bomb, policy)
    expected = ["card", "thumb"] if policy == "thumbnails" else []
    assert result.get("renditions") == expected, result
    # What the library planned from the header bounds what the process really held.
    assert result["planned"] <= DEFAULT_MAX_MEMORY
    assert result["growth"] <= result["planned"], result
    assert result["growth"] < 256 * MIB  # it was 749 MiB before
    assert result["stall"] < 0.1, result  # it was 1.6 s (4.1 s with a normalised copy)


def test_a_bomb_beyond_the_budget_is_refused_before_decoding(bomb: Path) -> None:
    result = _measure(bomb, "web", budget=64 * MIB)
    assert result["refused"] == "bytes"
    assert result["growth"] < 8 * MIB  # nothing decoded
    assert result["planned"] > 64 * MIB


def noise(path: Path, size: tuple[int, int], mode: str, orientation: int) -> None:
    """Random pixels: the worst case for every codec (nothing compresses)."""
    from PIL import Image

    bands = [Image.effect_noise(size, 64).rotate(angle) for angle in (0, 90, 180, 270)]
    image = Image.merge("RGBA", bands).convert(mode) if mode != "L" else bands[0]
    options: dict[str, Any] = {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    image.save(path, **options)


@pytest.mark.parametrize(
    ("name", "size", "mode", "orientation", "policy"),
    [
        ("rgba.png", (2400, 1600), "RGBA", 1, "web1024"),  # strips from the full image
        ("palette.png", (2400, 1600), "P", 1, "thumbnails"),  # expanded strip by strip
        ("gray-alpha.png", (2400, 1600), "LA", 8, "full-jpeg"),  # whole, rotated
        ("photo.jpg", (4000, 3000), "RGB", 6, "web"),  # JPEG draft, rotated
        ("gray.jpg", (4000, 3000), "L", 1, "thumbnails"),
        ("photo.webp", (2000, 1500), "RGBA", 1, "thumbnails"),  # libwebp's own canvases
        ("anim.gif", (2400, 1600), "P", 1, "web1024"),
        ("scan.tiff", (2400, 1600), "RGB", 6, "thumbnails"),  # Pillow rotates TIFF itself
    ],
)
def test_the_planned_memory_bounds_the_real_peak(
    tmp_path: Path, name: str, size: tuple[int, int], mode: str, orientation: int, policy: str
) -> None:
    path = tmp_path / name
    noise(path, size, mode, orientation)
    result = _measure(path, policy)
    assert "renditions" in result, result  # processed, not refused
    assert result["growth"] <= result["planned"], result


@pytest.mark.parametrize("scenario", ["async", "sync"])
def test_concurrent_uploads_share_one_memory_budget(tmp_path: Path, scenario: str) -> None:
    image = tmp_path / "big.png"
    flat_png(image, 4000)  # 64 MB decoded
    budget = 96 * MIB
    result = _measure(image, "thumbnails", scenario=scenario, copies=6, budget=budget)
    assert 64 * MIB < result["planned"] <= budget  # one fits, two do not
    # Six at once would hold six times the plan; the budget admits them one by one.
    assert result["growth"] <= budget, result
    assert 6 * result["planned"] > 4 * budget


if __name__ == "__main__":
    _main()
