"""Masked forms of secrets and identifiers, for logs, metrics, reprs and errors."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

__all__ = ["mask_id", "mask_secret", "mask_url", "url_passwords"]


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
