"""Masked forms of secrets and identifiers, for logs, metrics, reprs and errors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

__all__ = ["UPSTREAM_TEXT_LIMIT", "Redactor", "mask_id", "mask_secret", "mask_url", "url_passwords"]

#: The most characters of upstream text (messages, reasons, codes) that leave the process.
UPSTREAM_TEXT_LIMIT = 200


def mask_secret(secret: str) -> str:
    """A form of ``secret`` that tells two secrets apart and reveals nothing of either.

    A short keyed-free digest is shown instead of any characters: even a few characters of a
    short secret would shrink the search space.
    """
    if not secret:
        return "<empty>"
    digest = hashlib.blake2b(secret.encode(), digest_size=4).hexdigest()
    return f"…{digest}"


def mask_id(value: str) -> str:
    """A form of an app key or token that an operator recognises: ``123…678``."""
    if len(value) <= 6:
        return mask_secret(value)
    return f"{value[:3]}…{value[-3:]}"


_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^@/]*)@", re.IGNORECASE)
_SECRET_QUERY = re.compile(r"(?P<name>[?&](?:secret|key|token|password)=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` without its password or secret query values."""
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}***@", url)
    return _SECRET_QUERY.sub(lambda m: f"{m['name']}***", masked)


def url_passwords(url: str) -> list[str]:
    """The password in ``url``'s userinfo (as written and percent-decoded), for log redaction."""
    match = _USERINFO.search(url)
    if match is None or ":" not in match["userinfo"]:
        return []
    password = match["userinfo"].partition(":")[2]
    return [p for p in dict.fromkeys((password, unquote(password))) if p]


class Redactor:
    """Makes upstream text safe to show: every known secret replaced, then cut to ``limit``.

    An upstream may echo what it was sent (a reseller puts its query string, ``secret=`` and
    all, into its error text), so its text never reaches a client, a job row or a log as it
    came. Each secret is also found in its URL-encoded forms. Secrets are replaced before the
    text is cut, so no cut leaves a secret's prefix behind.
    """

    __slots__ = ("_forms", "limit")

    def __init__(self, secrets: Iterable[str] = (), *, limit: int = UPSTREAM_TEXT_LIMIT) -> None:
        self.limit = limit
        self._forms: dict[str, str] = {}
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Redact ``secret`` too (a secret rotated in after this was made)."""
        if len(secret) < 4:  # too short to tell from ordinary text
            return
        masked = mask_secret(secret)
        for form in (secret, quote(secret, safe=""), quote_plus(secret)):
            self._forms[form] = masked
        # longest first: a secret that contains another is replaced whole
        self._forms = dict(sorted(self._forms.items(), key=lambda kv: len(kv[0]), reverse=True))

    def __call__(self, text: object) -> str:
        out = text if isinstance(text, str) else str(text)
        for form, masked in self._forms.items():
            if form in out:
                out = out.replace(form, masked)
        if len(out) > self.limit:
            out = out[: self.limit - 1] + "…"
        return out

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms, limit={self.limit})"
