"""China time (UTC+8, no daylight saving), whatever this machine's zone: dates users and registries mean."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")


def china_now() -> datetime:
    """The current time in China."""
    return datetime.now(CHINA)


def china_today() -> date:
    """Today's date in China."""
    return china_now().date()


def china_date(moment: datetime) -> date:
    """The China calendar date of an aware moment."""
    return moment.astimezone(CHINA).date()
