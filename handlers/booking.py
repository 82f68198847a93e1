"""Journey: 预约接种 and 我的预约 — booking a dose for oneself or a child one may see, and cancelling it.

certificate → vaccine (the forecaster's due doses first; only what the person may have now or soon; then
self-paid vaccines the person may have by age, sex and spacing, with 自费 and the price) → clinic (the file's
clinic first; only clinics with slots) → day → window → masked confirmation → 「预约成功」 with a booking
number. 改期 moves a booking: the same clinic's days first, 「换一家门诊」 for another clinic. The slot's day is
checked against age, sex and spacing again when a window is chosen and at the confirmation. The
confirmation carries a key made when it was shown, so a double tap or a platform retry books once. Every
choice is checked again when it is answered (a grant may have been revoked, a place taken). Long lists are
paged (「下一页」/「上一页」).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from bot.booking import bookings, lottery, slots
from bot.booking.bookings import Outcome
from bot.certificates.rules import Visible, actor, bound_identity, doses_of, open_visible, visible_certificates
from bot.chat.conversation import Context, Flow, Route, Router, State, StatesGroup, any_text, list_number, menu, text_in
from bot.chat.menu import LABELS, MenuKey
from bot.core.audit import record_access
from bot.core.chinatime import CHINA, china_date
from bot.core.update import Text
from bot.immunization.eligibility import Refusal, may_have_on, next_dose
from bot.immunization.forecast import GivenDose
from bot.immunization.vaccines import vaccine_name
from bot.notices.compose import cancelled_by_clinic
from handlers import lottery as lottery_chat
from handlers.common import is_choice
from handlers.picking import Picker
from models import Appointment, Identity, Slot

BOOK_WORDS = ("预约接种", "我要预约", "预约")
MINE_WORDS = ("我的预约", "查看预约", "取消预约")
PAGE_SIZE = 6
STEP_TIMEOUT = timedelta(minutes=15)
CANCELLED_SHOWN = timedelta(days=7)  # 我的预约 says which bookings a clinic's notice cancelled this long after
NEXT_PAGE = text_in("下一页")
PREVIOUS_PAGE = text_in("上一页")
CONFIRM = text_in("确认", "确认预约", "确定")
CONFIRM_CANCEL = text_in("确认取消", "确定取消")
RESCHEDULE = text_in("改期", "改约", "更改时间", "改时间")
OTHER_CLINIC = text_in("换一家门诊", "换门诊", "换个门诊", "其他门诊")


class BookingSteps(StatesGroup):
    """The booking journey's steps."""

    certificate = State()
    vaccine = State()
    clinic = State()
    day = State()
    window = State()
    confirm = State()
    lottery = State()  # a lottery slot: 「报名摇号」 (handlers/lottery.py)


class MineSteps(StatesGroup):
    """Listing one's bookings and cancelling one."""

    choosing = State()
    cancelling = State()


# --- shared helpers --------------------------------------------------------------------------


def _when(ctx: Context, moment: datetime) -> str:
    local = moment.astimezone(CHINA)
    return ctx.text("booking_when", month=local.month, day=local.day, hour=local.hour, minute=f"{local.minute:02d}")


def _window(ctx: Context, slot: Slot) -> str:
    start, end = slot.starts_at.astimezone(CHINA), slot.ends_at.astimezone(CHINA)
    return f"{start:%H:%M}–{end:%H:%M}"


def _price(ctx: Context, slot: Slot) -> str:
    if slot.funding == slots.Funding.SELF_PAID and slot.price_fen:
        return ctx.text("booking_price_paid", yuan=_yuan(slot.price_fen))
    return ctx.text("booking_price_free")


