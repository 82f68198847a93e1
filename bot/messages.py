"""The message catalogue: every sentence a user reads, in one place (Chinese)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from bot.config import Settings


class Catalogue:
    """Looks up a message by key and fills in its placeholders (``{phone}`` is always known)."""

    def __init__(self, messages: Mapping[str, str], defaults: Mapping[str, Any]) -> None:
        self._messages = messages
        self._defaults = dict(defaults)

    def __call__(self, key: str, **values: Any) -> str:
        """The message ``key`` with ``values`` (and the defaults) filled in."""
        return self._messages[key].format(**{**self._defaults, **values})

    def __contains__(self, key: object) -> bool:
        return key in self._messages

    def keys(self) -> list[str]:
        """Every message key."""
        return list(self._messages)


MESSAGES: Final[dict[str, str]] = {
    # --- welcome and menu ---------------------------------------------------------------
    "welcome": (
        "您好，欢迎关注电子预防接种证助手！\n"
        "电子预防接种证可以替代随身携带的纸质接种证：实名认证后申领本人和孩子的接种证，"
        "授权家人一起查看，到门诊亮码接种，查看接种记录和下一针，预约接种并按时收到提醒。\n\n"
        "实名认证、申领等功能正在陆续开放。现在您可以回复「常见问题」了解申领条件，"
        "有疑问也可以直接发文字问我。"
    ),
    "welcome_back": "欢迎回来！您之前的认证和申领信息都还在。需要什么帮助，直接点下方菜单或回复「帮助」。",
    "help": (
        "我可以帮您办理这些事（点下方菜单即可）：\n"
        "【我的接种证】申领接种证 · 证照授权 · 接种记录\n"
        "【亮码预约】亮码接种 · 预约接种 · 我的预约\n"
        "【帮助】实名认证 · 常见问题 · 联系客服\n\n"
        "也可以直接问我，例如「为什么没有待申领」「信息有误怎么改」「狂犬疫苗记录」。"
    ),
    "fallback": (
        "抱歉，我没太明白您的意思。您可以：\n"
        "· 回复「常见问题」查看大家常问的问题\n"
        "· 点击下方菜单办理申领、授权、亮码、预约\n"
        "· 拨打客服电话 {phone}"
    ),
    "unsupported_message": "抱歉，我暂时只能看懂文字消息。请直接打字告诉我您想办理什么，或点击下方菜单。",
    "image_received": "图片收到了，不过我暂时看不懂图片。请用文字描述您的问题，或回复「常见问题」。",
    "feature_coming": (
        "「{feature}」功能正在建设中，很快就能使用，给您添麻烦了。\n"
        "现在您可以回复「常见问题」了解申领规则，或拨打客服电话 {phone}。"
    ),
    "contact": "客服电话：{phone}。\n接种相关的具体问题，也可以直接联系您建档的预防接种门诊。",
    "scan_unrecognised": "这个二维码我不认识。到门诊接种时，请让工作人员扫描您在本服务里打开的接种码。",
    "error_generic": "抱歉，系统刚才开了个小差，您的操作没有完成。请稍后再试一次；如果一直不行，请拨打客服电话 {phone}。",
    "cancelled": "好的，已退出。需要时随时点菜单或回复「帮助」。",
    "session_expired": "上一步操作已超时，我们重新开始吧。回复「帮助」看看我能做什么。",
    # --- FAQ (answers from the Nantong CDC notice) ---------------------------------------
    "faq_menu": (
        "常见问题，回复数字查看：\n"
        "1. 为什么没有待申领的接种证？\n"
        "2. 信息有误怎么修改？\n"
        "3. 外省来的孩子能申领吗？\n"
        "4. 新生儿什么时候能申领？\n"
        "5. 为什么看不到狂犬疫苗记录？\n"
        "6. 还需要带纸质接种证吗？\n"
        "7. 客服电话\n"
        "回复「退出」结束。"
    ),
    "faq_no_pending": (
        "没有待申领的接种证，通常是这几个原因：\n"
        "1. 儿童需在 {child_date}及以后出生；成人需年满{adult_age}周岁，并有 {adult_date}及以后的接种记录。\n"
        "2. 目前仅{regions}是试点城市，需在试点城市的接种单位建档并在册管理。\n"
        "3. 接种档案登记的身份证号需与您实名认证的身份证号一致；申领孩子的接种证时，孩子的档案里需登记了"
        "父母的有效身份证号，且与您认证的身份证号一致。\n"
        "如果档案信息需要补充，请联系建档的接种门诊，修改后次日生效。"
    ),
    "faq_wrong_info": (
        "接种信息来源于江苏省预防接种管理信息系统，部分历史或省外接种数据可能不够完整准确。"
        "发现信息有误，请联系您的预防接种单位核实，修正后次日生效。"
    ),
    "faq_other_province": (
        "目前仅{regions}是电子预防接种证的试点城市，未在试点城市接种信息系统中登记在册的无法申领。"
        "外地来的适龄儿童，请携带纸质接种证到居住地的儿童预防接种门诊建档登记，提供正确的身份信息，"
        "核对无误后次日即可申领。"
    ),
    "faq_newborn": (
        "新生儿的接种档案需要从产科转入儿童预防接种门诊后才能申领。"
        "请尽快到居住地的儿童预防接种门诊登记建档，并录入父母的身份信息，次日即可申领。"
    ),
    "faq_rabies": (
        "狂犬疫苗的接种信息记录在犬伤预防接种信息系统，和成人/儿童预防接种信息系统是两个系统。"
        "目前电子预防接种证只显示成人/儿童预防接种信息系统里的记录，所以暂时看不到狂犬疫苗记录。"
        "两个系统的数据连通正在进行中。"
    ),
    "faq_paper": (
        "电子预防接种证目前仍在试点，建议近期带孩子接种时继续携带纸质《江苏省儿童预防接种证》。\n"
        "接种记录还没有全国联网：要到外省接种的孩子，出市前请在本地接种单位把纸质接种证补充打印完整；"
        "在外省接种后回来的，也请带上纸质接种证，方便门诊补录外省的接种记录。"
    ),
    "faq_phone": "客服电话：{phone}。",
    # --- ID number and phone validation (used by later journeys) ---------------------------
    "id_length": "身份证号应为18位，您输入的位数不对，请检查后重新输入。",
    "id_chars": "身份证号前17位应为数字，最后一位是数字或字母X，请检查后重新输入。",
    "id_birth_date": "身份证号中的出生日期不正确，请检查后重新输入。",
    "id_check_char": "身份证号最后一位校验码不对，可能有一位输错了，请仔细核对后重新输入。",
    "phone_invalid": "手机号格式不对，请输入11位手机号码（例如 138 0000 0000）。",
    # --- words on Alipay's message cards ---------------------------------------------------
    "card_action_details": "查看详情",
    "card_action_image": "查看大图",
    "card_image_title": "请查看图片",
}


# Region codes of pilot cities (the first four digits of an ID number or a clinic's region code).
REGION_NAMES: Final[dict[str, str]] = {"3206": "南通市", "3202": "无锡市", "3201": "南京市", "3205": "苏州市"}


def _chinese_date(value: date) -> str:
    return f"{value.year}年{value.month}月{value.day}日"


def build_catalogue(settings: Settings) -> Catalogue:
    """The catalogue with this deployment's phone, pilot regions and claim dates filled in."""
    regions = "、".join(REGION_NAMES.get(code, code) for code in settings.pilot_regions)
    return Catalogue(
        MESSAGES,
        {
            "phone": settings.customer_service_phone,
            "regions": regions,
            "child_date": _chinese_date(settings.child_born_on_or_after),
            "adult_date": _chinese_date(settings.adult_dose_on_or_after),
            "adult_age": settings.adult_min_age,
        },
    )
