"""The HTTP hit path against a bare Starlette JSON endpoint, and the cold-miss latency.

Same run, same load generator (wrk, pinned to its own core), one uvicorn worker each (pinned to
the other core): ``GET /v1/items/{id}`` served from L1 by ``taogate serve`` versus a bare
Starlette endpoint returning a JSON item of the same size (bench/bare_app.py). Then, under light
load, cold misses one at a time through HTTP against an upstream with a fixed 300 ms latency.
Writes bench/results/http_hit.json and .png.

    apt-get install wrk                      # once
    .venv/bin/python bench/http_hit.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, free_port, machine, write_json
from taogate.bench import LatencyLog, SimProcess, SimSpec

TOKEN = "bench-http-hit-client-token-0001-abcdef"
BIN = Path(sys.executable).parent
WRK_SCRIPT = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/items/" .. ids[(n %% #ids) + 1],
                    {["Authorization"] = "Bearer %s"})
end
"""


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """``argv`` pinned to one core where taskset exists (steadier figures on 2 cores)."""
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else argv


def wrk(url: str, script: Path, seconds: float, connections: int) -> dict[str, float]:
    out = subprocess.run(
        pinned(
            1,
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests_per_s": rps,
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else -1.0,
    }


async def wait_http(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start(argv: list[str], cpu: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(pinned(cpu, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run(seconds: float, rounds: int, connections: int) -> dict[str, Any]:
    spec = SimSpec(keys=3, latency_ms=(300.0, 300.0), catalog_size=20_000)
    tmp = Path(tempfile.mkdtemp(prefix="taogate-http-bench-"))
    async with SimProcess(spec) as sim:
        ids = await sim.catalog(2_000)
        truth = await sim.truth(ids)
        present = [i for i in ids if truth[i] is not None]
        hot, cold = present[:1000], present[1000:1100]
        gw_port, bare_port = free_port(), free_port()
        config = tmp / "taogate.toml"
        creds = "\n".join(
            f'[[credentials]]\napp_key = "{k}"\nsecret = "{s}"\nqps = 10\n'
            for k, s in spec.app_keys()
        )
        config.write_text(
            f'[upstream]\nurl = "{sim.url}"\n\n{creds}\n[limits]\nsafety_factor = 0.9\n\n'
            f'[server]\nport = {gw_port}\nlog_level = "warning"\nmax_in_flight = 100000\n\n'
            f'[[server.clients]]\nname = "bench"\ntoken = "{TOKEN}"\nrate = 10000000\n',
            encoding="utf-8",
        )
        gateway = start([str(BIN / "taogate"), "serve", "--config", str(config)], cpu=0)
        bare = start(
            [
                str(BIN / "uvicorn"),
                "bare_app:app",
                "--app-dir",
                str(Path(__file__).parent),
                "--port",
                str(bare_port),
                "--http",
                "httptools",
                "--loop",
                "uvloop",
                "--no-access-log",
                "--log-level",
                "warning",
                "--no-server-header",
            ],
            cpu=0,
        )
        try:
            await wait_http(f"http://127.0.0.1:{gw_port}/healthz")
            await wait_http(f"http://127.0.0.1:{bare_port}/v1/items/1")
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=auth) as session:
                async with session.post(
                    f"http://127.0.0.1:{gw_port}/v1/items:batch", json={"ids": hot}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                # cold misses, one at a time: light load
                cold_latency = LatencyLog()
                for num_iid in cold[:40]:
                    t0 = time.perf_counter()
                    async with session.get(f"http://127.0.0.1:{gw_port}/v1/items/{num_iid}") as r:
                        await r.read()
                        assert r.status == 200
                    cold_latency.add(time.perf_counter() - t0)
            ids_file = tmp / "ids.txt"
            ids_file.write_text("\n".join(hot) + "\n", encoding="utf-8")
            script = tmp / "hit.lua"
            script.write_text(WRK_SCRIPT % (ids_file, TOKEN), encoding="utf-8")
            wrk(f"http://127.0.0.1:{gw_port}", script, 2, connections)  # warm-up
            wrk(f"http://127.0.0.1:{bare_port}", script, 2, connections)
            gw_runs, bare_runs = [], []
            for _ in range(rounds):  # interleaved, so drift hits both alike
                gw_runs.append(wrk(f"http://127.0.0.1:{gw_port}", script, seconds, connections))
                bare_runs.append(wrk(f"http://127.0.0.1:{bare_port}", script, seconds, connections))
        finally:
            stop(gateway)
            stop(bare)
    shutil.rmtree(tmp, ignore_errors=True)
    gw_rps = sum(r["requests_per_s"] for r in gw_runs) / rounds
    bare_rps = sum(r["requests_per_s"] for r in bare_runs) / rounds
    cold_p50 = cold_latency.percentile(50) or 0.0
    return {
        "seconds": seconds,
        "rounds": rounds,
        "connections": connections,
        "taogate_l1_hit": gw_runs,
        "bare_starlette": bare_runs,
        "taogate_rps": round(gw_rps, 1),
        "bare_rps": round(bare_rps, 1),
        "ratio": round(gw_rps / bare_rps, 3),
        "cold_miss": {"upstream_latency_ms": 300.0, **cold_latency.summary_ms()},
        "cold_miss_overhead_p50_ms": round(cold_p50 * 1000 - 300.0, 2),
        "checks": [
            {
                "name": "L1 hit requests/s vs bare Starlette JSON",
                "target": ">= 70 %",
                "measured": f"{gw_rps / bare_rps:.1%}",
                "passed": gw_rps / bare_rps >= 0.70,
            },
            {
                "name": "cold-miss p50 through HTTP",
                "target": "<= RTT (300 ms) + 15 ms",
                "measured": round(cold_p50 * 1000, 1),
                "passed": cold_p50 * 1000 <= 315.0,
            },
        ],
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(
        ["bare Starlette JSON", "taogate L1 hit"],
        [result["bare_rps"], result["taogate_rps"]],
        color=["grey", "tab:blue"],
    )
    a.set_ylabel(f"requests/s (one worker, wrk -c{result['connections']})")
    a.set_title(f"hit path: {result['ratio']:.0%} of bare Starlette")
    cm = result["cold_miss"]
    b.bar(
        ["upstream RTT", "p50", "p90", "max"],
        [300.0, cm["p50_ms"], cm["p90_ms"], cm["max_ms"]],
        color=["grey", "tab:green", "tab:green", "tab:green"],
    )
    b.axhline(315.0, color="red", linestyle="--", label="RTT + 15 ms")
    b.set_ylabel("ms")
    b.set_title("cold miss through HTTP, light load")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    result = asyncio.run(run(args.seconds, args.rounds, args.connections))
    result["machine"] = machine()
    result["command"] = (
        f"python bench/http_hit.py --seconds {args.seconds:g} "
        f"--rounds {args.rounds} --connections {args.connections}"
    )
    write_json("http_hit", result)
    plot(result, RESULTS / "http_hit.png")
    for check in result["checks"]:
        print(
            f"{check['name']}: {check['measured']} (target {check['target']}) "
            f"{'met' if check['passed'] else 'NOT met'}"
        )
    print(
        f"taogate {result['taogate_rps']:,} req/s vs bare {result['bare_rps']:,} req/s; "
        f"wrote {RESULTS / 'http_hit.json'} and .png"
    )


if __name__ == "__main__":
    main()
