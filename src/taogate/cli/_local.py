"""The commands that run something on this machine: ``serve`` (the service), ``sim`` (the TOP
simulator), ``demo`` and ``bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from taogate._errors import ConfigurationError
from taogate._settings import Settings
from taogate.cli._common import ConfigOption, console, fail, load, run

__all__ = ["bench", "demo", "load_settings_with_sim", "serve", "sim"]


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

    settings = load(config)
    if not settings.credentials:
        fail(f"{config}: the service needs at least one [[credentials]] entry")
    try:
        run_service(settings, config_path=str(config), host=host, port=port, workers=workers)
    except ConfigurationError as exc:
        fail(exc)


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

    settings = load(config)
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
            fail(exc)
    if not settings.credentials:
        fail(f"{config}: the simulator needs at least one [[credentials]] entry")

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
        run(serve())
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

        run(run_walkthrough(console, budget_s=seconds))
        return
    from taogate._demo import run_demo

    run(run_demo(console, seconds=seconds, rate=rate, replicas=replicas))


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
        fail(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        fail("taogate bench draws its plot with matplotlib: pip install 'taogate[bench]'")
    name = "pipeline-quick" if quick else "pipeline"
    report = run(run_bench(console, scenarios=chosen, quick=quick, out=out, name=name))
    failed = [
        c["name"]
        for r in report.values()
        if isinstance(r, dict)
        for c in r.get("checks", [])
        if not c["passed"]
    ]
    if failed and not quick:
        console.print(f"[yellow]{len(failed)} figure(s) not met:[/] {', '.join(failed)}")
