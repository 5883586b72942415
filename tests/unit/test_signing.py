"""HMAC-signed URLs: what a signature covers, expiry, rotation, secrets kept out of sight."""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from sqlalchemy_obstore import (
    BackendRegistry,
    ConfigurationError,
    ExpiredSignatureError,
    FileObject,
    InvalidExpiryError,
    InvalidSignatureError,
    ObstoreBackend,
    SignedURLError,
    StorageError,
    UnsupportedOperationError,
    storages,
)
from sqlalchemy_obstore.errors import redact
from sqlalchemy_obstore.signing import HmacUrlSigner, attach_signer, detach_signer

SECRET = "unit-test-signing-secret-0123456789abcdef"
OTHER_SECRET = "another-signing-secret-0123456789abcdefgh"
FUTURE = 4_000_000_000  # year 2096


def params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_url_shape_and_round_trip() -> None:
    signer = HmacUrlSigner(SECRET)
    url = signer.sign_url(
        "uploads", "docs/my report.pdf", method="GET", expires_in=timedelta(seconds=60)
    )
    parts = urlsplit(url)
    assert parts.path == "/_storage/uploads/docs/my%20report.pdf"
    query = params(url)
    assert query["method"] == "GET"
    assert int(query["expires"]) > time.time()
    assert "=" not in query["signature"]  # base64url without padding
    signer.verify(
        "uploads",
        "docs/my report.pdf",
        method="GET",
        expires=query["expires"],
        signature=query["signature"],
    )


def test_absolute_base_url_is_kept() -> None:
    signer = HmacUrlSigner(SECRET, base_url="https://files.example.com/_storage/")
    url = signer.url_for("b", "k/a.txt", method="PUT", expires=FUTURE)
    assert url.startswith("https://files.example.com/_storage/b/k/a.txt?method=PUT&expires=")


@pytest.mark.parametrize(
    ("backend", "path", "method", "expires"),
    [
        ("other", "k/a.txt", "GET", FUTURE),  # another backend
        ("b", "k/b.txt", "GET", FUTURE),  # another object
        ("b", "k/a.txt", "PUT", FUTURE),  # another method
        ("b", "k/a.txt", "DELETE", FUTURE),
        ("b", "k/a.txt", "GET", FUTURE + 1),  # a longer life
    ],
)
def test_signature_covers_method_backend_path_and_expiry(
    backend: str, path: str, method: str, expires: int
) -> None:
    signer = HmacUrlSigner(SECRET)
    signature = signer.signature("b", "k/a.txt", method="GET", expires=FUTURE)
    with pytest.raises(InvalidSignatureError):
        signer.verify(backend, path, method=method, expires=expires, signature=signature)


def test_head_is_verified_as_get() -> None:
    signer = HmacUrlSigner(SECRET)
    signature = signer.signature("b", "k/a.txt", method="GET", expires=FUTURE)
    signer.verify("b", "k/a.txt", method="HEAD", expires=FUTURE, signature=signature)
    signer.verify("b", "k/a.txt", method="get", expires=str(FUTURE), signature=signature)


def test_tampered_signature_is_refused() -> None:
    signer = HmacUrlSigner(SECRET)
    signature = signer.signature("b", "k/a.txt", method="GET", expires=FUTURE)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidSignatureError):
        signer.verify("b", "k/a.txt", method="GET", expires=FUTURE, signature=flipped)
    with pytest.raises(InvalidSignatureError):  # truncated
        signer.verify("b", "k/a.txt", method="GET", expires=FUTURE, signature=signature[:-2])


@pytest.mark.parametrize(
    ("expires", "signature"),
    [
        (None, "abc"),
        (FUTURE, None),
        (FUTURE, ""),
        ("soon", "abc"),
        ("1e12", "abc"),
        (FUTURE, "not base64 at all!"),
        (FUTURE, "é" * 43),
    ],
)
def test_missing_or_malformed_parameters_are_refused(
    expires: int | str | None, signature: str | None
) -> None:
    with pytest.raises(InvalidSignatureError):
        HmacUrlSigner(SECRET).verify(
            "b", "k/a.txt", method="GET", expires=expires, signature=signature
        )


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs/key", "a//b", "a/./b", "a\x00b", ""])
def test_paths_that_are_not_object_keys_are_refused(path: str) -> None:
    signer = HmacUrlSigner(SECRET)
    with pytest.raises(ConfigurationError):
        signer.url_for("b", path, method="GET", expires=FUTURE)
    # Even a signature computed over such a path directly is refused on verification.
    signature = signer.signature("b", path, method="GET", expires=FUTURE)
    with pytest.raises(InvalidSignatureError):
        signer.verify("b", path, method="GET", expires=FUTURE, signature=signature)


