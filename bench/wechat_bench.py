"""Throughput and latency of a WeChat safe-mode text message, against the protocol's own ceiling.

Two kinds of server, each in its own process pinned to one core, driven by an aiohttp client pinned to
another core, everything on 127.0.0.1:

* ``ceiling``: a bare aiohttp handler that checks ``signature`` and ``msg_signature``, decrypts, parses
  with wechatpy, builds a ``TextReply`` and encrypts it with wechatpy. Nothing vaxbot does can be cheaper
  than this, so it is the reference the full stack is compared with.
* ``full``: ``bot.app.create_app(settings)`` serving ``POST /wechat`` (verify, decrypt, deduplicate, lock
  and load the conversation state, dispatch, save, queue the reply, claim it for the passive answer,
  encrypt) on a fresh migrated database, with the outbox worker running as in production.

Every request is a distinct message (a fresh MsgId, users spread over 200 openids), and every answer is
opened and checked as WeChat would: an encrypted passive reply whose MsgSignature verifies, addressed to
the sender, with the expected text. Wrong answers or errors make the run fail (exit status 1).

    python bench/wechat_bench.py              # ~2 minutes; PostgreSQL too if VAXBOT_TEST_POSTGRES_URL is set
    python bench/wechat_bench.py --quick      # ~20 s smoke run (ceiling and SQLite only)
    python bench/wechat_bench.py --json       # machine-readable figures on stdout
    python bench/wechat_bench.py --profile DIR   # cProfile each server, print the hot spots

See bench/README.md for what each figure means. The machinery it shares with bench/alipay_bench.py (server
processes, load loops, CPU meters, profiles) is in bench/harness.py.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import os
import secrets
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from harness import (
    METRICS_TOKEN,
    Plan,
    Prepared,
    Requests,
    Result,
    ServerProcess,
    create_database,
    drop_database,
    listening_socket,
    log,
    machine,
    measure,
    pick_cpus,
    print_profiles,
    running,
    serve_app,
)
from yarl import URL

from bot.core.catalogue import build_catalogue
from bot.core.config import DEV_WECHAT_AES_KEY, DEV_WECHAT_APPID, DEV_WECHAT_TOKEN, load_settings
from bot.core.keys import generate_dev_keys
from bot.dev.fakes.wechat import WeChatClientSim

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
USERS = 200
ORIGINAL_ID = "gh_vaxbotdemo01"
PHONE = "400-101-6588"
VERDICTS = ("reply", "success", "timeout", "not_sent", "wrong", "error")
# What users say, and the catalogue message each one must be answered with.
TEXTS = (("帮助", "help"), ("为什么看不到狂犬疫苗的记录", "faq_rabies"), ("今天天气怎么样", "fallback"))
DEV_API_PREFIX = "/_dev/wechat"
SCRIPT = str(Path(__file__).resolve())


def expected_catalogue() -> Any:
    """The message catalogue the servers answer from (default settings, the bench's phone)."""
    return build_catalogue(load_settings(environ={}, env_file=Path("/nonexistent/.env"), customer_service_phone=PHONE))


# --- the servers (run in a child process) -----------------------------------------------------


def _sha1(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def ceiling_app() -> web.Application:
    """The protocol's minimum: verify both signatures, decrypt, parse, reply, encrypt."""
    from wechatpy import parse_message
    from wechatpy.crypto import WeChatCrypto
    from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
    from wechatpy.replies import TextReply

    crypto = WeChatCrypto(DEV_WECHAT_TOKEN, DEV_WECHAT_AES_KEY, DEV_WECHAT_APPID)
    catalogue = expected_catalogue()
    answers = {text: catalogue(key) for text, key in TEXTS}
    fallback = catalogue("fallback")

    async def handle(request: web.Request) -> web.Response:
        query = request.query
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        expected = _sha1(DEV_WECHAT_TOKEN, timestamp, nonce)
        if not hmac.compare_digest(expected, query.get("signature", "")):
            return web.Response(status=403, text="bad signature")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return web.Response(status=403, text="stale timestamp")
        body = await request.read()
        try:
            # Parses the envelope, checks msg_signature, decrypts and checks the app id.
            xml = crypto.decrypt_message(body, query.get("msg_signature", ""), timestamp, nonce)
        except (InvalidSignatureException, InvalidAppIdException):
            return web.Response(status=403, text="bad msg_signature")
        message = parse_message(xml)
        content = answers.get(getattr(message, "content", ""), fallback)
        reply = TextReply(source=message.target, target=message.source, content=content)
        text = crypto.encrypt_message(reply.render(), secrets.token_hex(5), str(int(time.time())))
        return web.Response(text=text, content_type="application/xml")

    app = web.Application()
    app.router.add_post("/wechat", handle)
    return app


def full_app(database_url: str, keys_dir: Path, port: int, scratch: Path) -> web.Application:
    """vaxbot as ``vaxbot serve`` runs it in development: worker on, WeChat's API faked on loopback."""
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
        metrics_token=METRICS_TOKEN,
    )
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, migrate_on_start=True)
    app.add_subapp(DEV_API_PREFIX, FakeWeChatAPI(settings.wechat_appid, settings.wechat_secret).app())
    return app


