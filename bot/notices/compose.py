"""Composing and sending a clinic's notice, in one transaction: the bookings, the closed slots, the messages.

A notice names its windows (whole days, or the windows starting at a time) and its audience: the families
booked there, or everyone registered at the clinic (whose file the clinic keeps). A closure closes the windows
and cancels their bookings or moves them to another day or window (cancelled, and said so, where the target
has no room); a rescheduling moves them. Then each family is told once: the certificate's holder and every
authorised family member as of now (a revoked grant hears nothing), on every platform they follow, as a
template message (in the WeChat mini program a subscription message, only with a consent). One delivery row
per account links the outbox row, for the report. Everything, the notice row included, commits together, and
the notice is keyed by the composing form's key: sending twice sends once, and a crash leaves nothing half-told.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.booking import bookings, slots
from bot.core.audit import record_access
from bot.core.catalogue import Catalogue
from bot.core.chinatime import CHINA
from bot.core.config import Settings
from bot.core.pii import Vault
from bot.core.update import Platform, TemplateMessage, TemplateValue
from bot.notices.audience import Family, families
from bot.outbox import queue as outbox
from bot.platforms.wxmini.consents import queue_subscription
from models import (
    Appointment,
    AppointmentStatus,
    AuditEntry,
    Certificate,
    Clinic,
    FileProfile,
    Notice,
    NoticeAction,
    NoticeAudience,
    NoticeBooking,
    NoticeBookingOutcome,
    NoticeDelivery,
    NoticeKind,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    PlatformAccount,
    Slot,
    Vaccinee,
    utcnow,
)
from models.registry import PROFILE_FIELD

TEXT_LIMIT = 100  # the notice's own words (the template's remark); longer is refused in the form
KEYWORD_LIMIT = 20  # template keywords (WeChat's ``thing`` fields take at most 20 characters)
MAX_WINDOWS = 31


class NoticeRefused(ValueError):
    """A notice that cannot be sent as composed; ``reason`` is a catalogue key for staff."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Window:
    """A whole day (``start`` None) or the window starting at ``start`` on that day, China time."""

    day: date
    start: time | None = None

    def bounds(self) -> tuple[datetime, datetime]:
        """The instants [first, last) whose slots start in this window."""
        first = datetime.combine(self.day, self.start or time(0), tzinfo=CHINA)
        return first, first + (timedelta(seconds=1) if self.start is not None else timedelta(days=1))

    def to_json(self) -> list[str | None]:
        """As the notice row keeps it."""
        return [self.day.isoformat(), self.start.strftime("%H:%M") if self.start else None]

    @classmethod
    def parse(cls, value: str) -> Window:
        """``2026-12-08`` or ``2026-12-08 09:00`` (a form's or an API's choice)."""
        day, _, start = value.strip().partition(" ")
        return cls(date.fromisoformat(day), time.fromisoformat(start) if start.strip() else None)


@dataclasses.dataclass(frozen=True)
class Draft:
    """A notice as staff composed it (checked by :func:`check`)."""

    kind: NoticeKind
    text: str
    audience: NoticeAudience
    windows: tuple[Window, ...] = ()
    action: NoticeAction = NoticeAction.NONE
    move_to: Window | None = None


def check(draft: Draft) -> None:
    """Refuse a notice staff could not mean: empty or over-long text, no windows, a closure that leaves bookings."""
    if not draft.text.strip():
        raise NoticeRefused("notice_refused_empty")
    if len(draft.text) > TEXT_LIMIT:
        raise NoticeRefused("notice_refused_long")
    if draft.audience == NoticeAudience.BOOKED and not draft.windows:
        raise NoticeRefused("notice_refused_no_windows")
    if len(draft.windows) > MAX_WINDOWS:
        raise NoticeRefused("notice_refused_no_windows")
    changes = draft.kind in (NoticeKind.CLOSURE, NoticeKind.RESCHEDULE)
    if changes and (draft.audience != NoticeAudience.BOOKED or draft.action == NoticeAction.NONE):
        raise NoticeRefused("notice_refused_closure_action")
    if draft.kind == NoticeKind.RESCHEDULE and draft.action != NoticeAction.MOVE:
        raise NoticeRefused("notice_refused_closure_action")
    if not changes and draft.action != NoticeAction.NONE:
        raise NoticeRefused("notice_refused_action_kind")
    if draft.action == NoticeAction.MOVE:
        if draft.move_to is None:
            raise NoticeRefused("notice_refused_move_target")
        first, last = draft.move_to.bounds()
        for window in draft.windows:
            start, end = window.bounds()
            if first < end and start < last:
                raise NoticeRefused("notice_refused_move_target")


