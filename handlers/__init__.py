"""Journey handlers, one module (and one router) each; :func:`build_router` composes them."""

from __future__ import annotations

from bot.chat.conversation import Context, Router
from handlers import (
    accounts,
    booking,
    claim,
    coming_soon,
    common,
    desk_confirm,
    grant,
    lottery,
    miniprogram,
    my_code,
    questions,
    records,
    show_code,
    verify,
    welcome,
)


async def fallback(ctx: Context) -> None:
    """Nothing matched: a helpful menu, never silence."""
    ctx.say("fallback")


def build_router(*first: Router) -> Router:
    """The router every platform's updates go through (``first``: routers tried before the journeys)."""
    root = Router("root", default=fallback, commands=common.COMMANDS)
    for router in first:
        root.include_router(router)
    root.add(common.ROUTES)
    # The FAQ's topic route matches any text mentioning a topic word (「待申领」 among them), so the
    # journeys, whose words are exact, come before it.
    for feature in (
        verify.router,
        claim.router,
        grant.router,
        records.router,
        show_code.router,
        booking.router,
        lottery.router,
        my_code.router,
        desk_confirm.router,
        accounts.router,
        miniprogram.router,  # before welcome's catch-all for platform reports
        welcome.router,
        questions.router,
        coming_soon.router,
    ):
        root.include_router(feature)
    return root
