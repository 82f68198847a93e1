"""The desk as a state machine (bot.desk.steps): the whole flow, order, repeats, races, isolation, expired lots.

Every test runs on SQLite and PostgreSQL; the visits are queued by a real code scanned at the desk.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.certificates.rules import doses_of
from bot.core.chinatime import china_date
from bot.core.config import DEV_REMINDER_TEMPLATE
from bot.desk import steps
from bot.desk.notify import FamilyTeller
from bot.desk.steps import DeskActor, StepProblem, StepRefused
from bot.dev.demo import CHILD, PARENT
from bot.dev.fakes.alipay_gateway import SINGLE_SEND as ALIPAY_TEMPLATE
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI
from bot.immunization.forecast import GivenDose as ScheduleDose
from bot.immunization.forecast import forecast_next_doses
from bot.web.appkeys import SERVICES, SESSIONS
from models import (
    AuditEntry,
    Dose,
    DoseSource,
    OutboxKind,
    OutboxMessage,
    PlatformAccount,
    Reminder,
    ReminderDetail,
    ReminderKind,
    ReminderStatus,
    Visit,
    VisitStatus,
    utcnow,
)
from tests.desk_kit import GIVEN, NO_PROBLEMS, PLAN_VACCINE, DeskWorld, desk_world, plan, queue_visit, second_child
from tests.helpers import Client, drain_outbox
from tests.world import verified

WECHAT_APP = "wx0000000000de0001"


async def _step(client: Client, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Run one desk function in its own transaction, as the console and the API do."""
    services = client.app[SERVICES]
    async with client.app[SESSIONS]() as session, session.begin():
        return await call(session, services.vault, *args, **kwargs)


async def _summary(client: Client, actor: DeskActor, day: date) -> steps.DaySummary:
    async with client.app[SESSIONS]() as session:
        return await steps.day_summary(session, actor, day, vault=client.app[SERVICES].vault)


async def _refused(client: Client, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> StepProblem:
    with pytest.raises(StepRefused) as caught:
        await _step(client, call, *args, **kwargs)
    assert caught.value.message  # a Chinese sentence the desk can show
    return caught.value.problem


async def _texts(client: Client, user: str) -> list[str]:
    async with client.app[SESSIONS]() as session:
        rows = (
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.recipient == user).order_by(OutboxMessage.id)
            )
        ).all()
    return [str(row.payload.get("content", "")) for row in rows]


async def _world(client: Client) -> DeskWorld:
    world = await desk_world(client, "wechat", WECHAT_APP)
    # Both wrote to the account a minute ago: inside WeChat's window, the desk's news are plain texts.
    async with client.app[SESSIONS]() as session, session.begin():
        for account in (await session.scalars(select(PlatformAccount))).all():
            account.last_inbound_at = utcnow() - timedelta(minutes=1)
    return world


async def _verify(client: Client, world: DeskWorld, visit: int) -> None:
    await _step(client, steps.register, world.actor, visit, NO_PROBLEMS, desk="2号接种台")
    await _step(client, steps.request_confirmation, world.actor, visit, plan())
    await _step(client, steps.confirm_in_person, world.actor, visit, "家长当面口头核对")


