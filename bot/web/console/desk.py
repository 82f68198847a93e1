"""The desk's step pages: today's queue and 叫号, a visit's 登记 · 一验证 · 接种 · 留观, observation, the day.

Every step goes through :mod:`bot.desk.steps` as the signed-in member (a :class:`DeskActor` of their
clinic), which checks that the visit is this clinic's (another clinic's visit is simply not found),
enforces the order of the steps, audits each under ``staff:N@clinic:M`` and tells the family. These
handlers read forms, call one step in one transaction, and render what came back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.conversation import Services
from bot.core.chinatime import china_date
from bot.desk.filing import Resolution, compare_with_verified, field_label, file_visit, filing_view, resolve_mismatches
from bot.desk.notify import FamilyTeller
from bot.desk.steps import (
    DeskActor,
    DosePlan,
    GivenDose,
    HealthAnswers,
    Route,
    Site,
    StepProblem,
    StepRefused,
    call_next,
    confirm_in_person,
    day_summary,
    finish_observation,
    observing,
    register,
    request_confirmation,
    today_queue,
    vaccinate,
    visit_detail,
)
from bot.immunization.vaccines import VACCINES, vaccine_name
from bot.staff.auth import StaffMember
from bot.staff.roles import Permission
from bot.web.console.base import HEADERS, PREFIX, Clock, Console, page, redirect, refusal, staff_page
from models import Visit, VisitStatus

MAX_TEXT = 200  # free-text fields (notes, reasons) are cut to this; the steps clean them again
QUESTIONS = ("fever", "allergies", "recent_vaccines", "contraindications")
Step = Callable[[AsyncSession, int], Awaitable[object]]


def actor_of(member: StaffMember) -> DeskActor:
    """The desk actor a signed-in member acts as."""
    return DeskActor(clinic_id=member.clinic_id, staff_id=member.id)


def _visit_id(console: Console) -> int:
    raw = console.request.match_info["visit_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound()
    return int(raw)


class DeskPages:
    """The desk's pages; mixed into the console's routes (``services``, ``sessions`` and ``clock`` from there)."""

    services: Services
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock

    def _family(self) -> FamilyTeller:
        """How the family is told (texts in the service window, the desk template outside it)."""
        return FamilyTeller.from_settings(self.services.settings, self.services.catalogue)

    def _today(self, now: datetime) -> date:
        return china_date(now)

    def _render(
        self, console: Console, template: str, values: dict[str, object], now: datetime, *, status: int = 200
    ) -> web.Response:
        return page(
            console.request,
            self.services,
            template,
            values,
            status=status,
            member=console.member,
            token=console.token,
            now=now,
        )

    # --- today's queue and 叫号 -----------------------------------------------------------------------

    @staff_page(Permission.VIEW)
    async def queue(self, console: Console) -> web.StreamResponse:
        """Today's visits at this clinic: number, masked name, step and how long each has waited."""
        now = self.clock()
        async with self.sessions() as session, session.begin():
            visits = await today_queue(
                session, self.services.vault, actor_of(console.member), self._today(now), now=now
            )
        notice = self.services.catalogue("console_queue_empty_call") if console.request.query.get("none") else ""
        rows = [(visit, int(visit.waited.total_seconds() // 60)) for visit in visits]
        return self._render(console, "queue.html", {"rows": rows, "notice": notice}, now)

    @staff_page(Permission.CALL)
    async def call(self, console: Console) -> web.StreamResponse:
        """叫号: the next waiting number is called and its visit page opens."""
        now = self.clock()
        async with self.sessions() as session, session.begin():
            called = await call_next(session, self.services.vault, actor_of(console.member), self._today(now), now=now)
        if called is None:
            return redirect(f"{PREFIX}/queue?none=1")
        return redirect(f"{PREFIX}/visits/{called.visit_id}")

    # --- one visit: 三查七对, 登记, 一验证, 接种, 留观 ---------------------------------------------------

    async def _visit_page(self, console: Console, visit_id: int, *, error: str = "", status: int = 200) -> web.Response:
        now = self.clock()
        actor = actor_of(console.member)
        try:
            async with self.sessions() as session, session.begin():
                detail = await visit_detail(session, self.services.vault, actor, visit_id, now=now)
                mismatches = []
                if detail.summary.status is VisitStatus.QUEUED:
                    # At 登记, how the file differs from the verified people behind the certificate.
                    try:
                        async with session.begin_nested():
                            mismatches = await compare_with_verified(session, self.services.vault, actor, visit_id)
                    except StepRefused:
                        mismatches = []  # no certificate behind this visit (a file made at the desk today)
        except StepRefused as exc:
            if exc.problem is StepProblem.NOT_FILED:
                return await self._filing_page(console, visit_id, error=error, status=status)
            return refusal(
                console.request, self.services, exc.message, status=404, member=console.member, token=console.token
            )
        catalogue = self.services.catalogue
        values: dict[str, object] = {
            "visit": detail,
            "step": detail.summary.status.value,
            "error": error,
            "questions": QUESTIONS,
            "due_now": [due for due in detail.due if due.status in ("overdue", "due")],
            "sites": [(site.value, catalogue(f"console_site_{site.value}")) for site in Site],
            "routes": [(route.value, catalogue(f"console_route_{route.value}")) for route in Route],
            "vaccines": sorted(VACCINES.values(), key=lambda vaccine: vaccine.code),
            "plan_vaccine": vaccine_name(detail.plan.vaccine_code) if detail.plan is not None else "",
            "early": detail.summary.observation_ends_at is not None and now < detail.summary.observation_ends_at,
            "mismatches": [self._mismatch_row(mismatch) for mismatch in mismatches],
            "resolutions": [(value.value, catalogue(f"console_resolution_{value.value}")) for value in Resolution],
        }
        return self._render(console, "visit.html", values, now, status=status)

    def _mismatch_row(self, mismatch: object) -> tuple[str, str, str, str]:
        """(field, its label, on file, verified) with sexes in words."""
        field, on_file, verified = (getattr(mismatch, name) for name in ("field", "on_file", "verified"))
        if field == "sex":
            on_file, verified = (self.services.catalogue(f"console_sex_{value}") for value in (on_file, verified))
        return field, field_label(field), on_file or "—", verified or "—"

    async def _filing_page(self, console: Console, visit_id: int, *, error: str, status: int) -> web.Response:
        """自动建档: a person without a file — who they are (in full: audited), and an existing file's differences."""
        now = self.clock()
        try:
            async with self.sessions() as session, session.begin():
                view = await filing_view(session, self.services.vault, actor_of(console.member), visit_id, now=now)
        except StepRefused as exc:
            return refusal(
                console.request, self.services, exc.message, status=404, member=console.member, token=console.token
            )
        catalogue = self.services.catalogue
        values: dict[str, object] = {
            "filing": view,
            "error": error,
            "mismatches": [self._mismatch_row(mismatch) for mismatch in view.mismatches],
            "resolutions": [(value.value, catalogue(f"console_resolution_{value.value}")) for value in Resolution],
        }
        return self._render(console, "filing.html", values, now, status=status)

    def _resolutions(self, console: Console) -> dict[str, str]:
        """The form's decision per compared field (``resolve_<field>``), known decisions only."""
        known = {value.value for value in Resolution}
        chosen = {}
        for field in ("name", "sex", "birth_date", "guardian"):
            value = console.field(f"resolve_{field}")
            if value in known:
                chosen[field] = value
        return chosen

    @staff_page(Permission.REGISTER)
    async def file(self, console: Console) -> web.StreamResponse:
        """自动建档: the registrar files the person (a new file, or the existing one with each difference decided)."""
        resolutions, note, now = self._resolutions(console), console.field("note")[:MAX_TEXT], self.clock()

        async def run(session: AsyncSession, visit_id: int) -> object:
            return await file_visit(
                session,
                self.services.vault,
                actor_of(console.member),
                visit_id,
                resolutions=resolutions,
                note=note,
                family=self._family(),
                now=now,
            )

        return await self._step(console, run)

    @staff_page(Permission.REGISTER)
    async def resolve(self, console: Console) -> web.StreamResponse:
        """At 登记: record the decision on each difference between the file and the verified person."""
        resolutions, note = self._resolutions(console), console.field("note")[:MAX_TEXT]

        async def run(session: AsyncSession, visit_id: int) -> object:
            return await resolve_mismatches(
                session, self.services.vault, actor_of(console.member), visit_id, resolutions, note=note
            )

        return await self._step(console, run)

    @staff_page(Permission.VIEW)
    async def visit(self, console: Console) -> web.StreamResponse:
        """A visit's page: the 三查七对 data (the full name: the look is audited) and the step it is at."""
        return await self._visit_page(console, _visit_id(console))

    async def _step(self, console: Console, run: Step) -> web.StreamResponse:
        """Run one step in its own transaction; a refusal is shown on the visit page with its reason."""
        visit_id = _visit_id(console)
        try:
            async with self.sessions() as session, session.begin():
                await run(session, visit_id)
        except StepRefused as exc:
            status = 404 if exc.problem.value == "not_found" else 409
            return await self._visit_page(console, visit_id, error=exc.message, status=status)
        return redirect(f"{PREFIX}/visits/{visit_id}")

    @staff_page(Permission.REGISTER)
    async def register(self, console: Console) -> web.StreamResponse:
        """登记: record the health questions' answers and send the person to a desk."""
        if any(console.field(question) not in ("yes", "no") for question in QUESTIONS):
            message = self.services.catalogue("console_register_incomplete")
            return await self._visit_page(console, _visit_id(console), error=message, status=400)
        answers = HealthAnswers(
            **{question: console.field(question) == "yes" for question in QUESTIONS},
            note=console.field("note")[:MAX_TEXT],
        )
        desk, now = console.field("desk")[:32], self.clock()

        async def run(session: AsyncSession, visit_id: int) -> object:
            return await register(
                session,
                self.services.vault,
                actor_of(console.member),
                visit_id,
                answers,
                desk=desk,
                family=self._family(),
                now=now,
            )

        return await self._step(console, run)

    def _plan(self, console: Console) -> DosePlan | str:
        """The 一验证 form as a dose plan, or what is missing (Chinese, for the page)."""
        catalogue = self.services.catalogue
        choice = console.field("dose")
        override = None
        if choice == "other":
            code, number = console.field("vaccine_code"), console.field("dose_number")
            override = console.field("override_reason")[:MAX_TEXT] or None
        else:
            code, _, number = choice.partition(":")
        if not code or not number.isdigit():
            return catalogue("console_plan_dose_missing")
        try:
            expires = date.fromisoformat(console.field("expires_on"))
        except ValueError:
            return catalogue("console_plan_expiry_missing")
        return DosePlan(
            vaccine_code=code,
            dose_number=int(number),
            lot_number=console.field("lot_number")[:64],
            manufacturer=console.field("manufacturer")[:64],
            expires_on=expires,
            override_reason=override,
        )

    @staff_page(Permission.CONFIRM)
    async def plan(self, console: Console) -> web.StreamResponse:
        """一验证: send the family the vaccine, dose, lot and expiry to confirm in the chat."""
        plan = self._plan(console)
        if isinstance(plan, str):
            return await self._visit_page(console, _visit_id(console), error=plan, status=400)
        now = self.clock()

        async def run(session: AsyncSession, visit_id: int) -> object:
            return await request_confirmation(
                session,
                self.services.vault,
                actor_of(console.member),
                visit_id,
                plan,
                family=self._family(),
                now=now,
            )

        return await self._step(console, run)

    @staff_page(Permission.CONFIRM)
    async def confirm(self, console: Console) -> web.StreamResponse:
        """一验证 in person: the guardian confirmed at the desk; staff record why it was not in the chat."""
        reason, now = console.field("reason")[:MAX_TEXT], self.clock()

        async def run(session: AsyncSession, visit_id: int) -> object:
            return await confirm_in_person(
                session, self.services.vault, actor_of(console.member), visit_id, reason, now=now
            )

        return await self._step(console, run)

    @staff_page(Permission.VACCINATE)
    async def vaccinate(self, console: Console) -> web.StreamResponse:
        """接种: record the dose given (site, route, vaccinator); the 30-minute observation starts."""
        vaccinator = console.field("vaccinator")[:64] or console.member.display_name
        given = GivenDose(site=console.field("site"), route=console.field("route"), vaccinator=vaccinator)
        now = self.clock()

        async def run(session: AsyncSession, visit_id: int) -> object:
            return await vaccinate(
                session,
                self.services.vault,
                actor_of(console.member),
                visit_id,
                given,
                family=self._family(),
                now=now,
            )

        return await self._step(console, run)

    @staff_page(Permission.FINISH)
    async def finish(self, console: Console) -> web.StreamResponse:
        """留观结束: the observation is over (early only with a reason); the family is told."""
        early, now = console.field("early_reason")[:MAX_TEXT] or None, self.clock()

        async def run(session: AsyncSession, visit_id: int) -> object:
            return await finish_observation(
                session,
                self.services.vault,
                actor_of(console.member),
                visit_id,
                early_reason=early,
                family=self._family(),
                now=now,
            )

        response = await self._step(console, run)
        if response.status == 303 and console.field("back") == "observing":
            return redirect(f"{PREFIX}/observing")
        return response

    @staff_page(Permission.VIEW, json_api=True)
    async def status(self, console: Console) -> web.StreamResponse:
        """The visit's step, for the page's live 一验证 box (polled every two seconds; no personal data)."""
        visit_id = _visit_id(console)
        async with self.sessions() as session:
            visit = (
                await session.scalars(
                    select(Visit).where(Visit.id == visit_id, Visit.clinic_id == console.member.clinic_id)
                )
            ).first()
        if visit is None:  # not this clinic's: the same answer as no visit at all
            return web.json_response({"error": "not_found"}, status=404, headers=HEADERS)
        step = VisitStatus(visit.status).value
        catalogue = self.services.catalogue
        if step == VisitStatus.REGISTERED and visit.confirmation_requested_at is not None:
            text = catalogue("console_live_waiting")
        elif visit.verified_by.startswith("identity:"):
            text = catalogue("console_live_confirmed_chat")
        elif visit.verified_by:
            text = catalogue("console_live_confirmed_in_person")
        else:
            text = catalogue(f"console_step_{step}")
        return web.json_response(
            {"step": step, "requested": visit.confirmation_requested_at is not None, "text": text}, headers=HEADERS
        )

    # --- 留观 and the day ------------------------------------------------------------------------------

    @staff_page(Permission.VIEW)
    async def observing(self, console: Console) -> web.StreamResponse:
        """Everyone observing now, each with a live countdown to the end of their 30 minutes."""
        now = self.clock()
        async with self.sessions() as session, session.begin():
            visits = await observing(session, self.services.vault, actor_of(console.member), self._today(now), now=now)
        return self._render(console, "observing.html", {"visits": visits}, now)

    @staff_page(Permission.VIEW)
    async def summary(self, console: Console) -> web.StreamResponse:
        """The day at this clinic: visits at each step, and doses given per vaccine."""
        now = self.clock()
        day = self._today(now)
        async with self.sessions() as session, session.begin():
            summary = await day_summary(session, actor_of(console.member), day, vault=self.services.vault)
        catalogue = self.services.catalogue
        steps = [(catalogue(f"console_step_{status}"), count) for status, count in summary.by_status.items()]
        vaccines = sorted((vaccine_name(code), count) for code, count in summary.by_vaccine.items())
        values = {"summary": summary, "day": day, "steps": steps, "vaccines": vaccines}
        return self._render(console, "summary.html", values, now)
