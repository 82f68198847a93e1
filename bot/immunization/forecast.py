"""Next-dose forecasts from a child's recorded doses and the national schedule, in the style of CDSi.

Pure and database-free: the caller passes the birth date, sex, recorded doses and the assessment date
(China calendar dates, see ``bot.core.chinatime``). For each series only the next dose is forecast, with an
earliest date, a recommended date, a past-due date and a status. There is no dose evaluation: the
registry's doses and dose numbers are trusted. Catch-up gives only the missing doses, never restarting.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from bot.immunization.schedule import LIVE_INJECTABLE, LIVE_SPACING, NIP_SCHEDULE, DoseRule, Period, SeriesRule

Status = Literal["overdue", "due", "upcoming"]


@dataclass(frozen=True)
class GivenDose:
    """A dose in the child's record."""

    vaccine_code: str
    dose_number: int
    given_on: date


@dataclass(frozen=True)
class Forecast:
    """The next dose of one series: when it may be given, when it should be, and when it is late."""

    vaccine_code: str
    dose_number: int
    earliest: date
    recommended: date
    past_due: date | None
    status: Status
    note: str = ""


def add_months(start: date, count: int) -> date:
    """``start`` plus ``count`` calendar months, clamped to the month's last day (Jan 31 + 1 = Feb 28/29)."""
    month_index = start.year * 12 + start.month - 1 + count
    year, month = divmod(month_index, 12)
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return date(year, month + 1, day)


def date_after(start: date, period: Period) -> date:
    """The date ``period`` after ``start``: calendar months first, then days."""
    return add_months(start, period.months) + timedelta(days=period.days)


def forecast_next_doses(birth_date: date, sex: str, doses: Iterable[GivenDose], assessed_on: date) -> list[Forecast]:
    """The next dose of every national-schedule series the child still needs, by recommended date."""
    if assessed_on < birth_date:
        raise ValueError("assessed_on is before birth_date")
    # Doses recorded after the assessment date did not exist yet; a dose recorded twice (same vaccine
    # and dose number) counts once, at its later date.
    unique: dict[tuple[str, int], GivenDose] = {}
    for dose in sorted(doses, key=lambda dose: dose.given_on):
        if dose.given_on <= assessed_on:
            unique[dose.vaccine_code, dose.dose_number] = dose
    record = sorted(unique.values(), key=lambda dose: dose.given_on)
    forecasts = [
        forecast
        for series in _chosen_series(NIP_SCHEDULE, record)
        if (forecast := _next_dose(series, birth_date, sex, record, assessed_on)) is not None
    ]
    return sorted(forecasts, key=lambda forecast: (forecast.recommended, forecast.vaccine_code))


def _chosen_series(schedule: Sequence[SeriesRule], record: Sequence[GivenDose]) -> list[SeriesRule]:
    """Each standalone series, and of each set of alternatives the one the child is on."""
    chosen: list[SeriesRule] = []
    alternatives: dict[str, list[SeriesRule]] = {}
    for series in schedule:
        if series.antigen:
            alternatives.setdefault(series.antigen, []).append(series)
        else:
            chosen.append(series)
    for candidates in alternatives.values():
        # The alternative of the most recent dose (a child who switched stays switched); with no dose of
        # any, the default. A tie on one day is a recording error: the default wins it too.
        chosen.append(max(candidates, key=lambda series: (_latest(series, record) or date.min, series.default)))
    return chosen


def _latest(series: SeriesRule, record: Sequence[GivenDose]) -> date | None:
    dates = [dose.given_on for dose in record if dose.vaccine_code in series.codes]
    return max(dates, default=None)


def _rule_at(series: SeriesRule, position: int, birth_date: date) -> DoseRule | None:
    """The rule for the dose at ``position`` (0-based): a change applies when the dose falls due under it."""
    for change in reversed(series.changes):
        if position < len(change.doses):
            rule = change.doses[position]
            if date_after(birth_date, rule.min_age) >= change.effective:
                return rule
    return series.doses[position] if position < len(series.doses) else None