async def test_the_whole_desk_flow(app_client: Client) -> None:
    client = app_client
    services = client.app[SERVICES]
    vault = services.vault
    world = await _world(client)
    # A reminder for the very dose the desk will give is waiting to be sent.
    async with client.app[SESSIONS]() as session, session.begin():
        session.add(
            Reminder(
                job_key=Reminder.key_for(vault, world.vaccinee_id, *PLAN_VACCINE),
                vaccinee_id=world.vaccinee_id,
                kind=ReminderKind.DOSE_DUE,
                detail_enc=Reminder.seal_detail(vault, ReminderDetail(*PLAN_VACCINE, china_date(utcnow()))),
                send_at=utcnow() + timedelta(hours=2),
                status=ReminderStatus.SCHEDULED,
            )
        )
    # The grandmother shows the code.
    visit = await queue_visit(client, world, world.grandma_id)
    day = china_date(utcnow())
    queue = await _step(client, steps.today_queue, world.actor, day)
    assert [(line.visit_id, line.status, line.masked_name) for line in queue] == [(visit, VisitStatus.QUEUED, "林*满")]
    called = await _step(client, steps.call_next, world.actor, day)
    assert called is not None and called.visit_id == visit and called.called_at is not None
    assert await _step(client, steps.call_next, world.actor, day) is None  # nobody else waits

    detail = await _step(client, steps.visit_detail, world.actor, visit)
    assert detail.name == CHILD.name and detail.sex == CHILD.sex and detail.birth_date == CHILD.birth
    assert (PLAN_VACCINE[0], PLAN_VACCINE[1]) in {(due.vaccine_code, due.dose_number) for due in detail.due}
    assert [(past.vaccine_code, past.dose_number) for past in detail.history] == [("HepB", 1)]

    registered = await _step(client, steps.register, world.actor, visit, NO_PROBLEMS, desk="2号接种台")
    assert registered.status == VisitStatus.REGISTERED and registered.desk == "2号接种台"
    asked = await _step(client, steps.request_confirmation, world.actor, visit, plan())
    assert asked.status == VisitStatus.REGISTERED and asked.confirmation_requested

    # 一验证 in chat, as the 「确认」 handler does it.
    async with client.app[SESSIONS]() as session, session.begin():
        pending = await steps.pending_confirmations(session, vault, world.grandma_id, day)
        assert [(p.visit_id, p.masked_name, p.plan.lot_number) for p in pending] == [(visit, "林*满", "202611A03")]
        assert await steps.confirm_in_chat(session, world.grandma_id, pending[0], platform="wechat")
    detail = await _step(client, steps.visit_detail, world.actor, visit)
    assert detail.summary.status == VisitStatus.VERIFIED
    assert detail.summary.verified_by == f"identity:{world.grandma_id}"

    done = await _step(client, steps.vaccinate, world.actor, visit, GIVEN)
    assert done.status == VisitStatus.OBSERVING
    assert done.observation_ends_at is not None
    # The dose is in the file at once, marked as this clinic's, and the forecast moved on.
    async with client.app[SESSIONS]() as session:
        doses = await doses_of(session, vault, world.vaccinee_id, day)
        reminder = (await session.scalars(select(Reminder))).one()
    recorded = [dose for dose in doses if (dose.vaccine_code, dose.dose_number) == PLAN_VACCINE]
    assert len(recorded) == 1
    assert recorded[0].source == DoseSource.CLINIC and recorded[0].clinic_id == world.clinic_id
    assert recorded[0].lot_number == "202611A03" and recorded[0].given_on == day
    forecast = forecast_next_doses(
        CHILD.birth, CHILD.sex, [ScheduleDose(d.vaccine_code, d.dose_number, d.given_on) for d in doses], day
    )
    assert PLAN_VACCINE not in {(item.vaccine_code, item.dose_number) for item in forecast}
    assert reminder.status == ReminderStatus.CANCELLED

    watching = await _step(client, steps.observing, world.actor, day)
    assert [line.visit_id for line in watching] == [visit]
    assert await _refused(client, steps.finish_observation, world.actor, visit) == StepProblem.OBSERVATION_NOT_OVER
    later = utcnow() + timedelta(minutes=31)
    finished = await _step(client, steps.finish_observation, world.actor, visit, now=later)
    assert finished.status == VisitStatus.DONE
    assert await _step(client, steps.observing, world.actor, day) == []
    summary = await _summary(client, world.actor, day)
    assert summary.doses_given == 1 and summary.by_status["done"] == 1 and summary.by_vaccine == {"HepB": 1}

    # The grandmother (who showed the code) and the parent (the holder) heard every step.
    for user in (world.grandma_user, world.parent_user):
        texts = "\n".join(await _texts(client, user))
        for words in (
            "已在",  # 取号
            "已完成登记，请到2号接种台等候接种",
            "即将为 林*满 接种：乙肝疫苗 第2剂，批号 202611A03，有效期至",
            "请核对后回复「确认」",
            "请在留观区留观30分钟",
            "留观结束，可以离开了；下一针：",
        ):
            assert words in texts, (user, words, texts)
        assert CHILD.name not in texts
    # Every step is audited under the nurse and the clinic; no audit row holds the lot or the answers.
    async with client.app[SESSIONS]() as session:
        audits = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    actions = [(entry.action, entry.actor_ref) for entry in audits if entry.action.startswith("desk_")]
    nurse = world.actor.audit_actor()
    assert nurse == f"staff:7@clinic:{world.clinic_id}"
    for action in (
        "desk_call",
        "desk_detail_viewed",
        "desk_register",
        "desk_confirmation_requested",
        "desk_vaccinate",
        "desk_observation_done",
    ):
        assert (action, nurse) in actions, action
    assert ("desk_verified", f"identity:{world.grandma_id}") in actions
    assert "202611A03" not in str([entry.detail for entry in audits])


