"""Journey 8: records (接种记录 / 结果查询) — the doses of a certificate its holder or a grantee may see.

Every look is audited. Names and ID numbers are masked, the birth date shows only year and month,
and the next doses due are not shown until there is a forecaster to compute them honestly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from sqlalchemy import select

from bot.certificates import Visible, bound_identity, doses_of, record_view, visible_certificates
from bot.chinatime import china_date
from bot.conversation import Context, Flow, Route, State, StatesGroup, any_text, list_number, menu, text_in
from bot.menu import MenuKey
from bot.messages import VACCINE_NAMES
from bot.update import Text, Update, UpdateKind
from models import Clinic, Dose, Identity

ENTRY_WORDS = ("接种记录", "查记录", "结果查询", "查询接种记录", "我的接种记录", "查看接种记录")
# Each message stays well under what the platforms take; longer records go out as several messages.
MAX_MESSAGE_CHARS = 1500


class RecordsSteps(StatesGroup):
    """Choosing one of several certificates."""

    choosing = State()


def _is_choice(update: Update) -> bool:
    return update.kind is UpdateKind.TEXT and list_number(update.text) is not None


def role_key(visible: Visible) -> str:
    """The catalogue key of how the person relates to a certificate: 本人, 子女 or 已授权."""
    if visible.role == "grantee":
        return "records_role_granted"
    return "records_role_self" if visible.certificate.kind == "adult" else "records_role_child"


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


async def _identity(ctx: Context) -> Identity | None:
    return await bound_identity(ctx.session, await ctx.account())


async def start(ctx: Context) -> None:
    """「接种记录」: the records of the one certificate this person may see, or a numbered choice."""
    ctx.finish()
    identity = await _identity(ctx)
    if identity is None:
        ctx.say("records_need_verify")
        return
    visible = await visible_certificates(ctx.session, ctx.services.vault, identity)
    if not visible:
        ctx.say("records_none")
        return
    if len(visible) == 1:
        await show(ctx, identity, visible[0])
        return
    lines = [ctx.text("records_pick_head")]
    lines += [
        ctx.text("records_pick_item", number=number, name=item.file.masked_name, role=ctx.text(role_key(item)))
        for number, item in enumerate(visible, 1)
    ]
    ctx.reply(Text("\n".join(lines)))
    ctx.goto(RecordsSteps.choosing, choices=[item.certificate.id for item in visible])


async def choose(ctx: Context) -> None:
    """A number from the list: show that certificate's records (if it is still visible)."""
    number = list_number(ctx.update.text)
    choices = list(ctx.data.get("choices", []))
    if number is None or not 1 <= number <= len(choices):
        ctx.say("records_pick_invalid")
        ctx.goto(RecordsSteps.choosing)
        return
    ctx.finish()
    identity = await _identity(ctx)
    if identity is None:
        ctx.say("records_need_verify")
        return
    for item in await visible_certificates(ctx.session, ctx.services.vault, identity):
        if item.certificate.id == choices[number - 1]:
            await show(ctx, identity, item)
            return
    await start(ctx)  # no longer visible (a grant was revoked meanwhile): the list as it is now


async def not_a_choice(ctx: Context) -> None:
    """Anything else while the list is open."""
    ctx.say("records_pick_invalid")
    ctx.goto(RecordsSteps.choosing)


def _date(ctx: Context, value: date) -> str:
    return ctx.text("records_date", year=value.year, month=value.month, day=value.day)


async def show(ctx: Context, identity: Identity, visible: Visible) -> None:
    """The masked header, the doses grouped by vaccine, and what is not shown here; audited."""
    record_view(ctx.session, identity, visible, "records_view", ctx.update.platform.value)
    doses = await doses_of(ctx.session, visible.certificate.vaccinee_id, china_date(ctx.now))
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
    groups: dict[str, list[Dose]] = {}
    for dose in doses:  # grouped in the order each vaccine was first given
        groups.setdefault(dose.vaccine_code, []).append(dose)
    blocks = [header]
    for code, given in groups.items():
        lines = [ctx.text("records_vaccine", vaccine=VACCINE_NAMES.get(code, code))]
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
    blocks.append(ctx.text("records_footer"))
    continued = ctx.text("records_header_more", name=visible.file.masked_name)
    for message in pack(blocks, MAX_MESSAGE_CHARS, continued):
        ctx.reply(Text(message))


async def leave(ctx: Context) -> None:
    """Leave the list."""
    ctx.finish()
    ctx.say("cancelled")


FLOW = Flow(
    name="records",
    entry_points=[Route(menu(MenuKey.RECORDS), start), Route(text_in(*ENTRY_WORDS), start)],
    states={
        RecordsSteps.choosing: [
            Route(_is_choice, choose),
            Route(text_in(*ENTRY_WORDS), start),
            Route(any_text, not_a_choice),
        ]
    },
    fallbacks=[Route(text_in("退出", "取消", "结束", "返回"), leave)],
    timeout=timedelta(minutes=10),
)
