"""Fail closed: development's tools exist only in explicit development, wired to this machine alone.

Every development route is listed from the development app's own router (whatever it serves that the plain
service does not), then asked for in each other combination: VAXBOT_ENV unset, ``test``, ``production``;
development pointed at a real platform or a real face provider refuses to start. Also: the banner tells
where outbound calls go, ``/metrics`` answers only a bearer of its token, and production refuses key
files other users can read.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, unused_port

import bot.cli
from bot.app import create_app
from bot.cli import DEV_ALIPAY_PREFIX, DEV_API_PREFIX, banner, build_serving_app
from bot.core.config import ConfigError, Settings, load_settings
from bot.core.keys import KeyringError, ensure_keyring, generate_dev_keys, generate_key_pair
from bot.dev.fakes.wechat import FakeWeChatAPI
from bot.dev.sandbox import Sandbox
from bot.identity.face.providers import needs_dev_face

NO_ENV_FILE = Path("/nonexistent/.env")
METRICS_TOKEN = "fail-closed-metrics-token-0001"
TEMPLATE = {
    "wechat_reminder_template": "wechat-dose-reminder-0001",
    "alipay_reminder_template": "alipay-0001",
    "wechat_notice_template": "wechat-clinic-notice-0001",
    "alipay_notice_template": "alipay-notice-0001",
}


def routes(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path) ``app`` serves, sub-applications included; a path's variables filled with ``x``."""
    found: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            found |= routes(resource.get_info()["app"])  # its resources carry the prefix already
            continue
        path = "/".join("x" if part.startswith("{") else part for part in resource.canonical.split("/"))
        found |= {(route.method, path or "/") for route in resource}
    return found


@pytest.fixture
def dev_settings(make_settings: Any) -> Settings:
    """Development as ``make run`` has it: every API base on this server's own fakes."""
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    settings: Settings = make_settings(
        env="development",
        port=port,
        public_url=base,
        wechat_api_base=f"{base}{DEV_API_PREFIX}",
        alipay_gateway=f"{base}{DEV_ALIPAY_PREFIX}/gateway.do",
    )
    return settings


@pytest.fixture
def dev_routes(dev_settings: Settings, settings: Settings) -> set[tuple[str, str]]:
    """What the development app serves beyond the plain service: its development routes."""
    extra = routes(build_serving_app(dev_settings)) - routes(create_app(settings, migrate_on_start=False))
    paths = {path for _method, path in extra}
    # The list is what it should be: the sandbox and its API, the platforms' fakes, the face page.
    assert {"/sandbox", "/sandbox/api/reset", "/_dev/wechat/inbox", "/_dev/face/x"} <= paths, sorted(paths)
    assert any(path.startswith(DEV_ALIPAY_PREFIX) for path in paths)
    assert all(path.startswith(("/sandbox", "/_dev/")) for path in paths), sorted(paths)
    return extra


