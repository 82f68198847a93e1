"""Booking rush benchmark: thousands of verified families confirm a booking at the same moment.

One PostgreSQL database, two ``python -m bot serve`` processes on different ports, the fake WeChat API on
loopback. The bench seeds N distinct verified parents (bulk inserts), each with a claimed certificate of a
child whose second hepatitis B dose is due, a WeChat account bound to the parent, and one clinic with one
slot of C places. Set-up (not measured): every parent walks the 预约接种 journey through the real signed,
encrypted webhook (「预约接种」, vaccine, clinic, day, window) up to the confirmation, on the server their
index picks. Then at one moment T all N send 「确认」 at once, half to each server, and the bench counts:

* ``bookings``: active appointments in the slot (must be exactly C) and ``slot_booked`` (must equal it);
* ``duplicates``: people with more than one active booking, and bookings beyond the places (both 0);
* ``replies``: each user's answer read as 预约成功 / 名额已满 (with the day's alternatives) / other (0);
* ``attempts_per_second``: N over the time from T until the last user was answered;
* ``p50_ms`` / ``p99_ms``: from T until the answer arrived (the passive reply, or the push at the fake
  WeChat API when the engine answered through the outbox near the deadline), and ``within_5s``;
* ``handler_errors`` / ``error_log_lines``: from both servers' /metrics and logs (0).

    python bench/rush_bench.py            # 5,000 users, 100 places
    python bench/rush_bench.py --quick    # 500 users, 20 places (the slow test runs it)
    python bench/rush_bench.py --json     # the figures as JSON on stdout (progress on stderr)

Needs ``VAXBOT_TEST_POSTGRES_URL`` (``scripts/pg-test-cluster start``); without it the report says it was
skipped and the exit status is 0. Exit status 1 when any check above fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from crash_bench import Server, free_port
from harness import METRICS_TOKEN, cpu_seconds, create_database, drop_database, log, machine, print_profiles
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from bot.booking import slots
from bot.core.chinatime import china_date
from bot.core.config import DEV_WECHAT_AES_KEY, DEV_WECHAT_APPID, DEV_WECHAT_SECRET, DEV_WECHAT_TOKEN
from bot.core.db import migrate
from bot.core.keys import generate_dev_keys, load_keyring
from bot.core.pii import Vault
from bot.dev.fakes.wechat import FakeWeChatAPI, Received, WeChatClientSim
from models import (
    Appointment,
    AppointmentStatus,
    Certificate,
    CertificateKind,
    Clinic,
    ConversationState,
    Dose,
    DoseDetail,
    FileProfile,
    Identity,
    OutboxMessage,
    PlatformAccount,
    Slot,
    Vaccinee,
)
from models.registry import DOSE_FIELD, PROFILE_FIELD

ROOT = Path(__file__).resolve().parent.parent
REGION = "320602"
CHUNK = 2000
JOURNEY = ("预约接种", "1", "1", "1", "1")  # up to the confirmation (one vaccine, clinic, day, window offered)
CONFIRM_STATE = "BookingSteps:confirm"
BOOKED_MARK = "预约成功"
FULL_MARKS = ("刚刚约满", "已停止预约")
WECHAT_GIVES_UP = 5.0
SETTLE_LIMIT = 120.0
WECHAT_RETRIES = 2  # WeChat delivers a message three times at most when it gets no answer within 5 s


def user_id(index: int) -> str:
    """The WeChat openid of the ``index``-th parent."""
    return f"o-rush-{index:06d}"


async def seed(sessions: async_sessionmaker[Any], vault: Vault, users: int, capacity: int) -> int:
    """Parents, children, certificates, bound accounts and one slot; the slot's id."""
    now = datetime.now(UTC)
    today = china_date(now)
    birth = today - timedelta(days=40)  # HepB dose 2 is due at one month
    async with sessions() as session, session.begin():
        clinic = Clinic(code="RUSH-01", name="抢号测试接种门诊", region_code=REGION)
        session.add(clinic)
        await session.flush()
        clinic_id = clinic.id
        spec = slots.SlotSpec("HepB", today + timedelta(days=2), clock(9), clock(10), capacity)
        slot_id = (await slots.publish(session, clinic_id, spec)).id
    profile = vault.seal(PROFILE_FIELD, FileProfile(sex="M", region_code=REGION, clinic_id=clinic_id).to_json())
    for start in range(0, users, CHUNK):
        numbers = range(start, min(users, start + CHUNK))
        async with sessions() as session, session.begin():
            parents = [
                {
                    "id_number_hash": vault.digest("id_number", f"RUSH-{number}"),
                    "id_number_enc": vault.seal("id_number", f"RUSH-{number}"),
                    "name_enc": vault.seal("name", f"家长{number}"),
                    "verified_at": now,
                    "verification_method": "face",
                    "created_at": now,
                }
                for number in numbers
            ]
            parent_ids = list(
                await session.scalars(insert(Identity).returning(Identity.id, sort_by_parameter_order=True), parents)
            )
            files = [
                {
                    "registry_ref": f"RUSH{number:08d}",
                    "name_enc": vault.seal("name", f"儿童{number}"),
                    "birth_date_enc": vault.seal("birth_date", birth.isoformat()),
                    "profile_enc": profile,
                    "effective_from": birth,
                    "updated_at": now,
                }
                for number in numbers
            ]
            file_ids = list(
                await session.scalars(insert(Vaccinee).returning(Vaccinee.id, sort_by_parameter_order=True), files)
            )
            detail = DoseDetail("HepB", 1, birth, clinic_id=clinic_id).to_json()
            await session.execute(
                insert(Dose),
                [
                    {
                        "vaccinee_id": file_id,
                        "dose_key": Dose.key_for(vault, file_id, "HepB", 1),
                        "detail_enc": vault.seal(DOSE_FIELD, detail),
                        "effective_from": birth,
                        "created_at": now,
                    }
                    for file_id in file_ids
                ],
            )
            await session.execute(
                insert(Certificate),
                [
                    {
                        "vaccinee_id": file_id,
                        "holder_identity_id": parent_id,
                        "kind": CertificateKind.CHILD,
                        "claimed_at": now,
                        "claimed_via": "wechat",
                    }
                    for file_id, parent_id in zip(file_ids, parent_ids, strict=True)
                ],
            )
            await session.execute(
                insert(PlatformAccount),
                [
                    {
                        "platform": "wechat",
                        "app_id": DEV_WECHAT_APPID,
                        "user_id": user_id(number),
                        "identity_id": parent_id,
                        "following": True,
                        "followed_at": now,
                        "created_at": now,
                    }
                    for number, parent_id in zip(numbers, parent_ids, strict=True)
                ],
            )
    return slot_id