async def affected(
    session: AsyncSession, clinic_id: int, windows: Sequence[Window]
) -> Sequence[tuple[Appointment, Slot]]:
    """The active bookings in these windows of the clinic's slots, by time."""
    if not windows:
        return []
    found: dict[int, tuple[Appointment, Slot]] = {}
    for window in windows:
        first, last = window.bounds()
        rows = await session.execute(
            select(Appointment, Slot)
            .join(Slot, Slot.id == Appointment.slot_id)
            .where(
                Slot.clinic_id == clinic_id,
                Slot.starts_at >= first,
                Slot.starts_at < last,
                Appointment.status == AppointmentStatus.BOOKED,
            )
            .order_by(Slot.starts_at, Appointment.id)
        )
        for appointment, slot in rows.all():
            found[appointment.id] = (appointment, slot)
    return list(found.values())


async def registered(session: AsyncSession, vault: Vault, clinic_id: int) -> list[Certificate]:
    """Every claimed certificate whose file this clinic keeps (the clinic is sealed in the file's profile).

    No query can select files by clinic, so every claimed file's profile is opened (only the profile is read).
    """
    query = select(Certificate, Vaccinee.profile_enc).join(Vaccinee, Vaccinee.id == Certificate.vaccinee_id)
    rows = (await session.execute(query.order_by(Certificate.id))).all()
    return [
        certificate
        for certificate, profile in rows
        if FileProfile.from_json(vault.open(PROFILE_FIELD, profile)).clinic_id == clinic_id
    ]


@dataclasses.dataclass(frozen=True)
class Preview:
    """What sending would do: bookings affected and families and accounts told (counts only)."""

    bookings: int
    families: int
    accounts: int


async def _certificates(session: AsyncSession, vaccinee_ids: Sequence[int]) -> dict[int, Certificate]:
    if not vaccinee_ids:
        return {}
    rows = await session.scalars(select(Certificate).where(Certificate.vaccinee_id.in_(sorted(set(vaccinee_ids)))))
    return {certificate.vaccinee_id: certificate for certificate in rows.all()}


async def preview(session: AsyncSession, vault: Vault, clinic_id: int, draft: Draft) -> Preview:
    """How many bookings, families and accounts a notice would reach (nobody's name)."""
    if draft.audience == NoticeAudience.REGISTERED:
        certificates = await registered(session, vault, clinic_id)
        booked = 0
    else:
        rows = await affected(session, clinic_id, draft.windows)
        booked = len(rows)
        certificates = list((await _certificates(session, [row.vaccinee_id for row, _ in rows])).values())
    reached = {account.id for family in await families(session, vault, certificates) for account in family.accounts}
    return Preview(bookings=booked, families=len(certificates), accounts=len(reached))


@dataclasses.dataclass(frozen=True)
class Composer:
    """Who composes: the clinic, the actor for the audit log, and the staff member (None for a clinic system)."""

    clinic_id: int
    actor_kind: str  # staff | clinic_api
    actor_ref: str
    staff_id: int | None = None


@dataclasses.dataclass(frozen=True)
class Sent:
    """A notice sent (``repeated``: this key had sent it already, nothing new happened)."""

    notice: Notice
    repeated: bool = False


async def _move_target(
    session: AsyncSession, clinic_id: int, vaccine_code: str, target: Window, now: datetime
) -> Slot | None:
    """The open first-come slot of this vaccine in the target window with most room left (never a lottery's)."""
    first, last = target.bounds()
    query = select(Slot).where(
        Slot.clinic_id == clinic_id,
        Slot.vaccine_code == vaccine_code,
        Slot.mode != slots.Mode.LOTTERY.value,
        Slot.starts_at >= max(first, now),
        Slot.starts_at < last,
        Slot.closed_at.is_(None),
        Slot.opens_at.is_(None) | (Slot.opens_at <= now),
    )
    found = (await session.scalars(query.order_by((Slot.capacity - Slot.booked).desc(), Slot.starts_at))).first()
    return found


