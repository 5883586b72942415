"""FastAPI integration: `Depends`-ready providers and signed URLs in Pydantic responses.

Builds on [`sqlalchemy_obstore.contrib.starlette`][sqlalchemy_obstore.contrib.starlette]
(FastAPI is Starlette underneath), whose names it re-exports, so one import serves a
FastAPI application:

* [`StorageExtension`][sqlalchemy_obstore.contrib.starlette.StorageExtension]`(...).init_app(app)`:
  backends registered for the application's lifetime (around its own lifespan), the
  signed-URL route for local files and memory, HTTP statuses for the errors a client
  causes;
* **dependencies**: [`Storages`][sqlalchemy_obstore.contrib.fastapi.Storages] is the
  registry (`storages: Storages`), and
  [`provide_backend`][sqlalchemy_obstore.contrib.fastapi.provide_backend] one backend
  by key (`Annotated[Backend, Depends(provide_backend("uploads"))]`);
* **signed URLs in responses**: a field annotated
  [`Signed`][sqlalchemy_obstore.contrib.fastapi.Signed] (`SignedFile` for short)
  serialises the file in the [column format](../concepts/stored-object.md#the-column-format)
  plus a `"url"`: a signed GET URL (`null` when its backend cannot sign). A list of
  files is signed in one batch per backend.

Where signing happens: FastAPI serialises the response synchronously, so the field
signs with the sync `sign()`: no I/O with static credentials and with the HMAC signer
of local and memory backends (pure computation). With credentials fetched at run time
(instance roles), call [`presign_async`][sqlalchemy_obstore.contrib.fastapi.presign_async]
on the response in the handler: it signs every `Signed` file in it, one batch per
backend and lifetime, and serialisation reuses the cached URLs.

Example:
    ```python
    from typing import Annotated
    from fastapi import Depends, FastAPI
    from pydantic import BaseModel
    from sqlalchemy_obstore import Backend, ObstoreBackend
    from sqlalchemy_obstore.contrib.fastapi import (
        SignedFile, Storages, StorageExtension, provide_backend,
    )

    app = FastAPI()
    StorageExtension(
        [ObstoreBackend("uploads", "s3://bucket/", prefix="uploads")]
    ).init_app(app)

    class DocumentOut(BaseModel):
        id: int
        file: SignedFile  # {"backend", "path", ..., "url": "https://bucket.s3..."}

    Uploads = Annotated[Backend, Depends(provide_backend("uploads"))]

    @app.get("/backends")
    async def backends(storages: Storages) -> list[str]:
        return sorted(storages)
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union, get_args, get_origin

try:
    from fastapi import Depends, Request
except ImportError as exc:  # pragma: no cover - depends on the environment
    from .._errors import MissingDependencyError

    raise MissingDependencyError("fastapi", "fastapi") from exc

from .._errors import BackendNotFoundError, ConfigurationError, UnsupportedOperationError
from .._file_object import FileObject, column_json_schema, sign_files, sign_files_async
from .._registry import BackendRegistry, storages
from ..backends import Backend
from .starlette import (
    STATE_KEY,
    FileStreamingResponse,
    StorageExtension,
    file_response,
    install_error_handlers,
    signed_redirect,
    storage_lifespan,
    storage_routes,
)

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema

__all__ = (
    "DEFAULT_SIGNED_URL_EXPIRES_IN",
    "FileStreamingResponse",
    "Signed",
    "SignedFile",
    "StorageExtension",
    "Storages",
    "file_response",
    "get_storages",
    "install_error_handlers",
    "presign",
    "presign_async",
    "provide_backend",
    "signed_redirect",
    "storage_lifespan",
    "storage_routes",
)

_T = TypeVar("_T")

DEFAULT_SIGNED_URL_EXPIRES_IN = 3600
"""Lifetime, in seconds, of the URLs of `SignedFile` fields."""

_URL_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "null"}],
    "description": "A short-lived signed GET URL of the file (null when its backend cannot sign).",
}


# -- dependencies ---------------------------------------------------------------------------------
def get_storages(request: Request) -> BackendRegistry:
    """The application's backend registry: its `StorageExtension`'s, else `storages`.

    A dependency (`Depends(get_storages)`);
    [`Storages`][sqlalchemy_obstore.contrib.fastapi.Storages] is the annotated form.

    Example:
        ```python
        @app.get("/backends")
        async def backends(registry: BackendRegistry = Depends(get_storages)) -> list[str]:
            return sorted(registry)
        ```
    """
    extension = getattr(request.app.state, STATE_KEY, None)
    registry = getattr(extension, "registry", None)
    return registry if isinstance(registry, BackendRegistry) else storages


Storages = Annotated[BackendRegistry, Depends(get_storages)]
"""The registry as a dependency: `async def view(storages: Storages): ...`."""


def provide_backend(key: str) -> Callable[[Request], Backend]:
    """A dependency giving the backend registered under `key` in the application's registry.

    Resolved per request, so the backend the lifespan registers is the one handed out.
    A key that is not registered is a server error (`BackendNotFoundError`).

    Example:
        ```python
        Uploads = Annotated[Backend, Depends(provide_backend("uploads"))]

        @app.get("/uploads/health")
        async def health(uploads: Uploads) -> dict[str, str]:
            return {"store": uploads.describe()}
        ```
    """

    def backend(request: Request) -> Backend:
        return get_storages(request).get_backend(key)

    backend.__name__ = f"provide_backend_{key}"
    return backend


# -- signed URLs in Pydantic output ---------------------------------------------------------------
def _shape(source: Any) -> tuple[bool, bool]:
    """`(is_list, nullable)` of an annotated type, which must hold `FileObject`s."""
    nullable = False
    origin = get_origin(source)
    if origin is Union or type(source).__name__ == "UnionType":
        members = [a for a in get_args(source) if a is not type(None)]
        nullable = len(members) < len(get_args(source))
        if len(members) == 1:
            source, origin = members[0], get_origin(members[0])
    if isinstance(source, type) and issubclass(source, FileObject):
        return False, nullable
    if origin in (list, tuple) or (isinstance(source, type) and issubclass(source, list)):
        items = [a for a in get_args(source) if a is not Ellipsis]
        if not items or all(isinstance(a, type) and issubclass(a, FileObject) for a in items):
            return True, nullable
    raise ConfigurationError(
        f"Signed annotates FileObject, FileObject | None or list[FileObject], not {source!r}."
    )


def _url(file: FileObject, expires_in: int | timedelta) -> str | None:
    """The signed URL of one file (cached ones reused), or `None` when it cannot sign."""
    try:
        return file.sign(expires_in=expires_in)
    except (UnsupportedOperationError, BackendNotFoundError):
        return None


def _by_backend(files: list[FileObject]) -> dict[str | None, list[FileObject]]:
    groups: dict[str | None, list[FileObject]] = {}
    for file in files:
        groups.setdefault(file.backend, []).append(file)
    return groups


# A backend that cannot sign (or is unknown) leaves its files without URLs; the others
# are signed in one batch each, their URLs cached on the files.
_CANNOT_SIGN = (UnsupportedOperationError, BackendNotFoundError)


def _sign_all(files: list[FileObject], expires_in: int | timedelta) -> None:
    """Sign `files` in one batch per backend (caching the URLs); skip those that cannot."""
    for group in _by_backend(files).values():
        with suppress(*_CANNOT_SIGN):
            sign_files(group, expires_in=expires_in)


async def _sign_all_async(files: list[FileObject], expires_in: int | timedelta) -> None:
    for group in _by_backend(files).values():
        with suppress(*_CANNOT_SIGN):
            await sign_files_async(group, expires_in=expires_in)


@dataclass(frozen=True)
class Signed:
    """Serialise a `FileObject` field with a signed GET URL: `Annotated[FileObject, Signed()]`.

    The field is written in the column format plus `"url"`: a signed GET URL valid for
    `expires_in`, or `null` when the file's backend cannot sign (a local or memory
    backend without a signing secret). URLs are cached on the file and reused while
    more than half of their lifetime remains. Annotates `FileObject`,
    `FileObject | None` and `list[FileObject]`; a list is signed in one batch per
    backend. A `"url"` in input data is dropped, never stored as a field of the file.

    Signing happens while Pydantic serialises, synchronously (see the module
    documentation); `presign_async` signs ahead, asynchronously.

    Args:
        expires_in: Lifetime of the URLs (seconds or a timedelta).

    Example:
        >>> from typing import Annotated
        >>> from pydantic import BaseModel
        >>> from sqlalchemy_obstore import ObstoreBackend, storages
        >>> from sqlalchemy_obstore.signing import HmacUrlSigner
        >>> class Out(BaseModel):
        ...     file: Annotated[FileObject, Signed(expires_in=60)]
        >>> backend = ObstoreBackend("docs", "memory://", prefix="docs")
        >>> backend.url_signer = HmacUrlSigner("s" * 32, base_url="/_storage")
        >>> with storages.temporary(backend):
        ...     out = Out(file=FileObject(backend="docs", path="k/a.txt"))
        ...     out.model_dump(mode="json")["file"].get("url").split("?")[0]
        '/_storage/docs/k/a.txt'
    """

    expires_in: int | timedelta = DEFAULT_SIGNED_URL_EXPIRES_IN

    def __get_pydantic_core_schema__(
        self, source_type: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        """Wrap the field's schema: drop `url` on input, add it on output."""
        from pydantic_core import core_schema

        is_list, _ = _shape(source_type)
        inner = handler(source_type)
        serializer = self._serialize_list if is_list else self._serialize_one
        return core_schema.no_info_before_validator_function(
            _drop_url,
            inner,
            serialization=core_schema.wrap_serializer_function_ser_schema(
                serializer, schema=inner, when_used="always"
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The column format's schema with the `url` property."""
        one = column_json_schema()
        one["properties"] = {**one.get("properties", {}), "url": _URL_SCHEMA}
        one["title"] = "SignedFile"
        kind = schema.get("schema", schema)
        if kind.get("type") == "nullable":
            kind = kind.get("schema", kind)
            wrapped = self._wrap(kind, one)
            return {"anyOf": [wrapped, {"type": "null"}]}
        return self._wrap(kind, one)

    @staticmethod
    def _wrap(kind: Mapping[str, Any], one: dict[str, Any]) -> dict[str, Any]:
        if kind.get("type") in ("list", "tuple"):
            return {"type": "array", "items": one}
        return one

    def _serialize_one(self, value: Any, serialize: Callable[[Any], Any]) -> Any:
        data = serialize(value)
        if isinstance(value, FileObject) and isinstance(data, dict):
            data["url"] = _url(value, self.expires_in)
        return data

    def _serialize_list(self, value: Any, serialize: Callable[[Any], Any]) -> Any:
        if value is None:
            return serialize(value)
        files = [f for f in value if isinstance(f, FileObject) and f.is_saved]
        if files:
            _sign_all(files, self.expires_in)  # one batch per backend, cached on the files
        data = serialize(value)
        if isinstance(data, list):
            for file, item in zip(value, data, strict=False):
                if isinstance(file, FileObject) and isinstance(item, dict):
                    item["url"] = _url(file, self.expires_in)
        return data


def _drop_url(value: Any) -> Any:
    if isinstance(value, Mapping) and "url" in value:
        return {k: v for k, v in value.items() if k != "url"}
    if isinstance(value, list):
        return [_drop_url(item) for item in value]
    return value


SignedFile = Annotated[FileObject, Signed()]
"""A `FileObject` field serialised with a signed GET URL valid for an hour."""


# -- signing ahead --------------------------------------------------------------------------------
def _signed_fields(model: Any) -> Iterator[tuple[Signed, Any]]:
    fields = getattr(type(model), "model_fields", None)
    if not isinstance(fields, Mapping):
        return
    for name, info in fields.items():
        for marker in getattr(info, "metadata", ()):
            if isinstance(marker, Signed):
                yield marker, getattr(model, name, None)


def _collect(value: Any) -> dict[int | timedelta, list[FileObject]]:
    """Every file in `value` (models, lists, dicts) held by a `Signed` field, by lifetime."""
    found: dict[int | timedelta, list[FileObject]] = {}
    seen: set[int] = set()

    def walk(item: Any) -> None:
        if id(item) in seen or isinstance(item, (str, bytes, int, float, FileObject)):
            return
        seen.add(id(item))
        for marker, held in _signed_fields(item):
            files = held if isinstance(held, (list, tuple)) else [held]
            for file in files:
                if isinstance(file, FileObject) and file.is_saved:
                    found.setdefault(marker.expires_in, []).append(file)
        children: Iterable[Any] = ()
        if isinstance(item, Mapping):
            children = item.values()
        elif isinstance(item, (list, tuple, set)):
            children = item
        elif hasattr(type(item), "model_fields"):
            children = [getattr(item, name, None) for name in type(item).model_fields]
        for child in children:
            walk(child)

    walk(value)
    return found


def presign(value: _T) -> _T:
    """Sign every file `value` holds in a `Signed` field now, one batch per backend.

    Serialisation then reuses the cached URLs. `value` is a Pydantic model, or lists,
    tuples and dicts of them; it is returned unchanged.

    Example:
        ```python
        @app.get("/documents")
        def documents() -> list[DocumentOut]:
            return presign([DocumentOut.of(doc) for doc in load_page()])
        ```
    """
    for expires_in, files in _collect(value).items():
        _sign_all(files, expires_in)
    return value


async def presign_async(value: _T) -> _T:
    """Async version of [`presign`][sqlalchemy_obstore.contrib.fastapi.presign].

    Use it with credentials fetched at run time (instance roles), where signing may need
    I/O: the URLs are signed here, asynchronously, instead of in FastAPI's synchronous
    serialisation.

    Example:
        ```python
        @app.get("/documents")
        async def documents(db: DB) -> list[DocumentOut]:
            rows = await db.scalars(select(Document))
            return await presign_async([DocumentOut.of(doc) for doc in rows])
        ```
    """
    for expires_in, files in _collect(value).items():
        await _sign_all_async(files, expires_in)
    return value