class ProfiledServer(Server):
    """``python -m bot serve`` under cProfile, its statistics written when it stops (SIGTERM)."""

    def __init__(self, name: str, env: dict[str, str], scratch: Path, profile_out: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._out = (scratch / f"{name}.log").open("wb")
        code = (
            "import cProfile, time; from bot.cli import main; "
            "profile = cProfile.Profile(time.process_time); "  # CPU time: a loaded machine's waits left out
            f"profile.runcall(main, ['serve', '--port', '{self.port}']); profile.dump_stats({str(profile_out)!r})"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=scratch,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )


class Answers:
    """When each user's first answer after T arrived, and what it said (passive reply or push)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.all_in = asyncio.Event()
        self.started = 0.0
        self.at: dict[str, float] = {}
        self.texts: dict[str, list[str]] = {}

    def note(self, user: str, text: str) -> None:
        """A message for ``user`` arrived now: the first one is when the user was answered."""
        if user not in self.at:
            self.at[user] = time.perf_counter() - self.started
            if len(self.at) >= self.expected:
                self.all_in.set()
        self.texts.setdefault(user, []).append(text)

    def text(self, user: str) -> str:
        """Everything the user read after T."""
        return "\n".join(self.texts.get(user, []))

    def repeated(self, user: str) -> int:
        """Messages the user read more than once (a reply sent twice)."""
        texts = self.texts.get(user, [])
        return len(texts) - len(set(texts))

    def pushed(self, item: Received) -> None:
        """The fake WeChat API took a customer-service message."""
        if item.path != "message/custom/send":
            return
        user = str(item.body.get("touser", ""))
        self.note(user, str((item.body.get("text") or {}).get("content", "")))


def classify(text: str) -> str:
    """预约成功, 名额已满 (with alternatives) or anything else."""
    if BOOKED_MARK in text:
        return "booked"
    if any(mark in text for mark in FULL_MARKS):
        return "full"
    return "other"


async def post(http: aiohttp.ClientSession, base: str, signed: Any) -> tuple[int, bytes]:
    """One webhook delivery: status and body (status -1 when WeChat would have given up, 0 on a failure)."""
    try:
        async with http.post(
            base + "/wechat", params=dict(signed.query), data=signed.body, headers={"Content-Type": "text/xml"}
        ) as response:
            return response.status, await response.read()
    except TimeoutError:
        return -1, b""
    except aiohttp.ClientError as exc:
        return 0, repr(exc).encode()


async def walk_to_confirmation(
    engine: AsyncEngine, sim: WeChatClientSim, servers: list[Server], users: int, parallel: int
) -> float:
    """Every user through the journey up to the confirmation (each on their own server); seconds taken.

    Set-up, not measured: the client waits as long as it takes (no 5 s), and whoever did not reach the
    confirmation (an answer lost to an overloaded machine) walks again, 「预约接种」 starting afresh.
    """
    gate = asyncio.Semaphore(parallel)
    started = time.perf_counter()
    failures: list[str] = []

    async def walk(http: aiohttp.ClientSession, index: int) -> None:
        async with gate:
            server = servers[index % len(servers)]
            for word in JOURNEY:
                status, _ = await post(http, server.url, sim.sign(sim.text(user_id(index), word)))
                if status != 200:
                    failures.append(f"{user_id(index)} {word!r}: status {status}")
                    return

    async def not_there() -> list[int]:
        query = select(ConversationState.user_id).where(ConversationState.state == CONFIRM_STATE)
        async with engine.connect() as connection:
            there = set((await connection.execute(query)).scalars().all())
        return [index for index in range(users) if user_id(index) not in there]

    walking = list(range(users))
    connector = aiohttp.TCPConnector(limit=parallel)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        for _ in range(3):
            await asyncio.gather(*(walk(http, index) for index in walking))
            walking = await not_there()
            if not walking:
                return time.perf_counter() - started
            log(f"set-up: {len(walking)} users not at the confirmation yet ({len(failures)} messages failed)")
    raise RuntimeError(f"{len(walking)} users never reached the confirmation, e.g. {failures[:3]}")


async def count_where(engine: AsyncEngine, query: Any) -> int:
    """A count."""
    async with engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


async def wait_for(engine: AsyncEngine, check: Any, what: str, limit: float = SETTLE_LIMIT) -> None:
    """Poll until ``check()`` is true."""
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        await asyncio.sleep(0.2)


async def server_errors(
    http: aiohttp.ClientSession, servers: list[Server], logs: list[Path]
) -> tuple[int, Counter[str]]:
    """Handler errors from every server's /metrics, and ERROR/CRITICAL lines in their logs by message."""
    handler_errors = 0
    for server in servers:
        async with http.get(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as response:
            for line in (await response.text()).splitlines():
                if line.startswith("vaxbot_handler_errors_total"):
                    handler_errors += int(float(line.rsplit(" ", 1)[1]))
    errors: Counter[str] = Counter()
    for path in logs:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                level, message = str(entry.get("level", "")).upper(), str(entry.get("msg", ""))
                if entry.get("exc"):  # the exception's last line: its type and message
                    message += " — " + str(entry["exc"]).strip().splitlines()[-1][:120]
            except (ValueError, AttributeError):
                level, message = ("UNSTRUCTURED", line[:120]) if "Traceback" in line else ("", "")
            if level in ("ERROR", "CRITICAL", "UNSTRUCTURED"):
                errors[message] += 1
    return handler_errors, errors


def listen_overflows() -> int:
    """Connections the kernel dropped because a listen queue was full, since boot (the whole machine)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/net/netstat", encoding="ascii") as handle:
            lines = [line.split() for line in handle if line.startswith("TcpExt:")]
        names, values = lines[0], lines[1]
        return int(values[names.index("ListenOverflows")])
    return 0


def quantile_ms(values: list[float], quantile: float) -> float:
    """The quantile of seconds, in milliseconds (nearest rank)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(quantile * len(ordered)) - 1))], 1)


