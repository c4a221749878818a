"""Structured JSON logs: one object per line, the request id attached, secrets redacted.

``configure_logging`` installs a handler on the ``taogate`` logger (and uvicorn's) that writes
JSON lines with ``ts``, ``level``, ``logger``, ``msg``, ``request_id`` and any ``extra`` fields.
A filter replaces every configured secret with its masked form, and every URL's password with
``***``, in the message, the exception text and ``extra`` fields at any depth, before anything is
written — defence in depth behind the rule that code never logs a secret in the first place.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import IO, Any

import orjson

from taogate._masking import mask_secret, mask_url

__all__ = [
    "JsonFormatter",
    "RedactSecrets",
    "configure_logging",
    "redact_secret",
    "request_id_var",
]

#: The id of the request being served, for every log line written while serving it.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "taogate_request_id", default=None
)

# fields every record has, and uvicorn's terminal-coloured copy of its message
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            doc["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        # the text a filter may have redacted: never the exception formatted anew
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = self.formatException(record.exc_info)
        if exc_text:
            doc["exc"] = exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return orjson.dumps(doc, default=str).decode()


#: Secrets rotated in after start that a filter keeps redacting (the most recent ones; the
#: configured secrets are always kept). Rotations are days apart, so this covers years, while a
#: secret file rewritten at every poll cannot grow the filter, or its cost per line, for ever.
MAX_ROTATED_SECRETS = 64


class RedactSecrets(logging.Filter):
    """Mask every configured secret and every URL's password in all of a record's text.

    The message, the exception and stack text, and ``extra`` fields at any depth (strings,
    lists, dicts, and any other value by its ``str``) are redacted before a handler writes them.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._configured = frozenset(s for s in secrets if len(s) >= 4)
        self._rotated: dict[str, None] = {}  # insertion-ordered: the oldest first
        self._secrets = sorted(self._configured, key=len, reverse=True)
        _FILTERS.add(self)

    def add(self, secret: str) -> None:
        """Redact ``secret`` too (a secret rotated in after the logs were configured)."""
        if len(secret) < 4 or secret in self._configured:
            return
        self._rotated.pop(secret, None)
        self._rotated[secret] = None
        while len(self._rotated) > MAX_ROTATED_SECRETS:
            del self._rotated[next(iter(self._rotated))]
        self._secrets = sorted([*self._configured, *self._rotated], key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        redacted = self.redact(text)
        if redacted != text:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, self._redact_value(value, _MAX_DEPTH))
        return True

    def redact(self, text: str) -> str:
        """``text`` with every configured secret masked and URL passwords replaced by ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, mask_secret(secret))
        if "://" in text:
            text = mask_url(text)
        return text

    def _redact_value(self, value: object, depth: int) -> object:
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth <= 0:  # deeper than any honest log field: its text, redacted
            return self.redact(str(value))
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self._redact_value(v, depth - 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._redact_value(v, depth - 1) for v in value]
        return self.redact(str(value))  # what the formatter would write (``default=str``)


#: how deep ``extra`` values are walked before the rest is written as its redacted text
_MAX_DEPTH = 16


#: every live filter, so a secret that arrives later (a rotation) is redacted by all of them
_FILTERS: weakref.WeakSet[RedactSecrets] = weakref.WeakSet()


def redact_secret(secret: str) -> None:
    """Have every configured log filter redact ``secret`` from now on."""
    for redactor in list(_FILTERS):
        redactor.add(secret)


def configure_logging(
    level: str = "info", *, secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """Send taogate's and uvicorn's logs to ``stream`` (stderr) as redacted JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(secrets))
    for name in ("taogate", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    return handler
