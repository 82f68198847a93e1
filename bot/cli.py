"""The ``vaxbot`` command: serve, worker, init, keys, db and platform menus."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.engine import make_url

from bot.app import create_app, refuse_unsafe_production
from bot.chat.menu import alipay_menu, wechat_menu
from bot.core.catalogue import MESSAGES, build_catalogue
from bot.core.config import (
    DEV_ALIPAY_APPID,
    DEV_ALIPAY_PREFIX,
    DEV_WECHAT_PREFIX,
    DEV_WXMINI_PREFIX,
    WILDCARD_HOSTS,
    ConfigError,
    Settings,
    load_settings,
    local_url,
    on_this_machine,
)
from bot.core.db import create_engine, migrate, sessionmaker
from bot.core.keys import KeyringError, ensure_keyring, generate_dev_keys
from bot.core.logs import configure_logging
from bot.core.pii import Vault
from bot.dev.demo import seed_demo
from bot.web.appkeys import ALIPAY_API, WECHAT_API

log = logging.getLogger("vaxbot.cli")
DEV_API_PREFIX = DEV_WECHAT_PREFIX  # where development mounts the fake of WeChat's API


def build_serving_app(settings: Settings) -> web.Application:
    """The app ``serve`` runs: in development only (``settings.dev_tools``), the platforms' fakes and the sandbox."""
    app = create_app(settings, migrate_on_start=False)
    if settings.dev_tools:
        from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
        from bot.dev.fakes.wechat import FakeWeChatAPI
        from bot.dev.sandbox import MOUNT, Sandbox
        from bot.platforms.alipay import sign as alipay_sign

        wechat_fake = FakeWeChatAPI(settings.wechat_appid, settings.wechat_secret)
        app.add_subapp(DEV_API_PREFIX, wechat_fake.app())
        alipay_fake = None
        if settings.alipay_appid == DEV_ALIPAY_APPID:
            alipay_fake = FakeAlipayGateway(
                settings.alipay_appid,
                alipay_sign.read_public_key(settings.keys_dir / "alipay_app_public.pem"),
                alipay_sign.read_private_key(settings.keys_dir / "alipay_platform_private.pem"),
            )
            app.add_subapp(DEV_ALIPAY_PREFIX, alipay_fake.app())
        mini_fake = None
        if settings.wxmini_enabled and settings.wxmini_api_base.endswith(DEV_WXMINI_PREFIX):
            from bot.dev.fakes.wxmini import FakeMiniProgramAPI

            mini_fake = FakeMiniProgramAPI(settings.wxmini_appid, settings.wxmini_secret)
            app.add_subapp(DEV_WXMINI_PREFIX, mini_fake.app())
        app.add_subapp(MOUNT, Sandbox(settings, wechat_fake, alipay_fake, mini_fake).app())
        # The clinic console's sign-in page lists the demo clinic's accounts (their password is public).
        from bot.dev.demo import DEMO_CLINIC, DEMO_STAFF, DEMO_STAFF_PASSWORD
        from bot.web.console.base import DEMO_STAFF as DEMO_STAFF_KEY
        from bot.web.console.base import DemoStaff

        listed = tuple((login, name, role.value) for login, name, role in DEMO_STAFF)
        app[DEMO_STAFF_KEY] = DemoStaff(DEMO_CLINIC, DEMO_STAFF_PASSWORD, listed)
    return app


async def prepare(settings: Settings) -> None:
    """Keys (generated in development), schema, and demo data when enabled."""
    keyring = ensure_keyring(settings)
    refuse_unsafe_production(settings, keyring)  # before touching the database
    engine = create_engine(settings)
    try:
        await migrate(engine, Vault(keyring))
        if settings.seed_demo_data and settings.dev_tools:
            if await seed_demo(sessionmaker(engine), Vault(keyring)):
                log.info("demo data loaded")
    finally:
        await engine.dispose()


# Connections waiting to be accepted. aiohttp's default (128) overflows when thousands of families tap at
# the same moment (a booking rush): the kernel drops the rest and they retry a second or more later.
LISTEN_BACKLOG = 1024


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bind ``host:port`` now (every address the host resolves to), as aiohttp would; raises ``OSError``."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # As asyncio does: an IPv6 socket takes IPv6 only, so "localhost" can bind ::1 and 127.0.0.1.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            # Listen at once so the port is ours alone; connections wait in the backlog until we serve.
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


def _cannot_listen(settings: Settings, exc: OSError) -> str:
    """One line, Chinese then English, saying why the server could not take its address."""
    address = f"{settings.host or '*'}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return MESSAGES["cli_port_in_use"].format(port=settings.port, address=address)
    return MESSAGES["cli_cannot_listen"].format(address=address, reason=exc.strerror or exc)


