"""Secrets never reach messages, reprs or log lines, and redaction keeps the rest.

Every error type, every repr of an object that holds a URL or a credential, and every
logger of the library is built or fed with secret-bearing input (URL credentials, S3
signatures, credentials and session tokens, Azure SAS signatures, bearer tokens,
connection-string keys, PEM private keys); none of the secrets may come out.
"""

from __future__ import annotations

import inspect
import logging
import pkgutil
from datetime import datetime, timezone
from typing import Any

import pytest

import sqlalchemy_obstore
from sqlalchemy_obstore import errors
from sqlalchemy_obstore._logging import REDACTION
from sqlalchemy_obstore.errors import redact, redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ftp://alice:pw@h/x", "ftp://<redacted>@h/x"),
        ("see https://u:p@ss@h/x and mailto:a@b.c", "see https://<redacted>@h/x and mailto:a@b.c"),
        (
            "https://x/a?X-Amz-Security-Token=t&X-Amz-Credential=c",
            "https://x/a?X-Amz-Security-Token=<redacted>&X-Amz-Credential=<redacted>",
        ),
        ("use=1 case=2 response=3", "use=1 case=2 response=3"),  # names that only end alike
        ("https://x/a?token=abc&page=2", "https://x/a?token=<redacted>&page=2"),
        ("https://x/a?sig=s3cr3t&sp=r", "https://x/a?sig=<redacted>&sp=r"),
        ('secret_access_key: "abc", region: "x"', 'secret_access_key: "<redacted>", region: "x"'),
        ("AccountKey=abc;EndpointSuffix=core", "AccountKey=<redacted>;EndpointSuffix=core"),
    ],
)
def test_redact_removes_secret_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(redact(text)) == redact(text)  # idempotent


def test_redact_url_drops_credentials_and_every_query_value() -> None:
    assert redact_url("https://bob:pw@h.example/p?a=1&page=2#frag") == (
        "https://h.example/p?a=<redacted>&page=<redacted>"
    )
    assert redact_url("no scheme at all") == "no scheme at all"


# -- every error, repr and log line, built from secret-bearing input ---------------------------
SECRETS = (
    "hunter2",  # a password in URL userinfo
    "AKIAEXAMPLEKEYID",  # an access key id (in X-Amz-Credential)
    "s1gnatur3value",
    "SeSsIoNtOkEn",
    "sasSIGvalue",
    "bearerTOKENvalue",
    "MIIEprivatekeybody",
    "QUJDREVGaccountkey",
)
URL = (
    "https://alice:hunter2@bucket.s3.amazonaws.com/k.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLEKEYID%2F20300101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Signature=s1gnatur3value&X-Amz-Security-Token=SeSsIoNtOkEn"
)
MESSAGE = (
    f"GET {URL} failed; retry https://acct.blob.core.windows.net/c/b?sv=2022&sig=sasSIGvalue "
    "with token=bearerTOKENvalue, AccountKey=QUJDREVGaccountkey;EndpointSuffix=x and "
    "-----BEGIN PRIVATE KEY-----\nMIIEprivatekeybody\n-----END PRIVATE KEY-----"
)


def leaks(*texts: object) -> list[str]:
    found = []
    for text in texts:
        found += [secret for secret in SECRETS if secret in str(text)]
    return found


def build(cls: type[errors.StorageError]) -> errors.StorageError:
    """An instance of `cls` with secrets in every string it takes."""
    special: dict[type[Any], Any] = {
        errors.BackendNotFoundError: lambda: cls(URL, registered=[URL]),
        errors.BackendAlreadyRegisteredError: lambda: cls(URL),
        errors.NoDefaultBackendError: lambda: cls(registered=[URL]),
        errors.MissingDependencyError: lambda: cls(URL, URL),
        errors.ChecksumMismatchError: lambda: cls(expected=URL, actual=MESSAGE, path=URL),
        errors.FileTooLargeError: lambda: cls(limit=1, size_seen=2, backend=URL, path=URL),
        errors.FileTooSmallError: lambda: cls(minimum=2, size=1, backend=URL, path=URL),
        errors.TooManyPartsError: lambda: cls(
            part_size=5, max_parts=2, size_seen=11, backend=URL, path=URL
        ),
        errors.StorageErrorGroup: lambda: cls(MESSAGE, [ValueError(MESSAGE), KeyError(URL)]),
        errors.ImageTooLargeError: lambda: cls(
            MESSAGE, limit=1, actual=2, unit="bytes", backend=URL, path=URL
        ),
    }
    if cls in special:
        error: errors.StorageError = special[cls]()
        return error
    names = inspect.signature(cls).parameters
    kwargs = {name: URL for name in ("url", "address", "detected", "declared") if name in names}
    return cls(MESSAGE, **kwargs)


