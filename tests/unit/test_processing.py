"""Image policies: header checks before decoding, normalisation, renditions on save."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageFile

from sqlalchemy_obstore import (
    ConfigurationError,
    FileObject,
    FileTooLargeError,
    ImageTooLargeError,
    InvalidImageError,
    MissingDependencyError,
    ObstoreBackend,
    UploadPolicy,
    ValidationError,
)
from sqlalchemy_obstore._offload import _MemoryLimiter
from sqlalchemy_obstore.backends import UploadBody, WriteResult
from sqlalchemy_obstore.processing import (
    DEFAULT_MAX_MEMORY,
    ImagePolicy,
    Normalize,
    ProcessingLimits,
    Rendition,
    processing_limits,
    rendition_path,
    set_processing_limits,
)
from tests.loop_stall import LoopStallProbe

THUMB = Rendition("thumb", 32, 32)
CARD = Rendition("card", 600, 400, "JPEG", mode="cover")
MIB = 1024 * 1024
WORKER = "sqlalchemy-obstore-image"


def image_bytes(
    size: tuple[int, int] = (80, 40), fmt: str = "PNG", mode: str = "RGB", **save: Any
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else 128).save(out, fmt, **save)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def bomb_png(width: int, height: int, color_type: int = 0) -> bytes:
    """A valid-looking PNG header declaring `width` x `height` pixels, a few bytes long.

    Built by hand: the pixels are never allocated, not even to write the file. Colour
    type 0 is gray, 2 RGB, 6 RGBA.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def save(
    backend: ObstoreBackend, data: Any, image: ImagePolicy, filename: str = "a.png"
) -> FileObject:
    file = FileObject(filename=filename, content=data, backend=backend.key)
    return file.save(policy=UploadPolicy(image=image))