@dataclasses.dataclass
class _Outcome:
    """What the notice did to one family's booking."""

    vaccinee_id: int
    kind: str  # a NoticeBookingOutcome's value, or "none"
    slot: Slot | None = None  # the slot it was in (or was moved to)


async def _apply(
    session: AsyncSession, notice: Notice, draft: Draft, rows: Sequence[tuple[Appointment, Slot]], now: datetime
) -> list[_Outcome]:
    """Cancel or move each booking as the notice says; each one done is recorded for the family's list."""
    outcomes: list[_Outcome] = []
    for appointment, slot in rows:
        if draft.action == NoticeAction.NONE:
            outcomes.append(_Outcome(appointment.vaccinee_id, "none", slot))
            continue
        outcome = NoticeBookingOutcome.CANCELLED
        moved_to: Appointment | None = None
        if draft.action == NoticeAction.MOVE and draft.move_to is not None:
            outcome = NoticeBookingOutcome.MOVE_FAILED
            target = await _move_target(session, notice.clinic_id, appointment.vaccine_code, draft.move_to, now)
            if target is not None:
                key = f"notice:{notice.id}:move:{appointment.id}"
                moved = await bookings.reschedule(
                    session, appointment.id, target.id, appointment.booked_by_identity_id, key, now
                )
                if moved.outcome == bookings.Outcome.BOOKED:
                    outcome, moved_to, slot = NoticeBookingOutcome.MOVED, moved.appointment, moved.slot or slot
        if moved_to is None and not await bookings.cancel(session, appointment.id, now):
            continue  # cancelled meanwhile (by the family, or another notice): nothing to tell of it
        counter = {
            NoticeBookingOutcome.CANCELLED: "bookings_cancelled",
            NoticeBookingOutcome.MOVED: "bookings_moved",
            NoticeBookingOutcome.MOVE_FAILED: "move_failed",
        }[outcome]
        setattr(notice, counter, getattr(notice, counter) + 1)
        session.add(
            NoticeBooking(
                notice_id=notice.id,
                appointment_id=appointment.id,
                vaccinee_id=appointment.vaccinee_id,
                outcome=outcome,
                moved_to_appointment_id=moved_to.id if moved_to is not None else None,
                created_at=now,
            )
        )
        outcomes.append(_Outcome(appointment.vaccinee_id, outcome.value, slot))
    return outcomes


async def cancelled_by_clinic(
    session: AsyncSession, vaccinee_ids: Sequence[int], since: datetime
) -> Sequence[tuple[Appointment, Slot, Notice]]:
    """These people's bookings a clinic's notice cancelled since ``since`` (moves that kept them booked aside)."""
    if not vaccinee_ids:
        return []
    rows = await session.execute(
        select(Appointment, Slot, Notice)
        .join(NoticeBooking, NoticeBooking.appointment_id == Appointment.id)
        .join(Notice, Notice.id == NoticeBooking.notice_id)
        .join(Slot, Slot.id == Appointment.slot_id)
        .where(
            NoticeBooking.vaccinee_id.in_(sorted(set(vaccinee_ids))),
            NoticeBooking.outcome != NoticeBookingOutcome.MOVED,
            NoticeBooking.created_at >= since,
        )
        .order_by(Slot.starts_at, Appointment.id)
    )
    return [(appointment, slot, notice) for appointment, slot, notice in rows.all()]


