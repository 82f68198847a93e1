"""Conversation building blocks: named states, filters, routes, flows and the router that picks one.

A flow is one journey written as a readable table::

    faq = Flow(
        name="faq",
        title="常见问题",
        entry_points=[Route(menu(MenuKey.FAQ) | text_in("问题"), show_menu)],
        states={FaqSteps.choosing: [Route(any_text, answer)]},
        fallbacks=[Route(text_in("上一步"), back)],
        timeout=timedelta(minutes=10),
    )

Feature routers hold their flows and loose routes; the root router includes them and knows the global
commands (the menu's words, leaving, help), which leave any flow whose current step does not ask for them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.chat.accounts import touch_account
from bot.chat.menu import LABELS
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
        self.left: str | None = None  # the flow a global command or a new start just left
        self._notes: list[str] = []
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

    def note(self, text: str) -> None:
        """A line put before the first reply (what was just left, say)."""
        self._notes.append(text)

    def flush_notes(self) -> None:
        """Put the notes in front of the replies: in the first text when it is one, so one message reads them."""
        if not self._notes:
            return
        note = "\n".join(self._notes)
        self._notes = []
        first = self.replies[0] if self.replies else None
        if isinstance(first, Text):
            self.replies[0] = Text(f"{note}\n{first.content}")
        else:
            self.replies.insert(0, Text(note))

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
        """Set by the router after a handler ran: the owning flow's timeout for the step the user is left in."""
        self._timeout = timeout


@dataclasses.dataclass(frozen=True)
class Services:
    """Shared, read-only services handlers may use."""

    settings: Settings
    vault: Vault
    catalogue: Catalogue


Predicate = Callable[[Update], bool]
Callback = Callable[[Context], Awaitable[None]]


class Filter:
    """A test on an update; filters combine with ``&``, ``|`` and ``~``.

    ``words`` are the normalised texts a filter names outright (``text_in``, a menu item's label): a step
    whose filter names a word asks for it, so that word is the step's and not a global command.
    """

    def __init__(self, predicate: Predicate, words: Iterable[str] = ()) -> None:
        self._predicate = predicate
        self.words = frozenset(words)

    def __call__(self, update: Update) -> bool:
        return self._predicate(update)

    def names(self, update: Update) -> bool:
        """True when this filter matches ``update`` by naming its text outright."""
        return update.kind is UpdateKind.TEXT and normalise(update.text) in self.words and self(update)

    def __and__(self, other: Filter | Predicate) -> Filter:
        right = as_filter(other)
        return Filter(lambda update: self(update) and right(update), self.words | right.words)

    def __rand__(self, other: Predicate) -> Filter:
        return as_filter(other) & self

    def __or__(self, other: Filter | Predicate) -> Filter:
        right = as_filter(other)
        return Filter(lambda update: self(update) or right(update), self.words | right.words)

    def __ror__(self, other: Predicate) -> Filter:
        return as_filter(other) | self

    def __invert__(self) -> Filter:
        return Filter(lambda update: not self(update))


def as_filter(value: Filter | Predicate) -> Filter:
    """``value`` itself when it is a :class:`Filter`, else the predicate wrapped in one."""
    return value if isinstance(value, Filter) else Filter(value)


class Route:
    """A filter and the handler that runs when it matches."""

    def __init__(self, filter: Filter | Predicate, callback: Callback) -> None:
        self.filter = as_filter(filter)
        self.callback = callback


def normalise(text: str) -> str:
    """Lower-case, without spaces or punctuation, digits half-width: how free text is compared."""
    return _SPACES_AND_PUNCTUATION.sub("", half_width(text)).lower()


_SPACES_AND_PUNCTUATION = re.compile(r"[\s，。！？!?,.、]+")
# Full-width ASCII (U+FF01–FF5E) and the ideographic space, as Chinese keyboards type them.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_LIST_NUMBER = re.compile(r"^第?(\d{1,2})[.、。)）号个位条项]?$")


def half_width(text: str) -> str:
    """Full-width digits, letters, signs and spaces as their half-width forms (Chinese keyboards type both)."""
    # Chinese characters sort below the full-width forms: most texts need no translation at all.
    return text.translate(_FULL_WIDTH) if "\u3000" in text or (text and max(text) >= "\uff01") else text


