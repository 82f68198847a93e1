"""Booking in the pages' JSON API: what can be booked, booking once per key, a full slot, cancelling, refusals."""

from __future__ import annotations

import asyncio
from datetime import time, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.booking import lottery, slots
from bot.booking.slots import SlotSpec
from bot.core.chinatime import china_date
from bot.core.config import Settings
from bot.dev.demo import CHILD, GRANDMA, NJ_PARENT, PARENT
from bot.dev.fakes.wxmini import FakeMiniProgramAPI
from bot.web.appkeys import SERVICES, SESSIONS
from models import Appointment, AppointmentStatus, AuditEntry, Slot, utcnow
from tests.helpers import Client, Gate
from tests.test_miniprogram_api import Page
from tests.world import NANJING, NANTONG, clinic, registry_file

GRANDMA_FIELDS = {"name": GRANDMA.name, "id_number": GRANDMA.id_number, "relationship": "grandmother"}


@pytest.fixture
def settings(make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]) -> Settings:
    """The test settings, with the mini program's API on its own fake."""
    return make_settings(wxmini_api_base=fake_mini[1])  # type: ignore[no-any-return]


async def _publish(client: Client, clinic_id: int, days_ahead: int, capacity: int, **extra: object) -> int:
    day = china_date(utcnow()) + timedelta(days=days_ahead)
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec("HepB", day, time(9), time(10), capacity, **extra)  # type: ignore[arg-type]
        return (await slots.publish(session, clinic_id, spec)).id


async def _family(client: Client, fake: FakeMiniProgramAPI) -> tuple[Page, Page, int]:
    """The parent (holder) and the grandmother (authorised), both only in the mini program; the certificate."""
    await registry_file(
        client,
        ref="MP-BOOK",
        name=CHILD.name,
        id_number=CHILD.id_number,
        birth=CHILD.birth,
        sex=CHILD.sex,
        guardians=[PARENT.id_number],
        doses=[("HepB", 1, CHILD.birth)],
    )
    parent = Page(client, fake, "o-book-parent")
    await parent.login()
    await parent.verify(PARENT.name, PARENT.id_number)
    status, pending = await parent.call("GET", "/pending")
    assert status == 200, pending
    [item] = pending["items"]
    status, claimed = await parent.call("POST", "/claims", {"file": item["file"], "agree": True})
    assert status == 200, claimed
    certificate = int(claimed["certificate"])
    fields = {**GRANDMA_FIELDS, "phone": "13912345678"}
    status, grant = await parent.call("POST", f"/certificates/{certificate}/grants", fields)
    assert status == 200, grant
    grandma = Page(client, fake, "o-book-grandma")
    await grandma.login()
    await grandma.verify(GRANDMA.name, GRANDMA.id_number)
    return parent, grandma, certificate


async def _booked(client: Client, slot_id: int) -> tuple[int, int]:
    """The slot's count and its active bookings (they must agree)."""
    async with client.app[SESSIONS]() as session:
        slot = await session.get(Slot, slot_id)
        assert slot is not None
        query = select(Appointment).where(
            Appointment.slot_id == slot_id, Appointment.status == AppointmentStatus.BOOKED
        )
        return slot.booked, len((await session.scalars(query)).all())


async def _audit(client: Client, action: str) -> list[AuditEntry]:
    async with client.app[SESSIONS]() as session:
        return list((await session.scalars(select(AuditEntry).where(AuditEntry.action == action))).all())


def _code(answer: tuple[int, dict[str, Any]]) -> tuple[int, str]:
    return answer[0], str(answer[1].get("error", {}).get("code", ""))


