"""The operator console in a real headless Chromium (Debian's, driven by Playwright).

Starts the simulator and ``taogate serve`` as a child process, signs in, watches the keys table
fill and the quota move under load, reads the shared limits (an account and the API method),
looks an id up, switches degraded mode on and back, and checks the browser logged no error.
The browser is the system's (``chromium`` on PATH; ``scripts/setup`` installs it); Playwright
downloads none. Set ``TAOGATE_SKIP_BROWSER=1`` to skip on a machine without one — CI never does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taogate._settings import SimSettings
from taogate.testing import SimKey, Simulator
from tests.conftest import free_port, start_serve

pytestmark = pytest.mark.integration

KEYS = [SimKey(app_key=f"7100000{i}", secret=f"console-secret-{i}", qps=10.0) for i in range(3)]
ADMIN = "console-admin-client-token-0001-abcdef"
SITE = "console-site-client-token-0002-abcdef"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("TAOGATE_SKIP_BROWSER") == "1":
            pytest.skip("no chromium, and TAOGATE_SKIP_BROWSER=1")
        pytest.fail("chromium is not installed (scripts/setup installs Debian's package)")
    return path


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    cfg = SimSettings(latency_ms=(20.0, 60.0), catalog_size=20_000, seed=31)
    async with Simulator(KEYS, settings=cfg, port=0) as simulator:
        yield simulator


@pytest.fixture
async def gateway(sim: Simulator, tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    creds = "".join(
        f'[[credentials]]\napp_key = "{k.app_key}"\nsecret = "{k.secret}"\nqps = {k.qps}\n'
        + ('account = "promoter-a"\n\n' if i < 2 else "\n")
        for i, k in enumerate(KEYS)
    )
    creds += '[[accounts]]\nname = "promoter-a"\nqps = 40\n\n'
    config = tmp_path / "taogate.toml"
    config.write_text(
        f'[upstream]\nurl = "{sim.url}"\n\n{creds}'
        f'[server]\nport = {port}\nlog_level = "warning"\n\n'
        f'[[server.clients]]\nname = "ops"\ntoken = "{ADMIN}"\nadmin = true\n\n'
        f'[[server.clients]]\nname = "site"\ntoken = "{SITE}"\nrate = 100000\n',
        encoding="utf-8",
    )
    proc = await start_serve(config, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=15)


async def test_sign_in_watch_the_keys_and_look_up(gateway: str, sim: Simulator) -> None:
    from playwright.async_api import async_playwright

    executable = chromium()
    errors: list[str] = []
    ids = sim.catalog.ids()[:400]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{gateway}/console")

            # a token that is not an operator's is refused on the page
            await page.fill("#token", SITE)
            await page.click("#login-form button")
            await page.wait_for_selector("#login-error:has-text('Token refused')")
            errors.clear()  # the browser logs the 403 it was given; that one was expected

            await page.fill("#token", ADMIN)
            await page.click("#login-form button")
            await page.wait_for_selector("#dashboard:not([hidden])")
            await page.wait_for_function(
                "document.querySelectorAll('#keys tbody tr').length === 3", timeout=10_000
            )
            assert ADMIN not in page.url
            stored = await page.evaluate("sessionStorage.getItem('taogate-console-token')")
            assert stored == ADMIN

            # load: the quota line and the hit ratio move within a few polls
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {SITE}"}) as client:
                for num_iid in ids[:200]:
                    await client.get(f"{gateway}/v1/items/{num_iid}")
                await asyncio.gather(*(client.get(f"{gateway}/v1/items/{i}") for i in ids[:50]))
            await page.wait_for_function(
                "!document.querySelector('#quota-text').textContent.startsWith('0.00 of')",
                timeout=10_000,
            )
            cells = await page.locator("#keys tbody tr").first.locator("td").all_inner_texts()
            assert cells[0].count("…") == 1  # a masked key
            assert cells[1:4] == ["promoter-a", "default", "active"]
            assert cells[11] == "0"  # code 11
            assert await page.is_hidden("#code11")  # the header shows code 11 only when seen
            # the limits the keys share: their account (paced) and the API method (not)
            scopes = page.locator("#scopes tbody tr")
            await page.wait_for_function(
                "document.querySelectorAll('#scopes tbody tr').length === 2", timeout=10_000
            )
            account = await scopes.nth(0).locator("td").all_inner_texts()
            assert account[:3] == ["account", "promoter-a", "2"]
            assert account[4] == "32.0 / 40"  # 40 x the safety factor
            method = await scopes.nth(1).locator("td").all_inner_texts()
            assert method[:3] == ["method", "taobao.tbk.item.info.get", "3"]
            assert method[4] == "not paced"
            await page.wait_for_function(  # calls/s over the window: every call is the method's
                "document.querySelector('#scopes tbody tr:nth-child(2) td:nth-child(4)')"
                ".textContent !== '0.00'",
                timeout=10_000,
            )
            assert "console-secret" not in await page.content()

            # look an id up: source, age and the credential that fetched it
            present = next(i for i in ids if sim.truth([i])[i] is not None)
            await page.fill("#lookup-id", present)
            await page.click("#lookup-form button")
            await page.wait_for_selector("#control-result:has-text('fetched by')")
            result = await page.inner_text("#control-result")
            assert "source l1" in result or "source upstream" in result
            assert "via default" in result

            # degraded mode: on from the page, seen in the header and in /readyz, then off
            await page.wait_for_selector("#degrade-control:not([hidden])")
            assert await page.is_hidden("#degraded")
            await page.click("#degrade-on")
            await page.wait_for_selector("#degraded:not([hidden])", timeout=10_000)
            assert "manual" in await page.inner_text("#degraded")
            async with httpx.AsyncClient() as client:
                ready = (await client.get(f"{gateway}/readyz")).json()
            assert ready["degraded"]["on"] is True
            await page.click("#degrade-auto")
            await page.wait_for_selector("#degraded[hidden]", state="attached", timeout=10_000)
            async with httpx.AsyncClient() as client:
                ready = (await client.get(f"{gateway}/readyz")).json()
            assert ready["degraded"]["on"] is False

            await page.click("#logout")
            await page.wait_for_selector("#login:not([hidden])")
            assert await page.evaluate("sessionStorage.getItem('taogate-console-token')") is None
        finally:
            await browser.close()
    assert errors == []
