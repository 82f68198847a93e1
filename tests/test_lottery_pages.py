"""A lottery slot in the pages' JSON API: shown, never bookable first come (its places are drawn)."""

from __future__ import annotations

from datetime import time, timedelta

from bot.booking import lottery
from bot.booking.slots import SlotSpec
from bot.core.chinatime import china_date
from bot.dev.fakes.wxmini import FakeMiniProgramAPI
from bot.web.appkeys import SERVICES, SESSIONS
from models import utcnow
from tests.helpers import Client, Gate
from tests.test_miniprogram_booking import _family, settings  # noqa: F401 (the fixture: the mini program's fake)
from tests.world import NANTONG, clinic


async def test_a_lottery_slot_is_shown_but_not_bookable_from_the_pages(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client = app_client
    parent, _, certificate = await _family(client, fake_mini[0])
    nantong = await clinic(client, *NANTONG)
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec("HepB", china_date(utcnow()) + timedelta(days=5), time(9), time(10), 5)
        slot, _ = await lottery.publish_lottery(
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
    [hepb] = [item for item in options["vaccines"] if item["code"] == "HepB"]
    windows = {window["slot"]: window for each in hepb["clinics"] for day in each["days"] for window in day["windows"]}
    assert windows[slot.id]["bookable"] is False
    status, refused = await parent.call(
        "POST", f"/certificates/{certificate}/bookings", {"slot": slot.id, "key": "tap-lottery-1"}
    )
    assert status == 409 and refused["error"]["code"] == "booking_closed"
