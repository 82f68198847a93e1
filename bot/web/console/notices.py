"""The console's 通知 page: compose a notice, preview its audience (counts only), send it, read its delivery report.

Registrars and admins send (``Permission.NOTICES``), as their own clinic. The windows come from the clinic's
coming slots (ticked) or typed (one per line); a closure cancels or moves the bookings there. The preview
carries a fresh key in the form, so a confirmed notice sent twice (a double click, a resubmitted page) is sent
once. Everything goes through :mod:`bot.notices`, audited with the member as actor.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.booking import slots
from bot.chat.conversation import Services
from bot.core.chinatime import CHINA
from bot.notices.compose import Composer, Draft, NoticeRefused, Window, check, preview, send
from bot.notices.report import DeliveryState, notices_of, report
from bot.staff.roles import Permission
from bot.web.console.base import PREFIX, Clock, Console, new_form_token, page, redirect, refusal, staff_page
from models import NoticeAction, NoticeAudience, NoticeKind

CHOOSER_DAYS = 30  # the chooser offers the clinic's slots starting within this many days
KEY_LENGTH = 64
FORM_FIELDS = ("kind", "audience", "action", "windows", "move_to", "text")


def _draft(console: Console) -> Draft:
    """The notice as the form has it (raises :class:`NoticeRefused` for what is not a notice)."""
    try:
        kind = NoticeKind(console.field("kind"))
        audience = NoticeAudience(console.field("audience") or NoticeAudience.BOOKED.value)
        action = NoticeAction(console.field("action") or NoticeAction.NONE.value)
        chosen = [value.strip() for value in console.form.getall("window", []) if isinstance(value, str)]
        typed = [line.strip() for line in console.field("windows").splitlines()]
        windows = tuple(dict.fromkeys(Window.parse(item) for item in [*chosen, *typed] if item))
        move_to = Window.parse(console.field("move_to")) if console.field("move_to") else None
    except ValueError:
        raise NoticeRefused("notice_refused_form") from None
    if audience == NoticeAudience.REGISTERED:
        windows = ()
    target = move_to if action == NoticeAction.MOVE else None
    draft = Draft(kind, console.field("text"), audience, windows, action, target)
    check(draft)
    return draft


def _window_text(window: Window) -> str:
    return window.day.isoformat() + (f" {window.start:%H:%M}" if window.start else "")


class NoticePages:
    """The notice pages' handlers (mixed into the console's routes object)."""

    services: Services
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock

    async def _compose_page(self, console: Console, *, error: str = "", status: int = 200) -> web.Response:
        now = self.clock()
        async with self.sessions() as session:
            coming = await slots.coming(session, console.member.clinic_id, now, CHOOSER_DAYS)
            sent = await notices_of(session, console.member.clinic_id)
        chooser: dict[str, dict[str, Any]] = {}
        for slot in coming:
            if slot.closed_at is not None:
                continue
            local = slot.starts_at.astimezone(CHINA)
            day = chooser.setdefault(f"{local:%Y-%m-%d}", {"day": f"{local:%Y-%m-%d}", "windows": {}, "booked": 0})
            day["booked"] += slot.booked
            window = day["windows"].setdefault(f"{local:%Y-%m-%d %H:%M}", {"start": f"{local:%H:%M}", "booked": 0})
            window["booked"] += slot.booked
        values = {
            "chooser": list(chooser.values()),
            "notices": [
                {
                    "id": notice.id,
                    "when": notice.created_at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M"),
                    "kind": self.services.catalogue(f"notice_kind_{notice.kind.value}"),
                    "text": notice.text,
                }
                for notice in sent
            ],
            "kinds": [(kind.value, self.services.catalogue(f"notice_kind_{kind.value}")) for kind in NoticeKind],
            "form": {name: console.field(name) for name in FORM_FIELDS},
            "error": error,
        }
        member, token = console.member, console.token
        return page(console.request, self.services, "notices.html", values, status=status, member=member, token=token)

    @staff_page(Permission.NOTICES)
    async def notices_page(self, console: Console) -> web.StreamResponse:
        """The compose form (with the clinic's coming days and windows) and the notices sent."""
        return await self._compose_page(console)

    @staff_page(Permission.NOTICES)
    async def notice_preview(self, console: Console) -> web.StreamResponse:
        """What sending would do (bookings, families, accounts: counts only), with the button that sends it."""
        catalogue = self.services.catalogue
        try:
            draft = _draft(console)
        except NoticeRefused as refused:
            return await self._compose_page(console, error=catalogue(refused.reason), status=400)
        async with self.sessions() as session:
            counted = await preview(session, self.services.vault, console.member.clinic_id, draft)
        values = {
            "draft": draft,
            "kind": catalogue(f"notice_kind_{draft.kind.value}"),
            "windows": "\n".join(_window_text(window) for window in draft.windows),
            "move_to": _window_text(draft.move_to) if draft.move_to else "",
            "counted": counted,
            "key": new_form_token(),
        }
        return page(
            console.request,
            self.services,
            "notice_preview.html",
            values,
            member=console.member,
            token=console.token,
        )

    @staff_page(Permission.NOTICES)
    async def notice_send(self, console: Console) -> web.StreamResponse:
        """Send the previewed notice once (its key), then show its delivery report."""
        catalogue = self.services.catalogue
        key = f"console:{console.member.clinic_id}:{console.field('key')}"  # a key is the clinic's own
        if len(console.field("key")) < 16 or len(key) > KEY_LENGTH:
            return await self._compose_page(console, error=catalogue("notice_refused_form"), status=400)
        try:
            draft = _draft(console)
        except NoticeRefused as refused:
            return await self._compose_page(console, error=catalogue(refused.reason), status=400)
        member = console.member
        composer = Composer(member.clinic_id, "staff", member.audit_actor(), staff_id=member.id)
        services = self.services
        async with self.sessions() as session, session.begin():
            sent = await send(session, services.vault, catalogue, services.settings, composer, draft, key, self.clock())
            notice_id = sent.notice.id
        return redirect(f"{PREFIX}/notices/{notice_id}?sent=1")

    @staff_page(Permission.NOTICES)
    async def notice_report(self, console: Console) -> web.StreamResponse:
        """One notice's delivery report: sent, waiting, failed with the reason (recipients masked)."""
        catalogue = self.services.catalogue
        try:
            notice_id = int(console.request.match_info["notice_id"])
        except ValueError:
            notice_id = 0
        async with self.sessions() as session:
            found = await report(session, console.member.clinic_id, notice_id)
        if found is None:
            text = catalogue("console_notices_not_found")
            return refusal(console.request, self.services, text, status=404, member=console.member, token=console.token)
        notice = found.notice
        accounts = len(found.lines)
        summary = catalogue(
            "console_notices_sent",
            slots=notice.slots_closed,
            cancelled=notice.bookings_cancelled,
            moved=notice.bookings_moved,
            failed=notice.move_failed,
            accounts=accounts,
        )
        lines = [
            {
                "platform": catalogue(f"platform_name_{line.platform}")
                if f"platform_name_{line.platform}" in catalogue
                else line.platform,
                "recipient": line.recipient,
                "state": line.state.value,
                "status": catalogue(f"console_notices_status_{line.state.value}"),
                "reason": catalogue(f"console_notices_problem_{line.problem}") if line.problem else line.reason,
            }
            for line in found.lines
        ]
        values = {
            "notice": notice,
            "kind": catalogue(f"notice_kind_{notice.kind.value}"),
            "when": notice.created_at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M"),
            "windows": "、".join(" ".join(part for part in item if part) for item in notice.windows),
            "summary": summary,
            "just_sent": console.request.query.get("sent") == "1",
            "counts": {state.value: found.count(state) for state in DeliveryState},
            "lines": lines,
        }
        return page(
            console.request, self.services, "notice_report.html", values, member=console.member, token=console.token
        )
