"""LRU versus W-TinyLFU (theine) for the L1 tier, on Zipf traces of item lookups.

Replays the same trace through an ``OrderedDict`` LRU and through theine's W-TinyLFU at several
capacities and reports hit ratios and nanoseconds per lookup. The decision it informs is
recorded in docs/decisions/006-l1-eviction.md. Writes bench/results/l1_eviction.json and .png.

    .venv/bin/pip install theine   # only this script needs it
    .venv/bin/python bench/l1_eviction.py
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, write_json

UNIVERSE = 100_000
LOOKUPS = 400_000


def zipf_trace(s: float, n: int, universe: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, universe + 1, dtype=np.float64)
    weights = ranks**-s
    weights /= weights.sum()
    perm = rng.permutation(universe)  # popular ids are scattered, not the smallest numbers
    return [int(perm[i]) for i in rng.choice(universe, size=n, p=weights)]


def lru(trace: list[int], capacity: int) -> tuple[float, float]:
    cache: OrderedDict[int, int] = OrderedDict()
    hits = 0
    start = time.perf_counter()
    for key in trace:
        if key in cache:
            cache.move_to_end(key)
            hits += 1
        else:
            cache[key] = key
            if len(cache) > capacity:
                cache.popitem(last=False)
    elapsed = time.perf_counter() - start
    return hits / len(trace), elapsed / len(trace) * 1e9


def tinylfu(trace: list[int], capacity: int) -> tuple[float, float]:
    from theine import Cache

    cache = Cache("tlfu", capacity)
    missing = object()
    hits = 0
    start = time.perf_counter()
    for key in trace:
        if cache.get(key, missing) is not missing:
            hits += 1
        else:
            cache.set(key, key)
    elapsed = time.perf_counter() - start
    return hits / len(trace), elapsed / len(trace) * 1e9


def main() -> None:
    rows = []
    for s in (0.8, 1.1):
        trace = zipf_trace(s, LOOKUPS, UNIVERSE, seed=5)
        for capacity in (1_000, 5_000, 20_000):
            lru_hit, lru_ns = lru(trace, capacity)
            lfu_hit, lfu_ns = tinylfu(trace, capacity)
            row = {
                "zipf_s": s,
                "capacity": capacity,
                "lru_hit_ratio": round(lru_hit, 4),
                "tinylfu_hit_ratio": round(lfu_hit, 4),
                "lru_ns_per_lookup": round(lru_ns),
                "tinylfu_ns_per_lookup": round(lfu_ns),
            }
            rows.append(row)
            print(row, flush=True)
    write_json(
        "l1_eviction",
        {
            "universe": UNIVERSE,
            "lookups": LOOKUPS,
            "rows": rows,
            "machine": machine(),
            "command": "python bench/l1_eviction.py",
        },
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for s in (0.8, 1.1):
        sel = [r for r in rows if r["zipf_s"] == s]
        caps = [r["capacity"] for r in sel]
        ax.plot(caps, [r["lru_hit_ratio"] for r in sel], marker="o", label=f"LRU, Zipf {s}")
        ax.plot(
            caps, [r["tinylfu_hit_ratio"] for r in sel], marker="s", label=f"W-TinyLFU, Zipf {s}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("L1 capacity (entries) for 100,000 ids")
    ax.set_ylabel("hit ratio")
    ax.set_title("L1 eviction: LRU vs W-TinyLFU (theine)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "l1_eviction.png", dpi=100)
    print(f"wrote {RESULTS / 'l1_eviction.json'} and .png")


if __name__ == "__main__":
    main()
