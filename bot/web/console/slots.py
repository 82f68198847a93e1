"""The console's 预约号源 page: a clinic's upcoming slots, publishing one, closing a day or a window.

A day or a window with bookings is not closed here: that is a closure notice (:mod:`bot.web.console.notices`),
which cancels or moves the bookings and tells the families.

Registrars and admins publish and close (``Permission.SLOTS``); everything goes through :mod:`bot.booking`
as the signed-in member's own clinic, and each change is audited with the member as actor.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.booking import lottery, slots
from bot.chat.conversation import Services
from bot.core.audit import record_access
from bot.core.chinatime import CHINA, china_date
from bot.immunization.vaccines import VACCINES, vaccine_name
from bot.notices.compose import Window, count_booked
from bot.staff.roles import Permission
from bot.web.console.base import Clock, Console, page, staff_page

SHOWN_DAYS = 60  # the page lists slots starting within this many days


class _Booked(Exception):
    """A closure found bookings: undone, and staff are sent to the notice page."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


def _lottery_line(services: Services, shown: dict[str, Any] | None) -> str:
    """A lottery slot's state for the table: its id, status and counts (empty for a first-come slot)."""
    if shown is None:
        return ""
    closes = datetime.fromisoformat(str(shown["registration_closes_at"])).astimezone(CHINA)
    return services.catalogue(
        "console_lottery_line",
        lottery=shown["lottery_id"],
        state=services.catalogue(f"console_lottery_{shown['status']}", closes=f"{closes:%m-%d %H:%M}"),
        entries=shown["entries"],
        offered=shown["offered"],
        confirmed=shown["confirmed"],
        waiting=shown["waiting"],
    )


class SlotPages:
    """The slot page's handlers (mixed into the console's routes object)."""

    services: Services
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock

    async def _slots_page(
        self, console: Console, *, error: str = "", notice: str = "", status: int = 200
    ) -> web.Response:
        now = self.clock()
        async with self.sessions() as session:
            rows = await slots.coming(session, console.member.clinic_id, now, SHOWN_DAYS)
            drawn_by = await lottery.of_slots(session, [slot.id for slot in rows])
            lotteries = {slot_id: await lottery.view(session, item) for slot_id, item in drawn_by.items()}
        listed = [
            {
                "day": slot.starts_at.astimezone(CHINA).strftime("%Y-%m-%d"),
                "window": f"{slot.starts_at.astimezone(CHINA):%H:%M}–{slot.ends_at.astimezone(CHINA):%H:%M}",
                "vaccine": vaccine_name(slot.vaccine_code),
                "booked": slot.booked,
                "capacity": slot.capacity,
                "opens": slot.opens_at.astimezone(CHINA).strftime("%m-%d %H:%M") if slot.opens_at else "",
                "price": f"{slot.price_fen / 100:.2f}" if slot.price_fen else "",
                "closed": slot.closed_at is not None,
                "lottery": _lottery_line(self.services, lotteries.get(slot.id)),
            }
            for slot in rows
        ]
        values = {
            "slots": listed,
            "vaccines": [(vaccine.code, vaccine.name) for vaccine in VACCINES.values()],
            "today": china_date(now).isoformat(),
            "error": error,
            "notice": notice,
        }
        return page(
            console.request,
            self.services,
            "slots.html",
            values,
            status=status,
            member=console.member,
            token=console.token,
        )

    @staff_page(Permission.VIEW)
    async def slots_page(self, console: Console) -> web.StreamResponse:
        """The clinic's slots of the coming weeks, with the forms to publish and close."""
        return await self._slots_page(console)

    @staff_page(Permission.SLOTS)
    async def slot_add(self, console: Console) -> web.StreamResponse:
        """Publish one slot at the member's clinic."""
        catalogue = self.services.catalogue
        try:
            spec = slots.spec_from_fields(
                vaccine=console.field("vaccine"),
                day=console.field("day"),
                start=console.field("start"),
                end=console.field("end"),
                capacity=console.field("capacity"),
                opens=console.field("opens"),
                price_yuan=console.field("price"),
            )
        except ValueError:
            return await self._slots_page(console, error=catalogue("console_slots_invalid"), status=400)
        if spec.window()[0] <= self.clock():
            return await self._slots_page(console, error=catalogue("console_slots_past"), status=400)
        closes = console.field("lottery_closes")
        try:
            async with self.sessions() as session, session.begin():
                detail: dict[str, object] = {"vaccine": spec.vaccine_code, "capacity": spec.capacity}
                if closes:
                    opens_at, closes_at = lottery.registration_from_fields(
                        opens=console.field("lottery_opens"), closes=closes, now=self.clock()
                    )
                    slot, drawn = await lottery.publish_lottery(
                        session,
                        self.services.vault,
                        console.member.clinic_id,
                        spec,
                        opens_at=opens_at,
                        closes_at=closes_at,
                        confirm_hours=self.services.settings.lottery_confirm_hours,
                    )
                    detail["lottery"] = drawn.public_id
                else:
                    slot = await slots.publish(session, console.member.clinic_id, spec)
                record_access(
                    session,
                    actor_kind="staff",
                    actor_ref=console.member.audit_actor(),
                    action="slot_published",
                    detail={"slot": slot.id, **detail},
                )
        except lottery.LotteryRefused:  # the slot is rolled back with it
            return await self._slots_page(console, error=catalogue("console_lottery_invalid"), status=400)
        return await self._slots_page(console, notice=catalogue("console_slots_added"))

    @staff_page(Permission.SLOTS)
    async def slot_close(self, console: Console) -> web.StreamResponse:
        """Close a day (or one window of it) at the member's clinic to new bookings, if nobody is booked there.

        Bookings there need a closure notice (the 通知 page): it cancels or moves them and tells the families.
        """
        catalogue = self.services.catalogue
        try:
            day = date.fromisoformat(console.field("day"))
            start_text = console.field("start")
            start = time.fromisoformat(start_text) if start_text else None
        except ValueError:
            return await self._slots_page(console, error=catalogue("console_slots_invalid"), status=400)
        try:
            async with self.sessions() as session, session.begin():
                # Closed first, then counted: a booking that raced in is seen, and the closure undone with it.
                closed = await slots.close(session, console.member.clinic_id, day, self.clock(), start=start)
                booked = await count_booked(session, console.member.clinic_id, [Window(day, start)])
                if booked:
                    raise _Booked(booked)
                record_access(
                    session,
                    actor_kind="staff",
                    actor_ref=console.member.audit_actor(),
                    action="slots_closed",
                    detail={"day": day.isoformat(), "start": start_text, "closed": closed},
                )
        except _Booked as booked:
            error = catalogue("console_slots_close_booked", count=booked.count)
            return await self._slots_page(console, error=error, status=409)
        return await self._slots_page(console, notice=catalogue("console_slots_closed", count=closed))
