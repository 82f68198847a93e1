"""Conversation building blocks: named states, filters, routes, flows and the router that picks one.

A flow is one journey written as a readable table::

    faq = Flow(
        name="faq",
        entry_points=[Route(menu(MenuKey.FAQ), show_menu)],
        states={FaqSteps.choosing: [Route(any_text, answer)]},
        fallbacks=[Route(text_in("退出", "取消"), leave)],
        timeout=timedelta(minutes=10),
    )
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.chat.accounts import touch_account
from bot.core.update import CONVERSATIONAL_KINDS, FRESH_START_KINDS, OutMessage, Text, Update, UpdateKind

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.core.catalogue import Catalogue
    from bot.core.config import Settings
    from bot.core.pii import Vault
    from models import PlatformAccount


class State:
    """One named step of a flow; declare as a class attribute of a :class:`StatesGroup`."""

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.name = f"{owner.__name__}:{attribute}"

    def __repr__(self) -> str:
        return f"State({self.name})"


class StatesGroup:
    """Groups the states of one flow (``class ClaimSteps(StatesGroup): choosing = State()``)."""


@dataclasses.dataclass
class Snapshot:
    """A user's stored conversation state."""

    state: str | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    expires_at: datetime | None = None


class Context:
    """What a handler gets: the update, its database session, services, state and the replies it adds."""

    def __init__(
        self,
        update: Update,
        session: AsyncSession,
        account: PlatformAccount | None,
        snapshot: Snapshot,
        services: Services,
        now: datetime,
        expired_state: str | None = None,
    ) -> None:
        self.update = update
        self.session = session
        self._account = account
        self.services = services
        self.now = now
        self.state = snapshot.state
        self.data = snapshot.data
        self.expires_at = snapshot.expires_at
        self.expired_state = expired_state
        self.replies: list[OutMessage] = []
        self._timeout: timedelta | None = None

    async def account(self) -> PlatformAccount:
        """The user's platform account (loaded on first use: most messages never need it)."""
        if self._account is None:
            self._account = await touch_account(self.session, self.update, self.now)
        return self._account

    @property
    def settings(self) -> Settings:
        """This deployment's settings."""
        return self.services.settings

    def text(self, key: str, **values: Any) -> str:
        """A message from the catalogue."""
        return self.services.catalogue(key, **values)

    def say(self, key: str, **values: Any) -> None:
        """Reply with a catalogue message."""
        self.replies.append(Text(self.text(key, **values)))

    def reply(self, message: OutMessage) -> None:
        """Reply with a prepared message."""
        self.replies.append(message)

    def goto(self, state: State, **data: Any) -> None:
        """Move to ``state``, merging ``data`` into the flow's data."""
        self.state = state.name
        self.data.update(data)
        self._timeout = None

    def finish(self) -> None:
        """Leave the current flow and forget its data."""
        self.state = None
        self.data = {}
        self.expires_at = None

    def snapshot(self, default_timeout: timedelta) -> Snapshot:
        """The state to store after the handler ran."""
        if self.state is None:
            return Snapshot()
        timeout = self._timeout or default_timeout
        return Snapshot(state=self.state, data=self.data, expires_at=self.now + timeout)

    def set_timeout(self, timeout: timedelta) -> None:
        """The flow's own timeout for the state just entered."""
        self._timeout = timeout


@dataclasses.dataclass(frozen=True)
class Services:
    """Shared, read-only services handlers may use."""

    settings: Settings
    vault: Vault
    catalogue: Catalogue


