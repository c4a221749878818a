"""The ``taogate`` command: ``serve``, ``sim``, ``demo``, ``bench``, ``config check``, ``jobs``,
``keys``, ``degrade``.

The environment and config files are read here, at the edge, and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

import taogate
from taogate._errors import ConfigurationError
from taogate._settings import Settings, load_settings

app = typer.Typer(
    name="taogate",
    help="A gateway that makes a scarce Taobao Open Platform quota go as far as it can.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
jobs_app = typer.Typer(help="Bulk jobs of a running service (needs [redis]).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="taogate.toml (TAOGATE_* variables override it)."),
]


def _fail(message: object, code: int = 2) -> NoReturn:
    """End the command with one clear line on stderr and ``code`` (2: bad configuration)."""
    err_console.print(
        f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def _load(path: Path | None) -> Settings:
    """Settings from ``path``; a wrong file ends the command with one message and exit code 2."""
    try:
        return load_settings(path)
    except ConfigurationError as exc:
        _fail(exc)


def _run(coro: Any) -> Any:
    """Run ``coro`` on uvloop where available (the asyncio loop otherwise)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.run(coro)
    return uvloop.run(coro)


def _version(value: bool) -> None:
    if value:
        console.print(f"taogate {taogate.__version__}")
        raise typer.Exit


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """taogate: quota pool, micro-batching, tiered cache and breaker in front of TOP."""


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The taogate.toml to validate.")],
) -> None:
    """Validate FILE (with TAOGATE_* overrides) and print it with every secret masked."""
    settings = _load(file)
    console.print_json(json.dumps(settings.masked(), ensure_ascii=False))
    creds = len(settings.credentials)
    console.print(
        f"[green]ok[/]: {file} — {creds} credential{'s' * (creds != 1)}, "
        f"upstream {settings.upstream.kind} {settings.upstream.method}",
        highlight=False,
    )


@app.command()
def sim(
    config: ConfigOption,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: sim.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: sim.port).")] = None,
    qps: Annotated[
        float | None,
        typer.Option(help="Calls/s per key, all keys (default: sim.qps, else each key's qps)."),
    ] = None,
    latency_ms: Annotated[
        str | None, typer.Option(help='Latency range in ms, "LOW,HIGH" (default: sim.latency_ms).')
    ] = None,
    catalog_size: Annotated[
        int | None, typer.Option(help="Items (default: sim.catalog_size).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Catalog seed (default: sim.seed).")] = None,
    price_changes_per_hour: Annotated[
        float | None, typer.Option(help="Mean price changes per item per hour.")
    ] = None,
    ban_s: Annotated[float | None, typer.Option(help="Ban after a code 7, seconds.")] = None,
) -> None:
    """Run the TOP simulator with the credentials of --config until interrupted.

    It checks signatures, timestamps and app keys, enforces each key's QPS with code 7 and bans,
    serves a deterministic catalog whose prices change, and exposes /_sim/stats, /_sim/truth,
    /_sim/faults and /_sim/reset. See docs/simulator.md.
    """
    from taogate.testing import Simulator

    settings = _load(config)
    overrides: dict[str, Any] = {
        "qps": qps,
        "catalog_size": catalog_size,
        "seed": seed,
        "price_changes_per_hour": price_changes_per_hour,
        "ban_s": ban_s,
    }
    if latency_ms is not None:
        low, _, high = latency_ms.partition(",")
        overrides["latency_ms"] = (low, high or low)
    changed = {k: v for k, v in overrides.items() if v is not None}
    if changed:
        try:
            settings = load_settings_with_sim(settings, changed)
        except ConfigurationError as exc:
            _fail(exc)
    if not settings.credentials:
        _fail(f"{config}: the simulator needs at least one [[credentials]] entry")

    async def serve() -> None:
        simulator = Simulator.from_settings(settings, host=host, port=port)
        async with simulator:
            keys = ", ".join(
                f"{c.masked} ({qps or c.qps:g} qps)" for c in settings.build_credentials()
            )
            console.print(
                f"[bold]taogate sim[/] on {simulator.base_url}  TOP: {simulator.url}  "
                f"reseller: {simulator.reseller_url}\n  keys: {keys}\n  catalog: "
                f"{settings.sim.catalog_size:,} items, seed {settings.sim.seed}; "
                f"latency {settings.sim.latency_ms[0]:g}-{settings.sim.latency_ms[1]:g} ms. "
                "Ctrl-C stops.",
                highlight=False,
            )
            await simulator.serve_forever()

    try:
        _run(serve())
    except KeyboardInterrupt:
        console.print("stopped")


