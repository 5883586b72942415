"""Backends under conformance test, what each is expected to do, and the result recorder.

`tests/integration/test_conformance.py` runs one set of tests against every backend
listed in [`BACKENDS`][]; this module holds what those tests share:

* how each backend is built, the way a user would build it (a storage URL plus
  configuration keys; nothing obstore-specific such as `allow_http` or
  `copy_if_not_exists`, which the library must add itself);
* [`EXPECTED`][]: what each backend claims it can do. Tests assert the claim (a capability
  works, or fails with the typed `UnsupportedOperationError`); they never skip;
* [`CapabilityRecorder`][]: the outcomes the tests observed, written as JSON when
  `SQLALCHEMY_OBSTORE_CAPABILITIES_OUT` is set, from which
  `scripts/capability_table.py` renders `docs/backends/capabilities.md`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import obstore
from obstore import exceptions as obs_errors

from sqlalchemy_obstore import ObstoreBackend, StorageError

if TYPE_CHECKING:
    from tests.servers import AzuriteServer, FakeGcsServer, S3Server

__all__ = [
    "BACKENDS",
    "BACKEND_KEY",
    "CAPABILITIES_ENV",
    "EXPECTED",
    "OPERATIONS",
    "Capabilities",
    "CapabilityRecorder",
    "Outcome",
    "Target",
    "assert_translated",
    "azurite_backend",
    "fake_gcs_backend",
    "gcs_seed",
    "s3_backend",
]

#: Every conformance backend is registered under this key (the test model's column uses it).
BACKEND_KEY = "conformance"
#: Set to a file path to have the suite write the capability results there as JSON.
CAPABILITIES_ENV = "SQLALCHEMY_OBSTORE_CAPABILITIES_OUT"

#: Backend ids (pytest parameter ids) and the column titles of the capability table.
BACKENDS: dict[str, str] = {
    "memory": "Memory",
    "local": "Local files",
    "moto": "S3 (moto)",
    "seaweed": "S3 (SeaweedFS)",
    "azurite": "Azure (Azurite)",
    "gcs": "GCS (fake-gcs-server)",
}

Outcome = Literal["supported", "unsupported", "dropped", "emulator-gap", "refused", "not-checked"]
"""What a test observed for one operation on one backend.

* `supported`: the operation worked and its result was checked.
* `unsupported`: the library raised `UnsupportedOperationError` (the store cannot).
* `dropped`: accepted, but the store keeps nothing (attributes on local files).
* `emulator-gap`: the library supports it, but the local emulator cannot serve it; the
  test asserted that the failure arrives as a typed `StorageError`.
* `refused`: the server refused the request, as it must (tampered or expired URLs).
* `not-checked`: the emulator does not verify signatures (asserted, so that signature
  tests are known to need another server).
