"""Webhook latency while someone floods the code page's image endpoint with guessed links.

One run, everything on 127.0.0.1: the full service (``bot.app.create_app``, SQLite, the outbox worker on,
WeChat's API faked on loopback) in a child process pinned to one core; this process, pinned to the
other, sends WeChat text messages at a fixed rate and measures how long each answer takes, in three
phases of the same length:

* ``quiet``: the messages alone;
* ``flood``: the same messages while ``GET /code/<random handle>/qr`` arrive at a fixed rate (230 a
  second by default) from one address, against the service as configured (its code page limits);
* ``flood_unlimited``: the same again against a second server whose code page limits are set so high
  that every guess is looked up in the database, as before the limits existed.

Each phase also reports the server's CPU seconds (the flood's cost, less sensitive than p99 to other load
on a shared machine). Every answer is opened as WeChat would and must carry the FAQ's text, or the run
fails (exit status 1).
The flood is bounded: a fixed rate for the phase's duration, at most ``--flood-connections`` in flight.

    python bench/code_page_flood.py            # ~1 minute
    python bench/code_page_flood.py --quick    # ~20 s smoke run (the tests use it)
    python bench/code_page_flood.py --json

See bench/README.md ("Code page flood") for the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from harness import (
    GIVES_UP,
    ServerProcess,
    cpu_seconds,
    listening_socket,
    log,
    machine,
    pick_cpus,
    running,
    serve_app,
)

from bot.core.config import DEV_WECHAT_AES_KEY, DEV_WECHAT_APPID, DEV_WECHAT_TOKEN, load_settings
from bot.core.keys import generate_dev_keys
from bot.dev.fakes.wechat import WeChatClientSim

SCRIPT = str(Path(__file__).resolve())
DEV_API_PREFIX = "/_dev/wechat"
PHONE = "400-101-6588"
USERS = 50
# Limits no flood of this bench reaches: every guess is looked up, as before the limits.
UNLIMITED = {
    "code_page_page_burst": 10**9,
    "code_page_address_burst": 10**9,
    "code_page_miss_burst": 10**9,
    "code_page_page_per_minute": 1e9,
    "code_page_address_per_minute": 1e9,
    "code_page_miss_per_minute": 1e9,
}


# --- the server (a child process) ----------------------------------------------------------------


def server_app(kind: str, database_url: str, keys_dir: Path, port: int, scratch: Path) -> web.Application:
    """vaxbot as ``vaxbot serve`` runs it in development; ``unlimited``: code page limits out of reach."""
    from bot.app import create_app
    from bot.core.logs import configure_logging
    from bot.dev.fakes.wechat import FakeWeChatAPI

    settings = load_settings(
        environ={},
        env_file=scratch / "absent.env",
        env="development",
        database_url=database_url,
        keys_dir=keys_dir,
        host="127.0.0.1",
        port=port,
        wechat_api_base=f"http://127.0.0.1:{port}{DEV_API_PREFIX}",
        run_outbox_worker=True,
        seed_demo_data=False,
        customer_service_phone=PHONE,
        **(UNLIMITED if kind == "unlimited" else {}),
    )
    configure_logging("WARNING", settings.log_format)
    app = create_app(settings, migrate_on_start=True)
    app.add_subapp(DEV_API_PREFIX, FakeWeChatAPI(settings.wechat_appid, settings.wechat_secret).app())
    return app


async def serve(args: argparse.Namespace) -> None:
    """Listen on a free loopback port, say ``READY <port>``, serve until SIGTERM."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    app = server_app(args.serve, args.database_url, Path(args.keys_dir), port, Path(args.scratch))
    await serve_app(app, sock)


# --- the client (this process) -------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def webhook_phase(
    session: aiohttp.ClientSession, sim: WeChatClientSim, base: str, rate: float, duration: float
) -> dict[str, Any]:
    """Messages at ``rate`` a second for ``duration`` seconds; latency of each answer, and its verdict."""
    latencies: list[float] = []
    verdicts: Counter[str] = Counter()
    count = max(1, int(rate * duration))
    signed = [sim.sign(sim.text(f"oFlood-user-{n % USERS:04d}-xxxxxxxx", "客服电话")) for n in range(count)]

    async def one(request: Any) -> None:
        started = time.perf_counter()
        try:
            async with session.post(
                f"{base}/wechat?{urlencode(request.query)}",
                data=request.body,
                headers={"Content-Type": "text/xml"},
                timeout=aiohttp.ClientTimeout(total=GIVES_UP),
            ) as response:
                body = await response.text()
                status = response.status
        except TimeoutError:
            verdicts["timeout"] += 1
            return
        except aiohttp.ClientError:
            verdicts["error"] += 1
            return
        latencies.append(time.perf_counter() - started)
        reply = sim.open_reply(body) if status == 200 else None
        verdicts["reply" if reply is not None and PHONE in str(reply.get("Content")) else "wrong"] += 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for n, request in enumerate(signed):
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request)))
    await asyncio.gather(*tasks)
    figures: dict[str, Any] = {"sent": count, "rate": rate, "verdicts": dict(verdicts)}
    if latencies:
        figures["p50_ms"] = round(percentile(latencies, 0.50) * 1000, 1)
        figures["p99_ms"] = round(percentile(latencies, 0.99) * 1000, 1)
        figures["max_ms"] = round(max(latencies) * 1000, 1)
        figures["mean_ms"] = round(statistics.fmean(latencies) * 1000, 1)
    return figures


