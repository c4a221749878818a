"""A reseller (onebound-style ``item_get``) provider: one id a call, key and secret in the URL.

The envelope is ``{"item": {...}, "error_code": "0000", "reason": "..."}``. Error codes besides
``0000`` are only partly documented publicly; the mapping below is configurable and its defaults
follow the simulator's conventions (``docs/simulator.md``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import aiohttp
import orjson

from taogate._errors import (
    CredentialInvalid,
    IpNotWhitelisted,
    ItemUnreadable,
    RateLimited,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTransient,
)
from taogate._ids import IdPolicy
from taogate._masking import Redactor
from taogate._model import Item, compute_final_price, parse_money
from taogate.providers._http import DEFAULT_MAX_RESPONSE_BYTES, PooledSession
from taogate.providers.base import Answer, Credential, Egress

__all__ = ["DEFAULT_ERROR_CODES", "ResellerProvider", "parse_reseller"]

#: error_code -> class name: "rate_limited", "credential_invalid", "ip_refused", "not_found",
#: "bad_request". Codes not listed are transient faults. ("4003", a key's IP whitelist refusing
#: the calling address, is the simulator's convention: the real reseller's code is unconfirmed.)
DEFAULT_ERROR_CODES: Final[Mapping[str, str]] = {
    "4013": "rate_limited",
    "4003": "ip_refused",
    "4005": "credential_invalid",
    "4016": "credential_invalid",
    "2000": "not_found",
    "4000": "bad_request",
}
_BAN = re.compile(r"(\d+(?:\.\d+)?)\s+more seconds", re.IGNORECASE)


def parse_reseller(
    body: bytes,
    num_iid: str,
    *,
    credential: str | None = None,
    error_codes: Mapping[str, str] = DEFAULT_ERROR_CODES,
    redact: Redactor | None = None,
) -> Item | None:
    """The item of one reseller answer; ``None`` when the reseller says it does not exist.

    Raises :class:`ItemUnreadable` when the answer holds an item whose fields cannot be used
    (a price that is not a number or out of bounds); the reseller's own texts are kept only
    through ``redact`` (cut short, the call's secret out: resellers echo their query string).
    """
    clean = redact or Redactor()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamTransient("malformed answer (not JSON)", credential=credential) from None
    if not isinstance(doc, dict):
        raise UpstreamTransient("malformed answer (not a JSON object)", credential=credential)
    code = clean(doc.get("error_code", "0000") or "0000")
    reason = clean(doc.get("reason") or doc.get("error") or "")
    request_id = doc.get("request_id")
    ctx: dict[str, Any] = {
        "credential": credential,
        "request_id": None if request_id is None else clean(request_id),
        "code": code,
    }
    if code != "0000":
        kind = error_codes.get(code)
        if kind == "not_found":
            return None
        raise _classify(kind, code, reason, num_iid, ctx)
    raw = doc.get("item")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UpstreamTransient("malformed answer (item is not an object)", **ctx)
    if not raw:
        return None
    try:
        return _item(raw, num_iid)
    except ValueError as exc:
        raise ItemUnreadable(
            num_iid, str(exc), credential=credential, request_id=ctx["request_id"]
        ) from None


def _text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, Mapping | list):
        raise ValueError(f"{name} is a {type(value).__name__}, not text")
    return str(value)


def _money(raw: Mapping[str, Any], *names: str) -> Decimal | None:
    for name in names:
        value = raw.get(name)
        if value is not None and value != "":
            try:
                return parse_money(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    return None


def _item(raw: Mapping[str, Any], num_iid: str) -> Item:
    zk = _money(raw, "price")
    promotion = _money(raw, "promotion_price")
    final_price, basis = compute_final_price(zk, final_promotion_price=promotion)
    own = raw.get("num_iid")
    if isinstance(own, bool) or not isinstance(own, str | int | None):
        raise ValueError(f"num_iid is a {type(own).__name__}")
    return Item(
        num_iid=str(own or num_iid),
        title=_text(raw, "title") or "",
        shop=_text(raw, "nick") or "",
        reserve_price=_money(raw, "orginal_price", "original_price"),
        zk_final_price=zk,
        final_price=final_price,
        final_price_basis=basis,
        pict_url=_text(raw, "pic_url"),
        item_url=_text(raw, "detail_url"),
    )


def _classify(
    kind: str | None, code: str, reason: str, num_iid: str, ctx: dict[str, Any]
) -> UpstreamError:
    text = reason or f"reseller error {code}"
    if kind == "rate_limited":
        match = _BAN.search(reason)
        return RateLimited(text, retry_after=float(match.group(1)) if match else 1.0, **ctx)
    if kind == "credential_invalid":
        return CredentialInvalid(text, **ctx)
    if kind == "ip_refused":
        return IpNotWhitelisted(text, **ctx)
    if kind == "bad_request":
        return UpstreamBadRequest(text, ids=(num_iid,), **ctx)
    return UpstreamTransient(text, **ctx)


class ResellerProvider:
    """Calls a reseller's ``item_get`` for one id per call over a pooled session."""

    def __init__(
        self,
        *,
        url: str,
        promotion: bool = True,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        max_connections: int = 64,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        id_policy: IdPolicy | None = None,
        error_codes: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        egresses: Sequence[Egress] = (),
    ) -> None:
        self._url = url
        self._promotion = promotion
        self._id_policy = id_policy or IdPolicy()
        self._error_codes = dict(DEFAULT_ERROR_CODES if error_codes is None else error_codes)
        self._http = PooledSession(
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            egresses={e.name: e for e in egresses},
            session=session,
        )

    @property
    def max_batch(self) -> int:
        return 1

    async def fetch(self, ids: Sequence[str], credential: Credential) -> dict[str, Answer]:
        """One call for one id; see :class:`taogate.providers.Provider`."""
        (num_iid,) = self._id_policy.check_batch(ids, 1)
        query = {"key": credential.app_key, "secret": credential.secret, "num_iid": num_iid}
        if self._promotion:
            query["is_promotion"] = "1"
        who = credential.masked
        body = await self._http.call(
            "GET", self._url, params=query, credential=who, egress=credential.egress
        )
        redact = Redactor((credential.secret,))
        try:
            item = parse_reseller(
                body, num_iid, credential=who, error_codes=self._error_codes, redact=redact
            )
        except ItemUnreadable as exc:  # that id's answer alone: never retried, never "absent"
            return {num_iid: exc}
        return {} if item is None else {num_iid: item}

    async def aclose(self) -> None:
        """Close the session if this provider created it."""
        await self._http.aclose()

    async def __aenter__(self) -> ResellerProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
