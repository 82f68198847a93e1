"""Who may have a self-paid (非免疫规划) vaccine, and from which day: a small table and the logic reading it.

Pure and database-free, like the forecaster: the caller passes the birth date, sex, recorded doses and a
day (China calendar dates). National-programme doses are the forecaster's (``bot.immunization.forecast``);
this module covers what families pay for themselves. Facts are conservative (the narrower of the labels
and guidance when they differ) and each row names where it comes from; rows marked ⚠ were not confirmed
against the official text. A vaccine missing from the table is never offered for booking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from bot.immunization.forecast import GivenDose, date_after, forecast_next_doses
from bot.immunization.schedule import LIVE_INJECTABLE, LIVE_SPACING, Period, days, months, years
from bot.immunization.vaccines import VACCINES, Programme


@dataclass(frozen=True)
class Course:
    """How a series runs when its first dose is given at ``from_age`` or later (until the next course's age).

    ``spacing`` holds the minimum interval before dose 2, 3, … (the last one repeats); ``last_from`` is the
    minimum age of the last dose when it has its own (a booster).
    """

    from_age: Period
    doses: int
    spacing: tuple[Period, ...] = ()
    last_from: Period | None = None


@dataclass(frozen=True)
class SelfPaidRule:
    """One self-paid vaccine: who may have it, from and until which age, and its course(s) of doses.

    ``until_age`` is exclusive (the birthday it may no longer be given on); ``first_dose_until`` the same for
    starting the series. ``courses`` are by the age at the first dose, youngest first (the first one's
    ``from_age`` is the minimum age). A ``seasonal`` vaccine is one dose a season (1 September to 31 August),
    a young child's first-season second dose aside; its course gives that dose's spacing.
    """

    vaccine_code: str
    until_age: Period | None
    courses: tuple[Course, ...]
    sex: str | None = None
    first_dose_until: Period | None = None
    seasonal: bool = False

    @property
    def min_age(self) -> Period:
        """The youngest age for a first dose."""
        return self.courses[0].from_age


SELF_PAID_RULES: Final[tuple[SelfPaidRule, ...]] = (
    # HPV 9-valent: China's label (NMPA, extended 2022) females 9–45 years; 3 doses at 0, 2, 6 months, dose 2
    # at least 1 month after dose 1 and dose 3 at least 3 months after dose 2. The 2-dose schedule for 9–14
    # year-olds is not used: three doses is the conservative reading.
    SelfPaidRule("HPV9", years(46), (Course(years(9), 3, (months(1), months(3))),), sex="F"),
    # HPV 4-valent: China's label (extended 2020) females 9–45 years; 3 doses at 0, 2, 6 months, spacing as HPV9.
    SelfPaidRule("HPV4", years(46), (Course(years(9), 3, (months(1), months(3))),), sex="F"),
    # HPV2 for girls is the national programme's (the forecaster's HPV2 series); not offered as self-paid here.
    # Influenza: from 6 months, one dose a season; a child under 9 in the first season gets 2 doses at least
    # 4 weeks apart (China CDC, 中国流感疫苗预防接种技术指南). The season boundary is ours ⚠.
    SelfPaidRule("Flu", None, (Course(months(6), 2, (days(28),)),), seasonal=True),
    # Varicella (live): from 12 months, 2 doses at least 3 months apart (China's two-dose guidance for children
    # at 1 and 4 years). Kept to children under 13: adults' schedule differs and is not offered here.
    # Live injectable: 28 days from another live injectable vaccine (read from the schedule).
    SelfPaidRule("VAR", years(13), (Course(months(12), 2, (months(3),)),)),
    # EV71: 6 months up to the 6th birthday (labels 6–71 months), 2 doses at least 1 month apart (China CDC
    # EV71 vaccine guidance: not recommended after 5 years of age).
    SelfPaidRule("EV71", years(6), (Course(months(6), 2, (months(1),)),)),
    # PCV13 (China's domestic label): from 6 weeks up to the 6th birthday; started at 2–6 months 3 doses at
    # least 1 month apart and a booster at 12–15 months, at least 2 months later; at 7–11 months 2 + 1; at
    # 12–23 months 2 doses at least 2 months apart; from 2 years 1 dose.
    SelfPaidRule(
        "PCV13",
        years(6),
        (
            Course(days(42), 4, (months(1), months(1), months(2)), last_from=months(12)),
            Course(months(7), 3, (months(1), months(2)), last_from=months(12)),
            Course(months(12), 2, (months(2),)),
            Course(years(2), 1),
        ),
    ),
    # Hib: from 2 months up to the 5th birthday; started before 6 months 3 doses a month apart and a booster
    # at 18 months; at 6–11 months 2 + 1; from 12 months 1 dose. The booster's 6 months after the primary
    # doses is ours ⚠ (labels differ by maker; the narrowest reading kept).
    SelfPaidRule(
        "Hib",
        years(5),
        (
            Course(months(2), 4, (months(1), months(1), months(6)), last_from=months(18)),
            Course(months(6), 3, (months(1), months(6)), last_from=months(18)),
            Course(months(12), 1),
        ),
    ),
    # Rotavirus (oral, 5-valent label): first dose at 6–12 weeks, 3 doses at least 4 weeks apart, all before
    # 32 weeks of age.
    SelfPaidRule("RV", days(224), (Course(days(42), 3, (days(28),)),), first_dose_until=days(84)),
    # Recombinant zoster (China's label): adults from 50 years, 2 doses at least 2 months apart.
    SelfPaidRule("RZV", None, (Course(years(50), 2, (months(2),)),)),
    # Not here on purpose: DTaP-IPV/Hib (it stands in for programme doses the forecaster counts) and PPV23
    # (given for risk groups a chat cannot check).
)

RULES: Final[Mapping[str, SelfPaidRule]] = MappingProxyType({rule.vaccine_code: rule for rule in SELF_PAID_RULES})


class Refusal(StrEnum):
    """Why a person may not have a vaccine on a day."""

    UNKNOWN = "unknown"  # no rule for this vaccine: never booked through vaxbot
    SEX = "sex"
    TOO_YOUNG = "too_young"  # also: the spacing after the last dose is not met yet (``earliest`` says when)
    TOO_OLD = "too_old"
    COMPLETE = "complete"


@dataclass(frozen=True)
class NextDose:
    """The next self-paid dose a person may have: its number, the first day, and the day it no longer may."""

    vaccine_code: str
    dose_number: int
    earliest: date
    until: date | None  # exclusive


@dataclass(frozen=True)
class Verdict:
    """Whether a dose may be given on a day; if not, why, and the first day it may (when there is one)."""

    allowed: bool
    refusal: Refusal | None = None
    earliest: date | None = None


def _course(rule: SelfPaidRule, birth: date, started: date) -> Course:
    """The course for a series started on ``started``: the last one whose age was reached by then."""
    found = rule.courses[0]
    for course in rule.courses[1:]:
        if started >= date_after(birth, course.from_age):
            found = course
    return found


def _season_start(day: date) -> date:
    return date(day.year if day.month >= 9 else day.year - 1, 9, 1)


def next_self_paid(rule: SelfPaidRule, birth: date, sex: str, given: Sequence[GivenDose], on: date) -> NextDose | None:
    """The next dose of this self-paid vaccine as seen on ``on``; None when the person may not have one."""
    if rule.sex is not None and sex != rule.sex:
        return None
    dates = sorted({dose.given_on for dose in given if dose.vaccine_code == rule.vaccine_code and dose.given_on <= on})
    until = date_after(birth, rule.until_age) if rule.until_age is not None else None
    if not dates and rule.first_dose_until is not None:
        until = min(until or date.max, date_after(birth, rule.first_dose_until))
    course = _course(rule, birth, dates[0] if dates else on)
    earliest = date_after(birth, rule.min_age)
    if rule.seasonal:
        if dates:
            earliest = max(earliest, _next_season_dose(course, birth, dates))
    else:
        if len(dates) >= course.doses:
            return None
        if dates:
            gap = course.spacing[min(len(dates), len(course.spacing)) - 1] if course.spacing else days(0)
            earliest = max(earliest, date_after(dates[-1], gap))
        if len(dates) + 1 == course.doses and course.doses > 1 and course.last_from is not None:
            earliest = max(earliest, date_after(birth, course.last_from))
    if rule.vaccine_code in LIVE_INJECTABLE:
        others = [dose.given_on for dose in given if dose.vaccine_code in LIVE_INJECTABLE and dose.given_on <= on]
        if others:
            earliest = max(earliest, date_after(max(others), LIVE_SPACING))
    if until is not None and max(earliest, on) >= until:
        return None
    return NextDose(rule.vaccine_code, len(dates) + 1, earliest, until)


def _next_season_dose(course: Course, birth: date, dates: Sequence[date]) -> date:
    """A seasonal vaccine's next day: the first season's second dose for a child under 9, else next season."""
    last = dates[-1]
    first_season = all(_season_start(day) == _season_start(last) for day in dates)
    if len(dates) == 1 and first_season and last < date_after(birth, years(9)):
        return date_after(last, course.spacing[0] if course.spacing else days(28))
    start = _season_start(last)
    return date(start.year + 1, 9, 1)


def self_paid_now(birth: date, sex: str, given: Sequence[GivenDose], today: date) -> list[NextDose]:
    """The self-paid vaccines a person may have today, in the table's order."""
    found = []
    for rule in SELF_PAID_RULES:
        dose = next_self_paid(rule, birth, sex, given, today)
        if dose is not None and dose.earliest <= today:
            found.append(dose)
    return found


def may_have_on(birth: date, sex: str, given: Sequence[GivenDose], vaccine_code: str, day: date) -> Verdict:
    """Whether the person may have ``vaccine_code`` on ``day`` by age, sex and spacing (any programme)."""
    if day < birth:
        return Verdict(False, Refusal.TOO_YOUNG, birth)
    vaccine = VACCINES.get(vaccine_code)
    if vaccine is not None and vaccine.programme == Programme.NIP:
        forecast = next(
            (item for item in forecast_next_doses(birth, sex, given, day) if item.vaccine_code == vaccine_code), None
        )
        if forecast is None:
            return Verdict(False, Refusal.COMPLETE)
        if forecast.earliest > day:
            return Verdict(False, Refusal.TOO_YOUNG, forecast.earliest)
        return Verdict(True)
    rule = RULES.get(vaccine_code)
    if rule is None:
        return Verdict(False, Refusal.UNKNOWN)
    if rule.sex is not None and sex != rule.sex:
        return Verdict(False, Refusal.SEX)
    dose = next_self_paid(rule, birth, sex, given, day)
    if dose is None:
        too_old = rule.until_age is not None and day >= date_after(birth, rule.until_age)
        too_late_to_start = rule.first_dose_until is not None and day >= date_after(birth, rule.first_dose_until)
        started = any(each.vaccine_code == vaccine_code and each.given_on <= day for each in given)
        too_old = too_old or (too_late_to_start and not started)
        return Verdict(False, Refusal.TOO_OLD if too_old else Refusal.COMPLETE)
    if dose.earliest > day:
        return Verdict(False, Refusal.TOO_YOUNG, dose.earliest)
    return Verdict(True)


def next_dose(birth: date, sex: str, given: Sequence[GivenDose], vaccine_code: str, on: date) -> NextDose | None:
    """The person's next dose of one vaccine (programme or self-paid) as seen on ``on``; None if there is none."""
    vaccine = VACCINES.get(vaccine_code)
    if vaccine is not None and vaccine.programme == Programme.NIP:
        forecast = next(
            (item for item in forecast_next_doses(birth, sex, given, on) if item.vaccine_code == vaccine_code), None
        )
        return NextDose(vaccine_code, forecast.dose_number, forecast.earliest, None) if forecast else None
    rule = RULES.get(vaccine_code)
    return next_self_paid(rule, birth, sex, given, on) if rule is not None else None