def load_settings_with_sim(settings: Settings, sim_overrides: dict[str, Any]) -> Settings:
    """``settings`` with ``[sim]`` values replaced, the new section validated like the file."""
    from pydantic import ValidationError

    from taogate._settings import SimSettings

    try:
        sim = SimSettings(**{**settings.sim.model_dump(), **sim_overrides})
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = "sim." + ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"option {where}: {first['msg']}", field=where) from None
    return settings.model_copy(update={"sim": sim})


@app.command()
def serve(
    config: ConfigOption,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: server.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: server.port).")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes; without Redis each gets quota ÷ N.")
    ] = 1,
) -> None:
    """Run the HTTP service until SIGINT/SIGTERM; in-flight requests finish before it stops."""
    from taogate.http._serve import serve as run_service

    settings = _load(config)
    if not settings.credentials:
        _fail(f"{config}: the service needs at least one [[credentials]] entry")
    try:
        run_service(settings, config_path=str(config), host=host, port=port, workers=workers)
    except ConfigurationError as exc:
        _fail(exc)


def _service(config: Path, url: str | None, token_env: str | None) -> tuple[str, dict[str, str]]:
    """The base URL of the service ``config`` describes and an admin (or first) token."""
    import os

    settings = _load(config)
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    token = os.environ.get(token_env) if token_env else None
    if token is None and settings.server.clients:
        chosen = next((c for c in settings.server.clients if c.admin), settings.server.clients[0])
        token = chosen.token.get_secret_value() if chosen.token is not None else None
    return base, ({"Authorization": f"Bearer {token}"} if token else {})


@dataclass(frozen=True)
class _Reply:
    """A finished HTTP answer from a running service, read whole."""

    status: int
    reason: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _request(
    method: str, url: str, headers: dict[str, str], *, timeout: float, **kw: Any
) -> _Reply:
    """One request with aiohttp (a runtime dependency, so the admin commands work in a plain
    install); redirects are not followed, so a token is never sent anywhere else."""
    import aiohttp

    async def go() -> _Reply:
        limit = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=limit) as session,
            session.request(method, url, headers=headers, allow_redirects=False, **kw) as resp,
        ):
            return _Reply(resp.status, resp.reason or "", await resp.read())

    try:
        return asyncio.run(go())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        _fail(f"cannot reach {url}: {type(exc).__name__}", code=1)


def _call(method: str, url: str, headers: dict[str, str], **kw: Any) -> _Reply:
    """``_request`` that ends the command with the service's problem detail on a 4xx/5xx."""
    resp = _request(method, url, headers, timeout=60.0, **kw)
    if resp.status >= 400:
        detail: Any = resp.reason
        if resp.content:
            try:
                doc = resp.json()
                detail = doc.get("detail", resp.text) if isinstance(doc, dict) else resp.text
            except ValueError:
                detail = resp.text[:200]
        _fail(f"{url} answered {resp.status}: {detail}", code=1)
    return resp


UrlOption = Annotated[
    str | None, typer.Option(help="The service's base URL (default: from server.host and port).")
]
TokenOption = Annotated[
    str | None, typer.Option(help="Variable holding a client token (default: from the config).")
]


@jobs_app.command("submit")
def jobs_submit(
    file: Annotated[Path, typer.Argument(help="One item id a line.")],
    config: ConfigOption,
    url: UrlOption = None,
    token_env: TokenOption = None,
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar.")] = False,
) -> None:
    """Submit FILE as a bulk job; prints the job id and the estimate."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    base, headers = _service(config, url, token_env)
    body = file.read_bytes()
    doc = _call(
        "POST", f"{base}/v1/jobs", {**headers, "content-type": "text/plain"}, data=body
    ).json()
    est = doc["estimate"]
    console.print(
        f"job {doc['job']}: {doc['total']:,} ids, {est['fresh_in_cache']:,} fresh in cache, "
        f"{est['upstream_calls']:,} upstream calls, about {est['seconds']} s at "
        f"{est['spare_calls_per_s']} spare calls/s, cost {est['cost']}",
        highlight=False,
    )
    if not wait:
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"job {doc['job']}", total=doc["total"])
        while True:
            status = _call("GET", f"{base}/v1/jobs/{doc['job']}", headers).json()
            progress.update(
                task, completed=status["done"], description=f"job {doc['job']} {status['state']}"
            )
            if status["state"] not in ("queued", "running"):
                break
            time.sleep(1.0)
    console.print(
        f"{status['state']}: {status['found']:,} found, {status['not_found']:,} not found, "
        f"{status['failed']:,} failed",
        highlight=False,
    )


@jobs_app.command("status")
def jobs_status(
    job: Annotated[str, typer.Argument(help="The job id.")],
    config: ConfigOption,
    url: UrlOption = None,
    token_env: TokenOption = None,
) -> None:
    """Show a job's state and progress."""
    base, headers = _service(config, url, token_env)
    console.print_json(_call("GET", f"{base}/v1/jobs/{job}", headers).text)


