"""The Taobao Open Platform (TOP) provider: signing, envelopes and error classes.

Facts it relies on are in ``shared/TOP-PROTOCOL.md``: parameters signed sorted and concatenated
``k1v1k2v2…``; ``timestamp`` in Beijing time whatever the host's zone; errors as HTTP 200 with an
``error_response``; success under ``<method>_response`` or, with ``simplify=true``, at the root.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal

import aiohttp
import orjson

from taogate._beijing import BEIJING
from taogate._errors import (
    CredentialInvalid,
    IpNotWhitelisted,
    ItemUnreadable,
    LimitScope,
    ProtocolMismatch,
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

__all__ = [
    "BEIJING",
    "INFO_GET",
    "UPGRADE_GET",
    "TopProvider",
    "beijing_timestamp",
    "classify_error",
    "match_items",
    "parse_items",
    "response_key",
    "sign",
]

SignMethod = Literal["md5", "hmac", "hmac-sha256"]
INFO_GET: Final = "taobao.tbk.item.info.get"
UPGRADE_GET: Final = "taobao.tbk.item.info.upgrade.get"

#: method -> (business parameter that carries the ids, most ids per call)
METHODS: Final[Mapping[str, tuple[str, int]]] = {
    INFO_GET: ("num_iids", 40),
    UPGRADE_GET: ("item_id", 20),
}


def sign(params: Mapping[str, str], secret: str, sign_method: str) -> str:
    """The TOP signature of ``params`` (every parameter but ``sign``), upper-case hex.

    Keys are sorted by code point and concatenated as ``k1v1k2v2…`` (raw values, UTF-8); ``md5``
    hashes ``secret + text + secret``, ``hmac`` and ``hmac-sha256`` key an HMAC with the secret.
    """
    text = "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign").encode()
    key = secret.encode()
    if sign_method == "md5":
        digest = hashlib.md5(key + text + key, usedforsecurity=False).hexdigest()
    elif sign_method == "hmac":
        digest = hmac.new(key, text, hashlib.md5).hexdigest()
    elif sign_method == "hmac-sha256":
        digest = hmac.new(key, text, hashlib.sha256).hexdigest()
    else:
        raise ValueError(f"unknown sign_method {sign_method!r}")
    return digest.upper()


def beijing_timestamp(now: float | None = None) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in GMT+8 for the POSIX time ``now`` (default: the current time).

    Computed from UTC, never from the host's local zone: a container in UTC would otherwise be
    eight hours off and exceed the platform's ten-minute skew.
    """
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def response_key(method: str) -> str:
    """The success envelope's root key: ``taobao.`` dropped, dots to underscores."""
    return f"{method.removeprefix('taobao.').replace('.', '_')}_response"


# --- errors -------------------------------------------------------------------------------

_BAN = re.compile(r"ban will last for\s+(\d+(?:\.\d+)?)\s+more seconds", re.IGNORECASE)
_RATE_CODES: Final = frozenset({4, 5, 6, 7, 8})
_CREDENTIAL_CODES: Final = frozenset({11, 12, 13, 25, 27, 29})
_BAD_REQUEST_CODES: Final = frozenset({40, 41, 43, 50})
# "Missing" signature/session/app key (24/26/28) are faults in how the request is built, for
# every credential alike: a protocol problem, not a bad key.
_PROTOCOL_CODES: Final = frozenset({9, 21, 22, 23, 24, 26, 28, 30, 31, 32, 33, 34, 42, 44, 47, 53})
_OLD_ID_SUB_CODE: Final = "-4003"
_SCOPES: Final[Mapping[str, LimitScope]] = {
    "accesscontrol.limited-by-app-access-count": "app",
    "accesscontrol.limited-by-api-access-count": "api",
    "accesscontrol.limited-by-app-api-access-count": "app_api",
    "accesscontrol.limited-by-dynamic-access-count": "app_api",
}
#: code 15 with this sub-code: the promoter account (all its app keys together) is over its rate
ACCOUNT_LIMITED_SUB_CODE: Final = "9100"
#: code 11 with this sub-code: the key accepts calls only from its whitelisted server addresses
IP_WHITELIST_SUB_CODE: Final = "isv.permission-ip-whitelist-limit"
DEFAULT_BAN_S: Final = 1.0
#: how long an account over its rate pauses (the answer names no ban)
ACCOUNT_PAUSE_S: Final = 1.0


