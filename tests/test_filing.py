"""Auto-filing (自动建档): a child with no file added in chat, a person with no file, and an existing file compared.

The codes are read back from the chat's images with a real QR reader and scanned at the desk.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.certificates.rules import Standing, pending_for
from bot.core.chinatime import china_date
from bot.desk import filing, steps
from bot.desk.queue import Ticket, take_number
from bot.desk.steps import DeskActor, StepProblem, StepRefused
from bot.dev.demo import CHILD, PARENT, demo_id_number
from bot.web.appkeys import SERVICES, SESSIONS
from models import (
    AuditEntry,
    Certificate,
    FilingRequest,
    FilingStatus,
    Guardian,
    Identity,
    ReminderPlan,
    Vaccinee,
    utcnow,
)
from tests.channels import Channel
from tests.desk_kit import GIVEN, NO_PROBLEMS, desk_world, queue_visit
from tests.helpers import Client, outbox_rows
from tests.test_show_code import read_qr
from tests.world import NANJING, NANTONG, clinic, registry_file, verified

BABY_NAME = "林小安"
BABY_CERT = "Q320261201"
BABY_BIRTH = date(2026, 11, 2)
NEWCOMER = ("王建国", demo_id_number("320602", date(1985, 4, 3), 517))  # moved here: no file anywhere


async def _scan(client: Client, payload: str) -> Ticket:
    services = client.app[SERVICES]
    async with client.app[SESSIONS]() as session, session.begin():
        return await take_number(
            session,
            services.vault,
            services.catalogue,
            clinic_code=NANTONG[0],
            pilot_regions=services.settings.pilot_regions,
            payload=payload,
            staff="registrar-1",
            now=utcnow(),
        )


async def _desk(client: Client, call: Any, *args: Any, **kwargs: Any) -> Any:
    async with client.app[SESSIONS]() as session, session.begin():
        return await call(session, client.app[SERVICES].vault, *args, **kwargs)


async def _refused(client: Client, call: Any, *args: Any, **kwargs: Any) -> StepProblem:
    with pytest.raises(StepRefused) as caught:
        await _desk(client, call, *args, **kwargs)
    return caught.value.problem


async def _add_child(channel: Channel, user: str, number: str, *, name: str = BABY_NAME) -> str:
    """The chat to add a child with no file; returns the code the image holds."""
    assert "孩子的姓名" in await channel.say(user, "添加孩子")
    assert "身份证号" in await channel.say(user, name)
    answer = await channel.say(user, number)
    if "孩子的性别？" in answer:
        assert "出生日期" in await channel.say(user, "男")
        answer = await channel.say(user, f"{BABY_BIRTH.year}年{BABY_BIRTH.month}月{BABY_BIRTH.day}日")
    assert "请核对孩子的信息" in answer and name not in answer, answer
    before = len(channel.images(user))
    answer = await channel.say(user, "确认")
    assert "建档接种码" in answer and name not in answer, answer
    images = channel.images(user)[before:]
    assert len(images) == 1
    return read_qr(images[0])


async def test_a_parent_adds_a_child_the_registrar_files_it_and_the_parent_claims(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    vault = client.app[SERVICES].vault
    user = "o-filing-parent" if channel.platform == "wechat" else "2088000000000701"
    parent = await verified(client, channel.platform, user, PARENT.name, PARENT.id_number, channel.app_id)
    clinic_id = await clinic(client, *NANTONG)
    actor = DeskActor(clinic_id=clinic_id, staff_id=3)
    # Typing one's own ID number by mistake is caught; 「取消」 leaves the flow.
    await channel.say(user, "添加孩子")
    await channel.say(user, BABY_NAME)
    assert "这是您本人的身份证号" in await channel.say(user, PARENT.id_number)
    await channel.say(user, "取消")
    code = await _add_child(channel, user, BABY_CERT)
    ticket = await _scan(client, code)
    assert ticket.role == "filing" and ticket.certificate_id is None and ticket.masked_name == "林*安"
    visit = ticket.visit_id
    # Nothing but filing until the registrar files the child.
    assert await _refused(client, steps.visit_detail, actor, visit) == StepProblem.NOT_FILED
    assert await _refused(client, steps.register, actor, visit, NO_PROBLEMS) == StepProblem.NOT_FILED
    queue = await _desk(client, steps.today_queue, actor, china_date(utcnow()))
    assert [(line.visit_id, line.masked_name, line.needs_filing) for line in queue] == [(visit, "林*安", True)]
    view = await _desk(client, filing.filing_view, actor, visit)
    assert view.relation == "child" and view.existing_vaccinee_id is None and view.mismatches == []
    assert view.details.name == BABY_NAME and view.details.birth_cert_no == BABY_CERT
    assert view.details.birth_date == BABY_BIRTH and view.details.sex == "M" and view.requested_by == "林*雨"
    filed = await _desk(client, filing.file_visit, actor, visit)
    assert filed.status == "queued"
    again = await _desk(client, filing.file_visit, actor, visit)  # a double click files once
    assert again.visit_id == visit
    async with client.app[SESSIONS]() as session:
        files = (await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref.like("DESK-%")))).all()
        assert len(files) == 1
        guardians = (await session.scalars(select(Guardian).where(Guardian.vaccinee_id == files[0].id))).all()
        request = (await session.scalars(select(FilingRequest))).one()
        identity = await session.get(Identity, parent)
        assert identity is not None
        items = await pending_for(session, vault, identity, client.app[SERVICES].settings, china_date(utcnow()))
    assert [g.id_number_hash for g in guardians] == [vault.digest("id_number", PARENT.id_number)]
    assert request.status == FilingStatus.FILED and request.vaccinee_id == files[0].id
    assert [(item.file.name, item.standing) for item in items] == [(BABY_NAME, Standing.CLAIMABLE)]
    # The family was told, and the visit now goes on like any other.
    told = await outbox_rows(client, recipient=user)
    assert any("已为林*安建立接种档案" in str(row.payload) for row in told)
    detail = await _desk(client, steps.visit_detail, actor, visit)
    assert detail.name == BABY_NAME and detail.history == [] and not detail.summary.needs_filing
    # The same day, the parent claims the certificate in chat.
    listing = "\n".join(await channel.do(user, ("click", "CERT_CLAIM")))
    assert "林*安" in listing, listing
    answer = await channel.say(user, "同意并申领") if "同意并申领" in listing else await channel.say(user, "1")
    if "同意并申领" in answer and "成功" not in answer:
        answer = await channel.say(user, "同意并申领")
    async with client.app[SESSIONS]() as session:
        certificates = (await session.scalars(select(Certificate).where(Certificate.vaccinee_id == files[0].id))).all()
    assert [c.holder_identity_id for c in certificates] == [parent], answer


async def test_a_person_with_no_file_shows_their_own_code_and_is_filed(app_client: Client, channel: Channel) -> None:
    client = app_client
    vault = client.app[SERVICES].vault
    user = "o-filing-newcomer" if channel.platform == "wechat" else "2088000000000702"
    person = await verified(client, channel.platform, user, *NEWCOMER, channel.app_id)
    clinic_id = await clinic(client, *NANTONG)
    actor = DeskActor(clinic_id=clinic_id, staff_id=4)
    # The menu's 亮码接种 explains what to do; 「我的接种码」 asks for the person's own code.
    answers = "\n".join(await channel.do(user, ("click", "CODE_SHOW")))
    assert "没有可以出示接种码" in answers and "「我的接种码」" in answers and not channel.images(user), answers
    before = len(channel.images(user))
    answers = await channel.say(user, "我的接种码")
    assert "建档接种码" in answers and "添加孩子" in answers and NEWCOMER[0] not in answers, answers
    ticket = await _scan(client, read_qr(channel.images(user)[before]))
    assert ticket.role == "filing" and ticket.masked_name == "王*国"
    view = await _desk(client, filing.filing_view, actor, ticket.visit_id)
    assert view.relation == "self" and view.details.birth_date == date(1985, 4, 3) and view.details.sex == "M"
    await _desk(client, filing.file_visit, actor, ticket.visit_id)
    # An adult's file is claimable once it has a recent dose: the one given at this desk.
    await _desk(client, steps.register, actor, ticket.visit_id, NO_PROBLEMS)
    flu = steps.DosePlan("Flu", 1, "FLU2026A", "华兰生物", china_date(utcnow()) + timedelta(days=90), "成人自愿接种")
    await _desk(client, steps.request_confirmation, actor, ticket.visit_id, flu)
    await _desk(client, steps.confirm_in_person, actor, ticket.visit_id, "本人当面核对")
    await _desk(client, steps.vaccinate, actor, ticket.visit_id, GIVEN)
    async with client.app[SESSIONS]() as session:
        identity = await session.get(Identity, person)
        assert identity is not None
        items = await pending_for(session, vault, identity, client.app[SERVICES].settings, china_date(utcnow()))
    assert [(item.file.relation, item.standing) for item in items] == [("self", Standing.CLAIMABLE)]


async def test_an_existing_file_is_compared_and_never_silently_overwritten(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    vault = client.app[SERVICES].vault
    user = "o-filing-grandpa" if channel.platform == "wechat" else "2088000000000703"
    # The child has a file, with the mother as guardian; the grandfather (verified) adds the child as
    # if it had none, and types the name differently.
    vaccinee = await registry_file(
        client,
        ref="F-CHILD",
        name=CHILD.name,
        id_number=CHILD.id_number,
        birth=CHILD.birth,
        sex=CHILD.sex,
        guardians=[PARENT.id_number],
    )
    grandpa_id = demo_id_number("320602", date(1960, 1, 9), 331)
    await verified(client, channel.platform, user, "林国栋", grandpa_id, channel.app_id)
    clinic_id = await clinic(client, *NANTONG)
    actor = DeskActor(clinic_id=clinic_id, staff_id=5)
    code = await _add_child(channel, user, CHILD.id_number, name="林晓满")
    ticket = await _scan(client, code)
    view = await _desk(client, filing.filing_view, actor, ticket.visit_id)
    assert view.existing_vaccinee_id == vaccinee
    assert {(m.field, m.on_file, m.verified) for m in view.mismatches} == {
        ("name", CHILD.name, "林晓满"),
        ("guardian", "", "林*栋"),
    }
    # Not every difference resolved: refused, nothing changed.
    problem = await _refused(client, filing.file_visit, actor, ticket.visit_id, resolutions={"name": "keep"})
    assert problem == StepProblem.MISMATCH_UNRESOLVED
    resolutions = {"name": filing.Resolution.KEEP, "guardian": filing.Resolution.NOTE}
    await _desk(client, filing.file_visit, actor, ticket.visit_id, resolutions=resolutions, note="姓名以户口本为准")
    async with client.app[SESSIONS]() as session:
        file = await session.get(Vaccinee, vaccinee)
        assert file is not None and vault.open("name", file.name_enc) == CHILD.name
        guardians = (await session.scalars(select(Guardian).where(Guardian.vaccinee_id == vaccinee))).all()
        audits = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "filing_mismatch_resolved"))
        ).all()
        created = (await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref.like("DESK-%")))).all()
    assert len(guardians) == 1 and created == []
    assert sorted((entry.detail["field"], entry.reason, entry.actor_ref) for entry in audits) == [
        ("guardian", "note", actor.audit_actor()),
        ("name", "keep", actor.audit_actor()),
    ]
    assert CHILD.name not in str([entry.detail for entry in audits])
    detail = await _desk(client, steps.visit_detail, actor, ticket.visit_id)
    assert detail.name == CHILD.name


async def test_taking_the_verified_value_and_another_clinic(app_client: Client, channel: Channel) -> None:
    client = app_client
    vault = client.app[SERVICES].vault
    user = "o-filing-mother" if channel.platform == "wechat" else "2088000000000704"
    vaccinee = await registry_file(
        client, ref="F-CHILD2", name=CHILD.name, id_number=CHILD.id_number, birth=CHILD.birth, sex=CHILD.sex
    )
    await verified(client, channel.platform, user, PARENT.name, PARENT.id_number, channel.app_id)
    ours = DeskActor(clinic_id=await clinic(client, *NANTONG), staff_id=6)
    theirs = DeskActor(clinic_id=await clinic(client, *NANJING), staff_id=9)
    ticket = await _scan(client, await _add_child(channel, user, CHILD.id_number, name=CHILD.name))
    assert await _refused(client, filing.filing_view, theirs, ticket.visit_id) == StepProblem.NOT_FOUND
    assert await _refused(client, filing.file_visit, theirs, ticket.visit_id) == StepProblem.NOT_FOUND
    view = await _desk(client, filing.filing_view, ours, ticket.visit_id)
    assert [m.field for m in view.mismatches] == ["guardian"]  # the file lists no guardian yet
    await _desk(client, filing.file_visit, ours, ticket.visit_id, resolutions={"guardian": "take_verified"})
    async with client.app[SESSIONS]() as session:
        guardians = (await session.scalars(select(Guardian).where(Guardian.vaccinee_id == vaccinee))).all()
    assert [g.id_number_hash for g in guardians] == [vault.digest("id_number", PARENT.id_number)]


async def test_a_scanned_certificate_is_compared_with_the_verified_holder(app_client: Client, channel: Channel) -> None:
    client = app_client
    vault = client.app[SERVICES].vault
    world = await desk_world(client, channel.platform, channel.app_id)
    actor = DeskActor(clinic_id=world.clinic_id, staff_id=2)
    # The child's file lists the parent who holds its certificate: nothing to resolve.
    visit = await queue_visit(client, world, world.parent_id)
    assert await _desk(client, filing.compare_with_verified, actor, visit) == []
    # The mother's own file carries an old spelling of her name and a wrong birth date.
    own = await registry_file(
        client,
        ref="F-MOTHER",
        name="林小雨",
        id_number=PARENT.id_number,
        birth=date(1992, 3, 15),
        sex=PARENT.sex,
        stage="adult",
        doses=[("Flu", 1, date(2025, 10, 1))],
    )
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(
            vaccinee_id=own, holder_identity_id=world.parent_id, kind="adult", claimed_via=channel.platform
        )
        session.add(certificate)
        await session.flush()
        certificate_id = certificate.id
    visit = await queue_visit(client, world, world.parent_id, certificate_id=certificate_id)
    assert await _refused(client, filing.compare_with_verified, world.stranger, visit) == StepProblem.NOT_FOUND
    found = await _desk(client, filing.compare_with_verified, actor, visit)
    assert {(m.field, m.on_file, m.verified) for m in found} == {
        ("name", "林小雨", PARENT.name),
        ("birth_date", "1992-03-15", PARENT.birth.isoformat()),
    }
    left = await _desk(client, filing.resolve_mismatches, actor, visit, {"name": "take_verified"})
    assert [m.field for m in left] == ["birth_date"]
    left = await _desk(
        client, filing.resolve_mismatches, actor, visit, {"birth_date": "note"}, note="请登记处核对出生日期"
    )
    assert left == []  # every difference decided
    again = await _desk(client, filing.compare_with_verified, actor, visit)
    assert [m.field for m in again] == ["birth_date"]  # noted, not changed: it stays a difference
    async with client.app[SESSIONS]() as session:
        file = await session.get(Vaccinee, own)
        assert file is not None
        audits = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "desk_mismatch_resolved"))).all()
    assert vault.open("name", file.name_enc) == PARENT.name
    assert vault.open("birth_date", file.birth_date_enc) == "1992-03-15"
    assert [(entry.detail["field"], entry.reason) for entry in audits] == [
        ("name", "take_verified"),
        ("birth_date", "note"),
    ]


async def test_taking_the_verified_birth_date_plans_the_childs_reminders_again(
    app_client: Client, channel: Channel
) -> None:
    # The forecast follows from the birth date: a plan computed from the old one must not wait for its date.
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    actor = DeskActor(clinic_id=world.clinic_id, staff_id=2)
    own = await registry_file(
        client,
        ref="F-MOTHER-PLAN",
        name=PARENT.name,
        id_number=PARENT.id_number,
        birth=date(1992, 3, 15),
        sex=PARENT.sex,
        stage="adult",
        doses=[("Flu", 1, date(2025, 10, 1))],
    )
    today = china_date(utcnow())
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(
            vaccinee_id=own, holder_identity_id=world.parent_id, kind="adult", claimed_via=channel.platform
        )
        session.add(certificate)
        session.add(ReminderPlan(vaccinee_id=own, plan_from=today + timedelta(days=200), next_enc=b"x", generation=3))
        await session.flush()
        certificate_id = certificate.id
    visit = await queue_visit(client, world, world.parent_id, certificate_id=certificate_id)
    found = await _desk(client, filing.compare_with_verified, actor, visit)
    assert [m.field for m in found] == ["birth_date"]
    assert await _desk(client, filing.resolve_mismatches, actor, visit, {"birth_date": "take_verified"}) == []
    async with client.app[SESSIONS]() as session:
        plan = await session.get(ReminderPlan, own)
    assert plan is not None
    assert (plan.plan_from, plan.next_enc, plan.generation) == (today, None, 4)
