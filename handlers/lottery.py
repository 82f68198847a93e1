"""Journey: 摇号 — entering a lottery slot from 预约接种, 「确认中签」 to take a place won, 「我的摇号」.

In 预约接种 a lottery slot's places say 「摇号」 in the clinic, day and window lists; choosing it shows the
masked entry and the registration close (the draw follows it); 「报名摇号」 enters the person once (a retry,
another family member or a second device finds the entry made) and answers with the entry hash's short
form, which finds the entry in the published list. The outcome is told by ``bot.reminders.lottery_news``;
a winner (or whoever the place passed down to) answers 「确认中签」 before the deadline, which books the place.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from bot.booking import bookings, lottery, slots
from bot.booking.lottery import ConfirmOutcome, EntryOutcome
from bot.certificates.rules import Visible, bound_identity, open_visible, visible_certificates
from bot.chat.conversation import Context, Route, Router, State, text_in
from bot.core.audit import record_access
from bot.core.chinatime import CHINA
from bot.core.update import Text
from bot.immunization.vaccines import vaccine_name
from models import EntryStatus, Lottery, LotteryEntry, LotteryStatus, Slot

ENTER = text_in("报名摇号", "确认报名", "确认", "确定", "报名")
CONFIRM_WIN = text_in("确认中签", "中签确认", "确认名额")
MINE = text_in("我的摇号", "摇号结果", "查看摇号")


def _when(ctx: Context, moment: datetime) -> str:
    local = moment.astimezone(CHINA)
    return ctx.text("lottery_when", month=local.month, day=local.day, hour=local.hour, minute=f"{local.minute:02d}")


def _window(slot: Slot) -> str:
    start, end = slot.starts_at.astimezone(CHINA), slot.ends_at.astimezone(CHINA)
    return f"{start:%H:%M}–{end:%H:%M}"


def _price(ctx: Context, slot: Slot) -> str:
    if slot.funding == slots.Funding.SELF_PAID and slot.price_fen:
        return ctx.text("booking_price_paid", yuan=f"{slot.price_fen / 100:.2f}".removesuffix(".00"))
    return ctx.text("booking_price_free")


async def window_line(ctx: Context, slot: Slot) -> str:
    """A lottery slot's line in 预约接种's list of windows: 「摇号」, its places and when registration closes."""
    found = await lottery.of_slot(ctx.session, slot.id)
    closes = _when(ctx, found.registration_closes_at) if found is not None else ""
    return ctx.text(
        "lottery_slot_line", window=_window(slot), places=slot.capacity, closes=closes, price=_price(ctx, slot)
    )


async def offer_entry(ctx: Context, slot: Slot, visible: Visible, step: State) -> bool:
    """A lottery slot chosen in 预约接种: the masked entry to confirm at ``step``; False if it has no lottery."""
    found = await lottery.of_slot(ctx.session, slot.id)
    if found is None:
        return False
    names = await slots.clinic_names(ctx.session, [slot.clinic_id])
    ctx.say(
        "lottery_confirm",
        name=visible.file.masked_name,
        vaccine=vaccine_name(slot.vaccine_code),
        clinic=names.get(slot.clinic_id, ""),
        when=_when(ctx, slot.starts_at),
        window=_window(slot),
        places=found.places,
        price=_price(ctx, slot),
        closes=_when(ctx, found.registration_closes_at),
    )
    ctx.goto(step, slot_id=slot.id, lottery_id=found.id)
    return True


async def enter(ctx: Context) -> None:
    """「报名摇号」: enter the chosen person once, and say how it went (with the entry's short hash)."""
    certificate_id, lottery_id = int(ctx.data["certificate_id"]), int(ctx.data["lottery_id"])
    ctx.finish()
    identity = await bound_identity(ctx.session, await ctx.account())
    visible = None
    if identity is not None:
        visible = await open_visible(ctx.session, ctx.services.vault, identity, certificate_id)
    if identity is None or visible is None:
        ctx.say("pick_gone")
        return
    settings = ctx.services.settings
    result = await lottery.enter(
        ctx.session,
        ctx.services.vault,
        lottery_id,
        visible.certificate.vaccinee_id,
        identity.id,
        ctx.now,
        penalty_days=settings.no_show_penalty_days,
    )
    drawn = result.lottery
    name = visible.file.masked_name
    if drawn is None:
        ctx.say("lottery_closed")
        return
    vaccine = vaccine_name(drawn.vaccine_code)
    if result.outcome in (EntryOutcome.ENTERED, EntryOutcome.ALREADY) and result.entry is not None:
        short = lottery.short_hash(result.entry.entry_hash)
        if result.outcome == EntryOutcome.ALREADY:
            ctx.say("lottery_already", name=name, entry=short)
            return
        names = await slots.clinic_names(ctx.session, [drawn.clinic_id])
        record_access(
            ctx.session,
            actor_kind="identity",
            actor_ref=str(identity.id),
            action="lottery_entered",
            certificate_id=visible.certificate.id,
            vaccinee_id=visible.certificate.vaccinee_id,
            platform=ctx.update.platform.value,
            detail={"lottery": drawn.public_id, "entry": result.entry.id},
        )
        closes = _when(ctx, drawn.registration_closes_at)
        clinic = names.get(drawn.clinic_id, "")
        ctx.say("lottery_entered", name=name, vaccine=vaccine, clinic=clinic, closes=closes, entry=short)
    elif result.outcome == EntryOutcome.PENALISED and result.penalty_until is not None:
        until = result.penalty_until.astimezone(CHINA)
        day = ctx.text("records_date", year=until.year, month=until.month, day=until.day)
        ctx.say("lottery_penalised", name=name, vaccine=vaccine, until=day)
    elif result.outcome == EntryOutcome.NOT_OPEN:
        ctx.say("lottery_not_open", opens=_when(ctx, drawn.registration_opens_at))
    else:
        ctx.say("lottery_closed")


async def not_entered(ctx: Context) -> None:
    """Anything else at the entry's confirmation: how to enter or leave."""
    ctx.say("lottery_confirm_hint")


async def _family_entries(ctx: Context) -> tuple[dict[int, Visible], list[tuple[LotteryEntry, Lottery, Slot]]]:
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is None:
        return {}, []
    files = {
        item.certificate.vaccinee_id: item
        for item in await visible_certificates(ctx.session, ctx.services.vault, identity)
    }
    if not files:
        return files, []
    rows = await ctx.session.execute(
        select(LotteryEntry, Lottery, Slot)
        .join(Lottery, Lottery.id == LotteryEntry.lottery_id)
        .join(Slot, Slot.id == Lottery.slot_id)
        .where(LotteryEntry.vaccinee_id.in_(sorted(files)), Slot.starts_at > ctx.now)
        .order_by(Slot.starts_at, LotteryEntry.id)
    )
    return files, [(entry, drawn, slot) for entry, drawn, slot in rows.all()]


async def confirm_win(ctx: Context) -> None:
    """「确认中签」: book every place offered to the family's people (usually one), each once."""
    ctx.finish()
    identity = await bound_identity(ctx.session, await ctx.account())
    files, found = await _family_entries(ctx)
    offered = [row for row in found if row[0].status in (EntryStatus.OFFERED, EntryStatus.CONFIRMED)]
    if identity is None or not offered:
        ctx.say("lottery_confirm_none")
        return
    for entry, drawn, slot in offered:
        result = await lottery.confirm(ctx.session, entry.id, identity.id, ctx.now)
        name = files[entry.vaccinee_id].file.masked_name
        vaccine = vaccine_name(slot.vaccine_code)
        if result.outcome in (ConfirmOutcome.CONFIRMED, ConfirmOutcome.ALREADY) and result.appointment is not None:
            if result.outcome == ConfirmOutcome.CONFIRMED:
                record_access(
                    ctx.session,
                    actor_kind="identity",
                    actor_ref=str(identity.id),
                    action="lottery_confirmed",
                    certificate_id=files[entry.vaccinee_id].certificate.id,
                    vaccinee_id=entry.vaccinee_id,
                    platform=ctx.update.platform.value,
                    detail={"lottery": drawn.public_id, "entry": entry.id, "appointment": result.appointment.id},
                )
            names = await slots.clinic_names(ctx.session, [slot.clinic_id])
            ctx.say(
                "lottery_confirmed",
                name=name,
                vaccine=vaccine,
                clinic=names.get(slot.clinic_id, ""),
                when=_when(ctx, slot.starts_at),
                window=_window(slot),
                number=bookings.booking_number(result.appointment),
                days=ctx.services.settings.no_show_penalty_days,
            )
        elif result.outcome == ConfirmOutcome.LAPSED:
            ctx.say("lottery_confirm_lapsed", name=name)
        elif result.outcome == ConfirmOutcome.HELD and result.appointment is not None:
            ctx.say(
                "lottery_confirm_held", name=name, vaccine=vaccine, number=bookings.booking_number(result.appointment)
            )
        else:
            ctx.say("lottery_confirm_closed")


async def list_entries(ctx: Context) -> None:
    """「我的摇号」: the family's entries in lotteries whose slot is still to come, and where each stands."""
    ctx.finish()
    files, found = await _family_entries(ctx)
    if not found:
        ctx.say("lottery_mine_none")
        return
    identity = await bound_identity(ctx.session, await ctx.account())
    for vaccinee_id in sorted({entry.vaccinee_id for entry, _, _ in found}):
        record_access(
            ctx.session,
            actor_kind="identity",
            actor_ref=str(identity.id) if identity is not None else "",
            action="lottery_entries_view",
            certificate_id=files[vaccinee_id].certificate.id,
            vaccinee_id=vaccinee_id,
            platform=ctx.update.platform.value,
            detail={"via": "chat"},
        )
    names = await slots.clinic_names(ctx.session, [slot.clinic_id for _, _, slot in found])
    lines = [ctx.text("lottery_mine_head")]
    for entry, drawn, slot in found:
        if drawn.status == LotteryStatus.OPEN:
            state = ctx.text("lottery_state_entered", closes=_when(ctx, drawn.registration_closes_at))
        elif entry.status == EntryStatus.OFFERED and entry.deadline is not None:
            state = ctx.text("lottery_state_offered", deadline=_when(ctx, entry.deadline))
        elif entry.status == EntryStatus.WAITING:
            state = ctx.text("lottery_state_waiting", position=max((entry.rank or 0) - drawn.places, 1))
        else:
            state = ctx.text(f"lottery_state_{entry.status.value}")
        lines.append(
            ctx.text(
                "lottery_mine_line",
                name=files[entry.vaccinee_id].file.masked_name,
                vaccine=vaccine_name(drawn.vaccine_code),
                clinic=names.get(slot.clinic_id, ""),
                state=state,
                entry=lottery.short_hash(entry.entry_hash),
            )
        )
    ctx.reply(Text("\n".join(lines)))


router = Router("lottery")
router.add([Route(CONFIRM_WIN, confirm_win), Route(MINE, list_entries)])