def test_backend_keys_with_a_slash_cannot_be_signed() -> None:
    with pytest.raises(ConfigurationError, match="no '/'"):
        HmacUrlSigner(SECRET).url_for("a/b", "k", method="GET", expires=FUTURE)


def test_unknown_method_cannot_be_signed() -> None:
    with pytest.raises(ValueError, match="POST"):
        HmacUrlSigner(SECRET).url_for("b", "k", method="POST", expires=FUTURE)


def test_expired_url_is_refused_only_after_the_signature_is_checked() -> None:
    signer = HmacUrlSigner(SECRET)
    expires = 1_700_000_000
    signature = signer.signature("b", "k/a.txt", method="GET", expires=expires)
    signer.verify("b", "k/a.txt", method="GET", expires=expires, signature=signature, now=expires)
    with pytest.raises(ExpiredSignatureError) as caught:
        signer.verify(
            "b", "k/a.txt", method="GET", expires=expires, signature=signature, now=expires + 1
        )
    assert caught.value.expired_at == expires
    assert "2023-11-14" in str(caught.value)
    # A forged URL is reported as invalid, never as "expired" (that would confirm it).
    with pytest.raises(InvalidSignatureError):
        signer.verify(
            "b", "k/a.txt", method="GET", expires=expires, signature="x" * 43, now=expires + 1
        )


def test_sign_url_expiry_is_checked() -> None:
    signer = HmacUrlSigner(SECRET, max_expires_in=timedelta(hours=1))
    with pytest.raises(InvalidExpiryError):
        signer.sign_url("b", "k", method="GET", expires_in=timedelta(0))
    with pytest.raises(InvalidExpiryError, match="at most"):
        signer.sign_url("b", "k", method="GET", expires_in=timedelta(hours=2))
    url = signer.sign_url("b", "k", method="GET", expires_in=timedelta(seconds=10))
    expires = int(params(url)["expires"])
    assert time.time() < expires <= time.time() + 11


def test_another_secret_is_refused_and_rotation_keeps_old_urls_valid() -> None:
    old = HmacUrlSigner(OTHER_SECRET)
    signature = old.signature("b", "k", method="GET", expires=FUTURE)
    with pytest.raises(InvalidSignatureError):
        HmacUrlSigner(SECRET).verify("b", "k", method="GET", expires=FUTURE, signature=signature)
    rotated = HmacUrlSigner(SECRET, previous_secrets=[OTHER_SECRET])
    rotated.verify("b", "k", method="GET", expires=FUTURE, signature=signature)
    # New URLs are signed with the current secret only.
    new = rotated.signature("b", "k", method="GET", expires=FUTURE)
    assert new != signature
    HmacUrlSigner(SECRET).verify("b", "k", method="GET", expires=FUTURE, signature=new)


def test_str_and_bytes_secrets_are_the_same_key() -> None:
    a = HmacUrlSigner(SECRET).signature("b", "k", method="GET", expires=FUTURE)
    b = HmacUrlSigner(SECRET.encode()).signature("b", "k", method="GET", expires=FUTURE)
    assert a == b


@pytest.mark.parametrize("secret", ["short", b"x" * 31, ""])
def test_short_secrets_are_refused(secret: str | bytes) -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        HmacUrlSigner(secret)
    with pytest.raises(ConfigurationError, match="at least 32"):
        HmacUrlSigner(SECRET, previous_secrets=[secret])


def test_empty_base_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        HmacUrlSigner(SECRET, base_url="/")


