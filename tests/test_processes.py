"""Real ``vaxbot`` processes: two servers on one database, crash recovery, graceful shutdown, the CLI.

Every server here is ``python -m bot serve`` in its own process, configured through ``VAXBOT_*``
variables, listening on a free loopback port and calling the fake WeChat API served by the test on
loopback. Processes are always ended in ``finally`` blocks, by their own handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.core.config import DEV_WECHAT_AES_KEY, DEV_WECHAT_APPID, DEV_WECHAT_SECRET, DEV_WECHAT_TOKEN, Settings
from bot.core.db import create_engine, sessionmaker
from bot.dev.fakes.wechat import FakeWeChatAPI, SignedRequest, WeChatClientSim
from bot.outbox.queue import SCRUBBED_MESSAGE
from models import ConversationState, OutboxMessage, PlatformAccount, ProcessedMessage, utcnow
from tests.helpers import PATIENCE_SECONDS, Gate, eventually, free_port

STARTUP_TIMEOUT = 30.0
FAQ_PHONE = "400-101-6588"  # in the answer to "客服电话"


# --- the fake WeChat API, on loopback --------------------------------------------------------


@dataclasses.dataclass
class FakePlatform:
    """The fake WeChat API served by this test, with a gate that counts calls as they arrive and holds them."""

    api: FakeWeChatAPI
    base_url: str
    gate: Gate

    def hold(self, path: str) -> None:
        """Calls to ``/cgi-bin/<path>`` wait (after being counted as arrived) until :meth:`release`."""
        self.gate.hold("/cgi-bin/" + path)

    def release(self, path: str) -> None:
        """Let held calls to ``path`` (and later ones) through."""
        self.gate.release("/cgi-bin/" + path)

    def arrived(self, path: str) -> int:
        """How many calls to ``/cgi-bin/<path>`` have reached the fake so far."""
        return self.gate.arrived("/cgi-bin/" + path)


@pytest.fixture
async def fake_platform(aiohttp_server: AiohttpServer) -> AsyncIterator[FakePlatform]:
    """``FakeWeChatAPI`` with the development app id and secret, on 127.0.0.1."""
    api = FakeWeChatAPI(DEV_WECHAT_APPID, DEV_WECHAT_SECRET)
    gate = Gate()
    server = await aiohttp_server(gate.install(api.app()))
    try:
        yield FakePlatform(api, str(server.make_url("")).rstrip("/"), gate)
    finally:
        gate.release_all()


# --- server processes ------------------------------------------------------------------------


def clean_environ() -> dict[str, str]:
    """This process's environment without any ``VAXBOT_*`` setting (the tests choose every one)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("VAXBOT_")}


def server_env(database_url: str, keys_dir: Path, api_base: str, **overrides: str) -> dict[str, str]:
    """Settings for a test server: loopback only, test environment, no demo data, no ``.env`` file."""
    env = clean_environ()
    env.update(
        VAXBOT_ENV="test",
        VAXBOT_ENV_FILE=str(keys_dir / "no-such.env"),
        VAXBOT_HOST="127.0.0.1",
        VAXBOT_PUBLIC_URL="http://127.0.0.1",
        VAXBOT_DATABASE_URL=database_url,
        VAXBOT_KEYS_DIR=str(keys_dir),
        VAXBOT_WECHAT_API_BASE=api_base,
        VAXBOT_SEED_DEMO_DATA="0",
        VAXBOT_RUN_OUTBOX_WORKER="1",
        VAXBOT_OUTBOX_POLL_SECONDS="0.2",
        VAXBOT_LOG_FORMAT="json",
    )
    env.update(overrides)
    return env


