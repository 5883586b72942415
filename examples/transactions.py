"""Files follow the transaction: a sync `Session` tour of rollback and savepoints.

Runs against an in-memory SQLite database and a memory store, and prints what storage
holds after each step.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from sqlalchemy_obstore import FileObject, ObstoreBackend, StoredObject, storages

backend = ObstoreBackend("uploads", "memory://")
storages.register_backend(backend)


class Base(DeclarativeBase):
    pass


class Album(Base):
    __tablename__ = "albums"
    id: Mapped[int] = mapped_column(primary_key=True)
    cover: Mapped[FileObject | None] = mapped_column(StoredObject("uploads"))
    photos: Mapped[list[Photo]] = relationship(cascade="all, delete-orphan")


class Photo(Base):
    __tablename__ = "photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    album_id: Mapped[int] = mapped_column(ForeignKey("albums.id"))
    image: Mapped[FileObject] = mapped_column(StoredObject("uploads"))


def objects() -> int:
    return sum(1 for _ in backend.list_objects())


def show(step: str) -> None:
    print(f"{step:<45} objects in storage: {objects()}")


engine = create_engine("sqlite://")


# pysqlite needs this for real SAVEPOINT support (see SQLAlchemy's SQLite dialect docs)
@event.listens_for(engine, "connect")
def _connect(dbapi_connection, record):  # type: ignore[no-untyped-def]
    dbapi_connection.isolation_level = None


@event.listens_for(engine, "begin")
def _begin(conn):  # type: ignore[no-untyped-def]
    conn.exec_driver_sql("BEGIN")


Base.metadata.create_all(engine)

with Session(engine) as session:
    album = Album(cover=FileObject(filename="cover.jpg", content=b"cover v1"))
    album.photos = [Photo(image=FileObject(filename=f"{i}.jpg", content=b"x")) for i in range(3)]
    session.add(album)
    session.commit()
    show("added an album with a cover and 3 photos")

    album.cover = FileObject(filename="cover.jpg", content=b"cover v2")
    session.flush()
    show("replaced the cover, flushed (old kept)")
    session.commit()
    show("committed (old cover deleted)")

    album.photos.append(Photo(image=FileObject(filename="4.jpg", content=b"y")))
    session.flush()
    show("added a photo, flushed")
    session.rollback()
    show("rolled back (its upload removed)")

    with session.begin_nested():
        album.photos.append(Photo(image=FileObject(filename="5.jpg", content=b"z")))
    savepoint = session.begin_nested()
    album.cover = FileObject(filename="cover.jpg", content=b"cover v3")
    session.flush()
    show("savepoint 1 released, savepoint 2 flushed")
    savepoint.rollback()
    show("savepoint 2 rolled back")
    session.commit()
    show("committed")

    album.photos.pop()
    session.commit()
    show("removed a photo (delete-orphan cascade)")

    session.delete(album)
    session.commit()
    show("deleted the album")