def cmd_serve(_args: argparse.Namespace, settings: Settings) -> int:
    """Run the webhook server (and, by default, the outbox worker)."""
    try:
        # Before anything else, so a taken port is the first and only thing the operator reads.
        sockets = listening_sockets(settings.host, settings.port)
    except OSError as exc:
        print(_cannot_listen(settings, exc), file=sys.stderr)
        return 1
    try:
        return _serve(settings, sockets)
    finally:
        for sock in sockets:
            sock.close()


def _serve(settings: Settings, sockets: list[socket.socket]) -> int:
    asyncio.run(prepare(settings))
    app = build_serving_app(settings)
    print("\n".join(banner(settings)), flush=True)
    web.run_app(app, sock=sockets, shutdown_timeout=10, print=None, access_log=None)
    return 0


def outbound_targets(settings: Settings) -> list[tuple[str, str, bool]]:
    """Where outbound calls go: (what, address or description, whether it stays on this machine)."""
    served = local_url(settings.host, settings.port)
    builtin = {
        f"{served}{DEV_WECHAT_PREFIX}": "the built-in fake of WeChat's API",
        f"{served}{DEV_ALIPAY_PREFIX}/gateway.do": "the built-in fake of Alipay's gateway",
        f"{served}{DEV_WXMINI_PREFIX}": "the built-in fake of WeChat's API for the mini program",
    }

    def where(url: str) -> tuple[str, bool]:
        if settings.dev_tools and url in builtin:
            return f"{builtin[url]} at {url}", True
        if on_this_machine(url):
            return f"{url} (a server on this machine)", True
        return f"{url} (leaves this machine)", False

    targets = [("WeChat API", *where(settings.wechat_api_base))]
    if settings.alipay_enabled:
        targets.append(("Alipay", *where(settings.alipay_gateway)))
    if settings.wxmini_enabled:
        targets.append(("Mini program", *where(settings.wxmini_api_base)))
    for platform, label in (("wechat", "face (WeChat)"), ("alipay", "face (Alipay)")):
        if platform == "alipay" and not settings.alipay_enabled:
            continue
        name = settings.face_provider_wechat if platform == "wechat" else settings.face_provider_alipay
        if name == "tencent":
            targets.append((label, *where(settings.tencent_faceid_endpoint)))
        elif name == "wechat_mini":
            stays = on_this_machine(settings.wechat_api_base)
            targets.append((label, "WeChat's mini-program face verification, through the WeChat API", stays))
        elif name == "alipay":
            stays = on_this_machine(settings.alipay_gateway)
            targets.append((label, "Alipay certify, through the Alipay gateway", stays))
        elif settings.dev_tools:
            targets.append((label, f"the simulated face page at {settings.public_url}/_dev/face", True))
        else:
            targets.append((label, "the simulated provider, whose page is not served here", True))
    return targets


def banner(settings: Settings) -> list[str]:
    """What ``serve`` prints once it is ready: the addresses it serves and, truthfully, where calls go."""
    mode = "safe/compatible/plain" if settings.wechat_aes_key else "plain"
    base = local_url(settings.host, settings.port)
    everywhere = "  (listening on every interface)" if settings.host in WILDCARD_HOSTS else ""
    alipay = f"{base}/alipay" if settings.alipay_enabled else "off (VAXBOT_ALIPAY_APPID is empty)"
    mini = (
        f"{base}/wechat/mini (WeChat push), {base}/mp/api/v1 (the pages' API)"
        if settings.wxmini_enabled
        else f"{base}/mp/api/v1 (the pages' API; the WeChat mini program is off: VAXBOT_WXMINI_APPID is empty)"
    )
    metrics = (
        f"{base}/metrics  (Authorization: Bearer <VAXBOT_METRICS_TOKEN>)"
        if settings.metrics_token
        else "off (set VAXBOT_METRICS_TOKEN to serve /metrics to a bearer of it)"
    )
    environment = settings.env or "unset: production's rules apply"
    lines = [f"vaxbot is running: open {base}/sandbox to chat as a WeChat or Alipay user"] if settings.dev_tools else []
    lines += [
        f"vaxbot is running at {base}{everywhere}",
        f"  WeChat webhook:  {base}/wechat  ({mode} mode)",
        f"  Alipay gateway:  {alipay}",
        f"  mini programs:   {mini}",
        f"  health:          {base}/healthz",
        f"  metrics:         {metrics}",
        f"  links in chats:  {settings.public_url}  (VAXBOT_PUBLIC_URL)",
        f"  database:        {make_url(settings.database_url).render_as_string(hide_password=True)}",
        f"  environment:     {environment}",
    ]
    targets = outbound_targets(settings)
    local = all(stays for _what, _where, stays in targets)
    lines.append(
        "  outbound calls:  all to this machine (nothing leaves it)"
        if local
        else "  outbound calls:  to real hosts: those marked (leaves this machine) below"
    )
    lines += [f"    {what + ':':<16} {where}" for what, where, _stays in targets]
    if settings.dev_tools:
        from bot.dev.demo import DEMO_CLINIC, DEMO_STAFF, DEMO_STAFF_PASSWORD

        logins = ", ".join(login for login, _name, _role in DEMO_STAFF)
        lines += [
            f"  clinic console:  {base}/clinic/  (demo clinic {DEMO_CLINIC}: {logins}; password {DEMO_STAFF_PASSWORD})",
            "  chat with it:    VAXBOT_ENV=development .venv/bin/vaxbot chat   (as a WeChat user: signed, encrypted)",
            "                   VAXBOT_ENV=development .venv/bin/vaxbot chat --platform alipay   (RSA2-signed)",
        ]
    return lines


