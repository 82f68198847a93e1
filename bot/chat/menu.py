"""The account menu, shared by every platform: (group, [(label, key)])."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class MenuKey(StrEnum):
    """Keys the platforms send back when a menu item is tapped."""

    CLAIM = "CERT_CLAIM"
    GRANT = "CERT_GRANT"
    RECORDS = "CERT_RECORDS"
    SHOW_CODE = "CODE_SHOW"
    BOOK = "BOOK_NEW"
    MY_BOOKINGS = "BOOK_MINE"
    VERIFY = "HELP_VERIFY"
    FAQ = "HELP_FAQ"
    CONTACT = "HELP_CONTACT"
    ACCOUNTS = "HELP_ACCOUNTS"


MENU: list[tuple[str, list[tuple[str, MenuKey]]]] = [
    (
        "我的接种证",
        [("申领接种证", MenuKey.CLAIM), ("证照授权", MenuKey.GRANT), ("接种记录", MenuKey.RECORDS)],
    ),
    (
        "亮码预约",
        [("亮码接种", MenuKey.SHOW_CODE), ("预约接种", MenuKey.BOOK), ("我的预约", MenuKey.MY_BOOKINGS)],
    ),
    # Four of the five items both platforms allow under one button (WeChat: 3 × 5, Alipay: 4 × 5).
    (
        "帮助",
        [
            ("实名认证", MenuKey.VERIFY),
            ("常见问题", MenuKey.FAQ),
            ("联系客服", MenuKey.CONTACT),
            ("我的账号", MenuKey.ACCOUNTS),
        ],
    ),
]

LABELS: dict[str, str] = {key.value: label for _, items in MENU for label, key in items}


def wechat_menu() -> dict[str, Any]:
    """The body of WeChat's ``menu/create``."""
    return {
        "button": [
            {
                "name": group,
                "sub_button": [{"type": "click", "name": label, "key": key.value} for label, key in items],
            }
            for group, items in MENU
        ]
    }


def alipay_menu() -> dict[str, Any]:
    """The body of Alipay's ``alipay.open.public.menu.create``: a text menu whose taps arrive as ``click``.

    A group with sub-buttons carries only its name; each sub-button is an ``out`` (event) button whose
    ``action_param`` comes back as the click's ActionParam.
    """
    return {
        "type": "text",
        "button": [
            {
                "name": group,
                "sub_button": [
                    {"name": label, "action_type": "out", "action_param": key.value} for label, key in items
                ],
            }
            for group, items in MENU
        ],
    }