async def rush(args: argparse.Namespace, database_url: str, scratch: Path) -> dict[str, Any]:
    """Seed, walk everyone to the confirmation, confirm all at once, count."""
    keys_dir = scratch / "keys"
    generate_dev_keys(keys_dir)
    vault = Vault(load_keyring(keys_dir))
    engine = create_async_engine(database_url, pool_size=5)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    await migrate(engine, vault)
    seeded = time.perf_counter()
    slot_id = await seed(sessions, vault, args.users, args.capacity)
    log(f"seeded {args.users} families in {time.perf_counter() - seeded:.1f} s")

    api = FakeWeChatAPI(DEV_WECHAT_APPID, DEV_WECHAT_SECRET)
    answers = Answers(args.users)
    pushes: asyncio.Queue[Received] = asyncio.Queue()
    api.subscribers.append(pushes)
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    api_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", api_port, backlog=1024).start()
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAXBOT_")}
    env.update(
        VAXBOT_ENV="test",
        VAXBOT_ENV_FILE=str(scratch / "absent.env"),
        VAXBOT_HOST="127.0.0.1",
        VAXBOT_PUBLIC_URL="http://127.0.0.1",
        VAXBOT_DATABASE_URL=database_url,
        VAXBOT_KEYS_DIR=str(keys_dir),
        VAXBOT_WECHAT_API_BASE=f"http://127.0.0.1:{api_port}",
        VAXBOT_ALIPAY_APPID="",
        VAXBOT_SEED_DEMO_DATA="0",
        VAXBOT_RUN_SCHEDULER="0",
        VAXBOT_METRICS_TOKEN=METRICS_TOKEN,
        VAXBOT_OUTBOX_POLL_SECONDS="0.2",
        PYTHONPATH=str(ROOT),
    )
    profiles = {f"rush-{index}": scratch / f"rush-{index}.pstats" for index in range(args.servers)}
    servers: list[Server] = [
        ProfiledServer(name, env, scratch, path) if args.profile else Server(name, env, scratch)
        for name, path in profiles.items()
    ]
    sim = WeChatClientSim(DEV_WECHAT_TOKEN, DEV_WECHAT_APPID, DEV_WECHAT_AES_KEY)
    try:
        connector = aiohttp.TCPConnector(limit=args.connections)
        timeout = aiohttp.ClientTimeout(total=WECHAT_GIVES_UP)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            for server in servers:
                await server.healthy(http)
            walked = await walk_to_confirmation(engine, sim, servers, args.users, args.parallel)
            log(f"set-up: every user at the confirmation after {walked:.1f} s")

            async def outbox_idle() -> bool:
                busy = OutboxMessage.status.in_(("pending", "sending"))
                return not await count_where(engine, select(func.count()).select_from(OutboxMessage).where(busy))

            await wait_for(engine, outbox_idle, "the set-up's pushes")
            while not pushes.empty():
                pushes.get_nowait()
            # Signed and encrypted ahead of T, so the client's crypto is not in the figures.
            messages = [sim.text(user_id(index), "确认") for index in range(args.users)]
            prepared = [sim.sign(message) for message in messages]
            log(f"rush: {args.users} users confirm at once on {len(servers)} servers")

            async def drain_pushes() -> None:
                while True:
                    answers.pushed(await pushes.get())

            listener = asyncio.create_task(drain_pushes())

            retries = 0

            async def confirm(index: int) -> tuple[int, bytes]:
                nonlocal retries
                server = servers[index % len(servers)]
                status, body = await post(http, server.url, prepared[index])
                for _ in range(WECHAT_RETRIES):  # as WeChat does: the same message again, up to twice more
                    if status > 0:
                        break
                    retries += 1
                    status, body = await post(http, server.url, sim.sign(messages[index]))
                if status == 200 and body not in (b"", b"success"):
                    reply = sim.open_reply(body.decode())
                    if reply is not None:
                        answers.note(user_id(index), str(reply.get("Content", "")))
                return status, body

            cpu_before = sum(cpu_seconds(server.proc.pid) for server in servers)
            overflows_before = listen_overflows()
            answers.started = time.perf_counter()
            statuses = await asyncio.gather(*(confirm(index) for index in range(args.users)))
            everyone = [user_id(index) for index in range(args.users)]
            settle = SETTLE_LIMIT + args.users / 10  # a slow machine's rush is still counted, not abandoned
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answers.all_in.wait(), settle)
            await wait_for(engine, outbox_idle, "the rush's pushes", settle)
            server_cpu = sum(cpu_seconds(server.proc.pid) for server in servers) - cpu_before
            overflows = listen_overflows() - overflows_before
            await asyncio.sleep(0.5)  # a push sent twice would arrive now
            listener.cancel()
            handler_errors, logged_errors = await server_errors(
                http, servers, [scratch / f"rush-{index}.log" for index in range(len(servers))]
            )
    finally:
        for server in servers:
            server.stop()
        await runner.cleanup()

    active = (Appointment.slot_id == slot_id) & (Appointment.status == AppointmentStatus.BOOKED)
    bookings = await count_where(engine, select(func.count()).select_from(Appointment).where(active))
    async with engine.connect() as connection:
        slot_booked = int((await connection.execute(select(Slot.booked).where(Slot.id == slot_id))).scalar_one())
        twice = (
            select(Appointment.vaccinee_id)
            .where(Appointment.status == AppointmentStatus.BOOKED)
            .group_by(Appointment.vaccinee_id)
            .having(func.count() > 1)
        )
        duplicates = len((await connection.execute(twice)).all())
    await engine.dispose()
    latencies = [answers.at[user] for user in everyone if user in answers.at]
    replies = Counter(classify(answers.text(user)) if user in answers.at else "unanswered" for user in everyone)
    last = max(latencies) if latencies else math.nan
    other_samples = [
        answers.text(user)[:120] for user in everyone if user in answers.at and classify(answers.text(user)) == "other"
    ]
    report: dict[str, Any] = {
        "machine": machine(),
        "plan": {
            "users": args.users,
            "capacity": args.capacity,
            "servers": args.servers,
            "client_connections": args.connections,
        },
        "setup_seconds": round(walked, 1),
        "bookings": bookings,
        "slot_booked": slot_booked,
        "duplicates": duplicates,
        "replies": {key: replies.get(key, 0) for key in ("booked", "full", "other", "unanswered")},
        "answered_twice": sum(answers.repeated(user) for user in everyone),
        "server_cpu_ms_per_attempt": round(1000 * server_cpu / args.users, 2),
        # Connections refused by a full listen queue during the rush (they are retried a second or more later).
        "listen_overflows": overflows,
        "http_statuses": dict(Counter(str(status) for status, _ in statuses)),
        "platform_retries": retries,
        "passive_replies": sum(1 for status, body in statuses if status == 200 and body not in (b"", b"success")),
        "attempts_per_second": round(args.users / last, 1) if latencies else None,
        "p50_ms": quantile_ms(latencies, 0.5),
        "p99_ms": quantile_ms(latencies, 0.99),
        "max_ms": quantile_ms(latencies, 1.0),
        "within_5s": round(sum(1 for value in latencies if value <= WECHAT_GIVES_UP) / args.users, 4),
        "handler_errors": handler_errors,
        "error_log_lines": sum(logged_errors.values()),
        "error_log_messages": dict(logged_errors.most_common(5)),
        "other_samples": other_samples[:5],
    }
    if args.profile:  # the statistics are in the scratch directory, gone after this run
        report["profiles"] = {name: str(path) for name, path in profiles.items()}
        print_profiles(report, 30)
        del report["profiles"]
    report["answers_ok"] = (
        bookings == args.capacity
        and slot_booked == bookings
        and duplicates == 0
        and report["replies"]["booked"] == args.capacity
        and report["replies"]["other"] == 0
        and report["replies"]["unanswered"] == 0
        and report["answered_twice"] == 0
        and handler_errors == 0
        and not logged_errors
    )
    report["summary"] = {
        "users / places": f"{args.users} / {args.capacity}",
        "bookings (slot.booked)": f"{bookings} ({slot_booked})",
        "duplicates": duplicates,
        "full / other replies": f"{report['replies']['full']} / {report['replies']['other']}",
        "attempts/s": report["attempts_per_second"],
        "p50 / p99 ms": f"{report['p50_ms']} / {report['p99_ms']}",
        "answered within 5 s": report["within_5s"],
    }
    return report


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The rush on a fresh PostgreSQL database, or a note that there is none."""
    postgres_url = os.environ.get("VAXBOT_TEST_POSTGRES_URL", "")
    if not postgres_url:
        reason = "VAXBOT_TEST_POSTGRES_URL is not set (scripts/pg-test-cluster start)"
        return {"skipped": reason, "answers_ok": True, "summary": {"skipped": reason}}
    name = f"rush_{uuid.uuid4().hex[:8]}"
    database_url = await create_database(postgres_url, name)
    try:
        with tempfile.TemporaryDirectory(prefix="vaxbot-rush-") as tmp:
            return await rush(args, database_url, Path(tmp))
    finally:
        await drop_database(postgres_url, name)


def print_table(report: dict[str, Any]) -> None:
    """The headline figures."""
    if "skipped" in report:
        print(f"skipped: {report['skipped']}")
        return
    for name, value in report["summary"].items():
        print(f"{name:<24} {value}")
    print(f"{'replies':<24} {report['replies']}")
    print("ok" if report["answers_ok"] else f"FAILED: {report['other_samples']}")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 users, 20 places")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--capacity", type=int, default=100)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument(
        "--connections", type=int, default=0, help="the client's open connections at most (0: no limit, as WeChat)"
    )
    parser.add_argument("--profile", action="store_true", help="run the servers under cProfile (hot spots on stderr)")
    parser.add_argument("--parallel", type=int, default=100, help="users walking the set-up at once")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the rush; exit 1 when a check failed."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.users, args.capacity = min(args.users, 500), min(args.capacity, 20)
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_table(report)
    return 0 if report["answers_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