def flat(size: tuple[int, int], mode: str = "RGBA", fmt: str = "PNG") -> bytes:
    """A one-colour image: tiny once encoded, large once decoded (a "zip bomb" shape)."""
    out = io.BytesIO()
    Image.new(mode, size, (30, 60, 90, 255)[: len(mode)] if mode != "L" else 90).save(out, fmt)
    return out.getvalue()


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[int, int], str]]:
    """Record every pixel decode (size decoded, thread name), then run it."""
    calls: list[tuple[tuple[int, int], str]] = []
    original = ImageFile.ImageFile.load

    def recording(self: Any) -> Any:
        if self.tile:  # (a decoded image answers again without decoding)
            calls.append((self.size, threading.current_thread().name))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    return calls


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every pixel decode (`ImageFile.load`) instead of running it."""
    calls: list[Any] = []

    def spy(self: Any) -> Any:
        calls.append(self.size)
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


# -- configuration ----------------------------------------------------------------------------
def test_policies_are_hashable_and_layer_as_a_whole() -> None:
    image = ImagePolicy(max_width=100, renditions=(THUMB,), normalize=Normalize(format="jpeg"))
    policy = UploadPolicy(max_size=10, image=image)
    assert hash(policy) == hash(UploadPolicy(max_size=10, image=image))
    assert image.normalize is not None
    assert image.normalize.format == "JPEG"
    assert UploadPolicy(image=image).merge(UploadPolicy(max_size=1)).image is image
    other = ImagePolicy(max_width=5)
    assert UploadPolicy(image=image).merge(UploadPolicy(image=other)).image is other


@pytest.mark.parametrize(
    "build",
    [
        lambda: ImagePolicy(max_width=0),
        lambda: ImagePolicy(min_width=10, max_width=5),
        lambda: ImagePolicy(min_aspect_ratio=2, max_aspect_ratio=1),
        lambda: ImagePolicy(renditions=(THUMB, THUMB)),
        lambda: ImagePolicy(renditions=("thumb",)),  # type: ignore[arg-type]
        lambda: Rendition("a/b", 1, 1),
        lambda: Rendition("t", 1, 1, quality=0),
        lambda: Rendition("t", 1, 1, mode="stretch"),  # type: ignore[arg-type]
        lambda: Normalize(max_width=-1),
        lambda: UploadPolicy(image="png"),  # type: ignore[arg-type]
        lambda: ImagePolicy(max_memory=0),
        lambda: ImagePolicy(max_frames=0),
        lambda: ImagePolicy(allowed_formats=("PNG", "ico")),
        lambda: ImagePolicy(allowed_formats=("EPS",)),
        lambda: ProcessingLimits(max_memory=0),
        lambda: ProcessingLimits(workers=True),
        lambda: set_processing_limits("lots"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration_is_refused(build: Any) -> None:
    with pytest.raises(ConfigurationError):
        build()


def test_rendition_keys_are_siblings_of_the_original() -> None:
    assert rendition_path("p/k/a.png", THUMB) == "p/k/a.png.renditions/thumb.webp"
    assert Rendition("s", 1, 1, format="jpeg").extension == "jpg"


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "data"),
    [
        (ImagePolicy(max_width=50), image_bytes((80, 40))),
        (ImagePolicy(max_height=30), image_bytes((80, 40))),
        (ImagePolicy(min_width=100), image_bytes((80, 40))),
        (ImagePolicy(min_height=50), image_bytes((80, 40))),
        (ImagePolicy(max_pixels=1000), image_bytes((80, 40))),
        (ImagePolicy(max_aspect_ratio=1.5), image_bytes((80, 40))),
        (ImagePolicy(min_aspect_ratio=1), image_bytes((40, 80))),
        (ImagePolicy(), image_bytes(fmt="GIF", mode="L")),
        (ImagePolicy(allowed_formats=("JPEG",)), image_bytes()),
        (ImagePolicy(), b"\x89PNG\r\n\x1a\n this is not really a png"),
        (ImagePolicy(), b"plain text"),
        (ImagePolicy(), image_bytes()[:60]),  # truncated: the header parses, pixels do not
    ],
)
def test_images_outside_the_policy_are_refused(
    memory_backend: ObstoreBackend, image: ImagePolicy, data: bytes
) -> None:
    file = FileObject(filename="a.png", content=data, backend="memory")
    with pytest.raises(InvalidImageError) as caught:
        file.save(policy=UploadPolicy(image=image))
    assert isinstance(caught.value, ValidationError)
    assert caught.value.backend == "memory"
    assert list(memory_backend.list_objects()) == []
    assert file.has_pending_content
    assert file.path is None


def test_images_within_the_policy_are_stored_as_uploaded(memory_backend: ObstoreBackend) -> None:
    data = image_bytes((80, 40))
    policy = ImagePolicy(
        max_width=80, min_height=40, allowed_formats=("PNG",), min_aspect_ratio=2.0
    )
    file = save(memory_backend, data, policy, filename="a.bin")
    assert file.get_content() == data
    assert file.content_type == "image/png"
    assert file.renditions == {}
    assert file.verify()


def test_gif_allowed_explicitly(memory_backend: ObstoreBackend) -> None:
    file = save(
        memory_backend, image_bytes(fmt="GIF", mode="L"), ImagePolicy(allowed_formats=("gif",))
    )
    assert file.content_type == "image/gif"


@pytest.mark.parametrize("size", [(100_000, 100_000), (20_000, 20_000)])
def test_pillow_decompression_bombs_are_refused_without_decoding(
    memory_backend: ObstoreBackend, no_load: list[Any], size: tuple[int, int]
) -> None:
    data = bomb_png(*size)
    assert len(data) < 200
    with pytest.raises(InvalidImageError, match=r"too large|pixels"):
        save(memory_backend, data, ImagePolicy(max_pixels=10**12))
    assert no_load == []
    assert list(memory_backend.list_objects()) == []


def test_max_pixels_is_checked_from_the_header_before_decoding(
    memory_backend: ObstoreBackend, no_load: list[Any]
) -> None:
    with pytest.raises(ImageTooLargeError, match="decompression bomb") as caught:
        save(memory_backend, bomb_png(8_000, 8_000), ImagePolicy())  # 64 MP > 50 MP
    assert (caught.value.unit, caught.value.limit, caught.value.actual) == (
        "pixels",
        50_000_000,
        64_000_000,
    )
    assert isinstance(caught.value, InvalidImageError)
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        save(memory_backend, image_bytes((200, 200)), ImagePolicy(max_pixels=10_000))
    assert no_load == []


def test_a_bomb_does_not_allocate_its_pixels(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import resource, struct, zlib
        from sqlalchemy_obstore import FileObject, InvalidImageError, ObstoreBackend, storages
        from sqlalchemy_obstore import UploadPolicy
        from sqlalchemy_obstore.processing import ImagePolicy
        from tests.unit.test_processing import bomb_png
        storages.register_backend(ObstoreBackend("m", "memory://"))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for size in [(100_000, 100_000), (30_000, 30_000), (9_000, 9_000)]:
            try:
                FileObject(filename="b.png", content=bomb_png(*size), backend="m").save(
                    policy=UploadPolicy(image=ImagePolicy())
                )
            except InvalidImageError:
                pass
            else:
                raise SystemExit("not refused")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(before, after)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=str(_root())
    )
    before, after = (int(v) for v in result.stdout.split())
    # ru_maxrss is in KiB on Linux; the smallest bomb alone would need 81 MB decoded.
    assert after - before < 40_000, result.stdout


def _root() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def test_images_are_held_whole_only_up_to_max_bytes(memory_backend: ObstoreBackend) -> None:
    data = image_bytes((300, 300), fmt="BMP")
    chunks = iter([data[i : i + 1000] for i in range(0, len(data), 1000)])
    with pytest.raises(FileTooLargeError) as caught:
        save(memory_backend, chunks, ImagePolicy(max_bytes=5000, allowed_formats=("BMP",)))
    assert caught.value.limit == 5000
    assert caught.value.size_seen <= 6000  # stopped while streaming
    file = FileObject(filename="a.png", content=image_bytes(), backend="memory")
    with pytest.raises(FileTooLargeError):
        file.save(policy=UploadPolicy(max_size=10, image=ImagePolicy()))


def test_streamed_images_are_collected_and_checked(memory_backend: ObstoreBackend) -> None:
    data = image_bytes((300, 300), fmt="BMP")
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    file = FileObject(filename="a.bmp", content=iter(chunks), backend="memory")
    file.save(chunk_size=4096)  # no policy: plain streaming still works
    stored = FileObject(filename="a.bmp", content=iter(chunks), backend="memory")
    policy = UploadPolicy(image=ImagePolicy(allowed_formats=("BMP",), renditions=(THUMB,)))
    stored.save(chunk_size=4096, policy=policy)
    assert stored.get_content() == data
    assert stored.size == len(data)
    assert opened(stored.renditions["thumb"].get_content()).size == (32, 32)


def test_missing_pillow_is_reported(
    memory_backend: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = image_bytes()
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingDependencyError) as caught:
        save(memory_backend, data, ImagePolicy())
    assert caught.value.extra == "images"
    assert caught.value.package == "pillow"


# -- normalisation ----------------------------------------------------------------------------
def _exif_jpeg(size: tuple[int, int], orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "SecretCam"  # Make
    return image_bytes(size, fmt="JPEG", exif=exif.tobytes())


def test_normalisation_applies_orientation_and_strips_exif(memory_backend: ObstoreBackend) -> None:
    data = _exif_jpeg((80, 40), orientation=6)  # "rotate 90° clockwise to display"
    assert dict(opened(data).getexif())
    policy = ImagePolicy(normalize=Normalize(format="JPEG", quality=90))
    file = save(memory_backend, data, policy, filename="photo.jpg")
    stored = file.get_content()
    assert stored != data
    with opened(stored) as image:
        assert image.size == (40, 80)
        assert dict(image.getexif()) == {}
        assert "exif" not in image.info
    assert b"SecretCam" not in stored


def test_strip_exif_false_keeps_it(memory_backend: ObstoreBackend) -> None:
    data = _exif_jpeg((80, 40), orientation=1)
    policy = ImagePolicy(normalize=Normalize(format="JPEG"), strip_exif=False)
    stored = save(memory_backend, data, policy, filename="photo.jpg").get_content()
    assert opened(stored).getexif().get(0x010F) == "SecretCam"


def test_normalisation_resizes_and_records_the_stored_bytes(memory_backend: ObstoreBackend) -> None:
    data = image_bytes((400, 200))
    policy = ImagePolicy(normalize=Normalize(max_width=100, max_height=100, format="webp"))
    file = save(memory_backend, data, policy)
    stored = file.get_content()
    with opened(stored) as image:
        assert (image.format, image.size) == ("WEBP", (100, 50))
    assert file.size == len(stored)
    assert file.checksum == "sha256:" + hashlib.sha256(stored).hexdigest()
    assert file.content_type == "image/webp"
    assert memory_backend.head(file.path or "").size == len(stored)
    assert file.verify()


def test_normalisation_never_upscales(memory_backend: ObstoreBackend) -> None:
    policy = ImagePolicy(normalize=Normalize(max_width=1000))
    stored = save(memory_backend, image_bytes((80, 40)), policy).get_content()
    assert opened(stored).size == (80, 40)


# -- renditions -------------------------------------------------------------------------------
def test_renditions_are_generated_and_stored_next_to_the_original(
    memory_backend: ObstoreBackend,
) -> None:
    policy = ImagePolicy(
        renditions=(
            Rendition("thumb", 64, 64),
            Rendition("square", 20, 20, format="JPEG", mode="cover"),
            Rendition("big", 1000, 1000, format="PNG"),
        )
    )
    file = save(memory_backend, image_bytes((200, 100)), policy, filename="cat.png")
    assert set(file.renditions) == {"thumb", "square", "big"}
    expected = {
        "thumb": ("WEBP", (64, 32)),
        "square": ("JPEG", (20, 20)),
        "big": ("PNG", (200, 100)),
    }
    for name, (fmt, size) in expected.items():
        rendition = file.renditions[name]
        assert rendition.path == rendition_path(file.path or "", Rendition(name, 1, 1, fmt))
        data = rendition.get_content()
        with opened(data) as image:
            assert (image.format, image.size) == (fmt, size)
        assert rendition.size == len(data)
        assert rendition.content_type == Image.MIME[fmt]
        assert rendition.backend == "memory"
        assert rendition.verify()
    assert file.renditions["thumb"].filename == "cat.thumb.webp"
    assert sorted(o.path for o in memory_backend.list_objects()) == sorted(
        [file.path, *(r.path for r in file.renditions.values())]
    )


def test_renditions_round_trip_through_the_column_shape(memory_backend: ObstoreBackend) -> None:
    file = save(memory_backend, image_bytes(), ImagePolicy(renditions=(THUMB,)))
    data = file.to_dict()
    assert data["renditions"]["thumb"]["path"] == file.renditions["thumb"].path
    again = FileObject.from_dict(data)
    assert again.renditions["thumb"].get_content() == file.renditions["thumb"].get_content()
    assert again.to_dict() == data
    old = {k: v for k, v in data.items() if k != "renditions"}
    assert FileObject.from_dict(old).renditions == {}
    assert "renditions" not in FileObject.from_dict(old).to_dict()
    with pytest.raises(TypeError):
        file.renditions["x"] = file  # type: ignore[index]


def test_a_failed_rendition_upload_leaves_nothing(memory_backend: ObstoreBackend) -> None:
    class FailingBackend(ObstoreBackend):
        def put(self, path: str, body: UploadBody, **kwargs: Any) -> WriteResult:
            if path.endswith("/second.webp"):
                raise OSError("store down")
            return super().put(path, body, **kwargs)

    from sqlalchemy_obstore import storages

    backend = FailingBackend("failing", "memory://")
    storages.register_backend(backend)
    policy = ImagePolicy(renditions=(Rendition("first", 8, 8), Rendition("second", 8, 8)))
    file = FileObject(filename="a.png", content=image_bytes(), backend="failing")
    with pytest.raises(Exception, match="store down"):
        file.save(policy=UploadPolicy(image=policy))
    assert list(backend.list_objects()) == []
    assert file.has_pending_content
    assert file.renditions == {}


async def test_save_async_generates_renditions(memory_backend: ObstoreBackend) -> None:
    async def chunks() -> Any:
        data = image_bytes((120, 60))
        for i in range(0, len(data), 100):
            yield data[i : i + 100]

    file = FileObject(filename="a.png", content=chunks(), backend="memory")
    await file.save_async(policy=UploadPolicy(image=ImagePolicy(renditions=(THUMB,))))
    thumb = file.renditions["thumb"]
    data = b"".join([c async for c in thumb.iter_chunks_async()])
    assert opened(data).size == (32, 16)
    assert await thumb.exists_async()


async def test_renditions_read_from_a_row_are_signable(memory_backend: ObstoreBackend) -> None:
    from sqlalchemy_obstore import storages

    storages.register_backend(
        ObstoreBackend(
            "s3",
            "s3://bucket/",
            region="eu-west-1",
            access_key_id="AKIAFAKEKEYID0000001",
            secret_access_key="fake/secret/fake/secret/fake/secret/0000",
        )
    )
    data = save(memory_backend, image_bytes(), ImagePolicy(renditions=(THUMB,))).to_dict()
    data["backend"] = "s3"
    data["renditions"]["thumb"]["backend"] = None  # old-style: inherits the file's backend
    file = FileObject.from_dict(data)
    thumb = file.renditions["thumb"]
    assert thumb.backend == "s3"
    url = await thumb.sign_async(expires_in=60)
    assert url.startswith("https://")
    assert (thumb.path or "") in url
    assert thumb.sign(expires_in=60) == url


# -- memory: planned from the header, held process-wide -----------------------------------------
def test_the_memory_needed_is_computed_from_the_header_before_decoding(
    memory_backend: ObstoreBackend, no_load: list[Any]
) -> None:
    data = bomb_png(7_000, 7_000, color_type=6)  # 49 MP RGBA: 196 MB once decoded
    asked = {
        "validate": ImagePolicy(),
        "thumbnails": ImagePolicy(renditions=(THUMB, CARD)),
        "2048 px WebP": ImagePolicy(renditions=(THUMB,), normalize=Normalize(2048, 2048, "WEBP")),
        "full-size WebP": ImagePolicy(normalize=Normalize(format="WEBP")),
    }
    needs = {}
    for name, image in asked.items():
        with pytest.raises(ImageTooLargeError, match=r"ImagePolicy\.max_memory") as caught:
            save(memory_backend, data, ImagePolicy(**{**image.__dict__, "max_memory": 1}))
        assert (caught.value.unit, caught.value.limit) == ("bytes", 1)
        assert caught.value.backend == "memory"
        needs[name] = caught.value.actual or 0
    assert no_load == []  # all of it from a 100-byte header
    assert list(memory_backend.list_objects()) == []
    # The decoded pixels are the floor; each output adds what making it holds.
    assert 196_000_000 < needs["validate"] < needs["thumbnails"] < needs["2048 px WebP"]
    # The default budget takes a 49 MP PNG with thumbnails and a 2048 px WebP, not a
    # full-size WebP re-encode (libwebp holds about 40 bytes per pixel).
    assert needs["2048 px WebP"] <= DEFAULT_MAX_MEMORY < needs["full-size WebP"]
    with pytest.raises(ImageTooLargeError):
        save(memory_backend, data, asked["full-size WebP"])


def test_jpeg_is_decoded_no_larger_than_its_outputs_need(
    memory_backend: ObstoreBackend, decodes: list[Any]
) -> None:
    data = flat((4000, 3000), "RGB", "JPEG")
    file = save(memory_backend, data, ImagePolicy(renditions=(Rendition("t", 256, 256),)))
    assert [size for size, _ in decodes] == [(1000, 750)]  # draft(): 1/4, still 2x the output
    assert opened(file.renditions["t"].get_content()).size == (256, 192)
    assert file.get_content() == data
    with pytest.raises(ImageTooLargeError) as full:
        save(memory_backend, data, ImagePolicy(normalize=Normalize(format="JPEG"), max_memory=1))
    with pytest.raises(ImageTooLargeError) as small:
        save(memory_backend, data, ImagePolicy(renditions=(THUMB,), max_memory=1))
    assert (small.value.actual or 0) * 4 < (full.value.actual or 0)


def test_one_decode_makes_every_output(memory_backend: ObstoreBackend, decodes: list[Any]) -> None:
    policy = ImagePolicy(
        normalize=Normalize(max_width=300, format="WEBP"),
        renditions=(THUMB, CARD, Rendition("big", 2000, 2000, "PNG")),
    )
    file = save(memory_backend, flat((900, 600)), policy)
    assert [size for size, _ in decodes] == [(900, 600)]
    sizes = {name: opened(r.get_content()).size for name, r in file.renditions.items()}
    assert sizes == {"thumb": (32, 21), "card": (600, 400), "big": (900, 600)}
    assert opened(file.get_content()).size == (300, 200)


def test_strips_give_the_same_pixels_as_one_resample(
    memory_backend: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Random colours (seeded), opaque: converted to premultiplied RGBA strip by strip.
    pixels = random.Random(13).randbytes(900 * 700 * 3)
    source = Image.frombytes("RGB", (900, 700), pixels).convert("RGBA")
    out = io.BytesIO()
    source.save(out, "PNG")
    policy = ImagePolicy(
        renditions=(
            Rendition("fit", 500, 500, "PNG"),  # resampled directly
            Rendition("cover", 300, 100, "PNG", mode="cover"),
            Rendition("small", 60, 60, "PNG"),  # box-reduced first
        )
    )
    whole = save(memory_backend, out.getvalue(), policy)  # one strip each
    from sqlalchemy_obstore import _image_plan

    monkeypatch.setattr(_image_plan, "_STRIP_BYTES", 16 * 1024)  # dozens of strips each
    strips = save(memory_backend, out.getvalue(), policy)
    for name in ("fit", "cover", "small"):
        a, b = (opened(f.renditions[name].get_content()) for f in (whole, strips))
        assert a.size == b.size
        difference = ImageChops.difference(a, b).getextrema()
        assert max(high for _, high in difference) <= 1, name  # (float rounding of boxes)


def test_alpha_is_resampled_premultiplied(memory_backend: ObstoreBackend) -> None:
    image = Image.new("RGBA", (400, 200), (0, 0, 0, 0))  # transparent black, left half
    image.paste((255, 255, 255, 255), (200, 0, 400, 200))  # opaque white, right half
    out = io.BytesIO()
    image.save(out, "PNG")
    file = save(
        memory_backend, out.getvalue(), ImagePolicy(renditions=(Rendition("t", 37, 37, "PNG"),))
    )
    small = opened(file.renditions["t"].get_content()).convert("RGBA")
    edge = [small.getpixel((x, 9)) for x in range(small.width)]
    assert any(0 < pixel[3] < 255 for pixel in edge)  # the edge is soft...
    assert all(min(pixel[:3]) >= 250 for pixel in edge if pixel[3])  # ...and never grey


def test_palette_images_are_resampled_smoothly(memory_backend: ObstoreBackend) -> None:
    stripes = Image.new("P", (400, 400), 0)
    stripes.putpalette([0, 0, 0, 255, 255, 255])
    for x in range(0, 400, 2):
        stripes.paste(1, (x, 0, x + 1, 400))
    out = io.BytesIO()
    stripes.save(out, "PNG")
    file = save(
        memory_backend, out.getvalue(), ImagePolicy(renditions=(Rendition("t", 50, 50, "PNG"),))
    )
    low, high = opened(file.renditions["t"].get_content()).convert("L").getextrema()
    assert 100 < low <= high < 156  # grey, as the eye sees it (not picked black or white pixels)


def _with_late_exif(data: bytes, orientation: int) -> bytes:
    """`data` (a PNG) with an eXIf chunk after the pixels: Pillow finds it only by decoding."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    end = data.rindex(b"IEND") - 4
    return data[:end] + _chunk(b"eXIf", exif.tobytes()) + data[end:]


