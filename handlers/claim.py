"""Journeys 3 and 4: the pending list (待申领) and claiming (申领), with a masked check before agreeing."""

from __future__ import annotations

from datetime import timedelta

from bot.certificates.rules import (
    FileView,
    PendingItem,
    Standing,
    bound_identity,
    claim_with_consent,
    pending_for,
    record_pending_view,
)
from bot.chat.conversation import Context, Flow, Route, Router, State, StatesGroup, any_text, list_number, menu, text_in
from bot.chat.menu import LABELS, MenuKey
from bot.core.chinatime import china_date
from bot.core.update import Text
from bot.reminders.planning import plan_soon
from models import CertificateKind, Identity


class ClaimSteps(StatesGroup):
    """Choosing a file, then agreeing to claim it."""

    choosing = State()
    confirming = State()


def _relation(ctx: Context, file: FileView) -> str:
    return ctx.text(f"relation_{file.relation}")


def _status_line(ctx: Context, item: PendingItem) -> str:
    values = {"name": item.file.masked_name, "relation": _relation(ctx, item.file)}
    if item.standing is Standing.MINE:
        return ctx.text("claim_line_mine", **values)
    if item.standing is Standing.GRANTED:
        return ctx.text("claim_line_granted", **values)
    if item.standing is Standing.TAKEN:
        return ctx.text("claim_line_taken", **values)
    return ctx.text("claim_line_ineligible", reason=ctx.text(item.reason), **values)


async def _identity(ctx: Context) -> Identity | None:
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is None:
        ctx.say("verify_needed")
        ctx.finish()
    return identity


async def _pending(ctx: Context, identity: Identity) -> list[PendingItem]:
    items = await pending_for(ctx.session, ctx.services.vault, identity, ctx.settings, china_date(ctx.now))
    record_pending_view(ctx.session, identity, items, ctx.update.platform.value, account=await ctx.account())
    return items


async def show_pending(ctx: Context) -> None:
    """The certificates this person may claim, and why the others cannot be."""
    identity = await _identity(ctx)
    if identity is None:
        return
    items = await _pending(ctx, identity)
    claimable = [item for item in items if item.standing is Standing.CLAIMABLE]
    others = [item for item in items if item.standing is not Standing.CLAIMABLE]
    lines: list[str] = []
    if claimable:
        lines.append(ctx.text("claim_list_head"))
        for number, item in enumerate(claimable, start=1):
            lines.append(
                ctx.text(
                    "claim_list_item",
                    number=number,
                    name=item.file.masked_name,
                    relation=_relation(ctx, item.file),
                    id=item.file.masked_id,
                )
            )
    if others:
        if lines:
            lines.append("")
        lines.append(ctx.text("claim_others_head"))
        lines.extend(_status_line(ctx, item) for item in others)
    if not items:
        ctx.say("claim_none_found")
        ctx.say("faq_no_pending")
        ctx.finish()
        return
    if claimable:
        lines += ["", ctx.text("claim_list_foot")]
        ctx.reply(Text("\n".join(lines)))
        ctx.goto(ClaimSteps.choosing, options=[item.file.vaccinee_id for item in claimable])
        return
    ctx.reply(Text("\n".join(lines)))
    ctx.finish()


async def choose(ctx: Context) -> None:
    """A number from the list: show the file, masked, for checking."""
    options = [int(value) for value in ctx.data.get("options", [])]
    number = list_number(ctx.update.text)
    if number is None or not 1 <= number <= len(options):
        ctx.say("claim_choice_invalid")
        ctx.goto(ClaimSteps.choosing)
        return
    identity = await _identity(ctx)
    if identity is None:
        return
    item = await _still_claimable(ctx, identity, options[number - 1])
    if item is None:
        return
    file = item.file
    ctx.say(
        "claim_confirm",
        name=file.masked_name,
        id=file.masked_id,
        birth=f"{file.birth_date.year}年{file.birth_date.month}月",
        clinic=file.clinic_name,
        consent=ctx.text(f"claim_consent_{file.kind}"),
    )
    ctx.goto(ClaimSteps.confirming, chosen=file.vaccinee_id)


async def _still_claimable(ctx: Context, identity: Identity, vaccinee_id: int) -> PendingItem | None:
    """The file as it stands now (another family member may have claimed it since the list was shown)."""
    items = await pending_for(ctx.session, ctx.services.vault, identity, ctx.settings, china_date(ctx.now))
    item = next((item for item in items if item.file.vaccinee_id == vaccinee_id), None)
    if item is not None and item.standing is Standing.CLAIMABLE:
        return item
    if item is not None and item.standing is Standing.TAKEN:
        ctx.say("claim_taken_now", name=item.file.masked_name)
        ctx.finish()
        return None
    ctx.say("claim_gone")
    await show_pending(ctx)
    return None


async def agree(ctx: Context) -> None:
    """「同意并申领」: claim it (the database decides a race), record the consent, say what comes next."""
    identity = await _identity(ctx)
    if identity is None:
        return
    item = await _still_claimable(ctx, identity, int(ctx.data["chosen"]))
    if item is None:
        return
    certificate = await claim_with_consent(
        ctx.session, identity, item.file, ctx.update.platform.value, ctx.now, account=await ctx.account()
    )
    ctx.finish()
    if certificate is None:
        ctx.say("claim_taken_now", name=item.file.masked_name)
        return
    if item.file.kind == CertificateKind.CHILD:
        await plan_soon(ctx.session, item.file.vaccinee_id, china_date(ctx.now))  # its reminders, next pass
    hint = ctx.text("claim_success_grant_hint") if item.file.kind == CertificateKind.CHILD else ""
    ctx.say("claim_success", name=item.file.masked_name, grant_hint=hint)


async def confirm_hint(ctx: Context) -> None:
    """Anything else while asked to agree."""
    ctx.say("claim_confirm_hint")
    ctx.goto(ClaimSteps.confirming)


FLOW = Flow(
    name="claim",
    title=LABELS[MenuKey.CLAIM],
    entry_points=[
        Route(menu(MenuKey.CLAIM), show_pending),
        Route(text_in("申领", "待申领", "我要申领"), show_pending),
    ],
    states={
        ClaimSteps.choosing: [Route(any_text, choose)],
        ClaimSteps.confirming: [
            Route(text_in("同意并申领", "同意", "确认申领", "同意申领"), agree),
            Route(any_text, confirm_hint),
        ],
    },
    timeout=timedelta(minutes=15),
)

router = Router("claim")
router.include(FLOW)
