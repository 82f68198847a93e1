"""The ``vaxbot`` command as a newcomer meets it: the address it serves, a port already taken, its messages."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

import bot.cli
from bot.core.catalogue import MESSAGES
from bot.core.config import DEV_WECHAT_AES_KEY, DEV_WECHAT_APPID, DEV_WECHAT_TOKEN
from bot.core.keys import load_keyring
from bot.core.pii import Vault
from bot.dev.demo import PARENT
from bot.dev.fakes.wechat import SIM_USER_COOKIE as WECHAT_USER_COOKIE
from bot.dev.fakes.wechat import WeChatClientSim
from bot.showcode.codes import make_payload
from models import utcnow
from tests.helpers import eventually, free_port

STARTUP_TIMEOUT = 60.0
_real_getaddrinfo = socket.getaddrinfo  # taken at import, before the network guard wraps it


def cli_env(home: Path, **overrides: str) -> dict[str, str]:
    """A development environment in ``home``: its own keys and SQLite file, no ``.env``, no demo data."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VAXBOT_")}
    env.update(
        VAXBOT_ENV="development",
        VAXBOT_ENV_FILE=str(home / "no-such.env"),
        VAXBOT_KEYS_DIR=str(home / "keys"),
        VAXBOT_DATABASE_URL=f"sqlite+aiosqlite:///{home / 'vaxbot.db'}",
        VAXBOT_SEED_DEMO_DATA="0",
        VAXBOT_LOG_FORMAT="json",
    )
    env.update(overrides)
    return env


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A loopback port some other program is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


# --- a port already in use ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_taken_port_is_one_bilingual_line_before_any_banner(occupied_port: int, tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "bot", "serve", "--port", str(occupied_port)],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,  # a regression that serves anyway fails here instead of hanging the suite
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""  # no banner, no "is running"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"端口 {occupied_port} 已被占用" in lines[0]
    assert f"port {occupied_port} is already in use" in lines[0]
    assert "Traceback" not in result.stderr
    # Nothing was prepared either: the port is checked before keys and the database.
    assert not (tmp_path / "vaxbot.db").exists() and not (tmp_path / "keys").exists()