def all_error_types() -> list[type[errors.StorageError]]:
    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.StorageError)
    ]


@pytest.mark.parametrize("cls", all_error_types(), ids=lambda cls: cls.__name__)
def test_no_error_type_shows_a_secret(cls: type[errors.StorageError]) -> None:
    error = build(cls)
    assert isinstance(error, errors.StorageError)
    message = str(error)
    assert not leaks(message, repr(error), error.args), message
    assert not leaks(getattr(error, "url", None))


def test_an_unsupported_scheme_does_not_echo_credentials() -> None:
    from sqlalchemy_obstore import ObstoreBackend, UnsupportedSchemeError

    for url in ("ftp://alice:hunter2@files.example.com/in/", "sftp://bob:hunter2@h/x?sig=s"):
        with pytest.raises(UnsupportedSchemeError) as info:
            ObstoreBackend("files", url)
        assert not leaks(str(info.value), repr(info.value))
        assert "bob" not in str(info.value)
        assert "alice" not in str(info.value)
        assert "<redacted>@" in str(info.value)


def test_invalid_backend_configuration_does_not_echo_credentials() -> None:
    from sqlalchemy_obstore import ConfigurationError, ObstoreBackend

    with pytest.raises(ConfigurationError) as info:
        ObstoreBackend(
            "s3",
            "s3://bucket/",
            endpoint="http://alice:hunter2@127.0.0.1:9/",
            secret_access_key="bearerTOKENvalue",
            not_an_option=URL,
        )
    assert not leaks(str(info.value), repr(info.value))


def test_reprs_hide_signatures_tokens_and_credentials() -> None:
    from obstore.store import HTTPStore

    from sqlalchemy_obstore import ObstoreBackend, SignedURL
    from sqlalchemy_obstore.remote import RemoteResponse, RemoteSource
    from sqlalchemy_obstore.signing import HmacUrlSigner
    from sqlalchemy_obstore.tickets import UploadGrant, UploadTickets

    moment = datetime(2030, 1, 1, tzinfo=timezone.utc)
    signed = SignedURL(URL, "PUT", {"x-ms-blob-type": "BlockBlob"}, moment)
    assert str(signed) == URL  # the URL itself, for the client
    grant = UploadGrant(URL, "PUT", {}, moment, "ticket-bearerTOKENvalue", "b", "k")
    http = ObstoreBackend("web", HTTPStore.from_url("https://alice:hunter2@example.com/base"))
    source = RemoteSource(URL.replace("alice:hunter2@", ""))
    response = RemoteResponse(redact_url(URL), 200, "text/plain", 1, "a.txt")
    objects = [
        signed,
        grant,
        http,
        source,
        response,
        HmacUrlSigner("x" * 32 + "hunter2", base_url="/_storage"),
        UploadTickets("y" * 32 + "hunter2"),
    ]
    for obj in objects:
        assert not leaks(repr(obj)), repr(obj)
    assert "X-Amz-Signature=<redacted>" in repr(signed)
    assert repr(signed).startswith("SignedURL(method='PUT', url='https://bucket.s3")


def test_every_library_log_record_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    # Import every module so that every logger the library creates exists.
    for module in pkgutil.walk_packages(sqlalchemy_obstore.__path__, "sqlalchemy_obstore."):
        if not module.name.endswith(("litestar", "starlette", "pydantic", "msgspec")):
            __import__(module.name)
    names = [
        name
        for name in logging.Logger.manager.loggerDict
        if name == "sqlalchemy_obstore" or name.startswith("sqlalchemy_obstore.")
    ]
    for name in names:
        logger = logging.getLogger(name)
        assert REDACTION in logger.filters, f"{name}: use _logging.library_logger()"
        with caplog.at_level(logging.DEBUG, logger=name):
            caplog.clear()
            logger.warning("could not delete: %s", MESSAGE)
            try:
                raise RuntimeError(MESSAGE)
            except RuntimeError:
                logger.exception("failed")
        assert len(caplog.records) == 2
        assert not leaks(caplog.text), (name, caplog.text)
    plain = logging.getLogger("sqlalchemy_obstore.gc")
    with caplog.at_level(logging.INFO, logger="sqlalchemy_obstore.gc"):
        caplog.clear()
        plain.info("Deleted %d orphan(s) from backend %r", 3, "uploads")
    assert caplog.records[0].args == (3, "uploads")  # nothing secret: left as it was
