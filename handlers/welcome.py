"""Journey 1: follow → welcome; unfollow recorded; help; unknown message types answered kindly."""

from __future__ import annotations

from bot.chat.conversation import Context, Route, Router, kind, text_in
from bot.core.update import UpdateKind
from handlers.common import HELP_WORDS


async def greet(ctx: Context) -> None:
    """A new (or returning) follower: say what the account does and how to start."""
    account = await ctx.account()
    returning = account.identity_id is not None
    account.following = True
    account.followed_at = ctx.now
    ctx.say("welcome_back" if returning else "welcome")


async def record_unfollow(ctx: Context) -> None:
    """The user left: stop pushing to them (nothing can be sent back anyway)."""
    account = await ctx.account()
    account.following = False
    account.unfollowed_at = ctx.now
    ctx.finish()


async def show_help(ctx: Context) -> None:
    """What the account can do, by menu."""
    ctx.say("help")


async def unsupported(ctx: Context) -> None:
    """Voice, video, location…: say we read text only."""
    ctx.say("unsupported_message")


async def image(ctx: Context) -> None:
    """An image we cannot read."""
    ctx.say("image_received")


async def unknown_scan(ctx: Context) -> None:
    """A scan of something that is not ours (the clinic side arrives with the show-code journey)."""
    ctx.say("scan_unrecognised")


async def platform_report(ctx: Context) -> None:
    """Template-send results, subscription reports, location reports and the like: nothing to answer."""


router = Router("welcome")
router.add(
    [
        Route(kind(UpdateKind.FOLLOW), greet),
        Route(kind(UpdateKind.UNFOLLOW), record_unfollow),
        Route(text_in(*HELP_WORDS, "你好", "您好", "hi", "hello", "在吗"), show_help),
        Route(kind(UpdateKind.IMAGE), image),
        Route(kind(UpdateKind.SCAN, UpdateKind.SCAN_CODE), unknown_scan),
        Route(
            kind(UpdateKind.TEMPLATE_RESULT, UpdateKind.SUBSCRIPTION, UpdateKind.MENU_VIEW, UpdateKind.OTHER_EVENT),
            platform_report,
        ),
        Route(kind(UpdateKind.UNKNOWN), unsupported),
    ]
)
