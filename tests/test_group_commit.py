"""Group commit: updates arriving together share a transaction, yet each keeps all-or-nothing effects.

Updates are handed to the engine in one turn of the event loop (as a burst of requests is read), so they
form one group; the tests check what each user sees and what the database keeps.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from bot.chat.conversation import Context, Route, text_in
from bot.chat.engine import Answer, Engine
from bot.core.update import Platform, Update, UpdateKind
from bot.web.appkeys import ENGINE, SESSIONS
from models import ConversationState, OutboxMessage, PlatformAccount, ProcessedMessage
from tests.conftest import Serve
from tests.helpers import Client, eventually, router_with


def text_update(user: str, text: str, message_id: int) -> Update:
    """A WeChat text message as the gateway would parse it."""
    return Update(
        platform=Platform.WECHAT,
        app_id="wx-group",
        user_id=user,
        kind=UpdateKind.TEXT,
        created_at=datetime.now(UTC),
        message_id=str(message_id),
        text=text,
    )


async def rows(client: Client, model: Any) -> int:
    """How many rows ``model``'s table has."""
    async with client.app[SESSIONS]() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_burst_shares_transactions_and_every_update_takes_effect_once(make_settings: Any, serve: Serve) -> None:
    client = await serve(make_settings(), router=router_with(Route(text_in("客服电话"), answer_phone)))
    engine: Engine = client.app[ENGINE]
    updates = [text_update(f"o-group-{index}", "客服电话", 880_000 + index) for index in range(40)]
    answers = [Answer() for _ in updates]
    outcomes = await asyncio.gather(
        *(engine.process(update, answer) for update, answer in zip(updates, answers, strict=True))
    )
    assert max(engine.groups) > 1, engine.groups  # they did share transactions
    assert all(outcome.passive and not outcome.duplicate and len(outcome.outbox_ids) == 1 for outcome in outcomes)
    assert len({outcome.outbox_ids[0] for outcome in outcomes}) == 40
    # The same burst again (the platform's retries): all duplicates, nothing written twice.
    again = await asyncio.gather(*(engine.process(update) for update in updates))
    assert all(outcome.duplicate for outcome in again)
    assert await rows(client, ProcessedMessage) == 40
    assert await rows(client, OutboxMessage) == 40
    assert await rows(client, ConversationState) == 40
    assert await rows(client, PlatformAccount) == 40


async def answer_phone(ctx: Context) -> None:
    """The FAQ's phone answer."""
    ctx.say("contact")


async def test_a_failing_handler_rolls_back_only_its_own_effects(make_settings: Any, serve: Serve) -> None:
    async def broken(ctx: Context) -> None:
        (await ctx.account()).following = False  # a write that must not survive
        ctx.say("contact")
        raise RuntimeError("bug")

    router = router_with(Route(text_in("客服电话"), answer_phone), Route(text_in("坏了"), broken))
    client = await serve(make_settings(), router=router)
    engine: Engine = client.app[ENGINE]
    updates = [text_update(f"o-mixed-{index}", "客服电话", 890_000 + index) for index in range(10)]
    updates.insert(5, text_update("o-broken", "坏了", 890_100))
    outcomes = await asyncio.gather(*(engine.process(update, Answer()) for update in updates))
    failed = outcomes[5]
    assert failed.failed and failed.passive and "系统刚才开了个小差" in str(failed.replies[0])
    assert all(not outcome.failed and outcome.passive for index, outcome in enumerate(outcomes) if index != 5)
    async with client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == "o-broken"))).one()
        assert account.following is True  # the failed handler's write was rolled back
    assert await rows(client, ProcessedMessage) == 11
    assert await rows(client, OutboxMessage) == 11  # ten answers and one apology


async def test_a_slow_handler_costs_its_group_a_bounded_wait(make_settings: Any, serve: Serve) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def slow(ctx: Context) -> None:
        started.append(ctx.update.user_id)
        await release.wait()  # held until the test lets it go
        ctx.say("contact")

    router = router_with(Route(text_in("客服电话"), answer_phone), Route(text_in("慢"), slow))
    client = await serve(make_settings(), router=router)
    engine: Engine = client.app[ENGINE]
    slow_update = text_update("o-slow-one", "慢", 900_000)
    quick = [text_update(f"o-quick-{index}", "客服电话", 900_001 + index) for index in range(8)]
    slow_task = asyncio.create_task(engine.process(slow_update))
    quick_tasks = [asyncio.create_task(engine.process(update, Answer())) for update in quick]
    # The others are answered although the slow handler is still waiting: it was stopped in the group
    # after SLOW_IN_GROUP_SECONDS and runs again on its own, after them (on SQLite it then holds the
    # only connection until it is done).
    quick_outcomes = await asyncio.wait_for(asyncio.gather(*quick_tasks), timeout=30)
    assert all(outcome.passive and not outcome.failed for outcome in quick_outcomes)
    assert not slow_task.done()
    await eventually(lambda: started.count("o-slow-one") == 2, "the slow update runs again on its own")
    release.set()
    slow_outcome = await asyncio.wait_for(slow_task, timeout=30)
    assert not slow_outcome.failed and len(slow_outcome.outbox_ids) == 1
    assert await rows(client, ProcessedMessage) == 9
    assert await rows(client, OutboxMessage) == 9