def _show_page(
    ctx: Context, state: State, head: str, lines: Sequence[str], page: int, *, lead: str = "", **data: object
) -> None:
    """One page of a numbered list (numbers run on across pages) and how to turn the page.

    ``lead`` opens this message only (why the list is shown again), not the pages turned to later.
    """
    pages = max(1, (len(lines) + PAGE_SIZE - 1) // PAGE_SIZE)
    page = min(max(page, 0), pages - 1)
    start = page * PAGE_SIZE
    shown = [f"{number}. {line}" for number, line in enumerate(lines[start : start + PAGE_SIZE], start + 1)]
    footer = ctx.text("booking_page", page=page + 1, pages=pages) if pages > 1 else ""
    ctx.reply(
        Text(
            "\n".join(
                [*([lead] if lead else []), head, *shown, *([footer] if footer else []), ctx.text("booking_pick_hint")]
            )
        )
    )
    # The list's masked lines are kept so 「下一页」 shows the same list, not one that moved meanwhile.
    ctx.goto(state, page=page, list_head=head, list_lines=list(lines), **data)


def _chosen(ctx: Context, key: str) -> object | None:
    number = list_number(ctx.update.text)
    options: list[object] = list(ctx.data.get(key, []))
    if number is None or not 1 <= number <= len(options):
        return None
    return options[number - 1]


async def _still_visible(ctx: Context) -> tuple[Identity, Visible] | None:
    """The person and the chosen certificate, if they may still see it (else say so and end)."""
    identity = await bound_identity(ctx.session, await ctx.account())
    visible = None
    if identity is not None:
        visible = await open_visible(ctx.session, ctx.services.vault, identity, int(ctx.data["certificate_id"]))
    if identity is None or visible is None:
        ctx.finish()
        ctx.say("pick_gone")
        return None
    return identity, visible


def _dose(ctx: Context, vaccine_code: str, number: object) -> str:
    """「乙肝疫苗 第2剂」, or the vaccine alone when the dose number is not known."""
    if isinstance(number, int):
        return ctx.text("booking_vaccine_line", vaccine=vaccine_name(vaccine_code), number=number)
    return vaccine_name(vaccine_code)


async def _audit(
    ctx: Context, identity: Identity, visible: Visible | None, action: str, reason: str = "", **detail: object
) -> None:
    """Audit a booking action in the chat: who (the person and the account), for whose certificate, what."""
    record_access(
        ctx.session,
        actor_kind="identity",
        actor_ref=actor(identity, await ctx.account()),
        action=action,
        reason=reason,
        certificate_id=visible.certificate.id if visible is not None else None,
        vaccinee_id=visible.certificate.vaccinee_id if visible is not None else None,
        platform=ctx.update.platform.value,
        detail={**detail, "via": "chat"},
    )


def _free(slot: Slot, now: datetime) -> bool:
    return slots.is_bookable(slot, now)


def _is_lottery(slot: Slot) -> bool:
    return slot.mode == slots.Mode.LOTTERY


def _split_by_mode(found: Sequence[Slot]) -> tuple[list[Slot], list[Slot]]:
    """The first-come slots and the lottery slots among ``found`` (a lottery's places are never 「余N个」)."""
    return [slot for slot in found if not _is_lottery(slot)], [slot for slot in found if _is_lottery(slot)]


# --- booking ---------------------------------------------------------------------------------


async def _record(ctx: Context, visible: Visible) -> list[GivenDose]:
    """The person's recorded doses, as the forecaster and the eligibility rules read them."""
    given = await doses_of(ctx.session, ctx.services.vault, visible.certificate.vaccinee_id, china_date(ctx.now))
    return [GivenDose(dose.vaccine_code, dose.dose_number, dose.given_on) for dose in given]


def _offer_line(ctx: Context, offer: slots.Offer) -> str:
    """「乙肝疫苗 第2剂」, and for a self-paid vaccine 「（自费 1318元起）」."""
    line = ctx.text("booking_vaccine_line", vaccine=vaccine_name(offer.vaccine_code), number=offer.dose_number)
    if offer.self_paid and offer.price_fen:
        return line + ctx.text("booking_vaccine_paid", yuan=_yuan(offer.price_fen))
    return line


def _yuan(fen: int) -> str:
    return f"{fen / 100:.2f}".removesuffix(".00")


async def offer_vaccines(ctx: Context, identity: Identity, visible: Visible) -> None:
    """The vaccines this person may book: due and late doses first, then those within a month, then self-paid."""
    record = await _record(ctx, visible)
    found = await slots.offers(ctx.session, visible.file.birth_date, visible.file.sex, record, ctx.now)
    options: list[list[object]] = [
        [item.vaccine_code, item.dose_number, item.earliest.isoformat(), item.until.isoformat() if item.until else ""]
        for item in found
    ]
    if not options:
        ctx.finish()
        ctx.say("booking_no_vaccines", name=visible.file.masked_name)
        return
    lines = [_offer_line(ctx, item) for item in found]
    head = ctx.text("booking_vaccine_head", name=visible.file.masked_name)
    _show_page(ctx, BookingSteps.vaccine, head, lines, 0, certificate_id=visible.certificate.id, vaccines=options)


async def choose_vaccine(ctx: Context) -> None:
    """A vaccine chosen: already booked for it? else the clinics with slots for it, the file's clinic first."""
    option = _chosen(ctx, "vaccines")
    if not isinstance(option, list):
        await not_a_choice(ctx)
        return
    seen = await _still_visible(ctx)
    if seen is None:
        return
    _, visible = seen
    code, number = str(option[0]), int(option[1])
    held = await bookings.active_of(ctx.session, [visible.certificate.vaccinee_id])
    for appointment, slot in held:
        if appointment.vaccine_code == code:
            await _say_held(ctx, appointment, slot, visible)
            return
    until = str(option[3]) if len(option) > 3 else ""
    ctx.data.update(vaccine=code, dose=number, earliest=str(option[2]), until=until)
    await _offer_clinics(ctx, visible)


def _offer_of(ctx: Context) -> slots.Offer:
    """The vaccine being booked (or moved), as the flow's data keeps it."""
    until = str(ctx.data.get("until") or "")
    return slots.Offer(
        vaccine_code=str(ctx.data["vaccine"]),
        dose_number=int(ctx.data.get("dose") or 0),
        earliest=date.fromisoformat(str(ctx.data["earliest"])),
        status="",
        until=date.fromisoformat(until) if until else None,
    )


async def _offer_clinics(ctx: Context, visible: Visible) -> None:
    """The clinics with slots for the vaccine being booked, the file's clinic first, with the places left."""
    offer = _offer_of(ctx)
    code = offer.vaccine_code
    found = [slot for slot in await slots.upcoming(ctx.session, code, ctx.now) if _listed(ctx, offer, slot)]
    names = await slots.clinic_names(ctx.session, [slot.clinic_id for slot in found])
    clinic_ids = sorted(
        {slot.clinic_id for slot in found},
        key=lambda cid: (names.get(cid) != visible.file.clinic_name, names.get(cid, "")),
    )
    if not clinic_ids:
        ctx.finish()
        ctx.say("booking_no_slots", vaccine=vaccine_name(code))
        return
    lines = []
    for clinic_id in clinic_ids:
        here = [slot for slot in found if slot.clinic_id == clinic_id]
        first_come, drawn = _split_by_mode(here)
        free = sum(slot.capacity - slot.booked for slot in first_come if _free(slot, ctx.now))
        clinic = names.get(clinic_id, "")
        if drawn and not first_come:
            line = ctx.text("booking_clinic_line_lottery", clinic=clinic, places=sum(slot.capacity for slot in drawn))
        elif drawn:
            line = ctx.text("booking_clinic_line_mixed", clinic=clinic, free=free)
        else:
            line = ctx.text("booking_clinic_line", clinic=clinic, free=free)
        mine = clinic == visible.file.clinic_name
        lines.append(line + (ctx.text("booking_clinic_mine") if mine else ""))
    head = (
        ctx.text("booking_clinic_head", vaccine=vaccine_name(code), number=offer.dose_number)
        if offer.dose_number
        else ctx.text("booking_clinic_head_any", vaccine=vaccine_name(code))
    )
    _show_page(ctx, BookingSteps.clinic, head, lines, 0, clinics=clinic_ids)


async def _day_slots(ctx: Context, clinic_id: int) -> list[Slot]:
    offer = _offer_of(ctx)
    found = await slots.upcoming(ctx.session, offer.vaccine_code, ctx.now, clinic_id=clinic_id)
    return [slot for slot in found if _listed(ctx, offer, slot)]


def _listed(ctx: Context, offer: slots.Offer, slot: Slot) -> bool:
    """Whether ``slot`` belongs in the lists: offered for the dose, and for a 改期 never a lottery's places."""
    return slots.offered(offer, slot) and not (ctx.data.get("replaces") and _is_lottery(slot))


async def choose_clinic(ctx: Context) -> None:
    """A clinic chosen: its days with slots, with the places left (or when booking opens)."""
    clinic_id = _chosen(ctx, "clinics")
    if not isinstance(clinic_id, int):
        await not_a_choice(ctx)
        return
    await _offer_days(ctx, clinic_id)


async def _offer_days(ctx: Context, clinic_id: int, found: list[Slot] | None = None, lead: str = "") -> None:
    found = found if found is not None else await _day_slots(ctx, clinic_id)
    days = sorted({china_date(slot.starts_at) for slot in found})
    if not days and ctx.data.get("replaces"):
        # A move whose clinic has no other day for it: straight to the other clinics.
        seen = await _still_visible(ctx)
        if seen is not None:
            ctx.say("booking_move_no_days")
            await _offer_clinics(ctx, seen[1])
        return
    if not days:
        vaccine = vaccine_name(str(ctx.data["vaccine"]))
        ctx.finish()
        if lead:
            ctx.reply(Text(lead))
        ctx.say("booking_no_slots", vaccine=vaccine)
        return
    lines = []
    registrations = await lottery.of_slots(ctx.session, [slot.id for slot in found if _is_lottery(slot)])
    for day in days:
        first_come, drawn = _split_by_mode([slot for slot in found if china_date(slot.starts_at) == day])
        free = sum(slot.capacity - slot.booked for slot in first_come if _free(slot, ctx.now))
        label = ctx.text("records_date", year=day.year, month=day.month, day=day.day)
        opens = [slot.opens_at for slot in first_come if slot.opens_at is not None and slot.opens_at > ctx.now]
        closes = [registrations[slot.id].registration_closes_at for slot in drawn if slot.id in registrations]
        if drawn and not first_come:
            places = sum(slot.capacity for slot in drawn)
            if closes:
                line = ctx.text("booking_day_line_lottery", day=label, places=places, closes=_when(ctx, min(closes)))
            else:
                line = ctx.text("booking_day_line_lottery_bare", day=label, places=places)
        elif free == 0 and opens:
            line = ctx.text("booking_day_not_open", day=label, opens=_when(ctx, min(opens)))
        elif drawn:
            line = ctx.text("booking_day_line_mixed", day=label, free=free)
        else:
            line = ctx.text("booking_day_line", day=label, free=free)
        lines.append(line)
    names = await slots.clinic_names(ctx.session, [clinic_id])
    head = ctx.text("booking_day_head", clinic=names.get(clinic_id, ""))
    if ctx.data.get("replaces"):
        head += "\n" + ctx.text("booking_move_other_clinic")
    _show_page(
        ctx, BookingSteps.day, head, lines, 0, lead=lead, clinic_id=clinic_id, days=[day.isoformat() for day in days]
    )


async def choose_day(ctx: Context) -> None:
    """A day chosen: its windows, each with the places left and the price."""
    day = _chosen(ctx, "days")
    if not isinstance(day, str):
        await not_a_choice(ctx)
        return
    await _offer_windows(ctx, date.fromisoformat(day))


async def _offer_windows(
    ctx: Context, day: date, head_key: str = "booking_window_head", clinic_slots: list[Slot] | None = None
) -> None:
    if clinic_slots is None:
        clinic_slots = await _day_slots(ctx, int(ctx.data["clinic_id"]))
    found = [slot for slot in clinic_slots if china_date(slot.starts_at) == day]
    if not found:
        await _offer_days(ctx, int(ctx.data["clinic_id"]))
        return
    lines = []
    for slot in found:
        if _is_lottery(slot):
            lines.append(await lottery_chat.window_line(ctx, slot))
            continue
        if slot.opens_at is not None and slot.opens_at > ctx.now:
            state = ctx.text("booking_window_opens", opens=_when(ctx, slot.opens_at))
        else:
            state = ctx.text("booking_window_free", free=slot.capacity - slot.booked)
        lines.append(ctx.text("booking_window_line", window=_window(ctx, slot), state=state, price=_price(ctx, slot)))
    label = ctx.text("records_date", year=day.year, month=day.month, day=day.day)
    _show_page(
        ctx,
        BookingSteps.window,
        ctx.text(head_key, day=label),
        lines,
        0,
        day=day.isoformat(),
        windows=[slot.id for slot in found],
    )


async def _gone(ctx: Context) -> None:
    """The chosen place is gone: the day's windows if one still has places, else the clinic's other days.

    One query and one message: in a rush most of the people confirming get this answer at the same moment.
    """
    day = date.fromisoformat(str(ctx.data["day"]))
    clinic_slots = await _day_slots(ctx, int(ctx.data["clinic_id"]))
    if any(_free(slot, ctx.now) for slot in clinic_slots if china_date(slot.starts_at) == day):
        await _offer_windows(ctx, day, "booking_gone_head", clinic_slots)
        return
    await _offer_days(ctx, int(ctx.data["clinic_id"]), clinic_slots, lead=ctx.text("booking_day_full"))


async def choose_window(ctx: Context) -> None:
    """A window chosen: not open yet (say when), full (say what is free), or the masked confirmation."""
    slot_id = _chosen(ctx, "windows")
    if not isinstance(slot_id, int):
        await not_a_choice(ctx)
        return
    seen = await _still_visible(ctx)
    if seen is None:
        return
    _, visible = seen
    slot = await ctx.session.get(Slot, slot_id, populate_existing=True)
    if slot is None or slot.closed_at is not None or slot.starts_at <= ctx.now:
        await _gone(ctx)
        return
    if slot.mode == slots.Mode.LOTTERY and not ctx.data.get("replaces"):
        if not await lottery_chat.offer_entry(ctx, slot, visible, BookingSteps.lottery):
            await _gone(ctx)
        return
    if slot.opens_at is not None and slot.opens_at > ctx.now:
        ctx.say("booking_not_open", opens=_when(ctx, slot.opens_at))
        ctx.goto(BookingSteps.window)
        return
    if slot.booked >= slot.capacity:
        await _gone(ctx)
        return
    if await _refused_day(ctx, visible, slot):
        return
    names = await slots.clinic_names(ctx.session, [slot.clinic_id])
    ctx.say(
        "booking_confirm",
        name=visible.file.masked_name,
        id=visible.file.masked_id,
        vaccine=vaccine_name(slot.vaccine_code),
        dose=_dose(ctx, slot.vaccine_code, ctx.data.get("dose")),
        clinic=names.get(slot.clinic_id, ""),
        when=_when(ctx, slot.starts_at),
        window=_window(ctx, slot),
        price=_price(ctx, slot),
        moving=ctx.text("booking_confirm_moving") if ctx.data.get("replaces") else "",
    )
    ctx.goto(BookingSteps.confirm, slot_id=slot.id, key=secrets.token_hex(16))


async def _refused_day(ctx: Context, visible: Visible, slot: Slot) -> bool:
    """Age, sex and spacing checked again for the slot's day; if refused, say why and what may still be chosen."""
    day = china_date(slot.starts_at)
    record = await _record(ctx, visible)
    verdict = may_have_on(visible.file.birth_date, visible.file.sex, record, slot.vaccine_code, day)
    if verdict.allowed:
        return False
    values = {"name": visible.file.masked_name, "vaccine": vaccine_name(slot.vaccine_code), "day": _day_label(ctx, day)}
    if verdict.refusal == Refusal.TOO_YOUNG and verdict.earliest is not None:
        ctx.say("booking_refused_spacing", earliest=_day_label(ctx, verdict.earliest), **values)
        ctx.data["earliest"] = verdict.earliest.isoformat()
    elif verdict.refusal == Refusal.TOO_OLD:
        ctx.say("booking_refused_age", **values)
        ctx.data["until"] = day.isoformat()
    else:
        ctx.finish()
        ctx.say("booking_refused", **values)
        return True
    await _offer_days(ctx, slot.clinic_id)
    return True


def _day_label(ctx: Context, day: date) -> str:
    return ctx.text("records_date", year=day.year, month=day.month, day=day.day)


async def confirm(ctx: Context) -> None:
    """「确认」: book (once per confirmation shown), and say how it went."""
    seen = await _still_visible(ctx)
    if seen is None:
        return
    identity, visible = seen
    slot_id, key, replaces = int(ctx.data["slot_id"]), str(ctx.data["key"]), ctx.data.get("replaces")
    chosen = await ctx.session.get(Slot, slot_id)
    if chosen is not None and await _refused_day(ctx, visible, chosen):
        return
    if isinstance(replaces, int):
        result = await bookings.reschedule(ctx.session, replaces, slot_id, identity.id, key, ctx.now)
    else:
        result = await bookings.book(ctx.session, slot_id, visible.certificate.vaccinee_id, identity.id, key, ctx.now)
    if result.outcome == Outcome.BOOKED and result.appointment is not None and not result.repeated:
        action = "booking_rescheduled" if isinstance(replaces, int) else "booking_made"
        moved: dict[str, object] = {"replaces": replaces} if isinstance(replaces, int) else {}
        await _audit(ctx, identity, visible, action, "", slot=slot_id, booking=result.appointment.id, **moved)
    elif result.outcome != Outcome.BOOKED:
        await _audit(ctx, identity, visible, "booking_refused", result.outcome.value, slot=slot_id)
    if result.outcome == Outcome.GONE and isinstance(replaces, int) and result.slot is not None:
        ctx.finish()
        ctx.say("booking_cancel_gone")  # the booking being moved was cancelled meanwhile
        return
    if result.outcome == Outcome.BOOKED and result.appointment is not None and result.slot is not None:
        ctx.finish()
        names = await slots.clinic_names(ctx.session, [result.slot.clinic_id])
        ctx.say(
            "booking_moved" if isinstance(replaces, int) else "booking_done",
            number=bookings.booking_number(result.appointment),
            name=visible.file.masked_name,
            vaccine=vaccine_name(result.slot.vaccine_code),
            clinic=names.get(result.slot.clinic_id, ""),
            when=_when(ctx, result.slot.starts_at),
            window=_window(ctx, result.slot),
        )
        return
    if result.outcome == Outcome.HELD and result.appointment is not None and result.slot is not None:
        await _say_held(ctx, result.appointment, result.slot, visible)
        return
    if result.outcome == Outcome.NOT_OPEN and result.slot is not None and result.slot.opens_at is not None:
        ctx.say("booking_not_open", opens=_when(ctx, result.slot.opens_at))
        await _offer_windows(ctx, date.fromisoformat(str(ctx.data["day"])))
        return
    await _gone(ctx)


async def _say_held(ctx: Context, appointment: Appointment, slot: Slot, visible: Visible) -> None:
    ctx.finish()
    names = await slots.clinic_names(ctx.session, [slot.clinic_id])
    ctx.say(
        "booking_already",
        name=visible.file.masked_name,
        vaccine=vaccine_name(slot.vaccine_code),
        clinic=names.get(slot.clinic_id, ""),
        when=_when(ctx, slot.starts_at),
        window=_window(ctx, slot),
        number=bookings.booking_number(appointment),
    )


async def not_a_choice(ctx: Context) -> None:
    """Anything else in a list: say how to answer, and keep the list open."""
    ctx.say("booking_pick_invalid")


async def not_confirmed(ctx: Context) -> None:
    """Anything but 「确认」 at the confirmation: say how to confirm or leave."""
    ctx.say("booking_confirm_hint")


def _turn(step: State) -> Route:
    """「下一页」/「上一页」 on a list step: the same list one page on or back."""

    async def turn(ctx: Context) -> None:
        page = int(ctx.data.get("page", 0)) + (1 if NEXT_PAGE(ctx.update) else -1)
        lines = [str(line) for line in ctx.data.get("list_lines", [])]
        _show_page(ctx, step, str(ctx.data.get("list_head", "")), lines, page)

    return Route(NEXT_PAGE | PREVIOUS_PAGE, turn)


# --- my bookings -----------------------------------------------------------------------------


async def list_mine(ctx: Context) -> None:
    """The active bookings of everyone this person may see, soonest first; a number cancels one."""
    ctx.finish()
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is None:
        ctx.say("booking_need_verify")
        return
    visible = await visible_certificates(ctx.session, ctx.services.vault, identity)
    files = {item.certificate.vaccinee_id: item for item in visible}
    held = await bookings.active_of(ctx.session, list(files))
    await _say_cancelled_by_clinic(ctx, files)
    if not held:
        ctx.say("booking_mine_none")
        return
    names = await slots.clinic_names(ctx.session, [slot.clinic_id for _, slot in held])
    lines = [
        ctx.text(
            "booking_mine_line",
            name=files[appointment.vaccinee_id].file.masked_name,
            vaccine=vaccine_name(appointment.vaccine_code),
            clinic=names.get(slot.clinic_id, ""),
            when=_when(ctx, slot.starts_at),
            window=_window(ctx, slot),
            number=bookings.booking_number(appointment),
        )
        for appointment, slot in held
    ]
    for vaccinee_id in sorted({appointment.vaccinee_id for appointment, _ in held}):
        await _audit(ctx, identity, files[vaccinee_id], "bookings_view")
    choices = [[appointment.id, files[appointment.vaccinee_id].certificate.id] for appointment, _ in held]
    _show_page(ctx, MineSteps.choosing, ctx.text("booking_mine_head"), lines, 0, bookings=choices)


async def _say_cancelled_by_clinic(ctx: Context, files: dict[int, Visible]) -> None:
    """Bookings a clinic's notice cancelled lately (a closure), each said once more with the clinic's words."""
    cancelled = await cancelled_by_clinic(ctx.session, list(files), ctx.now - CANCELLED_SHOWN)
    names = await slots.clinic_names(ctx.session, [slot.clinic_id for _, slot, _ in cancelled])
    for appointment, slot, notice in cancelled:
        if slot.ends_at <= ctx.now:
            continue
        ctx.say(
            "notice_mine_cancelled",
            name=files[appointment.vaccinee_id].file.masked_name,
            vaccine=vaccine_name(appointment.vaccine_code),
            clinic=names.get(slot.clinic_id, ""),
            when=_when(ctx, slot.starts_at),
            window=_window(ctx, slot),
            text=notice.text,
        )


async def choose_mine(ctx: Context) -> None:
    """A booking chosen: ask to confirm its cancellation."""
    choice = _chosen(ctx, "bookings")
    if not isinstance(choice, list):
        await not_a_choice(ctx)
        return
    lines = [str(line) for line in ctx.data.get("list_lines", [])]
    number = list_number(ctx.update.text) or 1
    ctx.say("booking_manage_ask", booking=lines[number - 1])
    ctx.goto(MineSteps.cancelling, appointment_id=int(choice[0]), certificate_id=int(choice[1]))


async def start_reschedule(ctx: Context) -> None:
    """「改期」: the same vaccine's days at the same clinic; the old booking is kept until the new one is made."""
    seen = await _still_visible(ctx)
    if seen is None:
        return
    _, visible = seen
    appointment_id = int(ctx.data.get("appointment_id", 0))
    held = {
        appointment.id: (appointment, slot)
        for appointment, slot in await bookings.active_of(ctx.session, [visible.certificate.vaccinee_id])
    }
    if appointment_id not in held:
        ctx.finish()
        ctx.say("booking_cancel_gone")
        return
    appointment, slot = held[appointment_id]
    today = china_date(ctx.now)
    record = await _record(ctx, visible)
    due = next_dose(visible.file.birth_date, visible.file.sex, record, appointment.vaccine_code, today)
    certificate_id = visible.certificate.id
    ctx.finish()
    ctx.data.update(
        certificate_id=certificate_id,
        replaces=appointment.id,
        vaccine=appointment.vaccine_code,
        dose=due.dose_number if due is not None else None,
        earliest=(due.earliest if due is not None else today).isoformat(),
        until=due.until.isoformat() if due is not None and due.until else "",
    )
    await _offer_days(ctx, slot.clinic_id)


async def other_clinic(ctx: Context) -> None:
    """「换一家门诊」 at the days: the clinics with slots for the same vaccine (for a move, the usual way out)."""
    seen = await _still_visible(ctx)
    if seen is None:
        return
    await _offer_clinics(ctx, seen[1])


async def cancel_booking(ctx: Context) -> None:
    """「确认取消」: cancel it if the person may still see the certificate and it is still active."""
    seen = await _still_visible(ctx)
    if seen is None:
        return
    _, visible = seen
    appointment_id = int(ctx.data.get("appointment_id", 0))
    ctx.finish()
    held = {
        appointment.id for appointment, _ in await bookings.active_of(ctx.session, [visible.certificate.vaccinee_id])
    }
    identity = seen[0]
    if appointment_id not in held or not await bookings.cancel(ctx.session, appointment_id, ctx.now):
        await _audit(ctx, identity, visible, "booking_refused", "not_active", step="cancel", booking=appointment_id)
        ctx.say("booking_cancel_gone")
        return
    await _audit(ctx, identity, visible, "booking_cancelled", booking=appointment_id)
    ctx.say("booking_cancelled", name=visible.file.masked_name)


async def not_cancel_confirmed(ctx: Context) -> None:
    """Anything but 「确认取消」: say how to confirm, or that leaving keeps the booking."""
    ctx.say("booking_cancel_hint")


# --- flows -----------------------------------------------------------------------------------

PICKER = Picker(
    state=BookingSteps.certificate,
    act=offer_vaccines,
    need_verify="booking_need_verify",
    none="booking_none",
    head="booking_pick_head",
)

BOOK_STARTS = menu(MenuKey.BOOK) | text_in(*BOOK_WORDS)
MINE_STARTS = menu(MenuKey.MY_BOOKINGS) | text_in(*MINE_WORDS)


def _list_step(step: State, choose: Route) -> list[Route]:
    return [choose, _turn(step), Route(BOOK_STARTS, PICKER.start), Route(any_text, not_a_choice)]


BOOKING = Flow(
    name="booking",
    title=LABELS[MenuKey.BOOK],
    entry_points=[Route(BOOK_STARTS, PICKER.start)],
    states={
        BookingSteps.certificate: [
            Route(is_choice, PICKER.choose),
            Route(BOOK_STARTS, PICKER.start),
            Route(any_text, PICKER.not_a_choice),
        ],
        BookingSteps.vaccine: _list_step(BookingSteps.vaccine, Route(is_choice, choose_vaccine)),
        BookingSteps.clinic: _list_step(BookingSteps.clinic, Route(is_choice, choose_clinic)),
        BookingSteps.day: [
            Route(OTHER_CLINIC, other_clinic),
            *_list_step(BookingSteps.day, Route(is_choice, choose_day)),
        ],
        BookingSteps.window: _list_step(BookingSteps.window, Route(is_choice, choose_window)),
        BookingSteps.confirm: [
            Route(CONFIRM, confirm),
            Route(BOOK_STARTS, PICKER.start),
            Route(any_text, not_confirmed),
        ],
        BookingSteps.lottery: [
            Route(lottery_chat.ENTER, lottery_chat.enter),
            Route(BOOK_STARTS, PICKER.start),
            Route(any_text, lottery_chat.not_entered),
        ],
    },
    timeout=STEP_TIMEOUT,
)

MINE = Flow(
    name="my_bookings",
    title=LABELS[MenuKey.MY_BOOKINGS],
    entry_points=[Route(MINE_STARTS, list_mine)],
    states={
        MineSteps.choosing: [
            Route(is_choice, choose_mine),
            _turn(MineSteps.choosing),
            Route(MINE_STARTS, list_mine),
            Route(any_text, not_a_choice),
        ],
        MineSteps.cancelling: [
            Route(CONFIRM_CANCEL, cancel_booking),
            Route(RESCHEDULE, start_reschedule),
            Route(MINE_STARTS, list_mine),
            Route(any_text, not_cancel_confirmed),
        ],
    },
    timeout=STEP_TIMEOUT,
)

router = Router("booking")
router.include(BOOKING)
router.include(MINE)