def cmd_worker(_args: argparse.Namespace, settings: Settings) -> int:
    """Run only the outbox worker (for deployments with separate worker processes)."""
    settings = dataclasses.replace(settings, run_outbox_worker=True)

    async def main() -> None:
        app = create_app(settings, migrate_on_start=True)
        runner = web.AppRunner(app)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Before the start-up: the worker may deliver (and be told to stop) while the rest still starts.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.setup()  # runs the cleanup contexts' start-up halves: database, client, worker
        log.info("outbox worker running")
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
    return 0


def cmd_init(_args: argparse.Namespace, settings: Settings) -> int:
    """Generate development keys, migrate the database and load demo data."""
    asyncio.run(prepare(settings))
    print("ready: keys, schema" + (", demo data" if settings.seed_demo_data and settings.dev_tools else ""))
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Key management."""
    if args.action == "generate-dev":
        if not settings.dev_tools:
            print(
                "refusing to generate development keys outside development (set VAXBOT_ENV=development)",
                file=sys.stderr,
            )
            return 2
        if (settings.keys_dir / "vault.json").exists() and not args.force:
            print("keys already exist; pass --force to replace them (existing data will no longer open)")
            return 1
        path = generate_dev_keys(settings.keys_dir)
        print(f"development keys written to {path}")
    return 0


def cmd_db(_args: argparse.Namespace, settings: Settings) -> int:
    """Bring the schema up to date."""

    async def main() -> None:
        engine = create_engine(settings)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())
    print("database schema is up to date")
    return 0


def cmd_wechat_menu(_args: argparse.Namespace, settings: Settings) -> int:
    """Push the account menu to WeChat."""

    async def main() -> None:
        app = create_app(dataclasses.replace(settings, run_outbox_worker=False))
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await app[WECHAT_API].create_menu(wechat_menu())
        finally:
            await runner.cleanup()

    asyncio.run(main())
    print("menu pushed to WeChat")
    return 0


def cmd_alipay_menu(_args: argparse.Namespace, settings: Settings) -> int:
    """Push the life account's menu to Alipay (the same menu as WeChat's)."""
    if not settings.alipay_enabled:
        print("the Alipay channel is off (VAXBOT_ALIPAY_APPID is empty)", file=sys.stderr)
        return 2

    async def main() -> None:
        app = create_app(dataclasses.replace(settings, run_outbox_worker=False))
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await app[ALIPAY_API].create_menu(alipay_menu())
        finally:
            await runner.cleanup()

    asyncio.run(main())
    print("menu pushed to Alipay")
    return 0


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    """Chat with a running development server from the terminal, as a WeChat or Alipay user."""
    if not settings.dev_tools:
        print("vaxbot chat is a development tool: it runs only with VAXBOT_ENV=development", file=sys.stderr)
        return 2
    from bot.dev.chat import run_chat

    url = args.url or local_url(settings.host, settings.port)
    if args.platform == "alipay" and not settings.alipay_enabled:
        print("the Alipay channel is off (VAXBOT_ALIPAY_APPID is empty)", file=sys.stderr)
        return 2
    asyncio.run(run_chat(settings, url, args.user, args.mode, input, platform=args.platform))
    return 0


def _since(text: str) -> datetime:
    """``--since``: a China date (from its midnight) or a date and time (China time unless it says otherwise)."""
    from datetime import date, time

    from bot.core.chinatime import CHINA

    try:
        return datetime.combine(date.fromisoformat(text), time(), CHINA)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or a date and time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=CHINA)


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Print audit rows, oldest first: one certificate's, or by action and time (China time; actors are references).

    A chat account's action names the person and the account it came from (``identity:12/account:34``).
    """
    from bot.core.audit import entries_matching
    from bot.core.chinatime import CHINA
    from models import AuditEntry, Certificate

    certificate, action, since = args.certificate, args.audit_action, args.since
    if certificate is None and action is None and since is None:
        print("vaxbot audit show: give --certificate ID, --action ACTION or --since DATE", file=sys.stderr)
        return 2

    async def main() -> Sequence[AuditEntry] | None:
        engine = create_engine(settings)
        try:
            async with sessionmaker(engine)() as session:
                if certificate is not None and await session.get(Certificate, certificate) is None:
                    return None
                return await entries_matching(session, certificate_id=certificate, action=action, since=since)
        finally:
            await engine.dispose()

    entries = asyncio.run(main())
    if entries is None:
        print(f"no certificate with id {certificate}")
        return 0
    counted = f"{len(entries)} audit {'entry' if len(entries) == 1 else 'entries'}"
    filters = [f"action {action}" if action is not None else ""]
    filters.append(f"since {since.astimezone(CHINA).strftime('%Y-%m-%d %H:%M:%S +08:00')}" if since else "")
    described = ", ".join(part for part in filters if part)
    if certificate is not None:
        print(f"certificate {certificate}: {counted}" + (f" ({described})" if described else ""))
        row = "{:<26}  {:<32}  {:<16}  {:<16}  {}"
        print(row.format("time (China)", "actor", "action", "reason", "platform"))
    else:
        print(f"{counted} ({described})")
        row = "{:<26}  {:<32}  {:<16}  {:<16}  {:<8}  {:<11}  {}"
        print(row.format("time (China)", "actor", "action", "reason", "platform", "certificate", "file"))
    for entry in entries:
        at = entry.at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S +08:00")
        cells = [at, entry.actor_ref, entry.action, entry.reason or "-", entry.platform or "-"]
        if certificate is None:  # rows of many certificates, or of none (a forged code, an unknown clinic)
            cells += [_or_dash(entry.certificate_id), _or_dash(entry.vaccinee_id)]
        print(row.format(*cells))
    return 0


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def cmd_clinic_scan(args: argparse.Namespace, settings: Settings) -> int:
    """Scan a shown code at a clinic desk (取号): the text a scanner read, as an argument or on stdin."""
    from sqlalchemy.exc import DBAPIError

    from bot.core.keys import load_keyring
    from bot.desk.notify import FamilyTeller
    from bot.desk.queue import ClinicProblem, ClinicRefused, Ticket, take_number
    from bot.showcode.codes import CodeRejected
    from models import utcnow

    catalogue = build_catalogue(settings)
    vault = Vault(load_keyring(settings.keys_dir, private=settings.production))
    if args.code is not None:
        payload = args.code
    else:
        if sys.stdin.isatty():
            print(catalogue("cli_scan_prompt"), end="", flush=True)
        try:
            payload = sys.stdin.readline()
        except KeyboardInterrupt:  # the nurse changed their mind: no traceback, nothing taken
            print(file=sys.stderr)
            return 130
    if not payload.strip():
        print(catalogue("cli_scan_empty"), file=sys.stderr)
        return 1

    async def main() -> Ticket | str:
        engine = create_engine(settings)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                try:
                    return await take_number(
                        session,
                        vault,
                        catalogue,
                        clinic_code=args.clinic,
                        pilot_regions=settings.pilot_regions,
                        payload=payload,
                        staff=args.staff,
                        now=utcnow(),
                        family=FamilyTeller.from_settings(settings, catalogue),
                    )
                except ClinicRefused as exc:  # refused before the code was read: it is still unspent
                    key = "cli_clinic_unknown" if exc.problem is ClinicProblem.UNKNOWN else "desk_clinic_not_pilot"
                    return catalogue(key, clinic=args.clinic)
                except CodeRejected as exc:
                    return catalogue(f"desk_code_{exc.problem.value}")
        finally:
            await engine.dispose()

    try:
        result = asyncio.run(main())
    except DBAPIError as exc:
        print(catalogue("cli_database_error", problem=type(exc.orig).__name__), file=sys.stderr)
        return 1
    if isinstance(result, str):
        print(result, file=sys.stderr)
        return 1
    values = {
        "number": result.queue_number,
        "name": result.masked_name,
        "id": result.masked_id,
        "birth": result.birth_year_month,
        "role": catalogue(f"desk_role_{result.role}"),
    }
    print(catalogue("desk_ticket_again" if result.already_queued else "desk_ticket", **values))
    return 0