def list_number(text: str) -> int | None:
    """The number picked from a numbered list: "2", "２", "2.", "第2个"…; None for anything else."""
    match = _LIST_NUMBER.match(normalise(text))
    return int(match.group(1)) if match else None


def kind(*kinds: UpdateKind) -> Filter:
    """Matches updates of these kinds."""
    wanted = frozenset(kinds)
    return Filter(lambda update: update.kind in wanted)


def menu(*keys: str) -> Filter:
    """Matches a tap on one of these menu items, or its label typed as text (「证照授权」)."""
    wanted = frozenset(keys)
    labels = frozenset(normalise(LABELS[key]) for key in keys if key in LABELS)

    def _filter(update: Update) -> bool:
        if update.kind is UpdateKind.MENU_CLICK:
            return update.key in wanted
        return update.kind is UpdateKind.TEXT and normalise(update.text) in labels

    return Filter(_filter, labels)


def text_in(*words: str) -> Filter:
    """Matches a text that is exactly one of ``words`` (ignoring spaces and punctuation)."""
    wanted = frozenset(normalise(word) for word in words)
    return Filter(lambda update: update.kind is UpdateKind.TEXT and normalise(update.text) in wanted, wanted)


any_text = Filter(lambda update: update.kind is UpdateKind.TEXT)
"""Matches any text message."""


@dataclasses.dataclass
class Flow:
    """One journey: how it starts, its steps, how to leave it, and how long a step may wait.

    ``title`` is what people call the journey (「证照授权」), for the note that says it was left;
    ``unsaved`` are the steps holding typed data that leaving discards; ``on_timeout`` answers someone
    who writes after a step expired (the router's default says the session expired).
    """

    name: str
    entry_points: list[Route]
    states: dict[State, list[Route]] = dataclasses.field(default_factory=dict)
    fallbacks: list[Route] = dataclasses.field(default_factory=list)
    timeout: timedelta = timedelta(minutes=30)
    title: str = ""
    unsaved: frozenset[State] = frozenset()
    on_timeout: Callback | None = None

    def owns(self, state: str | None) -> bool:
        """True when ``state`` is one of this flow's steps."""
        return state is not None and any(step.name == state for step in self.states)

    def routes_for(self, state: str) -> list[Route]:
        """The handlers waiting in ``state``."""
        for step, routes in self.states.items():
            if step.name == state:
                return routes
        return []

    def holds_unsaved(self, state: str | None) -> bool:
        """True when leaving ``state`` discards something the person typed."""
        return any(step.name == state for step in self.unsaved)