def real_material(home: Path, **overrides: Any) -> dict[str, Any]:
    """Settings a real deployment could have (non-development keyring 0600, own Alipay keys, templates…)."""
    home.mkdir(parents=True, exist_ok=True)
    vault = home / "vault.json"
    vault.write_text(
        json.dumps(
            {
                "dev": False,
                "active_kid": 1,
                "data_keys": {"1": base64.b64encode(secrets.token_bytes(32)).decode()},
                "hash_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        )
    )
    vault.chmod(0o600)
    ours, _ = generate_key_pair(home / "alipay", "ours")
    _, theirs = generate_key_pair(home / "alipay", "theirs")
    return {
        "keys_dir": home,
        "wechat_appid": "wx1234567890abcdef",
        "wechat_secret": secrets.token_hex(16),
        "wechat_token": secrets.token_hex(8),
        "wechat_aes_key": base64.b64encode(secrets.token_bytes(32)).decode()[:43],
        "alipay_appid": "2021004100000001",
        "alipay_private_key": str(ours),
        "alipay_public_key": str(theirs),
        "public_url": "https://vaxbot.example.org",
        "wechat_oauth_base": "https://open.weixin.qq.com",
        "alipay_oauth_base": "https://openauth.alipay.com",
        "face_provider_wechat": "wechat_mini",
        "face_provider_alipay": "alipay",
        **TEMPLATE,
        **overrides,
    }


async def _statuses(client: TestClient[Any, Any], wanted: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    statuses = {}
    for method, path in sorted(wanted):
        response = await client.request(method, path)
        statuses[(method, path)] = response.status
    return statuses


# --- development routes -------------------------------------------------------------------------


async def test_development_serves_its_tools(dev_settings: Settings, aiohttp_client: Any) -> None:
    assert dev_settings.dev_tools and needs_dev_face(dev_settings)
    client = await aiohttp_client(build_serving_app(dev_settings))
    assert (await client.get("/sandbox")).status == 200
    assert (await client.get("/_dev/wechat/inbox", params={"touser": "o-x"})).status == 200


@pytest.mark.parametrize("env", ["", "production"])
async def test_no_development_route_outside_development(
    env: str, dev_routes: set[tuple[str, str]], make_settings: Any, tmp_path: Path, aiohttp_client: Any
) -> None:
    # Real-looking credentials with VAXBOT_ENV unset: production's rules, so it starts, and serves no tool.
    settings = dataclasses.replace(make_settings(env=env), **real_material(tmp_path / "keys"))
    assert settings.production and not settings.dev_tools and not needs_dev_face(settings)
    client = await aiohttp_client(build_serving_app(settings))
    statuses = await _statuses(client, dev_routes)
    assert set(statuses.values()) == {404}, statuses
    assert (await client.get("/metrics")).status == 404  # no token configured: not served
    assert (await client.get("/healthz")).status == 200


async def test_no_development_route_in_the_test_environment(
    dev_routes: set[tuple[str, str]], settings: Settings, aiohttp_client: Any
) -> None:
    assert settings.env == "test" and not settings.dev_tools
    client = await aiohttp_client(build_serving_app(settings))
    statuses = await _statuses(client, dev_routes)
    assert set(statuses.values()) == {404}, statuses


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("VAXBOT_WECHAT_API_BASE", "https://api.weixin.qq.com", "VAXBOT_WECHAT_API_BASE points at api.weixin.qq.com"),
        ("VAXBOT_WECHAT_API_BASE", "http://10.1.2.3:8080", "points at 10.1.2.3, not this machine"),
        ("VAXBOT_ALIPAY_GATEWAY", "https://openapi.alipay.com/gateway.do", "VAXBOT_ALIPAY_GATEWAY points at"),
        ("VAXBOT_FACE_PROVIDER_WECHAT", "tencent", "VAXBOT_FACE_PROVIDER_WECHAT is tencent, a real face provider"),
        ("VAXBOT_FACE_PROVIDER_WECHAT", "wechat_mini", "a real face provider"),
        ("VAXBOT_FACE_PROVIDER_ALIPAY", "alipay", "VAXBOT_FACE_PROVIDER_ALIPAY is alipay"),
    ],
)
def test_development_wired_to_a_real_service_refuses_to_start(
    variable: str, value: str, complaint: str, dev_settings: Settings
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"VAXBOT_ENV": "development", variable: value}, env_file=NO_ENV_FILE)
    message = str(info.value)
    assert message.startswith("refusing to start in development: ") and complaint in message
    assert "VAXBOT_ENV=production" in message  # says what to do instead
    # Settings built some other way are refused by the app itself, before anything is mounted.
    field = variable.removeprefix("VAXBOT_").lower()
    mixed = dataclasses.replace(dev_settings, **{field: value})
    assert not mixed.dev_tools and not needs_dev_face(mixed)
    with pytest.raises(ConfigError, match="refusing to start in development"):
        build_serving_app(mixed)


def test_loopback_fakes_with_their_own_credentials_stay_possible() -> None:
    for base in ("http://127.0.0.1:9/x", "http://localhost:8080", "http://[::1]:8080/_dev/wechat"):
        settings = load_settings(
            environ={"VAXBOT_ENV": "development", "VAXBOT_WECHAT_API_BASE": base, "VAXBOT_WECHAT_SECRET": "own"},
            env_file=NO_ENV_FILE,
        )
        assert settings.dev_tools, base


