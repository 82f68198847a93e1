"""Clinic notices: a closure tells each family once (holder on WeChat, grantee on Alipay, a revoked grantee not at
all), cancels or moves the bookings, and its delivery report follows the outbox (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

import bot.cli
from bot.booking import bookings, lottery
from bot.booking.slots import SlotSpec
from bot.certificates.rules import Grantee, add_grant
from bot.core.chinatime import CHINA
from bot.core.config import DEV_NOTICE_TEMPLATE, load_settings
from bot.core.db import create_engine, sessionmaker
from bot.dev.demo import demo_id_number
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import SINGLE_SEND, FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.notices.compose import Composer, Draft, NoticeRefused, Window, check, preview, send
from bot.notices.report import DeliveryState, report
from bot.platforms.wxmini.consents import record_consents
from bot.web.appkeys import SERVICES, SESSIONS
from models import (
    Appointment,
    AppointmentStatus,
    AuditEntry,
    Certificate,
    ConsentSource,
    Identity,
    Notice,
    NoticeAction,
    NoticeAudience,
    NoticeBooking,
    NoticeBookingOutcome,
    NoticeDelivery,
    NoticeKind,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    PlatformAccount,
    Slot,
    Vaccinee,
    utcnow,
)
from tests.channels import Alipay, WeChat
from tests.conftest import Serve
from tests.helpers import Client, count, drain_outbox, outbox_rows
from tests.notice_kit import (
    GRANDMA_USER,
    PARENT_USER,
    SECRETS,
    UNCLE_USER,
    NoticeWorld,
    book,
    notice_world,
    publish,
    send_notice,
)
from tests.test_cli import cli_env
from tests.world import registry_file, verified


@pytest.fixture
def family(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> tuple[WeChat, Alipay]:
    """The parent's (and the uncle's) side on WeChat, the grandmother's on Alipay."""
    return WeChat(app_client, wechat, fake), Alipay(app_client, alipay, fake_alipay[0])


def _closure(world: NoticeWorld, text: str = "因疫苗冷链设备检修停诊一天，请改约其他日期。", **extra: Any) -> Draft:
    values: dict[str, Any] = {
        "kind": NoticeKind.CLOSURE,
        "text": text,
        "audience": NoticeAudience.BOOKED,
        "windows": (Window(world.day),),
        "action": NoticeAction.CANCEL,
        **extra,
    }
    return Draft(**values)


def _templates_to(fake: FakeWeChatAPI, user: str) -> list[dict[str, Any]]:
    return [
        item.body for item in fake.received if item.path == "message/template/send" and item.body.get("touser") == user
    ]


async def _appointments(client: Client) -> list[tuple[Appointment, Slot]]:
    async with client.app[SESSIONS]() as session:
        rows = await session.execute(
            select(Appointment, Slot).join(Slot, Slot.id == Appointment.slot_id).order_by(Appointment.id)
        )
        return [(appointment, slot) for appointment, slot in rows.all()]


