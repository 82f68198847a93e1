"""Real-name verification attempts: the single-use link, the account check, the provider round trip, the binding.

The chat only creates an attempt (no network inside a handler). The user's browser then opens
``/verify/{handle}``. Before any face provider is reached, the browser proves which chat account holds it:
we send it through the platform's silent web authorisation (WeChat ``snsapi_base``, Alipay ``auth_base``)
with a ``state`` bound to the attempt and to this browser (a cookie), and the platform sends it back to
``/verify/{handle}/authorised`` with a one-time code that we exchange, server to server, for the openid
or user id. Anyone but the account that asked is refused, and the attempt ends: a forwarded link proves
nobody else's face onto the asker's account. Only then do we register the attempt with the provider and
send the browser there; the provider's page is tied to that browser by a second cookie, so the result is
collected only by the browser that was checked. (The mini-program face, which WeChat itself binds to the
user's openid, starts at once.) The provider sends the browser back to ``/verify/{handle}/done``: we ask the
provider server-side how it ended — the browser's word counts for nothing — and only a confirmed face
matching the name and ID number the user gave binds the chat account to that identity; the result is told
in the chat, with the children's certificates family members already authorised the person to see. Each
step moves the attempt's status with a conditional UPDATE, so a replayed, forged or concurrent request finds
nothing to move and changes nothing. Every refusal leaves an audit row.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.certificates.rules import visible_certificates
from bot.chat.conversation import Services
from bot.core.audit import record_access
from bot.core.config import Settings
from bot.core.pages import simple_page
from bot.core.pii import Vault, mask_id_number, mask_name
from bot.core.update import Text
from bot.identity.accounts import UNWRITABLE_PLATFORMS, bind_verified, notify, record_union, tell_earlier_accounts
from bot.identity.face.base import FaceError, FaceProvider, Outcome, Started, StartRequest, Subject
from bot.platforms.alipay.client import AlipayAPI, AlipayAPIError
from bot.platforms.wechat.client import WeChatAPI, WeChatAPIError
from models import PlatformAccount, Verification, VerificationStatus, utcnow

log = logging.getLogger("vaxbot.verification")

VERIFY_PATH = "/verify/{handle}"
DONE_PATH = "/verify/{handle}/done"
AUTHORISED_PATH = "/verify/{handle}/authorised"
# Providers that know the user already: WeChat runs the mini program's face for the openid we name.
KNOWS_ITS_USER = frozenset({"wechat_mini", "wxmini", "alipaymini"})
# Alipay's query answers passed "F" both before and after a failed face: in the app, a failure is final only
# once the page says the certify flow ended (its word can end an attempt as failed, never pass one).
NOT_PASSED_YET = "alipay_not_passed"
FINAL_STATUSES = frozenset(
    {VerificationStatus.PASSED, VerificationStatus.FAILED, VerificationStatus.MISMATCH, VerificationStatus.EXPIRED}
)
# The browser that opened the link holds these (scoped to the link's path): the first ties the
# authorisation's state to it, the second ties the provider's return to the browser that was checked.
BROWSER_COOKIE = "vx_verify"
FACE_COOKIE = "vx_face"
# While an attempt waits for the platform to send the browser back, its provider_ref holds this prefix and
# the keyed hash of the state and the browser's cookie (the provider's own reference replaces it later).
STATE_PREFIX = "oauth:"
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


def authorised_url(settings: Settings, handle: str) -> str:
    """Where the platform's web authorisation sends the browser back to (the ``redirect_uri``)."""
    return settings.public_url.rstrip("/") + AUTHORISED_PATH.format(handle=handle)


class AuthorisationError(Exception):
    """The platform would not say whose browser it is (a bad, used or expired code; unreachable)."""

    def __init__(self, code: str, *, retryable: bool) -> None:
        super().__init__(code)
        self.code = code
        self.retryable = retryable


