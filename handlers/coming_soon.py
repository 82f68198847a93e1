"""Menu items whose journeys are not built yet: an honest answer that says what to do meanwhile."""

from __future__ import annotations

from bot.chat.conversation import Context, Route, Router, menu
from bot.chat.menu import LABELS, MenuKey

# Every menu journey is built now (预约接种 and 我的预约 live in handlers.booking); a menu item added before
# its journey goes here.
PENDING_JOURNEYS: tuple[MenuKey, ...] = ()


async def not_yet(ctx: Context) -> None:
    """Say the feature is on its way and point to what works today."""
    key = next((key for key in PENDING_JOURNEYS if menu(key)(ctx.update)), None)
    ctx.say("feature_coming", feature=LABELS[key] if key is not None else "该")


router = Router("coming_soon")
router.add([Route(menu(*PENDING_JOURNEYS), not_yet)])
