"""Real-name verification attempts: the single-use link, the provider round trip, and the binding.

The chat only creates an attempt (no network inside a handler). The user's browser then opens
``/verify/{handle}``: we register the attempt with the provider and send the browser there. The
provider sends it back to ``/verify/{handle}/done``: we ask the provider server-side how it ended — the
browser's word counts for nothing — and only a confirmed face matching the name and ID number the user
gave binds the chat account to that identity; the result is told in the chat, with the children's
certificates family members already authorised the person to see. Each step moves the attempt's status
with a conditional UPDATE, so a replayed, forged or concurrent request finds nothing to move and changes nothing.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.certificates.rules import visible_certificates
from bot.chat.conversation import Services
from bot.core.config import Settings
from bot.core.pages import simple_page
from bot.core.pii import Vault, mask_id_number, mask_name
from bot.core.update import Text
from bot.identity.accounts import bind_verified, notify, tell_earlier_accounts
from bot.identity.face.base import FaceError, FaceProvider, Outcome, StartRequest, Subject
from models import PlatformAccount, Verification, utcnow

log = logging.getLogger("vaxbot.verification")

VERIFY_PATH = "/verify/{handle}"
DONE_PATH = "/verify/{handle}/done"
# The page's URL carries the handle: never let it travel in a Referer, never let a cache keep it.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def handle_digest(vault: Vault, handle: str) -> str:
    """The stored form of a link's handle (a keyed hash: the database never holds a usable link)."""
    return vault.digest("verify_handle", handle)


def verify_url(settings: Settings, handle: str) -> str:
    """The link sent in the chat."""
    return settings.public_url.rstrip("/") + VERIFY_PATH.format(handle=handle)


def done_url(settings: Settings, handle: str) -> str:
    """Where the provider sends the browser back to."""
    return settings.public_url.rstrip("/") + DONE_PATH.format(handle=handle)


