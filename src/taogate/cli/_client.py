"""How the commands that manage a running service (``jobs``, ``keys``, ``degrade``) reach it:
its address and token from the config, and one request at a time with aiohttp."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from taogate.cli._common import fail, load

__all__ = ["Reply", "TokenOption", "UrlOption", "call", "request", "service_address"]

UrlOption = Annotated[
    str | None, typer.Option(help="The service's base URL (default: from server.host and port).")
]
TokenOption = Annotated[
    str | None, typer.Option(help="Variable holding a client token (default: from the config).")
]


def service_address(
    config: Path, url: str | None, token_env: str | None
) -> tuple[str, dict[str, str]]:
    """The base URL of the service ``config`` describes and an admin (or first) token."""
    import os

    settings = load(config)
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    token = os.environ.get(token_env) if token_env else None
    if token is None and settings.server.clients:
        chosen = next((c for c in settings.server.clients if c.admin), settings.server.clients[0])
        token = chosen.token.get_secret_value() if chosen.token is not None else None
    return base, ({"Authorization": f"Bearer {token}"} if token else {})


@dataclass(frozen=True)
class Reply:
    """A finished HTTP answer from a running service, read whole."""

    status: int
    reason: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def request(method: str, url: str, headers: dict[str, str], *, timeout: float, **kw: Any) -> Reply:
    """One request with aiohttp (a runtime dependency, so the admin commands work in a plain
    install); redirects are not followed, so a token is never sent anywhere else."""
    import aiohttp

    async def go() -> Reply:
        limit = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=limit) as session,
            session.request(method, url, headers=headers, allow_redirects=False, **kw) as resp,
        ):
            return Reply(resp.status, resp.reason or "", await resp.read())

    try:
        return asyncio.run(go())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        fail(f"cannot reach {url}: {type(exc).__name__}", code=1)


def call(method: str, url: str, headers: dict[str, str], **kw: Any) -> Reply:
    """``request`` that ends the command with the service's problem detail on a 4xx/5xx."""
    resp = request(method, url, headers, timeout=60.0, **kw)
    if resp.status >= 400:
        detail: Any = resp.reason
        if resp.content:
            try:
                doc = resp.json()
                detail = doc.get("detail", resp.text) if isinstance(doc, dict) else resp.text
            except ValueError:
                detail = resp.text[:200]
        fail(f"{url} answered {resp.status}: {detail}", code=1)
    return resp