"""

#: Row order (and row titles) of the capability table.
OPERATIONS: dict[str, str] = {
    "save.bytes": "Save `bytes`",
    "save.memoryview": "Save `memoryview`",
    "save.path": "Save `pathlib.Path`",
    "save.file": "Save binary file object",
    "save.iter": "Save sync iterator",
    "save.aiter": "Save async iterator (`save_async`)",
    "multipart": "Multipart upload (content > `chunk_size`)",
    "read.whole": "Read whole object (`get_bytes`, `get_content`)",
    "read.chunks": "Streamed read (`iter_chunks`)",
    "read.range": "Range read (`get_range`)",
    "read.suffix": "Suffix read (`get_suffix`)",
    "head": "Head / `refresh()` (size, etag, content type)",
    "exists": "`exists()`",
    "missing": "Missing object raises `ObjectNotFoundError`",
    "delete": "Delete one / many",
    "delete.missing": "Delete of a missing object is a no-op",
    "copy": "Copy",
    "copy.no_overwrite": "Copy refuses to overwrite (`ObjectExistsError`)",
    "list.prefix": "List under a prefix",
    "list.offset": "List after an offset",
    "list.paging": "List more than 1000 objects (paging)",
    "attributes": "Attributes: content type, disposition, cache control, metadata",
    "sign.get": "Signed GET URL (fetched with httpx)",
    "sign.put": "Signed PUT URL (uploaded with httpx + `upload_headers`)",
    "sign.expiry_limit": "Longest signed-URL lifetime",
    "sign.tampered": "Server refuses a tampered signed URL",
    "sign.expired": "Server refuses an expired signed URL",
    "sign.wrong_secret": "Server refuses a URL signed with a wrong secret",
    "sign.offline_verified": "Signature verified offline (GOOG4-RSA-SHA256)",
    "column.lifecycle": "Column + session lifecycle (SQLite, `AsyncSession`)",
    "column.direct_upload": "Column lifecycle with direct uploads (ticket, signed PUT, redeem)",
}


@dataclass(frozen=True)
class Capabilities:
    """What a backend claims; the suite asserts each claim."""

    signing: bool  # the store itself signs
    attributes: bool
    #: True when the backend signs through the process's development signer (memory).
    development_signing: bool = False
    suffix_range: bool = True
    max_sign_expiry: timedelta | None = None
    upload_headers: Mapping[str, str] = field(default_factory=dict)
    #: False when the emulator cannot take the library's writes (fake-gcs-server).
    writes: bool = True


_SEVEN_DAYS = timedelta(days=7)
EXPECTED: dict[str, Capabilities] = {
    "memory": Capabilities(signing=False, attributes=True, development_signing=True),
    "local": Capabilities(signing=False, attributes=False),
    "moto": Capabilities(signing=True, attributes=True, max_sign_expiry=_SEVEN_DAYS),
    "seaweed": Capabilities(signing=True, attributes=True, max_sign_expiry=_SEVEN_DAYS),
    "azurite": Capabilities(
        signing=True,
        attributes=True,
        suffix_range=False,
        upload_headers={"x-ms-blob-type": "BlockBlob"},
    ),
    "gcs": Capabilities(signing=True, attributes=True, max_sign_expiry=_SEVEN_DAYS, writes=False),
}

#: Why fake-gcs-server cannot take writes; used in records and messages.
GCS_WRITE_GAP = (
    "fake-gcs-server has no XML-API upload/copy, which obstore's GCS client uses "
    "(400 invalid uploadType); asserted to fail as a typed StorageError"
)


# -- recording ---------------------------------------------------------------------------------
class CapabilityRecorder:
    """Collects `(operation, backend) -> outcome` observations of one test session."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, dict[str, str]]] = {}

    def record(self, backend: str, operation: str, outcome: Outcome, detail: str = "") -> None:
        if operation not in OPERATIONS:
            raise KeyError(f"Unknown operation {operation!r}; add it to OPERATIONS.")
        row = self.results.setdefault(operation, {})
        previous = row.get(backend)
        if previous is not None and previous["outcome"] != outcome:
            raise AssertionError(
                f"{operation} on {backend}: recorded {previous['outcome']!r}, now {outcome!r}"
            )
        row[backend] = {"outcome": outcome, "detail": detail}

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_by": "tests/integration/test_conformance.py",
            "obstore_version": getattr(obstore, "__version__", "unknown"),
            "backends": BACKENDS,
            "operations": OPERATIONS,
            "results": self.results,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")

    def write_if_requested(self) -> Path | None:
        target = os.environ.get(CAPABILITIES_ENV)
        if not target:
            return None
        path = Path(target)
        self.write(path)
        return path


