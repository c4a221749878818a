"""``/healthz`` latency while large job bodies upload to one ``taogate serve``.

Starts a redis-server of its own, the simulator (one key) and one ``taogate serve``. A probe
sends ``GET /healthz`` open loop every ``--interval-ms``, its latency counted from its scheduled
start (no coordinated omission), through four phases; each body is sent by a child process, so
that sending it costs the probe's event loop nothing:

* ``idle``: nothing else (the baseline);
* ``text_20mb``: a 20,000,000-byte text body of 952,380 distinct 20-character ids, one a line,
  uploaded, parsed and queued as a job (then cancelled);
* ``json_max``: a JSON body of ``[jobs] max_json_ids`` (100,000) ids, parsed in a thread;
* ``json_21_6mb``: a 21.6 MB JSON body, refused with 413 before it is read.

The issue's target: ``/healthz`` p99 under 100 ms while a 20 MB job body uploads. The
gateway's peak resident memory is recorded too. Writes bench/results/job_upload.json and .png.

    .venv/bin/python bench/job_upload.py [--interval-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_and_report
from taogate.bench import Check, GatewayProcess, LatencyLog, SimProcess, SimSpec
from taogate.testing import RedisServer

TOKEN = "bench-job-upload-token-000000000001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDLE_S = 3.0
TARGET_P99_MS = 100.0
#: the uploader child: reads the body, says "sending", posts it, prints the status and answer
UPLOADER = """
import sys, httpx
url, path, kind, token = sys.argv[1:5]
body = open(path, "rb").read()
with httpx.Client(timeout=120) as client:
    print("sending", flush=True)
    resp = client.post(url, content=body,
                       headers={"content-type": kind, "authorization": "Bearer " + token})
print(resp.status_code, flush=True)
print(resp.text, flush=True)
"""


def text_body() -> tuple[bytes, int]:
    """20,000,000 bytes: distinct 20-character ids, one a line."""
    n = 20_000_000 // 21
    return b"".join(b"%020d\n" % (10**19 + i) for i in range(n)), n


def json_body(ids: int, start: int) -> bytes:
    return orjson.dumps({"ids": [str(start + i) for i in range(ids)]})


def peak_rss_mb(pid: int) -> float | None:
    """The high-water mark of a process's resident memory (Linux /proc), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Probe:
    """``GET /healthz`` every ``interval`` seconds, open loop, until stopped."""

    def __init__(self, session: aiohttp.ClientSession, url: str, interval: float) -> None:
        self.session = session
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, latency s)
        self.errors = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, due: float, start: float) -> None:
        try:
            async with self.session.get(self.url) as resp:
                await resp.read()
                ok = resp.status == 200
        except aiohttp.ClientError:
            ok = False
        now = time.perf_counter()
        if ok:
            self.samples.append((due - start, now - due))
        else:
            self.errors += 1

    async def run(self, start: float, stop: asyncio.Event, limit: int = 60_000) -> None:
        n = 0
        while not stop.is_set() and n < limit:  # bounded in count, and by the phases' end
            due = start + n * self.interval
            delay = due - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            task = asyncio.get_running_loop().create_task(self._one(due, start))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            n += 1
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)


