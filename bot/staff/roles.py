"""What each staff role may do at the console: one table, checked on every request.

The rules follow a clinic's desks. Everyone signed in sees the queue, the observation list and the day
summary. The registrar's desk scans codes, calls the next number, registers (三查七对 and the health
questions) and asks for 一验证; the vaccinator's desk also calls numbers, asks for or records 一验证 and
alone records the dose (接种); the observation area ends observations (留观结束), which a vaccinator may do
too. An admin (the clinic's lead) may do every step. A registrar can never record a dose, an observer can
never register or vaccinate.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from models import StaffRole


class Permission(StrEnum):
    """One console action."""

    VIEW = "view"  # the queue, a visit's 三查七对 data, the observation list, the day summary
    SCAN = "scan"  # 取号
    CALL = "call"  # 叫号
    REGISTER = "register"  # 登记
    CONFIRM = "confirm"  # 一验证: ask the family, or record an in-person confirmation
    VACCINATE = "vaccinate"  # 接种
    FINISH = "finish"  # 留观结束
    SLOTS = "slots"  # 预约号源: publish slots, close a day or a window
    NOTICES = "notices"  # 通知: notices to families, closures that cancel or move bookings, delivery reports


ALLOWED: Final[dict[StaffRole, frozenset[Permission]]] = {
    StaffRole.REGISTRAR: frozenset(
        {
            Permission.VIEW,
            Permission.SCAN,
            Permission.CALL,
            Permission.REGISTER,
            Permission.CONFIRM,
            Permission.SLOTS,
            Permission.NOTICES,
        }
    ),
    StaffRole.VACCINATOR: frozenset(
        {Permission.VIEW, Permission.CALL, Permission.CONFIRM, Permission.VACCINATE, Permission.FINISH}
    ),
    StaffRole.OBSERVER: frozenset({Permission.VIEW, Permission.FINISH}),
    StaffRole.ADMIN: frozenset(Permission),
}


def may(role: StaffRole, permission: Permission) -> bool:
    """True when ``role`` may perform ``permission``."""
    return permission in ALLOWED[role]
