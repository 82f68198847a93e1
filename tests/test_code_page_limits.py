"""The code page under a flood: requests limited in memory per page and per address, codes drawn off the loop.

A link that leads nowhere costs the address that asked a token of a small budget; once it is spent, that
address gets 429 for pages it has not opened before, and the database is not asked.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.config import Settings
from bot.dev.demo import CHILD, PARENT
from bot.dev.fakes.wechat import WeChatClientSim
from bot.showcode import page as code_page
from bot.showcode.page import TokenBuckets, open_code_page
from bot.web.appkeys import SERVICES, SESSIONS
from models import Certificate, utcnow
from tests.helpers import PATIENCE_SECONDS, Client, eventually, post
from tests.world import registry_file, verified

PAGE_BURST = 3
MISS_BURST = 4
NEVER = 0.0001  # tokens a minute: nothing refills while a test runs


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    """Small budgets that do not refill during the test."""
    return make_settings(  # type: ignore[no-any-return]
        code_page_page_burst=PAGE_BURST,
        code_page_page_per_minute=NEVER,
        code_page_miss_burst=MISS_BURST,
        code_page_miss_per_minute=NEVER,
        client_address_header="X-Real-IP",
    )


async def _page(client: Client) -> str:
    """A code page for a parent's certificate of their child; its path."""
    vaccinee = await registry_file(
        client,
        ref="T-LIMIT",
        name=CHILD.name,
        id_number=CHILD.id_number,
        birth=CHILD.birth,
        sex=CHILD.sex,
        guardians=[PARENT.id_number],
    )
    identity = await verified(client, "wechat", "o-limit", PARENT.name, PARENT.id_number, "wx-test")
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(vaccinee_id=vaccinee, holder_identity_id=identity, kind="child", claimed_via="wechat")
        session.add(certificate)
        await session.flush()
        handle = open_code_page(
            session,
            client.app[SERVICES].vault,
            certificate_id=certificate.id,
            identity_id=identity,
            now=utcnow(),
            ttl=timedelta(minutes=30),
        )
    return f"/code/{handle}"


@contextmanager
def statements(client: Client) -> Iterator[list[str]]:
    """The SQL statements the app runs inside the block."""
    engine: AsyncEngine = client.app[SESSIONS].kw["bind"]
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


def _guess() -> str:
    return f"/code/{secrets.token_urlsafe(24)}/qr"


async def test_a_burst_on_one_page_gets_429_without_touching_the_database(app_client: Client) -> None:
    page = await _page(app_client)
    first = await app_client.get(page + "/qr")
    assert first.status == 200 and "<svg" in (await first.json())["svg"]
    for _ in range(PAGE_BURST - 1):  # within the page's budget: the database's own gap answers
        again = await app_client.get(page + "/qr")
        assert again.status == 429 and "Retry-After" not in again.headers
    with statements(app_client) as seen:
        for path in (page + "/qr", page, page + "/qr"):
            refused = await app_client.get(path)
            assert refused.status == 429 and int(refused.headers["Retry-After"]) > 0
            assert refused.headers["Cache-Control"] == "no-store"
        body = await (await app_client.get(page + "/qr")).json()
    assert body["final"] is False and body["retry_in"] > 0  # the page's script waits and asks again
    assert seen == []


async def test_guessed_links_cost_the_guesser_not_the_database(app_client: Client) -> None:
    page = await _page(app_client)
    assert (await app_client.get(page, headers={"X-Real-IP": "203.0.113.7"})).status == 200
    guesser = {"X-Real-IP": "203.0.113.7"}
    for n in range(MISS_BURST):
        path = _guess() if n else "/code/short/qr"  # not even the shape of a link: no lookup, still a miss
        response = await app_client.get(path, headers=guesser)
        assert response.status == 404 and (await response.json())["final"] is True
    with statements(app_client) as seen:
        for n in range(20):  # what the client itself puts before the proxy's entry does not count
            response = await app_client.get(_guess(), headers={"X-Real-IP": f"10.0.0.{n}, 203.0.113.7"})
            assert response.status == 429 and "Retry-After" in response.headers
    assert seen == []
    # The page this address opened before still works; another address still gets real answers.
    assert (await app_client.get(page + "/qr", headers=guesser)).status == 200
    assert (await app_client.get(_guess(), headers={"X-Real-IP": "198.51.100.2"})).status == 404


async def test_webhooks_answer_while_a_code_is_being_drawn(
    app_client: Client, wechat: WeChatClientSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = await _page(app_client)
    drawing, release = threading.Event(), threading.Event()
    stuck: list[bool] = []
    draw = code_page.qr_svg

    def held(payload: str) -> str:
        drawing.set()
        if not release.wait(PATIENCE_SECONDS):  # drawn on the event loop, this would hold every request
            stuck.append(True)
        return draw(payload)

    monkeypatch.setattr(code_page, "qr_svg", held)
    image = asyncio.ensure_future(app_client.get(page + "/qr"))
    await eventually(drawing.is_set, "the code page started drawing")
    status, body = await post(app_client, wechat.sign(wechat.text("o-while-drawing", "客服电话")))
    answer = wechat.open_reply(body)
    assert status == 200 and answer is not None and "400-101-6588" in answer["Content"]
    assert not image.done()  # the drawing was still held while the webhook answered
    release.set()
    response = await image
    assert response.status == 200 and "<svg" in (await response.json())["svg"]
    assert stuck == []


def test_token_buckets_refill_and_forget_the_oldest() -> None:
    now = [0.0]
    buckets = TokenBuckets(2, 6.0, max_keys=2, clock=lambda: now[0])  # one token every 10 s
    assert [buckets.take("a"), buckets.take("a")] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(10.0)
    now[0] = 5.0
    assert buckets.take("a") == pytest.approx(5.0)
    now[0] = 10.0
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    buckets.give_back("a")
    assert buckets.take("a") == 0.0
    buckets.take("b")
    buckets.take("c")  # "a" is the least recently used of three: forgotten, full again
    assert [buckets.take("a"), buckets.take("a")] == [0.0, 0.0]
