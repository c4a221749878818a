"""The benchmark report: one JSON file and one PNG with a panel per scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["plot", "write_json"]


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def plot(path: Path, results: dict[str, Any]) -> None:
    """Draw what each scenario that ran shows; needs matplotlib (the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [n for n in ("cold_flood", "hot_zipf", "outage", "duplicate_burst") if n in results]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    for ax, name in zip(axes[:, 0], panels, strict=True):
        r = results[name]
        if name == "cold_flood":
            for key, series in r["taogate"]["calls_per_s_per_key"].items():
                ax.plot(range(1, len(series) + 1), series, label=f"key {key[:3]}…{key[-3:]}")
            ax.axhline(r["qps"], color="red", linestyle="--", label="platform limit")
            ax.axhline(
                r["qps"] * r["safety_factor"], color="grey", linestyle=":", label="pool rate"
            )
            ax.set_ylim(0, r["qps"] * 1.3)
            ax.set_ylabel("ok calls/s")
            ax.set_title(
                f"cold flood: {r['taogate']['fresh_lookups_per_s']:g} fresh lookups/s "
                f"({r['taogate']['items_per_call']:g} ids/call) vs naive "
                f"{r['naive']['fresh_lookups_per_s']:g}/s; code 7 = {r['taogate']['code7']}"
            )
        elif name in ("hot_zipf", "outage"):
            secs = r["per_second"]
            xs = range(len(secs))
            for field, color in (
                ("hits", "tab:green"),
                ("upstream", "tab:blue"),
                ("stale", "tab:orange"),
                ("errors", "tab:red"),
            ):
                ax.plot(xs, [s[field] for s in secs], label=field, color=color)
            if name == "outage":
                o = r["outage"]
                ax.axvspan(
                    o["start_s"],
                    o["start_s"] + o["length_s"],
                    color="red",
                    alpha=0.1,
                    label="simulator outage",
                )
            ax.set_ylabel("answers/s")
            ax.set_title(
                f"{name}: hit ratio {r['hit_ratio']:.1%}, p50 {r['latency']['p50_ms']} ms, "
                f"p99 {r['latency']['p99_ms']} ms, upstream {r['upstream_calls_per_s']:g} calls/s"
            )
        else:
            ax.bar(
                ["RTT", "burst p50", "burst max"],
                [r["rtt_ms"], r["latency"]["p50_ms"], r["latency"]["max_ms"]],
            )
            ax.set_ylabel("ms")
            ax.set_title(
                f"duplicate burst: {r['callers']} lookups → {r['upstream_ids']} upstream id"
            )
        if name != "duplicate_burst":
            ax.legend(loc="upper right", fontsize="small")
            ax.set_xlabel("second of the run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