def cmd_clinic_add(args: argparse.Namespace, settings: Settings) -> int:
    """Add a clinic (接种门诊) with its registry code, name and six-digit region code."""
    from bot.desk.clinics import ClinicInvalid, add_clinic

    async def main() -> str:
        engine = create_engine(settings)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                clinic = await add_clinic(
                    session,
                    code=args.code,
                    name=args.name,
                    region_code=args.region,
                    address=args.address,
                    phone=args.phone,
                )
                return f"clinic {clinic.code} added (id {clinic.id}): {clinic.name}"
        finally:
            await engine.dispose()

    try:
        print(asyncio.run(main()))
    except ClinicInvalid as exc:
        print(f"vaxbot: {exc}; nothing was added", file=sys.stderr)
        return 1
    return 0


def cmd_clinic_key(args: argparse.Namespace, settings: Settings) -> int:
    """Issue a clinic API key (its id and secret printed this once, the secret kept sealed), or revoke one."""
    from bot.core.keys import load_keyring
    from bot.desk.clinics import ClinicInvalid, add_api_key, revoke_api_key
    from models import utcnow

    if args.key_action == "revoke":

        async def revoke() -> bool:
            engine = create_engine(settings)
            try:
                async with sessionmaker(engine)() as session, session.begin():
                    return await revoke_api_key(session, args.key_id or "", utcnow())
            finally:
                await engine.dispose()

        if not args.key_id:
            print("vaxbot: name the key to revoke: vaxbot clinic key revoke KEY_ID", file=sys.stderr)
            return 2
        if not asyncio.run(revoke()):
            print(f"vaxbot: no live clinic API key {args.key_id}", file=sys.stderr)
            return 1
        print(f"clinic API key {args.key_id} revoked")
        return 0
    if not args.clinic:
        print("vaxbot: name the clinic: vaxbot clinic key add --clinic CODE", file=sys.stderr)
        return 2
    vault = Vault(load_keyring(settings.keys_dir, private=settings.production))

    async def main() -> str:
        engine = create_engine(settings)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                issued = await add_api_key(session, vault, args.clinic, label=args.label)
                return (
                    f"clinic API key for {args.clinic}\n"
                    f"key id:  {issued.key_id}\n"
                    f"secret:  {issued.secret}\n"
                    "the secret is shown only now: give it to the clinic's system (docs/clinic-api.md)"
                )
        finally:
            await engine.dispose()

    try:
        print(asyncio.run(main()))
    except ClinicInvalid as exc:
        print(f"vaxbot: {exc}; no key was made", file=sys.stderr)
        return 1
    return 0