def create_attempt(
    session: AsyncSession,
    vault: Vault,
    account: PlatformAccount,
    subject: Subject,
    provider: str,
    now: datetime,
    ttl: timedelta,
) -> str:
    """Record a new attempt for ``account``; returns the link's handle (shown once, stored hashed)."""
    handle = secrets.token_urlsafe(24)
    session.add(
        Verification(
            handle_hash=handle_digest(vault, handle),
            account_id=account.id,
            provider=provider,
            id_number_hash=vault.digest("id_number", subject.id_number),
            id_number_enc=vault.seal("id_number", subject.id_number),
            name_enc=vault.seal("name", subject.name),
            status="pending",
            reason="",
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return handle


def _reference(attempt: Verification) -> str:
    # Unique per attempt, [A-Za-z0-9], ≤ 32: the providers' order numbers. The attempt id is not personal.
    return f"vx{attempt.id:010d}"


class VerificationRoutes:
    """The two browser-facing endpoints of an attempt."""

    def __init__(
        self,
        services: Services,
        sessions: async_sessionmaker[AsyncSession],
        providers: Mapping[str, FaceProvider],
    ) -> None:
        self._services = services
        self._sessionmaker = sessions
        self._providers = dict(providers)

    def _sessions(self) -> AsyncSession:
        return self._sessionmaker()

    @staticmethod
    def setup(app: web.Application, key: web.AppKey[VerificationRoutes]) -> None:
        """Mount the endpoints, served by the routes object the app holds under ``key`` once it starts."""

        async def start(request: web.Request) -> web.StreamResponse:
            return await request.app[key].start(request)

        async def done(request: web.Request) -> web.Response:
            return await request.app[key].done(request)

        app.router.add_get(VERIFY_PATH, start)
        app.router.add_get(DONE_PATH, done)

    # --- pages ---

    def _page(self, key: str, status: int = 200, **values: str) -> web.Response:
        catalogue = self._services.catalogue
        return simple_page(catalogue("page_verify_title"), catalogue(key, **values), status, _PRIVATE)

    # --- the attempt ---

    async def _load(self, session: AsyncSession, handle: str) -> Verification | None:
        digest = handle_digest(self._services.vault, handle)
        return (await session.scalars(select(Verification).where(Verification.handle_hash == digest))).first()

    async def _move(self, attempt_id: int, before: str, after: str, **values: object) -> bool:
        """Move the attempt from ``before`` to ``after``; False when someone else moved it first."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(Verification)
                .where(Verification.id == attempt_id, Verification.status == before)
                .values(status=after, **values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def _request(self, attempt: Verification, account: PlatformAccount, handle: str) -> StartRequest:
        vault = self._services.vault
        subject = Subject(vault.open("name", attempt.name_enc), vault.open("id_number", attempt.id_number_enc))
        return StartRequest(
            reference=_reference(attempt),
            subject=subject,
            return_url=done_url(self._services.settings, handle),
            user_id=account.user_id,
        )

    async def start(self, request: web.Request) -> web.StreamResponse:
        """The link from the chat: register the attempt with the provider and send the browser there."""
        handle = request.match_info["handle"]
        now = utcnow()
        async with self._sessions() as session:
            attempt = await self._load(session, handle)
            account = await session.get(PlatformAccount, attempt.account_id) if attempt is not None else None
        if attempt is None or account is None:
            return self._page("page_verify_invalid", status=404)
        if attempt.status != "pending":
            return self._page("page_verify_used", status=410)
        if attempt.expires_at <= now:
            await self._move(attempt.id, "pending", "expired", completed_at=now)
            return self._page("page_verify_expired", status=410)
        provider = self._providers.get(attempt.provider)
        if provider is None or not await self._move(attempt.id, "pending", "starting"):
            return self._page("page_verify_used", status=410)
        try:
            started = await provider.start(self._request(attempt, account, handle))
        except FaceError as exc:
            log.warning("face provider could not start", extra={"provider": attempt.provider, "code": exc.code})
            await self._move(attempt.id, "starting", "pending")
            return self._page("page_verify_unavailable", status=503)
        await self._move(attempt.id, "starting", "started", provider_ref=started.provider_ref)
        if not started.url.startswith(("https://", "http://")):
            return self._page("page_verify_app")  # a mini-program page: the mini program opens it
        raise web.HTTPFound(started.url, headers=_PRIVATE)

    async def done(self, request: web.Request) -> web.Response:
        """Back from the provider: ask it how the attempt ended, and bind the account only on a match."""
        handle = request.match_info["handle"]
        now = utcnow()
        async with self._sessions() as session:
            attempt = await self._load(session, handle)
            account = await session.get(PlatformAccount, attempt.account_id) if attempt is not None else None
        if attempt is None or account is None:
            return self._page("page_verify_invalid", status=404)
        if attempt.status in ("passed", "failed", "mismatch", "expired"):
            return self._page("page_verify_used", status=410)
        if attempt.status != "started" or attempt.provider_ref is None:
            return self._page("page_verify_invalid", status=409)  # never started: a forged return
        provider = self._providers.get(attempt.provider)
        if provider is None or not await self._move(attempt.id, "started", "checking"):
            return self._page("page_verify_pending", status=409)
        try:
            outcome = await provider.query(attempt.provider_ref, self._request(attempt, account, handle))
        except FaceError as exc:
            log.warning("face provider could not be queried", extra={"provider": attempt.provider, "code": exc.code})
            if exc.retryable:
                await self._move(attempt.id, "checking", "started")
                return self._page("page_verify_pending", status=503)
            outcome = Outcome(passed=False, reason=exc.code)
        return await self._finish(attempt, account, outcome, now)

    async def _finish(
        self, attempt: Verification, account: PlatformAccount, outcome: Outcome, now: datetime
    ) -> web.Response:
        vault = self._services.vault
        name = vault.open("name", attempt.name_enc)
        id_number = vault.open("id_number", attempt.id_number_enc)
        status, reason = "passed", ""
        if not outcome.passed:
            status, reason = "failed", outcome.reason or "not_passed"
        elif (outcome.id_number and outcome.id_number.upper() != id_number) or (outcome.name and outcome.name != name):
            status, reason = "mismatch", "provider_reported_another_person"
        catalogue = self._services.catalogue
        async with self._sessions() as session, session.begin():
            moved = await session.execute(
                update(Verification)
                .where(Verification.id == attempt.id, Verification.status == "checking")
                .values(status=status, reason=reason[:64], completed_at=now)
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                return self._page("page_verify_used", status=410)
            fresh = await session.get(PlatformAccount, account.id)
            assert fresh is not None
            if status == "passed":
                before = fresh.identity_id
                identity = await bind_verified(
                    session, vault, fresh, id_number=id_number, name=name, method=f"face:{attempt.provider}", now=now
                )
                if before != identity.id:  # a new binding: the person's other accounts hear of it at once
                    await tell_earlier_accounts(session, catalogue, fresh, identity, key=f"bound:{attempt.id}", now=now)
                masked = {"name": mask_name(name), "id": mask_id_number(id_number)}
                # Someone authorised before she verified learns here what she can see now.
                granted = [
                    item.file.masked_name
                    for item in await visible_certificates(session, vault, identity)
                    if item.role == "grantee"
                ]
                if granted:
                    text = catalogue("verify_passed_granted", children="、".join(dict.fromkeys(granted)), **masked)
                else:
                    text = catalogue("verify_passed", **masked)
            else:
                text = catalogue("verify_failed" if status == "failed" else "verify_mismatch")
            # The answer to her own attempt: told on the account that asked, not on her other platforms.
            await notify(session, Text(text), f"verify:{attempt.id}", accounts=[fresh])
        log.info("verification finished", extra={"provider": attempt.provider, "status": status})
        return self._page(f"page_verify_{status}")
