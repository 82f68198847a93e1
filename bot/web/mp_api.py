"""The mini programs' JSON API (``/mp/api/v1/…``): what the pages call, on the same rules as the chat.

Every endpoint but ``login`` needs ``Authorization: Bearer <token>`` from ``login`` (our own short-lived
session; the platform's ``session_key`` never leaves the server). Each calls the same feature functions as
the chat handlers (the pending list, claiming with its consent, grants and their notices, records with the
forecast, codes and code pages, the verification attempt), so masking, audit rows and refusals are the
chat's. Errors are ``{"error": {"code", "message"}}``: a stable code for the page and a Chinese message from
the catalogue for the user. Requests are limited per session (and logins per client address) by token
buckets. See ``docs/mp-api.openapi.yaml``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.booking import bookings as booking_rules
from bot.booking import slots as booking_slots
from bot.booking.bookings import Outcome
from bot.certificates.rules import (
    GRANT_REFUSAL_REASONS,
    GRANT_REFUSED,
    Grantee,
    Standing,
    Visible,
    active_grants,
    add_grant,
    age_on,
    bound_identity,
    claim_with_consent,
    doses_of,
    open_visible,
    pending_for,
    record_pending_view,
    record_view,
    revoke_grant,
    visible_certificates,
)
from bot.chat.conversation import Services
from bot.core.audit import record_about_certificate
from bot.core.chinatime import CHINA, china_date
from bot.core.pii import mask_id_number, mask_name, mask_phone
from bot.core.validators import InvalidIdNumber, normalize_mobile, normalize_name, parse_id_number
from bot.identity.accounts import tell_grantee
from bot.identity.face.base import Subject
from bot.identity.face.providers import method_for_age, provider_name_for
from bot.identity.verification import VerificationRoutes, create_attempt
from bot.immunization.forecast import GivenDose, forecast_next_doses
from bot.immunization.vaccines import vaccine_name
from bot.miniprogram.sessions import Login, end_session, log_in, session_account, spend_code
from bot.platforms.alipay.client import AlipayAPI, AlipayAPIError
from bot.platforms.wechat.client import WeChatAPIError
from bot.platforms.wxmini.client import BAD_LOGIN_CODE, MiniProgramAPI
from bot.platforms.wxmini.consents import consents_left, record_consents
from bot.platforms.wxmini.sender import may_reach
from bot.reminders.planning import plan_soon
from bot.showcode.codes import issue_code, qr_svg
from bot.showcode.page import TokenBuckets, client_address, code_page_url, open_code_page
from handlers.grant import RELATIONSHIPS
from models import (
    Appointment,
    AppointmentStatus,
    CertificateKind,
    Clinic,
    ConsentSource,
    Grant,
    Identity,
    PlatformAccount,
    Slot,
    utcnow,
)

log = logging.getLogger("vaxbot.mp_api")

PREFIX = "/mp/api/v1"
MAX_BODY = 8 * 1024
# The platforms whose accounts verify through the API (the WeChat mini program's face, Alipay's certify).
FACE_PLATFORMS = frozenset({"wxmini", "alipaymini"})
# A booking attempt's outcome that is a refusal: its stable code and HTTP status.
BOOKING_REFUSALS = {
    Outcome.HELD: ("booking_held", 409),
    Outcome.FULL: ("booking_full", 409),
    Outcome.NOT_OPEN: ("booking_not_open", 409),
    Outcome.CLOSED: ("booking_closed", 409),
    Outcome.GONE: ("booking_slot_not_found", 404),
}
# ``startBizService``'s result statuses that end Alipay's certify flow (passed or a business failure).
ALIPAY_FLOW_ENDED = frozenset({"9000", "4000"})
_PRIVATE = {"Cache-Control": "no-store"}


@dataclasses.dataclass
class ApiError(Exception):
    """A refusal: the stable code, the HTTP status, and values for the catalogue's message."""

    code: str
    status: int = 400
    values: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling: the session's account, and the verified person behind it (if any)."""

    account: PlatformAccount
    identity: Identity | None
    token: str

    def person(self) -> Identity:
        """The verified person, or the refusal every personal endpoint gives before verification."""
        if self.identity is None:
            raise ApiError("not_verified", 403)
        return self.identity


Action = Callable[[AsyncSession, Caller, dict[str, Any], web.Request], Awaitable[dict[str, Any]]]


