"""HTTP caching of item answers, so a CDN or proxy cache in front answers hot items itself.

A found item answer (``GET /v1/items/{num_iid}``) carries:

- ``Cache-Control: public, max-age=N, stale-while-revalidate=S, stale-if-error=E`` — ``N`` is
  what remains of the answer's freshness (the lookup's ``max_age``, at most ``[cache]
  max_age_s``, minus its age; 0 for a stale answer), so a cache never serves it older than
  taogate would have served it fresh;
- ``ETag: W/"…"`` — a digest of the item's JSON. Weak: the body around the item (``age_s``,
  ``source``) differs from answer to answer, the item does not. Equal items give equal tags on
  every replica, so a refetched but unchanged item still revalidates with a 304;
- ``Last-Modified`` — when the item was fetched from the upstream (IMF-fixdate).

``If-None-Match`` (a list, or ``*``; weak comparison, RFC 9110 §13.1.2) is answered with 304,
the ``ETag`` and ``Cache-Control``, and no body. ``If-Modified-Since`` is not evaluated: the
ETag is the validator. A 404 "item does not exist" may be cached briefly
(``not_found_max_age_s``); every other problem answer is ``no-store``.

The hit path pays for a dict lookup per header: an item's JSON and tag are kept per item object
(a bounded memo), header values per second of age.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable

import orjson

from taogate._model import Item, Lookup
from taogate._settings import Settings

__all__ = ["ItemCaching", "etag_matches"]

#: Items whose JSON and ETag are kept (each entry holds the item object alive while it is kept),
#: at most as many as L1 holds: an item L1 has dropped is never served again (a new fetch makes
#: a new object), so a larger memo would only keep dead items alive.
MEMO_ITEMS = 8192
_MEMO_VALUES = 4096

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_OPAQUE_TAG = re.compile(rb'(?:W/)?("[^"]*")')


def http_date(seconds: int) -> bytes:
    """``seconds`` since the epoch as an IMF-fixdate (RFC 9110 §5.6.7), locale-independent."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    ).encode()


def etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """Whether an ``If-None-Match`` value matches ``etag`` by weak comparison.

    ``*`` matches any current representation; otherwise a comma-separated list of entity tags,
    each compared on its opaque part (``W/"x"`` matches ``"x"``).
    """
    value = if_none_match.strip()
    if value == b"*":
        return True
    opaque = etag[2:] if etag.startswith(b"W/") else etag
    if value in (etag, opaque):  # a cache revalidating the one tag it holds
        return True
    if opaque not in value:  # the usual miss costs one substring search
        return False
    return any(m.group(1) == opaque for m in _OPAQUE_TAG.finditer(value))


class ItemCaching:
    """The caching headers of item answers under ``[server.edge_cache]``."""

    def __init__(self, settings: Settings, *, wall_clock: Callable[[], float] = time.time) -> None:
        edge = settings.server.edge_cache
        self._wall_clock = wall_clock
        self.enabled = edge.enabled
        self.default_max_age_s = settings.cache.max_age_s
        self.negative_ttl_s = settings.cache.negative_ttl_s
        self.not_found_max_age_s = edge.not_found_max_age_s
        stale_if_error = (
            edge.stale_if_error_s
            if edge.stale_if_error_s is not None
            else math.floor(settings.cache.max_stale_s)
        )
        self._scope = "public" if edge.public else "private"
        self._tail = (
            f", stale-while-revalidate={edge.stale_while_revalidate_s}"
            f", stale-if-error={stale_if_error}"
        )
        self._memo_items = max(1, min(MEMO_ITEMS, settings.cache.l1_max_entries))
        self._items: dict[int, tuple[Item, bytes, bytes]] = {}
        self._cache_control: dict[int, bytes] = {}
        self._dates: dict[int, bytes] = {}

    def item_json(self, item: Item) -> tuple[bytes, bytes]:
        """The item's JSON (as ``Lookup.to_dict`` renders it) and its weak ETag."""
        memo = self._items.get(id(item))
        if memo is not None and memo[0] is item:  # the id of a dead item may be reused
            return memo[1], memo[2]
        # a compact copy: orjson's bytes keep their whole write buffer (4 KiB at least) however
        # short the JSON, which a memo of thousands of items would hold for good
        data = bytes(memoryview(orjson.dumps(item.to_dict())))
        etag = b'W/"' + hashlib.blake2b(data, digest_size=12).hexdigest().encode() + b'"'
        if len(self._items) >= self._memo_items:
            del self._items[next(iter(self._items))]  # the oldest entry
        self._items[id(item)] = (item, data, etag)
        return data, etag

    def body(self, lookup: Lookup, item_json: bytes) -> bytes:
        """The answer's JSON, byte for byte ``orjson.dumps(lookup.to_dict())``."""
        return orjson.dumps(
            {
                "item": orjson.Fragment(item_json),
                "source": None if lookup.source is None else str(lookup.source),
                "stale": lookup.stale,
                "age_s": round(lookup.age_s, 3),
            }
        )

    def cache_control(self, lookup: Lookup, max_age_s: float | None) -> bytes:
        """``Cache-Control`` of a found item: ``max-age`` is what remains of its freshness."""
        if lookup.stale:
            remaining = 0
        else:  # a lookup may ask for less than the stored freshness, never for more
            limit = self.default_max_age_s
            if max_age_s is not None and max_age_s < limit:
                limit = max_age_s
            remaining = max(0, math.floor(limit - lookup.age_s))
        value = self._cache_control.get(remaining)
        if value is None:
            value = f"{self._scope}, max-age={remaining}{self._tail}".encode()
            if len(self._cache_control) >= _MEMO_VALUES:
                self._cache_control.clear()
            self._cache_control[remaining] = value
        return value

    def last_modified(self, lookup: Lookup) -> bytes:
        """When the answer was fetched from the upstream, as an HTTP date."""
        fetched = math.floor(self._wall_clock() - lookup.age_s)
        value = self._dates.get(fetched)
        if value is None:
            value = http_date(fetched)
            if len(self._dates) >= _MEMO_VALUES:
                self._dates.clear()
            self._dates[fetched] = value
        return value

    def not_found_headers(self, lookup: Lookup) -> dict[str, str]:
        """Headers of a 404 "item does not exist": briefly cacheable, else ``no-store``."""
        remaining = min(self.not_found_max_age_s, math.floor(self.negative_ttl_s - lookup.age_s))
        if not self.enabled or lookup.stale or remaining <= 0:
            return {"Cache-Control": "no-store"}
        return {"Cache-Control": f"{self._scope}, max-age={remaining}"}
