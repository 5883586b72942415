"""UploadPolicy construction and layering, and the content-type sniffing table."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile

import pytest

from sqlalchemy_obstore import (
    ChecksumMismatchError,
    ConfigurationError,
    FileTooLargeError,
    FileTooSmallError,
    StorageError,
    StoredObject,
    UploadPolicy,
    detect_content_type,
)
from sqlalchemy_obstore.validation import effective_policy


# -- sniffing -------------------------------------------------------------------------------
def _zip(entries: list[tuple[str, bytes]], *, stored_first: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, (name, data) in enumerate(entries):
            kind = zipfile.ZIP_STORED if stored_first and index == 0 else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=kind)
    return buffer.getvalue()


def _ooxml(part: str) -> bytes:
    return _zip(
        [
            ("[Content_Types].xml", b"<?xml version='1.0'?><Types/>"),
            ("_rels/.rels", b"<Relationships/>"),
            (f"{part}/document.xml", b"<doc/>"),
        ]
    )


def _odf(mimetype: str) -> bytes:
    return _zip([("mimetype", mimetype.encode()), ("content.xml", b"<office/>")], stored_first=True)


def _tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    return buffer.getvalue()


def _ftyp(brand: bytes, compatible: bytes = b"") -> bytes:
    box = b"ftyp" + brand + b"\x00\x00\x00\x00" + compatible
    return (len(box) + 4).to_bytes(4, "big") + box + b"\x00\x00\x00\x08free"


def _bmp() -> bytes:
    return b"BM" + (70).to_bytes(4, "little") + b"\x00\x00\x00\x00" + (54).to_bytes(4, "little")


SIGNATURES: list[tuple[str, bytes, str | None]] = [
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    ("gif87", b"GIF87a\x01\x00\x01\x00", "image/gif"),
    ("gif89", b"GIF89a\x01\x00\x01\x00", "image/gif"),
    ("webp", b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
    ("bmp", _bmp(), "image/bmp"),
    ("tiff-le", b"II*\x00\x08\x00\x00\x00", "image/tiff"),
    ("tiff-be", b"MM\x00*\x00\x00\x00\x08", "image/tiff"),
    ("ico", b"\x00\x00\x01\x00\x01\x00\x10\x10", "image/vnd.microsoft.icon"),
    ("avif", _ftyp(b"avif", b"mif1miaf"), "image/avif"),
    ("avif-compatible", _ftyp(b"mif2", b"avifmiaf"), "image/avif"),
    ("heic", _ftyp(b"heic", b"mif1heic"), "image/heic"),
    ("heif", _ftyp(b"mif1", b"mif1"), "image/heif"),
    ("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
    ("zip", _zip([("a.txt", b"hello")]), "application/zip"),
    ("empty-zip", b"PK\x05\x06" + bytes(18), "application/zip"),
    (
        "docx",
        _ooxml("word"),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("xlsx", _ooxml("xl"), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    (
        "pptx",
        _ooxml("ppt"),
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    (
        "odt",
        _odf("application/vnd.oasis.opendocument.text"),
        "application/vnd.oasis.opendocument.text",
    ),
    ("epub", _odf("application/epub+zip"), "application/epub+zip"),
    ("gzip", gzip.compress(b"hello"), "application/gzip"),
    ("bzip2", bz2.compress(b"hello"), "application/x-bzip2"),
    ("xz", lzma.compress(b"hello"), "application/x-xz"),
    ("7z", b"7z\xbc\xaf\x27\x1c\x00\x04", "application/x-7z-compressed"),
    ("tar", _tar(), "application/x-tar"),
    ("mp3-id3", b"ID3\x04\x00\x00\x00\x00\x00\x00", "audio/mpeg"),
    ("mp3-frame", b"\xff\xfb\x90\x44\x00\x00", "audio/mpeg"),
    ("mp4", _ftyp(b"isom", b"isomiso2avc1mp41"), "video/mp4"),
    ("mp4-mp42", _ftyp(b"mp42", b"mp42isom"), "video/mp4"),
    ("mov", _ftyp(b"qt  ", b"qt  "), "video/quicktime"),
    ("m4a", _ftyp(b"M4A ", b"M4A mp42isom"), "audio/mp4"),
    ("ogg", b"OggS\x00\x02" + bytes(22) + b"\x01vorbis", "audio/ogg"),
    ("ogg-theora", b"OggS\x00\x02" + bytes(22) + b"\x80theora", "video/ogg"),
    ("wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav"),
    ("avi", b"RIFF\x24\x00\x00\x00AVI LIST", "video/x-msvideo"),
    ("flac", b"fLaC\x00\x00\x00\x22", "audio/flac"),
    ("webm", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm"),
    ("mkv", b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", "video/x-matroska"),
    ("html-doctype", b"<!DOCTYPE html><html></html>", "text/html"),
    ("html-doctype-lower", b"<!doctype HTML>", "text/html"),
    ("html-tag", b"<html lang='en'>", "text/html"),
    ("html-script", b"<script>alert(1)</script>", "text/html"),
    ("html-SCRIPT", b"<SCRIPT SRC=x>", "text/html"),
    ("html-head", b"<head><title>x</title>", "text/html"),
    ("html-body", b"<body onload=x>", "text/html"),
    ("html-iframe", b"<iframe src=//evil>", "text/html"),
    ("html-bom-whitespace", b"\xef\xbb\xbf \n\t <html>", "text/html"),
    ("html-comment", b"<!-- hi --><p>x</p>", "text/html"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
    (
        "svg-xml-prolog",
        b'<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN">\n<svg/>',
        "image/svg+xml",
    ),
    ("svg-comment", b"<!-- generator --><svg/>", "image/svg+xml"),
    (
        "xhtml",
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"/>',
        "application/xhtml+xml",
    ),
    ("xml", b'<?xml version="1.0"?><feed/>', "application/xml"),
    ("json-object", b'  {"a": 1}', "application/json"),
    ("json-empty-object", b"{}", "application/json"),
    ("json-array", b"[1, 2, 3]", "application/json"),
    ("text", "héllo, wörld\n".encode(), "text/plain"),
    ("text-cut-mid-character", "é".encode() * 10 + "é".encode()[:1], "text/plain"),
    ("csv", b"a,b,c\n1,2,3\n", "text/plain"),
    ("binary-nul", b"hello\x00world", None),
    ("binary-invalid-utf8", b"\xc3\x28\xa0\xa1 garbage", None),
    ("empty", b"", None),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [pytest.param(data, expected, id=name) for name, data, expected in SIGNATURES],
)
def test_detect_content_type(data: bytes, expected: str | None) -> None:
    assert detect_content_type(data) == expected


def test_detection_ignores_bytes_past_the_sniff_window() -> None:
    assert detect_content_type(b"plain text " * 10_000 + b"\x00") == "text/plain"


def test_real_world_files_are_detected() -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )
    assert detect_content_type(png) == "image/png"
    assert detect_content_type(memoryview(png)) == "image/png"


# -- UploadPolicy ---------------------------------------------------------------------------
def test_policy_normalises_and_is_hashable() -> None:
    def check(file: object, head: bytes) -> None: ...

    policy = UploadPolicy(
        allowed_content_types=["Image/*", "application/pdf; charset=x"],  # type: ignore[arg-type]
        allowed_extensions=["PDF", ".Png"],  # type: ignore[arg-type]
        validators=[check],  # type: ignore[arg-type]
    )
    assert policy.allowed_content_types == ("image/*", "application/pdf")
    assert policy.allowed_extensions == (".pdf", ".png")
    assert policy.validators == (check,)
    assert hash(policy) == hash(
        UploadPolicy(
            allowed_content_types=("image/*", "application/pdf"),
            allowed_extensions=(".pdf", ".png"),
            validators=(check,),
        )
    )
    assert StoredObject("b", policy=policy).save_options.policy is policy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_size": -1},
        {"min_size": "1 M"},
        {"max_size": True},
        {"min_size": 10, "max_size": 5},
        {"allowed_content_types": ("png",)},
        {"allowed_extensions": ("",)},
        {"validators": (1,)},
    ],
)
def test_policy_rejects_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        UploadPolicy(**kwargs)  # type: ignore[arg-type]


def test_stored_object_and_backend_reject_non_policy() -> None:
    from sqlalchemy_obstore import ObstoreBackend

    with pytest.raises(ConfigurationError):
        StoredObject("b", policy={"max_size": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ObstoreBackend("b", "memory://", policy={"max_size": 1})


def test_sniffing_defaults_to_allow_list() -> None:
    assert not UploadPolicy().sniffs
    assert UploadPolicy(allowed_content_types=("image/*",)).sniffs
    assert not UploadPolicy(allowed_content_types=("image/*",), sniff=False).sniffs
    assert UploadPolicy(sniff=True).sniffs


def test_content_type_patterns() -> None:
    policy = UploadPolicy(allowed_content_types=("image/*", "application/pdf"))
    assert policy.allows_content_type("image/png")
    assert policy.allows_content_type("IMAGE/JPEG; q=1")
    assert policy.allows_content_type("application/pdf")
    assert not policy.allows_content_type("application/pdfx")
    assert not policy.allows_content_type("text/html")
    assert not policy.allows_content_type(None)
    # Wildcards never admit active content: SVG must be listed explicitly.
    assert not policy.allows_content_type("image/svg+xml")
    assert UploadPolicy(allowed_content_types=("image/svg+xml",)).allows_content_type(
        "image/svg+xml"
    )
    assert not UploadPolicy(allowed_content_types=("*/*",)).allows_content_type("text/html")
    assert UploadPolicy().allows_content_type("text/html")


def test_extension_allow_list() -> None:
    policy = UploadPolicy(allowed_extensions=(".pdf", ".tar.gz"))
    assert policy.allows_filename("a.PDF")
    assert policy.allows_filename("backup.tar.gz")
    assert not policy.allows_filename("a.pdf.exe")
    assert not policy.allows_filename(".pdf")
    assert not policy.allows_filename("pdf")
    assert UploadPolicy().allows_filename("anything")


def test_layers_merge_field_by_field() -> None:
    def backend_check(file: object, head: bytes) -> None: ...

    def column_check(file: object, head: bytes) -> None: ...

    backend = UploadPolicy(max_size=100, allowed_extensions=(".png",), validators=(backend_check,))
    column = UploadPolicy(max_size=10, sniff=False, validators=(column_check, backend_check))
    merged = backend.merge(column)
    assert merged.max_size == 10
    assert merged.allowed_extensions == (".png",)
    assert merged.sniff is False
    assert merged.validators == (backend_check, column_check)
    assert backend.merge(None) is backend
    assert effective_policy(None, None) is None
    assert effective_policy(backend, None, column) == merged
    assert effective_policy(None, column) is column


def test_error_messages_and_attributes() -> None:
    error = FileTooLargeError(limit=10, size_seen=11, declared=True, backend="b", path="p")
    assert "declared" in str(error)
    assert error.declared
    assert error.limit == 10
    small = FileTooSmallError(minimum=10, size=3, backend="b")
    assert "too small" in str(small)
    assert not small.declared
    mismatch = ChecksumMismatchError(
        expected="sha256:aa", actual="sha256:bb", expected_size=1, actual_size=2, path="p"
    )
    assert isinstance(mismatch, StorageError)
    assert "sha256:aa" in str(mismatch)
    assert "2 bytes stored" in str(mismatch)


def test_wildcards_never_match_xml_or_xslt() -> None:
    for pattern, active in [
        ("application/*", "application/rss+xml"),
        ("application/*", "application/xslt+xml"),
        ("application/*", "application/xml"),
        ("text/*", "text/xsl"),
        ("text/*", "text/xml"),
        ("*/*", "application/vnd.custom+xml"),
    ]:
        assert not UploadPolicy(allowed_content_types=(pattern,)).allows_content_type(active)
        assert UploadPolicy(allowed_content_types=(active,)).allows_content_type(active)


@pytest.mark.parametrize(
    "claimed",
    [b"application/pdf", b"text/html", b"image/svg+xml", b"application/x-custom"],
)
def test_a_zip_mimetype_entry_only_names_odf_and_epub(claimed: bytes) -> None:
    assert detect_content_type(_odf(claimed.decode())) == "application/zip"
