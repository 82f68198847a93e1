"""一验证 through the webhook: the desk asks, the family answers 「确认」 in chat, on WeChat and on Alipay."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.desk import steps
from bot.desk.queue import take_number
from bot.dev.demo import CHILD
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, OutboxMessage, Visit, VisitStatus, utcnow
from tests.channels import Channel
from tests.desk_kit import GIVEN, NO_PROBLEMS, DeskWorld, desk_world, plan, queue_visit, second_child
from tests.helpers import Client, drain_outbox
from tests.test_show_code import read_qr
from tests.world import NANTONG


async def _ask(client: Client, world: DeskWorld, visit: int, lot: str = "202611A03") -> None:
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        await steps.register(session, vault, world.actor, visit, NO_PROBLEMS, desk="2号接种台")
    async with client.app[SESSIONS]() as session, session.begin():
        await steps.request_confirmation(session, vault, world.actor, visit, plan(lot=lot))


async def _status(client: Client, visit: int) -> tuple[VisitStatus, str]:
    async with client.app[SESSIONS]() as session:
        row = await session.get(Visit, visit)
        assert row is not None
        return VisitStatus(row.status), row.verified_by


async def test_the_grandmother_confirms_in_chat(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    # She writes first (as she would when showing the code in chat): the desk's news reach her as texts.
    assert "没有需要您确认的接种" in await channel.say(world.grandma_user, "确认")
    visit = await queue_visit(client, world, world.grandma_id)
    await _ask(client, world, visit)
    async with client.app[SESSIONS]() as session:
        asks = (
            await session.scalars(select(OutboxMessage).where(OutboxMessage.idempotency_key.like("desk:%:confirm:%")))
        ).all()
    assert {row.recipient for row in asks} == {world.grandma_user, world.parent_user}
    request = next(str(row.payload.get("content")) for row in asks if row.recipient == world.grandma_user)
    assert request.startswith("即将为 林*满 接种：乙肝疫苗 第2剂，批号 202611A03，有效期至")
    assert request.endswith("请核对后回复「确认」") and CHILD.name not in request

    answer = await channel.say(world.grandma_user, "确认")
    assert "已确认：林*满 乙肝疫苗 第2剂" in answer, answer
    assert await _status(client, visit) == (VisitStatus.VERIFIED, f"identity:{world.grandma_id}")
    # Again: already confirmed, said kindly, nothing changes.
    assert "已经确认过了" in await channel.say(world.grandma_user, "确认")
    async with client.app[SESSIONS]() as session:
        audits = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "desk_verified"))).all()
    assert [(entry.actor_ref, entry.reason, entry.platform) for entry in audits] == [
        (f"identity:{world.grandma_id}", "chat", channel.platform)
    ]


async def test_a_changed_plan_is_confirmed_only_from_its_own_message(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    await channel.say(world.parent_user, "你好")
    visit = await queue_visit(client, world, world.parent_id)
    await _ask(client, world, visit, lot="LOT-A")
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        await steps.request_confirmation(session, vault, world.actor, visit, plan(lot="LOT-B"))
    answer = await channel.say(world.parent_user, "确认")
    assert "已确认" in answer
    detail_lot = None
    async with client.app[SESSIONS]() as session, session.begin():
        detail = await steps.visit_detail(session, vault, world.actor, visit)
        detail_lot = detail.plan.lot_number if detail.plan else None
    assert detail_lot == "LOT-B" and detail.summary.status == VisitStatus.VERIFIED


async def test_two_children_waiting_the_answer_names_the_number(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    await channel.say(world.parent_user, "你好")
    baby = await second_child(client, world, channel.platform)
    first = await queue_visit(client, world, world.parent_id)
    second = await queue_visit(client, world, world.parent_id, certificate_id=baby)
    await _ask(client, world, first)
    await _ask(client, world, second)
    async with client.app[SESSIONS]() as session:
        numbers = {visit: (await session.get(Visit, visit)).queue_number for visit in (first, second)}  # type: ignore[union-attr]
    answer = await channel.say(world.parent_user, "确认")
    assert "有2项接种等您确认" in answer and f"{numbers[first]}号" in answer and f"{numbers[second]}号" in answer
    assert (await _status(client, first))[0] == (await _status(client, second))[0] == VisitStatus.REGISTERED
    answer = await channel.say(world.parent_user, f"确认{numbers[second]}")
    assert "已确认：林*禾" in answer, answer
    assert (await _status(client, second))[0] == VisitStatus.VERIFIED
    assert (await _status(client, first))[0] == VisitStatus.REGISTERED
    assert "已确认：林*满" in await channel.say(world.parent_user, "确认")


async def test_a_stranger_or_an_unverified_account_confirms_nothing(app_client: Client, channel: Channel) -> None:
    client = app_client
    world = await desk_world(client, channel.platform, channel.app_id)
    visit = await queue_visit(client, world, world.parent_id)
    await _ask(client, world, visit)
    stranger = "o-desk-stranger" if channel.platform == "wechat" else "2088000000000999"
    assert "没有需要您确认的接种" in await channel.say(stranger, "确认")
    # The grandmother is authorised, but the code was the parent's and the request went to the parent.
    assert "没有需要您确认的接种" in await channel.say(world.grandma_user, "确认")
    assert (await _status(client, visit))[0] == VisitStatus.REGISTERED


async def test_done_when_the_grandmother_shows_a_code_confirms_and_the_family_hears_every_step(
    app_client: Client, channel: Channel
) -> None:
    client = app_client
    services = client.app[SERVICES]
    world = await desk_world(client, channel.platform, channel.app_id)
    await channel.say(world.parent_user, "你好")  # the parent wrote lately too (the platforms' windows)
    # The grandmother shows the child's code in chat; the desk scans what the image holds.
    before = len(channel.images(world.grandma_user))
    await channel.do(world.grandma_user, ("click", "CODE_SHOW"))
    payload = read_qr(channel.images(world.grandma_user)[before])
    async with client.app[SESSIONS]() as session, session.begin():
        ticket = await take_number(
            session,
            services.vault,
            services.catalogue,
            clinic_code=NANTONG[0],
            pilot_regions=services.settings.pilot_regions,
            payload=payload,
            staff="nurse-1",
            now=utcnow(),
        )
    visit = ticket.visit_id
    await _ask(client, world, visit)
    await drain_outbox(client)
    assert "已确认" in await channel.say(world.grandma_user, "确认")
    vault = services.vault
    async with client.app[SESSIONS]() as session, session.begin():
        await steps.vaccinate(session, vault, world.actor, visit, GIVEN)
    async with client.app[SESSIONS]() as session, session.begin():
        await steps.finish_observation(session, vault, world.actor, visit, now=utcnow() + timedelta(minutes=31))
    await drain_outbox(client)
    for user in (world.grandma_user, world.parent_user):
        heard = "\n".join(channel.inbox(user))
        for words in ("排队号", "已完成登记", "即将为 林*满 接种", "请在留观区留观30分钟", "可以离开了；下一针："):
            assert words in heard, (user, words, heard)
    # The dose is in the records at once, with the clinic's name, and the forecast has moved on.
    records = "\n".join(await channel.do(world.parent_user, ("click", "CERT_RECORDS")))
    assert "【乙肝疫苗】" in records and "第2剂" in records and NANTONG[1] in records, records
    assert "乙肝疫苗 第2剂：已逾期" not in records