class MiniProgramApi:
    """The endpoints; built whole at start-up (``create_app``'s browser pages context) and held under an app key."""

    def __init__(
        self,
        services: Services,
        sessions: async_sessionmaker[AsyncSession],
        verification: VerificationRoutes,
        wxmini: MiniProgramAPI | None,
        alipay_mini: AlipayAPI | None,
    ) -> None:
        self._services = services
        self._sessionmaker = sessions
        self._verification = verification
        self._wxmini = wxmini
        self._alipay_mini = alipay_mini
        settings = services.settings
        self._per_session = TokenBuckets(settings.mp_api_burst, settings.mp_api_per_minute)
        self._logins = TokenBuckets(settings.mp_api_burst, settings.mp_api_per_minute)

    @staticmethod
    def setup(app: web.Application, key: web.AppKey[MiniProgramApi]) -> None:
        """Mount the endpoints, served by the object the app holds under ``key`` once it starts."""
        routes: list[tuple[str, str, str, bool]] = [
            ("POST", "/login", "login", False),
            ("POST", "/logout", "logout", True),
            ("GET", "/me", "me", True),
            ("POST", "/subscriptions", "subscriptions", True),
            ("POST", "/verifications", "verify_start", True),
            ("POST", "/verifications/{attempt}/result", "verify_result", True),
            ("GET", "/pending", "pending", True),
            ("POST", "/claims", "claim", True),
            ("GET", "/certificates", "certificates", True),
            ("GET", "/certificates/{certificate}/grants", "grants", True),
            ("POST", "/certificates/{certificate}/grants", "grant_add", True),
            ("DELETE", "/certificates/{certificate}/grants/{grant}", "grant_revoke", True),
            ("GET", "/certificates/{certificate}/records", "records", True),
            ("POST", "/certificates/{certificate}/code", "code", True),
            ("GET", "/certificates/{certificate}/booking", "booking_options", True),
            ("POST", "/certificates/{certificate}/bookings", "book", True),
            ("GET", "/bookings", "my_bookings", True),
            ("DELETE", "/bookings/{booking}", "booking_cancel", True),
        ]
        for method, path, name, authenticated in routes:

            async def endpoint(
                request: web.Request, name: str = name, authenticated: bool = authenticated
            ) -> web.Response:
                api = request.app[key]
                return await api.serve(request, getattr(api, name), authenticated=authenticated)

            app.router.add_route(method, PREFIX + path, endpoint)

    # --- the frame every endpoint runs in ---

    def _error(self, error: ApiError) -> web.Response:
        catalogue = self._services.catalogue
        key = f"mp_error_{error.code}"
        message = catalogue(key, **error.values) if key in catalogue else catalogue("mp_error_bad_request")
        headers = dict(_PRIVATE)
        if error.status == 429 and "retry_after" in error.values:
            headers["Retry-After"] = str(error.values["retry_after"])
        return web.json_response(
            {"error": {"code": error.code, "message": message}}, status=error.status, headers=headers
        )

    async def serve(self, request: web.Request, action: Action, *, authenticated: bool) -> web.Response:
        """Read the body, check the session and the budget, run ``action`` in one transaction, answer JSON."""
        try:
            body = await _json_body(request)
            now = utcnow()
            token = ""
            if authenticated:
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise ApiError("unauthorised", 401)
                token = token.strip()
                digest = self._services.vault.digest("mp_session", token)
                wait = self._per_session.take(digest)
                if wait:
                    raise ApiError("rate_limited", 429, {"retry_after": int(wait) + 1})
            else:
                address = client_address(request, self._services.settings.client_address_header)
                wait = self._logins.take(address)
                if wait:
                    raise ApiError("rate_limited", 429, {"retry_after": int(wait) + 1})
            # One transaction (the session begins it on first use); an action that calls a platform commits
            # before the call and goes on in a new one. A refusal keeps the audit rows it added: commit first.
            async with self._sessionmaker() as session:
                caller = await self._caller(session, token, now) if authenticated else None
                try:
                    answer = await action(session, caller, body, request)  # type: ignore[arg-type]
                except ApiError:
                    await session.commit()
                    raise
                await session.commit()
            return web.json_response(await _drawn(answer), headers=_PRIVATE)
        except ApiError as error:
            return self._error(error)

    async def _caller(self, session: AsyncSession, token: str, now: datetime) -> Caller:
        account = await session_account(session, self._services.vault, token, now)
        if account is None:
            raise ApiError("unauthorised", 401)
        return Caller(account, await bound_identity(session, account), token)

    # --- login ---

    async def login(
        self, session: AsyncSession, _: Caller, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """``{"platform": "wechat"|"alipay", "code"}`` → ``{"token", "expires_in", "verified"}``."""
        settings = self._services.settings
        platform, code = body.get("platform"), body.get("code")
        if platform not in ("wechat", "alipay") or not isinstance(code, str) or not 0 < len(code) <= 256:
            raise ApiError("bad_request")
        vault = self._services.vault
        now = utcnow()
        if platform == "wechat":
            if self._wxmini is None:
                raise ApiError("channel_off", 404)
            app_id, ours = settings.wxmini_appid, "wxmini"
        else:
            if self._alipay_mini is None:
                raise ApiError("channel_off", 404)
            app_id, ours = settings.alipay_mini_appid, "alipaymini"
        if not await spend_code(session, vault, ours, app_id, code, now):
            raise ApiError("login_code_used", 401)
        await session.commit()  # the code is spent whatever the platform answers
        login = await self._ask_platform(ours, app_id, code)
        ttl = timedelta(seconds=settings.mp_session_ttl_seconds)
        token, account = await log_in(session, vault, self._services.catalogue, login, now=now, ttl=ttl)
        verified = account.identity_id is not None
        return {"token": token, "expires_in": settings.mp_session_ttl_seconds, "verified": verified}

    async def _ask_platform(self, ours: str, app_id: str, code: str) -> Login:
        if ours == "wxmini":
            assert self._wxmini is not None
            try:
                answer = await self._wxmini.code_to_session(code)
            except WeChatAPIError as exc:
                log.warning("mini program login refused", extra={"errcode": exc.errcode})
                if exc.errcode in BAD_LOGIN_CODE:
                    raise ApiError("login_code_invalid", 401) from exc
                raise ApiError("platform_unavailable", 503) from exc
            return Login(ours, app_id, answer.openid, answer.unionid, answer.session_key)
        assert self._alipay_mini is not None
        try:
            user_id = await self._alipay_mini.oauth_user_id(code)
        except AlipayAPIError as exc:
            log.warning("alipay mini program login refused", extra={"code": exc.code, "sub_code": exc.sub_code})
            if exc.may_have_arrived or exc.code == "20000":
                raise ApiError("platform_unavailable", 503) from exc
            raise ApiError("login_code_invalid", 401) from exc
        # Alipay's 2088… user_id is the same person in every Alipay app (an OpenID is per app: no union).
        return Login(ours, app_id, user_id, user_id if user_id.startswith("2088") else "")

    async def logout(self, session: AsyncSession, caller: Caller, _: dict[str, Any], __: web.Request) -> dict[str, Any]:
        """End this session at once."""
        await end_session(session, self._services.vault, caller.token, utcnow())
        return {"ok": True}

    async def me(self, session: AsyncSession, caller: Caller, _: dict[str, Any], __: web.Request) -> dict[str, Any]:
        """Who is logged in (masked), and what their consents still allow."""
        vault = self._services.vault
        identity = caller.identity
        person = None
        if identity is not None:
            person = {
                "name": mask_name(vault.open("name", identity.name_enc)),
                "id_number": mask_id_number(vault.open("id_number", identity.id_number_enc)),
            }
        template = self._services.settings.reminder_template_id(caller.account.platform)
        left = await consents_left(session, caller.account.id, template) if caller.account.platform == "wxmini" else 0
        return {
            "platform": caller.account.platform,
            "verified": identity is not None,
            "person": person,
            "reminder_consents": left,
        }

    # --- subscription consents ---

    async def subscriptions(
        self, session: AsyncSession, caller: Caller, body: dict[str, Any], _: web.Request
    ) -> dict[str, Any]:
        """What ``wx.requestSubscribeMessage`` answered: ``{"results": {"<template id>": "accept"|"reject"…}}``."""
        results = body.get("results")
        if caller.account.platform != "wxmini" or not isinstance(results, dict) or not 0 < len(results) <= 3:
            raise ApiError("bad_request")
        accepted = [
            str(template)
            for template, choice in results.items()
            if str(choice).lower() in ("accept", "acceptwithaudio")
        ]
        added = await record_consents(session, caller.account, accepted, ConsentSource.PAGE, utcnow())
        left = {template: await consents_left(session, caller.account.id, template) for template in accepted}
        return {"recorded": added, "consents": left}

    # --- real-name verification (the mini program's face) ---

    async def verify_start(
        self, session: AsyncSession, caller: Caller, body: dict[str, Any], _: web.Request
    ) -> dict[str, Any]:
        """``{"name", "id_number"}`` → ``{"attempt", "verify_id"}`` for ``wx.requestFacialVerify``.

        In the Alipay mini program: ``{"attempt", "certify_id", "url"}`` for Alipay's certify (``startBizService``).
        """
        settings = self._services.settings
        platform = caller.account.platform
        if platform not in FACE_PLATFORMS or (platform == "alipaymini" and self._alipay_mini is None):
            raise ApiError("channel_off", 404)
        name = normalize_name(str(body.get("name") or ""))
        if name is None:
            raise ApiError("invalid_name")
        now = utcnow()
        today = china_date(now)
        try:
            parsed = parse_id_number(str(body.get("id_number") or ""), today)
        except InvalidIdNumber as exc:
            raise ApiError("invalid_id_number") from exc
        if method_for_age(settings, age_on(parsed.birth_date, today)) != "face":
            raise ApiError("face_method_elsewhere", 409)
        ttl = timedelta(seconds=settings.face_link_ttl_seconds)
        provider = provider_name_for(settings, caller.account.platform)
        handle = create_attempt(
            session, self._services.vault, caller.account, Subject(name, parsed.value), provider, now, ttl
        )
        await session.commit()  # the attempt exists before the provider is asked
        outcome, started = await self._verification.start_in_app(handle, caller.account.id)
        if outcome != "started" or started is None:
            raise ApiError("face_unavailable", 503)
        if platform == "alipaymini":
            return {
                "attempt": handle,
                "certify_id": started.provider_ref,
                "url": started.url,  # the signed certify page: carries the certify_id, nothing personal
                "expires_in": settings.face_link_ttl_seconds,
            }
        return {"attempt": handle, "verify_id": started.provider_ref, "expires_in": settings.face_link_ttl_seconds}

    async def verify_result(
        self, session: AsyncSession, caller: Caller, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """After the face: ask the platform (never the page) how it ended; bind only on a pass.

        ``{"result_status"}`` (optional, Alipay): what ``startBizService`` answered. Alipay's query cannot tell
        "not yet" from "failed", so a "not passed" ends the attempt only when the page says the flow ended
        (``9000`` or ``4000``); a cancelled or interrupted flow (``6001``, ``6002``) stays open.
        """
        await session.commit()  # the attempt moves in its own transactions (SQLite has one writer)
        page_done = str(body.get("result_status", "")) in ALIPAY_FLOW_ENDED
        status = await self._verification.finish_in_app(
            request.match_info["attempt"], caller.account.id, page_done=page_done
        )
        if status == "not_found":
            raise ApiError("face_not_found", 404)
        if status == "pending":
            raise ApiError("face_pending", 409)
        answer: dict[str, Any] = {"status": status}
        if status == "passed":
            fresh = await session.get(PlatformAccount, caller.account.id, populate_existing=True)
            identity = await bound_identity(session, fresh) if fresh is not None else None
            if identity is not None:
                vault = self._services.vault
                answer["message"] = self._services.catalogue(
                    "mp_verify_passed",
                    name=mask_name(vault.open("name", identity.name_enc)),
                    id=mask_id_number(vault.open("id_number", identity.id_number_enc)),
                )
        elif status in ("failed", "mismatch"):
            answer["message"] = self._services.catalogue(f"mp_verify_{status}")
        return answer

    # --- the pending list and claiming ---

    async def pending(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], __: web.Request
    ) -> dict[str, Any]:
        """The files this person may claim, and where the others stand (masked), as the chat's 待申领."""
        identity = caller.person()
        items = await pending_for(
            session, self._services.vault, identity, self._services.settings, china_date(utcnow())
        )
        record_pending_view(session, identity, items, caller.account.platform, account=caller.account)
        catalogue = self._services.catalogue
        return {
            "items": [
                {
                    "file": item.file.vaccinee_id,
                    "name": item.file.masked_name,
                    "id_number": item.file.masked_id,
                    "birth": f"{item.file.birth_date.year}-{item.file.birth_date.month:02d}",
                    "relation": item.file.relation,
                    "kind": item.file.kind,
                    "clinic": item.file.clinic_name,
                    "standing": item.standing.value,
                    "reason": catalogue(item.reason) if item.reason and item.reason in catalogue else "",
                }
                for item in items
            ]
        }

    async def claim(
        self, session: AsyncSession, caller: Caller, body: dict[str, Any], _: web.Request
    ) -> dict[str, Any]:
        """``{"file", "agree": true}``: claim it with the consent, as 「同意并申领」 does."""
        identity = caller.person()
        file_id = body.get("file")
        if not isinstance(file_id, int) or isinstance(file_id, bool):
            raise ApiError("bad_request")
        if body.get("agree") is not True:
            raise ApiError("consent_required")
        now = utcnow()
        items = await pending_for(session, self._services.vault, identity, self._services.settings, china_date(now))
        item = next((item for item in items if item.file.vaccinee_id == file_id), None)
        if item is None or item.standing is not Standing.CLAIMABLE:
            if item is not None and item.standing is Standing.TAKEN:
                raise ApiError("claim_taken", 409)
            raise ApiError("not_claimable", 409)
        certificate = await claim_with_consent(
            session, identity, item.file, caller.account.platform, now, account=caller.account
        )
        if certificate is None:
            raise ApiError("claim_taken", 409)
        if item.file.kind == CertificateKind.CHILD:
            await plan_soon(session, item.file.vaccinee_id, china_date(now))  # its reminders, next pass
        return {"certificate": certificate.id, "name": item.file.masked_name, "kind": item.file.kind}

    # --- certificates, grants, records, codes ---

    async def certificates(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], __: web.Request
    ) -> dict[str, Any]:
        """The certificates this person holds or was authorised to see (masked)."""
        identity = caller.person()
        visible = await visible_certificates(session, self._services.vault, identity)
        return {
            "items": [
                {
                    "certificate": item.certificate.id,
                    "name": item.file.masked_name,
                    "id_number": item.file.masked_id,
                    "kind": item.certificate.kind,
                    "role": item.role,
                }
                for item in visible
            ]
        }

    async def _visible(
        self, session: AsyncSession, caller: Caller, request: web.Request, step: str
    ) -> tuple[Identity, Visible]:
        identity = caller.person()
        raw = request.match_info.get("certificate", "")
        certificate_id = int(raw) if raw.isdigit() and len(raw) < 19 else None
        visible = (
            await open_visible(session, self._services.vault, identity, certificate_id)
            if certificate_id is not None
            else None
        )
        if visible is None:
            await record_about_certificate(
                session,
                certificate_id,
                actor_kind="identity",
                actor_ref=f"identity:{identity.id}/account:{caller.account.id}",
                action="pick_refused",
                reason="not_visible",
                platform=caller.account.platform,
                detail={"step": step, "via": "mp_api"},
            )
            raise ApiError("not_found", 404)
        return identity, visible

    async def _held(
        self, session: AsyncSession, caller: Caller, request: web.Request, step: str
    ) -> tuple[Identity, Visible]:
        identity, visible = await self._visible(session, caller, request, step)
        if visible.role != "holder":
            await self._grant_refused(session, caller, identity, visible, "not_holder", step)
            raise ApiError("grant_not_holder", 403)
        return identity, visible

    async def _grant_refused(
        self, session: AsyncSession, caller: Caller, identity: Identity, visible: Visible, reason: str, step: str
    ) -> None:
        await record_about_certificate(
            session,
            visible.certificate.id,
            actor_kind="identity",
            actor_ref=f"identity:{identity.id}/account:{caller.account.id}",
            action=GRANT_REFUSED,
            reason=reason,
            platform=caller.account.platform,
            detail={"step": step, "via": "mp_api"},
        )

    def _grant_view(self, grant: Grant) -> dict[str, Any]:
        vault = self._services.vault
        return {
            "grant": grant.id,
            "name": mask_name(vault.open("name", grant.grantee_name_enc)),
            "id_number": mask_id_number(vault.open("id_number", grant.grantee_id_number_enc)),
            "phone": mask_phone(vault.open("phone", grant.grantee_phone_enc)) if grant.grantee_phone_enc else "",
            "relationship": grant.relationship,
            "since": grant.created_at.date().isoformat() if grant.created_at else "",
        }

    async def grants(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """The family members authorised to see a certificate the caller holds (masked)."""
        identity, visible = await self._held(session, caller, request, "list")
        record_view(session, identity, visible, "grants_view", caller.account.platform, account=caller.account)
        current = await active_grants(session, visible.certificate.id)
        return {
            "items": [self._grant_view(grant) for grant in current],
            "limit": self._services.settings.max_grantees,
        }

    async def grant_add(
        self, session: AsyncSession, caller: Caller, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """``{"name", "id_number", "relationship", "phone"}``: authorise a family member, and tell them."""
        identity, visible = await self._held(session, caller, request, "add")
        now = utcnow()
        name = normalize_name(str(body.get("name") or ""))
        if name is None:
            raise ApiError("invalid_name")
        try:
            id_number = parse_id_number(str(body.get("id_number") or ""), china_date(now)).value
        except InvalidIdNumber as exc:
            raise ApiError("invalid_id_number") from exc
        relationship = body.get("relationship")
        if relationship not in RELATIONSHIPS:
            raise ApiError("invalid_relationship")
        phone = normalize_mobile(str(body.get("phone") or ""))
        if phone is None:
            raise ApiError("invalid_phone")
        vault = self._services.vault
        settings = self._services.settings
        grantee = Grantee(id_number, name, str(relationship), phone)
        grant, refusal = await add_grant(
            session,
            vault,
            identity,
            visible.certificate,
            grantee,
            settings,
            caller.account.platform,
            now,
            account=caller.account,
        )
        if grant is None:
            await self._grant_refused(
                session, caller, identity, visible, GRANT_REFUSAL_REASONS.get(refusal, refusal), "confirm"
            )
            raise ApiError(refusal, 409, {"limit": settings.max_grantees})
        told = await tell_grantee(session, self._services.catalogue, vault, identity, visible.file.masked_name, grant)
        notice_template = settings.wxmini_notice_template
        reached = [account for account in told if await may_reach(session, account, notice_template, now)]
        return {**self._grant_view(grant), "notified": bool(reached)}

    async def grant_revoke(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """Revoke one grant of a certificate the caller holds, and tell the family member."""
        identity, visible = await self._held(session, caller, request, "revoke")
        raw = request.match_info.get("grant", "")
        grant = await session.get(Grant, int(raw)) if raw.isdigit() and len(raw) < 19 else None
        if grant is None or grant.certificate_id != visible.certificate.id:
            await self._grant_refused(session, caller, identity, visible, "no_such_grant", "revoke")
            raise ApiError("grant_not_found", 404)
        revoked = await revoke_grant(
            session, identity, visible.certificate, grant, caller.account.platform, utcnow(), account=caller.account
        )
        if not revoked:
            raise ApiError("grant_not_found", 404)
        await tell_grantee(
            session,
            self._services.catalogue,
            self._services.vault,
            identity,
            visible.file.masked_name,
            grant,
            revoked=True,
        )
        return {"grant": grant.id, "revoked": True}

    async def records(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """The doses (masked header, by date) and, for a child, the next doses from the forecast."""
        identity, visible = await self._visible(session, caller, request, "records")
        record_view(session, identity, visible, "records_view", caller.account.platform, account=caller.account)
        today = china_date(utcnow())
        doses = await doses_of(session, self._services.vault, visible.certificate.vaccinee_id, today)
        clinic_ids = {dose.clinic_id for dose in doses if dose.clinic_id is not None}
        clinics: dict[int, str] = {}
        if clinic_ids:
            rows = await session.execute(select(Clinic.id, Clinic.name).where(Clinic.id.in_(clinic_ids)))
            clinics = {clinic_id: clinic_name for clinic_id, clinic_name in rows}
        birth = visible.file.birth_date
        answer: dict[str, Any] = {
            "certificate": visible.certificate.id,
            "name": visible.file.masked_name,
            "id_number": visible.file.masked_id,
            "birth": f"{birth.year}-{birth.month:02d}",
            "role": visible.role,
            "doses": [
                {
                    "vaccine": vaccine_name(dose.vaccine_code),
                    "code": dose.vaccine_code,
                    "dose": dose.dose_number,
                    "given_on": dose.given_on.isoformat(),
                    "clinic": clinics.get(dose.clinic_id, "") if dose.clinic_id is not None else "",
                }
                for dose in doses
            ],
            "next": [],
        }
        if visible.certificate.kind == "child":
            given = [GivenDose(dose.vaccine_code, dose.dose_number, dose.given_on) for dose in doses]
            answer["next"] = [
                {
                    "vaccine": vaccine_name(item.vaccine_code),
                    "code": item.vaccine_code,
                    "dose": item.dose_number,
                    "status": item.status,
                    "earliest": item.earliest.isoformat(),
                    "recommended": item.recommended.isoformat(),
                    "past_due": item.past_due.isoformat() if item.past_due else None,
                    "note": item.note or "",
                }
                for item in forecast_next_doses(birth, visible.file.sex, given, today)
            ]
        return answer

    async def code(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """A show code for the clinic (亮码接种): the QR as SVG, its expiry, and the code page that keeps it fresh."""
        identity, visible = await self._visible(session, caller, request, "code")
        settings = self._services.settings
        vault = self._services.vault
        now = utcnow()
        record_view(session, identity, visible, "code_show", caller.account.platform, account=caller.account)
        ttl = timedelta(seconds=settings.code_page_code_seconds)
        issued = issue_code(
            session, vault, certificate_id=visible.certificate.id, identity_id=identity.id, now=now, ttl=ttl
        )
        page_ttl = timedelta(seconds=settings.code_page_ttl_seconds)
        handle = open_code_page(
            session, vault, certificate_id=visible.certificate.id, identity_id=identity.id, now=now, ttl=page_ttl
        )
        return {
            "name": visible.file.masked_name,
            "svg": _SvgLater(issued.payload),  # drawn after the commit, in a worker thread
            "expires_in": int(ttl.total_seconds()),
            "page": code_page_url(settings, handle),
        }

    # --- booking (预约接种, 我的预约): the chat's rules in bot.booking ---

    async def _booking_audit(
        self,
        session: AsyncSession,
        caller: Caller,
        identity: Identity,
        certificate_id: int | None,
        action: str,
        reason: str = "",
        **detail: Any,
    ) -> None:
        await record_about_certificate(
            session,
            certificate_id,
            actor_kind="identity",
            actor_ref=f"identity:{identity.id}/account:{caller.account.id}",
            action=action,
            reason=reason,
            platform=caller.account.platform,
            detail={**detail, "via": "mp_api"},
        )

    async def _offers(self, session: AsyncSession, visible: Visible, now: datetime) -> list[booking_slots.Offer]:
        today = china_date(now)
        doses = await doses_of(session, self._services.vault, visible.certificate.vaccinee_id, today)
        given = [GivenDose(dose.vaccine_code, dose.dose_number, dose.given_on) for dose in doses]
        return await booking_slots.offers(session, visible.file.birth_date, visible.file.sex, given, now)

    async def booking_options(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """What this certificate's person can book: vaccines (due first), clinics (the file's first), days, windows."""
        identity, visible = await self._visible(session, caller, request, "booking")
        now = utcnow()
        offers = await self._offers(session, visible, now)
        await self._booking_audit(session, caller, identity, visible.certificate.id, "booking_options_view")
        held = {
            appointment.vaccine_code: (appointment, slot)
            for appointment, slot in await booking_rules.active_of(session, [visible.certificate.vaccinee_id])
        }
        vaccines = []
        for offer in offers:
            found = [
                slot
                for slot in await booking_slots.upcoming(session, offer.vaccine_code, now)
                if booking_slots.offered(offer, slot)
            ]
            names = await booking_slots.clinic_names(session, [slot.clinic_id for slot in found])
            clinic_ids = sorted(
                {slot.clinic_id for slot in found},
                key=lambda cid: (names.get(cid) != visible.file.clinic_name, names.get(cid, "")),
            )
            clinics = []
            for clinic_id in clinic_ids:
                days: dict[str, list[dict[str, Any]]] = {}
                for slot in found:
                    if slot.clinic_id == clinic_id:
                        days.setdefault(china_date(slot.starts_at).isoformat(), []).append(_slot_view(slot, now))
                clinics.append(
                    {
                        "clinic": clinic_id,
                        "name": names.get(clinic_id, ""),
                        "mine": names.get(clinic_id) == visible.file.clinic_name,
                        "days": [{"day": day, "windows": windows} for day, windows in sorted(days.items())],
                    }
                )
            booked = held.get(offer.vaccine_code)
            vaccines.append(
                {
                    "code": offer.vaccine_code,
                    "vaccine": vaccine_name(offer.vaccine_code),
                    "dose": offer.dose_number,
                    "status": offer.status,
                    "earliest": offer.earliest.isoformat(),
                    "until": offer.until.isoformat() if offer.until else None,
                    "self_paid": offer.self_paid,
                    "price_fen": offer.price_fen,
                    "booked": self._booking_view(booked[0], booked[1], visible, names) if booked else None,
                    "clinics": clinics,
                }
            )
        return {"certificate": visible.certificate.id, "name": visible.file.masked_name, "vaccines": vaccines}

    def _booking_view(
        self, appointment: Appointment, slot: Slot, visible: Visible, names: dict[int, str]
    ) -> dict[str, Any]:
        return {
            "booking": appointment.id,
            "number": booking_rules.booking_number(appointment),
            "certificate": visible.certificate.id,
            "name": visible.file.masked_name,
            "code": appointment.vaccine_code,
            "vaccine": vaccine_name(appointment.vaccine_code),
            "clinic": names.get(slot.clinic_id, ""),
            "starts_at": slot.starts_at.astimezone(CHINA).isoformat(),
            "ends_at": slot.ends_at.astimezone(CHINA).isoformat(),
            "price_fen": slot.price_fen if slot.funding == booking_slots.Funding.SELF_PAID else 0,
        }

    async def book(
        self, session: AsyncSession, caller: Caller, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """``{"slot", "key"}``: book a place for this certificate's person, once per key (a retry answers the same)."""
        slot_id, key = body.get("slot"), body.get("key")
        if not isinstance(slot_id, int) or isinstance(slot_id, bool) or not isinstance(key, str):
            raise ApiError("bad_request")
        if not 8 <= len(key) <= 128 or not key.isprintable():
            raise ApiError("bad_request")
        identity, visible = await self._visible(session, caller, request, "book")
        now = utcnow()
        certificate_id = visible.certificate.id
        # The key is the page's, scoped to this account: two accounts' keys never meet.
        stored_key = "mp:" + self._services.vault.digest("mp_booking", f"{caller.account.id}:{key}")[:60]
        slot = await session.get(Slot, slot_id)
        offers = await self._offers(session, visible, now)
        retry = (await session.scalars(select(Appointment).where(Appointment.idempotency_key == stored_key))).first()
        if retry is None and (slot is None or not any(booking_slots.offered(offer, slot) for offer in offers)):
            # Only what the chat would list: a vaccine due (or soon) for this person, on or after its day.
            reason = "no_such_slot" if slot is None else "not_offered"
            await self._booking_audit(session, caller, identity, certificate_id, "booking_refused", reason)
            raise ApiError(
                "booking_slot_not_found" if slot is None else "booking_not_offered", 404 if slot is None else 409
            )
        try:
            result = await booking_rules.book(
                session, slot_id, visible.certificate.vaccinee_id, identity.id, stored_key, now
            )
        except ValueError as exc:  # the same key sent for another person
            await self._booking_audit(session, caller, identity, certificate_id, "booking_refused", "key_reused")
            raise ApiError("booking_key_reused", 409) from exc
        if result.outcome in BOOKING_REFUSALS:
            code, status = BOOKING_REFUSALS[result.outcome]
            await self._booking_audit(
                session, caller, identity, certificate_id, "booking_refused", result.outcome.value
            )
            values: dict[str, Any] = {}
            if result.outcome == Outcome.NOT_OPEN and result.slot is not None and result.slot.opens_at is not None:
                opens = result.slot.opens_at.astimezone(CHINA)
                values["opens"] = f"{opens.month}月{opens.day}日 {opens.hour}:{opens.minute:02d}"
            if result.outcome == Outcome.HELD and result.appointment is not None:
                values["number"] = booking_rules.booking_number(result.appointment)
            raise ApiError(code, status, values)
        assert result.appointment is not None and result.slot is not None
        if not result.repeated:
            await self._booking_audit(
                session,
                caller,
                identity,
                certificate_id,
                "booking_made",
                slot=result.slot.id,
                booking=result.appointment.id,
            )
        names = await booking_slots.clinic_names(session, [result.slot.clinic_id])
        return {
            **self._booking_view(result.appointment, result.slot, visible, names),
            "repeated": result.repeated,
        }

    async def my_bookings(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], __: web.Request
    ) -> dict[str, Any]:
        """The active bookings of everyone this person may see (masked), soonest first, as 我的预约."""
        identity = caller.person()
        visible = await visible_certificates(session, self._services.vault, identity)
        files = {item.certificate.vaccinee_id: item for item in visible}
        held = await booking_rules.active_of(session, list(files))
        names = await booking_slots.clinic_names(session, [slot.clinic_id for _, slot in held])
        for certificate_id in sorted({files[appointment.vaccinee_id].certificate.id for appointment, _ in held}):
            await self._booking_audit(session, caller, identity, certificate_id, "bookings_view")
        return {
            "items": [
                self._booking_view(appointment, slot, files[appointment.vaccinee_id], names)
                for appointment, slot in held
            ]
        }

    async def booking_cancel(
        self, session: AsyncSession, caller: Caller, _: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        """Cancel one booking of someone this person may see; refused if not theirs to see or no longer active."""
        identity = caller.person()
        raw = request.match_info.get("booking", "")
        appointment = await session.get(Appointment, int(raw)) if raw.isdigit() and len(raw) < 19 else None
        visible = await visible_certificates(session, self._services.vault, identity)
        mine = next(
            (
                item
                for item in visible
                if appointment is not None and item.certificate.vaccinee_id == appointment.vaccinee_id
            ),
            None,
        )
        if appointment is None or mine is None:
            await self._booking_audit(session, caller, identity, None, "booking_refused", "not_visible", step="cancel")
            raise ApiError("booking_not_found", 404)
        certificate_id = mine.certificate.id
        if appointment.status != AppointmentStatus.BOOKED or not await booking_rules.cancel(
            session, appointment.id, utcnow()
        ):
            await self._booking_audit(session, caller, identity, certificate_id, "booking_refused", "not_active")
            raise ApiError("booking_not_active", 409)
        await self._booking_audit(
            session, caller, identity, certificate_id, "booking_cancelled", booking=appointment.id
        )
        return {"booking": appointment.id, "cancelled": True}


@dataclasses.dataclass(frozen=True)
class _SvgLater:
    """A QR code to draw as SVG once the action's transaction has ended (never inside it, never on the loop)."""

    text: str


def _slot_view(slot: Slot, now: datetime) -> dict[str, Any]:
    """One window as the booking page shows it: China time, places left, open or when it opens, and the price."""
    not_yet = slot.opens_at is not None and slot.opens_at > now
    return {
        "slot": slot.id,
        "starts_at": slot.starts_at.astimezone(CHINA).isoformat(),
        "ends_at": slot.ends_at.astimezone(CHINA).isoformat(),
        "left": max(0, slot.capacity - slot.booked),
        # A lottery slot's places are drawn (entered in the chat for now), never booked from the page.
        "bookable": booking_slots.is_bookable(slot, now) and slot.mode != booking_slots.Mode.LOTTERY,
        "lottery": slot.mode == booking_slots.Mode.LOTTERY,
        "opens_at": slot.opens_at.astimezone(CHINA).isoformat() if not_yet and slot.opens_at else None,
        "price_fen": slot.price_fen if slot.funding == booking_slots.Funding.SELF_PAID else 0,
    }


async def _drawn(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with each QR code it carries drawn, off the event loop."""
    drawn = dict(answer)
    for key, value in answer.items():
        if isinstance(value, _SvgLater):
            drawn[key] = await asyncio.to_thread(qr_svg, value.text)
    return drawn


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (an empty one for a bodiless GET/DELETE); ``bad_request`` otherwise."""
    if request.method in ("GET", "DELETE") and not request.can_read_body:
        return {}
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError("bad_request", 413)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError("bad_request", 413)
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError("bad_request") from exc
    if not isinstance(parsed, dict):
        raise ApiError("bad_request")
    return parsed