class ServerProcess:
    """One ``python -m bot serve`` child process, its output in files under ``log_dir``."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stdout_path = log_dir / f"{name}.stdout"
        self._stderr_path = log_dir / f"{name}.stderr"
        self._stdout: IO[bytes] = self._stdout_path.open("wb")
        self._stderr: IO[bytes] = self._stderr_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "bot", "serve", "--port", str(self.port)],
            env=dict(env),
            cwd=log_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
        )

    def output(self) -> str:
        """Everything the process wrote so far (for failure messages)."""
        self._stdout.flush()
        self._stderr.flush()
        out = self._stdout_path.read_text(encoding="utf-8", errors="replace")
        err = self._stderr_path.read_text(encoding="utf-8", errors="replace")
        return f"--- {self.name} stdout ---\n{out}\n--- {self.name} stderr ---\n{err[-6000:]}"

    async def wait_healthy(self, within: float = STARTUP_TIMEOUT) -> None:
        """Poll ``GET /healthz`` until it answers 200; fail early when the process dies."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def healthy() -> bool:
                if self.proc.poll() is not None:
                    pytest.fail(f"{self.name} exited with {self.proc.returncode} while starting\n{self.output()}")
                try:
                    async with http.get(self.url + "/healthz") as response:
                        return response.status == 200 and (await response.json())["database"] == "ok"
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await eventually(healthy, f"{self.name} is healthy", within=within, every=0.1, debug=self.output)

    def refuses_connections(self) -> bool:
        """True once the process no longer listens (it is shutting down, or gone)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) != 0

    def requests_read(self) -> int:
        """Open connections to this server whose bytes it has all read (Linux's table of TCP sockets).

        A request the client has finished sending is in the server's hands once its connection has
        nothing left in the receive queue: the process read it and is handling it.
        """
        read = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == self.port and state == "01":  # 01: established
                read += int(queues.split(":")[1], 16) == 0
        return read

    async def wait_exit(self, within: float) -> int | None:
        """The exit code, or None when the process is still running after ``within`` seconds."""
        try:
            return await asyncio.to_thread(self.proc.wait, within)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        """Make sure the process is gone (terminate, then kill) and close its log files."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._stdout.close()
        self._stderr.close()


@contextlib.asynccontextmanager
async def servers(
    count: int, env: Mapping[str, str], log_dir: Path, prefix: str = "server"
) -> AsyncIterator[list[ServerProcess]]:
    """Start ``count`` servers in parallel, wait until each is healthy, always stop them."""
    started: list[ServerProcess] = []
    try:
        for index in range(count):
            started.append(ServerProcess(f"{prefix}-{index}", env, log_dir))
        await asyncio.gather(*(server.wait_healthy() for server in started))
        yield started
    finally:
        for server in started:
            server.stop()


# --- the database, from the test's side ------------------------------------------------------


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on this test's database (the one the server processes share)."""
    engine: AsyncEngine = create_engine(Settings(database_url=database_url))
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


async def outbox_rows(db: async_sessionmaker[AsyncSession], recipient: str | None = None) -> list[OutboxMessage]:
    """Outbox rows (for one recipient), oldest first."""
    async with db() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if recipient is not None:
            query = query.where(OutboxMessage.recipient == recipient)
        return list((await session.scalars(query)).all())


async def processed(db: async_sessionmaker[AsyncSession], dedupe_key: str | None = None) -> int:
    """``processed_messages`` rows (with one delivery key)."""
    async with db() as session:
        query = select(func.count()).select_from(ProcessedMessage)
        if dedupe_key is not None:
            query = query.where(ProcessedMessage.dedupe_key == dedupe_key)
        return int(await session.scalar(query) or 0)


def text_row(recipient: str, content: str, **columns: Any) -> OutboxMessage:
    """An outbox row for a customer-service text, as the engine would have queued it."""
    return OutboxMessage(
        platform="wechat",
        app_id=DEV_WECHAT_APPID,
        recipient=recipient,
        kind="text",
        payload={"content": content},
        **{"status": "pending", "attempts": 0, "available_at": utcnow(), **columns},
    )


async def insert(db: async_sessionmaker[AsyncSession], *rows: OutboxMessage) -> None:
    """Commit ``rows`` in one transaction, with their recipients as users who wrote to us a minute ago."""
    now = utcnow()
    async with db() as session, session.begin():
        for row in rows:
            session.add(
                PlatformAccount(
                    platform="wechat",
                    app_id=DEV_WECHAT_APPID,
                    user_id=row.recipient,
                    following=True,
                    last_inbound_at=now - timedelta(minutes=1),
                    last_interaction_kind="text",
                    created_at=now - timedelta(minutes=1),
                )
            )
        session.add_all(rows)


# --- WeChat calling the servers --------------------------------------------------------------


def wechat_sim() -> WeChatClientSim:
    """WeChat's servers for the development account (safe mode)."""
    return WeChatClientSim(DEV_WECHAT_TOKEN, DEV_WECHAT_APPID, DEV_WECHAT_AES_KEY)


async def deliver(http: aiohttp.ClientSession, server: ServerProcess, request: SignedRequest) -> tuple[int, str]:
    """POST one signed delivery to a server's webhook; (status, body)."""
    async with http.post(
        server.url + "/wechat", params=request.query, data=request.body, headers={"Content-Type": "text/xml"}
    ) as response:
        return response.status, await response.text()


# --- 1. two processes, one database: each message takes effect once ------------------------


@pytest.mark.slow
async def test_two_servers_on_one_database_answer_each_retried_message_once(
    database_url: str, keys_dir: Path, fake_platform: FakePlatform, db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    env = server_env(database_url, keys_dir, fake_platform.base_url)
    sim = wechat_sim()
    messages = [(f"o-two-servers-{index}", sim.next_msg_id()) for index in range(6)]
    async with servers(2, env, tmp_path) as (a, b), aiohttp.ClientSession() as http:
        # Each message is delivered three times at once (WeChat's retries racing the first try),
        # spread over both processes; every message's deliveries race every other message's too.
        deliveries: list[tuple[int, Awaitable[tuple[int, str]]]] = []
        for index, (user, msg_id) in enumerate(messages):
            xml = sim.text(user, "客服电话", msg_id=msg_id)
            targets = (a, a, b) if index % 2 == 0 else (b, a, b)
            deliveries += [(index, deliver(http, target, sim.sign(xml))) for target in targets]
        results = await asyncio.gather(*(call for _, call in deliveries))

        passive: dict[int, list[dict[str, Any]]] = {index: [] for index in range(len(messages))}
        for (index, _), (status, body) in zip(deliveries, results, strict=True):
            assert status == 200, body
            reply = sim.open_reply(body)  # verifies MsgSignature and decrypts, as WeChat does
            if reply is not None:
                assert reply["ToUserName"] == messages[index][0]
                assert FAQ_PHONE in reply["Content"]
                passive[index].append(reply)

        async def settled() -> bool:
            return all(row.status not in ("pending", "sending") for row in await outbox_rows(db))

        # A reply that missed the deadline is held a moment, then sent by a worker: wait for that.
        await eventually(settled, "the outbox settles", debug=lambda: a.output() + b.output())

    for index, (user, msg_id) in enumerate(messages):
        sent = fake_platform.api.texts_to(user)
        assert all(FAQ_PHONE in text for text in sent)
        assert len(passive[index]) + len(sent) == 1, (user, passive[index], sent)
        assert await processed(db, f"msg:{msg_id}") == 1
        rows = await outbox_rows(db, user)
        assert [row.status for row in rows] == (["passive"] if passive[index] else ["sent"])
    assert await processed(db) == len(messages)


# --- 2. the outbox survives crashes ---------------------------------------------------------


@pytest.mark.slow
async def test_outbox_is_delivered_after_a_crash_and_by_another_process(
    database_url: str, keys_dir: Path, fake_platform: FakePlatform, db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    api = fake_platform.api
    env = server_env(database_url, keys_dir, fake_platform.base_url)
    # Left by an earlier process: one row due, one claimed by a worker that died (its lease has expired).
    await insert(
        db,
        text_row("o-crash-1", "queued before start"),
        text_row(
            "o-crash-2",
            "claimed by a dead worker",
            status="sending",
            attempts=1,
            lease_until=utcnow() - timedelta(seconds=5),
        ),
    )

    first = ServerProcess("first", env, tmp_path)
    second: ServerProcess | None = None
    try:
        await first.wait_healthy()

        async def first_two_delivered() -> bool:
            return bool(api.texts_to("o-crash-1") and api.texts_to("o-crash-2"))

        await eventually(first_two_delivered, "rows left by earlier processes are delivered", debug=first.output)
        assert api.texts_to("o-crash-1") == ["queued before start"]
        assert api.texts_to("o-crash-2") == ["claimed by a dead worker"]
        # The worker records the outcome right after the send; wait for it, not for the fake.

        async def recorded() -> bool:
            return [row.status for row in await outbox_rows(db)] == ["sent", "sent"]

        await eventually(recorded, "both rows marked sent", debug=first.output)

        # Now crash the first process in the middle of delivering: WeChat rotates the token, the worker
        # goes to fetch a new one (holding the token row lock) and the process is killed right there.
        api.expire_all_tokens()
        fake_platform.hold("stable_token")
        fetches_before = fake_platform.arrived("stable_token")
        await insert(
            db, text_row("o-crash-3", "sent while the process died"), text_row("o-crash-4", "also in that batch")
        )

        async def fetching() -> bool:
            return fake_platform.arrived("stable_token") > fetches_before

        await eventually(fetching, "the worker is mid-delivery (fetching a token)", debug=first.output)
        first.kill()
        assert await first.wait_exit(10) == -signal.SIGKILL
        fake_platform.release("stable_token")

        rows = {row.recipient: row for row in await outbox_rows(db)}
        assert api.texts_to("o-crash-3") == [] and api.texts_to("o-crash-4") == []
        # The killed worker had claimed both: they are leased to a process that no longer exists.
        assert (rows["o-crash-3"].status, rows["o-crash-4"].status) == ("sending", "sending")
        assert rows["o-crash-3"].lease_until is not None and rows["o-crash-3"].lease_until > utcnow()

        # The lease (a minute) runs out; simulate that instead of waiting for it.
        async with db() as session, session.begin():
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.status == "sending")
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )

        second = ServerProcess("second", env, tmp_path)
        await second.wait_healthy()

        async def all_sent() -> bool:
            rows = await outbox_rows(db)
            return len(rows) == 4 and all(row.status == "sent" for row in rows)

        await eventually(all_sent, "the second process delivers what the first left", debug=second.output)
    finally:
        first.stop()
        if second is not None:
            second.stop()

    # Nothing lost, nothing repeated: the killed worker never got as far as sending its batch.
    assert api.texts_to("o-crash-1") == ["queued before start"]
    assert api.texts_to("o-crash-2") == ["claimed by a dead worker"]
    assert api.texts_to("o-crash-3") == ["sent while the process died"]
    assert api.texts_to("o-crash-4") == ["also in that batch"]
    attempts = {row.recipient: row.attempts for row in await outbox_rows(db)}
    assert attempts == {"o-crash-1": 1, "o-crash-2": 2, "o-crash-3": 2, "o-crash-4": 2}


# --- 3. graceful shutdown ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def users_held(db: async_sessionmaker[AsyncSession], users: Sequence[str]) -> AsyncIterator[None]:
    """Block the engine's work for ``users`` until the block exits.

    The test creates the users' conversation-state rows in a transaction it keeps open: on PostgreSQL
    the engine's insert of the same rows waits for it; on SQLite the open transaction holds the
    database's write lock. Either way their updates cannot commit until this transaction does.
    """
    async with db() as session, session.begin():
        for user in users:
            session.add(
                ConversationState(
                    platform="wechat", app_id=DEV_WECHAT_APPID, user_id=user, data={}, version=0, updated_at=utcnow()
                )
            )
        await session.flush()
        yield


@pytest.mark.slow
async def test_sigterm_answers_in_flight_requests_and_keeps_their_replies(
    database_url: str, keys_dir: Path, fake_platform: FakePlatform, db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    # The signal must land before the deadline: the service's own four seconds leave a loaded machine
    # plenty of room between the server reading the requests and the test noticing.
    deadline = 4.0
    env = server_env(database_url, keys_dir, fake_platform.base_url, VAXBOT_REPLY_DEADLINE_SECONDS=str(deadline))
    sim = wechat_sim()
    users = [f"o-shutdown-{index}" for index in range(3)]
    msg_ids = [sim.next_msg_id() for _ in users]
    server = ServerProcess("draining", env, tmp_path)
    later: ServerProcess | None = None
    try:
        await server.wait_healthy()
        sent: list[object] = []
        trace = aiohttp.TraceConfig()

        async def body_sent(*_: Any) -> None:
            sent.append(None)

        trace.on_request_chunk_sent.append(body_sent)
        async with aiohttp.ClientSession(trace_configs=[trace]) as http:
            async with users_held(db, users):
                calls = [
                    asyncio.create_task(deliver(http, server, sim.sign(sim.text(user, "客服电话", msg_id=msg_id))))
                    for user, msg_id in zip(users, msg_ids, strict=True)
                ]

                def in_the_server() -> bool:
                    return len(sent) >= len(users) and server.requests_read() >= len(users)

                # The requests are in the server (sent, and read by it), their updates blocked.
                await eventually(in_the_server, "the server has read the three requests", debug=server.output)
                assert not any(call.done() for call in calls)
                server.proc.send_signal(signal.SIGTERM)
                # Answered after SIGTERM, at the reply deadline: acknowledged, the reply goes to the outbox.
                results = await asyncio.wait_for(asyncio.gather(*calls), timeout=PATIENCE_SECONDS)
                assert results == [(200, "success")] * len(users)
                # Shutting down (it no longer listens) yet still alive: it waits for the updates it
                # acknowledged, which cannot commit while this block holds their rows.
                await eventually(server.refuses_connections, "the server stops listening", debug=server.output)
                assert server.proc.poll() is None, server.output()
            code = await server.wait_exit(PATIENCE_SECONDS)
            assert code == 0, server.output()

        # The acknowledged updates were committed before the process exited, each recorded once, and
        # their late replies released and delivered by the worker's last pass before it stopped.
        for user, msg_id in zip(users, msg_ids, strict=True):
            assert await processed(db, f"msg:{msg_id}") == 1
            rows = await outbox_rows(db, user)
            assert len(rows) == 1 and rows[0].kind == "text"
            assert rows[0].status == "sent", rows[0].status
            assert rows[0].payload == SCRUBBED_MESSAGE  # delivered: the reply's content is not kept
            [delivered] = fake_platform.api.texts_to(user)
            assert FAQ_PHONE in delivered

        # A restarted process sends nothing twice.
        later = ServerProcess("after-restart", env, tmp_path)
        await later.wait_healthy()
        # A message queued now is delivered after every older row the new worker could have sent again.
        await insert(db, text_row("o-after-restart", "queued after the restart"))
        await eventually(
            lambda: fake_platform.api.texts_to("o-after-restart") == ["queued after the restart"],
            "the restarted worker delivers a new message",
            debug=later.output,
        )
        assert all(len(fake_platform.api.texts_to(user)) == 1 for user in users)
    finally:
        server.stop()
        if later is not None:
            later.stop()
    assert all(FAQ_PHONE in fake_platform.api.texts_to(user)[0] for user in users)


# --- 4. the command line -----------------------------------------------------------------------


def run_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bot <args>`` to completion."""
    return subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "bot", *args],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


PRODUCTION_MATERIAL = {
    "VAXBOT_WECHAT_APPID": "wx5f2c8a1b9d3e4f60",
    "VAXBOT_WECHAT_SECRET": "0f4e9b2c7a1d8e3f5b6c9a0d2e4f6a8b",
    "VAXBOT_WECHAT_TOKEN": "p7Kq2mXv9LrT4sWz",
    "VAXBOT_WECHAT_AES_KEY": "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7sU9w",
    "VAXBOT_PUBLIC_URL": "https://vaxbot.example.org",
    "VAXBOT_ALIPAY_APPID": "",  # a WeChat-only deployment
    "VAXBOT_FACE_PROVIDER_WECHAT": "wechat_mini",
    "VAXBOT_WECHAT_REMINDER_TEMPLATE": "Jx0bN4kR-dose-reminder",
    "VAXBOT_WECHAT_NOTICE_TEMPLATE": "Jx0bN4kR-clinic-notice",
}


@pytest.mark.slow
@pytest.mark.parametrize("keys", ["development", "missing"])
def test_serve_refuses_production_without_real_keys(keys: str, keys_dir: Path, tmp_path: Path) -> None:
    env = clean_environ()
    env.update(
        PRODUCTION_MATERIAL,
        VAXBOT_ENV="production",
        VAXBOT_ENV_FILE=str(tmp_path / "no-such.env"),
        VAXBOT_HOST="127.0.0.1",
        VAXBOT_KEYS_DIR=str(keys_dir if keys == "development" else tmp_path / "empty-keys"),
        VAXBOT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
        VAXBOT_WECHAT_API_BASE="http://127.0.0.1:9",
    )
    port = free_port()
    result = run_cli(["serve", "--port", str(port)], env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    last_line = result.stderr.strip().splitlines()[-1]
    if keys == "development":
        assert last_line.startswith("vaxbot: refusing to start in production: ")
        assert "development keys" in last_line
        # Everything else is production material, so the keys are the only complaint.
        assert "VAXBOT_" not in last_line
    else:
        assert last_line.startswith("vaxbot: no keyring")
        assert not (tmp_path / "empty-keys" / "vault.json").exists()  # never generated in production
        assert not (tmp_path / "prod.db").exists()  # refused before touching the database
    assert "is running" not in result.stdout
    with socket.socket() as probe, pytest.raises(OSError):
        probe.connect(("127.0.0.1", port))


@pytest.mark.slow
def test_init_on_an_empty_directory_creates_keys_database_and_demo_data(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    home.mkdir()
    database = home / "var" / "vaxbot.db"
    env = clean_environ()
    env.update(VAXBOT_ENV="development", VAXBOT_DATABASE_URL=f"sqlite+aiosqlite:///{database}", VAXBOT_HOST="127.0.0.1")

    result = run_cli(["init"], env, home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready: keys, schema, demo data" in result.stdout
    keyring = home / "keys" / "vault.json"
    assert keyring.is_file() and keyring.stat().st_mode & 0o077 == 0
    assert json.loads(keyring.read_text(encoding="utf-8"))["dev"] is True
    assert database.is_file()

    def counts() -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(database)) as connection:
            return {
                table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("alembic_version", "clinics", "vaccinees", "guardians", "doses")
            }

    seeded = counts()
    assert seeded["alembic_version"] == 1
    assert seeded["clinics"] == 4 and seeded["vaccinees"] == 10 and seeded["doses"] > 0

    # Running it again changes nothing: same keys (data stays readable), demo data loaded once.
    key_material = keyring.read_bytes()
    again = run_cli(["init"], env, home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert keyring.read_bytes() == key_material
    assert counts() == seeded


@pytest.mark.slow
async def test_separate_worker_process_delivers_and_stops_cleanly(
    database_url: str, keys_dir: Path, fake_platform: FakePlatform, db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    env = server_env(database_url, keys_dir, fake_platform.base_url)
    await insert(db, text_row("o-worker-1", "第一条"), text_row("o-worker-2", "第二条"))
    log = (tmp_path / "worker.stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stderr=log
    )
    try:

        async def delivered() -> bool:
            return fake_platform.api.texts_to("o-worker-1") == ["第一条"] and fake_platform.api.texts_to(
                "o-worker-2"
            ) == ["第二条"]

        await eventually(delivered, "the worker process delivers both rows")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert [row.status for row in await outbox_rows(db)] == ["sent", "sent"]
