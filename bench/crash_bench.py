"""Crash benchmark: kill -9 a vaxbot process in the middle of a burst; count lost and repeated messages.

For each platform (WeChat, Alipay) and database (SQLite; PostgreSQL when ``VAXBOT_TEST_POSTGRES_URL`` is
set), one or more crashes: a ``python -m bot serve`` process takes a burst of signed messages from N users
at once (one "客服电话" each), answered passively or through the outbox, and is killed with SIGKILL once a
share of them has been answered. A second process starts on the same database, the messages that got no
acknowledgement are delivered again (as the platforms retry them), and the bench waits until every user
has an answer. Then, per crash:

* ``lost``: acknowledged messages (a passive reply, ``success`` or a signed ack) never processed;
* ``duplicated``: answers a user read more than once (a passive reply and a push, or two pushes);
* ``processed``: delivery keys recorded, which must equal ``users`` (each message once);
* ``in_flight_sends``: sends the killed worker had claimed and not recorded: the bound on duplicates;
* ``left_in_inbox``: acknowledged messages not yet committed when the process died (recovered from the
  inbox), ``committed_at_kill``, ``recovery_seconds`` from the restart until every user was answered.

The killed worker's leases (a minute) are expired by the bench rather than waited out.

    python bench/crash_bench.py            # 800 users, 2 crashes per platform and database
    python bench/crash_bench.py --quick    # 150 users, one crash each, SQLite only (the tests run it)
    python bench/crash_bench.py --json     # the figures as JSON on stdout (progress on stderr)

Exit status 1 when any acknowledged message was lost, a user was left without an answer, or duplicates
exceed the sends in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from harness import create_database, drop_database, log, machine
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.core.config import (
    DEV_ALIPAY_APP_KEY,
    DEV_ALIPAY_APPID,
    DEV_ALIPAY_PLATFORM_KEY,
    DEV_WECHAT_AES_KEY,
    DEV_WECHAT_APPID,
    DEV_WECHAT_SECRET,
    DEV_WECHAT_TOKEN,
)
from bot.core.keys import generate_dev_keys
from bot.dev.fakes.alipay import FORM_TYPE, AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.platforms.alipay import sign as alipay_sign
from models import OutboxMessage, ProcessedMessage, utcnow

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "客服电话"
PHONE = "400-101-6588"  # in the answer
GATEWAY_PATH = "/gateway.do"
SETTLE_LIMIT = 120.0


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Platform:
    """One platform's side of a crash: signed requests, how to read a response, what each user read."""

    name: str
    path: str
    requests: list[tuple[str, bytes | str, dict[str, str], dict[str, str]]]  # user, body, query, headers
    acknowledged: Callable[[str, int, bytes], bool]
    pushed: Callable[[str], int]
    passive: dict[str, int] = field(default_factory=dict)


def wechat_platform(api: FakeWeChatAPI, users: list[str], base_id: int) -> Platform:
    """WeChat's servers in safe mode; a passive reply counts as the user's answer."""
    sim = WeChatClientSim(DEV_WECHAT_TOKEN, DEV_WECHAT_APPID, DEV_WECHAT_AES_KEY)
    requests = []
    for index, user in enumerate(users):
        signed = sim.sign(sim.text(user, QUESTION, msg_id=base_id + index))
        requests.append((user, signed.body, dict(signed.query), {"Content-Type": "text/xml"}))
    platform = Platform("wechat", "/wechat", requests, lambda *_: False, lambda user: len(api.texts_to(user)))

    def acknowledged(user: str, status: int, body: bytes) -> bool:
        if status != 200:
            return False
        if body == b"success":
            return True
        reply = sim.open_reply(body.decode())
        if reply is None or PHONE not in reply.get("Content", ""):
            raise RuntimeError(f"a wrong passive reply: {body[:200]!r}")
        platform.passive[user] = platform.passive.get(user, 0) + 1
        return True

    platform.acknowledged = acknowledged
    return platform