async def test_steps_out_of_order_are_refused_and_repeats_change_nothing(app_client: Client) -> None:
    client = app_client
    world = await _world(client)
    visit = await queue_visit(client, world, world.parent_id)
    actor = world.actor
    # No 接种 before 登记 and 一验证; no 一验证 before 登记; no 留观结束 before 接种.
    assert await _refused(client, steps.vaccinate, actor, visit, GIVEN) == StepProblem.OUT_OF_ORDER
    assert await _refused(client, steps.request_confirmation, actor, visit, plan()) == StepProblem.OUT_OF_ORDER
    assert await _refused(client, steps.confirm_in_person, actor, visit, "当面核对") == StepProblem.OUT_OF_ORDER
    assert await _refused(client, steps.finish_observation, actor, visit) == StepProblem.OUT_OF_ORDER
    first = await _step(client, steps.register, actor, visit, NO_PROBLEMS, desk="1号台")
    again = await _step(client, steps.register, actor, visit, dataclasses.replace(NO_PROBLEMS, fever=True))
    assert again.status == first.status == VisitStatus.REGISTERED and again.desk == "1号台"
    detail = await _step(client, steps.visit_detail, actor, visit)
    assert detail.health is not None and detail.health.fever is False  # the first answers stand
    assert await _refused(client, steps.vaccinate, actor, visit, GIVEN) == StepProblem.OUT_OF_ORDER
    assert await _refused(client, steps.confirm_in_person, actor, visit, "当面核对") == StepProblem.NOT_REQUESTED
    await _step(client, steps.request_confirmation, actor, visit, plan())
    await _step(client, steps.request_confirmation, actor, visit, plan())  # the same plan: one message
    assert await _refused(client, steps.confirm_in_person, actor, visit, "  ") == StepProblem.REASON_NEEDED
    assert await _refused(client, steps.vaccinate, actor, visit, GIVEN) == StepProblem.OUT_OF_ORDER
    await _step(client, steps.confirm_in_person, actor, visit, "家长手机没电，当面核对")
    await _step(client, steps.confirm_in_person, actor, visit, "再点一次")
    await _step(client, steps.vaccinate, actor, visit, GIVEN)
    twice = await _step(client, steps.vaccinate, actor, visit, GIVEN)
    assert twice.status == VisitStatus.OBSERVING
    async with client.app[SESSIONS]() as session:
        doses = (await session.scalars(select(Dose).where(Dose.vaccinee_id == world.vaccinee_id))).all()
    texts = await _texts(client, world.parent_user)
    assert len(doses) == 2  # the birth dose and this one, once
    assert sum("即将为" in text for text in texts) == 1
    assert sum("请在留观区留观30分钟" in text for text in texts) == 1
    # Registering after 接种 is a repeat, not a step back.
    assert (await _step(client, steps.register, actor, visit, NO_PROBLEMS)).status == VisitStatus.OBSERVING


