"""The pages' booking options and booking follow the chat's eligibility: self-paid vaccines by age and sex."""

from __future__ import annotations

from datetime import date, time, timedelta
from typing import Any

import pytest

from bot.booking import slots
from bot.booking.slots import Funding, SlotSpec
from bot.core.chinatime import china_date
from bot.core.config import Settings
from bot.dev.demo import PARENT, demo_id_number
from bot.dev.fakes.wxmini import FakeMiniProgramAPI
from bot.web.appkeys import SESSIONS
from models import utcnow
from tests.helpers import Client, Gate
from tests.test_miniprogram_api import Page
from tests.world import NANTONG, clinic, registry_file

GIRL_BIRTH = date(2017, 2, 1)  # nine: old enough for 9-valent HPV (9–45), and claimable (born from 2017)


@pytest.fixture
def settings(make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]) -> Settings:
    """The test settings, with the mini program's API on its own fake."""
    return make_settings(wxmini_api_base=fake_mini[1])  # type: ignore[no-any-return]


async def _publish(client: Client, clinic_id: int, code: str, **extra: object) -> int:
    day = china_date(utcnow()) + timedelta(days=3)
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec(code, day, time(14), time(16), 10, **extra)  # type: ignore[arg-type]
        return (await slots.publish(session, clinic_id, spec)).id


async def test_options_offer_hpv9_to_the_girl_with_its_price_and_refuse_what_she_may_not_have(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client = app_client
    birth = GIRL_BIRTH
    await registry_file(
        client,
        ref="MP-GIRL",
        name="林小雅",
        id_number=demo_id_number("320602", birth, 164),
        birth=birth,
        sex="F",
        guardians=[PARENT.id_number],
        doses=[("HepB", 1, birth), ("HepB", 2, birth + timedelta(days=31)), ("HepB", 3, birth + timedelta(days=184))],
    )
    parent = Page(client, fake_mini[0], "o-mp-girl-parent")
    await parent.login()
    await parent.verify(PARENT.name, PARENT.id_number)
    status, pending = await parent.call("GET", "/pending")
    assert status == 200, pending
    [item] = pending["items"]
    status, claimed = await parent.call("POST", "/claims", {"file": item["file"], "agree": True})
    assert status == 200, claimed
    certificate = int(claimed["certificate"])
    nantong = await clinic(client, *NANTONG)
    hpv = await _publish(client, nantong, "HPV9", funding=Funding.SELF_PAID, price_fen=131800)
    ev71 = await _publish(client, nantong, "EV71", funding=Funding.SELF_PAID, price_fen=22800)  # under 6 only

    status, options = await parent.call("GET", f"/certificates/{certificate}/booking")
    assert status == 200, options
    [vaccine] = options["vaccines"]
    assert (vaccine["code"], vaccine["status"], vaccine["self_paid"], vaccine["price_fen"], vaccine["dose"]) == (
        "HPV9",
        "self_paid",
        True,
        131800,
        1,
    )
    assert vaccine["until"] == date(birth.year + 46, birth.month, birth.day).isoformat()
    status, refused = await parent.call(
        "POST", f"/certificates/{certificate}/bookings", {"slot": ev71, "key": "k" * 16}
    )
    assert (status, refused["error"]["code"]) == (409, "booking_not_offered")
    status, booked = await parent.call("POST", f"/certificates/{certificate}/bookings", {"slot": hpv, "key": "h" * 16})
    assert status == 200, booked