def alipay_platform(fake: FakeAlipayGateway, keys_dir: Path, users: list[str]) -> Platform:
    """Alipay posting GBK forms; the answer is a custom.send to the fake gateway."""
    sim = AlipayClientSim(
        DEV_ALIPAY_APPID,
        alipay_sign.read_private_key(keys_dir / f"{DEV_ALIPAY_PLATFORM_KEY}_private.pem"),
        alipay_sign.read_public_key(keys_dir / f"{DEV_ALIPAY_APP_KEY}_public.pem"),
        on_interaction=fake.note_interaction,
    )
    requests = [(user, sim.form(sim.text(user, QUESTION)), {}, {"Content-Type": FORM_TYPE}) for user in users]

    def acknowledged(user: str, status: int, body: bytes) -> bool:
        if status != 200:
            return False
        reply = sim.open_reply(body)  # raises on a forged or malformed ack
        return bool(reply.inner)

    return Platform("alipay", "/alipay", requests, acknowledged, lambda user: len(fake.texts_to(user)))


class Server:
    """``python -m bot serve`` on a free port, its output in the scratch directory."""

    def __init__(self, name: str, env: dict[str, str], scratch: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._out = (scratch / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--port", str(self.port)],
            env=env,
            cwd=scratch,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    async def healthy(self, http: aiohttp.ClientSession, within: float = 60.0) -> None:
        """Wait for ``/healthz``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} while starting")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(self.url + "/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError("the server did not start")

    def kill(self) -> None:
        """SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        """Terminate (then kill) and close the log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._out.close()


@contextlib.asynccontextmanager
async def fakes(keys_dir: Path) -> AsyncIterator[tuple[FakeWeChatAPI, FakeAlipayGateway, str, str]]:
    """WeChat's API and Alipay's gateway, faked on loopback in this process."""
    wechat = FakeWeChatAPI(DEV_WECHAT_APPID, DEV_WECHAT_SECRET)
    alipay = FakeAlipayGateway(
        DEV_ALIPAY_APPID,
        alipay_sign.read_public_key(keys_dir / f"{DEV_ALIPAY_APP_KEY}_public.pem"),
        alipay_sign.read_private_key(keys_dir / f"{DEV_ALIPAY_PLATFORM_KEY}_private.pem"),
    )
    runners = []
    urls = []
    for app in (wechat.app(), alipay.app()):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{port}")
    try:
        yield wechat, alipay, urls[0], urls[1] + GATEWAY_PATH
    finally:
        for runner in runners:
            await runner.cleanup()


async def inbox_rows(database_url: str) -> int:
    """Rows in the inbox (on SQLite, its sibling file)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        sibling = path.with_name(f"{path.stem}.inbox{path.suffix}")
        if not sibling.exists():
            return 0
        url = url.set(database=str(sibling))
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(text("SELECT count(*) FROM inbox"))).scalar_one())
    finally:
        await engine.dispose()


async def outbox_count(engine: AsyncEngine, *statuses: str) -> int:
    """Outbox rows in these statuses."""
    async with engine.connect() as connection:
        query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status.in_(statuses))
        return int((await connection.execute(query)).scalar_one())


async def processed_count(engine: AsyncEngine) -> int:
    """Processed delivery keys."""
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(ProcessedMessage))).scalar_one())