def test_orientation_is_read_from_the_bytes_wherever_it_is(memory_backend: ObstoreBackend) -> None:
    data = _with_late_exif(image_bytes((80, 40)), orientation=6)
    assert "exif" not in opened(data).info
    policy = ImagePolicy(
        normalize=Normalize(format="PNG"), renditions=(Rendition("t", 20, 20, "PNG"),)
    )
    file = save(memory_backend, data, policy)
    assert opened(file.get_content()).size == (40, 80)
    assert opened(file.renditions["t"].get_content()).size == (10, 20)


def test_kept_exif_says_the_pixels_are_upright(memory_backend: ObstoreBackend) -> None:
    data = _exif_jpeg((80, 40), orientation=6)
    policy = ImagePolicy(normalize=Normalize(format="JPEG"), strip_exif=False)
    with opened(save(memory_backend, data, policy, filename="p.jpg").get_content()) as image:
        assert image.size == (40, 80)
        assert image.getexif().get(0x010F) == "SecretCam"
        assert image.getexif().get(0x0112, 1) == 1  # not rotated a second time by viewers


# -- frames ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_frames_are_counted_without_decoding_them(
    memory_backend: ObstoreBackend, decodes: list[Any], fmt: str
) -> None:
    frames = [Image.new("RGB", (16, 16), (i * 50, 100, 0)) for i in range(5)]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageTooLargeError, match="max_frames") as caught:
        save(memory_backend, out.getvalue(), ImagePolicy(allowed_formats=(fmt,), max_frames=4))
    assert (caught.value.unit, caught.value.limit, caught.value.actual) == ("frames", 4, 5)
    assert decodes == []
    file = save(memory_backend, out.getvalue(), ImagePolicy(allowed_formats=(fmt,), max_frames=5))
    assert file.get_content() == out.getvalue()  # stored as uploaded, every frame
    assert len(decodes) == 1  # the first frame only