async def test_a_new_plan_asks_again_and_an_old_confirmation_confirms_nothing(app_client: Client) -> None:
    client = app_client
    vault = client.app[SERVICES].vault
    world = await _world(client)
    visit = await queue_visit(client, world, world.parent_id)
    day = china_date(utcnow())
    await _step(client, steps.register, world.actor, visit, NO_PROBLEMS)
    await _step(client, steps.request_confirmation, world.actor, visit, plan(lot="LOT-OLD"))
    async with client.app[SESSIONS]() as session:
        (stale,) = await steps.pending_confirmations(session, vault, world.parent_id, day)
    await _step(client, steps.request_confirmation, world.actor, visit, plan(lot="LOT-NEW"))
    async with client.app[SESSIONS]() as session, session.begin():
        assert not await steps.confirm_in_chat(session, world.parent_id, stale, platform="wechat")
        (fresh,) = await steps.pending_confirmations(session, vault, world.parent_id, day)
        assert fresh.plan.lot_number == "LOT-NEW"
        assert await steps.confirm_in_chat(session, world.parent_id, fresh, platform="wechat")
    texts = await _texts(client, world.parent_user)
    assert sum("即将为" in text for text in texts) == 2
    # A plan changed after the family confirmed goes back to them.
    await _step(client, steps.request_confirmation, world.actor, visit, plan(lot="LOT-THIRD"))
    assert (await _step(client, steps.visit_detail, world.actor, visit)).summary.status == VisitStatus.REGISTERED


async def test_two_desks_vaccinating_at_once_record_one_dose(app_client: Client) -> None:
    client = app_client
    world = await _world(client)
    visit = await queue_visit(client, world, world.parent_id)
    await _verify(client, world, visit)
    other_nurse = DeskActor(clinic_id=world.clinic_id, staff_id=9)
    results = await asyncio.gather(
        _step(client, steps.vaccinate, world.actor, visit, GIVEN),
        _step(client, steps.vaccinate, other_nurse, visit, GIVEN),
    )
    assert {result.status for result in results} == {VisitStatus.OBSERVING}
    async with client.app[SESSIONS]() as session:
        doses = (await session.scalars(select(Dose).where(Dose.vaccinee_id == world.vaccinee_id))).all()
        recorded = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "desk_vaccinate"))).all()
        row = await session.get(Visit, visit)
    assert len(doses) == 2 and len(recorded) == 1
    assert row is not None and row.dose_id in {dose.id for dose in doses}


async def test_another_clinic_can_neither_see_nor_act_on_a_visit(app_client: Client) -> None:
    client = app_client
    world = await _world(client)
    visit = await queue_visit(client, world, world.parent_id)
    day = china_date(utcnow())
    stranger = world.stranger
    assert await _step(client, steps.today_queue, stranger, day) == []
    assert await _step(client, steps.call_next, stranger, day) is None
    for call, args in (
        (steps.visit_detail, ()),
        (steps.register, (NO_PROBLEMS,)),
        (steps.request_confirmation, (plan(),)),
        (steps.confirm_in_person, ("当面核对",)),
        (steps.vaccinate, (GIVEN,)),
        (steps.finish_observation, ()),
    ):
        assert await _refused(client, call, stranger, visit, *args) == StepProblem.NOT_FOUND, call
    # The same answer as for a visit that does not exist at all.
    assert await _refused(client, steps.visit_detail, world.actor, visit + 1000) == StepProblem.NOT_FOUND
    # Nothing moved, and the visit still goes through at its own clinic.
    await _verify(client, world, visit)
    assert await _step(client, steps.observing, stranger, day) == []
    summary = await _summary(client, stranger, day)
    assert summary.doses_given == 0 and sum(summary.by_status.values()) == 0


