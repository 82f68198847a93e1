"""Health records sealed at rest: doses and file profiles are ciphertext, the records and the forecast
still read them, migration 0005 seals a database that held them plain, and delivered replies are scrubbed
from the outbox.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from bot.core.chinatime import china_today
from bot.core.db import alembic_config, create_engine, migrate, sessionmaker
from bot.core.keys import load_keyring
from bot.core.pii import Vault
from bot.dev.demo import CHILD, CHILD_DOSES, GRANDMA, INFANT, INFANT_DOSES, PARENT, seed_demo
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.outbox.queue import PASSIVE_KEPT, SCRUBBED, SCRUBBED_MESSAGE, scrub_delivered
from bot.reminders.doses import plan_reminders
from bot.web.appkeys import METRICS, SERVICES, SESSIONS
from models import (
    Dose,
    DoseDetail,
    DoseSource,
    FileProfile,
    Guardian,
    Reminder,
    ReminderDetail,
    Stage,
    Vaccinee,
    Visit,
    utcnow,
)
from tests.channels import Alipay, Channel, WeChat, authorise, link_in
from tests.helpers import Client, drain_outbox, outbox_rows

# --- what must never be found in plain text -------------------------------------------------------------


def _spellings(day: date) -> list[bytes]:
    """A date as the records, the registry and the database would write it."""
    return [
        day.isoformat().encode(),
        f"{day.year}年{day.month}月{day.day}日".encode(),
        f"{day.year:04d}{day.month:02d}{day.day:02d}".encode(),
    ]


PHONE = "13912345678"  # the grandmother's, given when she is authorised


def _secret_dates() -> set[date]:
    dates = {given for _, _, given in [*CHILD_DOSES, *INFANT_DOSES]}
    dates |= {person.birth for person in (CHILD, INFANT, PARENT, GRANDMA)}
    # The plain effective dates are today's (the demo batch): a dose that day could not be told from them.
    return dates - {china_today()}


def _sqlite_bytes(path: Path) -> bytes:
    """The database file after its WAL is checkpointed into it and truncated (so nothing hides in either)."""
    connection = sqlite3.connect(path)
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        connection.close()
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _found(raw: bytes, dates: Iterable[date]) -> list[str]:
    return [spelling.decode() for day in sorted(dates) for spelling in _spellings(day) if spelling in raw]


# --- the demo journey -----------------------------------------------------------------------------------


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def _verify(client: Client, channel: Channel, user: str, name: str, id_number: str) -> None:
    await channel.do(user, ("click", "HELP_VERIFY"))
    await channel.say(user, name)
    link = link_in(await channel.do(user, ("text", id_number)))
    started = await authorise(client, link, channel.platform, user)  # opened in the asking account's browser
    decided = await client.post(_path(started.headers["Location"]), data={"decision": "pass"}, allow_redirects=False)
    assert "实名认证成功" in await (await client.get(_path(decided.headers["Location"]))).text()
    await drain_outbox(client)


async def _records(channel: Channel, user: str) -> str:
    records = "\n".join(await channel.do(user, ("click", "CERT_RECORDS")))
    if "第1剂" not in records:  # a list to choose from first
        number = next(line.split(".")[0] for line in records.splitlines() if "林*满" in line and "." in line)
        records = await channel.say(user, number)
    return records


async def test_the_demo_journey_leaves_no_dose_or_birth_date_in_plain_text(
    caplog: pytest.LogCaptureFixture,
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
    database_url: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # every log record of the journey, at every level
    services = app_client.app[SERVICES]
    assert await seed_demo(app_client.app[SESSIONS], services.vault)
    on_wechat, on_alipay = WeChat(app_client, wechat, fake), Alipay(app_client, alipay, fake_alipay[0])
    await _verify(app_client, on_wechat, "o-parent", PARENT.name, PARENT.id_number)
    await _verify(app_client, on_alipay, "2088000000000801", PARENT.name, PARENT.id_number)

    listing = "\n".join(await on_wechat.do("o-parent", ("click", "CERT_CLAIM")))
    number = next(line.split(".")[0] for line in listing.splitlines() if "林*满" in line and "." in line)
    await on_wechat.say("o-parent", number)
    assert "申领成功" in await on_wechat.say("o-parent", "同意并申领")
    # …and authorises the grandmother, with her phone number.
    await on_wechat.do("o-parent", ("click", "CERT_GRANT"))
    for answer in ("添加", GRANDMA.name, GRANDMA.id_number, "祖母", PHONE):
        await on_wechat.say("o-parent", answer)
    assert "已授权 1/10 人" in await on_wechat.say("o-parent", "确认授权")

    # The doses still read correctly, in order, with the forecast after them, on both platforms.
    for channel, user in ((on_wechat, "o-parent"), (on_alipay, "2088000000000801")):
        records = await _records(channel, user)
        assert "【乙肝疫苗】" in records or "乙肝" in records
        assert "2023年5月20日" in records and "2024年2月21日" in records
        assert records.index("2023年5月20日") < records.index("2023年6月20日")
        assert "【下一针】" in records and "已逾期" in records  # DTaP 4 and MMR 2 are overdue for this child
    await drain_outbox(app_client)

    # Reminders still plan from the sealed doses: the overdue ones are due now.
    planned = await plan_reminders(app_client.app[SESSIONS], services.vault, services.settings, utcnow())
    assert planned > 0
    async with app_client.app[SESSIONS]() as session:
        opened = [r.detail(services.vault) for r in (await session.scalars(select(Reminder))).all()]
    reminders = {(detail.vaccine_code, detail.dose_number) for detail in opened}
    assert ("DTaP", 4) in reminders and ("HepB", 1) not in reminders
    # Due dates follow from the birth date; the plain send times are today's and tomorrow's.
    secrets = _secret_dates() | {detail.due_on for detail in opened}
    secrets -= {china_today(), china_today() + timedelta(days=1)}

    # Delivered replies are scrubbed: at once when the worker sent them (Alipay), after the retry window
    # when they were the webhook's own answer (WeChat).
    rows = await outbox_rows(app_client)
    assert {row.status for row in rows} <= {"sent", "passive"}
    assert all(row.payload in (SCRUBBED, SCRUBBED_MESSAGE) for row in rows if row.status == "sent")
    passive = [row for row in rows if row.status == "passive"]
    assert any("2023年5月20日" in str(row.payload) for row in passive)  # a WeChat retry still gets its answer
    assert await scrub_delivered(app_client.app[SESSIONS], utcnow() + PASSIVE_KEPT + timedelta(seconds=1)) == len(
        passive
    )
    rows = await outbox_rows(app_client)
    assert rows and all(row.payload == SCRUBBED_MESSAGE for row in rows)

    # Nor do the logs or the metrics hold a date, a name, an ID number or a phone of the family.
    people = [PARENT.name, PARENT.id_number, CHILD.name, CHILD.id_number, GRANDMA.name, GRANDMA.id_number, PHONE]
    logged = "\n".join(json.dumps(record.__dict__, default=str, ensure_ascii=False) for record in caplog.records)
    exported = app_client.app[METRICS].render().decode()
    for where, shown in (("logs", logged), ("metrics", exported)):
        assert _found(shown.encode(), secrets) == [], where
        assert [value for value in people if value in shown] == [], where

    if database_url.startswith("sqlite"):
        raw = _sqlite_bytes(Path(make_url(database_url).database or ""))
        assert _found(raw, secrets) == []
        assert [value for value in people if value.encode() in raw] == []
    else:
        dumped: list[str] = []
        async with app_client.app[SESSIONS]() as session:
            tables = ("doses", "vaccinees", "outbox", "reminders", "audit_log", "grants", "identities")
            for table in (*tables, "guardians", "verifications", "conversation_states", "platform_accounts"):
                # Each row as PostgreSQL writes it out (dates in ISO), as a dump of the database would show it.
                dumped += (await session.scalars(text(f"SELECT CAST(t AS text) FROM {table} AS t"))).all()
        assert _found("\n".join(dumped).encode(), secrets) == []
        assert [value for value in people if value in "\n".join(dumped)] == []


# --- migration 0005 -------------------------------------------------------------------------------------


@pytest.fixture
async def empty_database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database with no schema at all, to migrate step by step."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    from tests.conftest import POSTGRES_URL, _admin_dsn

    request.getfixturevalue("postgres_template")  # skips when PostgreSQL is not configured
    import asyncpg

    name = f"vaxbot_m_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_admin_dsn())
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    conn = await asyncpg.connect(_admin_dsn())
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


REMINDER_DUE = date(2024, 11, 20)  # DTaP 4 at 18 months: the birth date shows through a reminder's due date
PLAIN_DOSES = [
    ("HepB", 1, date(2023, 5, 20), "A1"),
    ("BCG", 1, date(2023, 5, 21), ""),
    ("HepB", 2, date(2023, 6, 20), "B2"),
]


async def test_migration_0005_seals_a_database_that_held_doses_in_plain(
    empty_database_url: str, keys_dir: Path
) -> None:
    vault = Vault(load_keyring(keys_dir))
    from tests.conftest import _settings

    engine = create_engine(_settings(empty_database_url, keys_dir))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0004"))
            await connection.commit()
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO clinics (id, code, name, region_code, address, phone)"
                    " VALUES (7, 'C7', '门诊', '320602', '', '')"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO vaccinees (id, registry_ref, name_enc, sex, birth_date_enc, birth_year, region_code,"
                    " clinic_id, stage, effective_from, updated_at)"
                    " VALUES (1, 'R1', :name, 'M', :birth, 2023, '320602', 7, 'child_clinic', :day, :now)"
                ),
                {
                    "name": vault.seal("name", CHILD.name),
                    "birth": vault.seal("birth_date", CHILD.birth.isoformat()),
                    "day": date(2024, 1, 1),
                    "now": utcnow(),
                },
            )
            await connection.execute(
                text(
                    "INSERT INTO guardians (id, vaccinee_id, id_number_hash, id_number_enc, relationship)"
                    " VALUES (1, 1, :hash, :enc, 'mother')"
                ),
                {"hash": vault.digest("id_number", PARENT.id_number), "enc": vault.seal("id_number", PARENT.id_number)},
            )
            for n, (code, number, given, lot) in enumerate(PLAIN_DOSES, start=1):
                await connection.execute(
                    text(
                        "INSERT INTO doses (id, vaccinee_id, vaccine_code, dose_number, given_on, clinic_id,"
                        " lot_number, source, effective_from, created_at)"
                        " VALUES (:id, 1, :code, :number, :given, 7, :lot, :source, :day, :now)"
                    ),
                    {
                        "id": n,
                        "code": code,
                        "number": number,
                        "given": given,
                        "lot": lot,
                        "source": "clinic" if n == 3 else "registry",
                        "day": date(2024, 1, 1),
                        "now": utcnow(),
                    },
                )
            await connection.execute(
                text(
                    "INSERT INTO reminders (id, job_key, vaccinee_id, kind, vaccine_code, dose_number, due_on,"
                    " send_at, status, created_at)"
                    " VALUES (1, 'dose:1:DTaP:4', 1, 'dose_due', 'DTaP', 4, :due, :now, 'scheduled', :now)"
                ),
                {"due": REMINDER_DUE, "now": utcnow()},
            )
            # A desk visit that points at a dose: the dose keeps its id through the migration.
            await connection.execute(
                text(
                    "INSERT INTO visits (id, vaccinee_id, clinic_id, visit_date, queue_number, status, dose_id,"
                    " queued_at) VALUES (1, 1, 7, :day, 1, 'done', 3, :now)"
                ),
                {"day": date(2024, 1, 2), "now": utcnow()},
            )

        await migrate(engine, vault)

        async with engine.connect() as connection:
            columns = await connection.run_sync(
                lambda sync: {
                    table: {c["name"] for c in inspect(sync).get_columns(table)} for table in ("doses", "vaccinees")
                }
            )
            dumped = "\n".join(str(row) for row in (await connection.execute(text("SELECT * FROM doses"))).all())
        assert columns["doses"] == {"id", "vaccinee_id", "dose_key", "detail_enc", "effective_from", "created_at"}
        assert not {"sex", "birth_year", "region_code", "clinic_id", "stage"} & columns["vaccinees"]
        assert "HepB" not in dumped and "2023-05-20" not in dumped
        async with sessionmaker(engine)() as session:
            file = await session.get(Vaccinee, 1)
            assert file is not None
            assert file.profile(vault) == FileProfile("M", "320602", 7, Stage.CHILD_CLINIC)
            doses = (await session.scalars(select(Dose).order_by(Dose.id))).all()
            assert [dose.detail(vault) for dose in doses] == [
                DoseDetail(code, number, given, 7, lot, DoseSource.CLINIC if n == 3 else DoseSource.REGISTRY)
                for n, (code, number, given, lot) in enumerate(PLAIN_DOSES, start=1)
            ]
            assert [dose.dose_key for dose in doses] == [
                Dose.key_for(vault, 1, code, number) for code, number, _, _ in PLAIN_DOSES
            ]
            assert len((await session.scalars(select(Guardian))).all()) == 1  # no cascade on the table copy
            visit = await session.get(Visit, 1)
            assert visit is not None and visit.dose_id == 3
            reminder = await session.get(Reminder, 1)
            assert reminder is not None and reminder.detail(vault) == ReminderDetail("DTaP", 4, REMINDER_DUE)
            assert reminder.job_key == Reminder.key_for(vault, 1, "DTaP", 4)

        # Down again (development resets) opens them into the plain columns; up seals them once more.
        async with engine.connect() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync, vault), "0004"))
            await connection.commit()
        async with engine.connect() as connection:
            query = "SELECT vaccine_code, dose_number, given_on, lot_number FROM doses ORDER BY id"
            plain = [(c, n, str(g), lot) for c, n, g, lot in (await connection.execute(text(query))).all()]
            profile = (await connection.execute(text("SELECT sex, birth_year, clinic_id, stage FROM vaccinees"))).one()
        assert plain == [(code, number, given.isoformat(), lot) for code, number, given, lot in PLAIN_DOSES]
        assert tuple(profile) == ("M", 2023, 7, "child_clinic")
        async with engine.connect() as connection:
            query = "SELECT job_key, vaccine_code, dose_number, due_on FROM reminders"
            key, code, number, due = (await connection.execute(text(query))).one()
        assert (key, code, number, str(due)) == ("dose:1:DTaP:4", "DTaP", 4, REMINDER_DUE.isoformat())
        await migrate(engine, vault)
        async with sessionmaker(engine)() as session:
            doses = (await session.scalars(select(Dose).order_by(Dose.id))).all()
            assert [dose.detail(vault).given_on for dose in doses] == [given for _, _, given, _ in PLAIN_DOSES]
    finally:
        await engine.dispose()
    if empty_database_url.startswith("sqlite"):
        raw = _sqlite_bytes(Path(make_url(empty_database_url).database or ""))
        assert _found(raw, {given for _, _, given, _ in PLAIN_DOSES} | {REMINDER_DUE}) == []


async def test_migration_0005_needs_the_keyring_only_when_there_is_data(
    empty_database_url: str, keys_dir: Path
) -> None:
    from tests.conftest import _settings

    engine = create_engine(_settings(empty_database_url, keys_dir))
    try:
        await migrate(engine)  # an empty database: nothing to seal, no keyring asked for
        async with engine.connect() as connection:
            version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        # The newest revision (later migrations follow 0005 and need no keyring on an empty database either).
        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    finally:
        await engine.dispose()
