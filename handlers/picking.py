"""Choosing one certificate to act on: used by the journeys that read a certificate (records, show code).

A person who may see one certificate goes straight to it; with several, they get a numbered list and
the chosen one is checked again when they answer (a grant may have been revoked meanwhile). A choice
refused then is audited with its reason (:func:`record_refusal`, which the grant journey uses too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from bot.certificates.rules import Visible, actor, bound_identity, visible_certificates
from bot.chat.conversation import Context, Flow, Route, Router, State, any_text, list_number, menu, text_in
from bot.chat.menu import LABELS
from bot.core.audit import record_about_certificate
from bot.core.update import Text
from handlers.common import is_choice
from models import CertificateKind, Identity

Act = Callable[[Context, Identity, Visible], Awaitable[None]]
NoneVisible = Callable[[Context, Identity], Awaitable[None]]
CHOOSING_TIMEOUT = timedelta(minutes=10)
PICK_REFUSED = "pick_refused"  # the audit action of a refused choice; the reason says why


async def record_refusal(
    ctx: Context, identity: Identity | None, action: str, reason: str, certificate_id: Any, **detail: Any
) -> None:
    """Audit a refusal about a certificate in the chat: who (the person, else the account), why, and which."""
    if identity is not None:
        kind, ref = "identity", actor(identity)
    else:
        account = await ctx.account()
        kind, ref = "account", f"{account.platform}:{ctx.services.vault.pseudonym(account.user_id)}"
    await record_about_certificate(
        ctx.session,
        certificate_id if isinstance(certificate_id, int) else None,
        actor_kind=kind,
        actor_ref=ref,
        action=action,
        reason=reason,
        platform=ctx.update.platform.value,
        detail=detail,
    )


def role_key(visible: Visible) -> str:
    """The catalogue key of how the person relates to a certificate: 本人, 子女 or 已授权."""
    if visible.role == "grantee":
        return "records_role_granted"
    return "records_role_self" if visible.certificate.kind == CertificateKind.ADULT else "records_role_child"


@dataclasses.dataclass(frozen=True)
class Picker:
    """One journey's way of choosing: its state, what it does with the choice, and its texts."""

    state: State
    act: Act
    need_verify: str  # catalogue keys
    none: str
    head: str
    invalid: str = "records_pick_invalid"
    on_none: NoneVisible | None = None  # instead of saying ``none`` (show code: a code to be filed)

    async def start(self, ctx: Context, *, choose_one: bool = True) -> None:
        """Act on the one certificate this person may see (unless ``choose_one`` is off), or list them."""
        ctx.finish()
        identity = await bound_identity(ctx.session, await ctx.account())
        if identity is None:
            ctx.say(self.need_verify)
            return
        visible = await visible_certificates(ctx.session, ctx.services.vault, identity)
        if not visible:
            if self.on_none is not None:
                await self.on_none(ctx, identity)
            else:
                ctx.say(self.none)
            return
        if len(visible) == 1 and choose_one:
            await self.act(ctx, identity, visible[0])
            return
        lines = [ctx.text(self.head)]
        lines += [
            ctx.text("records_pick_item", number=number, name=item.file.masked_name, role=ctx.text(role_key(item)))
            for number, item in enumerate(visible, 1)
        ]
        ctx.reply(Text("\n".join(lines)))
        ctx.goto(self.state, choices=[item.certificate.id for item in visible])

    async def choose(self, ctx: Context) -> None:
        """A number from the list: act on that certificate if it is still visible."""
        number = list_number(ctx.update.text)
        choices = list(ctx.data.get("choices", []))
        if number is None or not 1 <= number <= len(choices):
            await self.not_a_choice(ctx)
            return
        ctx.finish()
        chosen = choices[number - 1]
        identity = await bound_identity(ctx.session, await ctx.account())
        if identity is None:
            await record_refusal(ctx, None, PICK_REFUSED, "not_verified", chosen, journey=self.state.name)
            ctx.say(self.need_verify)
            return
        for item in await visible_certificates(ctx.session, ctx.services.vault, identity):
            if item.certificate.id == chosen:
                await self.act(ctx, identity, item)
                return
        # No longer visible (a grant was revoked meanwhile): say so, and list what is left without acting
        # on it, so nobody gets another child's code or records than the one they chose.
        await record_refusal(ctx, identity, PICK_REFUSED, "not_visible", chosen, journey=self.state.name)
        ctx.say("pick_gone")
        await self.start(ctx, choose_one=False)

    async def not_a_choice(self, ctx: Context) -> None:
        """Anything else while the list is open: say how to answer, and keep the list open."""
        ctx.say(self.invalid)
        ctx.goto(self.state)

    def flow(self, name: str, menu_key: str, words: Sequence[str]) -> Flow:
        """The journey's flow: its menu item or words start it (and start it again from the list); a number chooses."""
        starts = menu(menu_key) | text_in(*words)
        return Flow(
            name=name,
            title=LABELS[menu_key],
            entry_points=[Route(starts, self.start)],
            states={
                self.state: [
                    Route(is_choice, self.choose),
                    Route(starts, self.start),
                    Route(any_text, self.not_a_choice),
                ]
            },
            timeout=CHOOSING_TIMEOUT,
        )

    def router(self, name: str, menu_key: str, words: Sequence[str]) -> Router:
        """A router holding the journey's flow."""
        router = Router(name)
        router.include(self.flow(name, menu_key, words))
        return router