class Router:
    """Flows and loose routes of one feature, and the routers it includes (aiogram's ``include_router``).

    The root router (the one given a ``default``) decides where an update goes:

    1. Inside a live step, a fallback or step route whose filter *names* the text (the step asks for it).
    2. A global command (``commands``: the menu's words, leaving, help) leaves the flow, with a note of
       what was left, and goes where it would go outside any flow.
    3. The flow's other fallbacks, then (for what a person typed or sent) the step's other routes.
    4. Entry points and loose routes, this router's first, then each included router's in order; a tap,
       scan or follow that starts another flow leaves the current one.
    5. After an expired step, the flow's timeout handler (or the default "session expired"); else the
       default.

    Every route of a flow, fallbacks included, keeps the flow's own timeout.
    """

    def __init__(self, name: str = "", *, default: Callback | None = None, commands: Filter | None = None) -> None:
        self.name = name
        self._flows: list[Flow] = []
        self._routes: list[tuple[Flow | None, Route]] = []
        self._children: list[Router] = []
        self._parents: list[Router] = []
        # Flattened flows, routes and the flow of each state, rebuilt after any change here or below.
        self._compiled: tuple[tuple[Flow, ...], tuple[tuple[Flow | None, Route], ...], dict[str, Flow]] | None = None
        self._default = default
        self._commands = commands or Filter(lambda update: False)

    def include(self, flow: Flow) -> None:
        """Register a flow and its entry points."""
        self._flows.append(flow)
        self._routes.extend((flow, route) for route in flow.entry_points)
        self._changed()

    def add(self, routes: Iterable[Route]) -> None:
        """Register loose routes (one-shot answers that keep no state)."""
        self._routes.extend((None, route) for route in routes)
        self._changed()

    def include_router(self, router: Router) -> None:
        """Add a feature's router; its routes come after this router's own and earlier included ones."""
        if router is self or router in self._children:
            raise ValueError(f"router {router.name!r} is already included")
        self._children.append(router)
        router._parents.append(self)
        self._changed()

    def _changed(self) -> None:
        self._compiled = None
        for parent in self._parents:
            parent._changed()

    def _compile(self) -> tuple[tuple[Flow, ...], tuple[tuple[Flow | None, Route], ...], dict[str, Flow]]:
        if self._compiled is None:
            flows = (*self._flows, *(flow for child in self._children for flow in child.flows()))
            routes = (*self._routes, *(route for child in self._children for route in child.routes()))
            states: dict[str, Flow] = {}
            for flow in flows:
                for step in flow.states:
                    states.setdefault(step.name, flow)
            self._compiled = (flows, routes, states)
        return self._compiled

    def flows(self) -> tuple[Flow, ...]:
        """Every flow, this router's and its included routers'."""
        return self._compile()[0]

    def routes(self) -> tuple[tuple[Flow | None, Route], ...]:
        """Every entry point and loose route, in the order they are tried."""
        return self._compile()[1]

    def flow_of(self, state: str | None) -> Flow | None:
        """The flow a stored state belongs to."""
        return self._compile()[2].get(state) if state is not None else None

    def is_command(self, update: Update) -> bool:
        """True when ``update`` is a global command (it leaves any flow that does not ask for it)."""
        return update.kind is UpdateKind.TEXT and self._commands(update)

    async def dispatch(self, ctx: Context) -> None:
        """Run the one handler this update belongs to."""
        await self._dispatch(ctx)
        # Whatever ran (a step, a fallback, a loose route answering mid-flow), the step it leaves waits
        # as long as its flow says.
        owner = self.flow_of(ctx.state)
        if owner is not None:
            ctx.set_timeout(owner.timeout)
        ctx.flush_notes()

    async def _dispatch(self, ctx: Context) -> None:
        update = ctx.update
        current = self.flow_of(ctx.state)
        command = self.is_command(update)
        if current is not None and ctx.state is not None:
            typed = update.kind in {UpdateKind.TEXT, UpdateKind.IMAGE}
            own = [*current.fallbacks, *(current.routes_for(ctx.state) if typed else [])]
            asked = next((route for route in own if route.filter.names(update)), None)
            if asked is not None:
                await asked.callback(ctx)
                return
            if not command:
                route = next((route for route in own if route.filter(update)), None)
                if route is not None:
                    await route.callback(ctx)
                    return
        for flow, route in self.routes():
            if route.filter(update):
                starts_afresh = update.kind in FRESH_START_KINDS or command
                if current is not None and starts_afresh and (flow is not current or current.holds_unsaved(ctx.state)):
                    # Something new starts: the old step would only confuse, so it is left, and said so.
                    self._leave(ctx, current, restart=flow is current)
                await route.callback(ctx)
                return
        if current is not None and command:
            self._leave(ctx, current)
        if update.kind in CONVERSATIONAL_KINDS:
            expired = self.flow_of(ctx.expired_state)
            if ctx.expired_state is not None and ctx.state is None and update.kind is UpdateKind.TEXT:
                if expired is not None and expired.on_timeout is not None:
                    await expired.on_timeout(ctx)
                else:
                    ctx.say("session_expired")
                return
            if self._default is not None:
                await self._default(ctx)

    @staticmethod
    def _leave(ctx: Context, flow: Flow, *, restart: bool = False) -> None:
        """Leave ``flow``, noting it for the reply (nothing to note when it had no step in progress)."""
        if ctx.state is None:
            return
        if flow.title:
            unsaved = flow.holds_unsaved(ctx.state)
            key = ("restart_flow_unsaved" if restart else "left_flow_unsaved") if unsaved else "left_flow"
            ctx.note(ctx.text(key, flow=flow.title))
        ctx.left = flow.name
        ctx.finish()