def test_development_served_on_a_lan_address_keeps_its_own_fakes() -> None:
    lan = {"VAXBOT_ENV": "development", "VAXBOT_HOST": "192.0.2.1", "VAXBOT_PORT": "8080"}
    settings = load_settings(environ=lan, env_file=NO_ENV_FILE)
    assert settings.wechat_api_base == "http://192.0.2.1:8080/_dev/wechat" and settings.dev_tools
    with pytest.raises(ConfigError, match=r"VAXBOT_WECHAT_API_BASE points at 192\.0\.2\.1"):
        load_settings(environ={**lan, "VAXBOT_WECHAT_API_BASE": "http://192.0.2.1:9000/cgi"}, env_file=NO_ENV_FILE)


def test_an_unset_environment_gets_production_rules_and_says_how_to_choose(tmp_path: Path) -> None:
    unset = load_settings(environ={}, env_file=NO_ENV_FILE)
    assert unset.env == "" and unset.production and not unset.dev_tools
    assert unset.wechat_api_base == "https://api.weixin.qq.com"  # not redirected to fakes that are not there
    development = load_settings(environ={"VAXBOT_ENV": "development", "VAXBOT_PORT": "8123"}, env_file=NO_ENV_FILE)
    assert development.wechat_api_base == "http://127.0.0.1:8123/_dev/wechat"
    assert development.alipay_gateway == "http://127.0.0.1:8123/_dev/alipay/gateway.do"
    # A keys directory with development keys, and VAXBOT_ENV forgotten: refused, with the way out.
    generate_dev_keys(tmp_path)
    forgotten = load_settings(environ={"VAXBOT_KEYS_DIR": str(tmp_path)}, env_file=NO_ENV_FILE)
    with pytest.raises(ConfigError) as info:
        create_app(forgotten)
    assert "development keys" in str(info.value)
    assert "VAXBOT_ENV is not set" in str(info.value) and "VAXBOT_ENV=development" in str(info.value)