def _as_code(value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():  # int(inf) would raise OverflowError
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str) or len(str(value)) > 12:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _opt_text(value: Any, clean: Redactor) -> str | None:
    """An optional upstream text (a request id, a code), made safe to show."""
    return None if value is None or value == "" else clean(value)


def classify_error(
    error: Mapping[str, Any],
    *,
    credential: str | None = None,
    ids: Sequence[str] = (),
    redact: Redactor | None = None,
) -> UpstreamError:
    """The error class of an ``error_response`` body (DESIGN.md "Error classes").

    Rate limits come first (code 7 with any sub-code is a ban), then bad credentials; then the
    sub-code decides (``isv.*`` and -4003 are the caller's fault, ``isp.*`` the server's), then
    the code. Unknown codes are treated as transient, so they are retried within budget.
    The upstream's texts are kept only through ``redact`` (cut short, the call's secret out).
    """
    clean = redact or Redactor()
    code = _as_code(error.get("code"))
    raw_code = error.get("code")
    msg = str(error.get("msg") or "")
    sub_code = str(error.get("sub_code") or "")
    sub_msg = str(error.get("sub_msg") or "")
    text = clean(f"{msg}: {sub_msg}" if sub_msg else (msg or "upstream error"))
    ctx: dict[str, Any] = {
        "credential": credential,
        "request_id": _opt_text(error.get("request_id"), clean),
        "code": code if code is not None else _opt_text(raw_code, clean),
        "sub_code": clean(sub_code) if sub_code else None,
    }
    if code in _RATE_CODES or sub_code in ("isp.call-limited", "isv.call-limited"):
        match = _BAN.search(sub_msg) or _BAN.search(msg)
        retry_after = float(match.group(1)) if match else DEFAULT_BAN_S
        scope = _SCOPES.get(sub_code, "app" if code in (7, 8) else "unknown")
        return RateLimited(text, retry_after=retry_after, scope=scope, **ctx)
    if code == 15 and sub_code == ACCOUNT_LIMITED_SUB_CODE:
        return RateLimited(text, retry_after=ACCOUNT_PAUSE_S, scope="account", **ctx)
    if sub_code == IP_WHITELIST_SUB_CODE:
        return IpNotWhitelisted(text, **ctx)
    if code in _CREDENTIAL_CODES:
        return CredentialInvalid(text, **ctx)
    if sub_code == _OLD_ID_SUB_CODE or sub_code.startswith("isv."):
        return UpstreamBadRequest(text, ids=ids, **ctx)
    if sub_code.startswith("isp."):
        return UpstreamTransient(text, **ctx)
    if code in _BAD_REQUEST_CODES:
        return UpstreamBadRequest(text, ids=ids, **ctx)
    if code in _PROTOCOL_CODES:
        return ProtocolMismatch(text, **ctx)
    return UpstreamTransient(text, **ctx)


# --- envelopes ----------------------------------------------------------------------------


def _unwrap_list(value: Any, wrapper: str) -> list[Any]:
    """A list field in either shape: ``{"wrapper": [...]}`` (normal) or ``[...]`` (simplify)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        inner = value.get(wrapper)
        if inner is None:
            return []
        if isinstance(inner, list):
            return inner
        if isinstance(inner, Mapping):  # XML-mirrored JSON gives a lone element as an object
            return [inner]
    raise TypeError(f"expected a list or {{{wrapper!r}: [...]}}, got {type(value).__name__}")


def _opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, Mapping | list):
        raise ValueError(f"a text field holds a {type(value).__name__}")
    return str(value)


def _opt_int(value: Any) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _id_of(value: Any) -> str | None:
    """An item id as the answer gives it (a string or a number); ``None`` when there is none."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def _money(fields: Mapping[str, Any], name: str) -> Decimal | None:
    try:
        return parse_money(fields.get(name))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} is a {type(value).__name__}, not an object")
    return value


