"""What the edge-caching headers cost on the L1 hit path, measured in-process.

The same app is built twice — ``[server.edge_cache] enabled`` true and false — over a fake
provider, its L1 warmed with 1,000 realistic items; then ``GET /v1/items/{id}`` is driven
straight through the ASGI app (no sockets, so the figure is the Python cost alone), the
variants interleaved round by round: without the headers, with them (200), and a matching
``If-None-Match`` (304). Writes bench/results/item_headers.json and .png.

    .venv/bin/python bench/item_headers.py [--requests 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, write_json
from taogate import FinalPriceBasis, Item, Settings
from taogate.http import create_app
from taogate.testing import FakeProvider

TOKEN = "bench-item-headers-client-token-0001-abc"


def item(num_iid: str) -> Item:
    """An item the size of a real ``item.info.get`` answer (about 500 bytes of JSON)."""
    return Item(
        num_iid=num_iid,
        title=f"2026新款夏季透气运动鞋男士休闲跑步鞋 款式 {num_iid}",
        shop="某某旗舰店",
        reserve_price=Decimal("199.00"),
        zk_final_price=Decimal("89.90"),
        final_price=Decimal("79.90"),
        final_price_basis=FinalPriceBasis.COUPON,
        coupon_amount=Decimal("10"),
        coupon_start_fee=Decimal("89"),
        pict_url=f"https://img.alicdn.com/bao/uploaded/i4/{num_iid}/O1CN01abcdef.jpg",
        item_url=f"https://item.taobao.com/item.htm?id={num_iid}",
        seller_id="2200000000001",
        user_type=1,
        volume=12345,
    )


def build(ids: list[str], enabled: bool) -> Any:
    settings = Settings(
        credentials=[{"app_key": "12345678", "secret": "bench-secret", "qps": 1000}],
        server={
            "clients": [{"name": "bench", "token": TOKEN, "rate": 1e9}],
            "max_in_flight": 1_000_000,
            "edge_cache": {"enabled": enabled},
        },
    )
    return create_app(settings, provider=FakeProvider(items={i: item(i) for i in ids}))


async def drive(
    app: Any,
    ids: list[str],
    n: int,
    etags: dict[str, bytes] | None,
    seen: dict[str, bytes] | None = None,
) -> float:
    """Seconds per request over ``n`` requests cycling through ``ids`` (each answer's ETag
    into ``seen`` if given)."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
            if seen is not None:  # requests run one at a time, in the order of ids
                seen[ids[(len(statuses) - 1) % len(ids)]] = dict(message["headers"])[b"etag"]

    base = [(b"authorization", f"Bearer {TOKEN}".encode()), (b"host", b"bench")]
    scopes = []
    for num_iid in ids:
        headers = base if etags is None else [*base, (b"if-none-match", etags[num_iid])]
        scopes.append(
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": f"/v1/items/{num_iid}",
                "raw_path": f"/v1/items/{num_iid}".encode(),
                "query_string": b"",
                "root_path": "",
                "headers": headers,
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
        )
    started = time.perf_counter()
    for i in range(n):
        await app(dict(scopes[i % len(scopes)]), receive, send)
    elapsed = time.perf_counter() - started
    expected = 200 if etags is None else 304
    assert statuses.count(expected) == n, {s: statuses.count(s) for s in set(statuses)}
    return elapsed / n


async def run(requests: int, rounds: int) -> dict[str, Any]:
    ids = [str(520_000_000_000 + i) for i in range(1000)]
    off, on = build(ids, enabled=False), build(ids, enabled=True)
    results: dict[str, list[float]] = {"headers_off": [], "headers_on": [], "not_modified": []}
    async with off.router.lifespan_context(off), on.router.lifespan_context(on):
        for app in (off, on):
            await app.state.gateway.get_many(ids)  # warm L1
        etags: dict[str, bytes] = {}
        await drive(on, ids, len(ids), None, seen=etags)  # each item's ETag, as the app gives it
        for _ in range(rounds):
            results["headers_off"].append(await drive(off, ids, requests, None))
            results["headers_on"].append(await drive(on, ids, requests, None))
            results["not_modified"].append(await drive(on, ids, requests, etags))
    us = {k: round(statistics.median(v) * 1e6, 2) for k, v in results.items()}
    return {
        "requests_per_round": requests,
        "rounds": rounds,
        "median_us_per_request": us,
        "headers_cost_us": round(us["headers_on"] - us["headers_off"], 2),
        "all_rounds_us": {k: [round(x * 1e6, 2) for x in v] for k, v in results.items()},
        "machine": machine(),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = result["all_rounds_us"]
    labels = {
        "headers_off": "200, headers off",
        "headers_on": "200, headers on",
        "not_modified": "304",
    }
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.boxplot([rounds[k] for k in labels], tick_labels=list(labels.values()))
    ax.set_ylabel("µs per request (in-process, no sockets)")
    ax.set_title(f"L1 hit path: the caching headers cost {result['headers_cost_us']} µs")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    result = asyncio.run(run(args.requests, args.rounds))
    print(result["median_us_per_request"], "headers cost:", result["headers_cost_us"], "µs")
    result["command"] = (
        f"python bench/item_headers.py --requests {args.requests} --rounds {args.rounds}"
    )
    print("wrote", write_json("item_headers", result))
    plot(result, RESULTS / "item_headers.png")


if __name__ == "__main__":
    main()