def _china_moment(text: str) -> datetime:
    """A China date and time (YYYY-MM-DDTHH:MM) as an instant."""
    from bot.core.chinatime import CHINA

    return datetime.fromisoformat(text).replace(tzinfo=CHINA)


def cmd_clinic_slot(args: argparse.Namespace, settings: Settings) -> int:
    """Publish a bookable slot (预约号源), or close a day or one window of it to new bookings."""
    from datetime import date, time

    from bot.booking import lottery, slots
    from bot.core.keys import load_keyring
    from bot.notices.compose import Window, count_booked
    from models import utcnow

    async def main() -> str:
        engine = create_engine(settings)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                clinic = await slots.clinic_by_code(session, args.clinic)
                if clinic is None:
                    raise slots.SlotRefused(f"no clinic {args.clinic}")
                day = date.fromisoformat(args.day)
                if args.slot_action == "close":
                    start = time.fromisoformat(args.start) if args.start else None
                    closed = await slots.close(session, clinic.id, day, utcnow(), start=start)
                    booked = await count_booked(session, clinic.id, [Window(day, start)])
                    if booked:  # undone with the transaction: those families must be told, their bookings handled
                        notice = "a closure notice (the console's 通知 page, or the clinic API)"
                        raise slots.SlotRefused(f"{booked} booking(s) there: close it with {notice}")
                    return f"{closed} slot(s) at {clinic.code} on {day} closed to new bookings"
                price = round(float(args.price) * 100) if args.price else None
                spec = slots.SlotSpec(
                    vaccine_code=args.vaccine,
                    day=day,
                    start=time.fromisoformat(args.start),
                    end=time.fromisoformat(args.end),
                    capacity=args.capacity,
                    opens_at=_china_moment(args.opens) if args.opens else None,
                    funding=slots.Funding.SELF_PAID if price else slots.Funding.PROGRAMME,
                    price_fen=price,
                )
                window = f"{args.vaccine} {day} {args.start}-{args.end}"
                if args.lottery_closes:
                    slot, drawn_by = await lottery.publish_lottery(
                        session,
                        Vault(load_keyring(settings.keys_dir, private=settings.production)),
                        clinic.id,
                        spec,
                        opens_at=_china_moment(args.lottery_opens) if args.lottery_opens else utcnow(),
                        closes_at=_china_moment(args.lottery_closes),
                        confirm_hours=settings.lottery_confirm_hours,
                    )
                    return (
                        f"slot {slot.id} published at {clinic.code}: {window}, {args.capacity} places by lottery"
                        f" {drawn_by.public_id} (seed SHA-256 {drawn_by.seed_sha256})"
                    )
                slot = await slots.publish(session, clinic.id, spec)
                return f"slot {slot.id} published at {clinic.code}: {window}, {args.capacity} places"
        finally:
            await engine.dispose()

    try:
        print(asyncio.run(main()))
    except (slots.SlotRefused, ValueError) as exc:
        print(f"vaxbot: {exc}; nothing was changed", file=sys.stderr)
        return 1
    return 0