def _info_item(raw: Mapping[str, Any]) -> Item:
    num_iid = _id_of(raw.get("num_iid"))
    if num_iid is None:
        raise ValueError("no num_iid")
    zk = _money(raw, "zk_final_price")
    coupon_amount = _money(raw, "coupon_amount")
    coupon_start_fee = _money(raw, "coupon_start_fee")
    final_price, basis = compute_final_price(
        zk, coupon_amount=coupon_amount, coupon_start_fee=coupon_start_fee
    )
    return Item(
        num_iid=num_iid,
        title=_opt_str(raw.get("title")) or "",
        shop=_opt_str(raw.get("nick")) or _opt_str(raw.get("shop_title")) or "",
        reserve_price=_money(raw, "reserve_price"),
        zk_final_price=zk,
        final_price=final_price,
        final_price_basis=basis,
        coupon_amount=coupon_amount,
        coupon_start_fee=coupon_start_fee,
        pict_url=_opt_str(raw.get("pict_url")),
        item_url=_opt_str(raw.get("item_url")),
        seller_id=_opt_str(raw.get("seller_id")),
        user_type=_opt_int(raw.get("user_type")),
        volume=_opt_int(raw.get("volume")),
    )


def _upgrade_item(raw: Mapping[str, Any]) -> Item:
    num_iid = _id_of(raw.get("item_id"))
    if num_iid is None:
        raise ValueError("no item_id")
    basic = _section(raw, "item_basic_info")
    price = _section(raw, "price_promotion_info")
    zk = _money(price, "zk_final_price")
    final_price, basis = compute_final_price(
        zk, final_promotion_price=_money(price, "final_promotion_price")
    )
    return Item(
        num_iid=num_iid,
        title=_opt_str(basic.get("title")) or "",
        shop=_opt_str(basic.get("shop_title")) or _opt_str(basic.get("nick")) or "",
        reserve_price=_money(price, "reserve_price"),
        zk_final_price=zk,
        final_price=final_price,
        final_price_basis=basis,
        pict_url=_opt_str(basic.get("pict_url")),
        seller_id=_opt_str(basic.get("seller_id")),
        user_type=_opt_int(basic.get("user_type")),
        volume=_opt_int(basic.get("volume")),
    )


def parse_items(
    body: bytes,
    method: str,
    ids: Sequence[str],
    *,
    credential: str | None = None,
    redact: Redactor | None = None,
) -> dict[str, Answer]:
    """The answers of a TOP call keyed by requested id; ids not answered are left out.

    Accepts the normal and the ``simplify=true`` envelope. Raises the classified
    :class:`UpstreamError` for an ``error_response``, :class:`UpstreamTransient` for a body that
    is not a TOP answer. Each item is read on its own: one that cannot be read is answered
    with an :class:`ItemUnreadable` for its id alone (see :func:`match_items`).
    """
    clean = redact or Redactor()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamTransient(
            f"malformed answer ({len(body)} bytes, not JSON)", credential=credential
        ) from None
    if not isinstance(doc, dict):
        raise UpstreamTransient("malformed answer (not a JSON object)", credential=credential)
    error = doc.get("error_response")
    if error is not None:
        if not isinstance(error, dict):
            raise UpstreamTransient("malformed error_response", credential=credential)
        raise classify_error(error, credential=credential, ids=ids, redact=clean)
    inner = doc.get(response_key(method), doc)  # simplify=true puts the fields at the root
    if not isinstance(inner, dict) or ("results" not in inner and "request_id" not in inner):
        raise UpstreamTransient("malformed answer (no results)", credential=credential)
    request_id = _opt_text(inner.get("request_id"), clean)
    wrapper, to_item = (
        ("tbk_item_detail", _upgrade_item) if method == UPGRADE_GET else ("n_tbk_item", _info_item)
    )
    try:
        entries = _unwrap_list(inner.get("results"), wrapper)
    except TypeError as exc:
        raise UpstreamTransient(
            f"malformed answer ({exc})", credential=credential, request_id=request_id
        ) from None
    id_field = "item_id" if method == UPGRADE_GET else "num_iid"
    return match_items(
        entries, ids, id_field, to_item, credential=credential, request_id=request_id
    )


