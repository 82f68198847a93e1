"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.dev.fakes.wechat import SignedRequest
from bot.web.appkeys import SESSIONS, WORKER
from models import OutboxMessage

Client = TestClient[web.Request, web.Application]


async def post(client: Client, request: SignedRequest, path: str = "/wechat") -> tuple[int, str]:
    """POST a signed request as WeChat would; returns (status, body)."""
    response = await client.post(path, params=request.query, data=request.body, headers={"Content-Type": "text/xml"})
    return response.status, await response.text()


async def drain_outbox(client: Client, rounds: int = 5) -> int:
    """Run the outbox worker until it finds nothing due; returns rows handled."""
    total = 0
    for _ in range(rounds):
        handled = await client.app[WORKER].run_once()
        total += handled
        if handled == 0:
            break
    return total


async def outbox_rows(client: Client, **where: Any) -> list[OutboxMessage]:
    """Outbox rows, filtered by column values."""
    async with client.app[SESSIONS]() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        for column, value in where.items():
            query = query.where(getattr(OutboxMessage, column) == value)
        return list((await session.scalars(query)).all())


async def count(client: Client, model: Any) -> int:
    """Rows in a table."""
    async with client.app[SESSIONS]() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def post_alipay(client: Client, body: bytes, path: str = "/alipay") -> tuple[int, bytes, str]:
    """POST a form as Alipay's gateway would; returns (status, raw body, Content-Type)."""
    response = await client.post(path, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    return response.status, await response.read(), response.headers.get("Content-Type", "")