def _gif(frames: int) -> bytes:
    """A GIF of `frames` 1x1 frames, written by hand (about 15 bytes a frame)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * frames + b"\x3b"


def test_frame_counting_stops_at_the_limit(memory_backend: ObstoreBackend) -> None:
    assert opened(_gif(7)).n_frames == 7
    policy = ImagePolicy(allowed_formats=("GIF",), max_frames=1000)
    with pytest.raises(ImageTooLargeError) as caught:
        save(memory_backend, _gif(300_000), policy)  # Pillow's n_frames walks all of them
    assert caught.value.actual == 1001  # counted up to the limit, then stopped
    assert save(memory_backend, _gif(1000), policy).size is not None


# -- off the event loop, within the process-wide budget -----------------------------------------
async def test_save_async_processes_in_a_worker_and_the_loop_keeps_running(
    memory_backend: ObstoreBackend, decodes: list[Any]
) -> None:
    data = flat((4000, 4000))  # 70 kB of PNG, 64 MB of pixels
    policy = UploadPolicy(
        image=ImagePolicy(normalize=Normalize(1024, 1024, "WEBP"), renditions=(THUMB, CARD))
    )
    started = time.perf_counter()
    async with LoopStallProbe() as probe:
        file = await FileObject(filename="big.png", content=data, backend="memory").save_async(
            policy=policy
        )
    took = time.perf_counter() - started
    assert [thread.startswith(WORKER) for _, thread in decodes] == [True]
    assert took > 0.25, "the job must be heavy enough to have stalled the loop"
    assert probe.stall < 0.1, f"the loop stalled {probe.stall:.3f} s during a {took:.2f} s job"
    assert opened(await file.get_content_async()).size == (1024, 1024)
    assert opened(file.renditions["card"].get_content()).size == (600, 400)


async def test_the_stall_probe_sees_work_done_on_the_loop() -> None:
    async with LoopStallProbe() as probe:
        await asyncio.sleep(0.02)
        deadline = time.thread_time() + 0.3
        while time.thread_time() < deadline:  # 0.3 s of CPU work on the loop's thread
            pass
    assert probe.stall > 0.25


def test_save_blocks_while_an_image_worker_does_the_work(
    memory_backend: ObstoreBackend, decodes: list[Any]
) -> None:
    file = save(memory_backend, image_bytes(), ImagePolicy(renditions=(THUMB,)))
    assert [(size, thread.startswith(WORKER)) for size, thread in decodes] == [((80, 40), True)]
    assert file.renditions["thumb"].exists()  # done when save() returns


async def test_save_async_reports_errors_from_the_worker(
    memory_backend: ObstoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = FileObject(filename="a.png", content=b"not an image", backend="memory")
    with pytest.raises(InvalidImageError):
        await file.save_async(policy=UploadPolicy(image=ImagePolicy()))
    assert file.has_pending_content
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingDependencyError):
        await file.save_async(policy=UploadPolicy(image=ImagePolicy()))
    assert list(memory_backend.list_objects()) == []


def test_the_memory_limiter_never_holds_more_than_its_budget() -> None:
    limiter = _MemoryLimiter(100)
    peak = 0
    alone: list[bool] = []
    lock = threading.Lock()

    def job(amount: int) -> None:
        nonlocal peak
        with limiter.hold(amount):
            with lock:
                peak = max(peak, limiter.used)
                if amount > 100:
                    alone.append(limiter.used == 100)
            time.sleep(0.002)

    threads = [threading.Thread(target=job, args=(a,)) for a in [30, 70, 150, 20, 60] * 8]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 100  # full at times, never over
    assert alone == [True] * 8  # too large for the budget: ran alone
    assert limiter.used == 0


def test_the_memory_limiter_serves_first_come_first() -> None:
    limiter = _MemoryLimiter(100)
    order: list[str] = []
    holding = limiter.hold(60)
    holding.__enter__()

    def job(name: str, amount: int) -> None:
        with limiter.hold(amount):
            order.append(name)

    big = threading.Thread(target=job, args=("big", 80))
    big.start()
    while not limiter._queue:  # the big job waits for the 60 held
        time.sleep(0.001)
    small = threading.Thread(target=job, args=("small", 10))  # would fit now: must queue
    small.start()
    time.sleep(0.05)
    assert order == []
    holding.__exit__(None, None, None)
    big.join()
    small.join()
    assert order == ["big", "small"]


async def test_a_cancelled_save_async_leaves_the_budget_whole(
    memory_backend: ObstoreBackend,
) -> None:
    from sqlalchemy_obstore import _offload

    previous = set_processing_limits(ProcessingLimits(max_memory=64 * MIB, workers=2))
    try:
        with _offload.hold_memory(64 * MIB):  # the budget is taken: the job waits in a worker
            file = FileObject(filename="a.png", content=image_bytes(), backend="memory")
            task = asyncio.create_task(file.save_async(policy=UploadPolicy(image=ImagePolicy())))
            while not _offload._limiter._queue:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        while _offload._limiter._queue or _offload._limiter.used:  # the worker finishes
            await asyncio.sleep(0.005)
        assert list(memory_backend.list_objects()) == []
    finally:
        set_processing_limits(previous)
    assert processing_limits() == previous
