"""The reference for bench/http_hit.py: a bare Starlette JSON endpoint, nothing else.

It answers ``GET /v1/items/{num_iid}`` with a fixed item of the same shape and size as the
gateway's L1 answer, as a plain ``JSONResponse``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ANSWER = {
    "item": {
        "num_iid": "520000000001",
        "title": "春季新款纯棉宽松休闲长裤男女同款",
        "shop": "某某旗舰店",
        "reserve_price": "102.00",
        "zk_final_price": "78.90",
        "final_price": "68.90",
        "final_price_basis": "coupon",
        "coupon_amount": "10",
        "coupon_start_fee": "59",
        "pict_url": "https://img.alicdn.com/i1/520000000001.jpg",
        "item_url": "https://item.taobao.com/item.htm?id=520000000001",
        "seller_id": "2200000001",
        "user_type": 1,
        "volume": 1503,
    },
    "source": "l1",
    "stale": False,
    "age_s": 1.234,
}


async def item(request: Request) -> JSONResponse:
    return JSONResponse(ANSWER)


app = Starlette(routes=[Route("/v1/items/{num_iid}", item)])
