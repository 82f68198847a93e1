"""「我的账号」: the chat accounts bound to a person (masked), and unbinding one after a confirmation.

One person may use WeChat and Alipay, and each account of theirs sees everything that is theirs. Here
they see which accounts those are and when each was bound, and can unbind one they do not know — the
current one too, with a warning that it must verify again. An unbound account loses access at once:
its platform account no longer points at the person. Every listing and unbinding is audited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.certificates.rules import actor, bound_identity
from bot.chat.conversation import Context, Flow, Route, Router, State, StatesGroup, any_text, list_number, menu, text_in
from bot.chat.menu import LABELS, MenuKey
from bot.core.audit import record_access
from bot.core.update import Text
from bot.identity.accounts import bound_accounts, china_minute, mask_user_id, tell_unbinding, unbind_account
from handlers.common import is_choice
from models import Identity, PlatformAccount

ENTRY_WORDS = ("我的账号", "账号管理")
CONFIRM_WORDS = ("确认解绑", "确定解绑")


class AccountSteps(StatesGroup):
    """Choosing an account from the list, then confirming its unbinding."""

    choosing = State()
    confirming = State()


def _described(ctx: Context, account: PlatformAccount) -> dict[str, Any]:
    """How messages name an account: its platform and its masked user id."""
    return {"platform": ctx.text(f"accounts_platform_{account.platform}"), "user": mask_user_id(account.user_id)}


async def _identity(ctx: Context) -> Identity | None:
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is None:
        ctx.say("accounts_need_verify")
        ctx.finish()
    return identity


async def show_accounts(ctx: Context) -> None:
    """The person's bound accounts, numbered, the current one marked; a number then chooses one to unbind."""
    identity = await _identity(ctx)
    if identity is None:
        return
    current = await ctx.account()
    bound = await bound_accounts(ctx.session, identity)
    lines = [ctx.text("accounts_head")]
    for number, item in enumerate(bound, 1):
        values = {
            "number": number,
            "current": ctx.text("accounts_current") if item.account.id == current.id else "",
            **_described(ctx, item.account),
        }
        if item.bound_at is not None:
            lines.append(ctx.text("accounts_item", time=china_minute(ctx.services.catalogue, item.bound_at), **values))
        else:
            lines.append(ctx.text("accounts_item_no_time", **values))
    lines += ["", ctx.text("accounts_foot")]
    record_access(
        ctx.session,
        actor_kind="identity",
        actor_ref=actor(identity, current),
        action="accounts_view",
        reason=str(len(bound)),
        platform=current.platform,
    )
    ctx.reply(Text("\n".join(lines)))
    ctx.goto(AccountSteps.choosing, options=[item.account.id for item in bound])


async def choose(ctx: Context) -> None:
    """A number from the list: ask to confirm unbinding that account (warning when it is the current one)."""
    options = [int(value) for value in ctx.data.get("options", [])]
    number = list_number(ctx.update.text)
    if number is None or not 1 <= number <= len(options):
        await not_a_choice(ctx)
        return
    identity = await _identity(ctx)
    if identity is None:
        return
    chosen = await ctx.session.get(PlatformAccount, options[number - 1])
    if chosen is None or chosen.identity_id != identity.id:
        ctx.say("accounts_gone")
        await show_accounts(ctx)
        return
    current = await ctx.account()
    ctx.say("accounts_confirm_current" if chosen.id == current.id else "accounts_confirm", **_described(ctx, chosen))
    ctx.goto(AccountSteps.confirming, chosen=chosen.id)


async def not_a_choice(ctx: Context) -> None:
    """Anything else while the list is open: say how to answer, and keep the list open."""
    ctx.say("accounts_choice_invalid")
    ctx.goto(AccountSteps.choosing)


async def confirm(ctx: Context) -> None:
    """「确认解绑」: unbind the chosen account (once, however often it is confirmed); audited."""
    identity = await _identity(ctx)
    if identity is None:
        return
    current = await ctx.account()
    target = await ctx.session.get(PlatformAccount, int(ctx.data["chosen"]))
    ctx.finish()
    if target is None or not await unbind_account(ctx.session, identity, current, target.id):
        ctx.say("accounts_gone")
        return
    if target.id == current.id:
        ctx.say("accounts_unbound_current")
        return
    await tell_unbinding(ctx.session, ctx.services.catalogue, current, target, identity, now=ctx.now)
    ctx.say("accounts_unbound", **_described(ctx, target))


async def confirm_hint(ctx: Context) -> None:
    """Anything else while the unbinding waits for 「确认解绑」."""
    ctx.say("accounts_confirm_hint")
    ctx.goto(AccountSteps.confirming)


_STARTS = menu(MenuKey.ACCOUNTS) | text_in(*ENTRY_WORDS)

FLOW = Flow(
    name="accounts",
    title=LABELS[MenuKey.ACCOUNTS],
    entry_points=[Route(_STARTS, show_accounts)],
    states={
        AccountSteps.choosing: [
            Route(is_choice, choose),
            Route(_STARTS, show_accounts),
            Route(any_text, not_a_choice),
        ],
        AccountSteps.confirming: [
            Route(text_in(*CONFIRM_WORDS), confirm),
            Route(text_in("上一步", "返回上一步") | _STARTS, show_accounts),
            Route(any_text, confirm_hint),
        ],
    },
    timeout=timedelta(minutes=10),
)

router = Router("accounts")
router.include(FLOW)