async def upload(url: str, body: Path, kind: str) -> tuple[float, int, dict[str, Any]]:
    """Post ``body`` from a child process: when sending began, the status and the answer."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        UPLOADER,
        f"{url}/v1/jobs",
        str(body),
        kind,
        TOKEN,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"sending", line
    began = time.perf_counter()
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    status, _, text = out.partition(b"\n")
    return began, int(status), orjson.loads(text)


async def measure(gw: GatewayProcess, interval: float, tmp: Path) -> dict[str, Any]:
    text, n_text = text_body()
    json_big = json_body(1_000_000, 4 * 10**12)
    bodies = {
        "text_20mb": text,
        "json_max": json_body(100_000, 3 * 10**12),
        "json_21_6mb": json_big + b" " * max(0, 21_600_000 - len(json_big)),  # the issue's
    }
    files = {}
    for name, content in bodies.items():
        files[name] = tmp / f"{name}.body"
        files[name].write_bytes(content)
    url = gw.base_url
    phases: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as probe_session,
        aiohttp.ClientSession(timeout=timeout) as uploader,
    ):
        probe = Probe(probe_session, f"{url}/healthz", interval)
        stop = asyncio.Event()
        start = time.perf_counter()
        prober = asyncio.get_running_loop().create_task(probe.run(start, stop))

        async def phase(name: str, kind: str) -> None:
            began = time.perf_counter() - start
            status: int | None = None
            answer: dict[str, Any] = {}
            if name == "idle":
                await asyncio.sleep(IDLE_S)
            else:
                sending, status, answer = await upload(url, files[name], kind)
                began = sending - start
            ended = time.perf_counter() - start
            if status == 202:
                await uploader.delete(f"{url}/v1/jobs/{answer['job']}", headers=AUTH)
            await asyncio.sleep(0.3)  # a gap between phases
            phases.append(
                {
                    "name": name,
                    "start_s": round(began, 3),
                    "end_s": round(ended, 3),
                    "body_bytes": len(bodies[name]) if name in bodies else None,
                    "status": status,
                    "ids": answer.get("total"),
                    "detail": answer.get("detail"),
                }
            )

        await phase("idle", "")
        await phase("text_20mb", "text/plain")
        await phase("json_max", "application/json")
        await phase("json_21_6mb", "application/json")
        stop.set()
        await prober
    for p in phases:
        log = LatencyLog()
        log.extend(lat for t, lat in probe.samples if p["start_s"] <= t <= p["end_s"])
        p["healthz"] = log.summary_ms()
        p["seconds"] = round(p["end_s"] - p["start_s"], 3)
    by_name = {p["name"]: p for p in phases}
    text_p99 = by_name["text_20mb"]["healthz"]["p99_ms"]
    checks = [
        Check(
            "/healthz p99 while a 20 MB job body uploads",
            f"< {TARGET_P99_MS:g} ms",
            f"{text_p99} ms",
            text_p99 is not None and text_p99 < TARGET_P99_MS,
        ),
        Check(
            "the 20 MB body becomes one job of every id",
            f"202, {n_text} ids",
            f"{by_name['text_20mb']['status']}, {by_name['text_20mb']['ids']} ids",
            by_name["text_20mb"]["status"] == 202 and by_name["text_20mb"]["ids"] == n_text,
        ),
        Check(
            "a 21.6 MB JSON body is refused",
            "413",
            by_name["json_21_6mb"]["status"],
            by_name["json_21_6mb"]["status"] == 413,
        ),
    ]
    return {
        "interval_ms": interval * 1000,
        "phases": phases,
        "probe_errors": probe.errors,
        "samples": [[round(t, 4), round(lat * 1000, 3)] for t, lat in probe.samples],
        "checks": [c.as_dict() for c in checks],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taogate-upload-"))
    redis = RedisServer(tmp)
    redis.start()
    spec = SimSpec(keys=1, qps=50.0, latency_ms=(5.0, 20.0), catalog_size=1_000)
    try:
        async with (
            SimProcess(spec) as sim,
            GatewayProcess(
                sim,
                token=TOKEN,
                redis_url=redis.url,
                redis_prefix="up" + os.urandom(3).hex(),
                log=tmp / "gateway.log",
            ) as gw,
        ):
            result = await measure(gw, args.interval_ms / 1000, tmp)
            proc = gw._proc
            result["gateway_peak_rss_mb"] = None if proc is None else peak_rss_mb(proc.pid)
            return result
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the bodies: 60 MB


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    t = [s[0] for s in result["samples"]]
    lat = [s[1] for s in result["samples"]]
    ax.scatter(t, lat, s=4, color="tab:blue", label="/healthz latency")
    colors = {"text_20mb": "tab:orange", "json_max": "tab:green", "json_21_6mb": "tab:red"}
    for p in result["phases"]:
        if p["name"] in colors:
            ax.axvspan(
                p["start_s"],
                p["end_s"],
                alpha=0.15,
                color=colors[p["name"]],
                label=f"{p['name']}: {p['status']}, p99 {p['healthz']['p99_ms']} ms",
            )
    ax.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1, label="100 ms")
    ax.set_xlabel("seconds")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_title("/healthz while job bodies upload (one taogate serve)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-ms", type=float, default=10.0)
    args = parser.parse_args()
    run_and_report("job_upload.py", "job_upload", lambda: asyncio.run(run(args)), plot)


if __name__ == "__main__":
    main()
