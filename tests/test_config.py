"""Configuration: environment variables, .env files, production refusals."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bot.app import create_app
from bot.core.config import ConfigError, load_settings
from bot.core.keys import Keyring, generate_dev_keys, generate_key_pair
from bot.web.appkeys import ALIPAY


def test_environment_variables_are_read_and_typed(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "VAXBOT_DATABASE_URL": "postgresql+asyncpg://u@h/db",
            "VAXBOT_PORT": "9000",
            "VAXBOT_PILOT_REGIONS": "3206, 3202,3205",
            "VAXBOT_CHILD_BORN_ON_OR_AFTER": "2018-01-01",
            "VAXBOT_RUN_OUTBOX_WORKER": "false",
            "VAXBOT_WECHAT_API_BASE": "http://127.0.0.1:1",
        },
        env_file=tmp_path / "none",
    )
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    assert settings.port == 9000
    assert settings.pilot_regions == ("3206", "3202", "3205")
    assert settings.child_born_on_or_after == date(2018, 1, 1)
    assert settings.run_outbox_worker is False
    assert settings.wechat_api_base == "http://127.0.0.1:1"


def test_env_file_fills_gaps_but_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nVAXBOT_PORT=7000\nVAXBOT_WECHAT_TOKEN="from-file"\n')
    settings = load_settings(environ={"VAXBOT_PORT": "7100"}, env_file=env_file)
    assert settings.port == 7100
    assert settings.wechat_token == "from-file"


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    secrets = {
        "VAXBOT_WECHAT_SECRET": "wsecret-4f9c1a",
        "VAXBOT_WECHAT_TOKEN": "wtoken-77b2e0",
        "VAXBOT_WECHAT_AES_KEY": "K" * 42 + "q",
        "VAXBOT_TENCENT_SECRET_ID": "AKIDtencent-93d1",
        "VAXBOT_TENCENT_SECRET_KEY": "tkey-5e8a0c",
        "VAXBOT_METRICS_TOKEN": "mtoken-0a9d4c7be21f",
        "VAXBOT_DATABASE_URL": "postgresql+asyncpg://vaxbot:dbpass-61fe@db.internal/vaxbot",
    }
    settings = load_settings(environ={**secrets, "VAXBOT_PORT": "9001"}, env_file=tmp_path / "none")
    assert settings.wechat_secret == "wsecret-4f9c1a" and settings.tencent_secret_key == "tkey-5e8a0c"
    for text in (repr(settings), str(settings), f"{settings}", repr([settings])):
        for value in secrets.values():
            assert value not in text
        assert "dbpass" not in text
        # The rest stays readable, and a hidden field still says it exists.
        assert "port=9001" in text and "wechat_secret=<hidden>" in text


def test_keyring_repr_hides_key_bytes() -> None:
    keyring = Keyring(data_keys={1: b"\xaa" * 32}, active_kid=1, hash_key=b"\xbb" * 32, dev=True)
    text = repr(keyring)
    assert "active_kid=1" in text
    assert repr(b"\xaa" * 32)[2:10] not in text and "xbb" not in text


def test_bad_values_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VAXBOT_PORT"):
        load_settings(environ={"VAXBOT_PORT": "eighty"}, env_file=tmp_path / "none")
    with pytest.raises(ConfigError, match="EncodingAESKey"):
        load_settings(environ={"VAXBOT_WECHAT_AES_KEY": "short"}, env_file=tmp_path / "none")
    with pytest.raises(ConfigError, match="VAXBOT_ENV"):
        load_settings(environ={"VAXBOT_ENV": "staging"}, env_file=tmp_path / "none")
    with pytest.raises(ConfigError, match="VAXBOT_CODE_TTL_SECONDS must be at least 60"):
        load_settings(environ={"VAXBOT_CODE_TTL_SECONDS": "0"}, env_file=tmp_path / "none")
    with pytest.raises(ConfigError, match="must not exceed VAXBOT_CODE_PAGE_TTL_SECONDS"):
        load_settings(
            environ={"VAXBOT_CODE_PAGE_TTL_SECONDS": "300", "VAXBOT_CODE_PAGE_CODE_SECONDS": "600"},
            env_file=tmp_path / "none",
        )


def test_empty_aes_key_means_plain_mode_only(tmp_path: Path) -> None:
    settings = load_settings(environ={"VAXBOT_WECHAT_AES_KEY": ""}, env_file=tmp_path / "none")
    assert settings.wechat_safe_mode_available is False


def test_production_refuses_dev_keys_and_dev_secrets(tmp_path: Path) -> None:
    generate_dev_keys(tmp_path)
    settings = load_settings(
        environ={"VAXBOT_ENV": "production", "VAXBOT_KEYS_DIR": str(tmp_path)}, env_file=tmp_path / "x"
    )
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    message = str(info.value)
    assert "development keys" in message
    assert "VAXBOT_WECHAT_SECRET" in message
    assert "VAXBOT_ALIPAY_APPID" in message
    assert "VAXBOT_ALIPAY_PRIVATE_KEY" in message
    assert "VAXBOT_WECHAT_REMINDER_TEMPLATE" in message and "VAXBOT_ALIPAY_REMINDER_TEMPLATE" in message
    assert "https" in message


@pytest.mark.parametrize("alipay", ["off", "configured"])
def test_production_with_real_material_starts(tmp_path: Path, alipay: str) -> None:
    import base64
    import json
    import secrets

    (tmp_path / "vault.json").write_text(
        json.dumps(
            {
                "dev": False,
                "active_kid": 1,
                "data_keys": {"1": base64.b64encode(secrets.token_bytes(32)).decode()},
                "hash_key": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        )
    )
    (tmp_path / "vault.json").chmod(0o600)
    alipay_env = {"VAXBOT_ALIPAY_APPID": "", "VAXBOT_FACE_PROVIDER_WECHAT": "wechat_mini"}  # no Alipay template
    if alipay == "configured":
        ours, _ = generate_key_pair(tmp_path / "alipay", "ours")
        _, theirs = generate_key_pair(tmp_path / "alipay", "theirs")
        alipay_env = {
            "VAXBOT_ALIPAY_APPID": "2021004100000001",
            "VAXBOT_ALIPAY_PRIVATE_KEY": str(ours),
            "VAXBOT_ALIPAY_PUBLIC_KEY": str(theirs),
            "VAXBOT_FACE_PROVIDER_WECHAT": "wechat_mini",
            "VAXBOT_FACE_PROVIDER_ALIPAY": "alipay",
            "VAXBOT_ALIPAY_REMINDER_TEMPLATE": "alipay-dose-reminder-0001",
            "VAXBOT_ALIPAY_NOTICE_TEMPLATE": "alipay-clinic-notice-0001",
        }
    settings = load_settings(
        environ={
            **alipay_env,
            "VAXBOT_ENV": "production",
            "VAXBOT_KEYS_DIR": str(tmp_path),
            "VAXBOT_WECHAT_APPID": "wx1234567890abcdef",
            "VAXBOT_WECHAT_SECRET": secrets.token_hex(16),
            "VAXBOT_WECHAT_TOKEN": secrets.token_hex(8),
            "VAXBOT_WECHAT_AES_KEY": base64.b64encode(secrets.token_bytes(32)).decode()[:43],
            "VAXBOT_PUBLIC_URL": "https://vaxbot.example.org",
            "VAXBOT_WECHAT_REMINDER_TEMPLATE": "wechat-dose-reminder-0001",
            "VAXBOT_WECHAT_NOTICE_TEMPLATE": "wechat-clinic-notice-0001",
        },
        env_file=tmp_path / "x",
    )
    app = create_app(settings)
    assert (ALIPAY in app) is (alipay == "configured")


def test_unreadable_alipay_key_is_explained(tmp_path: Path) -> None:
    generate_dev_keys(tmp_path)
    (tmp_path / "broken.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----\n")
    settings = load_settings(
        environ={
            "VAXBOT_ENV": "test",
            "VAXBOT_KEYS_DIR": str(tmp_path),
            "VAXBOT_ALIPAY_PRIVATE_KEY": str(tmp_path / "broken.pem"),
        },
        env_file=tmp_path / "x",
    )
    with pytest.raises(ConfigError, match="private key"):
        create_app(settings)


EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 (a setting under test, nothing binds it here)


@pytest.mark.parametrize(
    ("environ", "overrides", "expected"),
    [
        ({}, {}, "http://127.0.0.1:8080"),
        ({"VAXBOT_PORT": "9001"}, {}, "http://127.0.0.1:9001"),
        ({"VAXBOT_PORT": "9001"}, {"port": 9002}, "http://127.0.0.1:9002"),  # serve --port wins
        ({"VAXBOT_HOST": EVERY_INTERFACE, "VAXBOT_PORT": "9003"}, {}, "http://127.0.0.1:9003"),  # every interface
        ({}, {"host": "::", "port": 9004}, "http://[::1]:9004"),
        ({"VAXBOT_HOST": "::1"}, {}, "http://[::1]:8080"),
        ({"VAXBOT_HOST": "localhost"}, {}, "http://localhost:8080"),
        ({"VAXBOT_HOST": EVERY_INTERFACE, "VAXBOT_PUBLIC_URL": ""}, {}, "http://127.0.0.1:8080"),  # empty means unset
        ({"VAXBOT_PORT": "9005", "VAXBOT_PUBLIC_URL": "https://vaxbot.example.org"}, {}, "https://vaxbot.example.org"),
        ({"VAXBOT_PUBLIC_URL": "http://192.168.1.20:8080"}, {"port": 9006}, "http://192.168.1.20:8080"),
    ],
)
def test_the_public_url_follows_host_and_port_unless_set(
    environ: dict[str, str], overrides: dict[str, object], expected: str, tmp_path: Path
) -> None:
    settings = load_settings(environ=environ, env_file=tmp_path / "none", **overrides)
    assert settings.public_url == expected


def test_a_public_url_in_the_env_file_is_explicit_too(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("VAXBOT_PUBLIC_URL=https://vaxbot.example.org\n")
    assert load_settings(environ={"VAXBOT_PORT": "9100"}, env_file=env_file).public_url == "https://vaxbot.example.org"


def test_production_still_needs_an_explicit_https_public_url(tmp_path: Path) -> None:
    derived = load_settings(environ={"VAXBOT_ENV": "production", "VAXBOT_PORT": "443"}, env_file=tmp_path / "none")
    assert derived.public_url == "http://127.0.0.1:443"
    assert any(problem.startswith("VAXBOT_PUBLIC_URL must be https") for problem in derived.production_problems(False))
    explicit = load_settings(
        environ={"VAXBOT_ENV": "production", "VAXBOT_PUBLIC_URL": "https://vaxbot.example.org"},
        env_file=tmp_path / "none",
    )
    assert not any("VAXBOT_PUBLIC_URL" in problem for problem in explicit.production_problems(False))


def test_hostile_input_limits_must_be_usable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VAXBOT_BODY_READ_TIMEOUT_SECONDS must be positive"):
        load_settings(environ={"VAXBOT_BODY_READ_TIMEOUT_SECONDS": "0"}, env_file=tmp_path / "none")
    with pytest.raises(ConfigError, match="VAXBOT_CODE_PAGE_MISS_BURST must be at least 1"):
        load_settings(environ={"VAXBOT_CODE_PAGE_MISS_BURST": "0"}, env_file=tmp_path / "none")
    with pytest.raises(ConfigError, match="VAXBOT_CODE_PAGE_ADDRESS_PER_MINUTE positive"):
        load_settings(environ={"VAXBOT_CODE_PAGE_ADDRESS_PER_MINUTE": "-1"}, env_file=tmp_path / "none")
    settings = load_settings(
        environ={"VAXBOT_BODY_READ_TIMEOUT_SECONDS": "2.5", "VAXBOT_CLIENT_ADDRESS_HEADER": "X-Real-IP"},
        env_file=tmp_path / "none",
    )
    assert (settings.body_read_timeout_seconds, settings.client_address_header) == (2.5, "X-Real-IP")