class WebAuthorisation(Protocol):
    """One platform's silent web authorisation: which chat account the browser belongs to."""

    code_param: str  # the query parameter the platform sends the browser back with

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """The platform's page that sends the browser back to ``redirect_uri`` with a code and ``state``."""

    async def user_of(self, code: str) -> tuple[str, str]:
        """(the platform user id the code was issued for, its union id or ""); :class:`AuthorisationError`."""


# WeChat answers these for a code that is not (or no longer) good: invalid, used, or of another app.
_WECHAT_BAD_CODE = frozenset({40029, 40163, 40013, 40125})


class WeChatAuthorisation:
    """WeChat's ``snsapi_base``: ``code`` → ``sns/oauth2/access_token`` → openid."""

    code_param = "code"

    def __init__(self, api: WeChatAPI) -> None:
        self._api = api

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """WeChat's ``connect/oauth2/authorize`` page."""
        return self._api.authorize_url(redirect_uri, state)

    async def user_of(self, code: str) -> tuple[str, str]:
        """The openid, in this Official Account, of the browser's WeChat user, and their unionid if given."""
        try:
            return await self._api.oauth_user(code)
        except WeChatAPIError as exc:
            raise AuthorisationError(f"wechat_{exc.errcode}", retryable=exc.errcode not in _WECHAT_BAD_CODE) from exc


class AlipayAuthorisation:
    """Alipay's ``auth_base``: ``auth_code`` → ``alipay.system.oauth.token`` (signed) → user id."""

    code_param = "auth_code"

    def __init__(self, api: AlipayAPI) -> None:
        self._api = api

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """Alipay's ``publicAppAuthorize.htm`` page."""
        return self._api.authorize_url(redirect_uri, state)

    async def user_of(self, code: str) -> tuple[str, str]:
        """The Alipay user id of the browser's Alipay user (a 2088… id is the same in every Alipay app)."""
        try:
            user = await self._api.oauth_user_id(code)
            return user, user if user.startswith("2088") else ""
        except AlipayAPIError as exc:
            name = f"alipay_{exc.code}" + (f"_{exc.sub_code}" if exc.sub_code else "")
            raise AuthorisationError(name, retryable=exc.may_have_arrived or exc.code == "20000") from exc


