"""Lottery slots published by staff: the console's 预约号源 page and the clinic API, with the lottery's counts."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from bot.booking import draw, lottery
from bot.core.chinatime import CHINA, china_date
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, Lottery, Slot, StaffRole, utcnow
from tests.helpers import Client
from tests.test_clinic_api import API, ClinicSystem, _key
from tests.test_console import Browser, _staff
from tests.world import NANJING, NANTONG, clinic


async def _lotteries(client: Client) -> list[tuple[Lottery, Slot]]:
    async with client.app[SESSIONS]() as session:
        rows = await session.execute(select(Lottery, Slot).join(Slot, Slot.id == Lottery.slot_id).order_by(Lottery.id))
        return [(drawn, slot) for drawn, slot in rows.all()]


async def test_a_registrar_publishes_a_lottery_slot_and_sees_its_counts(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    await clinic(app_client, *NANJING)
    browser = Browser(app_client)
    await browser.sign_in("nurse-li")
    await browser.get("/clinic/slots")
    day = china_date(utcnow()) + timedelta(days=10)
    closes = (datetime.now(CHINA) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    form = {
        "vaccine": "HPV9",
        "day": day.isoformat(),
        "start": "09:00",
        "end": "11:00",
        "capacity": "40",
        "price": "1318",
        "lottery_closes": closes,
    }
    status, body, _ = await browser.post("/clinic/slots", form)
    assert status == 200 and "号源已发布" in body and "摇号 LT" in body and "报名0人" in body
    too_late = {**form, "lottery_closes": f"{day.isoformat()}T08:00"}  # no time left to confirm
    status, body, _ = await browser.post("/clinic/slots", too_late)
    assert status == 400 and "摇号设置有误" in body
    ((drawn, slot),) = await _lotteries(app_client)
    assert slot.mode == "lottery" and drawn.places == 40 and drawn.seed is None and len(drawn.seed_sha256) == 64
    async with app_client.app[SESSIONS]() as session:
        audited = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "slot_published"))).all()
    assert [entry.detail.get("lottery") for entry in audited] == [drawn.public_id]


async def test_a_clinic_system_publishes_a_lottery_slot_through_the_api(app_client: Client) -> None:
    await clinic(app_client, *NANTONG)
    system = ClinicSystem(app_client, await _key(app_client, NANTONG[0]))
    day = (china_date(utcnow()) + timedelta(days=12)).isoformat()
    closes = (datetime.now(CHINA) + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")
    body = {"vaccine_code": "HPV9", "date": day, "start": "14:00", "end": "16:00", "capacity": 30}
    status, answer = await system.call(
        "POST", f"{API}/slots", {**body, "price_yuan": "1318", "lottery": {"registration_closes_at": closes}}
    )
    assert status == 200 and answer["slot"]["mode"] == "lottery"
    shown = answer["slot"]["lottery"]
    assert shown["status"] == "open" and shown["entries"] == 0 and len(shown["seed_sha256"]) == 64
    status, answer = await system.call("POST", f"{API}/slots", {**body, "lottery": {"registration_closes_at": "x"}})
    assert status == 422 and answer["error"] == "slot_refused"
    after_start = {"registration_closes_at": f"{day}T15:00"}  # refused after the slot was added: rolled back
    status, answer = await system.call("POST", f"{API}/slots", {**body, "lottery": after_start})
    assert status == 422 and answer["error"] == "slot_refused"
    status, answer = await system.call("POST", f"{API}/slots", {**body, "lottery": "soon"})
    assert status == 400
    status, listed = await system.call("GET", f"{API}/slots")
    assert status == 200 and [slot["lottery"]["lottery_id"] for slot in listed["slots"]] == [shown["lottery_id"]]
    assert len(await _lotteries(app_client)) == 1
    async with app_client.app[SESSIONS]() as session:
        assert len((await session.scalars(select(Slot))).all()) == 1


async def test_the_published_record_is_served_and_verifies_once_drawn(app_client: Client) -> None:
    await clinic(app_client, *NANTONG)
    system = ClinicSystem(app_client, await _key(app_client, NANTONG[0]))
    day = (china_date(utcnow()) + timedelta(days=12)).isoformat()
    closes = (datetime.now(CHINA) + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")
    body = {"vaccine_code": "HPV9", "date": day, "start": "14:00", "end": "16:00", "capacity": 3, "price_yuan": "1318"}
    _, answer = await system.call("POST", f"{API}/slots", {**body, "lottery": {"registration_closes_at": closes}})
    public_id = answer["slot"]["lottery"]["lottery_id"]
    before = await (await app_client.get(f"/lottery/{public_id}")).json()
    assert before["seed"] is None and before["ranking"] is None and before["seed_sha256"]
    ((drawn, _),) = await _lotteries(app_client)
    async with app_client.app[SESSIONS]() as session, session.begin():
        assert await lottery.draw_lottery(
            session, app_client.app[SERVICES].vault, drawn.id, utcnow() + timedelta(days=6)
        )
    after = await (await app_client.get(f"/lottery/{public_id}")).json()
    assert after["seed_sha256"] == before["seed_sha256"] and draw.verify(after) == []
    assert (await app_client.get("/lottery/LT-NOPE")).status == 404