def test_serve_with_the_environment_unset_generates_nothing_and_explains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [key for key in os.environ if key.startswith("VAXBOT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("VAXBOT_ENV_FILE", str(tmp_path / "no-such.env"))
    monkeypatch.setenv("VAXBOT_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("VAXBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'vaxbot.db'}")
    monkeypatch.setenv("VAXBOT_PORT", str(unused_port()))
    monkeypatch.setattr(bot.cli, "configure_logging", lambda *args, **kwargs: None)
    assert bot.cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "no keyring" in err and "VAXBOT_ENV is not set" in err and "\n" not in err.strip()
    assert not (tmp_path / "keys").exists() and not (tmp_path / "vaxbot.db").exists()
    assert bot.cli.main(["keys", "generate-dev"]) == 2
    assert "VAXBOT_ENV=development" in capsys.readouterr().err
    assert not (tmp_path / "keys").exists()


def test_the_test_environment_generates_no_keys(tmp_path: Path) -> None:
    settings = load_settings(environ={"VAXBOT_ENV": "test", "VAXBOT_KEYS_DIR": str(tmp_path)}, env_file=NO_ENV_FILE)
    with pytest.raises(KeyringError, match="no keyring"):
        ensure_keyring(settings)
    assert list(tmp_path.iterdir()) == []


async def test_the_sandbox_reset_refuses_outside_development(settings: Settings, aiohttp_client: Any) -> None:
    # Even mounted by hand, the one destructive sandbox route answers only in development.
    client = await aiohttp_client(Sandbox(settings, FakeWeChatAPI("wx", "s"), None).app())
    assert (await client.post("/api/reset", json={})).status == 404


# --- the banner ---------------------------------------------------------------------------------


def test_the_banner_in_development_names_the_fakes(dev_settings: Settings) -> None:
    text = "\n".join(banner(dev_settings))
    base = dev_settings.public_url
    assert "outbound calls:  all to this machine (nothing leaves it)" in text
    assert f"the built-in fake of WeChat's API at {base}/_dev/wechat" in text
    assert f"the built-in fake of Alipay's gateway at {base}/_dev/alipay/gateway.do" in text
    assert f"the simulated face page at {base}/_dev/face" in text
    assert f"open {base}/sandbox" in text
    assert "leaves this machine" not in text


def test_the_banner_with_real_platforms_says_they_leave_the_machine(tmp_path: Path) -> None:
    settings = load_settings(
        environ={},
        env_file=NO_ENV_FILE,
        **real_material(
            tmp_path,
            face_provider_wechat="tencent",
            tencent_secret_id="AKID1",
            database_url=("postgresql+asyncpg://vaxbot:dbpass-0042@db.internal/vaxbot"),
        ),
    )
    text = "\n".join(banner(settings))
    assert "to real hosts" in text and "nothing leaves" not in text
    assert "https://api.weixin.qq.com (leaves this machine)" in text
    assert "https://openapi.alipay.com/gateway.do (leaves this machine)" in text
    assert "https://faceid.tencentcloudapi.com (leaves this machine)" in text
    assert "sandbox" not in text and "_dev" not in text and "vaxbot chat" not in text
    assert "environment:     unset: production's rules apply" in text
    assert "dbpass-0042" not in text and "db.internal/vaxbot" in text


def test_the_banner_for_a_test_server_on_loopback(settings: Settings) -> None:
    text = "\n".join(banner(settings))
    assert f"{settings.wechat_api_base} (a server on this machine)" in text
    assert "built-in fake" not in text and "sandbox" not in text
    assert "metrics:         off (set VAXBOT_METRICS_TOKEN" in text


# --- metrics --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["development", "test"])
async def test_metrics_answer_only_the_bearer_of_the_token(
    env: str, dev_settings: Settings, make_settings: Any, aiohttp_client: Any
) -> None:
    settings = dataclasses.replace(dev_settings, metrics_token=METRICS_TOKEN)
    if env == "test":
        settings = make_settings(metrics_token=METRICS_TOKEN)
    client = await aiohttp_client(build_serving_app(settings))
    assert (await client.get("/metrics")).status == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + METRICS_TOKEN[:-1] + "2"})
    assert wrong.status == 401 and "vaxbot_" not in await wrong.text()
    assert (await client.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"})).status == 401
    right = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert right.status == 200 and "vaxbot_webhook_requests_total" in await right.text()
    plain = await aiohttp_client(create_app(dataclasses.replace(settings, metrics_token=""), migrate_on_start=False))
    assert (await plain.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).status == 404


def test_production_wants_a_long_metrics_token(tmp_path: Path) -> None:
    short = load_settings(environ={"VAXBOT_ENV": "production", "VAXBOT_METRICS_TOKEN": "abc"}, env_file=NO_ENV_FILE)
    assert "VAXBOT_METRICS_TOKEN is shorter than 16 characters" in short.production_problems(False)
    assert "abc" not in repr(short) and "metrics_token=<hidden>" in repr(short)


# --- key files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_production_refuses_a_keyring_other_users_can_read(mode: int, tmp_path: Path) -> None:
    settings = load_settings(environ={"VAXBOT_ENV": "production"}, env_file=NO_ENV_FILE, **real_material(tmp_path))
    assert create_app(settings) is not None  # 0600: starts
    vault = tmp_path / "vault.json"
    vault.chmod(mode)
    for attempt in (lambda: create_app(settings), lambda: ensure_keyring(settings)):
        with pytest.raises(KeyringError) as info:
            attempt()
        message = str(info.value)
        assert str(vault) in message and f"mode {mode:04o}" in message and f"chmod 600 {vault}" in message
        assert json.loads(vault.read_text(encoding="utf-8"))["hash_key"] not in message  # the file, not its content


def test_production_refuses_an_alipay_private_key_other_users_can_read(tmp_path: Path) -> None:
    settings = load_settings(environ={"VAXBOT_ENV": "production"}, env_file=NO_ENV_FILE, **real_material(tmp_path))
    private = Path(settings.alipay_private_key)
    private.chmod(0o644)
    with pytest.raises(KeyringError, match=re.escape(f"chmod 600 {private}")):
        create_app(settings)


def test_the_test_environment_does_not_check_modes(settings: Settings, tmp_path: Path) -> None:
    generate_dev_keys(tmp_path)
    (tmp_path / "vault.json").chmod(0o644)
    assert create_app(dataclasses.replace(settings, keys_dir=tmp_path)) is not None


def test_refusals_name_hosts_never_credentials() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={"VAXBOT_ENV": "development", "VAXBOT_WECHAT_API_BASE": "https://u:pa55word@api.example.org/?k=s3"},
            env_file=NO_ENV_FILE,
        )
    message = str(info.value)
    assert "api.example.org" in message and "pa55word" not in message and "k=s3" not in message