async def test_options_book_once_per_key_list_and_cancel(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client = app_client
    parent, grandma, certificate = await _family(client, fake_mini[0])
    nantong, nanjing = await clinic(client, *NANTONG), await clinic(client, *NANJING)
    slot = await _publish(client, nantong, 2, 5)
    await _publish(client, nanjing, 3, 5)
    later = await _publish(client, nantong, 4, 5, opens_at=utcnow() + timedelta(days=1))
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec("HepB", china_date(utcnow()) + timedelta(days=5), time(9), time(10), 5)
        drawn, _ = await lottery.publish_lottery(
            session,
            client.app[SERVICES].vault,
            nantong,
            spec,
            opens_at=utcnow(),
            closes_at=utcnow() + timedelta(days=1),
            confirm_hours=24,
        )

    status, options = await parent.call("GET", f"/certificates/{certificate}/booking")
    assert status == 200, options
    assert options["name"] == "林*满"
    [hepb] = [item for item in options["vaccines"] if item["code"] == "HepB"]
    assert (hepb["dose"], hepb["booked"]) == (2, None)
    assert options["vaccines"][0]["status"] in ("overdue", "due")  # due doses come first
    windows = {window["slot"]: window for each in hepb["clinics"] for day in each["days"] for window in day["windows"]}
    assert (windows[slot]["left"], windows[slot]["bookable"]) == (5, True)
    assert windows[later]["bookable"] is False and windows[later]["opens_at"]
    assert (windows[drawn.id]["lottery"], windows[drawn.id]["bookable"]) == (True, False)
    assert windows[slot]["lottery"] is False

    # A double tap: the same key twice books one place and answers the same booking.
    status, first = await parent.call(
        "POST", f"/certificates/{certificate}/bookings", {"slot": slot, "key": "tap-0001"}
    )
    assert status == 200, first
    status, again = await parent.call(
        "POST", f"/certificates/{certificate}/bookings", {"slot": slot, "key": "tap-0001"}
    )
    assert status == 200, again
    assert (first["booking"], first["repeated"], again["booking"], again["repeated"]) == (
        first["booking"],
        False,
        first["booking"],
        True,
    )
    assert len(first["number"]) == 10 and first["name"] == "林*满" and first["clinic"]
    assert await _booked(client, slot) == (1, 1)
    assert len(await _audit(client, "booking_made")) == 1

    # A new key for the same vaccine: the person holds a booking already (the chat's rule).
    held = await parent.call("POST", f"/certificates/{certificate}/bookings", {"slot": later, "key": "tap-0002"})
    assert _code(held) == (409, "booking_held")
    assert first["number"] in held[1]["error"]["message"]

    # The grandmother, authorised, sees it in her bookings; the options now show it as booked.
    status, mine = await grandma.call("GET", "/bookings")
    assert status == 200 and [item["booking"] for item in mine["items"]] == [first["booking"]]
    status, options = await parent.call("GET", f"/certificates/{certificate}/booking")
    [hepb] = [item for item in options["vaccines"] if item["code"] == "HepB"]
    assert hepb["booked"]["booking"] == first["booking"]

    # Cancel: the place comes back; cancelling again is refused with its own code.
    status, cancelled = await grandma.call("DELETE", f"/bookings/{first['booking']}")
    assert (status, cancelled) == (200, {"booking": first["booking"], "cancelled": True})
    assert await _booked(client, slot) == (0, 0)
    assert _code(await parent.call("DELETE", f"/bookings/{first['booking']}")) == (409, "booking_not_active")
    assert (await parent.call("GET", "/bookings"))[1]["items"] == []
    assert len(await _audit(client, "booking_cancelled")) == 1


async def test_a_full_slot_and_a_slot_not_open_get_stable_codes(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client = app_client
    parent, grandma, certificate = await _family(client, fake_mini[0])
    nantong = await clinic(client, *NANTONG)
    slot = await _publish(client, nantong, 2, 1)
    later = await _publish(client, nantong, 4, 5, opens_at=utcnow() + timedelta(days=1))
    async with client.app[SESSIONS]() as session, session.begin():  # someone else took the last place
        taken = await session.get(Slot, slot)
        assert taken is not None
        taken.booked = 1

    full = await parent.call("POST", f"/certificates/{certificate}/bookings", {"slot": slot, "key": "tap-full-1"})
    assert _code(full) == (409, "booking_full") and "约满" in full[1]["error"]["message"]
    not_open = await grandma.call("POST", f"/certificates/{certificate}/bookings", {"slot": later, "key": "tap-open-1"})
    assert _code(not_open) == (409, "booking_not_open") and "开放" in not_open[1]["error"]["message"]
    assert _code(
        await parent.call("POST", f"/certificates/{certificate}/bookings", {"slot": 999999, "key": "tap-gone-1"})
    ) == (
        404,
        "booking_slot_not_found",
    )
    assert _code(await parent.call("POST", f"/certificates/{certificate}/bookings", {"slot": slot})) == (
        400,
        "bad_request",
    )
    assert await _booked(client, later) == (0, 0)
    assert {entry.reason for entry in await _audit(client, "booking_refused")} >= {"full", "not_open"}


async def test_someone_elses_booking_and_certificate_are_refused(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client = app_client
    fake = fake_mini[0]
    parent, _, certificate = await _family(client, fake)
    slot = await _publish(client, await clinic(client, *NANTONG), 2, 5)
    status, booked = await parent.call(
        "POST", f"/certificates/{certificate}/bookings", {"slot": slot, "key": "tap-mine-1"}
    )
    assert status == 200, booked

    stranger = Page(client, fake, "o-book-stranger")
    await stranger.login()
    await stranger.verify(NJ_PARENT.name, NJ_PARENT.id_number)
    assert _code(await stranger.call("DELETE", f"/bookings/{booked['booking']}")) == (404, "booking_not_found")
    assert _code(await stranger.call("GET", f"/certificates/{certificate}/booking")) == (404, "not_found")
    steal = await stranger.call("POST", f"/certificates/{certificate}/bookings", {"slot": slot, "key": "tap-steal1"})
    assert _code(steal) == (404, "not_found")
    assert (await stranger.call("GET", "/bookings"))[1]["items"] == []
    assert await _booked(client, slot) == (1, 1)  # still the parent's
    refused = await _audit(client, "booking_refused")
    assert [entry.reason for entry in refused] == ["not_visible"]

    # Not verified: every booking endpoint answers the same refusal as the rest of the API.
    newcomer = Page(client, fake, "o-book-newcomer")
    await newcomer.login()
    for method, path in (
        ("GET", "/bookings"),
        ("GET", f"/certificates/{certificate}/booking"),
        ("DELETE", f"/bookings/{booked['booking']}"),
    ):
        assert _code(await newcomer.call(method, path)) == (403, "not_verified")
    not_verified = await newcomer.call(
        "POST", f"/certificates/{certificate}/bookings", {"slot": slot, "key": "tap-new-01"}
    )
    assert _code(not_verified) == (403, "not_verified")
    assert await _booked(client, slot) == (1, 1)


async def test_a_double_submit_at_the_same_moment_books_once(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client = app_client
    parent, _, certificate = await _family(client, fake_mini[0])
    slot = await _publish(client, await clinic(client, *NANTONG), 2, 5)
    body = {"slot": slot, "key": "tap-twice-01"}
    path = f"/certificates/{certificate}/bookings"
    answers = await asyncio.gather(*(parent.call("POST", path, body) for _ in range(3)))
    assert [status for status, _ in answers] == [200, 200, 200], answers
    assert len({answer["booking"] for _, answer in answers}) == 1
    assert sorted(answer["repeated"] for _, answer in answers) == [False, True, True]
    assert await _booked(client, slot) == (1, 1)
    assert len(await _audit(client, "booking_made")) == 1