def test_secret_and_signature_never_appear_in_reprs_or_errors() -> None:
    signer = HmacUrlSigner(SECRET, previous_secrets=[OTHER_SECRET])
    assert SECRET not in repr(signer)
    assert OTHER_SECRET not in repr(signer)
    signature = signer.signature("b", "k", method="GET", expires=FUTURE)
    errors: list[StorageError] = []
    for method in ("PUT", "GET"):
        try:
            signer.verify(
                "b", "k", method=method, expires=FUTURE, signature=signature, now=FUTURE + 1
            )
        except SignedURLError as exc:
            errors.append(exc)
    assert [type(e) for e in errors] == [InvalidSignatureError, ExpiredSignatureError]
    for exc in errors:
        assert signature not in str(exc)
        assert SECRET not in str(exc)
        assert isinstance(exc, PermissionError)
    url = signer.url_for("b", "k", method="GET", expires=FUTURE)
    assert signature in url
    assert signature not in redact(f"GET {url} failed")


def test_file_objects_sign_through_the_signer(tmp_path: Path) -> None:
    signer = HmacUrlSigner(SECRET)
    backend = ObstoreBackend("files", tmp_path, url_signer=signer)
    assert not backend.supports_native_signing
    assert backend.supports_signing
    with storages.temporary(backend):
        file = FileObject(filename="a.txt", content=b"hi", backend="files").save()
        url = file.sign(expires_in=60)
        assert file.sign(expires_in=60) == url  # cached like a native signed URL
        query = params(url)
        signer.verify(
            "files",
            str(file.path),
            method="GET",
            expires=query["expires"],
            signature=query["signature"],
        )
        upload = FileObject(filename="b.txt", backend="files").sign_upload(expires_in=30)
        assert upload.method == "PUT"
        assert params(upload.url)["method"] == "PUT"


def test_attach_and_detach(tmp_path: Path) -> None:
    registry = BackendRegistry()
    memory = ObstoreBackend("memory", "memory://")
    local = ObstoreBackend("local", tmp_path)
    own_signer = HmacUrlSigner(OTHER_SECRET)
    preset = ObstoreBackend("preset", "memory://", url_signer=own_signer)
    s3 = ObstoreBackend(
        "s3",
        "s3://bucket/",
        region="us-east-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="not-a-real-secret",
    )
    for backend in (memory, local, preset, s3):
        registry.register_backend(backend)
    with pytest.raises(UnsupportedOperationError):
        local.sign("k")
    assert memory.sign("k").startswith("/_storage/memory/k?")  # the development signer
    signer = HmacUrlSigner(SECRET)
    assert attach_signer(registry, signer) == ["memory", "local"]
    assert memory.url_signer is signer
    assert local.url_signer is signer
    assert preset.url_signer is own_signer  # only_unsigned: left alone
    assert s3.url_signer is None  # signs natively
    assert attach_signer(registry, signer) == []  # idempotent
    assert attach_signer(registry, signer, only_unsigned=False) == ["preset"]
    assert preset.url_signer is signer
    assert memory.sign("k").startswith("/_storage/memory/k?")
    assert s3.sign("k").startswith("https://")
    assert detach_signer(registry, signer) == ["memory", "local", "preset"]
    assert memory.url_signer is None
    assert memory.supports_signing  # the development signer again
    assert local.url_signer is None
    assert not local.supports_signing


# -- one canonical spelling ----------------------------------------------------------------------
def _variants_of_expires(expires: int) -> list[str]:
    digits = str(expires)
    arabic = "".join(chr(0x0660 + int(d)) for d in digits)  # Arabic-Indic digits
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in digits)
    return [
        "0" + digits,
        "00" + digits,
        "+" + digits,
        " " + digits,
        digits + " ",
        digits[:2] + "_" + digits[2:],
        arabic,
        fullwidth,
        digits + ".0",
    ]


@pytest.mark.parametrize("variant", _variants_of_expires(FUTURE))
def test_only_the_canonical_expires_is_accepted(variant: str) -> None:
    signer = HmacUrlSigner(SECRET)
    signature = signer.signature("b", "k/a.txt", method="GET", expires=FUTURE)
    signer.verify("b", "k/a.txt", method="GET", expires=str(FUTURE), signature=signature)
    if not variant.endswith(".0"):
        assert int(variant) == FUTURE  # what int() reads as the same deadline
    with pytest.raises(InvalidSignatureError, match="malformed"):
        signer.verify("b", "k/a.txt", method="GET", expires=variant, signature=signature)


