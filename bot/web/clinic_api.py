"""The clinic API (``/clinic/api/v1/…``, JSON): the desk's steps for clinic information systems.

Each request is signed with a per-clinic key (:mod:`bot.desk.clinics`); the key decides the clinic, so a
system sees and acts on its own clinic's visits only. The steps are :mod:`bot.desk.steps`, with the same
rules and audit as the console (the actor is ``clinic-api:K@clinic:M``). A refused step answers with its
problem code and the Chinese message for the desk. See docs/clinic-api.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from bot.booking import lottery as booking_lottery
from bot.booking import slots as booking_slots
from bot.core.audit import record_access
from bot.core.chinatime import china_date
from bot.desk import filing, steps
from bot.desk.clinics import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    ApiRefused,
    SignedRequest,
    authenticate,
)
from bot.desk.notify import FamilyTeller
from bot.desk.queue import ClinicRefused, take_number
from bot.desk.steps import DeskActor, DosePlan, GivenDose, HealthAnswers, StepProblem, StepRefused
from bot.notices.compose import Composer, Draft, NoticeRefused, Window, count_booked
from bot.notices.compose import send as send_notice
from bot.notices.report import DeliveryState
from bot.notices.report import report as notice_report
from bot.showcode.codes import CodeRejected
from bot.web.appkeys import SERVICES, SESSIONS
from models import Clinic, NoticeAction, NoticeAudience, NoticeDelivery, NoticeKind, utcnow

log = logging.getLogger("vaxbot.clinic_api")

PREFIX = "/clinic/api/v1"
MAX_BODY = 16 * 1024
STATUS_OF: dict[StepProblem, int] = {
    StepProblem.NOT_FOUND: 404,
    StepProblem.OUT_OF_ORDER: 409,
    StepProblem.NOT_REQUESTED: 409,
    StepProblem.ALREADY_GIVEN: 409,
    StepProblem.OBSERVATION_NOT_OVER: 409,
    StepProblem.NOT_FILED: 409,
    StepProblem.HEALTH_FLAGGED: 409,
    StepProblem.MISMATCH_UNRESOLVED: 409,
}

Handler = Callable[[web.Request, DeskActor, dict[str, Any]], Awaitable[Any]]


class BadRequest(Exception):
    """The JSON body or a parameter is not what the endpoint takes; the message names the field."""


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "total_seconds"):
        return int(value.total_seconds())
    return value


def endpoint(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Authenticate the signed request (its own transaction: the nonce is spent), then run the step."""

    async def run(request: web.Request) -> web.Response:
        body = await request.read()
        if len(body) > MAX_BODY:
            return _error(413, "too_large", "请求太大")
        signed = SignedRequest(
            method=request.method,
            path_qs=request.rel_url.raw_path_qs,
            body=body,
            key_id=request.headers.get(HEADER_KEY, ""),
            timestamp=request.headers.get(HEADER_TIMESTAMP, ""),
            nonce=request.headers.get(HEADER_NONCE, ""),
            signature=request.headers.get(HEADER_SIGNATURE, ""),
        )
        services = request.app[SERVICES]
        sessions = request.app[SESSIONS]
        refused: ApiRefused | None = None
        async with sessions() as session, session.begin():
            try:
                actor = await authenticate(session, services.vault, signed, utcnow())
            except ApiRefused as exc:
                refused = exc  # committed all the same: a known key's refusal is audited
        if refused is not None:
            log.info("clinic api refused", extra={"problem": refused.problem.value})
            return _error(401, refused.problem.value, "请求未通过签名校验")
        try:
            try:
                data = json.loads(body) if body else {}
            except ValueError:
                raise BadRequest("body") from None
            if not isinstance(data, dict):
                raise BadRequest("body")
            result = await handler(request, actor, data)
        except StepRefused as exc:
            return _error(STATUS_OF.get(exc.problem, 422), exc.problem.value, exc.message)
        except BadRequest as exc:
            return _error(400, "bad_request", f"请求内容不对：{exc}")
        if isinstance(result, web.Response):
            return result
        return web.json_response(_jsonable(result))

    return run


