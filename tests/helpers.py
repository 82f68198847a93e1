"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.chat.conversation import Route, Router
from bot.dev.fakes.wechat import SignedRequest
from bot.web.appkeys import SESSIONS, WORKER
from handlers import fallback
from models import OutboxMessage

Client = TestClient[web.Request, web.Application]

# How long a test waits for something that should happen at once: generous, so that a loaded machine
# is never mistaken for a bug; a test that reaches it has failed anyway.
PATIENCE_SECONDS = 30.0
# A stall no test waits out: only a client's own timeout (or the test releasing it) ends the call.
STALL_SECONDS = 120.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (for a child process that must be told its port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    what: str,
    *,
    within: float = PATIENCE_SECONDS,
    every: float = 0.02,
    debug: Callable[[], str] | None = None,
) -> None:
    """Poll ``check`` every ``every`` seconds until it holds; fail saying ``what`` did not happen in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        if loop.time() > deadline:
            pytest.fail(f"not within {within} s: {what}\n{debug() if debug else ''}")
        await asyncio.sleep(every)


def router_with(*routes: Route) -> Router:
    """A conversation router that knows only ``routes`` (and the journeys' fallback): handlers a test controls."""
    router = Router(default=fallback)
    router.add(routes)
    return router


class Gate:
    """A middleware for a fake server: counts the requests to each path, and holds chosen paths until released.

    A held call is the clock-free form of a slow platform: it lasts exactly until the test lets it go.
    """

    def __init__(self) -> None:
        self.arrivals: list[str] = []
        self._held: dict[str, asyncio.Event] = {}
        self._left: dict[str, int] = {}  # how many more requests a limited hold takes

    def install(self, app: web.Application) -> web.Application:
        """Put the gate in front of ``app``'s handlers (before the app is served)."""
        app.middlewares.append(self._middleware)
        return app

    def hold(self, path: str, *, only: int | None = None) -> None:
        """Requests to ``path`` wait (after being counted) until :meth:`release`; just the next ``only`` if given."""
        self._held.setdefault(path, asyncio.Event())
        if only is not None:
            self._left[path] = only

    def release(self, path: str) -> None:
        """Let held requests to ``path`` (and later ones) through."""
        self._left.pop(path, None)
        held = self._held.pop(path, None)
        if held is not None:
            held.set()

    def release_all(self) -> None:
        """Let everything through (before the server closes)."""
        for path in list(self._held):
            self.release(path)

    def arrived(self, path: str) -> int:
        """How many requests to ``path`` have reached the server so far."""
        return self.arrivals.count(path)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.arrivals.append(request.path)
        held = self._held.get(request.path)
        left = self._left.get(request.path)
        if held is not None and left != 0:
            if left is not None:
                self._left[request.path] = left - 1
            await held.wait()
        return await handler(request)


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
