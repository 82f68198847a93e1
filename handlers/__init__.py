"""Journey handlers, one module each; :func:`build_router` wires them in priority order."""

from __future__ import annotations

from bot.chat.conversation import Context, Router
from handlers import claim, coming_soon, grant, questions, records, show_code, verify, welcome


async def fallback(ctx: Context) -> None:
    """Nothing matched: a helpful menu, never silence."""
    ctx.say("fallback")


def build_router() -> Router:
    """The router every platform's updates go through."""
    router = Router(default=fallback)
    router.include(questions.FLOW)
    router.include(verify.FLOW)
    router.include(claim.FLOW)
    router.include(grant.FLOW)
    router.include(records.FLOW)
    router.include(show_code.FLOW)
    router.add(welcome.ROUTES)
    router.add(questions.ROUTES)
    router.add(coming_soon.ROUTES)
    return router