async def serve(args: argparse.Namespace) -> None:
    """Listen on a free loopback port, say ``READY <port>``, serve until SIGTERM."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    if args.serve == "ceiling":
        app = ceiling_app()
    else:
        app = full_app(args.database_url, Path(args.keys_dir), port, Path(args.scratch))
    await serve_app(app, sock, args.profile_out)


def serve_main(args: argparse.Namespace) -> int:
    """Entry point of the server child process."""
    os.sched_setaffinity(0, {args.cpu})  # before any thread (aiosqlite's) is started
    asyncio.run(serve(args))
    return 0


# --- the load generator (the parent process) --------------------------------------------------


def make_request(sim: WeChatClientSim, expected: dict[str, str]) -> Callable[[int, str], Prepared]:
    """Distinct messages from 200 users, signed and encrypted as WeChat does."""

    def make(index: int, base: str) -> Prepared:
        user = f"oBench-user-{index % USERS:04d}-xxxxxxxxxx"
        text, key = TEXTS[index % len(TEXTS)]
        signed = sim.sign(sim.text(user, text))  # fresh MsgId, timestamp and nonce each time
        url = URL(f"{base}/wechat?{urlencode(signed.query)}", encoded=True)
        return Prepared(url, signed.body, "text/xml", user, expected[key])

    return make


def check_answers(sim: WeChatClientSim, results: list[Result]) -> tuple[Counter[str], list[str]]:
    """Open every answer as WeChat would: ``reply`` (encrypted, verified, right user and text), ``success``,
    ``timeout`` (no answer within WeChat's 5 s), ``wrong`` (anything else with status 200) or ``error``
    (another status, or the connection failed)."""
    counts: Counter[str] = Counter()
    samples: list[str] = []
    for result in results:
        verdict, problem = _verdict(sim, result)
        counts[verdict] += 1
        if problem and len(samples) < 5:
            samples.append(problem)
    return counts, samples


def _verdict(sim: WeChatClientSim, result: Result) -> tuple[str, str]:
    if result.status == -1:
        return "timeout", ""
    if result.status != 200:
        return "error", f"status {result.status}: {result.text[:200]}"
    body = result.text
    if body == "success":
        return "success", ""
    if "<Encrypt>" not in body:
        return "wrong", f"not an encrypted reply: {body[:200]}"
    try:
        inner = sim.open_reply(body)
    except Exception as exc:
        return "wrong", f"reply does not open: {type(exc).__name__}: {exc}"
    if inner is None:
        return "wrong", "empty reply"
    request = result.request
    got = (inner.get("MsgType"), inner.get("ToUserName"), inner.get("FromUserName"), inner.get("Content"))
    if got != ("text", request.user, sim.original_id, request.expected):
        return "wrong", f"unexpected reply {got!r}"
    return "reply", ""


# --- orchestration --------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server_cpu, client_cpu = pick_cpus()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    plan = (
        Plan(warmup=0.3, duration=1.0, connections=args.connections, open_connections=256, quick=True)
        if args.quick
        else Plan(warmup=2.0, duration=args.duration, connections=args.connections, open_connections=256, quick=False)
    )
    postgres_url = "" if args.no_postgres or args.quick else os.environ.get("VAXBOT_TEST_POSTGRES_URL", "")
    catalogue = expected_catalogue()
    expected = {key: catalogue(key) for _, key in TEXTS}
    sim = WeChatClientSim(DEV_WECHAT_TOKEN, DEV_WECHAT_APPID, DEV_WECHAT_AES_KEY, original_id=ORIGINAL_ID)
    requests = Requests(make_request(sim, expected), sim)

    def check(results: list[Result]) -> tuple[Counter[str], list[str]]:
        return check_answers(sim, results)

    profile_dir: Path | None = args.profile
    if profile_dir:
        log("profiling is on: the servers run several times slower, the figures below are not the real ones")
    report: dict[str, Any] = {
        "machine": machine(),
        "plan": {
            "warmup_seconds": plan.warmup,
            "seconds_per_phase": plan.duration,
            "closed_loop_connections": plan.connections,
            "users": USERS,
            "server_core": server_cpu,
            "client_core": client_cpu,
            "profiled": bool(profile_dir),
        },
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="vaxbot-bench-") as tmp:
        scratch = Path(tmp)
        keys_dir = scratch / "keys"
        generate_dev_keys(keys_dir)

        def options(label: str) -> dict[str, str]:
            return {"profile_out": str(profile_dir / f"{label}.pstats")} if profile_dir else {}

        log("ceiling: bare aiohttp handler (verify, decrypt, parse, TextReply, encrypt)")
        async with running(
            ServerProcess(SCRIPT, "ceiling", "ceiling", server_cpu, scratch, **options("ceiling"))
        ) as srv:
            # Its open loop runs at half its own maximum: the latency floor of the protocol work.
            ceiling = await measure(srv, requests, plan, None, check, VERDICTS)
        half = ceiling["open_loop"]["offered_rate"]
        report["servers"]["ceiling"] = ceiling
        report["open_loop_rate"] = round(half, 1)

        backends: list[tuple[str, str, str | None]] = [("sqlite", f"sqlite+aiosqlite:///{scratch / 'bench.db'}", None)]
        if postgres_url:
            backends.append(("postgres", "", f"vaxbot_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"))
        for label, url, database in backends:
            log(f"full stack on {'PostgreSQL' if database else 'SQLite'}: create_app, POST /wechat, outbox worker on")
            try:
                if database:
                    url = await create_database(postgres_url, database)
                server = ServerProcess(
                    SCRIPT,
                    label,
                    "full",
                    server_cpu,
                    scratch,
                    database_url=url,
                    keys_dir=str(keys_dir),
                    **options(label),
                )
                async with running(server) as srv:
                    figures = await measure(srv, requests, plan, half, check, VERDICTS)
                figures["server_log_lines"] = server.log_levels()
                if figures["server_log_lines"].get("ERROR") or figures["server_log_lines"].get("CRITICAL"):
                    figures["server_log_tail"] = server.log_tail(10)
            finally:
                if database:
                    await drop_database(postgres_url, database)
            full_rate = figures["closed_loop"]["requests_per_second"]
            figures["ratio_to_ceiling"] = round(full_rate / ceiling["closed_loop"]["requests_per_second"], 3)
            # The same ratio from CPU time per request: unaffected by other load on a shared machine.
            cost = figures["closed_loop"]["server_cpu_ms_per_request"]
            figures["cpu_ratio_to_ceiling"] = round(ceiling["closed_loop"]["server_cpu_ms_per_request"] / cost, 3)
            report["servers"][label] = figures
        if not postgres_url:
            report["servers"]["postgres"] = None
            report["postgres_skipped"] = (
                "--quick"
                if args.quick
                else "--no-postgres"
                if args.no_postgres
                else "VAXBOT_TEST_POSTGRES_URL is not set"
            )

    verdicts = {}
    for label, figures in report["servers"].items():
        if not figures:
            continue
        answers = figures["answers"]
        # Wrong answers and errors fail the run. The full stack may answer "success" (its own deadline
        # passed; the reply goes through the outbox), and a server too slow for the offered load leaves
        # requests unanswered past WeChat's 5 s: both are performance results, reported, not failures.
        # The ceiling never says "success".
        bad = ("wrong", "error", "success") if label == "ceiling" else ("wrong", "error")
        verdicts[label] = answers["reply"] > 0 and all(answers[key] == 0 for key in bad)
    report["answers_ok"] = all(verdicts.values())
    report["targets"] = {"ratio_at_least": TARGET_RATIO, "p99_ms_below": TARGET_P99_MS}
    for label in ("sqlite", "postgres"):
        figures = report["servers"].get(label)
        if figures:
            report["targets"][label] = {
                "ratio_met": figures["ratio_to_ceiling"] >= TARGET_RATIO,
                "p99_met": figures["open_loop"]["p99_ms"] < TARGET_P99_MS,
            }
    if profile_dir:
        report["profiles"] = {label: str(profile_dir / f"{label}.pstats") for label in report["servers"] if label}
    return report


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    plan = report["plan"]
    print(
        f"vaxbot WeChat bench: safe-mode text message; server pinned to core {plan['server_core']}, "
        f"client to core {plan['client_core']} ({m['cpu_model']}, {m['cpus']} cores, Python {m['python']}, "
        f"aiohttp {m['aiohttp']})"
    )
    print(
        f"closed loop: {plan['closed_loop_connections']} connections, {plan['seconds_per_phase']:g} s; "
        f"open loop: {report['open_loop_rate']:.0f} req/s (half the ceiling's maximum), {plan['seconds_per_phase']:g} s"
    )
    if plan["profiled"]:
        print("PROFILED RUN: every figure is distorted by cProfile")
    header = (
        f"{'':<24}{'max':>7}{'ratio':>7}{'CPU ms':>8}{'srv':>6}{'other':>7}{'cli':>6}"
        f"{'p50':>8}{'p99':>8}{'max':>8}  answers"
    )
    units = (
        f"{'server':<24}{'req/s':>7}{'':>7}{'per req':>8}{'CPU':>6}{'load':>7}{'CPU':>6}"
        f"{'ms':>8}{'ms':>8}{'ms':>8}  reply/success/timeout/not sent/wrong/error"
    )
    print(header)
    print(units)
    print("-" * len(units))
    names = {"ceiling": "ceiling (bare handler)", "sqlite": "full stack, SQLite", "postgres": "full stack, PostgreSQL"}
    ceiling_rate = report["servers"]["ceiling"]["closed_loop"]["requests_per_second"]
    for label, name in names.items():
        figures = report["servers"].get(label)
        if figures is None:
            print(f"{name:<24}(not run: {report.get('postgres_skipped', '')})")
            continue
        closed, opened = figures["closed_loop"], figures["open_loop"]
        answers = "/".join(str(figures["answers"][key]) for key in VERDICTS)
        print(
            f"{name:<24}{closed['requests_per_second']:>7.0f}{closed['requests_per_second'] / ceiling_rate:>7.2f}"
            f"{closed['server_cpu_ms_per_request']:>8.2f}{closed['server_cpu']:>6.0%}"
            f"{closed['other_load_on_server_core']:>7.0%}{closed['client_cpu']:>6.0%}"
            f"{opened['p50_ms']:>8.1f}{opened['p99_ms']:>8.1f}{opened['max_ms']:>8.1f}  {answers}"
        )
    print()
    for label in ("sqlite", "postgres"):
        target = report["targets"].get(label)
        if not target:
            continue
        figures = report["servers"][label]
        own = figures["open_loop_half_own_max"]
        print(
            f"{label}: ratio {figures['ratio_to_ceiling']:.2f} "
            f"(by CPU per request {figures['cpu_ratio_to_ceiling']:.2f}; "
            f"target >= {TARGET_RATIO:g}: {'met' if target['ratio_met'] else 'NOT met'}); "
            f"p99 at {report['open_loop_rate']:.0f} req/s {figures['open_loop']['p99_ms']:.1f} ms "
            f"(target < {TARGET_P99_MS:g} ms: {'met' if target['p99_met'] else 'NOT met'})"
        )
        print(
            f"  at half its own maximum ({own['offered_rate']:.0f} req/s): p50 {own['p50_ms']:.1f} ms, "
            f"p99 {own['p99_ms']:.1f} ms; outbox rows {figures.get('outbox', {})}"
        )
    for label, figures in report["servers"].items():
        for phase in ("open_loop", "open_loop_half_own_max"):
            if figures and figures.get(phase) and figures[phase]["not_sent"]:
                print(
                    f"{label}, open loop at {figures[phase]['offered_rate']:.0f} req/s: overloaded, stopped after "
                    f"{figures[phase]['requests']} requests; {figures[phase]['not_sent']} not sent (counted at 5 s)"
                )
    busy = [
        f"{label} {phase.replace('_', ' ')} ({figures[phase]['other_load_on_server_core']:.0%} of the server's core, "
        f"{figures[phase]['other_load_on_client_core']:.0%} of the client's)"
        for label, figures in report["servers"].items()
        if figures
        for phase in ("closed_loop", "open_loop")
        if max(figures[phase]["other_load_on_server_core"], figures[phase]["other_load_on_client_core"]) > 0.1
    ]
    if busy:
        print("note: work other than the server and the client (PostgreSQL's own processes count here) used the")
        print("cores; rates are lower than they would be alone, CPU ms per request is not affected: " + "; ".join(busy))
    for label, figures in report["servers"].items():
        if figures and figures["problems"]:
            print(f"{label}: wrong answers or errors, for example:")
            for problem in figures["problems"]:
                print(f"  {problem}")
    print("answers: OK" if report["answers_ok"] else "answers: FAILED (see above)")


# --- where one message's CPU goes, stage by stage (--stages) ------------------------------------

STAGES = ("open", "respond", "render", "passive_claim", "worker_poll")
STAGE_NOTES = {
    "open": "verify signature and msg_signature, decrypt, parse (WeChatGateway.open)",
    "respond": "lock, dedupe, load state, dispatch, save, queue reply: one transaction (Engine.respond)",
    "render": "TextReply and encryption (WeChatGateway.render)",
    "passive_claim": "engine.drain: nothing since issue 12 (the passive answer is recorded in respond's commit)",
    "worker_poll": "one outbox worker claim query (under load it polls, it is not woken per message)",
}


async def stage_breakdown(database_url: str, keys_dir: Path, scratch: Path, count: int) -> dict[str, Any]:
    """The steps ``POST /wechat`` takes for one message, run one message at a time and timed separately.

    CPU is this process's (all threads, so aiosqlite's too; not PostgreSQL's own). It follows what
    ``Engine.respond`` does when the reply is ready in time; it reaches into vaxbot's internals, so it is a
    diagnostic, kept apart from the figures above.
    """
    from sqlalchemy import event

    from bot.app import create_app
    from bot.web.appkeys import DB, ENGINE, WECHAT, WORKER
    from models import utcnow

    settings = load_settings(
        environ={},
        env_file=scratch / "absent.env",
        env="development",
        database_url=database_url,
        keys_dir=keys_dir,
        run_outbox_worker=False,  # its wake-ups are run by hand below, to be timed
        seed_demo_data=False,
        log_level="WARNING",
        customer_service_phone=PHONE,
    )
    app = create_app(settings, migrate_on_start=True)
    runner = web.AppRunner(app)
    await runner.setup()
    statements = [0]

    def count_statement(*_: Any) -> None:
        statements[0] += 1

    event.listen(app[DB].sync_engine, "before_cursor_execute", count_statement)
    gateway, engine, worker = app[WECHAT], app[ENGINE], app[WORKER]
    catalogue = expected_catalogue()
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key, ORIGINAL_ID)
    warm = max(50, count // 5)
    cpu = dict.fromkeys(STAGES, 0.0)
    sql = dict.fromkeys(STAGES, 0)
    wrong = 0
    try:
        for index in range(warm + count):
            user = f"oBench-user-{index % USERS:04d}-xxxxxxxxxx"
            text, key = TEXTS[index % len(TEXTS)]
            signed = sim.sign(sim.text(user, text))
            marks = [(time.process_time(), statements[0])]
            update, encrypted = gateway.open(signed.query, signed.body)
            marks.append((time.process_time(), statements[0]))
            answer = await engine.respond(update, settings.reply_deadline_seconds, utcnow())
            marks.append((time.process_time(), statements[0]))
            body = gateway.render(update, answer, encrypted)
            marks.append((time.process_time(), statements[0]))
            await engine.drain(grace=5)  # was the batched passive claim; now part of respond's transaction
            marks.append((time.process_time(), statements[0]))
            await worker.run_once()
            marks.append((time.process_time(), statements[0]))
            reply = sim.open_reply(body)
            if not reply or reply.get("ToUserName") != user or reply.get("Content") != catalogue(key):
                wrong += 1
            if index >= warm:
                for stage, (before, after) in zip(STAGES, itertools.pairwise(marks), strict=True):
                    cpu[stage] += after[0] - before[0]
                    sql[stage] += after[1] - before[1]
    finally:
        await runner.cleanup()
    total = sum(cpu.values())
    return {
        "messages": count,
        "wrong_answers": wrong,
        "total_cpu_ms": round(1000 * total / count, 3),
        "stages": {
            stage: {
                "cpu_ms": round(1000 * cpu[stage] / count, 3),
                "share": round(cpu[stage] / total, 3) if total else 0.0,
                "sql_statements": round(sql[stage] / count, 2),
            }
            for stage in STAGES
        },
    }


async def run_stages(args: argparse.Namespace) -> dict[str, Any]:
    """``--stages``: the breakdown on SQLite (and PostgreSQL when configured), on one pinned core."""
    server_cpu, _ = pick_cpus()
    os.sched_setaffinity(0, {server_cpu})
    postgres_url = "" if args.no_postgres else os.environ.get("VAXBOT_TEST_POSTGRES_URL", "")
    count = 300 if args.quick else args.stages
    report: dict[str, Any] = {"machine": machine(), "stages": {}}
    with tempfile.TemporaryDirectory(prefix="vaxbot-bench-") as tmp:
        scratch = Path(tmp)
        keys_dir = scratch / "keys"
        generate_dev_keys(keys_dir)
        log(f"stage breakdown on SQLite ({count} messages, one at a time)")
        sqlite_url = f"sqlite+aiosqlite:///{scratch / 'stages.db'}"
        report["stages"]["sqlite"] = await stage_breakdown(sqlite_url, keys_dir, scratch, count)
        if postgres_url:
            database = f"vaxbot_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            log(f"stage breakdown on PostgreSQL ({count} messages, one at a time)")
            try:
                url = await create_database(postgres_url, database)
                report["stages"]["postgres"] = await stage_breakdown(url, keys_dir, scratch, count)
            finally:
                await drop_database(postgres_url, database)
    return report


def print_stages(report: dict[str, Any]) -> None:
    for label, figures in report["stages"].items():
        print(
            f"{label}: {figures['total_cpu_ms']:.2f} ms CPU per message, one message at a time "
            f"({figures['messages']} messages, {figures['wrong_answers']} wrong answers)"
        )
        print(f"  {'stage':<15}{'CPU ms':>8}{'share':>7}{'SQL':>6}  what")
        for stage, row in figures["stages"].items():
            print(
                f"  {stage:<15}{row['cpu_ms']:>8.3f}{row['share']:>7.0%}{row['sql_statements']:>6.1f}  "
                f"{STAGE_NOTES[stage]}"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke run: short phases, no PostgreSQL")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured phase (default 8)")
    parser.add_argument("--connections", type=int, default=64, help="closed-loop concurrency (default 64)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL even when configured")
    parser.add_argument("--profile", metavar="DIR", help="cProfile each server; write DIR/<server>.pstats")
    parser.add_argument("--profile-top", type=int, default=25, help="rows of each profile to print")
    parser.add_argument(
        "--stages",
        type=int,
        nargs="?",
        const=2000,
        metavar="N",
        help="instead of the benchmark: CPU and SQL statements per stage of one message, over N messages (2000)",
    )
    # Internal: run as a server child process.
    parser.add_argument("--serve", choices=["ceiling", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--keys-dir", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve_main(args)
    if args.stages:
        stages = asyncio.run(run_stages(args))
        if args.json:
            print(json.dumps(stages, indent=2, ensure_ascii=False))
        else:
            print_stages(stages)
        return 1 if any(figures["wrong_answers"] for figures in stages["stages"].values()) else 0
    if args.profile:
        args.profile = Path(args.profile).resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = asyncio.run(run(args))
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if args.profile:
        print_profiles(report, args.profile_top)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_table(report)
        print(f"total {report['total_seconds']:.0f} s")
    if not report["answers_ok"]:
        log("FAILED: some answers were wrong or errors (see 'problems')")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