# -- the backend under test ------------------------------------------------------------------
@dataclass
class Target:
    """One backend under test, with a key namespace private to the current test."""

    name: str
    backend: ObstoreBackend
    expected: Capabilities
    recorder: CapabilityRecorder
    root: str
    gcs: FakeGcsServer | None = None

    def key(self, name: str) -> str:
        """A key under this test's private root."""
        return f"{self.root}/{name}"

    def record(self, operation: str, outcome: Outcome, detail: str = "") -> None:
        self.recorder.record(self.name, operation, outcome, detail)

    def seed(
        self,
        path: str,
        data: bytes,
        *,
        content_type: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        """Store an object for a read-side test.

        Through the library everywhere except fake-gcs-server, which only takes writes
        through its JSON API.
        """
        attrs = dict(attributes or {})
        if content_type is not None:
            attrs["Content-Type"] = content_type
        if self.gcs is None:
            self.backend.put(path, data, attributes=attrs or None)
        else:
            gcs_seed(self.gcs, path, data, attrs)


def gcs_seed(server: FakeGcsServer, name: str, data: bytes, attributes: Mapping[str, str]) -> None:
    """Upload through fake-gcs-server's JSON API, with object attributes.

    `attributes` uses obstore's names (`Content-Type`, `Content-Disposition`,
    `Cache-Control`, other keys are user metadata).
    """
    resource: dict[str, Any] = {"name": name}
    fields = {
        "Content-Type": "contentType",
        "Content-Disposition": "contentDisposition",
        "Cache-Control": "cacheControl",
        "Content-Encoding": "contentEncoding",
        "Content-Language": "contentLanguage",
    }
    metadata = {}
    for key, value in attributes.items():
        if key in fields:
            resource[fields[key]] = value
        else:
            metadata[key] = value
    if metadata:
        resource["metadata"] = metadata
    boundary = f"seed-{uuid.uuid4().hex}"
    body = b"".join(
        [
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            json.dumps(resource).encode(),
            f"\r\n--{boundary}\r\nContent-Type: ".encode(),
            attributes.get("Content-Type", "application/octet-stream").encode(),
            b"\r\n\r\n",
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    url = f"{server.endpoint}/upload/storage/v1/b/{server.bucket}/o?uploadType=multipart"
    with httpx.Client(timeout=10, trust_env=False) as client:
        response = client.post(
            url, content=body, headers={"Content-Type": f"multipart/related; boundary={boundary}"}
        )
    assert response.status_code == 200, response.text


# -- building backends the way users do ----------------------------------------------------------
def s3_backend(
    server: S3Server, *, key: str = BACKEND_KEY, prefix: str | None = None, **overrides: Any
) -> ObstoreBackend:
    """`s3://bucket/` plus endpoint, credentials and region, path-style."""
    config: dict[str, Any] = {
        "endpoint": server.endpoint,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region": server.region,
        "virtual_hosted_style_request": False,
    }
    config.update(overrides)
    return ObstoreBackend(key, f"s3://{server.bucket}/", prefix=prefix, **config)


def azurite_backend(
    server: AzuriteServer, *, key: str = BACKEND_KEY, prefix: str | None = None
) -> ObstoreBackend:
    """`az://container/` with `use_emulator=True` and the emulator's endpoint."""
    return ObstoreBackend(
        key,
        f"az://{server.container}/",
        prefix=prefix,
        use_emulator=True,
        endpoint=server.blob_url,
    )


_GCS_ACCOUNTS: dict[str, str] = {}


def fake_gcs_backend(
    server: FakeGcsServer, *, key: str = BACKEND_KEY, prefix: str | None = None
) -> ObstoreBackend:
    """`gs://bucket/` with a service-account JSON (throwaway RSA key, emulator base URL)."""
    account = _GCS_ACCOUNTS.get(server.endpoint)
    if account is None:  # RSA key generation is slow-ish; one key per server is enough
        account = _GCS_ACCOUNTS[server.endpoint] = server.service_account_json()
    return ObstoreBackend(key, f"gs://{server.bucket}/", prefix=prefix, service_account_key=account)


# -- assertions ---------------------------------------------------------------------------------
def assert_translated(exc: BaseException, expected: type[BaseException] = StorageError) -> None:
    """`exc` is the library's typed error, never a raw obstore or OS error."""
    assert isinstance(exc, expected), f"expected {expected.__name__}, got {exc!r}"
    assert isinstance(exc, StorageError), f"not a StorageError: {exc!r}"
    assert not isinstance(exc, obs_errors.BaseError), f"raw obstore error leaked: {exc!r}"
    assert type(exc).__module__.startswith("sqlalchemy_obstore"), type(exc).__module__
