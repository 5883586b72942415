"""Secrets never reach messages, and redaction keeps the rest of the text."""

from __future__ import annotations

import pytest

from sqlalchemy_obstore.errors import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://x/a?token=abc&page=2", "https://x/a?token=<redacted>&page=2"),
        ("https://x/a?sig=s3cr3t&sp=r", "https://x/a?sig=<redacted>&sp=r"),
        ('secret_access_key: "abc", region: "x"', 'secret_access_key: "<redacted>", region: "x"'),
        ("AccountKey=abc;EndpointSuffix=core", "AccountKey=<redacted>;EndpointSuffix=core"),
    ],
)
def test_redact_removes_secret_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected
