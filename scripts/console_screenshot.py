"""A screenshot of the operator console under the demo's kind of load, for the docs.

Starts the simulator (3 keys × 10 calls/s, 200–500 ms) and ``taogate serve`` in front of it,
sends open-loop Zipf lookups for ``--seconds`` (with a short simulator outage in the middle, so
stale answers and the breaker show), then opens ``/console`` in Debian's headless Chromium,
signs in and writes ``docs/console.png``.

    .venv/bin/python scripts/console_screenshot.py [--seconds 40] [--rate 300]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import time
from pathlib import Path

import aiohttp
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from taogate.bench._harness import GatewayProcess, SimProcess, SimSpec
from taogate.bench._zipf import ZipfIds

TOKEN = "console-screenshot-admin-token-0001-abc"
OUT = Path(__file__).resolve().parent.parent / "docs" / "console.png"


async def load(gw: GatewayProcess, ids: list[str], rate: float, seconds: float) -> None:
    zipf = ZipfIds(ids, 1.1, random.Random(3))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(num_iid: str) -> None:
            async with session.get(f"{gw.base_url}/v1/items/{num_iid}") as r:
                await r.read()

        start = time.monotonic()
        n = 0
        with Progress(TextColumn("load"), BarColumn(), TimeElapsedColumn()) as bar:
            task = bar.add_task("", total=seconds)
            while (now := time.monotonic()) < start + seconds:
                due = start + n / rate
                if due > now:
                    await asyncio.sleep(due - now)
                if len(tasks) < 2000:
                    t = asyncio.create_task(one(zipf.draw()))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                n += 1
                if n % 100 == 0:
                    bar.update(task, completed=time.monotonic() - start)
        if tasks:
            await asyncio.wait(tasks, timeout=10)


async def screenshot(gw: GatewayProcess) -> None:
    from playwright.async_api import async_playwright

    executable = shutil.which("chromium")
    if executable is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 1100})
        await page.goto(f"{gw.base_url}/console")
        await page.fill("#token", TOKEN)
        await page.click("#login-form button")
        await page.wait_for_function("document.querySelectorAll('#keys tbody tr').length > 0")
        await asyncio.sleep(2.5)  # a few polls: rates over the last seconds
        await page.screenshot(path=str(OUT), full_page=True)
        await browser.close()


async def main(seconds: float, rate: float) -> None:
    spec = SimSpec(keys=3, qps=10.0, catalog_size=100_000)
    async with SimProcess(spec) as sim:
        ids = await sim.catalog(100_000)
        async with GatewayProcess(sim, token=TOKEN, admin=True) as gw:

            async def outage() -> None:
                await asyncio.sleep(seconds * 0.5)
                await sim.fault("outage", 4.0)

            loader = asyncio.create_task(load(gw, ids, rate, seconds))
            await outage()
            # the screenshot is taken while the load still runs
            await asyncio.sleep(max(0.0, seconds * 0.5 - 6.0))
            await screenshot(gw)
            await loader
    print(f"wrote {OUT}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rate", type=float, default=300.0, help="lookups per second")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rate))
