"""Journey 2: real-name verification (实名认证) — name, ID number, then a single-use face-verification link.

The handler only records the attempt and sends the link; the provider round trip happens in the
browser and in :mod:`bot.identity.verification`, which tells the user the result through the outbox.
"""

from __future__ import annotations

from datetime import timedelta

from bot.certificates.rules import age_on, bound_identity
from bot.chat.conversation import Context, Flow, Route, Router, State, StatesGroup, any_text, menu, text_in
from bot.chat.menu import LABELS, MenuKey
from bot.core.chinatime import china_date
from bot.core.pii import mask_id_number, mask_name
from bot.core.update import Article, Text
from bot.core.validators import InvalidIdNumber, normalize_name, parse_id_number
from bot.identity.face.base import Subject
from bot.identity.face.providers import method_for_age, provider_name_for
from bot.identity.verification import create_attempt, verify_url
from handlers.common import id_number_problem, name_problem


class VerifySteps(StatesGroup):
    """Asking for the name, then the ID number."""

    name = State()
    id_number = State()


async def start(ctx: Context) -> None:
    """Say what verification needs and ask for the name (or say it is done already)."""
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is not None:
        vault = ctx.services.vault
        name = vault.open("name", identity.name_enc)
        id_number = vault.open("id_number", identity.id_number_enc)
        ctx.say("verify_already", name=mask_name(name), id=mask_id_number(id_number))
        ctx.finish()
        return
    ctx.say("verify_intro")
    ctx.goto(VerifySteps.name)


async def got_name(ctx: Context) -> None:
    """Keep the name (sealed) and ask for the ID number."""
    problem = name_problem(ctx.update.text, "verify_bad_name")
    name = normalize_name(ctx.update.text)
    if problem is not None or name is None:
        ctx.say(problem or "verify_bad_name")
        ctx.goto(VerifySteps.name)
        return
    ctx.goto(VerifySteps.id_number, name=ctx.services.vault.seal_text("name", name))
    ctx.say("verify_ask_id")


async def back_to_name(ctx: Context) -> None:
    """「上一步」 while asked for the ID number: ask for the name again."""
    ctx.say("verify_intro")
    ctx.goto(VerifySteps.name)


async def got_id_number(ctx: Context) -> None:
    """Validate the ID number; by age, send a face-verification link or explain the other way."""
    today = china_date(ctx.now)
    off_topic = id_number_problem(ctx.update.text)
    if off_topic is not None:
        ctx.say(off_topic)
        ctx.goto(VerifySteps.id_number)
        return
    try:
        parsed = parse_id_number(ctx.update.text, today)
    except InvalidIdNumber as exc:
        ctx.say(exc.reason)
        ctx.goto(VerifySteps.id_number)
        return
    vault = ctx.services.vault
    name = vault.open_text("name", str(ctx.data["name"]))
    age = age_on(parsed.birth_date, today)
    method = method_for_age(ctx.settings, age)
    ctx.finish()
    if method != "face":
        ctx.say(f"verify_tier_{method}", age=age)
        return
    account = await ctx.account()
    if account.id is None:
        await ctx.session.flush()  # a first contact: the account row needs its id for the attempt
    ttl = timedelta(seconds=ctx.settings.face_link_ttl_seconds)
    provider = provider_name_for(ctx.settings, ctx.update.platform.value)
    handle = create_attempt(ctx.session, vault, account, Subject(name, parsed.value), provider, ctx.now, ttl)
    masked = {"name": mask_name(name), "id": mask_id_number(parsed.value)}
    ctx.reply(
        Article(
            title=ctx.text("verify_link_title"),
            description=ctx.text("verify_link_description", minutes=int(ttl.total_seconds() // 60), **masked),
            url=verify_url(ctx.settings, handle),
        )
    )
    ctx.reply(Text(ctx.text("verify_link_sent")))


async def timed_out(ctx: Context) -> None:
    """Someone writes after a verification step expired: what was typed is gone, how to start again."""
    ctx.say("verify_timed_out")


FLOW = Flow(
    name="verify",
    title=LABELS[MenuKey.VERIFY],
    entry_points=[
        Route(menu(MenuKey.VERIFY), start),
        Route(text_in("认证", "人脸认证", "实名"), start),
    ],
    states={
        VerifySteps.name: [Route(any_text, got_name)],
        VerifySteps.id_number: [Route(text_in("上一步", "返回上一步"), back_to_name), Route(any_text, got_id_number)],
    },
    unsaved=frozenset({VerifySteps.id_number}),
    timeout=timedelta(minutes=15),
    on_timeout=timed_out,
)

router = Router("verify")
router.include(FLOW)
