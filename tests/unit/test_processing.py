"""Image policies: header checks before decoding, normalisation, renditions on save."""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import pytest
from PIL import Image, ImageFile

from sqlalchemy_obstore import (
    ConfigurationError,
    FileObject,
    FileTooLargeError,
    InvalidImageError,
    MissingDependencyError,
    ObstoreBackend,
    UploadPolicy,
    ValidationError,
)
from sqlalchemy_obstore.backends import UploadBody, WriteResult
from sqlalchemy_obstore.processing import ImagePolicy, Normalize, Rendition, rendition_path

THUMB = Rendition("thumb", 32, 32)


def image_bytes(
    size: tuple[int, int] = (80, 40), fmt: str = "PNG", mode: str = "RGB", **save: Any
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else 128).save(out, fmt, **save)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring `width` x `height` gray pixels, a few bytes long.

    Built by hand: the pixels are never allocated, not even to write the file.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
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
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        save(memory_backend, bomb_png(8_000, 8_000), ImagePolicy())  # 64 MP > 50 MP
    with pytest.raises(InvalidImageError, match="decompression bomb"):
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