async def flood(
    session: aiohttp.ClientSession, base: str, rate: float, duration: float, connections: int, stop: asyncio.Event
) -> dict[str, Any]:
    """GETs on random code page handles at ``rate`` a second until ``stop`` or ``duration``; status counts."""
    statuses: Counter[str] = Counter()
    in_flight = asyncio.Semaphore(connections)
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        try:
            async with session.get(
                f"{base}/code/{secrets.token_urlsafe(24)}/qr", timeout=aiohttp.ClientTimeout(total=GIVES_UP)
            ) as response:
                await response.read()
                statuses[str(response.status)] += 1
                latencies.append(time.perf_counter() - started)
        except TimeoutError:
            statuses["timeout"] += 1
        except aiohttp.ClientError:
            statuses["error"] += 1
        finally:
            in_flight.release()

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    n = 0
    while not stop.is_set() and loop.time() - start < duration:
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await in_flight.acquire()  # bounded: a slow server slows the flood rather than piling it up
        tasks.append(asyncio.create_task(one()))
        n += 1
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    figures: dict[str, Any] = {"sent": n, "per_second": round(n / elapsed, 1), "statuses": dict(statuses)}
    if latencies:
        figures["p50_ms"] = round(percentile(latencies, 0.50) * 1000, 1)
        figures["p99_ms"] = round(percentile(latencies, 0.99) * 1000, 1)
    return figures


async def measure_server(
    server: ServerProcess, sim: WeChatClientSim, args: argparse.Namespace, phases: tuple[str, ...]
) -> dict[str, Any]:
    """Warm up, then each of ``phases`` ("quiet", "flood") against ``server``."""
    results: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as webhooks, aiohttp.ClientSession() as flooder:
        await webhook_phase(webhooks, sim, server.base, args.rate, args.warmup)
        for phase in phases:
            log(f"  {server.label}: {phase}")
            cpu_before = cpu_seconds(server.pid)
            if phase == "quiet":
                results[phase] = await webhook_phase(webhooks, sim, server.base, args.rate, args.duration)
                results[phase]["server_cpu_s"] = round(cpu_seconds(server.pid) - cpu_before, 2)
                continue
            stop = asyncio.Event()
            flooding = asyncio.create_task(
                flood(flooder, server.base, args.flood_rate, args.duration + 1, args.flood_connections, stop)
            )
            await asyncio.sleep(0.5)  # the flood is running before the first measured message
            webhook = await webhook_phase(webhooks, sim, server.base, args.rate, args.duration)
            stop.set()
            flooded = await flooding
            used = round(cpu_seconds(server.pid) - cpu_before, 2)
            results[phase] = {**webhook, "server_cpu_s": used, "flood": flooded}
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both servers, all phases; the report."""
    server_cpu, client_cpu = pick_cpus()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    sim = WeChatClientSim(DEV_WECHAT_TOKEN, DEV_WECHAT_APPID, DEV_WECHAT_AES_KEY)
    report: dict[str, Any] = {
        "machine": machine(),
        "plan": {
            "rate": args.rate,
            "duration": args.duration,
            "flood_rate": args.flood_rate,
            "flood_connections": args.flood_connections,
        },
        "phases": {},
    }
    with tempfile.TemporaryDirectory(prefix="vaxbot-flood-") as scratch_dir:
        scratch = Path(scratch_dir)
        keys_dir = scratch / "keys"
        generate_dev_keys(keys_dir)
        for kind, phases in (("limited", ("quiet", "flood")), ("unlimited", ("flood",))):
            database_url = f"sqlite+aiosqlite:///{scratch / kind}.db"
            options = {"database_url": database_url, "keys_dir": str(keys_dir)}
            server = ServerProcess(SCRIPT, kind, kind, server_cpu, scratch, **options)
            async with running(server):
                figures = await measure_server(server, sim, args, phases)
            for phase, values in figures.items():
                report["phases"][phase if kind == "limited" else f"{phase}_{kind}"] = values
    verdicts: Counter[str] = Counter()
    for values in report["phases"].values():
        verdicts.update(values["verdicts"])
    report["answers_ok"] = set(verdicts) == {"reply"}
    return report


def print_table(report: dict[str, Any]) -> None:
    """The figures, one line per phase."""
    plan = report["plan"]
    print(
        f"webhook: {plan['rate']:g} WeChat messages/s for {plan['duration']:g} s per phase; "
        f"flood: {plan['flood_rate']:g} GET /code/<random>/qr per second, at most {plan['flood_connections']} in flight"
    )
    print(
        f"{'phase':<18}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'srv CPU s':>11}  answers          "
        "flood sent/s  flood statuses"
    )
    for name, values in report["phases"].items():
        flood_values = values.get("flood", {})
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(flood_values.get("statuses", {}).items()))
        print(
            f"{name:<18}{values.get('p50_ms', 0):>8.1f}{values.get('p99_ms', 0):>8.1f}{values.get('max_ms', 0):>8.1f}"
            f"{values['server_cpu_s']:>11.2f}  "
            f"{json.dumps(values['verdicts']):<16} {flood_values.get('per_second', '-'):>12}  {statuses or '-'}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (2 s phases)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    parser.add_argument("--rate", type=float, default=20.0, help="WeChat messages a second (default 20)")
    parser.add_argument("--flood-rate", type=float, default=230.0, help="flood GETs a second (default 230)")
    parser.add_argument("--flood-connections", type=int, default=64, help="flood requests in flight at most")
    # Internal: run as a server child process.
    parser.add_argument("--serve", choices=["limited", "unlimited"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--keys-dir", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        os.sched_setaffinity(0, {args.cpu})  # before any thread (aiosqlite's) is started
        asyncio.run(serve(args))
        return 0
    args.warmup = 1.0 if args.quick else 3.0
    if args.quick:
        args.duration = min(args.duration, 2.0)
    started = time.perf_counter()
    report = asyncio.run(run(args))
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_table(report)
        print(f"total {report['total_seconds']:.0f} s")
    if not report["answers_ok"]:
        log("FAILED: some answers were wrong, late or errors")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
