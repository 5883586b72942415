"""Filename sanitising and object-key generation against hostile input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlalchemy_obstore import (
    ConfigurationError,
    InvalidFilenameError,
    InvalidObjectPathError,
    sanitize_filename,
)
from sqlalchemy_obstore.keys import (
    DEFAULT_FILENAME,
    MAX_FILENAME_BYTES,
    build_key,
    check_filename,
    check_object_path,
    join_key,
    key_safe_name,
    uuid_key,
    validate_key,
)

UUID_HEX = re.compile(r"^[0-9a-f]{32}$")
KEY_SAFE = re.compile(r"^[\w.\-()+@~]+$")


def assert_harmless(name: str) -> None:
    """The properties every sanitised name has, whatever came in."""
    assert name
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Cs"} for ch in name), name
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert name not in {".", ".."}
    assert not name.startswith(".")
    assert name == name.strip()


# -- sanitize_filename --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\drivers\\etc\\hosts", "hosts"),
        ("C:\\x\\y.txt", "y.txt"),
        ("C:y.txt", "y.txt"),
        ("\\\\server\\share\\a.txt", "a.txt"),
        ("//server/share/a.txt", "a.txt"),
        ("/etc/shadow", "shadow"),
        ("/var/www/../../root/.ssh/id_rsa", "id_rsa"),
        ("dir/sub/", "sub"),
        ("a/..", "a"),
        ("report.pdf", "report.pdf"),
        ("  spaced   out  name .txt ", "spaced out name.txt"),
    ],
)
def test_sanitize_strips_directories(hostile: str, expected: str) -> None:
    result = sanitize_filename(hostile)
    assert result == expected
    assert_harmless(result)


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        ("a\x00b.txt", "ab.txt"),
        ("evil\x00.php.jpg", "evil.php.jpg"),
        ("line\nbreak\r.txt", "linebreak.txt"),
        ("tab\there.txt", "tabhere.txt"),
        ("bell\x07\x1b[31m.txt", "bell[31m.txt"),
        ("del\x7f.txt", "del.txt"),
        ("c1\x85\x9b.txt", "c1.txt"),
    ],
)
def test_sanitize_removes_nul_and_control_characters(hostile: str, expected: str) -> None:
    assert sanitize_filename(hostile) == expected


def test_sanitize_removes_right_to_left_override() -> None:
    # "invoice\u202efdp.exe" displays as "invoiceexe.pdf" in a bidi-aware UI.
    result = sanitize_filename("invoice\u202efdp.exe")
    assert result == "invoicefdp.exe"
    assert result.endswith(".exe")
    for bidi in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f":
        assert bidi not in sanitize_filename(f"a{bidi}b.txt")


@pytest.mark.parametrize("invisible", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"])
def test_sanitize_removes_zero_width_characters(invisible: str) -> None:
    assert sanitize_filename(f"pay{invisible}pal{invisible}.png") == "paypal.png"


def test_sanitize_bounds_long_names_and_keeps_the_extension() -> None:
    result = sanitize_filename("x" * 10_000 + ".pdf")
    assert result.endswith(".pdf")
    assert len(result.encode("utf-8")) == MAX_FILENAME_BYTES
    assert result == "x" * (MAX_FILENAME_BYTES - 4) + ".pdf"


def test_sanitize_bounds_multibyte_names_on_a_character_boundary() -> None:
    result = sanitize_filename("é" * 10_000 + ".pdf")
    assert result.endswith(".pdf")
    assert len(result.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert set(result.removesuffix(".pdf")) == {"é"}
    # 4-byte characters: never cut in the middle of one.
    emoji = sanitize_filename("\U0001f600" * 1000 + ".txt")
    assert len(emoji.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert set(emoji.removesuffix(".txt")) == {"\U0001f600"}


def test_sanitize_custom_max_bytes() -> None:
    result = sanitize_filename("abcdefghij.txt", max_bytes=8)
    assert result == "abcd.txt"


def test_sanitize_long_name_without_extension() -> None:
    result = sanitize_filename("y" * 10_000)
    assert result == "y" * MAX_FILENAME_BYTES


@pytest.mark.parametrize("empty", ["", " ", "\t\n", ".", "..", "...", "/", "\\", "../..", "\u202e"])
def test_sanitize_empty_and_dot_names_become_default(empty: str) -> None:
    assert sanitize_filename(empty) == DEFAULT_FILENAME


@pytest.mark.parametrize(("hidden", "expected"), [(".bashrc", "bashrc"), ("..bashrc", "bashrc")])
def test_sanitize_only_extension_names_are_not_hidden(hidden: str, expected: str) -> None:
    assert sanitize_filename(hidden) == expected


def test_sanitize_only_extension_name_keeps_extension_when_dots_remain() -> None:
    assert sanitize_filename(".tar.gz") == "tar.gz"


def test_sanitize_normalises_unicode_to_nfc() -> None:
    decomposed = "cafe\u0301.txt"  # "e" + combining acute accent
    composed = "caf\u00e9.txt"
    assert decomposed != composed
    assert sanitize_filename(decomposed) == composed
    assert sanitize_filename(composed) == composed
    assert unicodedata.is_normalized("NFC", sanitize_filename(decomposed))


@pytest.mark.parametrize("device", ["CON", "con.txt", "NUL", "PRN.log", "AUX", "COM1", "LPT9.txt"])
def test_sanitize_keeps_windows_device_names_as_display_data(device: str) -> None:
    # The display name is not a path; key_safe_name makes keys safe.
    assert sanitize_filename(device) == device


@pytest.mark.parametrize("not_a_string", [None, b"bytes.txt", 3, ["a"]])
def test_sanitize_refuses_non_strings(not_a_string: object) -> None:
    with pytest.raises(InvalidFilenameError, match="must be a string"):
        sanitize_filename(not_a_string)


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_sanitize_is_harmless_for_any_text(name: str) -> None:
    result = sanitize_filename(name)
    assert_harmless(result)
    assert unicodedata.is_normalized("NFC", result)
    assert sanitize_filename(result) == result  # idempotent


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(exclude_characters="/\\"), min_size=150, max_size=600),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8),
)
def test_sanitize_long_names_keep_short_extensions(stem: str, ext: str) -> None:
    result = sanitize_filename(f"a{stem}.{ext}")
    assert_harmless(result)
    assert result.endswith(f".{ext}")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "", "etc", "C:", "\\", "/", "~", "\x00"]), max_size=12))
def test_sanitize_traversal_fragments_never_escape(parts: list[str]) -> None:
    for separator in ("/", "\\"):
        assert_harmless(sanitize_filename(separator.join(parts)))


# -- key_safe_name --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("my report (final)#2.pdf", "my_report_(final)_2.pdf"),
        ("../../etc/passwd", "passwd"),
        ("100%?&=x.txt", "100_x.txt"),
        ("quote\"'`.txt", "quote_.txt"),
        ("caf\u00e9.txt", "caf\u00e9.txt"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),
        ("", DEFAULT_FILENAME),
        ("...", DEFAULT_FILENAME),
        ("###", DEFAULT_FILENAME),
        (".bashrc", "bashrc"),
        ("#.bashrc", "file.bashrc"),
    ],
)
def test_key_safe_name(name: str, expected: str) -> None:
    result = key_safe_name(name)
    assert result == expected
    assert KEY_SAFE.match(result)


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("CON", "_CON"),
        ("con", "_con"),
        ("con.txt", "_con.txt"),
        ("NUL", "_NUL"),
        ("PRN.log", "_PRN.log"),
        ("AUX", "_AUX"),
        ("COM1", "_COM1"),
        ("lpt9.txt", "_lpt9.txt"),
        # Windows resolves a device name whatever follows the first dot.
        ("NUL.tar.gz", "_NUL.tar.gz"),
        ("con.backup.txt", "_con.backup.txt"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("COM10", "COM10"),
        ("icon.png", "icon.png"),
    ],
)
def test_key_safe_name_windows_device_names(device: str, expected: str) -> None:
    assert key_safe_name(device) == expected


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_key_safe_name_is_harmless_for_any_text(name: str) -> None:
    result = key_safe_name(name)
    assert_harmless(result)
    assert KEY_SAFE.match(result), result
    assert result.split(".", 1)[0].upper() not in {"CON", "PRN", "AUX", "NUL"}


# -- validate_key / join_key ---------------------------------------------------------------------
@pytest.mark.parametrize("key", ["a", "a/b/c.txt", "uploads/0123/x.tar.gz", "a..b/c", "..a/b"])
def test_validate_key_accepts_relative_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "../x", "a/../b", "a/./b", ".", "..", "a//b", "a/", "a\x00b", "a\nb", "a\u202eb"],
)
def test_validate_key_refuses_malformed_keys(key: str) -> None:
    with pytest.raises(ConfigurationError, match="Invalid object key"):
        validate_key(key)


def test_join_key_ignores_empty_parts_and_stray_slashes() -> None:
    assert join_key("uploads/", None, "", "/docs", "a/b.txt") == "uploads/docs/a/b.txt"
    assert join_key() == ""


# -- build_key ------------------------------------------------------------------------------------
def test_build_key_default_layout() -> None:
    key = build_key("report.pdf")
    uuid_part, name = key.split("/")
    assert UUID_HEX.match(uuid_part)
    assert name == "report.pdf"


def test_build_key_with_prefix_and_hostile_name() -> None:
    key = build_key("../../etc/passwd", prefix="uploads/docs/")
    prefix1, prefix2, uuid_part, name = key.split("/")
    assert (prefix1, prefix2, name) == ("uploads", "docs", "passwd")
    assert UUID_HEX.match(uuid_part)
    assert validate_key(key) == key


@pytest.mark.parametrize("filename", [None, "", "..", "\u202e"])
def test_build_key_without_usable_name(filename: str | None) -> None:
    assert build_key(filename).endswith(f"/{DEFAULT_FILENAME}")


def test_two_saves_of_the_same_name_never_collide() -> None:
    keys = {build_key("same.txt", prefix="p") for _ in range(500)}
    assert len(keys) == 500
    assert all(k.startswith("p/") and k.endswith("/same.txt") for k in keys)


def test_uuid_key_is_fresh_each_call() -> None:
    assert uuid_key("a.txt") != uuid_key("a.txt")


def test_uuid_keys_are_random_uuid4_across_pool_refills() -> None:
    import uuid

    keys = [uuid_key("a.txt").split("/")[0] for _ in range(1000)]  # several pool draws
    assert len(set(keys)) == len(keys)
    for key in keys:
        parsed = uuid.UUID(key)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_draws_other_keys_than_its_parent() -> None:
    # In a fresh interpreter (forking this multi-threaded test process would warn).
    script = (
        "import os, sys\n"
        "from sqlalchemy_obstore.keys import uuid_key\n"
        "uuid_key('warm-up')  # fills the pool before the fork\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print('child', uuid_key('a'), flush=True)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('parent', uuid_key('a'), flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    keys = dict(line.split(" ", 1) for line in out.splitlines())
    assert set(keys) == {"child", "parent"}
    assert keys["child"] != keys["parent"]


def test_build_key_custom_key_function_gets_the_safe_leaf() -> None:
    seen: list[str] = []

    def by_date(leaf: str) -> str:
        seen.append(leaf)
        return f"2024/01/02/{leaf}"

    assert build_key("my report.pdf", prefix="u", key_function=by_date) == (
        "u/2024/01/02/my_report.pdf"
    )
    assert seen == ["my_report.pdf"]


@pytest.mark.parametrize(
    "bad_key",
    ["../x", "/abs", "/abs/x", "a/../../b", "", "a//b", "x/", ".", "a/\x00"],
)
@pytest.mark.parametrize("prefix", [None, "uploads"])
def test_build_key_refuses_bad_custom_keys(bad_key: str, prefix: str | None) -> None:
    with pytest.raises(ConfigurationError, match="key_function"):
        build_key("a.txt", prefix=prefix, key_function=lambda _leaf: bad_key)


def test_build_key_refuses_non_string_custom_keys() -> None:
    with pytest.raises(ConfigurationError, match="key_function"):
        build_key("a.txt", key_function=lambda _leaf: None)  # type: ignore[arg-type,return-value]


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(alphabet="abc/_-", max_size=12))
def test_build_key_is_always_valid(filename: str, prefix: str) -> None:
    key = build_key(filename, prefix=prefix)
    assert validate_key(key) == key
    assert KEY_SAFE.match(key.rsplit("/", 1)[1])


def test_join_key_collapses_doubled_slashes_in_a_prefix() -> None:
    assert join_key("uploads//docs/", "x") == "uploads/docs/x"
    key = build_key("a.txt", prefix="uploads//docs")
    assert key.startswith("uploads/docs/")
    assert validate_key(key) == key


@pytest.mark.parametrize("name", [" A:", " . C: D:x.txt", "C:.", "a: b.txt"])
def test_sanitize_drive_leftovers_is_idempotent(name: str) -> None:
    result = sanitize_filename(name)
    assert ":" not in result[:2]
    assert sanitize_filename(result) == result


# -- check_filename: what no store can keep is refused ---------------------------------------
@pytest.mark.parametrize("name", ["a.txt", "résumé.pdf", "\u202egnp.exe", "a\x01b", "💾", ""])
def test_check_filename_keeps_storable_names_as_given(name: str) -> None:
    assert check_filename(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a\udc80.txt", "lone surrogate"),
        ("\ud800", "lone surrogate"),
        ("a\x00b.txt", "NUL character"),
        (b"a.txt", "must be a string"),
        (None, "must be a string"),
    ],
)
def test_check_filename_refuses_what_cannot_be_stored(name: object, reason: str) -> None:
    with pytest.raises(InvalidFilenameError, match=reason) as info:
        check_filename(name)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    str(info.value).encode("utf-8")  # the message itself is printable


@given(st.text(alphabet=st.characters(exclude_categories=())))
def test_a_sanitised_name_always_passes_check_filename(name: str) -> None:
    assert check_filename(sanitize_filename(name)) == sanitize_filename(name)


# -- check_object_path -----------------------------------------------------------------------------
#: The definition of a malformed path: an empty, `.` or `..` segment, a control character or
#: a backslash (what `check_object_path` tested with one regular expression before it checked
#: every write; it now tests the same with `str` methods, which cost a fraction as much).
MALFORMED_PATH = re.compile(r"(?:^|/)\.{0,2}(?:/|$)|[\x00-\x1f\x7f-\x9f\\]")
_PATH_PIECES = st.sampled_from(
    ["/", ".", "..", "a", "é", "\\", "\x00", "\x1f", "\x7f", "\x9f", "\xa0", "\u200b", " "]
)


@settings(max_examples=2000)
@given(
    st.one_of(
        st.text(),
        st.lists(st.one_of(_PATH_PIECES, st.text(max_size=3)), max_size=8).map("".join),
    )
)
def test_check_object_path_refuses_exactly_the_malformed_paths(path: str) -> None:
    malformed = not path or MALFORMED_PATH.search(path) is not None
    try:
        assert check_object_path(path) == path
    except InvalidObjectPathError:
        assert malformed, path
    else:
        assert not malformed, path
