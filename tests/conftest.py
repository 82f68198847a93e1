"""Test kit: a network guard, per-test databases (SQLite and PostgreSQL), the fake WeChat API, the app."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer
from sqlalchemy.engine import make_url

from bot.app import create_app
from bot.chat.conversation import Router
from bot.core.config import DEV_ALIPAY_APPID, DEV_WECHAT_AES_KEY, DEV_WXMINI_SECRET, Settings, load_settings
from bot.core.db import create_engine, migrate
from bot.core.keys import generate_dev_keys
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.dev.fakes.wxmini import FakeMiniProgramAPI, MiniProgramClientSim
from bot.identity.face.dev import MOUNT as DEV_FACE_MOUNT
from bot.identity.face.dev import DevFace
from bot.platforms.alipay import sign as alipay_sign
from tests.channels import Alipay, Channel, WeChat
from tests.helpers import Client, Gate
from tests.mini_channel import MINI_APPID, MiniProgram

POSTGRES_URL = os.environ.get("VAXBOT_TEST_POSTGRES_URL", "")
REQUIRE_POSTGRES = os.environ.get("VAXBOT_REQUIRE_POSTGRES", "") == "1"


# --- no test touches the real network --------------------------------------------------------

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        raise RuntimeError(f"test tried to reach the network: {address[0]}")
    return _real_connect(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host is not None and not _is_local(host):
        raise RuntimeError(f"test tried to resolve a network name: {host}")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that reaches beyond loopback (connect or name resolution)."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """Put the root logger's handlers and level back after each test.

    ``vaxbot`` commands run in-process call ``configure_logging``, which points the root logger at the
    ``sys.stderr`` of that moment (pytest's capture of that test). Left in place, a later test's warning
    goes to a closed stream and "--- Logging error ---" lands in whatever that test reads from stderr.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _run_blocking(coroutine: Any) -> None:
    """Run a coroutine to completion from sync code, even when an event loop is already running here."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


# --- databases -------------------------------------------------------------------------------

BACKENDS = ["sqlite", "postgres"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, scope="session")


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    generate_dev_keys(path)
    return path


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrations run once, and are tested by it)."""
    path = tmp_path_factory.mktemp("tpl") / "template.db"

    async def build() -> None:
        engine = create_engine(_settings(f"sqlite+aiosqlite:///{path}", Path(".")))
        await migrate(engine)
        await engine.dispose()

    _run_blocking(build())
    return path


def _admin_dsn() -> str:
    url = make_url(POSTGRES_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database used as TEMPLATE for each test's own database."""
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("VAXBOT_REQUIRE_POSTGRES=1 but VAXBOT_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL not configured (set VAXBOT_TEST_POSTGRES_URL); CI runs these")
    import asyncpg

    name = f"vaxbot_tpl_{os.getpid()}"

    async def build() -> None:
        conn = await asyncpg.connect(_admin_dsn())
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        engine = create_engine(_settings(url, Path(".")))
        await migrate(engine)
        await engine.dispose()

    _run_blocking(build())
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(_admin_dsn())
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    _run_blocking(drop())


@pytest.fixture
async def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "vaxbot.db"
        shutil.copyfile(template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    template_name: str = request.getfixturevalue("postgres_template")
    import asyncpg

    name = f"vaxbot_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_admin_dsn())
    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    await conn.close()
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    conn = await asyncpg.connect(_admin_dsn())
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def _settings(database_url: str, keys_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "keys_dir": keys_dir,
        "wechat_aes_key": DEV_WECHAT_AES_KEY,
        "run_outbox_worker": False,
        "run_scheduler": False,
        "seed_demo_data": False,
        "log_format": "json",
    }
    base.update(overrides)
    return load_settings(environ={}, env_file=Path("/nonexistent/.env"), **base)


# --- the fake WeChat and the app -------------------------------------------------------------


@pytest.fixture
async def wechat_gate() -> AsyncIterator[Gate]:
    """Counts the calls reaching the fake WeChat API, and holds those a test asks it to."""
    gate = Gate()
    yield gate
    gate.release_all()


@pytest.fixture
async def fake_wechat(aiohttp_server: AiohttpServer, wechat_gate: Gate) -> tuple[FakeWeChatAPI, str]:
    """The fake WeChat API on loopback: (fake, base URL)."""
    fake = FakeWeChatAPI("wx0000000000de0001", "dev-secret-not-for-production")
    server = await aiohttp_server(wechat_gate.install(fake.app()))
    return fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def fake_alipay(keys_dir: Path, aiohttp_server: AiohttpServer) -> tuple[FakeAlipayGateway, str]:
    """The fake Alipay gateway on loopback: (fake, gateway URL)."""
    fake = FakeAlipayGateway(
        DEV_ALIPAY_APPID,
        alipay_sign.read_public_key(keys_dir / "alipay_app_public.pem"),
        alipay_sign.read_private_key(keys_dir / "alipay_platform_private.pem"),
    )
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("/gateway.do"))


@pytest.fixture
def make_settings(
    database_url: str,
    keys_dir: Path,
    fake_wechat: tuple[FakeWeChatAPI, str],
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> Any:
    """Settings for this test's database and the fake platforms, with overrides."""

    def build(**overrides: Any) -> Settings:
        overrides.setdefault("wechat_api_base", fake_wechat[1])
        overrides.setdefault("wechat_oauth_base", fake_wechat[1])
        overrides.setdefault("alipay_gateway", fake_alipay[1])
        overrides.setdefault("alipay_oauth_base", fake_alipay[1].removesuffix("/gateway.do"))
        return _settings(database_url, keys_dir, **overrides)

    return build


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings()  # type: ignore[no-any-return]


Serve = Callable[..., Awaitable[Client]]


@pytest.fixture
def serve(aiohttp_client: AiohttpClient) -> Serve:
    """Serve the whole service in-process on loopback: ``await serve(settings, router=None)`` gives its client."""

    async def start(settings: Settings, *, router: Router | None = None) -> Client:
        # The test environment mounts no development tool: the simulated face page the journeys use is
        # served by the test itself, beside the app, on loopback.
        face = DevFace(settings.public_url)
        app = create_app(settings, router=router, migrate_on_start=False, dev_face=face)
        app.add_subapp(DEV_FACE_MOUNT, face.app())
        return await aiohttp_client(app)

    return start


@pytest.fixture
async def app_client(serve: Serve, settings: Settings) -> Client:
    """The whole service in-process, served on loopback."""
    return await serve(settings)


@pytest.fixture
def wechat(settings: Settings) -> WeChatClientSim:
    """Plays WeChat's servers calling our webhook."""
    return WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)


@pytest.fixture
def fake(fake_wechat: tuple[FakeWeChatAPI, str]) -> FakeWeChatAPI:
    """The fake WeChat API alone."""
    return fake_wechat[0]


@pytest.fixture
def app(app_client: Client) -> web.Application:
    """The application behind ``app_client``."""
    return app_client.app


@pytest.fixture
def alipay(settings: Settings, fake_alipay: tuple[FakeAlipayGateway, str]) -> AlipayClientSim:
    """Plays Alipay's servers posting to our gateway (signed with the development platform key).

    What the simulated user does is also what the fake gateway knows, so its windows hold.
    """
    return AlipayClientSim(
        settings.alipay_appid,
        alipay_sign.read_private_key(settings.keys_dir / "alipay_platform_private.pem"),
        alipay_sign.read_public_key(settings.keys_dir / "alipay_app_public.pem"),
        on_interaction=fake_alipay[0].note_interaction,
    )


@pytest.fixture(params=["wechat", "alipay"])
def channel(
    request: pytest.FixtureRequest,
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> Channel:
    """A user's side of one platform (each test runs once per platform)."""
    if request.param == "wechat":
        return WeChat(app_client, wechat, fake)
    return Alipay(app_client, alipay, fake_alipay[0])


# --- the WeChat mini program (its tests override ``settings`` to point wxmini_api_base at fake_mini) ---------


@pytest.fixture
async def fake_mini(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[FakeMiniProgramAPI, str, Gate]]:
    """The fake WeChat API of the mini program on loopback: (fake, base URL, gate)."""
    gate = Gate()
    fake = FakeMiniProgramAPI(MINI_APPID, DEV_WXMINI_SECRET)
    server = await aiohttp_server(gate.install(fake.app()))
    yield fake, str(server.make_url("")).rstrip("/"), gate
    gate.release_all()


@pytest.fixture
def mini_sim(settings: Settings) -> MiniProgramClientSim:
    """Plays WeChat pushing the mini program's messages to us."""
    return MiniProgramClientSim(settings.wxmini_token, settings.wxmini_appid, settings.wxmini_aes_key)


@pytest.fixture
def mini(
    app_client: Client, mini_sim: MiniProgramClientSim, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> MiniProgram:
    """A user's side of the mini program's chat (XML pushes)."""
    return MiniProgram(app_client, mini_sim, fake_mini[0])
