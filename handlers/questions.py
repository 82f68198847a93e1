"""Journey 12: free-text questions answered from the seed FAQ; a numbered FAQ menu; never silence."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.chat.conversation import Context, Flow, Route, Router, State, StatesGroup, menu, normalise, text_in
from bot.chat.menu import LABELS, MenuKey
from bot.core.update import Update, UpdateKind

# Order matters: the first topic whose keywords appear wins ("外省的新生儿" is about moving provinces).
TOPICS: list[tuple[str, tuple[str, ...]]] = [
    ("faq_rabies", ("狂犬", "犬伤", "被狗咬", "被猫")),
    ("faq_other_province", ("外省", "省外", "外地", "外市", "搬家", "异地")),
    ("faq_newborn", ("新生儿", "刚出生", "产科", "出生证", "宝宝刚")),
    ("faq_phone", ("客服", "人工", "投诉")),
    ("faq_wrong_info", ("信息有误", "信息错", "错误", "修改", "更正", "记录不全", "少了")),
    (
        "faq_no_pending",
        ("待申领", "没有接种证", "申领不了", "领不了", "无法申领", "找不到", "看不到接种证", "申领条件"),
    ),
    ("faq_paper", ("纸质", "纸本", "小本", "接种本")),
    ("faq_phone", ("电话",)),
]
_TOPIC_WORDS = [(key, tuple(normalise(word) for word in words)) for key, words in TOPICS]
NUMBERED = [
    "faq_no_pending",
    "faq_wrong_info",
    "faq_other_province",
    "faq_newborn",
    "faq_rabies",
    "faq_paper",
    "faq_phone",
]


class FaqSteps(StatesGroup):
    """The numbered FAQ menu."""

    choosing = State()


async def show_faq(ctx: Context) -> None:
    """List the common questions and wait for a number."""
    ctx.say("faq_menu")
    ctx.goto(FaqSteps.choosing)


_CHOICE = re.compile(r"^(?:第)?([1-7])(?:[.、。)）号个条]|题)?$")


def faq_choice(text: str) -> int | None:
    """The FAQ number in "3", "３", "3.", "第3个"…, or None."""
    match = _CHOICE.match(normalise(text))
    return int(match.group(1)) if match else None


def on_choice(update: Update) -> bool:
    """Matches a numbered choice or a question on a known topic (anything else leaves the menu's hands)."""
    return update.kind is UpdateKind.TEXT and (faq_choice(update.text) is not None or on_known_topic(update))


async def answer_number(ctx: Context) -> None:
    """Answer the numbered question (staying in the menu), or a free-text question on a known topic."""
    choice = faq_choice(ctx.update.text)
    if choice is not None:
        ctx.say(NUMBERED[choice - 1])
        ctx.goto(FaqSteps.choosing)
        return
    key = match_topic(ctx.update.text)
    assert key is not None
    ctx.say(key)
    ctx.finish()


def match_topic(text: str) -> str | None:
    """The catalogue key of the FAQ answer a free-text question is about, if any."""
    cleaned = normalise(text)
    for key, words in _TOPIC_WORDS:
        if any(word in cleaned for word in words):
            return key
    return None


def on_known_topic(update: Update) -> bool:
    """Matches a text message about one of the FAQ topics."""
    return update.kind is UpdateKind.TEXT and match_topic(update.text) is not None


async def answer_topic(ctx: Context) -> None:
    """A free-text question on a known topic."""
    key = match_topic(ctx.update.text)
    assert key is not None
    ctx.say(key)


async def contact(ctx: Context) -> None:
    """The customer-service phone."""
    ctx.say("contact")


FLOW = Flow(
    name="faq",
    title=LABELS[MenuKey.FAQ],
    entry_points=[Route(menu(MenuKey.FAQ) | text_in("问题", "faq"), show_faq)],
    states={FaqSteps.choosing: [Route(on_choice, answer_number)]},
    timeout=timedelta(minutes=10),
)

router = Router("questions")
router.include(FLOW)
router.add([Route(menu(MenuKey.CONTACT), contact), Route(on_known_topic, answer_topic)])