def cmd_lottery(args: argparse.Namespace, settings: Settings) -> int:
    """Lotteries (摇号): export the published record, verify one from its file alone, or draw one now."""
    import json

    from bot.booking import draw

    if args.lottery_action == "verify":
        try:
            record = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"vaxbot: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        problems = draw.verify(record) if isinstance(record, dict) else ["not a lottery record"]
        if problems:
            print("MISMATCH: " + "; ".join(problems))
            return 1
        winners = min(int(record.get("places", 0)), len(record["ranking"]))
        print(f"OK: lottery {record['lottery']} reproduced: {len(record['entries'])} entries, {winners} places")
        return 0
    return _lottery_stored(args, settings)


def _lottery_stored(args: argparse.Namespace, settings: Settings) -> int:
    """``lottery export`` and ``lottery draw``: these read (and the draw writes) the database."""
    from bot.booking import draw, lottery
    from bot.core.keys import load_keyring
    from models import utcnow

    vault = Vault(load_keyring(settings.keys_dir, private=settings.production))

    async def main() -> tuple[int, str]:
        engine = create_engine(settings)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                found = await lottery.by_public_id(session, args.lottery)
                if found is None:
                    return 1, f"vaxbot: no lottery {args.lottery}"
                if args.lottery_action == "draw":
                    drawn = await lottery.draw_lottery(session, vault, found.id, utcnow())
                    if not drawn:
                        return 1, f"vaxbot: lottery {found.public_id} was drawn already or registration is still open"
                record = await lottery.published_record(session, found.id)
                assert record is not None
                text = draw.dumps(record)
                if args.lottery_action == "draw":
                    return 0, f"lottery {found.public_id} drawn: {record['entry_count']} entries"
                return 0, text
        finally:
            await engine.dispose()

    status, text = asyncio.run(main())
    if status == 0 and args.lottery_action == "export" and args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        text = f"lottery {args.lottery}: published record written to {args.out}"
    text = text.rstrip("\n")
    print(text, file=sys.stderr if status else sys.stdout)
    return status


