"""A file decoded from outside data names only an object its row already held.

A request body is untrusted (DESIGN, "Safety"): a `FileObject` decoded from one
(`FileObject.from_dict` without `trusted=True`, Pydantic, msgspec, a dict assigned to a
column) could name any object in the bucket, another user's included. So before a flush
uploads or writes anything, `vet_references` lets such a file into a row only as the
echo of an object that same row and column held - an edit form sending the value back -
and refuses everything else with `UntrustedReferenceError`. An echo takes the stored
facts of the object it names (only its filename comes from outside), so what is written
is what the server stored. This holds for every session and column, tracked or not.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified, instance_state

from ._column_defaults import apply_column_defaults
from ._errors import UntrustedReferenceError
from ._file_columns import file_columns
from ._file_object import FileObject
from ._held_files import files_ever_in, previous_values, ref_of
from ._session_io import Ref

__all__ = ("vet_references",)


def vet_references(session: Session) -> None:
    """Refuse untrusted references that the rows being written do not already hold.

    A file decoded from outside data (`FileObject.from_dict` without `trusted=True`,
    Pydantic, msgspec, a dict assigned to a column) may be written into a row only as the
    echo of an object that same row and column held: an edit form sending the value
    back. It then takes the stored facts of the object the row held, keeping only its
    filename. Anything else raises `UntrustedReferenceError` before anything is uploaded
    or written. Runs for every session and column, tracked or not: it is not about
    tracking files, it is about who may name them.
    """
    for obj in (*session.new, *session.dirty):
        state = instance_state(obj)
        for key, column in file_columns(state.mapper).all:
            value = state.dict.get(key)
            if value is None:
                continue
            items = value if isinstance(value, list) else (value,)
            untrusted = [f for f in items if isinstance(f, FileObject) and f.__dict__["_untrusted"]]
            if untrusted:
                apply_column_defaults(column, value)
                _accept_echoes(obj, key, value, untrusted)


def _accept_echoes(obj: Any, key: str, value: Any, untrusted: list[FileObject]) -> None:
    held: dict[Ref, FileObject] = {}
    state = instance_state(obj)
    previous = previous_values(obj, key) if state.persistent else []
    # (a value equal to the old one - same backend and path - is no change to the
    # attribute history, but the old value is still in committed_state)
    original = state.committed_state.get(key) if state.persistent else None
    for old in (original, *previous, value):
        for file in files_ever_in(old):
            if not file.__dict__["_untrusted"] and (ref := ref_of(file)) is not None:
                held.setdefault(ref, file)
    for file in untrusted:
        ref = ref_of(file)
        match = held.get(ref) if ref is not None else None
        if match is None:
            raise UntrustedReferenceError(
                f"{type(obj).__name__}.{key} cannot take {file!r}: it was decoded from "
                "outside data (a request body) and names an object this row does not hold, "
                "so it could point at another user's file. Upload new content instead (or "
                "redeem an upload ticket); send back only the value the row already has; "
                "build references on purpose in server code with the FileObject "
                "constructor or FileObject.from_dict(..., trusted=True).",
                backend=file.backend,
                path=file.path,
            )
        file._take_stored_facts(match)
    flag_modified(obj, key)  # (an echo equal to the old value would not be written)