def _series_length(series: SeriesRule, birth_date: date) -> int:
    length = len(series.doses)
    while _rule_at(series, length, birth_date) is not None:
        length += 1
    return length


def _past_due_age(series: SeriesRule, position: int, birth_date: date) -> Period | None:
    """The dose's own past-due age, else that of the next later dose with one.

    Why: the source gives one "complete before" per series (HepB "D3 < 12 m"); an earlier dose still
    missing by then is at least as late.
    """
    for later in range(position, _series_length(series, birth_date)):
        rule = _rule_at(series, later, birth_date)
        if rule is not None and rule.complete_before is not None:
            return rule.complete_before
    return None


def _next_dose(
    series: SeriesRule, birth_date: date, sex: str, record: Sequence[GivenDose], assessed_on: date
) -> Forecast | None:
    if series.sex is not None and sex != series.sex:
        return None
    if series.born_after is not None and birth_date <= series.born_after:
        return None
    given = [dose for dose in record if dose.vaccine_code in series.codes]
    position = len(given)
    rule = _rule_at(series, position, birth_date)
    if rule is None:
        return None  # complete

    earliest = date_after(birth_date, rule.min_age)
    if given and rule.min_interval is not None:
        earliest = max(earliest, date_after(given[-1].given_on, rule.min_interval))
    if rule.after is not None:
        other = [dose.given_on for dose in record if dose.vaccine_code == rule.after.vaccine_code]
        if other:
            earliest = max(earliest, date_after(max(other), rule.after.interval))
    if series.available_from is not None:
        earliest = max(earliest, series.available_from)

    code, number = rule.vaccine_code, rule.dose_number
    until_ages = [series.until_age] + ([rule.until_age] if rule.until_age is not None else [])
    substitute = rule.substitute
    if substitute is not None and max(earliest, assessed_on) >= date_after(birth_date, substitute.from_age):
        code, number = substitute.vaccine_code, substitute.dose_number
        until_ages.append(substitute.until_age)

    if code in LIVE_INJECTABLE:
        earliest = _after_live_doses(earliest, record, assessed_on)

    # The day the dose could be given: its earliest date, or today if that has passed.
    on_the_day = max(earliest, assessed_on)
    if any(on_the_day >= date_after(birth_date, age) for age in until_ages):
        return None

    # A dose number already in the record (numbered differently by the registry) is not reused.
    numbers = {dose.dose_number for dose in record if dose.vaccine_code == code}
    if number in numbers:
        number = max(numbers) + 1
    past_due_age = _past_due_age(series, position, birth_date)
    past_due = date_after(birth_date, past_due_age) if past_due_age is not None else None
    note = ""
    if rule.note and (rule.note_from_age is None or on_the_day >= date_after(birth_date, rule.note_from_age)):
        note = rule.note
    return Forecast(
        vaccine_code=code,
        dose_number=number,
        earliest=earliest,
        recommended=earliest,  # the schedule's ages are minimum ages: give as soon as allowed
        past_due=past_due,
        status=_status(earliest, past_due, assessed_on),
        note=note,
    )


def _after_live_doses(earliest: date, record: Sequence[GivenDose], assessed_on: date) -> date:
    """Push a live injectable vaccine to LIVE_SPACING after the latest other one, unless given the same day."""
    live = [dose.given_on for dose in record if dose.vaccine_code in LIVE_INJECTABLE]
    if not live:
        return earliest
    latest = max(live)
    # Why: live vaccines given on the same day are fine, so a dose already allowed on the day of the
    # other live dose is not pushed while that day (the assessment day) lasts.
    if latest == assessed_on and earliest <= latest:
        return earliest
    return max(earliest, date_after(latest, LIVE_SPACING))


def _status(earliest: date, past_due: date | None, assessed_on: date) -> Status:
    if past_due is not None and assessed_on >= past_due:
        return "overdue"
    if earliest <= assessed_on:
        return "due"
    return "upcoming"