def _short(text: str, limit: int = KEYWORD_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _what(catalogue: Catalogue, notice: Notice, outcomes: Sequence[_Outcome]) -> str:
    """The second keyword: what happened to this family's booking (or the notice's kind)."""
    parts: list[str] = []
    for outcome in outcomes:
        if outcome.kind == "moved" and outcome.slot is not None:
            start = outcome.slot.starts_at.astimezone(CHINA)
            parts.append(catalogue("notice_outcome_moved", month=start.month, day=start.day, start=f"{start:%H:%M}"))
        elif outcome.kind in ("cancelled", "move_failed"):
            parts.append(catalogue(f"notice_outcome_{outcome.kind}"))
    return "；".join(dict.fromkeys(parts)) or catalogue(f"notice_kind_{notice.kind.value}")


def _windows_text(catalogue: Catalogue, notice: Notice, now: datetime) -> str:
    days = [Window.parse(" ".join(part for part in item if part)) for item in notice.windows]
    if not days:
        local = now.astimezone(CHINA)
        return catalogue("notice_day", month=local.month, day=local.day)
    texts = [
        catalogue("notice_day", month=w.day.month, day=w.day.day) + (f" {w.start:%H:%M}" if w.start else "")
        for w in days
    ]
    return "、".join(dict.fromkeys(texts))


def notice_template_id(settings: Settings, platform: str) -> str:
    """The notice template of one platform (the mini program's is its general subscription notice)."""
    if platform == Platform.WXMINI:
        return settings.wxmini_notice_template
    return settings.alipay_notice_template if platform == Platform.ALIPAY else settings.wechat_notice_template


async def send(
    session: AsyncSession,
    vault: Vault,
    catalogue: Catalogue,
    settings: Settings,
    composer: Composer,
    draft: Draft,
    key: str,
    now: datetime,
) -> Sent:
    """Send a notice once per ``key``: apply it to the bookings, close the windows, tell each family once.

    Runs in the caller's transaction (nothing here commits); raises :class:`NoticeRefused` for a draft that
    cannot be sent.
    """
    check(draft)
    earlier = (await session.scalars(select(Notice).where(Notice.request_key == key))).first()
    if earlier is not None:
        return Sent(earlier, repeated=True)
    notice = Notice(
        clinic_id=composer.clinic_id,
        kind=draft.kind,
        text=draft.text.strip(),
        audience=draft.audience,
        windows=[window.to_json() for window in draft.windows],
        action=draft.action,
        move_to_day=draft.move_to.day if draft.move_to else None,
        move_to_start=draft.move_to.start if draft.move_to else None,
        staff_id=composer.staff_id,
        composed_by=composer.actor_ref,
        request_key=key,
        slots_closed=0,
        bookings_cancelled=0,
        bookings_moved=0,
        move_failed=0,
        created_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(notice)
            await session.flush()
    except IntegrityError:  # the same form sent twice at once: the other one sends it
        earlier = (await session.scalars(select(Notice).where(Notice.request_key == key))).first()
        if earlier is None:
            raise
        return Sent(earlier, repeated=True)
    if draft.kind in (NoticeKind.CLOSURE, NoticeKind.RESCHEDULE):
        # Closed first: no booking can come into these windows while their families are being told.
        for window in draft.windows:
            notice.slots_closed += await slots.close(session, composer.clinic_id, window.day, now, start=window.start)
    by_vaccinee: dict[int, list[_Outcome]] = {}
    if draft.audience == NoticeAudience.REGISTERED:
        certificates = await registered(session, vault, composer.clinic_id)
    else:
        rows = await affected(session, composer.clinic_id, draft.windows)
        for outcome in await _apply(session, notice, draft, rows, now):
            by_vaccinee.setdefault(outcome.vaccinee_id, []).append(outcome)
        certificates = list((await _certificates(session, list(by_vaccinee))).values())
    await _tell(session, vault, catalogue, settings, composer, notice, certificates, by_vaccinee, now)
    record_access(
        session,
        actor_kind=composer.actor_kind,
        actor_ref=composer.actor_ref,
        action="notice_sent",
        detail={
            "notice": notice.id,
            "kind": notice.kind.value,
            "audience": notice.audience.value,
            "windows": notice.windows,
            "cancelled": notice.bookings_cancelled,
            "moved": notice.bookings_moved,
            "move_failed": notice.move_failed,
        },
    )
    return Sent(notice)


async def _tell(
    session: AsyncSession,
    vault: Vault,
    catalogue: Catalogue,
    settings: Settings,
    composer: Composer,
    notice: Notice,
    certificates: Sequence[Certificate],
    outcomes: dict[int, list[_Outcome]],
    now: datetime,
) -> None:
    """One message per account, whichever of its families' bookings the notice touched (each family hears once)."""
    clinic = await session.get(Clinic, notice.clinic_id)
    clinic_name = clinic.name if clinic is not None else ""
    by_account: dict[int, tuple[PlatformAccount, list[Family]]] = {}
    found = await families(session, vault, certificates, names=True)
    for family in found:
        for account in family.accounts:
            by_account.setdefault(account.id, (account, []))[1].append(family)
    when = _windows_text(catalogue, notice, now)
    # Written in bulk (one INSERT … RETURNING of outbox rows, one INSERT of deliveries, one of audit rows): a
    # notice to everyone registered at a clinic is thousands of rows, and on SQLite the writer waits meanwhile.
    templates: list[tuple[PlatformAccount, dict[str, Any]]] = []
    deliveries: list[dict[str, Any]] = []
    for account, theirs in by_account.values():
        who = "、".join(dict.fromkeys(family.masked_name for family in theirs))
        touched = [each for family in theirs for each in outcomes.get(family.certificate.vaccinee_id, [])]
        what = _what(catalogue, notice, touched)
        key = f"notice:{notice.id}:{account.id}"
        if account.platform == Platform.WXMINI:
            row, problem = await _tell_in_mini_program(
                session, settings, account, f"{clinic_name[:6]}：{what}", key, now
            )
            if row is not None:
                await session.flush()
            deliveries.append(_delivery(notice, account, row.id if row is not None else None, problem, now))
            continue
        message = TemplateMessage(
            template_id=notice_template_id(settings, account.platform),
            first=TemplateValue(catalogue("notice_first", clinic=clinic_name)),
            # keyword1 who, keyword2 what happened, keyword3 when (the notice template's fields, in its order)
            keywords=(TemplateValue(_short(who)), TemplateValue(_short(what)), TemplateValue(_short(when))),
            remark=TemplateValue(notice.text),
            url=settings.public_url.rstrip("/") + "/",
        )
        templates.append((account, _outbox_row(account, message, key)))
    row_ids = await outbox.insert_rows(session, [values for _, values in templates])
    for (account, _), row_id in zip(templates, row_ids, strict=True):
        deliveries.append(_delivery(notice, account, row_id, "", now))
    if deliveries:
        await session.execute(insert(NoticeDelivery), deliveries)
    audit = [
        {
            "at": utcnow(),
            "actor_kind": "system",
            "actor_ref": "notices",
            "action": "notice_told",
            "reason": "",
            "certificate_id": family.certificate.id,
            "vaccinee_id": family.certificate.vaccinee_id,
            "platform": None,
            "detail": {
                "notice": notice.id,
                "to": sorted(f"{account.platform}:identity:{account.identity_id}" for account in family.accounts),
            },
        }
        for family in found
    ]
    if audit:
        await session.execute(insert(AuditEntry), audit)


def _outbox_row(account: PlatformAccount, message: TemplateMessage, key: str) -> dict[str, Any]:
    """One template message's outbox row, as :func:`bot.outbox.queue.enqueue` would add it."""
    moment = utcnow()
    return {
        "platform": account.platform,
        "app_id": account.app_id,
        "recipient": account.user_id,
        "kind": OutboxKind.TEMPLATE,
        "payload": message.payload(),
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "available_at": moment,
        "created_at": moment,
        "idempotency_key": key,
        "sent_at": None,
    }


def _delivery(
    notice: Notice, account: PlatformAccount, row_id: int | None, problem: str, now: datetime
) -> dict[str, Any]:
    return {
        "notice_id": notice.id,
        "account_id": account.id,
        "platform": account.platform,
        "outbox_id": row_id,
        "problem": problem,
        "created_at": now,
    }


async def _tell_in_mini_program(
    session: AsyncSession, settings: Settings, account: PlatformAccount, what: str, key: str, now: datetime
) -> tuple[OutboxMessage | None, str]:
    """A subscription message (the general notice: thing1 what, time2 when), spending a consent; else why not."""
    template = notice_template_id(settings, account.platform)
    if not template:
        return None, "no_template"
    data = {"thing1": _short(what), "time2": f"{now.astimezone(CHINA):%Y-%m-%d %H:%M}"}
    queued = await queue_subscription(
        session, account, template_id=template, data=data, page=settings.wxmini_notice_page, key=key, now=now
    )
    return (queued, "") if queued is not None else (None, "no_consent")


async def count_booked(session: AsyncSession, clinic_id: int, windows: Sequence[Window]) -> int:
    """How many active bookings these windows hold (a closure without a notice must not leave them)."""
    total = 0
    for window in windows:
        first, last = window.bounds()
        query = (
            select(func.count())
            .select_from(Appointment)
            .join(Slot, Slot.id == Appointment.slot_id)
            .where(
                Slot.clinic_id == clinic_id,
                Slot.starts_at >= first,
                Slot.starts_at < last,
                Appointment.status == AppointmentStatus.BOOKED,
            )
        )
        total += int((await session.scalar(query)) or 0)
    return total