def test_in_process_main_reports_a_taken_port_on_the_environment_port_too(
    occupied_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in cli_env(tmp_path, VAXBOT_PORT=str(occupied_port)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(bot.cli, "configure_logging", lambda *args, **kwargs: None)
    assert bot.cli.main(["serve"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == MESSAGES["cli_port_in_use"].format(
        port=occupied_port, address=f"127.0.0.1:{occupied_port}"
    )


def test_an_address_that_cannot_be_bound_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 192.0.2.1 (TEST-NET-1) is never an address of this machine: bind fails with EADDRNOTAVAIL.
    for key, value in cli_env(tmp_path, VAXBOT_HOST="192.0.2.1", VAXBOT_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(bot.cli, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(socket, "getaddrinfo", _numeric_getaddrinfo)
    assert bot.cli.main(["serve"]) == 1
    err = capsys.readouterr().err.strip()
    assert "无法在 192.0.2.1:" in err and "cannot listen on 192.0.2.1:" in err and "\n" not in err


def _numeric_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """Name resolution for a numeric address only (no lookup leaves the machine)."""
    return _real_getaddrinfo(host, *args, **{**kwargs, "flags": kwargs.get("flags", 0) | socket.AI_NUMERICHOST})


# --- the public URL follows the address served ----------------------------------------------------


class Served:
    """``python -m bot serve`` in a child process, its output in files."""

    def __init__(self, args: list[str], env: Mapping[str, str], home: Path) -> None:
        self._out_path, self._err_path = home / "serve.stdout", home / "serve.stderr"
        self._out: IO[bytes] = self._out_path.open("wb")
        self._err: IO[bytes] = self._err_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "bot", "serve", *args],
            env=dict(env),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
        )

    def stdout(self) -> str:
        """What it printed so far."""
        self._out.flush()
        return self._out_path.read_text(encoding="utf-8")

    def output(self) -> str:
        """Both streams, for failure messages."""
        self._err.flush()
        return self.stdout() + "\n--- stderr ---\n" + self._err_path.read_text(encoding="utf-8")[-4000:]

    async def wait_healthy(self, base: str) -> None:
        """Poll ``/healthz`` until it answers; fail early when the process dies."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

            async def healthy() -> bool:
                if self.proc.poll() is not None:
                    pytest.fail(f"serve exited with {self.proc.returncode}\n{self.output()}")
                try:
                    async with http.get(base + "/healthz") as response:
                        return response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await eventually(healthy, "serve is healthy", within=STARTUP_TIMEOUT, every=0.1, debug=self.output)

    def stop(self) -> None:
        """Terminate (then kill) the process and close its files."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._out.close()
        self._err.close()


@pytest.mark.slow
async def test_serve_on_another_port_and_every_interface_sends_links_that_work(tmp_path: Path) -> None:
    port = free_port()
    # Time enough for a loaded machine to answer passively: the link arrives in the webhook's reply.
    env = cli_env(tmp_path, VAXBOT_REPLY_DEADLINE_SECONDS="30", VAXBOT_RUN_SCHEDULER="0")
    served = Served(["--host", "0.0.0.0", "--port", str(port)], env, tmp_path)  # noqa: S104 (the point of the test)
    base = f"http://127.0.0.1:{port}"
    try:
        await served.wait_healthy(base)
        assert f"links in chats:  {base}  " in served.stdout()
        assert f"open {base}/sandbox" in served.stdout()
        assert f"vaxbot is running at {base}  (listening on every interface)" in served.stdout()
        wechat = WeChatClientSim(DEV_WECHAT_TOKEN, DEV_WECHAT_APPID, DEV_WECHAT_AES_KEY)
        user = "o-cli-port-test"
        # A browser keeps cookies (the link's state is bound to it), also for an address like 127.0.0.1.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40), cookie_jar=jar) as http:

            async def say(text: str) -> dict[str, Any]:
                signed = wechat.sign(wechat.text(user, text))
                async with http.post(f"{base}/wechat", params=signed.query, data=signed.body) as response:
                    assert response.status == 200
                    reply = wechat.open_reply(await response.text())
                assert reply is not None, text
                return reply

            await say("实名认证")
            await say(PARENT.name)
            article = await say(PARENT.id_number)
            link = article["Articles"]["item"]["Url"]
            assert link.startswith(f"{base}/"), link
            # The link, the (simulated) WeChat authorisation it goes through as this user, and the face page
            # it leads to, all answer on this port.
            async with http.get(link, cookies={WECHAT_USER_COOKIE: user}) as page:
                assert page.status == 200, await page.text()
                assert str(page.url).startswith(f"{base}/_dev/face/"), page.url
    finally:
        served.stop()


# --- the clinic desk reads Chinese ------------------------------------------------------------------


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised development home (keys, schema, demo clinics) as the working directory."""
    for key, value in cli_env(tmp_path, VAXBOT_SEED_DEMO_DATA="1").items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bot.cli, "configure_logging", lambda *args, **kwargs: None)
    assert bot.cli.main(["init"]) == 0
    return tmp_path


def test_scan_at_an_unknown_clinic_is_chinese(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert bot.cli.main(["clinic", "scan", "--clinic", "NT-XX-99", "VX1:A:1:B"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == MESSAGES["cli_clinic_unknown"].format(clinic="NT-XX-99")


def test_scan_at_a_clinic_outside_the_pilot_regions_is_refused_in_chinese(
    desk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert bot.cli.main(["clinic", "scan", "--clinic", "NJ-XW-01", "VX1:A:1:B"]) == 1  # a demo clinic in Nanjing
    captured = capsys.readouterr()
    assert captured.out == ""
    expected = MESSAGES["desk_clinic_not_pilot"].format(clinic="NJ-XW-01", regions="南通市、无锡市")
    assert captured.err.strip() == expected


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("https://example.org/not-a-code", "desk_code_malformed"),
        ("VX1:AAAAAAAAAAAAAAAAAAAAAAAA:9999999999:AAAAAAAAAAAAAAAAAAAAAAAA", "desk_code_forged"),
        ("signed-but-unknown", "desk_code_unknown"),
    ],
)
def test_a_refused_code_is_explained_in_chinese(
    code: str, message: str, desk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if code == "signed-but-unknown":
        vault = Vault(load_keyring(desk / "keys"))
        code = make_payload(vault, "A" * 24, utcnow() + timedelta(minutes=5))
    capsys.readouterr()
    assert bot.cli.main(["clinic", "scan", "--clinic", "NT-CC-01", code]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == MESSAGES[message]


def test_every_refused_scan_is_listed_by_the_audit_command(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vault = Vault(load_keyring(desk / "keys"))
    unknown = make_payload(vault, "A" * 24, utcnow() + timedelta(minutes=5))
    scans = [
        ("NT-XX-99", "VX1:A:1:B", "clinic_unknown"),
        ("NT-CC-01", "https://example.org/not-a-code", "malformed"),
        ("NT-CC-01", "VX1:AAAAAAAAAAAAAAAAAAAAAAAA:9999999999:AAAAAAAAAAAAAAAAAAAAAAAA", "forged"),
        ("NT-CC-01", unknown, "unknown"),
    ]
    for clinic, code, _ in scans:
        assert bot.cli.main(["clinic", "scan", "--clinic", clinic, "--staff", "nurse-7", code]) == 1
    capsys.readouterr()
    assert bot.cli.main(["audit", "show", "--action", "desk_refused"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "4 audit entries (action desk_refused)"
    rows = [line.split()[3:] for line in lines[2:]]
    assert rows == [[f"clinic:{clinic}:nurse-7", "desk_refused", reason, "-", "-", "-"] for clinic, _, reason in scans]


async def _a_shown_code(home: Path) -> tuple[int, str]:
    """A demo child's certificate held by a verified parent, and a code shown for it: (certificate, code)."""
    from sqlalchemy import select

    from bot.core.config import load_settings
    from bot.core.db import create_engine, sessionmaker
    from bot.showcode.codes import issue_code
    from models import Certificate, Guardian, Identity, Vaccinee

    settings = load_settings()
    vault = Vault(load_keyring(home / "keys"))
    engine = create_engine(settings)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            # One of the parent's children (the file lists her as a guardian).
            guardian_of = select(Guardian.vaccinee_id).where(
                Guardian.id_number_hash == vault.digest("id_number", PARENT.id_number)
            )
            child = (await session.scalars(select(Vaccinee).where(Vaccinee.id.in_(guardian_of)))).first()
            assert child is not None
            parent = Identity(
                id_number_hash=vault.digest("id_number", PARENT.id_number),
                id_number_enc=vault.seal("id_number", PARENT.id_number),
                name_enc=vault.seal("name", PARENT.name),
                verified_at=utcnow(),
                verification_method="face",
            )
            session.add(parent)
            await session.flush()
            certificate = Certificate(
                vaccinee_id=child.id, holder_identity_id=parent.id, kind="child", claimed_via="wechat"
            )
            session.add(certificate)
            await session.flush()
            issued = issue_code(
                session,
                vault,
                certificate_id=certificate.id,
                identity_id=parent.id,
                now=utcnow(),
                ttl=timedelta(minutes=5),
            )
            return certificate.id, issued.payload
    finally:
        await engine.dispose()


def test_a_refused_scan_is_in_the_certificates_audit(desk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    certificate, code = asyncio.run(_a_shown_code(desk))
    assert bot.cli.main(["clinic", "scan", "--clinic", "NT-CC-01", "--staff", "nurse-8", code]) == 0
    assert bot.cli.main(["clinic", "scan", "--clinic", "NT-CC-01", "--staff", "nurse-9", code]) == 1
    assert capsys.readouterr().err.strip() == MESSAGES["desk_code_used"]
    assert bot.cli.main(["audit", "show", "--certificate", str(certificate)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"certificate {certificate}: 2 audit entries"
    assert [line.split()[3:6] for line in lines[2:]] == [
        ["clinic:NT-CC-01:nurse-8", "desk_queue", "holder"],
        ["clinic:NT-CC-01:nurse-9", "desk_refused", "used"],
    ]


def test_an_empty_scan_from_standard_input_asks_again(
    desk: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin("\n"))
    capsys.readouterr()
    assert bot.cli.main(["clinic", "scan", "--clinic", "NT-CC-01"]) == 1
    assert capsys.readouterr().err.strip() == MESSAGES["cli_scan_empty"]


class _Stdin:
    """Standard input that is not a terminal, holding one line."""

    def __init__(self, line: str) -> None:
        self._line = line

    def isatty(self) -> bool:
        """Never a terminal: no prompt is printed."""
        return False

    def readline(self) -> str:
        """The line."""
        return self._line


def test_scan_without_a_database_tells_the_nurse_and_the_operator(
    desk: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (desk / "empty").mkdir()
    monkeypatch.setenv("VAXBOT_DATABASE_URL", f"sqlite+aiosqlite:///{desk / 'empty' / 'never-initialised.db'}")
    capsys.readouterr()
    assert bot.cli.main(["clinic", "scan", "--clinic", "NT-CC-01", "VX1:A:1:B"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == MESSAGES["cli_database_error"].format(problem="OperationalError")
    assert "Traceback" not in err


def test_a_configuration_error_is_one_line_for_the_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in cli_env(tmp_path, VAXBOT_ENV="staging").items():
        monkeypatch.setenv(key, value)
    assert bot.cli.main(["init"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaxbot: VAXBOT_ENV must be development, test or production")
    assert "配置有误" in err and "\n" not in err
