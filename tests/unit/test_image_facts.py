"""Image facts: the size an image policy learnt, in the column and on `FileObject`."""

from __future__ import annotations

import io
import pickle

import pytest
from PIL import Image
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, UploadPolicy, storages
from sqlalchemy_obstore.processing import ImageFacts, ImagePolicy, Normalize, Rendition

ROW = {"backend": "b", "path": "k/a.png", "content_type": "image/png", "size": 3}


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


def jpeg_turned(size: tuple[int, int]) -> bytes:
    """A JPEG stored `size`, displayed turned by a quarter (EXIF orientation 6)."""
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", size, (1, 2, 3)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_rows_without_facts_load_and_write_unchanged() -> None:
    file = FileObject.from_dict(ROW, trusted=True)
    assert (file.image, file.width, file.height) == (None, None, None)
    assert "image" not in file.to_dict()


def test_facts_are_read_and_written_back() -> None:
    data = {**ROW, "image": {"width": 4, "height": 3}}
    file = FileObject.from_dict(data, trusted=True)
    assert (file.width, file.height) == (4, 3)
    assert file.image == ImageFacts(width=4, height=3)
    assert file.to_dict()["image"] == {"width": 4, "height": 3}
    restored = pickle.loads(pickle.dumps(file))
    assert restored.image == file.image


@pytest.mark.parametrize(
    "image", [{"width": 0, "height": 3}, {"width": "4", "height": 3}, {"width": 4}, [4, 3]]
)
def test_facts_of_another_shape_are_kept_as_unknown(image: object) -> None:
    file = FileObject.from_dict({**ROW, "image": image}, trusted=True)
    assert file.image is None
    assert file.to_dict()["image"] == image


def test_an_image_policy_records_the_size_of_the_original_and_each_rendition() -> None:
    policy = UploadPolicy(
        image=ImagePolicy(
            normalize=Normalize(max_width=100, max_height=100),
            renditions=(Rendition("thumb", 16, 16), Rendition("card", 30, 20, mode="cover")),
        )
    )
    with storages.temporary(ObstoreBackend("b", "memory://")):
        file = FileObject(filename="a.png", content=png((400, 200)), backend="b")
        file.save(policy=policy)
        assert (file.width, file.height) == (100, 50)
        assert file.image is not None
        assert file.image.spec is None
        thumb, card = file.renditions["thumb"], file.renditions["card"]
        assert (thumb.width, thumb.height) == (16, 8)
        assert thumb.image == ImageFacts(width=16, height=8, spec="fit 16x16 WEBP q80")
        assert (card.width, card.height) == (30, 20)
        loaded = FileObject.from_dict(file.to_dict(), trusted=True)
        assert loaded.renditions["thumb"].image == thumb.image

    plain = FileObject(filename="b.png", content=png((5, 5)), backend="b")
    with storages.temporary(ObstoreBackend("b", "memory://")):
        plain.save()  # no image policy: nothing learnt
    assert (plain.image, plain.width) == (None, None)


def test_the_size_is_the_displayed_one() -> None:
    policy = UploadPolicy(image=ImagePolicy())  # the original is stored as uploaded
    with storages.temporary(ObstoreBackend("b", "memory://")):
        file = FileObject(filename="a.jpg", content=jpeg_turned((60, 20)), backend="b")
        file.save(policy=policy)
    assert (file.width, file.height) == (20, 60)


def test_a_rolled_back_upload_gives_the_image_facts_back() -> None:
    storages.register_backend(ObstoreBackend("facts-undo", "memory://"), replace=True)

    class Base(DeclarativeBase):
        pass

    class Photo(Base):
        __tablename__ = "photos"
        id: Mapped[int] = mapped_column(primary_key=True)
        file: Mapped[FileObject] = mapped_column(
            StoredObject("facts-undo", policy=UploadPolicy(image=ImagePolicy()))
        )

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    file = FileObject(filename="a.png", content=png((5, 4)))
    with Session(engine) as session:
        session.add(Photo(file=file))
        session.flush()
        assert (file.width, file.height) == (5, 4)
        session.rollback()
    assert file.has_pending_content
    assert file.path is None
    assert (file.image, file.width, file.height) == (None, None, None)
    engine.dispose()