@jobs_app.command("results")
def jobs_results(
    job: Annotated[str, typer.Argument(help="The job id.")],
    config: ConfigOption,
    url: UrlOption = None,
    token_env: TokenOption = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of NDJSON.")] = False,
) -> None:
    """Write a job's rows to standard output (NDJSON, one row per id; or CSV)."""
    import sys

    base, headers = _service(config, url, token_env)
    suffix = "?format=csv" if csv else ""
    sys.stdout.buffer.write(_call("GET", f"{base}/v1/jobs/{job}/results{suffix}", headers).content)


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@app.command()
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
        _fail(f"unknown action {action!r}; choose on, off, auto or status")
    if until is not None and for_ is not None:
        _fail("give --until or --for, not both")
    if action in ("auto", "status") and (until is not None or for_ is not None):
        _fail(f"--until and --for go with on or off, not {action}")
    ends: float | None = None
    if until is not None:
        try:
            ends = parse_time(until)
        except ValueError as exc:
            _fail(f"--until: {exc}")
    if for_ is not None:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", for_.strip())
        if m is None or float(m.group(1)) <= 0:
            _fail(f"--for: {for_!r} is not a duration like 90s, 30m, 2h or 1d")
        ends = time.time() + float(m.group(1)) * _DURATION[m.group(2)]
    if ends is not None and ends <= time.time():
        _fail(f"--until: {format_time(ends)} has passed")
    base, headers = _service(config, url, token_env)
    if action == "status":
        doc = _call("GET", f"{base}/v1/admin/degrade", headers).json()
    else:
        body: dict[str, Any] = {"mode": action}
        if ends is not None:
            body["until"] = format_time(ends)
        if reason:
            body["reason"] = reason
        doc = _call("PUT", f"{base}/v1/admin/degrade", headers, json=body).json()
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


@app.command()
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

    settings = _load(config)
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    token = os.environ.get(token_env) if token_env else None
    if token is None:
        admin = next((c for c in settings.server.clients if c.admin), None)
        if admin is not None and admin.token is not None:
            token = admin.token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = _request("GET", f"{base}/v1/admin/keys", headers, timeout=5.0)
    if resp.status != 200:
        _call("GET", f"{base}/v1/admin/keys", headers)  # ends the command with the detail
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


@app.command()
def demo(
    seconds: Annotated[
        float, typer.Option(min=10, max=600, help="How long the gateway runs under load.")
    ] = 45.0,
    rate: Annotated[
        float, typer.Option(min=10, max=5000, help="Lookups per second offered.")
    ] = 600.0,
    replicas: Annotated[
        int, typer.Option(min=1, max=8, help="Gateway replicas; more than 1 adds a Redis.")
    ] = 1,
    walkthrough: Annotated[
        bool, typer.Option(help="Instead: signed calls against the simulator, step by step.")
    ] = False,
) -> None:
    """Start the simulator, the gateway and live load, then compare with a naive client.

    No real keys: everything runs on loopback and stops by itself (about a minute). With
    --replicas 3, a redis-server of the demo's own lets three gateways share the quota.
    """
    if walkthrough:
        from taogate._walkthrough import run_walkthrough

        _run(run_walkthrough(console, budget_s=seconds))
        return
    from taogate._demo import run_demo

    _run(run_demo(console, seconds=seconds, rate=rate, replicas=replicas))


@app.command()
def bench(
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            "-s",
            help="cold | zipf | outage | dup | micro (repeat; default: all).",
        ),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Short smoke runs, not the issue's figures.")] = False,
    out: Annotated[Path, typer.Option(help="Where to write JSON and PNG.")] = Path("bench/results"),
) -> None:
    """Benchmark the pipeline against the simulator: cold flood vs a naive client, hot Zipf,
    duplicate burst, outage, L1 micro. Every scenario is bounded in time and stops by itself.
    """
    from taogate.bench import SCENARIOS, run_bench

    chosen = scenario or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        _fail(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        _fail("taogate bench draws its plot with matplotlib: pip install 'taogate[bench]'")
    name = "pipeline-quick" if quick else "pipeline"
    report = _run(run_bench(console, scenarios=chosen, quick=quick, out=out, name=name))
    failed = [
        c["name"]
        for r in report.values()
        if isinstance(r, dict)
        for c in r.get("checks", [])
        if not c["passed"]
    ]
    if failed and not quick:
        console.print(f"[yellow]{len(failed)} figure(s) not met:[/] {', '.join(failed)}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
