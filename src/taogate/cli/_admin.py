"""``taogate keys`` and ``taogate degrade``: an operator's view and switch of a running
service, through its admin routes."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from taogate.cli._client import TokenOption, UrlOption, call, request, service_address
from taogate.cli._common import ConfigOption, console, fail, load

__all__ = ["degrade", "keys", "pool_view"]

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
    """Show the credential pool of a running service: each key's status, rate, bans,
    quarantine, day and cost; the egresses; the limits keys share (accounts, the API method)."""
    import os

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
    wide = max(console.width, 140)  # piped, a console is 80 columns: too narrow to tell keys apart
    for part in pool_view(resp.json(), base):
        console.print(part, width=wide, highlight=False)


#: how a status stands out on a terminal (a pipe gets the plain word)
_STATUS_STYLE = {
    "active": "green",
    "probing": "yellow",
    "banned": "bold red",
    "quarantined": "bold red",
    "exhausted": "bold red",
    "not-whitelisted": "bold red",
}


def _duration(seconds: float) -> str:
    """``7h 32m``, ``12m 05s``, ``45s``: a wait of hours, read at a glance."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def _seconds(value: float | None) -> str:
    return f"{value:g}" if value else ""


def pool_view(doc: dict[str, Any], base: str) -> list[Any]:
    """What ``taogate keys`` prints of a ``/v1/admin/keys`` answer: the credentials (and a
    line for each key whose IP whitelist refuses an egress, or that the API method banned),
    the egresses, and the limits keys share. Fields an older service does not send are
    left blank, and its tables left out."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def table(title: str, *columns: str) -> Table:
        out = Table(
            title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
        )
        for column in columns:
            # names an operator chose may wrap; numbers, keys and statuses never do
            out.add_column(column, no_wrap=column not in ("account", "egress", "name", "via"))
        return out

    parts: list[Any] = []
    credentials = table(
        f"credentials at {base} (breaker {doc['breaker']})",
        "key",
        "account",
        "egress",
        "status",
        "rate/qps",
        "ban s",
        "probe s",
        "day resets in",
        "today/budget",
        "code 7",
        "code 11",
        "invalid",
        "cost",
    )
    notes: list[str] = []
    for row in doc["credentials"]:
        key, status = str(row["credential"]), str(row["status"])
        budget = "" if row["daily_budget"] is None else f"/{row['daily_budget']}"
        day = row.get("exhausted_for_s")
        credentials.add_row(
            key,
            str(row.get("account") or ""),
            str(row.get("egress", "")),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            f"{row['rate']:g}/{row['configured_qps']:g}",
            _seconds(row["banned_for_s"]),
            "" if row["probe_in_s"] is None else f"{row['probe_in_s']:g}",
            "" if day is None else _duration(day),
            f"{row['calls_today']}{budget}",
            str(row["rate_limited"]),
            str(row.get("ip_refused", "")),
            str(row["invalid"]),
            str(row["cost"]),
        )
        refused = row.get("refused_egresses") or []
        if refused:
            which = "its address" if len(refused) == 1 else "their addresses"
            notes.append(
                f"{key}: its IP whitelist refuses egress {', '.join(refused)} (code 11); add "
                f"{which} to the app's whitelist on the platform"
            )
        if row.get("method_limited"):
            n = row["method_limited"]
            times = "once" if n == 1 else f"{n} times"
            notes.append(f"{key}: the platform banned its calls of the API method {times}")
    parts.append(credentials)
    parts.extend(Text(note) for note in notes)
    parts.append(Text(""))
    egresses = table(
        "egresses (every credential on one together)",
        "egress",
        "via",
        "keys",
        "rate/max qps",
        "calls",
        "unreachable",
        "paused s",
    )
    for row in doc.get("egresses", []):
        egresses.add_row(
            str(row["egress"]),
            str(row["via"] or "direct"),
            str(row["credentials"]),
            f"{row['rate']:g}/{row['max_qps']:g}",
            str(row["calls"]),
            str(row["unreachable"]),
            _seconds(row["paused_for_s"]),
        )
    parts.append(egresses)
    scopes = doc.get("scopes")
    if scopes:  # a service older than limit scopes sends none
        shared = table(
            "limits shared by keys (accounts, the API method)",
            "kind",
            "name",
            "keys",
            "rate/qps",
            "calls",
            "limited",
            "paused s",
        )
        for row in scopes:
            qps, rate = row.get("qps"), row.get("rate")
            shared.add_row(
                str(row["kind"]),
                str(row["name"]),
                str(row["credentials"]),
                "not paced" if qps is None else f"{rate or 0:g}/{qps:g}",
                str(row["calls"]),
                str(row["limited"]),
                _seconds(row["paused_for_s"]),
            )
        parts.extend((Text(""), shared))
    return parts