async def test_an_expired_lot_is_refused_and_the_plan_checked(app_client: Client) -> None:
    client = app_client
    world = await _world(client)
    visit = await queue_visit(client, world, world.parent_id)
    actor = world.actor
    await _step(client, steps.register, actor, visit, NO_PROBLEMS)
    assert await _refused(client, steps.request_confirmation, actor, visit, plan(-1)) == StepProblem.EXPIRED_LOT
    bad = {
        StepProblem.UNKNOWN_VACCINE: dataclasses.replace(plan(), vaccine_code="Rabies"),
        StepProblem.BAD_DOSE_NUMBER: dataclasses.replace(plan(), dose_number=0),
        StepProblem.MISSING_FIELD: dataclasses.replace(plan(), lot_number="  "),
        StepProblem.ALREADY_GIVEN: dataclasses.replace(plan(), dose_number=1),
        StepProblem.NOT_DUE: dataclasses.replace(plan(), vaccine_code="HPV9", dose_number=1),
    }
    for problem, wrong in bad.items():
        assert await _refused(client, steps.request_confirmation, actor, visit, wrong) == problem
    # A dose not due may be given with a reason; a lot expiring today is still good today.

    overridden = dataclasses.replace(plan(0), vaccine_code="Flu", dose_number=1, override_reason="家长要求自费接种")
    assert (await _step(client, steps.request_confirmation, actor, visit, overridden)).confirmation_requested
    await _step(client, steps.confirm_in_person, actor, visit, "当面核对")
    # The day turns before 接种: the lot that expired at midnight is refused at the needle too.
    tomorrow = utcnow() + timedelta(days=1)
    assert await _refused(client, steps.vaccinate, actor, visit, GIVEN, now=tomorrow) == StepProblem.EXPIRED_LOT
    wrong_route = dataclasses.replace(GIVEN, route="nasal")
    assert await _refused(client, steps.vaccinate, actor, visit, wrong_route) == StepProblem.BAD_ROUTE
    assert await _refused(client, steps.vaccinate, actor, visit, dataclasses.replace(GIVEN, vaccinator=" ")) == (
        StepProblem.MISSING_FIELD
    )
    assert (await _step(client, steps.vaccinate, actor, visit, GIVEN)).status == VisitStatus.OBSERVING


async def test_the_family_outside_the_window_gets_template_messages_on_every_platform(
    app_client: Client, fake: FakeWeChatAPI, fake_alipay: tuple[FakeAlipayGateway, str]
) -> None:
    client = app_client
    services = client.app[SERVICES]
    world = await desk_world(client, "wechat", WECHAT_APP)  # nobody wrote recently: outside every window
    alipay_user = "2088000000000977"
    assert await verified(client, "alipay", alipay_user, PARENT.name, PARENT.id_number, services.settings.alipay_appid)
    configured = dataclasses.replace(
        services.settings, wechat_desk_template=DEV_REMINDER_TEMPLATE, alipay_desk_template=DEV_REMINDER_TEMPLATE
    )
    teller = FamilyTeller.from_settings(configured, services.catalogue)
    visit = await queue_visit(client, world, world.parent_id, family=teller)
    await _step(client, steps.register, world.actor, visit, NO_PROBLEMS, desk="3号台", family=teller)
    await _step(client, steps.request_confirmation, world.actor, visit, plan(), family=teller)
    await _step(client, steps.confirm_in_person, world.actor, visit, "当面核对")
    await _step(client, steps.vaccinate, world.actor, visit, GIVEN, family=teller)
    await drain_outbox(client)
    wechat = [item.body for item in fake.received if item.path == "message/template/send"]
    # The parent showed the code and holds the certificate: told once per platform per step.
    assert [body["touser"] for body in wechat] == [world.parent_user] * 4
    fields = list(services.settings.desk_template_fields)
    assert [list(body["data"]) for body in wechat] == [fields] * 4
    assert [body["data"]["thing2"]["value"] for body in wechat] == ["取号", "登记", "一验证", "接种"]
    assert wechat[2]["data"]["thing3"]["value"] == "核对后回复「确认」：乙肝疫苗第2剂"
    assert wechat[3]["data"]["thing3"]["value"] == "请留观30分钟：乙肝疫苗第2剂"
    assert all(len(value["value"]) <= 20 for body in wechat for value in body["data"].values())
    assert wechat[1]["data"]["thing1"]["value"] == "林*满" and "3号台" in wechat[1]["data"]["thing3"]["value"]
    alipay = [item.biz for item in fake_alipay[0].calls(ALIPAY_TEMPLATE) if item.to_user_id == alipay_user]
    assert [biz["template"]["context"]["keyword2"]["value"] for biz in alipay] == ["取号", "登记", "一验证", "接种"]
    assert CHILD.name not in str(wechat) + str(alipay)
    assert fake.sent_to(world.parent_user) == []  # no customer-service text was tried outside the window