def _variants_of_signature(signature: str) -> list[str]:
    raw = base64.urlsafe_b64decode(signature + "=")
    standard = base64.b64encode(raw).decode()  # may contain "+" and "/", padded
    last = signature[-1]
    # The last of 43 characters carries 4 bits of the digest and 2 unused bits: setting
    # those gives another spelling that decodes to the same digest.
    index = _B64.index(last)
    sloppy = signature[:-1] + _B64[index | 0b11] if index | 0b11 != index else None
    variants = [signature + "=", standard, " " + signature, signature.replace("-", "%2D")]
    if "-" not in signature and "_" not in signature:
        variants.remove(standard)  # identical spelling in this (rare) case
    return [v for v in (*variants, sloppy) if v is not None and v != signature]


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_only_the_canonical_signature_is_accepted() -> None:
    signer = HmacUrlSigner(SECRET)
    tried = 0
    for expires in range(FUTURE, FUTURE + 40):  # digests with "-"/"_" and low bits to set
        signature = signer.signature("b", "k/a.txt", method="GET", expires=expires)
        signer.verify("b", "k/a.txt", method="GET", expires=expires, signature=signature)
        for variant in _variants_of_signature(signature):
            decoded = variant.strip().replace("%2D", "-")
            same_digest = base64.urlsafe_b64decode(
                decoded.replace("+", "-").replace("/", "_") + "=" * (-len(decoded) % 4)
            )
            assert same_digest == base64.urlsafe_b64decode(signature + "=")
            with pytest.raises(InvalidSignatureError):
                signer.verify("b", "k/a.txt", method="GET", expires=expires, signature=variant)
            tried += 1
    assert tried > 100


def test_parse_query_refuses_repeated_parameters_and_keeps_raw_values() -> None:
    signer = HmacUrlSigner(SECRET)
    url = signer.url_for("b", "k/a.txt", method="GET", expires=FUTURE)
    query = url.partition("?")[2]
    parsed = signer.parse_query(query)
    assert parsed["expires"] == str(FUTURE)
    assert parsed["max_size"] is None
    assert parsed["ticket"] is None
    signer.verify("b", "k/a.txt", method="GET", **parsed)
    for name in ("expires", "signature"):
        value = parsed[name]
        with pytest.raises(InvalidSignatureError, match="more than once"):
            signer.parse_query(f"{query}&{name}={value}")
    # a percent-escaped spelling of the same value is not the canonical spelling
    escaped = signer.parse_query(
        query.replace(f"expires={FUTURE}", "expires=%34" + str(FUTURE)[1:])
    )
    with pytest.raises(InvalidSignatureError):
        signer.verify("b", "k/a.txt", method="GET", **escaped)


def test_a_ticket_url_signs_its_size_limit_and_ticket() -> None:
    signer = HmacUrlSigner(SECRET)
    url = signer.sign_url(
        "b", "k/a.bin", method="PUT", expires_in=timedelta(minutes=5), max_size=1000, ticket="T1"
    )
    query = url.partition("?")[2]
    assert "max_size=1000" in query
    assert "ticket=T1" in query
    parsed = signer.parse_query(query)
    signer.verify("b", "k/a.bin", method="PUT", **parsed)
    changed = [
        {**parsed, "max_size": "1001"},
        {**parsed, "max_size": None},  # the limit dropped from the URL
        {**parsed, "max_size": "01000"},
        {**parsed, "ticket": "T2"},
        {**parsed, "ticket": None},
    ]
    for params_ in changed:
        with pytest.raises(InvalidSignatureError):
            signer.verify("b", "k/a.bin", method="PUT", **params_)
    # and a plain URL's signature does not pass for one with a limit
    plain = signer.parse_query(
        signer.url_for("b", "k/a.bin", method="PUT", expires=int(parsed["expires"] or 0)).partition(
            "?"
        )[2]
    )
    with pytest.raises(InvalidSignatureError):
        signer.verify("b", "k/a.bin", method="PUT", **{**plain, "max_size": "5"})
    with pytest.raises(ConfigurationError):
        signer.url_for("b", "k", method="PUT", expires=FUTURE, max_size=-1)
    with pytest.raises(ConfigurationError):
        signer.url_for("b", "k", method="PUT", expires=FUTURE, ticket="not/base64")
