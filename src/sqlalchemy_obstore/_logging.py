"""The library's loggers: every record they write is redacted.

Every module gets its logger from `library_logger`, which puts one redaction filter on it:
messages and tracebacks go through [`redact`][sqlalchemy_obstore.errors.redact], so no
log record the library writes carries a URL credential, signature, token or key.
"""

from __future__ import annotations

import logging

from ._errors import redact

__all__ = ("REDACTION", "library_logger")


class _RedactingFilter(logging.Filter):
    """Runs every record of the library's loggers through `redact` (message and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:  # (otherwise the record keeps its arguments, for handlers)
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


REDACTION = _RedactingFilter()
"""The filter on every library logger."""


def library_logger(name: str) -> logging.Logger:
    """The logger `name` (under `sqlalchemy_obstore`), with the redaction filter on it.

    A test checks that every `sqlalchemy_obstore*` logger has the filter.
    """
    logger = logging.getLogger(name)
    if REDACTION not in logger.filters:
        logger.addFilter(REDACTION)
    return logger


library_logger("sqlalchemy_obstore")
