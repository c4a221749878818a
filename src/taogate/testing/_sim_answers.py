"""The simulator's answers on the wire: TOP and reseller bodies rendered from the catalog, error
bodies, and the broken bodies of the ``outage`` and ``malformed`` faults.

An item is rendered once per answer shape (method, ``simplify``) and kept until its price
changes, so a flood of calls costs the simulator little.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import orjson
from aiohttp import web

from taogate.providers.top import METHODS, UPGRADE_GET, response_key
from taogate.testing._catalog import Catalog, ItemState, yuan
from taogate.testing._sim_state import ResellerCall, ResellerError, TopCall, TopError

__all__ = ["Answers", "bad_request", "json_response"]

_WIRE_CACHE: Final = 100_000  # rendered items kept per answer shape, oldest dropped first
_DAY_MS: Final = 86_400_000
_MALFORMED_HTML: Final = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
_MALFORMED_JSON: Final = b'{"tbk_item_info_get_response":{"results":{"n_tbk_item":[{"num_iid":"5'


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc), status=status, content_type="application/json", charset="utf-8"
    )


def bad_request(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


def _info_item(state: ItemState, simplify: bool) -> dict[str, Any]:
    """One ``n_tbk_item`` of ``taobao.tbk.item.info.get`` (TOP-PROTOCOL.md §5)."""
    info = state.info
    item: dict[str, Any] = {
        "num_iid": info.num_iid,
        "input_num_iid": info.num_iid,
        "title": info.title,
        "pict_url": info.pict_url,
        "reserve_price": yuan(state.reserve_fen),
        "zk_final_price": yuan(state.zk_fen),
        "user_type": info.user_type,
        "provcity": info.provcity,
        "item_url": info.item_url,
        "nick": info.nick,
        "seller_id": info.seller_id,
        "volume": info.volume,
    }
    if info.small_images:
        images = list(info.small_images)
        item["small_images"] = images if simplify else {"string": images}
    if info.coupon_info is not None:
        item["coupon_amount"] = str(state.coupon_amount)
        item["coupon_start_fee"] = str(state.coupon_start_fee)
        item["coupon_info"] = info.coupon_info
    return item


def _upgrade_item(state: ItemState, simplify: bool, promo: tuple[str, str]) -> dict[str, Any]:
    """One ``tbk_item_detail`` of ``taobao.tbk.item.info.upgrade.get``."""
    info = state.info
    path: list[dict[str, Any]] = []
    if state.final_price_basis == "coupon":
        path.append(
            {
                "promotion_title": "店铺优惠券",
                "promotion_desc": info.coupon_info,
                "promotion_fee": str(state.coupon_amount),
                "promotion_start_time": promo[0],
                "promotion_end_time": promo[1],
                "promotion_id": info.coupon_id,
            }
        )
    return {
        "item_id": info.num_iid,
        "item_basic_info": {
            "title": info.title,
            "shop_title": info.nick,
            "pict_url": info.pict_url,
            "user_type": info.user_type,
            "volume": info.volume,
            "seller_id": info.seller_id,
        },
        "price_promotion_info": {
            "reserve_price": yuan(state.reserve_fen),
            "zk_final_price": yuan(state.zk_fen),
            "final_promotion_price": yuan(state.final_fen),
            "final_promotion_path_list": path
            if simplify
            else {"final_promotion_path_map_data": path},
        },
        "publish_info": {"click_url": info.click_url},
    }


class Answers:
    """Renders the answers to accepted and refused calls; ``rng`` draws request ids and the
    shape of a malformed body (the simulator's own, so a seed fixes them)."""

    def __init__(
        self, catalog: Catalog, *, rng: random.Random, wall_clock: Callable[[], float]
    ) -> None:
        self._catalog = catalog
        self._rng = rng
        self._wall_clock = wall_clock
        self._roots = {m: response_key(m) for m in METHODS}
        self._wire: dict[tuple[str, bool], OrderedDict[str, tuple[int, orjson.Fragment]]] = {}
        self._promo = self._promo_window()

    def reset(self) -> None:
        """Forget every rendered item; promotions get a new window from now."""
        self._wire.clear()
        self._promo = self._promo_window()

    def _promo_window(self) -> tuple[str, str]:
        now_ms = int(self._wall_clock() * 1000)
        return str(now_ms - _DAY_MS), str(now_ms + 30 * _DAY_MS)

    def request_id(self) -> str:
        return f"{self._rng.getrandbits(48):012x}"

    def fault(self, kind: str) -> web.Response:
        """The answer of an ``outage`` (503) or a ``malformed`` fault."""
        if kind == "outage":
            return web.Response(status=503, text="503 Service Unavailable (simulated outage)")
        if self._rng.random() < 0.5:  # half an HTML error page, half a truncated JSON body
            return web.Response(body=_MALFORMED_HTML, content_type="text/html")
        return web.Response(body=_MALFORMED_JSON, content_type="application/json")

    def top_error(self, error: TopError) -> dict[str, Any]:
        """An ``error_response`` body."""
        doc: dict[str, Any] = {"code": error.code, "msg": error.msg}
        if error.sub_code is not None:
            doc["sub_code"] = error.sub_code
        if error.sub_msg is not None:
            doc["sub_msg"] = error.sub_msg
        doc["request_id"] = self.request_id()
        return {"error_response": doc}

    def top(self, call: TopCall, now: float) -> tuple[dict[str, Any], int]:
        """The body answering ``call`` at ``now``, and how many items it holds."""
        upgrade = call.method == UPGRADE_GET
        cache = self._wire.setdefault((call.method, call.simplify), OrderedDict())
        version = self._catalog.version
        items: list[orjson.Fragment] = []
        for num_iid in call.ids:
            changes = version(num_iid, now)
            if changes is None:
                continue  # absent: simply left out, as the platform does
            hit = cache.get(num_iid)
            if hit is None or hit[0] != changes:
                state = self._catalog.current(num_iid, now)
                assert state is not None
                doc = (
                    _upgrade_item(state, call.simplify, self._promo)
                    if upgrade
                    else _info_item(state, call.simplify)
                )
                if len(cache) >= _WIRE_CACHE:
                    cache.popitem(last=False)
                cache[num_iid] = hit = (changes, orjson.Fragment(orjson.dumps(doc)))
            items.append(hit[1])
        if call.simplify:
            return {"results": items, "request_id": self.request_id()}, len(items)
        wrapped = {("tbk_item_detail" if upgrade else "n_tbk_item"): items}
        root = self._roots[call.method]
        return {root: {"results": wrapped, "request_id": self.request_id()}}, len(items)

    def reseller(self, call: ResellerCall, now: float, wall: float) -> tuple[dict[str, Any], bool]:
        """The body answering ``call`` at ``now`` (without ``request_id`` and
        ``execution_time``), and whether the item was found; ``api_info`` tells the key's calls
        today (``wall``'s Beijing day) and its daily quota."""
        state = self._catalog.current(call.num_iid, now)
        if state is None:
            return self.reseller_error(
                ResellerError("2000", "item not found", "item_not_found")
            ), False
        info = state.info
        item: dict[str, Any] = {
            "num_iid": info.num_iid,
            "title": info.title,
            "price": orjson.Fragment(yuan(state.zk_fen).encode()),  # an exact JSON number
            "orginal_price": yuan(state.reserve_fen),
            "nick": info.nick,
            "detail_url": info.item_url,
            "pic_url": info.pict_url,
        }
        if call.promotion:
            item["promotion_price"] = yuan(state.final_fen)
        quota = call.key.key.daily_quota
        if quota is None:
            quota = 10_000  # what onebound's samples show
        doc = {
            "item": item,
            "error_code": "0000",
            "reason": "ok",
            "error": "",
            "api_info": f"today:{call.key.day.today(wall)} max:{quota}",
        }
        return doc, True

    @staticmethod
    def reseller_error(error: ResellerError) -> dict[str, Any]:
        """A reseller error body (without ``request_id`` and ``execution_time``)."""
        return {"error_code": error.error_code, "reason": error.reason, "error": error.error}