def match_items(
    entries: Sequence[Any],
    ids: Sequence[str],
    id_field: str,
    to_item: Callable[[Mapping[str, Any]], Item],
    *,
    credential: str | None = None,
    request_id: str | None = None,
) -> dict[str, Answer]:
    """Each entry of an answer read on its own and given to the id it is the item of.

    An entry belongs to its own id (``id_field``) when that id was asked for. ``input_num_iid``
    (the platform answering an old id with a new one) gives it to the id asked for only when
    its own id was not asked for too. An id that two entries claim, an id named by an entry
    that is another id's item, and an entry that cannot be read get :class:`ItemUnreadable`,
    never "not found"; so do all ids left unanswered when an entry names no id at all.
    """
    wanted = set(ids)
    # per id: (matched by its own id?, what the entry gave)
    claims: dict[str, list[tuple[bool, Item | str]]] = {}
    named: set[str] = set()  # ids some entry names, as its own or as the id asked for
    nameless = 0
    for raw in entries:
        if not isinstance(raw, Mapping):
            nameless += 1
            continue
        own = _id_of(raw.get(id_field))
        asked = _id_of(raw.get("input_num_iid"))
        if own is None and asked is None:
            nameless += 1
            continue
        named.update(i for i in (own, asked) if i in wanted)
        if own in wanted:
            key, by_own = own, True
        elif asked in wanted:
            key, by_own = asked, False
        else:
            continue  # an item nobody asked for
        assert key is not None
        outcome: Item | str
        try:
            outcome = to_item(raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            outcome = str(exc) if isinstance(exc, ValueError) else "a field of the wrong shape"
        claims.setdefault(key, []).append((by_own, outcome))

    def unreadable(num_iid: str, reason: str) -> ItemUnreadable:
        return ItemUnreadable(num_iid, reason, credential=credential, request_id=request_id)

    out: dict[str, Answer] = {}
    for key, found in claims.items():
        best = [o for by_own, o in found if by_own] or [o for _, o in found]
        first = best[0]
        if isinstance(first, str):
            out[key] = unreadable(key, first)
        elif any(o != first for o in best[1:]):
            out[key] = unreadable(key, f"{len(best)} different items answer it")
        else:
            out[key] = first
    for num_iid in ids:
        if num_iid in out:
            continue
        if num_iid in named:
            out[num_iid] = unreadable(num_iid, "the answer names it, with another id's item")
        elif nameless:
            out[num_iid] = unreadable(num_iid, f"{nameless} item(s) in the answer name no id")
    return out


# --- the provider -------------------------------------------------------------------------


class TopProvider:
    """Calls a TOP item method over one pooled keep-alive session.

    Every parameter goes in a POST form body, as the Go SDK and taobaopy send it.
    """

    def __init__(
        self,
        *,
        url: str,
        method: str = INFO_GET,
        sign_method: SignMethod = "hmac-sha256",
        simplify: bool = False,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        max_connections: int = 64,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        id_policy: IdPolicy | None = None,
        params: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        egresses: Sequence[Egress] = (),
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unsupported method {method!r}; one of {', '.join(METHODS)}")
        self._url = url
        self._method = method
        self._ids_param, self._max_batch = METHODS[method]
        self._sign_method = sign_method
        self._simplify = simplify
        self._id_policy = id_policy or IdPolicy()
        self._extra = dict(params or {})
        self._wall_clock = wall_clock
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
        return self._max_batch

    @property
    def method(self) -> str:
        return self._method

    def build_params(self, ids: Sequence[str], credential: Credential) -> dict[str, str]:
        """The signed parameters of one call (public so tests can check what is sent)."""
        params = {
            **self._extra,
            "method": self._method,
            "app_key": credential.app_key,
            "timestamp": beijing_timestamp(self._wall_clock()),
            "v": "2.0",
            "format": "json",
            "sign_method": self._sign_method,
            self._ids_param: ",".join(ids),
        }
        if self._simplify:
            params["simplify"] = "true"
        params = {k: v for k, v in params.items() if v.strip()}  # TOP refuses empty values
        params["sign"] = sign(params, credential.secret, self._sign_method)
        return params

    async def fetch(self, ids: Sequence[str], credential: Credential) -> dict[str, Answer]:
        """One upstream call for ``ids``; see :class:`taogate.providers.Provider`."""
        batch = self._id_policy.check_batch(ids, self._max_batch)
        data = self.build_params(batch, credential)
        who = credential.masked
        body = await self._http.call(
            "POST", self._url, data=data, credential=who, egress=credential.egress
        )
        redact = Redactor((credential.secret,))
        return parse_items(body, self._method, batch, credential=who, redact=redact)

    async def aclose(self) -> None:
        """Close the session if this provider created it."""
        await self._http.aclose()

    async def __aenter__(self) -> TopProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