def _day(request: web.Request) -> date:
    raw = request.query.get("date")
    return _parse_date(raw, "date") if raw else china_date(utcnow())


def _parse_date(raw: str, name: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(name) from None


def _visit_id(request: web.Request) -> int:
    return int(request.match_info["visit_id"])


def _teller(request: web.Request) -> FamilyTeller:
    services = request.app[SERVICES]
    return FamilyTeller.from_settings(services.settings, services.catalogue)


def _text(data: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(name)
    return value


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    if not isinstance(value, bool):
        raise BadRequest(name)
    return value


async def _in(request: web.Request, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Run one desk function in its own transaction (rolled back when the step is refused)."""
    services = request.app[SERVICES]
    async with request.app[SESSIONS]() as session, session.begin():
        return await call(session, services.vault, *args, **kwargs)


async def get_queue(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """GET /visits?date=: the day's queue."""
    return {"visits": await _in(request, steps.today_queue, actor, _day(request))}


async def scan(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /scan {"code"}: 取号 for a scanned code at this key's clinic."""
    services = request.app[SERVICES]
    code = _text(data, "code")
    async with request.app[SESSIONS]() as session, session.begin():
        clinic = await session.get(Clinic, actor.clinic_id)
        assert clinic is not None
        try:
            ticket = await take_number(
                session,
                services.vault,
                services.catalogue,
                clinic_code=clinic.code,
                pilot_regions=services.settings.pilot_regions,
                payload=code,
                staff=actor.audit_actor(),
                now=utcnow(),
                family=_teller(request),
            )
        except CodeRejected as exc:
            refusal = _error(422, exc.problem.value, services.catalogue(f"desk_code_{exc.problem.value}"))
        except ClinicRefused as exc:
            message = services.catalogue("desk_clinic_not_pilot", clinic=clinic.code)
            refusal = _error(422, f"clinic_{exc.problem.value}", message)
        else:
            return ticket
    # The refusal is committed (the code is spent, the refusal audited), then reported.
    return refusal


async def call_next(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """POST /visits/next?date=: 叫号."""
    return {"visit": await _in(request, steps.call_next, actor, _day(request))}


async def detail(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """GET /visits/{id}: 三查七对 (audited)."""
    return await _in(request, steps.visit_detail, actor, _visit_id(request))


async def register(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /visits/{id}/register {fever, allergies, recent_vaccines, contraindications, note?, desk?}: 登记."""
    answers = HealthAnswers(
        fever=_flag(data, "fever"),
        allergies=_flag(data, "allergies"),
        recent_vaccines=_flag(data, "recent_vaccines"),
        contraindications=_flag(data, "contraindications"),
        note=_text(data, "note", required=False),
    )
    desk = _text(data, "desk", required=False)
    return await _in(request, steps.register, actor, _visit_id(request), answers, desk=desk, family=_teller(request))


async def request_confirmation(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /visits/{id}/confirmation {vaccine_code, dose_number, lot_number, manufacturer, expires_on, …}: 一验证."""
    number = data.get("dose_number")
    if not isinstance(number, int) or isinstance(number, bool):
        raise BadRequest("dose_number")
    reason = data.get("override_reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("override_reason")
    plan = DosePlan(
        vaccine_code=_text(data, "vaccine_code"),
        dose_number=number,
        lot_number=_text(data, "lot_number", required=False),
        manufacturer=_text(data, "manufacturer", required=False),
        expires_on=_parse_date(_text(data, "expires_on"), "expires_on"),
        override_reason=reason,
    )
    return await _in(request, steps.request_confirmation, actor, _visit_id(request), plan, family=_teller(request))


async def confirm_in_person(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /visits/{id}/confirm-in-person {reason}: 一验证 recorded by staff."""
    return await _in(request, steps.confirm_in_person, actor, _visit_id(request), _text(data, "reason", required=False))


async def vaccinate(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /visits/{id}/vaccinate {site, route, vaccinator}: 接种."""
    given = GivenDose(
        site=_text(data, "site", required=False),
        route=_text(data, "route", required=False),
        vaccinator=_text(data, "vaccinator", required=False),
    )
    return await _in(request, steps.vaccinate, actor, _visit_id(request), given, family=_teller(request))


async def finish(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /visits/{id}/finish {early_reason?}: 留观结束."""
    reason = data.get("early_reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("early_reason")
    return await _in(
        request, steps.finish_observation, actor, _visit_id(request), early_reason=reason, family=_teller(request)
    )


async def get_filing(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """GET /visits/{id}/filing: 自动建档, the person to be filed and an existing file's differences (audited)."""
    return await _in(request, filing.filing_view, actor, _visit_id(request))


async def file_visit(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /visits/{id}/file {resolutions?: {field: keep|take_verified|note}, note?}: the registrar files them."""
    resolutions = _resolutions(data)
    note = _text(data, "note", required=False)
    return await _in(
        request,
        filing.file_visit,
        actor,
        _visit_id(request),
        resolutions=resolutions,
        note=note,
        family=_teller(request),
    )


def _resolutions(data: dict[str, Any]) -> dict[str, filing.Resolution]:
    raw = data.get("resolutions") or {}
    if not isinstance(raw, dict) or not all(isinstance(value, str) for value in raw.values()):
        raise BadRequest("resolutions")
    try:
        return {str(field): filing.Resolution(value) for field, value in raw.items()}
    except ValueError:
        raise BadRequest("resolutions") from None


async def compare(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """GET /visits/{id}/compare: how the file differs from the verified holder (audited)."""
    return {"mismatches": await _in(request, filing.compare_with_verified, actor, _visit_id(request))}


async def resolve(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /visits/{id}/resolve {resolutions, note?}: the staff's decision on each difference."""
    left = await _in(
        request,
        filing.resolve_mismatches,
        actor,
        _visit_id(request),
        _resolutions(data),
        note=_text(data, "note", required=False),
    )
    return {"left": left}


async def get_observing(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """GET /observing?date=: the people observing, soonest to finish first."""
    return {"visits": await _in(request, steps.observing, actor, _day(request))}


async def get_summary(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """GET /summary?date=: the day in numbers."""
    services = request.app[SERVICES]
    async with request.app[SESSIONS]() as session:
        return await steps.day_summary(session, actor, _day(request), vault=services.vault)


SLOT_DAYS = 60  # GET /slots lists the slots starting within this many days


async def get_slots(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """GET /slots: the clinic's slots not yet over, starting within the coming weeks (a lottery's counts too)."""
    async with request.app[SESSIONS]() as session:
        found = await booking_slots.coming(session, actor.clinic_id, utcnow(), SLOT_DAYS)
        lotteries = await booking_lottery.of_slots(session, [slot.id for slot in found])
        listed = []
        for slot in found:
            shown = booking_slots.view(slot)
            if slot.id in lotteries:
                shown["lottery"] = await booking_lottery.view(session, lotteries[slot.id])
            listed.append(shown)
        return {"slots": listed}


async def add_slot(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /slots {vaccine_code, date, start, end, capacity, opens_at?, price_yuan?, lottery?}: publish a slot.

    ``lottery`` {registration_closes_at, registration_opens_at?} publishes it in lottery mode (docs/lottery.md).
    """
    capacity = data.get("capacity")
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        raise BadRequest("capacity")
    try:
        spec = booking_slots.spec_from_fields(
            vaccine=_text(data, "vaccine_code"),
            day=_text(data, "date"),
            start=_text(data, "start"),
            end=_text(data, "end"),
            capacity=capacity,
            opens=_text(data, "opens_at", required=False),
            price_yuan=_text(data, "price_yuan", required=False),
        )
    except booking_slots.SlotRefused as exc:
        return _error(422, "slot_refused", f"号源填写有误：{exc}")
    if spec.window()[0] <= utcnow():
        return _error(422, "slot_in_the_past", "这个时段已经开始或已过去，不能再发布。")
    draw_by = data.get("lottery")
    if draw_by is not None and not isinstance(draw_by, dict):
        raise BadRequest("lottery")
    services = request.app[SERVICES]
    try:
        async with request.app[SESSIONS]() as session, session.begin():
            drawn = None
            if draw_by is not None:
                opens_at, closes_at = booking_lottery.registration_from_fields(
                    opens=_text(draw_by, "registration_opens_at", required=False),
                    closes=_text(draw_by, "registration_closes_at"),
                    now=utcnow(),
                )
                slot, drawn = await booking_lottery.publish_lottery(
                    session,
                    services.vault,
                    actor.clinic_id,
                    spec,
                    opens_at=opens_at,
                    closes_at=closes_at,
                    confirm_hours=services.settings.lottery_confirm_hours,
                )
            else:
                slot = await booking_slots.publish(session, actor.clinic_id, spec)
            record_access(
                session,
                actor_kind="clinic_api",
                actor_ref=actor.audit_actor(),
                action="slot_published",
                detail={
                    "slot": slot.id,
                    "vaccine": spec.vaccine_code,
                    "capacity": spec.capacity,
                    **({"lottery": drawn.public_id} if drawn is not None else {}),
                },
            )
            shown = booking_slots.view(slot)
            if drawn is not None:
                shown["lottery"] = await booking_lottery.view(session, drawn)
            return {"slot": shown}
    except booking_slots.SlotRefused as exc:  # nothing was published: the transaction rolled back
        return _error(422, "slot_refused", f"号源填写有误：{exc}")


async def close_slots(request: web.Request, actor: DeskActor, data: dict[str, Any]) -> Any:
    """POST /slots/close {date, start?, notice?}: close a day (or the window starting at ``start``).

    Where families are booked, the closure needs ``notice`` {text, action: cancel | move, move_to?, key}: the
    bookings are cancelled or moved and every family told (once per key). Without it the answer is 409 with
    how many bookings are affected, and nothing is closed.
    """
    day = _parse_date(_text(data, "date"), "date")
    start_text = _text(data, "start", required=False)
    try:
        start = time.fromisoformat(start_text) if start_text else None
    except ValueError:
        raise BadRequest("start") from None
    notice = data.get("notice")
    if notice is not None:
        if not isinstance(notice, dict):
            raise BadRequest("notice")
        return await _close_with_notice(request, actor, Window(day, start), notice)
    services = request.app[SERVICES]
    try:
        async with request.app[SESSIONS]() as session, session.begin():
            # Closed first, then counted: a booking that raced in is seen, and the closure undone with it.
            closed = await booking_slots.close(session, actor.clinic_id, day, utcnow(), start=start)
            booked = await count_booked(session, actor.clinic_id, [Window(day, start)])
            if booked:
                raise _Booked(booked)
            record_access(
                session,
                actor_kind="clinic_api",
                actor_ref=actor.audit_actor(),
                action="slots_closed",
                detail={"day": day.isoformat(), "start": start_text, "closed": closed},
            )
            return {"closed": closed}
    except _Booked as exc:
        message = services.catalogue("console_slots_close_booked", count=exc.count)
        return web.json_response({"error": "bookings_affected", "message": message, "bookings": exc.count}, status=409)


class _Booked(Exception):
    """A closure without a notice found bookings: undone."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


API_KEY_LENGTH = 48  # a notice's key as the clinic system gives it (scoped by the clinic when stored)


async def _close_with_notice(request: web.Request, actor: DeskActor, window: Window, data: dict[str, Any]) -> Any:
    services = request.app[SERVICES]
    key = _text(data, "key")
    if not 8 <= len(key) <= API_KEY_LENGTH:
        raise BadRequest("notice.key")
    move_text = _text(data, "move_to", required=False)
    try:
        action = NoticeAction(_text(data, "action"))
        move_to = Window.parse(move_text) if move_text else None
    except ValueError:
        raise BadRequest("notice.action / notice.move_to") from None
    draft = Draft(
        NoticeKind.CLOSURE, _text(data, "text", required=False), NoticeAudience.BOOKED, (window,), action, move_to
    )
    composer = Composer(actor.clinic_id, "clinic_api", actor.audit_actor())
    try:
        async with request.app[SESSIONS]() as session, session.begin():
            sent = await send_notice(
                session,
                services.vault,
                services.catalogue,
                services.settings,
                composer,
                draft,
                f"api:{actor.clinic_id}:{key}",
                utcnow(),
            )
            notice = sent.notice
            told = await session.scalar(
                select(func.count()).select_from(NoticeDelivery).where(NoticeDelivery.notice_id == notice.id)
            )
            return {
                "closed": notice.slots_closed,
                "notice": {
                    "id": notice.id,
                    "repeated": sent.repeated,
                    "bookings_cancelled": notice.bookings_cancelled,
                    "bookings_moved": notice.bookings_moved,
                    "move_failed": notice.move_failed,
                    "accounts": int(told or 0),
                },
            }
    except NoticeRefused as exc:
        return _error(422, "notice_refused", services.catalogue(exc.reason))


async def get_notice(request: web.Request, actor: DeskActor, _data: dict[str, Any]) -> Any:
    """GET /notices/{id}: a notice's delivery report (sent, waiting, failed with the reason; recipients masked)."""
    async with request.app[SESSIONS]() as session:
        found = await notice_report(session, actor.clinic_id, int(request.match_info["notice_id"]))
    if found is None:
        return _error(404, "not_found", request.app[SERVICES].catalogue("console_notices_not_found"))
    return {
        "notice": {
            "id": found.notice.id,
            "kind": found.notice.kind.value,
            "text": found.notice.text,
            "created_at": found.notice.created_at.isoformat(),
            "windows": found.notice.windows,
        },
        **{state.value: found.count(state) for state in DeliveryState},
        "deliveries": [
            {
                "platform": line.platform,
                "recipient": line.recipient,
                "state": line.state.value,
                "reason": line.reason or line.problem,
            }
            for line in found.lines
        ],
    }


def setup_routes(app: web.Application) -> None:
    """Mount the clinic API's routes on ``app`` (plain routes under ``/clinic/api/v1``)."""
    app.router.add_get(f"{PREFIX}/visits", endpoint(get_queue))
    app.router.add_post(f"{PREFIX}/scan", endpoint(scan))
    app.router.add_post(f"{PREFIX}/visits/next", endpoint(call_next))
    app.router.add_get(f"{PREFIX}/visits/{{visit_id:\\d+}}", endpoint(detail))
    app.router.add_get(f"{PREFIX}/visits/{{visit_id:\\d+}}/filing", endpoint(get_filing))
    app.router.add_post(f"{PREFIX}/visits/{{visit_id:\\d+}}/file", endpoint(file_visit))
    app.router.add_get(f"{PREFIX}/visits/{{visit_id:\\d+}}/compare", endpoint(compare))
    app.router.add_post(f"{PREFIX}/visits/{{visit_id:\\d+}}/resolve", endpoint(resolve))
    app.router.add_post(f"{PREFIX}/visits/{{visit_id:\\d+}}/register", endpoint(register))
    app.router.add_post(f"{PREFIX}/visits/{{visit_id:\\d+}}/confirmation", endpoint(request_confirmation))
    app.router.add_post(f"{PREFIX}/visits/{{visit_id:\\d+}}/confirm-in-person", endpoint(confirm_in_person))
    app.router.add_post(f"{PREFIX}/visits/{{visit_id:\\d+}}/vaccinate", endpoint(vaccinate))
    app.router.add_post(f"{PREFIX}/visits/{{visit_id:\\d+}}/finish", endpoint(finish))
    app.router.add_get(f"{PREFIX}/observing", endpoint(get_observing))
    app.router.add_get(f"{PREFIX}/summary", endpoint(get_summary))
    app.router.add_get(f"{PREFIX}/slots", endpoint(get_slots))
    app.router.add_post(f"{PREFIX}/slots", endpoint(add_slot))
    app.router.add_post(f"{PREFIX}/slots/close", endpoint(close_slots))
    app.router.add_get(f"{PREFIX}/notices/{{notice_id:\\d+}}", endpoint(get_notice))
