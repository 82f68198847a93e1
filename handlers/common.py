"""What every journey shares: the global commands, leaving, and the checks of typed names and ID numbers."""

from __future__ import annotations

import re

from bot.chat.conversation import Context, Route, half_width, list_number, menu, normalise, text_in
from bot.chat.menu import MenuKey
from bot.core.update import Text, Update, UpdateKind
from bot.core.validators import normalize_name

# One set of words for leaving whatever is in progress, and the words that ask what the account can do.
EXIT_WORDS = ("取消", "退出", "结束", "返回")
HELP_WORDS = ("帮助", "菜单", "help")

# Global commands: typed anywhere, they leave the flow in progress (unless its step asks for the word) and
# go where they go outside any flow. The menu's words are its items' labels typed as text.
COMMANDS = menu(*MenuKey) | text_in(*EXIT_WORDS, *HELP_WORDS)

# A name step's answer that is really a question or a request, not a name as on an ID card.
_NOT_A_NAME = re.compile(
    r"[?？]|吗|呢|怎么|什么|为什么|如何|哪|请问|多少|能不能|可以|我要|我想|帮我|你们|接种|疫苗|授权|申领|认证|预约|记录|"
    r"孩子|宝宝|二维码|亮码|客服|人工|电话|手机"
)
# Everyday chat replies that are never a name as written on an ID card (compared whole, as normalised).
_CHAT_WORDS = frozenset(
    normalise(word)
    for word in (
        *"你好 您好 在吗 好的 好 行 嗯 嗯嗯 哦 噢 是 是的 不是 对 对的 不对 谢谢 谢谢你 多谢 收到 知道了".split(),
        *"明白 不知道 没有 不用了 算了 再见 hello hi ok okay yes no thanks".split(),
        "thank you",
    )
)
# Chinese names without a separating dot are short; a longer run of characters is a sentence.
_LONGEST_PLAIN_NAME = 6
_DIGIT = re.compile(r"\d")


def is_choice(update: Update) -> bool:
    """A text that is a list number."""
    return update.kind is UpdateKind.TEXT and list_number(update.text) is not None


async def leave(ctx: Context) -> None:
    """「取消」/「退出」/「结束」/「返回」: the router already left (and noted) the flow; say what is next."""
    ctx.finish()
    ctx.say("left_hint" if ctx.left else "cancelled")


def lines(ctx: Context, *texts: str) -> None:
    """One reply made of several texts (fewer messages: the platforms count them)."""
    ctx.reply(Text("\n".join(texts)))


def name_problem(text: str, bad_format: str) -> str | None:
    """None for a plausible name; else the catalogue key saying what is wrong (``bad_format`` for its shape)."""
    value = half_width(text).strip()
    if _NOT_A_NAME.search(value) or normalise(value) in _CHAT_WORDS:
        return "name_off_topic"
    name = normalize_name(value)
    if name is None:
        return bad_format
    if "·" not in name and " " not in name and len(name) > _LONGEST_PLAIN_NAME and not name.isascii():
        return "name_off_topic"
    return None


def id_number_problem(text: str) -> str | None:
    """``"id_off_topic"`` when a text meant as an ID number has no digit at all (prose, a question…)."""
    return None if _DIGIT.search(half_width(text)) else "id_off_topic"


ROUTES = [Route(text_in(*EXIT_WORDS), leave)]