async def post(http: aiohttp.ClientSession, server: Server, platform: Platform, index: int) -> tuple[int, bytes] | None:
    """Deliver one request; None when the connection failed or timed out (WeChat's 5 s)."""
    _, body, query, headers = platform.requests[index]
    try:
        async with http.post(server.url + platform.path, params=query, data=body, headers=headers) as response:
            return response.status, await response.read()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def crash_once(
    platform_name: str, database_url: str, keys_dir: Path, scratch: Path, args: argparse.Namespace, run: int
) -> dict[str, Any]:
    """One burst, one kill -9, one restart: the figures of that crash."""
    users = [
        f"o-crash-{run}-{index}" if platform_name == "wechat" else f"2088{run:04d}{index:08d}"
        for index in range(args.users)
    ]
    async with fakes(keys_dir) as (wechat_api, alipay_fake, wechat_base, alipay_gateway):
        platform = (
            wechat_platform(wechat_api, users, 7_000_000 + run * 100_000)
            if platform_name == "wechat"
            else alipay_platform(alipay_fake, keys_dir, users)
        )
        env = {key: value for key, value in os.environ.items() if not key.startswith("VAXBOT_")}
        env.update(
            VAXBOT_ENV="test",
            VAXBOT_ENV_FILE=str(scratch / "absent.env"),
            VAXBOT_HOST="127.0.0.1",
            VAXBOT_PUBLIC_URL="http://127.0.0.1",
            VAXBOT_DATABASE_URL=database_url,
            VAXBOT_KEYS_DIR=str(keys_dir),
            VAXBOT_WECHAT_API_BASE=wechat_base,
            VAXBOT_ALIPAY_GATEWAY=alipay_gateway,
            VAXBOT_SEED_DEMO_DATA="0",
            VAXBOT_RUN_SCHEDULER="0",
            VAXBOT_REPLY_DEADLINE_SECONDS=str(args.deadline),
            VAXBOT_INBOX_LEASE_SECONDS=str(args.lease),
            VAXBOT_OUTBOX_POLL_SECONDS="0.2",
            VAXBOT_CUSTOMER_SERVICE_PHONE=PHONE,
            PYTHONPATH=str(ROOT),
        )
        engine = create_async_engine(database_url)
        first = Server(f"{platform_name}-{run}-first", env, scratch)
        second: Server | None = None
        try:
            connector = aiohttp.TCPConnector(limit=args.connections)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as http:
                await first.healthy(http)
                kill_after = int(args.users * args.kill_at)
                answered = 0
                killed_at = 0.0

                async def one(index: int) -> tuple[int, bytes] | None:
                    nonlocal answered, killed_at
                    result = await post(http, first, platform, index)
                    if result is not None and not killed_at:
                        answered += 1
                        if answered >= kill_after:
                            killed_at = time.monotonic()
                            first.kill()
                    return result

                started = time.monotonic()
                results = await asyncio.gather(*(one(index) for index in range(args.users)))
                if not killed_at:  # fewer answers than the kill waited for: kill it at the burst's end
                    killed_at = time.monotonic()
                    first.kill()
                first.proc.wait(timeout=10)
                acknowledged = [
                    result is not None and platform.acknowledged(users[index], *result)
                    for index, result in enumerate(results)
                ]
                left_in_inbox = await inbox_rows(database_url)
                committed_at_kill = await processed_count(engine)
                in_flight = await outbox_count(engine, "sending")
                async with engine.begin() as connection:
                    await connection.execute(
                        update(OutboxMessage)
                        .where(OutboxMessage.status == "sending")
                        .values(lease_until=utcnow() - timedelta(seconds=1))
                    )
                passive_before = sum(platform.passive.values())
                acks = sum(acknowledged) - passive_before

                restarted = time.monotonic()
                second = Server(f"{platform_name}-{run}-second", env, scratch)
                await second.healthy(http)
                retried = [index for index, ok in enumerate(acknowledged) if not ok]
                for index in retried:  # the platform's retries of what it got no answer for (WeChat: three)
                    for _ in range(3):
                        result = await post(http, second, platform, index)
                        if result is not None and platform.acknowledged(users[index], *result):
                            break
                    else:
                        raise RuntimeError(f"three retries after the restart were not acknowledged: {result!r}")

                def answers(user: str) -> int:
                    return platform.passive.get(user, 0) + platform.pushed(user)

                settle_deadline = time.monotonic() + SETTLE_LIMIT
                while time.monotonic() < settle_deadline:
                    if all(answers(user) for user in users) and not await outbox_count(engine, "pending", "sending"):
                        if await inbox_rows(database_url) == 0:
                            break
                    await asyncio.sleep(0.1)
                settled = time.monotonic()
            async with engine.connect() as connection:
                keys = set((await connection.execute(select(ProcessedMessage.dedupe_key))).scalars().all())
                # A processed message queued its one answer: a user with no outbox row was never processed.
                recipients = set((await connection.execute(select(OutboxMessage.recipient))).scalars().all())
        finally:
            first.stop()
            if second is not None:
                second.stop()
            await engine.dispose()
    counts = {user: answers(user) for user in users}
    acknowledged_users = [user for user, ok in zip(users, acknowledged, strict=True) if ok]
    return {
        "users": len(users),
        "answered_before_kill": answered,
        "acknowledged_before_kill": sum(acknowledged),
        "passive_before_kill": passive_before,
        "acks_before_kill": acks,  # success or a signed ack: the answer is to come through the outbox
        "not_acknowledged": len(retried),
        "kill_after_seconds": round(killed_at - started, 2) if killed_at else None,
        "committed_at_kill": committed_at_kill,
        "left_in_inbox": left_in_inbox,
        "in_flight_sends": in_flight,
        "processed": len(keys),
        "lost": sum(1 for user in acknowledged_users if user not in recipients),
        "unanswered": sum(1 for count in counts.values() if count == 0),
        "duplicated": sum(count - 1 for count in counts.values() if count > 1),
        "recovery_seconds": round(settled - restarted, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every platform × database × crash."""
    postgres_url = "" if args.quick or args.no_postgres else os.environ.get("VAXBOT_TEST_POSTGRES_URL", "")
    report: dict[str, Any] = {
        "machine": machine(),
        "plan": {
            "users": args.users,
            "crashes_per_case": args.runs,
            "kill_when_answered": args.kill_at,
            "reply_deadline_seconds": args.deadline,
            "inbox_lease_seconds": args.lease,
            "connections": args.connections,
        },
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="vaxbot-crash-") as tmp:
        scratch = Path(tmp)
        keys_dir = scratch / "keys"
        generate_dev_keys(keys_dir)
        for database in ("sqlite", "postgres"):
            if database == "postgres" and not postgres_url:
                continue
            for platform in ("wechat", "alipay"):
                crashes = []
                for index in range(args.runs):
                    name = f"crash_{uuid.uuid4().hex[:8]}"
                    if database == "sqlite":
                        url = f"sqlite+aiosqlite:///{scratch / name}.db"
                    else:
                        url = await create_database(postgres_url, name)
                    log(f"{platform} on {database}, crash {index + 1} of {args.runs}")
                    try:
                        figures = await crash_once(platform, url, keys_dir, scratch, args, index)
                    finally:
                        if database == "postgres":
                            await drop_database(postgres_url, name)
                    log("  " + json.dumps(figures))
                    crashes.append(figures)
                report["cases"][f"{platform}/{database}"] = crashes
    report["ok"] = all(
        crash["lost"] == 0
        and crash["unanswered"] == 0
        and crash["processed"] == crash["users"]
        and crash["duplicated"] <= crash["in_flight_sends"]
        for crashes in report["cases"].values()
        for crash in crashes
    )
    report["answers_ok"] = report["ok"]  # the key every bench's quick run is checked by
    return report


def print_table(report: dict[str, Any]) -> None:
    """The figures per crash."""
    columns = ("acked", "passive", "acks", "unacked", "in inbox", "in flight", "lost", "dup", "recovery s")
    print(f"{'case':<18}" + "".join(f"{column:>11}" for column in columns))
    for case, crashes in report["cases"].items():
        for crash in crashes:
            values = (
                crash["acknowledged_before_kill"],
                crash["passive_before_kill"],
                crash["acks_before_kill"],
                crash["not_acknowledged"],
                crash["left_in_inbox"],
                crash["in_flight_sends"],
                crash["lost"],
                crash["duplicated"],
                crash["recovery_seconds"],
            )
            print(f"{case:<18}" + "".join(f"{value:>11}" for value in values))
    print("ok" if report["ok"] else "FAILED: a lost message, an unanswered user or an unbounded duplicate")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="150 users, one crash per platform, SQLite only")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    parser.add_argument("--users", type=int, default=800)
    parser.add_argument("--runs", type=int, default=2, help="crashes per platform and database")
    parser.add_argument("--kill-at", type=float, default=0.6, help="share of users answered when the kill comes")
    parser.add_argument("--deadline", type=float, default=1.0, help="the server's reply deadline (seconds)")
    parser.add_argument("--lease", type=float, default=2.0, help="the server's inbox lease (seconds)")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--no-postgres", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the crashes; exit 1 when anything was lost."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.users, args.runs = min(args.users, 150), 1
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