async def test_a_closure_tells_the_holder_and_the_grantee_once_and_not_the_revoked_grantee(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI, fake_alipay: tuple[FakeAlipayGateway, str]
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    services = client.app[SERVICES]
    draft = _closure(world)
    async with client.app[SESSIONS]() as session:
        counted = await preview(session, services.vault, world.clinic_id, draft)
    assert (counted.bookings, counted.families, counted.accounts) == (1, 1, 2)  # not the uncle

    sent = await send_notice(client, world.clinic_id, draft, "form-key-1")
    assert not sent.repeated and sent.notice.bookings_cancelled == 1 and sent.notice.slots_closed == 1
    again = await send_notice(client, world.clinic_id, draft, "form-key-1")  # the form sent twice
    assert again.repeated and again.notice.id == sent.notice.id

    ((appointment, slot),) = await _appointments(client)
    assert appointment.status == AppointmentStatus.CANCELLED and slot.booked == 0 and slot.closed_at is not None
    rows = [
        row for row in await outbox_rows(client) if row.idempotency_key and row.idempotency_key.startswith("notice:")
    ]
    assert sorted(row.recipient for row in rows) == sorted([PARENT_USER, GRANDMA_USER])  # once each, no uncle

    await drain_outbox(client)
    await drain_outbox(client)  # nothing more goes out on another round
    (to_parent,) = _templates_to(fake, PARENT_USER)
    assert _templates_to(fake, UNCLE_USER) == []
    values = {key: value["value"] for key, value in to_parent["data"].items()}
    assert to_parent["template_id"] == DEV_NOTICE_TEMPLATE
    assert values["keyword1"] == "林*满" and "预约已取消" in values["keyword2"]
    assert f"{world.day.month}月{world.day.day}日" in values["keyword3"] and "冷链" in values["remark"]
    (to_grandma,) = [item.biz for item in fake_alipay[0].calls(SINGLE_SEND) if item.to_user_id == GRANDMA_USER]
    assert to_grandma["template"]["context"]["keyword2"]["value"] == values["keyword2"]
    for secret in SECRETS:
        assert secret not in str(to_parent) + str(to_grandma)

    async with client.app[SESSIONS]() as session:
        delivered = await report(session, world.clinic_id, sent.notice.id)
        elsewhere = await report(session, world.clinic_id + 999, sent.notice.id)
        audit = (await session.scalars(select(AuditEntry).where(AuditEntry.action.like("notice_%")))).all()
    assert elsewhere is None  # another clinic's staff cannot read it
    assert delivered is not None and delivered.count(DeliveryState.SENT) == 2 and len(delivered.lines) == 2
    assert {line.platform for line in delivered.lines} == {"wechat", "alipay"}
    assert all(PARENT_USER not in line.recipient for line in delivered.lines)  # masked
    told = [entry for entry in audit if entry.action == "notice_told"]
    assert len(told) == 1 and told[0].certificate_id == world.certificate_id and len(told[0].detail["to"]) == 2
    assert [entry.action for entry in audit].count("notice_sent") == 1

    # 我的预约 says, on both platforms, which booking the clinic cancelled and why.
    for side, user in ((family[0], PARENT_USER), (family[1], GRANDMA_USER)):
        mine = await side.say(user, "我的预约")
        assert "林*满" in mine and "已被门诊取消" in mine and "冷链" in mine and "没有待接种的预约" in mine


async def test_moving_keeps_people_booked_and_cancels_when_the_target_is_full(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    second = await registry_file(
        client, ref="N-SECOND", name="王小明", id_number=None, birth=world.day - timedelta(days=700)
    )
    first_slot = (await _appointments(client))[0][1].id
    await book(client, first_slot, second, world.parent_id, "n-second")
    next_day = world.day + timedelta(days=1)
    target = await publish(client, world.clinic_id, next_day, 14, capacity=1)
    draft = _closure(world, action=NoticeAction.MOVE, move_to=Window(next_day))
    sent = await send_notice(client, world.clinic_id, draft, "form-key-move")
    assert (sent.notice.bookings_moved, sent.notice.move_failed) == (1, 1)
    rows = await _appointments(client)
    statuses = [(appointment.vaccinee_id, appointment.status, slot.id) for appointment, slot in rows]
    # The first booking moved to the afternoon of the next day; the second found no room and was cancelled.
    assert (world.vaccinee_id, AppointmentStatus.BOOKED, target) in statuses
    assert (second, AppointmentStatus.CANCELLED, first_slot) in statuses
    async with client.app[SESSIONS]() as session:
        done = {row.vaccinee_id: row for row in (await session.scalars(select(NoticeBooking))).all()}
    assert done[second].outcome == NoticeBookingOutcome.MOVE_FAILED and done[second].moved_to_appointment_id is None
    moved = done[world.vaccinee_id]
    assert moved.outcome == NoticeBookingOutcome.MOVED and moved.moved_to_appointment_id is not None
    async with client.app[SESSIONS]() as session:
        assert await bookings.count_active(session, target) == 1
        assert await bookings.count_active(session, first_slot) == 0
        old = await session.get(Slot, first_slot)
        assert old is not None and old.booked == 0 and old.closed_at is not None
    await drain_outbox(client)
    (to_parent,) = _templates_to(fake, PARENT_USER)  # the second child has no certificate: nobody to tell
    values = {key: value["value"] for key, value in to_parent["data"].items()}
    assert values["keyword2"] == f"预约改到{next_day.month}月{next_day.day}日 14:00"


async def test_a_move_never_targets_a_lottery_slot(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    next_day = world.day + timedelta(days=1)
    # The next day has a lottery window with far more room than its one first-come window.
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec("HepB", next_day, time(9), time(10), 50)
        _, drawn = await lottery.publish_lottery(
            session,
            client.app[SERVICES].vault,
            world.clinic_id,
            spec,
            opens_at=utcnow() - timedelta(hours=1),
            closes_at=utcnow() + timedelta(days=1),
            confirm_hours=24,
        )
    target = await publish(client, world.clinic_id, next_day, 14, capacity=2)
    draft = _closure(world, action=NoticeAction.MOVE, move_to=Window(next_day))
    sent = await send_notice(client, world.clinic_id, draft, "form-key-move-lottery")
    assert (sent.notice.bookings_moved, sent.notice.move_failed) == (1, 0)
    statuses = [(appointment.status, slot.id) for appointment, slot in await _appointments(client)]
    assert (AppointmentStatus.BOOKED, target) in statuses
    async with client.app[SESSIONS]() as session:
        assert await bookings.count_active(session, drawn.slot_id) == 0


async def test_no_shows_leave_notice_cancelled_bookings_alone_and_first_come_has_no_penalty(
    app_client: Client, family: tuple[WeChat, Alipay]
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    next_day = world.day + timedelta(days=1)
    target = await publish(client, world.clinic_id, next_day, 14)
    draft = _closure(world, action=NoticeAction.MOVE, move_to=Window(next_day))
    assert (await send_notice(client, world.clinic_id, draft, "form-key-no-show")).notice.bookings_moved == 1
    (old, _), (moved, _) = await _appointments(client)
    assert (old.status, moved.status) == (AppointmentStatus.CANCELLED, AppointmentStatus.BOOKED)
    ends = [datetime.combine(day + timedelta(days=1), time(0, 5), tzinfo=CHINA) for day in (world.day, next_day)]
    for after, expected in ((ends[0], 0), (ends[1], 1), (ends[1], 0)):
        async with client.app[SESSIONS]() as session, session.begin():
            assert await lottery.mark_no_shows(session, after) == expected
    statuses = [(row.id, row.status, slot.id) for row, slot in await _appointments(client)]
    assert statuses == [
        (old.id, AppointmentStatus.CANCELLED, old.slot_id),  # the notice cancelled it: never a no-show
        (moved.id, AppointmentStatus.NO_SHOW, target),
    ]
    async with client.app[SESSIONS]() as session:  # a first-come no-show carries no lottery penalty
        assert await lottery.penalty_until(session, world.vaccinee_id, "HepB", ends[1], 180) is None


async def test_the_delivery_report_reads_sent_waiting_and_failed_from_the_outbox(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    stock = Draft(NoticeKind.STOCK, "九价HPV疫苗已到货，可以预约了。", NoticeAudience.REGISTERED)
    fake.fail("message/template/send", -1)  # WeChat busy: tried again later
    sent = await send_notice(client, world.clinic_id, stock, "form-key-stock")
    assert sent.notice.slots_closed == 0 and sent.notice.bookings_cancelled == 0
    await drain_outbox(client)

    async def states() -> dict[str, tuple[DeliveryState, str]]:
        async with client.app[SESSIONS]() as session:
            found = await report(session, world.clinic_id, sent.notice.id)
        assert found is not None
        return {line.platform: (line.state, line.reason) for line in found.lines}

    seen = await states()
    assert seen["alipay"] == (DeliveryState.SENT, "")
    assert seen["wechat"][0] == DeliveryState.WAITING and "wechat_-1" in seen["wechat"][1]
    assert _templates_to(fake, PARENT_USER) == []
    # The retry comes due: the parent hears once, and the report says sent.
    async with client.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.status == OutboxStatus.PENDING).values(available_at=utcnow())
        )
    await drain_outbox(client)
    assert len(_templates_to(fake, PARENT_USER)) == 1
    assert (await states())["wechat"] == (DeliveryState.SENT, "")

    fake.fail("message/template/send", 40037)  # a wrong template id: given up, with the reason
    free = Draft(NoticeKind.FREE, "周六上午门诊照常开放。", NoticeAudience.REGISTERED)
    sent = await send_notice(client, world.clinic_id, free, "form-key-free")
    await drain_outbox(client)
    seen = await states()
    assert seen["wechat"][0] == DeliveryState.FAILED and "bad_template_id" in seen["wechat"][1]
    async with client.app[SESSIONS]() as session:
        deliveries = (await session.scalars(select(NoticeDelivery))).all()
    assert len(deliveries) == 4  # two notices, two accounts each, never the revoked uncle


def test_the_command_line_does_not_close_a_booked_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in cli_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert bot.cli.main(["init"]) == 0
    assert bot.cli.main(["clinic", "add", "--code", "T-CLI-02", "--name", "测试门诊", "--region", "320602"]) == 0
    add = ["clinic", "slot", "add", "--clinic", "T-CLI-02", "--vaccine", "HepB", "--day", "2030-03-01"]
    assert bot.cli.main([*add, "--start", "09:00", "--end", "10:00", "--capacity", "3"]) == 0

    async def book_one() -> None:
        engine = create_engine(load_settings())
        async with sessionmaker(engine)() as session, session.begin():
            identity = Identity(
                id_number_hash="h-cli", id_number_enc=b"x", name_enc=b"x", verified_at=utcnow(), verification_method="t"
            )
            file = Vaccinee(
                registry_ref="R-CLI",
                name_enc=b"x",
                birth_date_enc=b"x",
                profile_enc=b"x",
                effective_from=date(2020, 1, 1),
            )
            session.add_all([identity, file])
            await session.flush()
            slot = (await session.scalars(select(Slot))).one()
            made = await bookings.book(session, slot.id, file.id, identity.id, "cli-key", utcnow())
            assert made.outcome == bookings.Outcome.BOOKED
        await engine.dispose()

    asyncio.run(book_one())
    capsys.readouterr()
    assert bot.cli.main(["clinic", "slot", "close", "--clinic", "T-CLI-02", "--day", "2030-03-01"]) == 1
    assert "closure notice" in capsys.readouterr().err

    async def closed() -> list[object]:
        engine = create_engine(load_settings())
        async with sessionmaker(engine)() as session:
            found = list((await session.scalars(select(Slot.closed_at))).all())
        await engine.dispose()
        return found

    assert asyncio.run(closed()) == [None]  # nothing was closed


def test_notices_staff_could_not_mean_are_refused() -> None:
    day = Window.parse("2026-12-08")
    assert Window.parse("2026-12-08 09:00").start is not None and day.start is None
    cases = [
        (Draft(NoticeKind.FREE, "", NoticeAudience.REGISTERED), "notice_refused_empty"),
        (Draft(NoticeKind.FREE, "字" * 101, NoticeAudience.REGISTERED), "notice_refused_long"),
        (Draft(NoticeKind.STOCK, "到货", NoticeAudience.BOOKED), "notice_refused_no_windows"),
        (Draft(NoticeKind.CLOSURE, "停诊", NoticeAudience.BOOKED, (day,)), "notice_refused_closure_action"),
        (
            Draft(NoticeKind.CLOSURE, "停诊", NoticeAudience.REGISTERED, (), NoticeAction.CANCEL),
            "notice_refused_closure_action",
        ),
        (
            Draft(NoticeKind.STOCK, "到货", NoticeAudience.BOOKED, (day,), NoticeAction.CANCEL),
            "notice_refused_action_kind",
        ),
        (
            Draft(NoticeKind.CLOSURE, "停诊", NoticeAudience.BOOKED, (day,), NoticeAction.MOVE),
            "notice_refused_move_target",
        ),
        (
            Draft(
                NoticeKind.CLOSURE,
                "停诊",
                NoticeAudience.BOOKED,
                (day,),
                NoticeAction.MOVE,
                Window.parse("2026-12-08 14:00"),
            ),
            "notice_refused_move_target",
        ),
    ]
    for draft, reason in cases:
        with pytest.raises(NoticeRefused) as refused:
            check(draft)
        assert refused.value.reason == reason
    check(
        Draft(NoticeKind.CLOSURE, "停诊", NoticeAudience.BOOKED, (day,), NoticeAction.MOVE, Window.parse("2026-12-09"))
    )


class _Crash(Exception):
    """The process dies before the notice's transaction commits."""


async def test_a_crash_before_the_commit_leaves_nothing_half_told(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    services = client.app[SERVICES]
    draft = _closure(world)
    composer = Composer(clinic_id=world.clinic_id, actor_kind="clinic_api", actor_ref="clinic_api:test")
    with pytest.raises(_Crash):
        async with client.app[SESSIONS]() as session, session.begin():
            await send(
                session, services.vault, services.catalogue, services.settings, composer, draft, "k-crash", utcnow()
            )
            raise _Crash
    ((appointment, slot),) = await _appointments(client)
    assert appointment.status == AppointmentStatus.BOOKED and slot.closed_at is None and slot.booked == 1
    assert await outbox_rows(client, kind=OutboxKind.TEMPLATE) == [] and await count(client, Notice) == 0
    # Sent again with the same key after the restart: everything happens once.
    sent = await send_notice(client, world.clinic_id, draft, "k-crash")
    assert not sent.repeated and sent.notice.bookings_cancelled == 1
    await drain_outbox(client)
    assert len(_templates_to(fake, PARENT_USER)) == 1


async def test_a_mini_program_family_member_hears_only_with_a_consent(
    serve: Serve,
    make_settings: Any,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> None:
    settings = make_settings(wxmini_notice_template="tpl-clinic-notice")
    client = await serve(settings)
    world = await notice_world(client, WeChat(client, wechat, fake), Alipay(client, alipay, fake_alipay[0]))
    services = client.app[SERVICES]
    people = [
        ("o-mini-aunt", "林小芳", demo_id_number("320602", date(1990, 2, 3), 402)),
        ("o-mini-uncle", "林小刚", demo_id_number("320602", date(1991, 7, 8), 413)),
    ]
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = await session.get(Certificate, world.certificate_id)
        holder = await session.get(Identity, world.parent_id)
        assert certificate is not None and holder is not None
        for _, name, id_number in people:
            grant, problem = await add_grant(
                session,
                services.vault,
                holder,
                certificate,
                Grantee(id_number, name, "other", ""),
                settings,
                "wechat",
                utcnow(),
            )
            assert grant is not None, problem
    accounts = {}
    for user, name, id_number in people:
        await verified(client, "wxmini", user, name, id_number, settings.wxmini_appid)
        async with client.app[SESSIONS]() as session:
            accounts[user] = (
                await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == user))
            ).one()
    async with client.app[SESSIONS]() as session, session.begin():
        await record_consents(session, accounts["o-mini-aunt"], ["tpl-clinic-notice"], ConsentSource.PAGE, utcnow())
    sent = await send_notice(client, world.clinic_id, _closure(world), "k-mini")
    await send_notice(client, world.clinic_id, _closure(world), "k-mini")  # a retry spends no second consent
    (row,) = await outbox_rows(client, kind=OutboxKind.SUBSCRIBE)
    assert row.recipient == "o-mini-aunt" and row.payload["template_id"] == "tpl-clinic-notice"
    assert "预约已取消" in row.payload["data"]["thing1"]
    async with client.app[SESSIONS]() as session:
        found = await report(session, world.clinic_id, sent.notice.id)
    assert found is not None
    mini = sorted((line.state, line.problem) for line in found.lines if line.platform == "wxmini")
    assert mini == [(DeliveryState.FAILED, "no_consent"), (DeliveryState.WAITING, "")]
    assert len(found.lines) == 4  # the parent, the grandmother, the two in the mini program; not the uncle


async def test_the_same_closure_sent_at_once_from_two_desks_tells_each_family_once(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    draft = _closure(world)
    # A double click (the same key) and another desk's notice for the same day (its own key), all at once.
    sent = await asyncio.gather(
        send_notice(client, world.clinic_id, draft, "k-race"),
        send_notice(client, world.clinic_id, draft, "k-race"),
        send_notice(client, world.clinic_id, draft, "k-race-other-desk"),
    )
    assert sorted(each.repeated for each in sent) == [False, False, True]
    assert await count(client, Notice) == 2
    assert sum(each.notice.bookings_cancelled for each in sent if not each.repeated) == 1  # cancelled once
    ((appointment, slot),) = await _appointments(client)
    assert appointment.status == AppointmentStatus.CANCELLED and slot.booked == 0
    await drain_outbox(client)
    assert len(_templates_to(fake, PARENT_USER)) == 1  # the notice that found no booking left tells nobody
    assert await count(client, NoticeDelivery) == 2