def web_authorisations(wechat: WeChatAPI, alipay: AlipayAPI | None) -> dict[str, WebAuthorisation]:
    """The web authorisation of each platform that is on, keyed by platform."""
    found: dict[str, WebAuthorisation] = {"wechat": WeChatAuthorisation(wechat)}
    if alipay is not None:
        found["alipay"] = AlipayAuthorisation(alipay)
    return found


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
            status=VerificationStatus.PENDING,
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
        authorisations: Mapping[str, WebAuthorisation],
    ) -> None:
        self._services = services
        self._sessionmaker = sessions
        self._providers = dict(providers)
        self._authorisations = dict(authorisations)

    def _sessions(self) -> AsyncSession:
        return self._sessionmaker()

    @staticmethod
    def setup(app: web.Application, key: web.AppKey[VerificationRoutes]) -> None:
        """Mount the endpoints, served by the routes object the app holds under ``key`` once it starts."""

        async def start(request: web.Request) -> web.StreamResponse:
            return await request.app[key].start(request)

        async def authorised(request: web.Request) -> web.StreamResponse:
            return await request.app[key].authorised(request)

        async def done(request: web.Request) -> web.Response:
            return await request.app[key].done(request)

        app.router.add_get(VERIFY_PATH, start)
        app.router.add_get(AUTHORISED_PATH, authorised)
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

    def _cookie_path(self, handle: str) -> str:
        return VERIFY_PATH.format(handle=handle) + "/"

    def _set_cookie(self, response: web.StreamResponse, name: str, value: str, handle: str) -> None:
        settings = self._services.settings
        response.set_cookie(
            name,
            value,
            path=self._cookie_path(handle),
            max_age=settings.face_link_ttl_seconds,
            httponly=True,
            # Lax: sent on the top-level GET by which the platform (or the provider) sends the browser back.
            samesite="Lax",
            secure=settings.public_url.startswith("https://"),
        )

    def _face_token(self, attempt_id: int, provider_ref: str) -> str:
        """What the browser that was sent to the provider holds: only we can compute it, from the attempt."""
        return self._services.vault.digest("verify_face_browser", f"{attempt_id}:{provider_ref}")

    async def _refuse(self, account: PlatformAccount, attempt: Verification, reason: str, **detail: str) -> None:
        """An audit row for a refused step of an attempt (no personal data: ids, reasons, keyed hashes)."""
        async with self._sessions() as session, session.begin():
            _audit_refusal(session, account, attempt, reason, **detail)
        log.warning("verification step refused", extra={"provider": attempt.provider, "reason": reason})

    async def start(self, request: web.Request) -> web.StreamResponse:
        """The link from the chat: first learn which chat account this browser belongs to."""
        handle = request.match_info["handle"]
        now = utcnow()
        async with self._sessions() as session:
            attempt = await self._load(session, handle)
            account = await session.get(PlatformAccount, attempt.account_id) if attempt is not None else None
        if attempt is None or account is None:
            return self._page("page_verify_invalid", status=404)
        if attempt.status != VerificationStatus.PENDING:
            return self._page("page_verify_used", status=410)
        if attempt.expires_at <= now:
            await self._move(attempt.id, VerificationStatus.PENDING, VerificationStatus.EXPIRED, completed_at=now)
            return self._page("page_verify_expired", status=410)
        if attempt.provider in KNOWS_ITS_USER:
            if not await self._move(attempt.id, VerificationStatus.PENDING, VerificationStatus.STARTING):
                return self._page("page_verify_used", status=410)
            return await self._launch(attempt, account, handle)
        authorisation = self._authorisations.get(account.platform)
        if authorisation is None:
            log.error("no web authorisation for the platform", extra={"platform": account.platform})
            return self._page("page_verify_unavailable", status=503)
        # A fresh state each time the link is opened: only the latest one (in this browser) can come back.
        state, browser = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        stored = STATE_PREFIX + self._services.vault.digest("verify_state", f"{state}:{browser}")
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(Verification)
                .where(Verification.id == attempt.id, Verification.status == VerificationStatus.PENDING)
                .values(provider_ref=stored)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return self._page("page_verify_used", status=410)
        target = authorisation.authorize_url(authorised_url(self._services.settings, handle), state)
        response = web.HTTPFound(target, headers=_PRIVATE)
        self._set_cookie(response, BROWSER_COOKIE, browser, handle)
        raise response

    async def authorised(self, request: web.Request) -> web.StreamResponse:
        """Back from the web authorisation: this attempt's state, in this browser, for the asking account."""
        handle = request.match_info["handle"]
        now = utcnow()
        async with self._sessions() as session:
            attempt = await self._load(session, handle)
            account = await session.get(PlatformAccount, attempt.account_id) if attempt is not None else None
        if attempt is None or account is None:
            return self._page("page_verify_invalid", status=404)
        if attempt.status != VerificationStatus.PENDING:
            return self._page("page_verify_used", status=410)  # a replayed state: nothing moves
        if attempt.expires_at <= now:
            await self._move(attempt.id, VerificationStatus.PENDING, VerificationStatus.EXPIRED, completed_at=now)
            return self._page("page_verify_expired", status=410)
        authorisation = self._authorisations.get(account.platform)
        state = request.query.get("state", "")
        browser = request.cookies.get(BROWSER_COOKIE, "")
        expected = attempt.provider_ref or ""
        given = STATE_PREFIX + self._services.vault.digest("verify_state", f"{state}:{browser}")
        if (
            authorisation is None
            or not state
            or not browser
            or not expected.startswith(STATE_PREFIX)
            or not hmac.compare_digest(expected.encode(), given.encode())
        ):
            await self._refuse(account, attempt, "oauth_state")
            return self._page("page_verify_reopen", status=403)
        code = request.query.get(authorisation.code_param, "")
        if not code:
            await self._refuse(account, attempt, "oauth_no_code")
            return self._page("page_verify_reopen", status=403)
        # The state is spent here, whatever the code turns out to be.
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(Verification)
                .where(
                    Verification.id == attempt.id,
                    Verification.status == VerificationStatus.PENDING,
                    Verification.provider_ref == expected,
                )
                .values(status=VerificationStatus.STARTING, provider_ref=None)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return self._page("page_verify_used", status=410)
        try:
            user, union = await authorisation.user_of(code)
        except AuthorisationError as exc:
            await self._move(attempt.id, VerificationStatus.STARTING, VerificationStatus.PENDING)
            await self._refuse(account, attempt, "oauth_code", code=exc.code)
            if exc.retryable:
                return self._page("page_verify_unavailable", status=503)
            return self._page("page_verify_reopen", status=403)
        if not hmac.compare_digest(user.encode(), account.user_id.encode()):
            # Who opened it, as a keyed hash: comparable across refusals, never the platform id itself.
            opened_by = self._services.vault.digest("user_id", user)
            await self._end_for_another(
                attempt, account, VerificationStatus.STARTING, "opened_by_another_account", now, opened_by=opened_by
            )
            return self._page(f"page_verify_other_account_{account.platform}", status=403)
        if union:
            # The platform vouches for this account's cross-app id: the mini program can know the person by it.
            async with self._sessions() as session, session.begin():
                await record_union(session, self._services.vault, account, union, now)
        return await self._launch(attempt, account, handle)

    async def _end_for_another(
        self, attempt: Verification, account: PlatformAccount, before: str, reason: str, now: datetime, **detail: str
    ) -> None:
        """Someone else has the link or the provider's page: the attempt ends (once), the refusal is audited,
        and the asker is told in the chat not to forward it."""
        async with self._sessions() as session, session.begin():
            moved = await session.execute(
                update(Verification)
                .where(Verification.id == attempt.id, Verification.status == before)
                .values(status=VerificationStatus.FAILED, reason=reason, completed_at=now)
            )
            _audit_refusal(session, account, attempt, reason, **detail)
            fresh = await session.get(PlatformAccount, account.id)
            if moved.rowcount and fresh is not None:  # type: ignore[attr-defined]
                text = self._services.catalogue(f"verify_other_account_{account.platform}")
                await notify(session, Text(text), f"verify-other:{attempt.id}", accounts=[fresh])
        log.warning("verification refused for another account", extra={"provider": attempt.provider, "reason": reason})

    async def _launch(self, attempt: Verification, account: PlatformAccount, handle: str) -> web.StreamResponse:
        """The attempt is ``starting`` (ours): register it with the provider and send the browser there."""
        provider = self._providers.get(attempt.provider)
        if provider is None:
            await self._move(attempt.id, VerificationStatus.STARTING, VerificationStatus.PENDING)
            return self._page("page_verify_used", status=410)
        try:
            started = await provider.start(self._request(attempt, account, handle))
        except FaceError as exc:
            log.warning("face provider could not start", extra={"provider": attempt.provider, "code": exc.code})
            await self._move(attempt.id, VerificationStatus.STARTING, VerificationStatus.PENDING)
            return self._page("page_verify_unavailable", status=503)
        await self._move(
            attempt.id, VerificationStatus.STARTING, VerificationStatus.STARTED, provider_ref=started.provider_ref
        )
        if not started.url.startswith(("https://", "http://")):
            return self._page("page_verify_app")  # a mini-program page: the mini program opens it
        response = web.HTTPFound(started.url, headers=_PRIVATE)
        self._set_cookie(response, FACE_COOKIE, self._face_token(attempt.id, started.provider_ref), handle)
        raise response

    async def done(self, request: web.Request) -> web.Response:
        """Back from the provider: ask it how the attempt ended, and bind the account only on a match."""
        handle = request.match_info["handle"]
        now = utcnow()
        async with self._sessions() as session:
            attempt = await self._load(session, handle)
            account = await session.get(PlatformAccount, attempt.account_id) if attempt is not None else None
        if attempt is None or account is None:
            return self._page("page_verify_invalid", status=404)
        if attempt.status in (
            VerificationStatus.PASSED,
            VerificationStatus.FAILED,
            VerificationStatus.MISMATCH,
            VerificationStatus.EXPIRED,
        ):
            return self._page("page_verify_used", status=410)
        if attempt.status != VerificationStatus.STARTED or attempt.provider_ref is None:
            return self._page("page_verify_invalid", status=409)  # never started: a forged return
        if attempt.provider not in KNOWS_ITS_USER:
            token = request.cookies.get(FACE_COOKIE, "")
            expected = self._face_token(attempt.id, attempt.provider_ref)
            if not hmac.compare_digest(token.encode(), expected.encode()):
                # The provider's page was finished in a browser that was never checked (a forwarded page):
                # this attempt proves nothing any more.
                await self._end_for_another(
                    attempt, account, VerificationStatus.STARTED, "returned_in_another_browser", now
                )
                return self._page(f"page_verify_other_account_{account.platform}", status=403)
        provider = self._providers.get(attempt.provider)
        if provider is None or not await self._move(
            attempt.id, VerificationStatus.STARTED, VerificationStatus.CHECKING
        ):
            return self._page("page_verify_pending", status=409)
        try:
            outcome = await provider.query(attempt.provider_ref, self._request(attempt, account, handle))
        except FaceError as exc:
            log.warning("face provider could not be queried", extra={"provider": attempt.provider, "code": exc.code})
            if exc.retryable:
                await self._move(attempt.id, VerificationStatus.CHECKING, VerificationStatus.STARTED)
                return self._page("page_verify_pending", status=503)
            outcome = Outcome(passed=False, reason=exc.code)
        return await self._finish(attempt, account, outcome, now)

    # --- the mini program's face, driven by its page through the JSON API (no browser link) ---

    async def start_in_app(self, handle: str, account_id: int) -> tuple[str, Started | None]:
        """Start an attempt of ``account_id`` whose provider knows its user (the mini programs' face).

        Returns ("started", what the page needs: the provider's reference for ``wx.requestFacialVerify`` or
        Alipay's ``certifyId``, and the certify URL), or (why not, None): ``not_found`` (no such attempt of this
        account), ``used``, ``expired`` or ``unavailable``.
        """
        now = utcnow()
        async with self._sessions() as session:
            attempt = await self._load(session, handle)
            account = await session.get(PlatformAccount, attempt.account_id) if attempt is not None else None
        if attempt is None or account is None or account.id != account_id or attempt.provider not in KNOWS_ITS_USER:
            return "not_found", None
        if attempt.expires_at <= now:
            await self._move(attempt.id, VerificationStatus.PENDING, VerificationStatus.EXPIRED, completed_at=now)
            return "expired", None
        provider = self._providers.get(attempt.provider)
        if provider is None or not await self._move(
            attempt.id, VerificationStatus.PENDING, VerificationStatus.STARTING
        ):
            return "used", None
        try:
            started = await provider.start(self._request(attempt, account, handle))
        except FaceError as exc:
            log.warning("face provider could not start", extra={"provider": attempt.provider, "code": exc.code})
            await self._move(attempt.id, VerificationStatus.STARTING, VerificationStatus.PENDING)
            return "unavailable", None
        await self._move(
            attempt.id, VerificationStatus.STARTING, VerificationStatus.STARTED, provider_ref=started.provider_ref
        )
        return "started", started

    async def finish_in_app(self, handle: str, account_id: int, *, page_done: bool = True) -> str:
        """Ask the provider how the account's in-app attempt ended, as :meth:`done` does; the attempt's status.

        ``passed``, ``failed``, ``mismatch`` or ``expired`` once decided; ``pending`` while the provider has no
        result yet (or could not be asked); ``not_found`` for no such attempt of this account. ``page_done``:
        the page says the provider's flow ended (only then is Alipay's "not passed" a failure).
        """
        now = utcnow()
        async with self._sessions() as session:
            attempt = await self._load(session, handle)
            account = await session.get(PlatformAccount, attempt.account_id) if attempt is not None else None
        if attempt is None or account is None or account.id != account_id or attempt.provider not in KNOWS_ITS_USER:
            return "not_found"
        if attempt.status != VerificationStatus.STARTED or attempt.provider_ref is None:
            return str(attempt.status) if attempt.status in FINAL_STATUSES else "pending"
        provider = self._providers.get(attempt.provider)
        if provider is None or not await self._move(
            attempt.id, VerificationStatus.STARTED, VerificationStatus.CHECKING
        ):
            return "pending"
        try:
            outcome = await provider.query(attempt.provider_ref, self._request(attempt, account, handle))
        except FaceError as exc:
            if exc.retryable:
                await self._move(attempt.id, VerificationStatus.CHECKING, VerificationStatus.STARTED)
                return "pending"
            outcome = Outcome(passed=False, reason=exc.code)
        if not outcome.passed and (
            outcome.reason == "not_completed" or (outcome.reason == NOT_PASSED_YET and not page_done)
        ):
            # The user has not faced the camera yet: the attempt stays open for the page to ask again.
            await self._move(attempt.id, VerificationStatus.CHECKING, VerificationStatus.STARTED)
            return "pending"
        await self._finish(attempt, account, outcome, now)
        async with self._sessions() as session:
            fresh = await session.get(Verification, attempt.id)
        return str(fresh.status) if fresh is not None else "not_found"

    async def _finish(
        self, attempt: Verification, account: PlatformAccount, outcome: Outcome, now: datetime
    ) -> web.Response:
        vault = self._services.vault
        name = vault.open("name", attempt.name_enc)
        id_number = vault.open("id_number", attempt.id_number_enc)
        status, reason = VerificationStatus.PASSED, ""
        if not outcome.passed:
            status, reason = VerificationStatus.FAILED, outcome.reason or "not_passed"
        elif (outcome.id_number and outcome.id_number.upper() != id_number) or (outcome.name and outcome.name != name):
            status, reason = VerificationStatus.MISMATCH, "provider_reported_another_person"
        catalogue = self._services.catalogue
        async with self._sessions() as session, session.begin():
            moved = await session.execute(
                update(Verification)
                .where(Verification.id == attempt.id, Verification.status == VerificationStatus.CHECKING)
                .values(status=status, reason=reason[:64], completed_at=now)
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                return self._page("page_verify_used", status=410)
            fresh = await session.get(PlatformAccount, account.id)
            assert fresh is not None
            if status == VerificationStatus.PASSED:
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
                text = catalogue("verify_failed" if status == VerificationStatus.FAILED else "verify_mismatch")
            # The answer to her own attempt: told on the account that asked, not on her other platforms (an
            # Alipay mini-program account cannot be written to: its page shows the answer).
            if fresh.platform not in UNWRITABLE_PLATFORMS:
                await notify(session, Text(text), f"verify:{attempt.id}", accounts=[fresh])
        log.info("verification finished", extra={"provider": attempt.provider, "status": status})
        return self._page(f"page_verify_{status}")


def _audit_refusal(
    session: AsyncSession, account: PlatformAccount, attempt: Verification, reason: str, **detail: str
) -> None:
    """The ``verify_refused`` row of a refused step, under the account that asked (no personal data)."""
    record_access(
        session,
        actor_kind="account",
        actor_ref=str(account.id),
        action="verify_refused",
        reason=reason,
        platform=account.platform,
        detail={"attempt": attempt.id, "provider": attempt.provider, **detail},
    )
