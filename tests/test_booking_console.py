"""预约号源 in the console (registrars and admins publish and close at their own clinic) and the clinic API."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.core.chinatime import china_date
from bot.web.appkeys import SESSIONS
from models import AuditEntry, Slot, StaffRole, utcnow
from tests.helpers import Client
from tests.test_clinic_api import API, ClinicSystem, _key
from tests.test_console import Browser, _staff
from tests.world import NANJING, NANTONG, clinic


async def _slots(client: Client) -> list[Slot]:
    async with client.app[SESSIONS]() as session:
        return list((await session.scalars(select(Slot).order_by(Slot.id))).all())


async def test_a_registrar_publishes_and_closes_slots(app_client: Client) -> None:
    staff_id = await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    await clinic(app_client, *NANJING)
    browser = Browser(app_client)
    await browser.sign_in("nurse-li")
    status, body, _ = await browser.get("/clinic/slots")
    assert status == 200 and "近期没有发布号源" in body and "发布号源" in body
    day = (china_date(utcnow()) + timedelta(days=3)).isoformat()
    form = {"vaccine": "HPV9", "day": day, "start": "09:00", "end": "11:00", "capacity": "20", "price": "1318"}
    status, body, _ = await browser.post("/clinic/slots", form)
    assert status == 200 and "号源已发布" in body and "0/20" in body and "1318.00" in body
    bad = {**form, "end": "08:00"}
    status, body, _ = await browser.post("/clinic/slots", bad)
    assert status == 400 and "没有发布任何号源" in body
    status, body, _ = await browser.post("/clinic/slots", form, csrf="forged")
    assert status == 403
    (slot,) = await _slots(app_client)
    assert (slot.vaccine_code, slot.capacity, slot.price_fen, slot.funding) == ("HPV9", 20, 131800, "self_paid")
    status, body, _ = await browser.post("/clinic/slots/close", {"day": day})
    assert status == 200 and "已关闭 1 个时段" in body and "已关闭" in body
    (slot,) = await _slots(app_client)
    assert slot.closed_at is not None
    async with app_client.app[SESSIONS]() as session:
        actions = (
            await session.scalars(select(AuditEntry.action).where(AuditEntry.actor_ref.like(f"staff:{staff_id}@%")))
        ).all()
    assert "slot_published" in actions and "slots_closed" in actions


async def test_an_observer_sees_but_cannot_publish(app_client: Client) -> None:
    await _staff(app_client, "obs-wang", StaffRole.OBSERVER)
    browser = Browser(app_client)
    await browser.sign_in("obs-wang")
    status, body, _ = await browser.get("/clinic/slots")
    assert status == 200 and "预约号源" in body and 'action="/clinic/slots"' not in body
    day = (china_date(utcnow()) + timedelta(days=3)).isoformat()
    form = {"vaccine": "HepB", "day": day, "start": "09:00", "end": "10:00", "capacity": "5"}
    status, _, _ = await browser.post("/clinic/slots", form)
    assert status == 403
    assert await _slots(app_client) == []


async def test_a_clinic_system_publishes_lists_and_closes_slots_through_the_api(app_client: Client) -> None:
    await clinic(app_client, *NANTONG)
    await clinic(app_client, *NANJING)
    system = ClinicSystem(app_client, await _key(app_client, NANTONG[0]))
    other = ClinicSystem(app_client, await _key(app_client, NANJING[0]))
    day = (china_date(utcnow()) + timedelta(days=4)).isoformat()
    body = {"vaccine_code": "HPV9", "date": day, "start": "14:00", "end": "16:00", "capacity": 100}
    status, answer = await system.call(
        "POST", f"{API}/slots", {**body, "price_yuan": "1318", "opens_at": f"{day}T08:00"}
    )
    assert status == 200 and answer["slot"]["capacity"] == 100 and answer["slot"]["price_fen"] == 131800
    status, answer = await system.call("POST", f"{API}/slots", {**body, "end": "13:00"})
    assert status == 422 and answer["error"] == "slot_refused"
    status, answer = await system.call("POST", f"{API}/slots", {**body, "capacity": "many"})
    assert status == 400
    status, listed = await system.call("GET", f"{API}/slots")
    assert status == 200 and [slot["vaccine_code"] for slot in listed["slots"]] == ["HPV9"]
    status, listed = await other.call("GET", f"{API}/slots")  # another clinic's system sees its own only
    assert status == 200 and listed["slots"] == []
    status, closed = await other.call("POST", f"{API}/slots/close", {"date": day})
    assert status == 200 and closed["closed"] == 0
    status, closed = await system.call("POST", f"{API}/slots/close", {"date": day, "start": "14:00"})
    assert status == 200 and closed["closed"] == 1
    (slot,) = await _slots(app_client)
    assert slot.closed_at is not None