Filter = Callable[[Update], bool]
Callback = Callable[[Context], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Route:
    """A filter and the handler that runs when it matches."""

    filter: Filter
    callback: Callback


def kind(*kinds: UpdateKind) -> Filter:
    """Matches updates of these kinds."""
    wanted = frozenset(kinds)
    return lambda update: update.kind in wanted


def menu(*keys: str) -> Filter:
    """Matches a tap on one of these menu keys."""
    wanted = frozenset(keys)
    return lambda update: update.kind is UpdateKind.MENU_CLICK and update.key in wanted


def normalise(text: str) -> str:
    """Lower-case, without spaces or punctuation: how free text is compared."""
    return re.sub(r"[\s，。！？!?,.、]+", "", text).lower()


_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
_LIST_NUMBER = re.compile(r"^第?(\d{1,2})[.、。)）号个位条项]?$")


def list_number(text: str) -> int | None:
    """The number picked from a numbered list: "2", "２", "2.", "第2个"…; None for anything else."""
    match = _LIST_NUMBER.match(normalise(text.translate(_FULL_WIDTH_DIGITS)))
    return int(match.group(1)) if match else None


def text_in(*words: str) -> Filter:
    """Matches a text that is exactly one of ``words`` (ignoring spaces and punctuation)."""
    wanted = frozenset(normalise(word) for word in words)
    return lambda update: update.kind is UpdateKind.TEXT and normalise(update.text) in wanted


def text_contains(*fragments: str) -> Filter:
    """Matches a text containing any of ``fragments``."""
    wanted = tuple(normalise(fragment) for fragment in fragments)

    def _filter(update: Update) -> bool:
        if update.kind is not UpdateKind.TEXT:
            return False
        text = normalise(update.text)
        return any(fragment in text for fragment in wanted)

    return _filter


def any_text(update: Update) -> bool:
    """Matches any text message."""
    return update.kind is UpdateKind.TEXT


@dataclasses.dataclass
class Flow:
    """One journey: how it starts, its steps, how to leave it, and how long a step may wait."""

    name: str
    entry_points: list[Route]
    states: dict[State, list[Route]] = dataclasses.field(default_factory=dict)
    fallbacks: list[Route] = dataclasses.field(default_factory=list)
    timeout: timedelta = timedelta(minutes=30)

    def owns(self, state: str | None) -> bool:
        """True when ``state`` is one of this flow's steps."""
        return state is not None and any(step.name == state for step in self.states)

    def routes_for(self, state: str) -> list[Route]:
        """The handlers waiting in ``state``."""
        for step, routes in self.states.items():
            if step.name == state:
                return routes
        return []


class Router:
    """Holds every flow and loose route, and decides which handler an update goes to.

    Order: the current flow's fallbacks, then (for things a person typed) the current step's handlers,
    then entry points in registration order (a tap or an event that starts something leaves the
    current flow), then the default.
    """

    def __init__(self, default: Callback) -> None:
        self._flows: list[Flow] = []
        self._routes: list[tuple[Flow | None, Route]] = []
        self._default = default

    def include(self, flow: Flow) -> None:
        """Register a flow and its entry points."""
        self._flows.append(flow)
        self._routes.extend((flow, route) for route in flow.entry_points)

    def add(self, routes: Iterable[Route]) -> None:
        """Register loose routes (one-shot answers that keep no state)."""
        self._routes.extend((None, route) for route in routes)

    def flow_of(self, state: str | None) -> Flow | None:
        """The flow a stored state belongs to."""
        return next((flow for flow in self._flows if flow.owns(state)), None)

    async def dispatch(self, ctx: Context) -> None:
        """Run the one handler this update belongs to."""
        update = ctx.update
        current = self.flow_of(ctx.state)
        if current is not None and ctx.state is not None:
            for route in current.fallbacks:
                if route.filter(update):
                    await route.callback(ctx)
                    return
            if update.kind in {UpdateKind.TEXT, UpdateKind.IMAGE}:
                for route in current.routes_for(ctx.state):
                    if route.filter(update):
                        await self._run(ctx, route, current)
                        return
        for flow, route in self._routes:
            if route.filter(update):
                if update.kind in FRESH_START_KINDS and flow is not current:
                    # A tap, scan or follow starts afresh: the old step would only confuse.
                    ctx.finish()
                await self._run(ctx, route, flow)
                return
        if update.kind in CONVERSATIONAL_KINDS:
            if ctx.expired_state is not None and ctx.state is None and update.kind is UpdateKind.TEXT:
                ctx.say("session_expired")
                return
            await self._default(ctx)

    async def _run(self, ctx: Context, route: Route, flow: Flow | None) -> None:
        await route.callback(ctx)
        if flow is not None and ctx.state is not None and flow.owns(ctx.state):
            ctx.set_timeout(flow.timeout)