async def test_a_mini_program_only_family_is_sent_texts_not_the_official_accounts_template(app_client: Client) -> None:
    # A template message cannot reach a mini-program user (and the desk template is the Official Account's):
    # their sender keeps the mini program's own window and turns an outside text into a subscription notice.
    client = app_client
    services = client.app[SERVICES]
    world = await desk_world(client, "wxmini", services.settings.wxmini_appid)  # nobody wrote recently
    configured = dataclasses.replace(
        services.settings, wechat_desk_template=DEV_REMINDER_TEMPLATE, alipay_desk_template=DEV_REMINDER_TEMPLATE
    )
    teller = FamilyTeller.from_settings(configured, services.catalogue)
    visit = await queue_visit(client, world, world.parent_id, family=teller)
    await _step(client, steps.register, world.actor, visit, NO_PROBLEMS, desk="3号台", family=teller)
    async with client.app[SESSIONS]() as session:
        rows = (await session.scalars(select(OutboxMessage).where(OutboxMessage.recipient == world.parent_user))).all()
    assert len(rows) == 2
    assert {(row.platform, row.kind) for row in rows} == {("wxmini", OutboxKind.TEXT)}


async def test_a_fever_at_registration_needs_the_doctors_reason(app_client: Client) -> None:
    client = app_client
    world = await _world(client)
    visit = await queue_visit(client, world, world.parent_id)
    await _step(client, steps.register, world.actor, visit, dataclasses.replace(NO_PROBLEMS, fever=True, note="37.9℃"))
    assert await _refused(client, steps.request_confirmation, world.actor, visit, plan()) == StepProblem.HEALTH_FLAGGED
    assessed = dataclasses.replace(plan(), override_reason="复测36.8℃，医生评估可以接种")
    assert (await _step(client, steps.request_confirmation, world.actor, visit, assessed)).confirmation_requested
    detail = await _step(client, steps.visit_detail, world.actor, visit)
    assert detail.health is not None and detail.health.fever and detail.health.note == "37.9℃"
    assert detail.plan is not None and detail.plan.override_reason == "复测36.8℃，医生评估可以接种"


def test_every_refusal_has_a_chinese_message() -> None:
    from bot.core.catalogue import MESSAGES

    for problem in StepProblem:
        text = MESSAGES[f"desk_problem_{problem.value}"]
        assert text and not text.isascii(), problem


async def test_two_desks_calling_at_once_call_two_people(app_client: Client) -> None:
    client = app_client
    world = await _world(client)
    baby = await second_child(client, world, "wechat")
    first = await queue_visit(client, world, world.parent_id)
    second = await queue_visit(client, world, world.parent_id, certificate_id=baby)
    day = china_date(utcnow())
    other_desk = DeskActor(clinic_id=world.clinic_id, staff_id=9)
    called = await asyncio.gather(
        _step(client, steps.call_next, world.actor, day), _step(client, steps.call_next, other_desk, day)
    )
    assert sorted(line.visit_id for line in called) == sorted([first, second])
    assert await _step(client, steps.call_next, world.actor, day) is None
