"""``taogate keys`` and ``taogate degrade``: an operator's view and switch of a running
service, through its admin routes."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from taogate.cli._client import TokenOption, UrlOption, call, request, service_address
from taogate.cli._common import ConfigOption, console, fail, load

__all__ = ["degrade", "keys"]

_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def degrade(
    action: Annotated[str, typer.Argument(help="on | off | auto | status", show_default=False)],
    config: ConfigOption,
    until: Annotated[
        str | None,
        typer.Option(help="When the switch ends, RFC 3339 (2026-11-12T02:00:00+08:00)."),
    ] = None,
    for_: Annotated[
        str | None, typer.Option("--for", help="How long the switch holds: 30m, 2h, 1d.")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (logged, and shown in /readyz).")] = None,
    url: UrlOption = None,
    token_env: TokenOption = None,
) -> None:
    """Switch degraded mode of a running service on or off (overruling the schedule), back
    to auto (the schedule decides), or show it.

    It asks the service's admin route (PUT /v1/admin/degrade), so the switch is validated,
    logged with the client's name, and reaches every replica through Redis (without Redis,
    only the process that answered). Degraded: older cached answers, no refresh-ahead, bulk
    jobs paused, quota kept for interactive misses. See docs/degrade.md.
    """
    import time

    from taogate._degrade import format_time, parse_time

    if action not in ("on", "off", "auto", "status"):
        fail(f"unknown action {action!r}; choose on, off, auto or status")
    if until is not None and for_ is not None:
        fail("give --until or --for, not both")
    if action in ("auto", "status") and (until is not None or for_ is not None):
        fail(f"--until and --for go with on or off, not {action}")
    ends: float | None = None
    if until is not None:
        try:
            ends = parse_time(until)
        except ValueError as exc:
            fail(f"--until: {exc}")
    if for_ is not None:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", for_.strip())
        if m is None or float(m.group(1)) <= 0:
            fail(f"--for: {for_!r} is not a duration like 90s, 30m, 2h or 1d")
        ends = time.time() + float(m.group(1)) * _DURATION[m.group(2)]
    if ends is not None and ends <= time.time():
        fail(f"--until: {format_time(ends)} has passed")
    base, headers = service_address(config, url, token_env)
    if action == "status":
        doc = call("GET", f"{base}/v1/admin/degrade", headers).json()
    else:
        body: dict[str, Any] = {"mode": action}
        if ends is not None:
            body["until"] = format_time(ends)
        if reason:
            body["reason"] = reason
        doc = call("PUT", f"{base}/v1/admin/degrade", headers, json=body).json()
    state = doc["degraded"]
    detail = state["source"] or "auto, no window now"
    if state.get("by"):
        detail += f" by {state['by']}"
    if state["reason"]:
        detail += f": {state['reason']}"
    if state["until"]:
        detail += f"; until {state['until']}"
    where = "every replica" if doc["scope"] == "replicas" else "this process only (no [redis])"
    console.print(
        f"degraded mode {'on' if state['on'] else 'off'} ({detail}) — {where}", highlight=False
    )


def keys(
    config: ConfigOption,
    url: Annotated[
        str | None,
        typer.Option(help="The service's base URL (default: from server.host and port)."),
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option(help="Variable holding an admin token (default: the first admin client's)."),
    ] = None,
) -> None:
    """Show the credential pool of a running service: rate, bans, quarantine, budget, cost."""
    import os

    from rich.table import Table

    settings = load(config)
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    token = os.environ.get(token_env) if token_env else None
    if token is None:
        admin = next((c for c in settings.server.clients if c.admin), None)
        if admin is not None and admin.token is not None:
            token = admin.token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = request("GET", f"{base}/v1/admin/keys", headers, timeout=5.0)
    if resp.status != 200:
        call("GET", f"{base}/v1/admin/keys", headers)  # ends the command with the detail
    doc = resp.json()
    table = Table(title=f"credentials at {base} (breaker {doc['breaker']})")
    for column in (
        "key",
        "egress",
        "status",
        "rate/qps",
        "ban s",
        "probe s",
        "today/budget",
        "code 7",
        "invalid",
        "cost",
    ):
        table.add_column(column, no_wrap=True)
    for row in doc["credentials"]:
        budget = "" if row["daily_budget"] is None else f"/{row['daily_budget']}"
        table.add_row(
            str(row["credential"]),
            str(row.get("egress", "")),
            str(row["status"]),
            f"{row['rate']:g}/{row['configured_qps']:g}",
            f"{row['banned_for_s']:g}" if row["banned_for_s"] else "",
            "" if row["probe_in_s"] is None else f"{row['probe_in_s']:g}",
            f"{row['calls_today']}{budget}",
            str(row["rate_limited"]),
            str(row["invalid"]),
            str(row["cost"]),
        )
    wide = max(console.width, 140)  # piped, a console is 80 columns: too narrow to tell keys apart
    console.print(table, width=wide)
    egresses = Table(title="egresses (every credential on one together)")
    for column in ("egress", "via", "keys", "rate/max qps", "calls", "unreachable", "paused s"):
        egresses.add_column(column, no_wrap=True)
    for row in doc.get("egresses", []):
        egresses.add_row(
            str(row["egress"]),
            str(row["via"] or "direct"),
            str(row["credentials"]),
            f"{row['rate']:g}/{row['max_qps']:g}",
            str(row["calls"]),
            str(row["unreachable"]),
            f"{row['paused_for_s']:g}" if row["paused_for_s"] else "",
        )
    console.print(egresses, width=wide)