def _read_new_password() -> str | None:
    """A new staff password: asked twice at a terminal (not echoed), else the first line of standard input."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("password again: ") != first:
        print("the two passwords differ; nothing was created", file=sys.stderr)
        return None
    return first


def cmd_clinic_staff(args: argparse.Namespace, settings: Settings) -> int:
    """Clinic staff: add one (the password is never an argument), lift a lock-out, or deactivate one."""
    from bot.staff.auth import StaffError, add_staff
    from models import StaffRole

    if args.staff_action in ("unlock", "deactivate"):
        return _staff_change(args, settings)
    try:
        password = _read_new_password()
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        return 130
    if password is None:
        return 1

    async def main() -> int:
        engine = create_engine(settings)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                staff = await add_staff(
                    session,
                    clinic_code=args.clinic,
                    login=args.login,
                    display_name=args.name or args.login,
                    role=StaffRole(args.role),
                    password=password,
                )
                return staff.id
        finally:
            await engine.dispose()

    try:
        staff_id = asyncio.run(main())
    except StaffError as exc:
        print(f"vaxbot: {exc}", file=sys.stderr)
        return 1
    print(f"staff member {staff_id} added to {args.clinic}: login {args.login}, role {args.role}")
    return 0


def _staff_change(args: argparse.Namespace, settings: Settings) -> int:
    """``clinic staff unlock`` / ``deactivate``: one staff member, found by clinic and login."""
    from bot.staff.auth import StaffError, deactivate_staff, unlock_staff
    from models import utcnow

    async def main() -> str:
        engine = create_engine(settings)
        try:
            async with sessionmaker(engine)() as session, session.begin():
                if args.staff_action == "unlock":
                    await unlock_staff(session, clinic_code=args.clinic, login=args.login)
                    return f"{args.login} at {args.clinic} may sign in again"
                ended = await deactivate_staff(session, clinic_code=args.clinic, login=args.login, now=utcnow())
                return f"{args.login} at {args.clinic} can no longer sign in; {ended} open session(s) ended"
        finally:
            await engine.dispose()

    try:
        print(asyncio.run(main()))
    except StaffError as exc:
        print(f"vaxbot: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_registry(args: argparse.Namespace, settings: Settings) -> int:
    """Import a registry file (staged until its effective date, China time), or apply the batches now due."""
    from datetime import date
    from pathlib import Path

    from bot.core.chinatime import china_today
    from bot.core.keys import load_keyring
    from bot.registry.apply import apply_due_batches
    from bot.registry.records import RegistryRejected
    from bot.registry.staging import effective_date, import_registry_file

    keyring = load_keyring(settings.keys_dir, private=settings.production)
    refuse_unsafe_production(settings, keyring)
    vault = Vault(keyring)
    today = china_today()

    async def run_import(path: Path, effective: date) -> str:
        engine = create_engine(settings)
        try:
            summary = await import_registry_file(
                sessionmaker(engine), vault, path, effective_from=effective, today=today, dry_run=args.dry_run
            )
        finally:
            await engine.dispose()
        return summary.describe()

    async def run_apply() -> list[str]:
        engine = create_engine(settings)
        try:
            return [batch.describe() for batch in await apply_due_batches(sessionmaker(engine), vault, today)]
        finally:
            await engine.dispose()

    if args.action == "apply":
        applied = asyncio.run(run_apply())
        print("\n".join(["applied " + line for line in applied]) if applied else "no registry batch is due")
        return 0
    path = Path(args.file)
    try:
        effective = effective_date(args.effective, today)
    except ValueError as exc:
        print(f"vaxbot: {exc}", file=sys.stderr)
        return 2
    if not path.is_file():
        print(f"vaxbot: no such file: {path}", file=sys.stderr)
        return 2
    try:
        print(asyncio.run(run_import(path, effective)))
    except RegistryRejected as exc:
        print(f"{path.name}: refused, nothing written ({len(exc.errors)} error(s)):", file=sys.stderr)
        for number, error in enumerate(exc.errors, 1):
            print(f"  {number}. {error}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="vaxbot", description="Electronic vaccination certificate assistant")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the webhook server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("worker", help="run the outbox worker only").set_defaults(func=cmd_worker)
    sub.add_parser("init", help="keys, schema and demo data").set_defaults(func=cmd_init)
    keys = sub.add_parser("keys", help="key material")
    keys.add_argument("action", choices=["generate-dev"])
    keys.add_argument("--force", action="store_true")
    keys.set_defaults(func=cmd_keys)
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(func=cmd_db)
    wechat = sub.add_parser("wechat", help="WeChat account management")
    wechat.add_argument("action", choices=["menu"])
    wechat.set_defaults(func=cmd_wechat_menu)
    alipay = sub.add_parser("alipay", help="Alipay life account management")
    alipay.add_argument("action", choices=["menu"])
    alipay.set_defaults(func=cmd_alipay_menu)
    chat = sub.add_parser("chat", help="talk to a running development server as a WeChat or Alipay user")
    chat.add_argument("--platform", choices=["wechat", "alipay"], default="wechat")
    chat.add_argument("--user", default="demo-parent")
    chat.add_argument("--url")
    chat.add_argument("--mode", choices=["safe", "compatible", "plain"], default="safe", help="WeChat only")
    chat.set_defaults(func=cmd_chat)
    registry = sub.add_parser("registry", help="import provincial registry files; apply the batches now due")
    registry_actions = registry.add_subparsers(dest="action", required=True)
    registry_import = registry_actions.add_parser("import", help="validate a file whole and stage it")
    registry_import.add_argument("file", help="a .csv or .json file (docs/registry-format.md)")
    registry_import.add_argument(
        "--effective", help="'today' or YYYY-MM-DD (China time); default tomorrow, the nightly rule"
    )
    registry_import.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
    registry_actions.add_parser("apply", help="apply every staged batch whose effective date has come")
    registry.set_defaults(func=cmd_registry)
    clinic = sub.add_parser("clinic", help="clinic desk actions")
    clinic_actions = clinic.add_subparsers(dest="action", required=True)
    scan = clinic_actions.add_parser("scan", help="scan a shown code: take a queue number (取号)")
    scan.add_argument("--clinic", required=True, help="the clinic's registry code")
    scan.add_argument("--staff", default="desk", help="who is scanning (for the audit log)")
    scan.add_argument("code", nargs="?", help="the scanned text; read from standard input when omitted")
    scan.set_defaults(func=cmd_clinic_scan)
    staff = clinic_actions.add_parser("staff", help="the clinic's staff who sign in to the clinic console")
    staff_actions = staff.add_subparsers(dest="staff_action", required=True)
    staff_add = staff_actions.add_parser(
        "add", help="add a staff member; the password is asked for (or read from the first line of stdin)"
    )
    staff_add.add_argument("--clinic", required=True, help="the clinic's registry code")
    staff_add.add_argument("--role", required=True, choices=["registrar", "vaccinator", "observer", "admin"])
    staff_add.add_argument("--login", required=True, help="what they type to sign in (unique within the clinic)")
    staff_add.add_argument("--name", help="the name shown on the console and recorded as vaccinator")
    staff_add.set_defaults(func=cmd_clinic_staff)
    for action, words in (
        ("unlock", "lift a lock-out after wrong passwords"),
        ("deactivate", "a staff member leaves: no more sign-ins, open sessions end now"),
    ):
        change = staff_actions.add_parser(action, help=words)
        change.add_argument("--clinic", required=True, help="the clinic's registry code")
        change.add_argument("--login", required=True)
        change.set_defaults(func=cmd_clinic_staff)
    clinic_add = clinic_actions.add_parser("add", help="add a clinic (接种门诊)")
    clinic_add.add_argument("--code", required=True, help="the registry's clinic code")
    clinic_add.add_argument("--name", required=True, help="the clinic's name, as families read it")
    clinic_add.add_argument("--region", required=True, help="six-digit region code (GB/T 2260)")
    clinic_add.add_argument("--address", default="")
    clinic_add.add_argument("--phone", default="")
    clinic_add.set_defaults(func=cmd_clinic_add)
    clinic_key = clinic_actions.add_parser("key", help="clinic API keys (docs/clinic-api.md)")
    clinic_key.add_argument("key_action", choices=["add", "revoke"])
    clinic_key.add_argument("key_id", nargs="?", help="revoke: the key's id (ck_…)")
    clinic_key.add_argument("--clinic", help="add: the clinic's registry code")
    clinic_key.add_argument("--label", default="", help="what the key is for (the clinic's system)")
    clinic_key.set_defaults(func=cmd_clinic_key)
    clinic_slot = clinic_actions.add_parser("slot", help="bookable slots (预约号源): publish one, or close a day")
    slot_actions = clinic_slot.add_subparsers(dest="slot_action", required=True)
    slot_add = slot_actions.add_parser("add", help="publish one vaccine's window on one day")
    slot_add.add_argument("--clinic", required=True, help="the clinic's registry code")
    slot_add.add_argument("--vaccine", required=True, help="the vaccine code (HepB, HPV9…)")
    slot_add.add_argument("--day", required=True, help="the China date, YYYY-MM-DD")
    slot_add.add_argument("--start", required=True, help="the window's start, HH:MM (China time)")
    slot_add.add_argument("--end", required=True, help="the window's end, HH:MM (China time)")
    slot_add.add_argument("--capacity", required=True, type=int, help="how many places")
    slot_add.add_argument("--opens", help="when booking opens, YYYY-MM-DDTHH:MM China time (default: now)")
    slot_add.add_argument("--price", help="self-paid: the price in yuan shown to families (default: programme, free)")
    slot_add.add_argument(
        "--lottery-closes", help="a lottery slot (摇号): registration closes, YYYY-MM-DDTHH:MM China time"
    )
    slot_add.add_argument("--lottery-opens", help="a lottery slot: registration opens (default: now)")
    slot_add.set_defaults(func=cmd_clinic_slot)
    slot_close = slot_actions.add_parser(
        "close", help="close a day (or the window starting at --start) to new bookings"
    )
    slot_close.add_argument("--clinic", required=True, help="the clinic's registry code")
    slot_close.add_argument("--day", required=True, help="the China date, YYYY-MM-DD")
    slot_close.add_argument("--start", help="only the window starting at HH:MM")
    slot_close.set_defaults(func=cmd_clinic_slot)
    lottery = sub.add_parser("lottery", help="lotteries (摇号): export, verify, draw (docs/lottery.md)")
    lottery_actions = lottery.add_subparsers(dest="lottery_action", required=True)
    lottery_export = lottery_actions.add_parser("export", help="print or write a lottery's published record")
    lottery_export.add_argument("lottery", help="the lottery's public id (LT…)")
    lottery_export.add_argument("--out", help="write the record to this file")
    lottery_export.set_defaults(func=cmd_lottery)
    lottery_verify = lottery_actions.add_parser("verify", help="re-draw a published record from the file alone")
    lottery_verify.add_argument("file", help="the published record (JSON)")
    lottery_verify.set_defaults(func=cmd_lottery)
    lottery_draw = lottery_actions.add_parser("draw", help="draw a lottery whose registration has closed, now")
    lottery_draw.add_argument("lottery", help="the lottery's public id (LT…)")
    lottery_draw.set_defaults(func=cmd_lottery)
    audit = sub.add_parser("audit", help="read the audit log")
    audit.add_argument("action", choices=["show"])
    audit.add_argument("--certificate", type=int, help="the certificate's id")
    audit.add_argument(
        "--action", dest="audit_action", metavar="ACTION", help="only this action (desk_refused, code_page_refused…)"
    )
    audit.add_argument("--since", type=_since, help="from this China date (YYYY-MM-DD) or date and time on")
    audit.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vaxbot`` command."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(**_listen_overrides(args))
        configure_logging(settings.log_level, settings.log_format)
        result: int = args.func(args, settings)
        return result
    except (ConfigError, KeyringError) as exc:
        print(MESSAGES["cli_config_error"].format(problem=exc), file=sys.stderr)
        return 2


def _listen_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``serve --host/--port`` win over ``VAXBOT_HOST``/``VAXBOT_PORT``, and the public URL follows them."""
    return {name: getattr(args, name) for name in ("host", "port") if getattr(args, name, None) is not None}


if __name__ == "__main__":
    raise SystemExit(main())
