"""Journey 8: records (接种记录 / 结果查询) — the doses of a certificate its holder or a grantee may see.

Every look is audited. Names and ID numbers are masked, the birth date shows only year and month. A
child's records end with the next doses from :mod:`bot.immunization.forecast` (the national childhood schedule):
late ones, those due now, and those coming within a few months.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import select

from bot.certificates.rules import Visible, doses_of, record_view
from bot.chat.conversation import Context, State, StatesGroup
from bot.chat.menu import MenuKey
from bot.core.chinatime import china_date
from bot.core.update import Text
from bot.immunization.forecast import Forecast, GivenDose, add_months, forecast_next_doses
from bot.immunization.vaccines import vaccine_name
from handlers.picking import Picker
from models import CertificateKind, Clinic, DoseDetail, Identity

ENTRY_WORDS = ("接种记录", "查记录", "结果查询", "查询接种记录", "我的接种记录", "查看接种记录")
# The 下一针 block lists doses coming within this many months; later ones are counted, not listed.
UPCOMING_MONTHS = 3
# Each message stays well under what the platforms take; longer records go out as several messages.
MAX_MESSAGE_CHARS = 1500


class RecordsSteps(StatesGroup):
    """Choosing one of several certificates."""

    choosing = State()


def pack(blocks: Sequence[str], limit: int, continued: str) -> list[str]:
    """Join blocks (separated by a blank line) into as few messages as fit ``limit`` characters each.

    A message after the first starts with ``continued``; a block too long on its own is cut at line ends.
    """
    pieces: list[str] = []
    for block in blocks:
        if len(block) <= limit - len(continued) - 2:
            pieces.append(block)
            continue
        chunk: list[str] = []
        for line in block.split("\n"):
            if chunk and len("\n".join([*chunk, line])) > limit - len(continued) - 2:
                pieces.append("\n".join(chunk))
                chunk = []
            chunk.append(line)
        if chunk:
            pieces.append("\n".join(chunk))
    messages: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}\n\n{piece}" if current else piece
        if current and len(candidate) > limit:
            messages.append(current)
            candidate = f"{continued}\n\n{piece}"
        current = candidate
    if current:
        messages.append(current)
    return messages


def _date(ctx: Context, value: date) -> str:
    return ctx.text("records_date", year=value.year, month=value.month, day=value.day)


def next_doses(ctx: Context, forecasts: Sequence[Forecast], today: date) -> str:
    """The 下一针 block: every late or due dose, the ones coming within a few months, and a count of the rest."""
    if not forecasts:
        return "\n".join([ctx.text("records_next_head"), ctx.text("records_next_none")])
    horizon = add_months(today, UPCOMING_MONTHS)
    shown = [item for item in forecasts if item.status != "upcoming" or item.recommended <= horizon]
    lines = [ctx.text("records_next_head")]
    for item in shown:
        values = {"vaccine": vaccine_name(item.vaccine_code), "number": item.dose_number}
        if item.status == "overdue" and item.past_due is not None:
            line = ctx.text("records_next_overdue", past_due=_date(ctx, item.past_due), **values)
        elif item.status == "due":
            line = ctx.text("records_next_due", **values)
        else:
            line = ctx.text("records_next_upcoming", date=_date(ctx, item.earliest), **values)
        lines.append(line + (ctx.text(f"records_next_note_{item.note}") if item.note else ""))
    if len(shown) < len(forecasts):
        lines.append(ctx.text("records_next_more", count=len(forecasts) - len(shown)))
    return "\n".join(lines)


async def show(ctx: Context, identity: Identity, visible: Visible) -> None:
    """The masked header, the doses grouped by vaccine, the next doses (children), what is not shown; audited."""
    record_view(ctx.session, identity, visible, "records_view", ctx.update.platform.value, account=await ctx.account())
    doses = await doses_of(ctx.session, ctx.services.vault, visible.certificate.vaccinee_id, china_date(ctx.now))
    clinic_ids = {dose.clinic_id for dose in doses if dose.clinic_id is not None}
    clinics: dict[int, str] = {}
    if clinic_ids:
        rows = await ctx.session.execute(select(Clinic.id, Clinic.name).where(Clinic.id.in_(clinic_ids)))
        clinics = {clinic_id: name for clinic_id, name in rows}
    birth = visible.file.birth_date
    header = ctx.text(
        "records_header",
        name=visible.file.masked_name,
        id=visible.file.masked_id,
        birth=ctx.text("records_birth", year=birth.year, month=birth.month),
    )
    groups: dict[str, list[DoseDetail]] = {}
    for dose in doses:  # grouped in the order each vaccine was first given
        groups.setdefault(dose.vaccine_code, []).append(dose)
    blocks = [header]
    for code, given in groups.items():
        lines = [ctx.text("records_vaccine", vaccine=vaccine_name(code))]
        for dose in sorted(given, key=lambda item: (item.dose_number, item.given_on)):
            clinic = clinics.get(dose.clinic_id) if dose.clinic_id is not None else None
            values = {"number": dose.dose_number, "date": _date(ctx, dose.given_on)}
            lines.append(
                ctx.text("records_dose", clinic=clinic, **values)
                if clinic
                else ctx.text("records_dose_no_clinic", **values)
            )
        blocks.append("\n".join(lines))
    if not groups:
        blocks.append(ctx.text("records_empty"))
    if visible.certificate.kind == CertificateKind.CHILD:
        record = [GivenDose(dose.vaccine_code, dose.dose_number, dose.given_on) for dose in doses]
        today = china_date(ctx.now)
        forecasts = forecast_next_doses(birth, visible.file.sex, record, today)
        blocks.append(next_doses(ctx, forecasts, today) + "\n" + ctx.text("records_next_footer"))
    blocks.append(ctx.text("records_footer"))
    continued = ctx.text("records_header_more", name=visible.file.masked_name)
    for message in pack(blocks, MAX_MESSAGE_CHARS, continued):
        ctx.reply(Text(message))


PICKER = Picker(
    state=RecordsSteps.choosing,
    act=show,
    need_verify="records_need_verify",
    none="records_none",
    head="records_pick_head",
)

router = PICKER.router("records", MenuKey.RECORDS, ENTRY_WORDS)
