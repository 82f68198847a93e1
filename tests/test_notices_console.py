"""The console's 通知 page (compose, preview with counts only, send once, delivery report) and closures that
must go through a notice, in the console and in the clinic API."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from bot.dev.demo import CHILD
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.web.appkeys import SESSIONS
from models import Appointment, AppointmentStatus, AuditEntry, Notice, NoticeDelivery, Slot, StaffRole
from tests.channels import Alipay, WeChat
from tests.helpers import Client, count, drain_outbox
from tests.notice_kit import PARENT_USER, notice_world
from tests.test_clinic_api import API, ClinicSystem, _key
from tests.test_console import Browser, _staff
from tests.world import NANTONG

KEY = re.compile(r'name="key" value="([^"]+)"')


@pytest.fixture
def family(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
) -> tuple[WeChat, Alipay]:
    """The parent's side on WeChat, the grandmother's on Alipay."""
    return WeChat(app_client, wechat, fake), Alipay(app_client, alipay, fake_alipay[0])


async def _appointment(client: Client) -> Appointment:
    async with client.app[SESSIONS]() as session:
        (appointment,) = (await session.scalars(select(Appointment))).all()
        return appointment


async def test_a_registrar_closes_a_booked_day_through_a_notice(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    staff_id = await _staff(client, "nurse-zhou", StaffRole.REGISTRAR)
    browser = Browser(client)
    await browser.sign_in("nurse-zhou")
    day = world.day.isoformat()

    # The slot page no longer closes a day with bookings: it points to the notices.
    await browser.get("/clinic/slots")
    status, body, _ = await browser.post("/clinic/slots/close", {"day": day})
    assert status == 409 and "还有 1 个预约" in body and "通知" in body
    async with client.app[SESSIONS]() as session:
        assert (await session.scalars(select(Slot.closed_at))).all() == [None]

    status, body, _ = await browser.get("/clinic/notices")
    assert status == 200 and "门诊通知" in body and f'value="{day}"' in body and "还没有发送过通知" in body
    form = {"kind": "closure", "audience": "booked", "window": day, "action": "cancel", "text": "停电检修，停诊一天。"}
    status, body, _ = await browser.post("/clinic/notices/preview", {**form, "text": "字" * 101})
    assert status == 400 and "最多100个字" in body
    status, body, _ = await browser.post("/clinic/notices/preview", {**form, "action": "none"})
    assert status == 400 and "说明预约怎么处理" in body
    status, body, _ = await browser.post("/clinic/notices/preview", form)
    assert status == 200 and "将影响 1 个预约，通知 1 个家庭、共 2 个账号" in body
    assert CHILD.name not in body and "林*满" not in body  # counts only
    (key,) = KEY.findall(body)
    confirm = {**form, "key": key, "windows": day}
    del confirm["window"]
    status, body, _ = await browser.post("/clinic/notices", confirm, csrf="forged")
    assert status == 403 and await count(client, Notice) == 0
    status, _, location = await browser.post("/clinic/notices", confirm)
    assert status == 303 and re.fullmatch(r"/clinic/notices/\d+\?sent=1", location)
    status, _, again = await browser.post("/clinic/notices", confirm)  # a double click sends once
    assert status == 303 and again == location
    assert await count(client, Notice) == 1 and await count(client, NoticeDelivery) == 2
    assert (await _appointment(client)).status == AppointmentStatus.CANCELLED

    status, body, _ = await browser.get(location)
    assert status == 200 and "取消 1 个预约" in body and "等待发送" in body
    await drain_outbox(client)
    status, body, _ = await browser.get(location.split("?")[0])
    assert status == 200 and body.count('class="delivery-sent"') == 2 and PARENT_USER not in body
    assert "微信" in body and "支付宝" in body
    status, body, _ = await browser.get("/clinic/notices")
    assert "停电检修" in body and location.split("?")[0] in body
    async with client.app[SESSIONS]() as session:
        notice = (await session.scalars(select(Notice))).one()
        actions = (
            await session.scalars(select(AuditEntry.action).where(AuditEntry.actor_ref.like(f"staff:{staff_id}@%")))
        ).all()
    assert notice.staff_id == staff_id and "notice_sent" in actions


async def test_an_observer_cannot_send_notices_and_another_clinic_cannot_read_them(
    app_client: Client, family: tuple[WeChat, Alipay]
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    await _staff(client, "obs-wang", StaffRole.OBSERVER)
    observer = Browser(client)
    await observer.sign_in("obs-wang")
    status, body, _ = await observer.get("/clinic/notices")
    assert status == 403
    status, _, _ = await observer.get("/clinic/queue")
    form = {"kind": "stock", "audience": "registered", "action": "none", "text": "流感疫苗到货。", "key": "k" * 24}
    status, _, _ = await observer.post("/clinic/notices", form)
    assert status == 403 and await count(client, Notice) == 0

    await _staff(client, "admin-li", StaffRole.ADMIN)
    admin = Browser(client)
    await admin.sign_in("admin-li")
    await admin.get("/clinic/notices")
    status, _, location = await admin.post("/clinic/notices", form)
    assert status == 303
    assert (await _appointment(client)).status == AppointmentStatus.BOOKED  # stock news changes no booking
    from tests.world import NANJING

    await _staff(client, "admin-nj", StaffRole.ADMIN, at=NANJING)
    stranger = Browser(client)
    await stranger.sign_in("admin-nj", clinic_code=NANJING[0])
    status, body, _ = await stranger.get(location.split("?")[0])
    assert status == 404 and "没有找到这条通知" in body
    assert world.clinic_id


async def test_the_clinic_api_closes_a_booked_day_only_with_a_notice(
    app_client: Client, family: tuple[WeChat, Alipay], fake: FakeWeChatAPI
) -> None:
    client = app_client
    world = await notice_world(client, *family)
    system = ClinicSystem(client, await _key(client, NANTONG[0]))
    day = world.day.isoformat()
    status, answer = await system.call("POST", f"{API}/slots/close", {"date": day})
    assert status == 409 and answer["error"] == "bookings_affected" and answer["bookings"] == 1
    async with client.app[SESSIONS]() as session:
        assert (await session.scalars(select(Slot.closed_at))).all() == [None]
    body = {"date": day, "notice": {"text": "停电检修，停诊一天。", "action": "cancel", "key": "his-closure-0001"}}
    status, answer = await system.call("POST", f"{API}/slots/close", {**body, "notice": {**body["notice"], "text": ""}})
    assert status == 422 and answer["error"] == "notice_refused"
    status, answer = await system.call("POST", f"{API}/slots/close", body)
    assert status == 200 and answer["closed"] == 1 and answer["notice"]["bookings_cancelled"] == 1
    assert answer["notice"]["accounts"] == 2
    status, again = await system.call("POST", f"{API}/slots/close", body)  # a retry sends once
    assert status == 200 and again["notice"]["id"] == answer["notice"]["id"] and again["notice"]["repeated"]
    assert await count(client, Notice) == 1
    await drain_outbox(client)
    status, delivered = await system.call("GET", f"{API}/notices/{answer['notice']['id']}")
    assert status == 200 and delivered["sent"] == 2 and delivered["waiting"] == 0 and delivered["failed"] == 0
    assert all(PARENT_USER not in line["recipient"] for line in delivered["deliveries"])
