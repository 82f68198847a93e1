"""The mini program's platform reports: each accepted one-time subscription is a consent to one message."""

from __future__ import annotations

from bot.chat.conversation import Context, Filter, Route, Router, kind
from bot.core.update import Platform, UpdateKind
from bot.platforms.wxmini.consents import record_consents
from models import ConsentSource

from_mini_program = Filter(lambda update: update.platform is Platform.WXMINI)


async def record_subscription(ctx: Context) -> None:
    """``subscribe_msg_popup_event``: record a consent per accepted template (nothing is answered)."""
    accepted = [template for template in ctx.update.extra.get("accepted", "").split(",") if template]
    if accepted and ctx.update.raw_type == "subscribe_msg_popup_event":
        await record_consents(ctx.session, await ctx.account(), accepted, ConsentSource.PUSH, ctx.now)


router = Router("miniprogram")
router.add([Route(kind(UpdateKind.SUBSCRIPTION) & from_mini_program, record_subscription)])
