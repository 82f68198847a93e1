"""一验证, the family's side: 「确认」 in chat confirms the dose plan the clinic's desk just sent.

The desk (:func:`bot.desk.steps.request_confirmation`) sends 「即将为 林*满 接种：…请核对后回复「确认」」 to
the person who showed the code and the certificate's holder. Either may answer 「确认」; with several
requests waiting (two children at the desk) the answer names the queue number (「确认12」). A plan changed
at the desk after the message went out is not confirmed by it: the newest message is the one to check.
A flow step that asks for 「确认」 itself (a grant waiting to be confirmed) keeps the word.
"""

from __future__ import annotations

import re

from bot.certificates.rules import bound_identity
from bot.chat.conversation import Context, Filter, Route, Router, normalise
from bot.core.chinatime import china_date
from bot.core.update import UpdateKind
from bot.desk.steps import Pending, confirm_in_chat, confirmed_today, pending_confirmations
from bot.immunization.vaccines import vaccine_name

CONFIRM = re.compile(r"^(?:确认|确定)(\d{1,4})?号?$")


def _number(text: str) -> int | None:
    match = CONFIRM.match(normalise(text))
    return int(match.group(1)) if match and match.group(1) else None


is_confirmation = Filter(
    lambda update: update.kind is UpdateKind.TEXT and CONFIRM.match(normalise(update.text)) is not None
)
"""「确认」, 「确定」, or either with a queue number (「确认 12号」)."""


def _line(ctx: Context, pending: Pending) -> str:
    return ctx.text(
        "desk_confirm_line",
        number=pending.queue_number,
        name=pending.masked_name,
        vaccine=vaccine_name(pending.plan.vaccine_code),
        number_dose=pending.plan.dose_number,
        lot=pending.plan.lot_number,
    )


async def confirm(ctx: Context) -> None:
    """Confirm the one 一验证 request waiting for this person today (or the one whose number they gave)."""
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is None:
        ctx.say("desk_confirm_nothing")
        return
    vault = ctx.services.vault
    today = china_date(ctx.now)
    waiting = await pending_confirmations(ctx.session, vault, identity.id, today)
    number = _number(ctx.update.text)
    if number is not None:
        waiting = [pending for pending in waiting if pending.queue_number == number]
    if not waiting:
        done = await confirmed_today(ctx.session, vault, identity.id, today)
        if done:
            ctx.say("desk_confirm_already", name=done[-1])
        else:
            ctx.say("desk_confirm_nothing")
        return
    if len(waiting) > 1:
        lines = "\n".join(_line(ctx, pending) for pending in waiting)
        ctx.say("desk_confirm_which", count=len(waiting), lines=lines, example=waiting[0].queue_number)
        return
    pending = waiting[0]
    if not await confirm_in_chat(ctx.session, identity.id, pending, platform=ctx.update.platform.value, now=ctx.now):
        ctx.say("desk_confirm_stale")
        return
    ctx.say(
        "desk_confirmed",
        name=pending.masked_name,
        vaccine=vaccine_name(pending.plan.vaccine_code),
        number=pending.plan.dose_number,
    )


router = Router("desk_confirm")
router.add([Route(is_confirmation, confirm)])
