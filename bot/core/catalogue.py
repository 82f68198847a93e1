"""The message catalogue: every sentence a user reads, in one place (Chinese)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from bot.core.config import Settings


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
        "第一步，回复「实名认证」完成人脸识别，然后点「申领接种证」。"
        "想先了解申领条件，可以回复「常见问题」，有疑问也可以直接发文字问我。"
    ),
    "welcome_back": "欢迎回来！您之前的认证和申领信息都还在。需要什么帮助，直接点下方菜单或回复「帮助」。",
    "help": (
        "我可以帮您办理这些事（点下方菜单即可）：\n"
        "【我的接种证】申领接种证 · 证照授权 · 接种记录\n"
        "【亮码预约】亮码接种 · 预约接种 · 我的预约\n"
        "【帮助】实名认证 · 常见问题 · 联系客服 · 我的账号\n\n"
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
    "left_flow": "已退出{flow}。",
    "left_flow_unsaved": "已退出{flow}，刚才填写的信息没有保存。",
    "restart_flow_unsaved": "刚才填写的信息没有保存，我们重新开始{flow}。",
    "left_hint": "需要时随时点菜单或回复「帮助」。",
    "name_off_topic": (
        "这里需要填写姓名（与身份证上一致），您发的内容看起来不像姓名。\n"
        "请重新输入姓名；想办理别的事，请回复「取消」退出，或直接点下方菜单。"
    ),
    "id_off_topic": (
        "这里需要填写18位身份证号（数字，最后一位可能是X）。\n"
        "请重新输入身份证号；想办理别的事，请回复「取消」退出，或直接点下方菜单。"
    ),
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
    # --- real-name verification (实名认证) -----------------------------------------------
    "verify_intro": (
        "实名认证需要核对您的姓名、身份证号，并完成一次人脸识别。信息只用于办理电子预防接种证，全程加密保存。\n"
        "请输入您的姓名（随时回复「取消」可退出）："
    ),
    "verify_bad_name": "姓名格式好像不对，请输入身份证上的姓名（2～20个字）；回复「取消」可退出。",
    "verify_timed_out": "实名认证等待时间过长，刚才填写的信息没有保存。请回复「实名认证」重新开始。",
    "verify_ask_id": "请输入您本人的18位身份证号（回复「上一步」可重新输入姓名）：",
    "verify_already": "您已完成实名认证（{name}，{id}）。回复「申领接种证」查看可申领的接种证。",
    "verify_link_title": "点击进行人脸识别",
    "verify_link_description": "将以 {name}（{id}）进行认证。链接{minutes}分钟内有效，只能使用一次。",
    "verify_link_sent": (
        "请点击上方链接，按提示完成人脸识别，完成后我会告诉您结果。\n链接过期或没有收到结果，回复「实名认证」重新获取。"
    ),
    "verify_tier_birth_certificate": (
        "{age}周岁的用户需要通过出生医学证明信息核验身份，这项服务暂未开通。"
        "孩子的接种证请由父母或监护人实名认证后申领。"
    ),
    "verify_tier_household": (
        "{age}周岁及以上的用户需要通过户籍信息核验身份，这项服务暂未开通。"
        "可以请家人在「证照授权」中为您授权查看，或到接种门诊现场办理。客服电话 {phone}。"
    ),
    "verify_passed": "实名认证成功！您已认证为 {name}（{id}）。\n回复「申领接种证」查看可以申领的接种证。",
    "verify_passed_granted": (
        "实名认证成功！您已认证为 {name}（{id}）。\n"
        "家人已授权您查看{children}的电子预防接种证，现在您可以：\n"
        "· 回复「接种记录」查看接种记录和下一针\n"
        "· 带孩子到门诊接种时点「亮码接种」出示接种码\n"
        "本人或孩子的接种证还没有申领的，可以回复「申领接种证」查看。"
    ),
    "verify_failed": (
        "人脸识别没有通过，实名认证未完成。请确认是本人操作、光线充足、正对镜头，然后回复「实名认证」重新认证。"
    ),
    "verify_mismatch": (
        "人脸识别的结果与您填写的姓名、身份证号不一致，实名认证未完成。"
        "请核对后回复「实名认证」重新认证；替家人办理，请由家人本人认证。"
    ),
    "verify_needed": "这项服务需要先完成实名认证。回复「实名认证」开始，只需填写姓名、身份证号并完成一次人脸识别。",
    "page_home_title": "电子预防接种证助手",
    "page_home": "请在微信服务号或支付宝生活号「电子预防接种证助手」中查看接种记录、亮码接种。",
    "page_verify_title": "电子预防接种证 · 实名认证",
    "page_verify_invalid": "这个认证链接无效。请回到聊天窗口，回复「实名认证」获取新的链接。",
    "page_verify_used": "这个认证链接已经使用过了。请回到聊天窗口查看认证结果；需要重新认证，请回复「实名认证」。",
    "page_verify_expired": "这个认证链接已过期。请回到聊天窗口，回复「实名认证」获取新的链接。",
    "page_verify_unavailable": "人脸识别服务暂时无法打开，请稍后再点一次链接。一直不行请拨打客服电话 {phone}。",
    "page_verify_pending": "暂时还没有拿到认证结果，请稍等几秒后刷新本页面。",
    "page_verify_passed": "实名认证成功！请返回聊天窗口，继续申领电子预防接种证。",
    "page_verify_failed": "人脸识别没有通过。请返回聊天窗口，回复「实名认证」重新认证。",
    "page_verify_mismatch": "人脸识别结果与填写的信息不一致，认证未完成。请返回聊天窗口，回复「实名认证」重新认证。",
    "page_verify_app": "请在小程序中打开完成人脸识别。",
    # A verification link works only for the chat account that asked for it (checked by web authorisation).
    "page_verify_reopen": "无法确认打开链接的账号。请回到聊天窗口，重新点击认证链接；链接失效的话，回复「实名认证」获取新的链接。",
    "page_verify_other_account_wechat": (
        "请在发起认证的微信中打开此链接。为保护您的信息，本次认证已停止；如需认证，请在您自己的微信中回复「实名认证」。"
    ),
    "page_verify_other_account_alipay": (
        "请在发起认证的支付宝中打开此链接。为保护您的信息，本次认证已停止；"
        "如需认证，请在您自己的支付宝中回复「实名认证」。"
    ),
    "verify_other_account_wechat": (
        "您的实名认证链接在另一个微信中被打开了，为保护您的信息，本次认证已停止。"
        "认证链接请不要转发给他人；如需继续，请回复「实名认证」获取新的链接，并在本微信中打开。"
    ),
    "verify_other_account_alipay": (
        "您的实名认证链接在另一个支付宝账号中被打开了，为保护您的信息，本次认证已停止。"
        "认证链接请不要转发给他人；如需继续，请回复「实名认证」获取新的链接，并在本支付宝中打开。"
    ),
    # --- my accounts (我的账号): the chat accounts bound to one person ---------------------------
    "accounts_platform_wechat": "微信",
    "accounts_platform_alipay": "支付宝",
    "accounts_time": "{year}年{month}月{day}日 {hour:02d}:{minute:02d}",
    "accounts_bound_notice": (
        "【账号安全提醒】您的实名信息于{time}（北京时间）在{platform}绑定了一个新账号（{user}）。\n"
        "如果是您本人操作，不需要处理。\n"
        "如果不是您本人：请回复「我的账号」查看并解绑这个账号，并尽快拨打客服电话 {phone}。"
    ),
    "accounts_unbound_notice": (
        "【账号安全提醒】{time}（北京时间），{actor_platform}账号（{actor_user}）解绑了您实名信息下的"
        "{platform}账号（{user}），那个账号已不能再查看您和孩子的接种证。\n"
        "如果是您本人操作，不需要处理。\n"
        "如果不是您本人：请尽快拨打客服电话 {phone}；被解绑的账号回复「实名认证」即可重新认证。"
    ),
    "accounts_need_verify": (
        "「我的账号」可以查看和解绑与您实名信息绑定的微信、支付宝账号，需要先完成实名认证。\n回复「实名认证」即可开始。"
    ),
    "accounts_head": "与您实名信息绑定的账号：",
    "accounts_item": "{number}. {platform}账号 {user}，绑定于{time}{current}",
    "accounts_item_no_time": "{number}. {platform}账号 {user}{current}",
    "accounts_current": "（当前账号）",
    "accounts_foot": (
        "要解绑哪个账号，请回复它的序号（例如 2）；解绑后，那个账号就不能再查看您和孩子的接种证。回复「退出」结束。\n"
        "发现不认识的账号，请解绑后拨打客服电话 {phone}。"
    ),
    "accounts_choice_invalid": "请回复列表中的序号（例如 1），或回复「退出」。",
    "accounts_confirm": (
        "确定解绑{platform}账号 {user} 吗？解绑后，这个账号将不能再查看您和孩子的接种证、接种记录和授权，也不能亮码；"
        "以后想在那个账号上使用，需要重新实名认证。\n"
        "确认请回复「确认解绑」；不解绑请回复「上一步」返回列表，或回复「取消」。"
    ),
    "accounts_confirm_current": (
        "注意：您选择的是正在使用的这个{platform}账号（{user}）。解绑后，这个账号会立即不能再查看您和孩子的接种证、"
        "接种记录和授权，也不能亮码；想继续使用，需要重新完成实名认证。\n"
        "确认请回复「确认解绑」；不解绑请回复「上一步」返回列表，或回复「取消」。"
    ),
    "accounts_confirm_hint": "请回复「确认解绑」解绑这个账号，回复「上一步」返回列表，或回复「取消」。",
    "accounts_unbound": (
        "已解绑{platform}账号 {user}，它不能再查看您的接种证了。回复「我的账号」可以再次查看。\n"
        "如果这个账号不是您本人的，请拨打客服电话 {phone} 说明情况。"
    ),
    "accounts_unbound_current": (
        "已解绑当前账号，这个账号现在不能再查看您和孩子的接种证了。需要时回复「实名认证」重新认证即可。"
    ),
    "accounts_gone": "这个账号已经没有绑定您的实名信息了，不需要再解绑。",
    # --- pending list and claiming (待申领 → 申领) ----------------------------------------
    "relation_self": "本人",
    "relation_child": "子女",
    "claim_list_head": "您可以申领的电子预防接种证：",
    "claim_list_item": "{number}. {name}（{relation}，{id}）",
    "claim_list_foot": "回复序号查看并申领，回复「退出」结束。",
    "claim_others_head": "其他与您有关的接种档案：",
    "claim_line_mine": "· {name}（{relation}）：已申领，可在「接种记录」查看",
    "claim_line_granted": "· {name}（{relation}）：已由家人申领并授权给您，可在「接种记录」查看",
    "claim_line_taken": "· {name}（{relation}）：已由其他家人申领。一个孩子的接种证只能由一位家人申领，请申领的家人在「证照授权」中为您授权",
    "claim_line_ineligible": "· {name}（{relation}）：暂不能申领，{reason}",
    "claim_not_pilot": "建档单位不在试点城市（目前仅{regions}）",
    "claim_born_too_early": "{child_date}之前出生的儿童暂不能申领",
    "claim_newborn_wait": "档案还在产科，转入儿童预防接种门诊后次日即可申领",
    "claim_minor_self": "未满{adult_age}周岁，需由父母或监护人申领",
    "claim_no_recent_dose": "需要有{adult_date}及以后的接种记录",
    "claim_none_found": "没有找到与您身份证号关联的接种档案。",
    "claim_choice_invalid": "请回复列表中的序号（例如 1），或回复「退出」。",
    "claim_confirm": (
        "请核对接种证信息：\n"
        "姓名：{name}\n"
        "身份证号：{id}\n"
        "出生年月：{birth}\n"
        "建档单位：{clinic}\n\n"
        "{consent}"
        "确认无误请回复「同意并申领」。信息有误请联系建档门诊修改（次日生效）；回复「退出」结束。"
    ),
    "claim_consent_child": "申领孩子的接种证，表示您作为监护人同意本服务按照《个人信息保护法》处理孩子的接种信息，用于查看记录、亮码接种和接收提醒。\n\n",
    "claim_consent_adult": "申领后，本服务将按照《个人信息保护法》处理您的接种信息，用于查看记录、亮码接种和接收提醒。\n\n",
    "claim_confirm_hint": "请回复「同意并申领」完成申领，或回复「退出」。",
    "claim_success": (
        "电子预防接种证申领成功！\n{name}的接种证已加入您的账户，现在可以：\n"
        "· 回复「接种记录」查看已接种的疫苗\n"
        "{grant_hint}"
        "· 到门诊接种时点「亮码接种」"
    ),
    "claim_success_grant_hint": "· 点「证照授权」让家人一起查看\n",
    "claim_taken_now": (
        "抱歉，{name}的接种证刚刚已被其他家人申领。一个孩子的接种证只能由一位家人申领，"
        "请申领的家人在「证照授权」中为您授权，授权后您也能查看。"
    ),
    "claim_gone": "这份档案现在不能申领了，我们重新看一下列表吧。",
    # --- ID number and phone validation (used by later journeys) ---------------------------
    "id_length": "身份证号应为18位，您输入的位数不对，请检查后重新输入。",
    "id_chars": "身份证号前17位应为数字，最后一位是数字或字母X，请检查后重新输入。",
    "id_birth_date": "身份证号中的出生日期不正确，请检查后重新输入。",
    "id_check_char": "身份证号最后一位校验码不对，可能有一位输错了，请仔细核对后重新输入。",
    "phone_invalid": "手机号格式不对，请输入11位手机号码（例如 138 0000 0000）；回复「取消」可退出。",
    # --- family authorisation and records ------------------------------------------------
    "grant_need_verify": (
        "证照授权需要先完成实名认证，这样我们才能确认您是孩子接种证的申领人。\n"
        "回复「实名认证」即可开始，按提示填写姓名、身份证号并完成认证。"
    ),
    "grant_no_child_certificate": (
        "只有孩子电子预防接种证的申领人，才能授权家人一起查看；成人本人的接种证不能授权给他人。\n"
        "您目前还没有申领孩子的接种证。如果孩子的接种档案登记了您的身份证号，可以回复「申领接种证」先申领。"
    ),
    "grant_granted_to_you": "家人已授权您查看{names}的接种证，回复「接种记录」就能查看，不需要再授权。",
    "grant_pick_head": "您申领了这几位孩子的接种证，请回复序号，选择要管理授权的一位：",
    "grant_pick_item": "{number}. {name}（{id}）",
    "grant_pick_invalid": "请回复列表中的序号（例如 1），或回复「退出」。",
    "grant_overview_head": "{name}（{id}）的电子预防接种证\n已授权 {count}/{limit} 人",
    "grant_overview_item": "{number}. {name} · {relationship} · {phone}",
    "grant_overview_empty": "目前还没有授权家人。",
    "grant_overview_options": (
        "回复「添加」授权一位家人；回复「撤销」加序号取消授权（例如「撤销1」）；回复「退出」结束。\n"
        "被授权的家人完成实名认证后，可以查看孩子的接种记录、亮码接种，但不能再授权给别人。"
    ),
    "grant_overview_options_full": (
        "已达到{limit}人的上限。如需授权新的家人，请先撤销一位（例如回复「撤销1」）；回复「退出」结束。"
    ),
    "grant_manage_hint": "回复「添加」授权家人，回复「撤销」加序号取消授权（例如「撤销1」），或回复「退出」结束。",
    "grant_ask_name": "请输入要授权的家人的姓名，与身份证上一致（回复「上一步」返回，回复「取消」退出）：",
    "grant_ask_id_again": "请重新输入要授权的家人的身份证号，或回复「上一步」返回。",
    "grant_is_child": "这是孩子本人的身份证号。请输入要授权的家人（例如祖父母）的身份证号。",
    "grant_ask_id": "请输入这位家人的18位身份证号（回复「上一步」可重新输入姓名）：",
    "grant_bad_name": (
        "姓名格式好像不对：请输入2～20个字的姓名，可以是中文，外文姓名可用字母和「·」；回复「取消」可退出。"
    ),
    "grant_ask_relationship": "这位家人是孩子的什么人？请回复序号或称呼：\n{choices}\n（回复「上一步」可重新输入身份证号）",
    "grant_bad_relationship": "请回复1～7的序号，或直接回复称呼（例如「祖母」）；回复「取消」可退出。",
    "grant_timed_out": "证照授权等待时间过长，刚才填写的信息没有保存。需要时请点菜单「证照授权」重新开始。",
    "grant_ask_phone": "请输入这位家人的11位手机号（回复「上一步」可重新选择关系）：",
    "grant_confirm": (
        "请核对授权信息：\n"
        "孩子：{child}\n"
        "家人：{name}（{relationship}）\n"
        "身份证号：{id}\n"
        "手机号：{phone}\n\n"
        "授权后，这位家人完成实名认证就能查看{child}的接种记录、亮码接种，但不能再授权给别人。\n"
        "确认无误请回复「确认授权」；需要修改请回复「上一步」；回复「取消」放弃。"
    ),
    "grant_confirm_hint": "请回复「确认授权」完成授权，回复「上一步」修改，或回复「取消」放弃。",
    "grant_added": "已授权{name}（{relationship}）查看{child}的电子预防接种证，目前已授权 {count}/{limit} 人。",
    "grant_added_notified": "我们已发消息告诉TA，TA回复「接种记录」就能查看。",
    "grant_added_not_yet": (
        "TA还没有在本服务完成实名认证：请TA在微信或支付宝关注「电子预防接种证助手」并完成实名认证，之后就能看到了。"
    ),
    "grant_added_more": "回复「添加」继续授权，回复「退出」结束。",
    "grant_notice_grantee": (
        "您好！{holder}已授权您查看{child}的电子预防接种证。\n"
        "回复「接种记录」即可查看孩子的接种记录；带孩子去门诊接种时，也可以点「亮码接种」。"
    ),
    "grant_already_done": "这位家人已经授权好了，不需要再确认。回复「添加」继续授权，回复「退出」结束。",
    "grant_self": "不能授权给您自己：您是申领人，本来就能查看。",
    "grant_duplicate": "这位家人已经被授权查看这份接种证了，不需要重复授权。",
    "grant_full": "每份接种证最多授权{limit}位家人，现在已经满了。如需授权新的家人，请先撤销一位（例如回复「撤销1」）。",
    "grant_adult_refused": "成人本人的电子预防接种证不能授权给他人查看。",
    "grant_not_holder": "只有这份接种证的申领人才能管理授权。",
    "grant_gone": "这份接种证现在不能管理授权了，请重新点菜单「证照授权」查看。",
    "grant_revoke_which": "请在「撤销」后面加上序号，例如「撤销1」。",
    "grant_revoke_no_such": "没有第{number}位授权的家人，请对照列表中的序号重新回复（例如「撤销1」）。",
    "grant_revoke_confirm": (
        "确定撤销{name}（{relationship}）查看{child}接种证的授权吗？撤销后TA就不能再查看了。\n"
        "确认请回复「确认撤销」；不撤销请回复「上一步」。"
    ),
    "grant_revoke_confirm_hint": "请回复「确认撤销」撤销授权，或回复「上一步」返回。",
    "grant_revoked": "已撤销{name}（{relationship}）的授权，TA不能再查看{child}的接种证了。目前已授权 {count}/{limit} 人。",
    "grant_revoked_already": "这项授权已经撤销了，不需要再操作。回复「添加」授权家人，或回复「退出」结束。",
    "grant_notice_revoked": (
        "您好，{holder}已撤销您查看{child}电子预防接种证的授权，您将不能再查看这份接种证。如有疑问，请与孩子的家人联系。"
    ),
    "relationship_father": "父亲",
    "relationship_mother": "母亲",
    "relationship_grandfather": "祖父",
    "relationship_grandmother": "祖母",
    "relationship_mat_grandfather": "外祖父",
    "relationship_mat_grandmother": "外祖母",
    "relationship_guardian": "其他监护人",
    "records_need_verify": (
        "查看接种记录需要先完成实名认证，这样我们才能确认哪些接种证属于您。\n回复「实名认证」即可开始。"
    ),
    "records_none": (
        "您还没有可以查看的电子预防接种证。\n"
        "· 本人或孩子的接种证：回复「申领接种证」，申领后就能查看；\n"
        "· 孩子的接种证已由其他家人申领：请TA在「证照授权」中为您授权，授权后回复「接种记录」即可查看。"
    ),
    "records_pick_head": "请回复序号，选择要查看的接种证：",
    "records_pick_item": "{number}. {name}（{role}）",
    "records_pick_invalid": "请回复列表中的序号（例如 1），或回复「退出」。",
    "pick_gone": "您选择的这本接种证现在已无法查看（授权可能已被取消）。",
    "records_role_self": "本人",
    "records_role_child": "子女",
    "records_role_granted": "已授权",
    "records_header": "{name}的接种记录\n身份证号：{id}\n出生年月：{birth}",
    "records_header_more": "{name}的接种记录（续）",
    "records_birth": "{year}年{month}月",
    "records_date": "{year}年{month}月{day}日",
    "records_vaccine": "【{vaccine}】",
    "records_dose": "第{number}剂　{date}　{clinic}",
    "records_dose_no_clinic": "第{number}剂　{date}",
    "records_empty": "暂时还没有可以显示的接种记录。在门诊新登记或更正的记录，次日就能看到。",
    "records_next_head": "【下一针】按国家免疫规划儿童免疫程序推算：",
    "records_next_overdue": "· {vaccine} 第{number}剂：已逾期（应在{past_due}前完成），请尽快联系接种门诊补种",
    "records_next_due": "· {vaccine} 第{number}剂：现在可以接种",
    "records_next_upcoming": "· {vaccine} 第{number}剂：{date}起可以接种",
    "records_next_more": "· 另有{count}剂在更晚的时候，临近时可再点「接种记录」查看。",
    "records_next_none": "国家免疫规划疫苗目前没有需要接种的，按时接种，真棒！",
    "records_next_note_needs_ppd": "（需先做结核菌素皮试，阴性才能补种）",
    "records_next_footer": (
        "下一针按国家免疫程序推算，仅供参考，请以接种门诊的告知为准；自费疫苗不在推算之列。"
        "扫接种码接种的记录马上显示；其他来源的记录次日显示，推算也随之更新。"
    ),
    "records_footer": (
        "狂犬疫苗的接种记录在犬伤预防接种信息系统，这里不显示。\n记录有误请联系接种门诊核实，修正后次日生效。"
    ),
    # --- show code (亮码接种) ----------------------------------------------------------------
    "code_need_verify": (
        "出示接种码需要先完成实名认证，这样我们才能确认哪些接种证属于您。\n回复「实名认证」即可开始。"
    ),
    "code_none": (
        "您还没有可以出示接种码的电子预防接种证。\n"
        "· 本人或孩子的接种证：回复「申领接种证」，申领后就能亮码接种；\n"
        "· 孩子的接种证已由其他家人申领：请TA在「证照授权」中为您授权，授权后就能带孩子亮码接种。"
    ),
    "code_pick_head": "请回复序号，选择要出示哪本接种证的接种码：",
    "code_caption": (
        "{name}的接种码\n身份证号：{id}\n"
        "到接种门诊后，请出示下面的二维码，由工作人员扫码取号。\n"
        "· 二维码{minutes}分钟内有效，扫码取号后即失效；需要时点菜单「亮码接种」再取一个。\n"
        "· 二维码里没有个人信息，但请不要转发给他人。"
    ),
    "code_page_link_title": "打开{name}的接种码页面",
    "code_page_link_description": "在页面上出示接种码，二维码会自动更新。链接{minutes}分钟内有效，请勿转发。",
    "page_code_title": "电子预防接种证 · 接种码",
    "page_code_who": "{name}　身份证号：{id}",
    "page_code_hint": "请向接种门诊工作人员出示此码，二维码会自动更新。",
    "page_code_warning": "二维码里没有个人信息，扫码取号后即失效。请勿截图转发给他人。",
    "page_code_offline": "网络好像断开了，恢复后二维码会自动更新。",
    "page_code_invalid": "这个接种码链接无效。请回到聊天窗口，点菜单「亮码接种」重新打开。",
    "page_code_expired": "这个接种码页面已过期。请回到聊天窗口，点菜单「亮码接种」重新打开。",
    "page_code_revoked": "您已不能出示这本接种证的接种码（授权可能已被取消）。如有疑问，请联系接种证的申领人。",
    "page_code_busy": "打开得太频繁了，请稍等一分钟再刷新页面。",
    # --- dose reminders (template messages) --------------------------------------------------
    "reminder_first_late": "{name}有疫苗已经逾期，请尽快补种",
    "reminder_first_now": "{name}有疫苗可以接种了",
    "reminder_first_soon": "{name}有疫苗快到接种时间了",
    "reminder_dose": "{vaccine}第{number}剂",
    "reminder_dose_from": "（{month}月{day}日起）",
    "reminder_doses_many": "{first}等{count}剂",
    "reminder_when_late": "已逾期，请尽快接种",
    "reminder_when_now": "现在就可以接种",
    "reminder_when_from": "{month}月{day}日起可以接种",
    "reminder_remark": "请带孩子到接种门诊接种，到门诊后点菜单「亮码接种」出示接种码。时间按国家免疫程序推算，请以门诊告知为准。",
    # --- the clinic desk (取号) ---------------------------------------------------------------
    "desk_queued": "{name}已在{clinic}取号，排队号：{number}号。\n请留意叫号，叫到后到登记台登记。",
    "desk_ticket": "取号成功：{number}号\n{name}　身份证号：{id}　出生年月：{birth}\n出示人：{role}",
    "desk_ticket_again": "今天已经取过号：{number}号（没有重复排队）\n{name}　身份证号：{id}　出生年月：{birth}",
    "desk_role_holder": "申领人",
    "desk_role_grantee": "被授权家人",
    "desk_code_malformed": "这不是电子预防接种证的接种码，请出示人打开「亮码接种」后重新扫码。",
    "desk_code_forged": "接种码校验失败，可能被篡改。请出示人在「亮码接种」重新取码。",
    "desk_code_expired": "接种码已过期，请出示人点「亮码接种」重新取码。",
    "desk_code_unknown": "查不到这个接种码，请出示人点「亮码接种」重新取码。",
    "desk_code_used": "这个接种码已经用过了，请出示人点「亮码接种」重新取码。",
    "desk_code_no_access": "出示人已无权使用这本接种证（授权可能已被取消），请核实后由申领人亮码。",
    "desk_clinic_not_pilot": (
        "门诊 {clinic} 不在电子预防接种证的试点地区（目前仅{regions}），暂不能扫码取号。"
        "接种码没有使用，请按原来的方式为受种者登记。"
    ),
    # --- the command line (a nurse at the desk reads Chinese; operator lines add English) ----
    "cli_port_in_use": (
        "vaxbot：端口 {port} 已被占用，服务没有启动。请先关掉占用它的程序，或用 --port（或 VAXBOT_PORT）换一个端口。"
        " / vaxbot: port {port} is already in use ({address}); nothing was started."
    ),
    "cli_cannot_listen": (
        "vaxbot：无法在 {address} 上监听，服务没有启动，请检查 --host 和 --port。"
        " / vaxbot: cannot listen on {address}: {reason}; nothing was started."
    ),
    "cli_config_error": "vaxbot: {problem}（配置有误，没有运行：请按这行说明修改设置后重试）",
    "cli_database_error": (
        "vaxbot：连接不上数据库或数据库还没有准备好，这次没有取号。请联系系统管理员。"
        " / vaxbot: database error ({problem}); run `vaxbot init` or check VAXBOT_DATABASE_URL."
    ),
    "cli_scan_prompt": "请扫描接种码（或粘贴扫码得到的文字），然后按回车：",
    "cli_scan_empty": "没有读到接种码，请重新扫描出示人的接种码。",
    "cli_clinic_unknown": "找不到门诊代码为 {clinic} 的接种门诊，请核对 --clinic 后重试（这次没有取号）。",
    # --- words on Alipay's message cards ---------------------------------------------------
    "card_action_details": "查看详情",
    "card_action_image": "查看大图",
    "card_image_title": "请查看图片",
    # --- the development front page and sandbox (development only) ----------------------------
    "page_home_sandbox": "开发环境：打开体验沙盒，在浏览器里扮演微信或支付宝用户，和助手对话",
    "sandbox_me_follow": "［关注］",
    "sandbox_me_unfollow": "［取消关注］",
    "sandbox_me_enter": "［进入生活号］",
    "sandbox_me_menu": "［菜单］{label}",
    "sandbox_send_failed": "发送失败：{error}",
    "sandbox_reminders_sent": "已快进到提醒时间：发出 {count} 条提醒",
    "sandbox_reset_confirm": (
        "重置演示会清空开发数据库里的全部数据（认证、申领、授权、对话、待发消息和审计记录），"
        "重新载入演示数据，并清空所有聊天记录。确定重置吗？"
    ),
    "sandbox_reset_done": "演示已重置：数据回到初始状态，聊天记录已清空，可以从头开始了。",
    "sandbox_reset_failed": "重置没有成功，请查看服务日志后再试。",
    "sandbox_template_reminder": "接种提醒",
    "sandbox_template_other": "模板消息",
    "sandbox_template_keyword1": "接种对象",
    "sandbox_template_keyword2": "待种疫苗",
    "sandbox_template_keyword3": "接种时间",
    "sandbox_template_link": "详情",
    # --- the mini programs (微信小程序 chat and face, the pages' JSON API, subscription messages) -------
    "accounts_platform_wxmini": "微信小程序",
    "accounts_platform_alipaymini": "支付宝小程序",
    "verify_other_account_wxmini": (
        "刚才的人脸识别不是由发起认证的微信账号完成的，这次认证已作废。"
        "请在小程序里重新点「实名认证」，由本人完成；链接和页面请不要转发给他人。"
    ),
    "page_verify_other_account_wxmini": "这次认证必须由发起认证的微信用户本人完成，已作废。请回到小程序重新发起。",
    "mp_error_unauthorised": "登录已失效，请重新打开小程序。",
    "mp_error_rate_limited": "操作太频繁了，请稍等一会儿再试。",
    "mp_error_bad_request": "请求内容不完整或格式不对，请返回上一页重新操作。",
    "mp_error_login_code_invalid": "登录没有成功，请关闭小程序后重新打开。",
    "mp_error_login_code_used": "这次登录已经用过了，请关闭小程序后重新打开。",
    "mp_error_platform_unavailable": "服务暂时繁忙，请稍后再试；如一直不行，可拨打 {phone}。",
    "mp_error_channel_off": "这个入口暂未开通，请通过公众号或拨打 {phone} 办理。",
    "mp_error_not_verified": "这项服务需要先完成实名认证：在「我的」里点「实名认证」，填写姓名、身份证号并完成一次人脸识别。",
    "mp_error_not_found": "没有找到这份接种证，或您没有查看它的权限。",
    "mp_error_not_claimable": "这份档案现在不能申领，请刷新待申领列表看看最新情况。",
    "mp_error_claim_taken": "这份接种证刚刚已被其他家人申领。如需查看，请联系申领人为您授权。",
    "mp_error_consent_required": "请先阅读并同意《电子预防接种证申领须知》后再申领。",
    "mp_error_grant_not_holder": "只有这份接种证的申领人才能管理授权。",
    "mp_error_grant_adult_refused": "成人本人的电子预防接种证不能授权给他人查看。",
    "mp_error_grant_self": "不能授权给您自己：您是申领人，本来就能查看。",
    "mp_error_grant_is_child": "这是孩子本人的身份证号，请填写要授权的家人的身份证号。",
    "mp_error_grant_duplicate": "这位家人已经被授权查看这份接种证了，不需要重复授权。",
    "mp_error_grant_full": "每份接种证最多授权{limit}位家人，现在已经满了。如需授权新的家人，请先撤销一位。",
    "mp_error_grant_not_found": "这条授权不存在或已经撤销了，请刷新授权列表。",
    "mp_error_invalid_name": "姓名格式不对，请填写身份证上的姓名。",
    "mp_error_invalid_id_number": "身份证号不正确，请核对后重新填写（18位，最后一位可能是X）。",
    "mp_error_invalid_relationship": "请选择与孩子的关系（爸爸、妈妈、爷爷、奶奶、外公、外婆或其他监护人）。",
    "mp_error_invalid_phone": "手机号格式不对，请填写11位手机号码。",
    "mp_error_face_unavailable": "人脸识别服务暂时不可用，请稍后再试；如一直不行，可拨打 {phone}。",
    "mp_error_face_not_found": "没有找到这次认证，请重新点「实名认证」。",
    "mp_error_face_used": "这次认证已经结束了，如需重新认证，请重新点「实名认证」。",
    "mp_error_face_pending": "还没有收到人脸识别的结果，请完成识别后再试。",
    "mp_error_face_method_elsewhere": "按年龄，您需要通过出生医学证明或户籍信息在线下完成实名认证，请携带证件到接种门诊办理。",
    "mp_verify_passed": "实名认证成功：{name}（{id}）。现在可以申领接种证了。",
    "mp_verify_failed": "人脸识别没有通过，请在光线充足的地方由本人重新认证。",
    "mp_verify_mismatch": "识别到的身份与填写的信息不一致，请核对姓名和身份证号后重新认证。",
    # --- clinic console: staff sign-in and the desk's pages (/clinic/…) ---------------------------------
    "console_title": "门诊工作台",
    "console_nav_scan": "扫码取号",
    "console_nav_queue": "今日队列",
    "console_nav_observing": "留观",
    "console_nav_summary": "今日汇总",
    "console_sign_out": "退出登录",
    "console_sandbox_link": "演示沙盒",
    "console_role_registrar": "登记员",
    "console_role_vaccinator": "接种员",
    "console_role_observer": "留观护士",
    "console_role_admin": "门诊管理员",
    "console_sign_in_title": "门诊工作台登录",
    "console_sign_in_clinic": "门诊编码",
    "console_sign_in_login": "工号",
    "console_sign_in_password": "密码",
    "console_sign_in_button": "登录",
    "console_sign_in_failed": "门诊编码、工号或密码不正确，请核对后再试。连续输错5次，账号会锁定15分钟。",
    "console_sign_in_locked": "密码输错次数过多，账号已锁定。请在{until}之后再试，或请系统管理员解锁。",
    "console_sign_in_too_often": "这台设备登录尝试太频繁，请过5分钟再试。",
    "console_demo_title": "演示门诊账号（仅开发环境）",
    "console_demo_hint": "门诊编码 {clinic}，以下工号的密码都是 {password}。可以先在演示沙盒里让家长亮码，再用登记员扫码取号。",
    "console_session_ended": "您已较长时间没有操作（或已在别处退出），为保护受种者信息已自动退出，请重新登录。",
    "console_csrf_refused": "页面已过期，请刷新页面后重新操作。",
    "console_role_refused": "您的岗位（{role}）不能进行这一步，请交给相应岗位的同事。",
    "console_refused_title": "无法操作",
    "console_back_to_queue": "返回今日队列",
    "console_scan_title": "扫码取号",
    "console_scan_hint": "用扫码枪扫描家长出示的接种码（光标停在输入框即可），或把识别出的文字粘贴进来；也可以用摄像头扫码。",
    "console_scan_field": "接种码",
    "console_scan_button": "取号",
    "console_scan_camera": "用摄像头扫码",
    "console_scan_camera_stop": "关闭摄像头",
    "console_scan_no_camera": "这台设备的浏览器不支持摄像头识码，请使用扫码枪或粘贴。",
    "console_scan_ticket": "取号成功：{number}号",
    "console_scan_again": "今天已经取过号：{number}号（没有重复排队）",
    "console_scan_open": "打开登记页",
    "console_birth_month": "出生年月 {month}",
    "console_queue_title": "今日队列",
    "console_queue_empty": "今天还没有人取号。家长亮码后，在「扫码取号」扫码即可。",
    "console_queue_empty_call": "现在没有等候叫号的人。",
    "console_call_next": "叫号（下一位）",
    "console_col_number": "号",
    "console_col_name": "姓名",
    "console_col_step": "进度",
    "console_col_waited": "已等候",
    "console_col_ends": "留观至",
    "console_col_left": "剩余",
    "console_minutes": "{minutes}分钟",
    "console_open": "打开",
    "console_step_filing": "待建档",
    "console_step_queued": "待登记",
    "console_step_registered": "待一验证",
    "console_step_verified": "待接种",
    "console_step_vaccinated": "已接种",
    "console_step_observing": "留观中",
    "console_step_done": "已完成",
    "console_visit_title": "{number}号",
    "console_check_title": "三查七对",
    "console_fact_name": "姓名",
    "console_fact_sex": "性别",
    "console_fact_age": "年龄",
    "console_fact_due": "本次应种",
    "console_fact_history": "接种史",
    "console_sex_M": "男",
    "console_sex_F": "女",
    "console_age": "{years}岁{months}个月",
    "console_dose": "{vaccine} 第{number}剂",
    "console_nothing_due": "目前没有到期应种的疫苗",
    "console_no_history": "暂无接种记录",
    "console_register_title": "登记（健康询问）",
    "console_question_fever": "近期是否发热？",
    "console_question_allergies": "是否有过敏史（药物、食物、疫苗）？",
    "console_question_recent_vaccines": "近期是否接种过其他疫苗？",
    "console_question_contraindications": "是否有禁忌症（免疫缺陷、正在治疗的疾病等）？",
    "console_question_note": "备注",
    "console_answer_yes": "是",
    "console_answer_no": "否",
    "console_register_button": "完成登记",
    "console_register_waiting": "等待登记台登记。",
    "console_confirm_title": "一验证",
    "console_plan_dose": "疫苗和剂次",
    "console_plan_other": "其他（需填写原因）",
    "console_plan_vaccine": "疫苗",
    "console_plan_number": "剂次",
    "console_plan_override_reason": "不按应种顺序的原因",
    "console_plan_lot": "批号",
    "console_plan_manufacturer": "生产企业",
    "console_plan_expiry": "有效期至",
    "console_plan_button": "发送给家长核对",
    "console_plan_button_again": "修改后重新发送",
    "console_plan_line": "待核对：{vaccine} 第{number}剂，批号 {lot}，{manufacturer}，有效期至 {expires}",
    "console_plan_dose_missing": "请选择疫苗和剂次。",
    "console_plan_expiry_missing": "请填写疫苗有效期。",
    "console_live_waiting": "已发送给家长，等待家长在聊天中回复「确认」…",
    "console_confirm_reason": "家长当面核对确认（请写明原因，例如：家长手机没电）",
    "console_confirm_button": "记录当面确认",
    "console_confirmed": "一验证已完成。",
    "console_confirm_after_register": "登记完成后进行一验证。",
    "console_vaccinate_title": "接种",
    "console_vaccinate_site": "接种部位",
    "console_vaccinate_route": "接种途径",
    "console_vaccinate_vaccinator": "接种人",
    "console_vaccinate_button": "记录接种",
    "console_vaccinated": "已记录接种。",
    "console_vaccinate_after_confirm": "一验证完成后才能记录接种。",
    "console_observe_title": "留观",
    "console_observe_until": "留观至 {time}",
    "console_observe_after_vaccinate": "接种后留观30分钟。",
    "console_observation_over": "已满30分钟",
    "console_finish": "留观结束",
    "console_done": "本次接种已完成，家长已收到通知。",
    "console_observing_title": "留观区",
    "console_observing_hint": "接种后请在留观区观察30分钟，倒计时结束后点「留观结束」。",
    "console_observing_empty": "现在没有人在留观。",
    "console_summary_title": "今日汇总",
    "console_summary_steps": "各环节人数",
    "console_summary_doses": "今日接种剂次：{count}",
    "console_summary_by_vaccine": "按疫苗",
    "console_summary_none": "今天还没有记录接种。",
    "console_register_incomplete": "请逐项回答四个健康询问问题（是／否）。",
    "console_register_desk": "请去的接种台（可不填，例如：2号接种台）",
    "console_live_confirmed_chat": "家长已在聊天中回复「确认」，可以接种。",
    "console_live_confirmed_in_person": "已记录当面确认，可以接种。",
    "console_confirmed_chat": "一验证已完成：家长在聊天中确认。",
    "console_confirmed_in_person": "一验证已完成：当面确认。",
    "console_finish_early_reason": "提前结束的原因（未满30分钟时必填）",
    "console_masked_id": "证件号",
    "console_due_overdue": "已逾期",
    "console_due_due": "到期",
    "console_site_left_deltoid": "左上臂三角肌",
    "console_site_right_deltoid": "右上臂三角肌",
    "console_site_left_thigh": "左大腿前外侧",
    "console_site_right_thigh": "右大腿前外侧",
    "console_site_left_upper_arm": "左上臂外侧（皮下）",
    "console_site_right_upper_arm": "右上臂外侧（皮下）",
    "console_site_mouth": "口服",
    "console_route_intramuscular": "肌内",
    "console_route_subcutaneous": "皮下",
    "console_route_intradermal": "皮内",
    "console_route_oral": "口服",
    "console_fact_birth": "出生日期",
    "console_filing_title": "自动建档",
    "console_filing_hint_self": "这位受种者还没有接种档案，出示的是本人的建档码（{requester}，已实名认证）。请核对身份后建档，建档后本人可以马上申领接种证。",
    "console_filing_hint_child": "这个孩子还没有接种档案，由{requester}（已实名认证）添加。请核对出生医学证明或户口本后建档：档案建在本门诊，{requester}为监护人，建档后可以马上申领接种证。",
    "console_filing_new": "没有找到已有档案，确认后将在本门诊新建档案。",
    "console_filing_existing": "已有档案，但和核验的信息有不一致的地方，请逐项处理（不会自动覆盖）：",
    "console_filing_existing_same": "已有档案，信息一致，确认后关联到这份档案。",
    "console_filing_note": "备注（可不填）",
    "console_filing_button": "确认建档",
    "console_compare_title": "档案核对",
    "console_compare_hint": "档案和实名认证的信息不一致，请逐项处理后再登记（不会自动覆盖）。",
    "console_compare_button": "保存处理结果",
    "console_mismatch_field": "项目",
    "console_mismatch_on_file": "档案",
    "console_mismatch_verified": "核验信息",
    "console_mismatch_decision": "处理",
    "console_resolution_keep": "保留档案",
    "console_resolution_take_verified": "采用核验信息",
    "console_resolution_note": "备注待改",
    # --- clinic desk: steps (登记 · 一验证 · 接种 · 留观), the family told, 「确认」 in chat ----------
    "desk_problem_not_found": "查不到这条就诊记录（不是本门诊今天的记录），请重新扫码或刷新队列。",
    "desk_problem_out_of_order": "还不能做这一步：请先完成「{step}」。",
    "desk_problem_not_requested": "还没有发起一验证：请先选定疫苗、剂次和批号，发给家长核对。",
    "desk_problem_unknown_vaccine": "没有这种疫苗代码，请从待种疫苗列表里选择。",
    "desk_problem_bad_dose_number": "剂次不对，请填写 1 到 10 之间的数字。",
    "desk_problem_not_due": "这一剂不在当前应种列表里。确需接种时，请填写更改原因后再发起一验证。",
    "desk_problem_already_given": "档案里已经有这一剂的接种记录，不能重复记录，请核对剂次。",
    "desk_problem_expired_lot": "这个批号的疫苗已于{expires}过期，不能使用，请换一支在有效期内的疫苗。",
    "desk_problem_missing_field": "信息不完整：批号、生产企业、接种部位、接种途径和接种医生都要填写。",
    "desk_problem_bad_route": "接种途径不对，请选择肌内、皮下、皮内或口服。",
    "desk_problem_bad_site": "接种部位不对，请从列表里选择。",
    "desk_problem_reason_needed": "请填写原因（例如：家长手机没电，现场口头核对）。",
    "desk_problem_observation_not_over": "留观还没满30分钟。确需提前结束，请填写原因。",
    "desk_step_queued": "取号",
    "desk_queued_short": "排队号：{number}号",
    "desk_problem_health_flagged": "登记时记录了发热或接种禁忌，一般应暂缓接种。医生评估可以接种的，请填写评估意见（原因）后再发起一验证。",
    "desk_problem_not_filed": "这位受种者还没有接种档案：请先核对身份并建档，再登记。",
    "desk_problem_mismatch_unresolved": "档案和核验的身份有不一致的地方（{fields}），请逐项选择保留、采用核验信息或备注后再建档。",
    "desk_step_filed": "建档",
    "desk_role_filing": "建档（还没有接种档案）",
    "desk_queued_filing": (
        "{name}已在{clinic}取号，排队号：{number}号。\n叫到后请带上身份证或出生医学证明到登记台，医生核对后为您建档。"
    ),
    "filing_done_child": "已为{name}建立接种档案。现在就可以回复「申领接种证」，申领孩子的电子预防接种证。",
    "filing_done_self": "已为您建立接种档案。现在就可以回复「申领接种证」，申领您的电子预防接种证。",
    # --- auto-filing in chat (自动建档: 我的接种码 without a file, 添加孩子, 建档码) ---------------
    "filing_code_self": (
        "{name}的建档接种码\n身份证号：{id}\n"
        "您还没有接种档案。到接种门诊出示下面的二维码，工作人员核对身份后会为您建档。\n"
        "· 二维码{minutes}分钟内有效，扫码取号后即失效；需要时回复「建档码」再取一个。\n"
        "· 二维码里没有个人信息，但请不要转发给他人。"
    ),
    "filing_code_child": (
        "{name}的建档接种码\n证件号：{id}\n"
        "带孩子到接种门诊出示下面的二维码，并带上孩子的出生医学证明或户口本，工作人员核对后为孩子建档。\n"
        "· 二维码{minutes}分钟内有效，扫码取号后即失效；需要时回复「建档码」再取一个。\n"
        "· 二维码里没有个人信息，但请不要转发给他人。"
    ),
    "filing_self_hint": (
        "· 您本人还没有接种档案：回复「我的接种码」，到门诊出示后由工作人员为您建档；孩子没有档案的，回复「添加孩子」。"
    ),
    "filing_child_hint": "孩子还没有接种档案？回复「添加孩子」，填好孩子的信息就能出示孩子的建档接种码。",
    "filing_need_verify": "添加孩子、出示建档接种码需要先完成实名认证。回复「实名认证」即可开始。",
    "filing_ask_name": "请输入孩子的姓名，与出生医学证明或户口本上一致（回复「取消」退出）：",
    "filing_bad_name": "姓名的格式不对：请输入2到20个汉字或字母，与证件上一致。",
    "filing_ask_number": "请输入孩子的身份证号；还没有身份证号的，请输入出生医学证明编号（1个字母加9位数字）：",
    "filing_bad_number": "没认出这个号码：请输入18位身份证号，或出生医学证明编号（1个字母加9位数字，例如Q320261120）。",
    "filing_own_number": "这是您本人的身份证号。请输入孩子的身份证号，或孩子的出生医学证明编号：",
    "filing_ask_sex": "孩子的性别？请回复「男」或「女」：",
    "filing_ask_birth_date": "孩子的出生日期？例如 2026-11-20 或 2026年11月20日：",
    "filing_bad_birth_date": "日期不对：请按 2026-11-20 或 2026年11月20日 的样子输入孩子的出生日期。",
    "filing_sex_M": "男",
    "filing_sex_F": "女",
    "filing_confirm": (
        "请核对孩子的信息：\n姓名：{name}\n证件号：{id}\n性别：{sex}\n出生：{birth}\n"
        "无误请回复「确认」，我会给您孩子的建档接种码；有误请回复「取消」后重新添加。"
    ),
    "filing_confirm_hint": "请回复「确认」获取孩子的建档接种码，或回复「取消」退出。",
    "filing_none_waiting": (
        "您没有等待建档的申请。孩子还没有接种档案的，回复「添加孩子」；已有档案的，回复「申领接种证」。"
    ),
    "filing_done_short": "接种档案已建立",
    "desk_step_registered": "登记",
    "desk_step_confirm": "一验证",
    "desk_step_vaccinated": "接种",
    "desk_step_done": "留观结束",
    "desk_go_to_desk": "请到{desk}等候接种",
    "desk_go_wait": "请在候种区等候叫号接种",
    "desk_registered": "{name}已完成登记，{where}。",
    "desk_confirm_request": (
        "即将为 {name} 接种：{vaccine} 第{number}剂，批号 {lot}，有效期至 {expires}，请核对后回复「确认」"
    ),
    "desk_confirm_template": "核对后回复「确认」：{vaccine}第{number}剂",
    "desk_vaccinated": (
        "{name}已完成接种：{vaccine} 第{number}剂，批号 {lot}。\n请在留观区留观30分钟，如有不适请马上告诉医生。"
    ),
    "desk_vaccinated_short": "请留观30分钟：{vaccine}第{number}剂",
    "desk_next_dose": "下一针：{vaccine} 第{number}剂，{date}起可以接种",
    "desk_next_none": "目前没有待种的疫苗",
    "desk_observation_over": "{name}留观结束，可以离开了；{next}。",
    "desk_confirmed": "已确认：{name} {vaccine} 第{number}剂。医生马上为您接种，请配合医生。",
    "desk_confirm_nothing": (
        "现在没有需要您确认的接种。医生发起核对后，您会收到一条“即将为……接种”的消息，核对无误再回复「确认」即可。"
    ),
    "desk_confirm_which": "有{count}项接种等您确认：\n{lines}\n请回复「确认」加排队号，例如「确认{example}」。",
    "desk_confirm_line": "{number}号　{name}：{vaccine} 第{number_dose}剂，批号 {lot}",
    "desk_confirm_already": "{name}的接种信息您已经确认过了，医生会按确认的内容接种，不用再回复。",
    "desk_confirm_stale": "这次核对的内容已经变了（医生可能更换了批号），请以最新收到的消息为准，核对后再回复「确认」。",
    # --- booking (预约接种 / 我的预约) ---
    "booking_need_verify": "预约接种需要先完成实名认证，这样我们才能确认为谁预约。\n回复「实名认证」即可开始。",
    "booking_none": (
        "您还没有可以预约的电子预防接种证。\n"
        "· 本人或孩子的接种证：回复「申领接种证」，申领后就能预约；\n"
        "· 孩子的接种证已由其他家人申领：请TA在「证照授权」中为您授权。"
    ),
    "booking_pick_head": "请回复序号，选择为谁预约：",
    "booking_when": "{month}月{day}日 {hour}:{minute}",
    "booking_price_free": "免费（免疫规划）",
    "booking_price_paid": "自费 {yuan}元",
    "booking_page": "第{page}/{pages}页，回复「下一页」或「上一页」翻页。",
    "booking_pick_hint": "请回复序号选择，回复「退出」结束预约。",
    "booking_pick_invalid": "请回复列表中的序号（例如 1），翻页请回复「下一页」，结束请回复「退出」。",
    "booking_vaccine_head": "{name}现在可以预约的疫苗（应种、逾期的排在前面）：",
    "booking_vaccine_line": "{vaccine} 第{number}剂",
    "booking_no_vaccines": (
        "{name}现在没有可以预约的疫苗：要么暂时没有到期的针次，要么门诊还没有放出号源。\n"
        "您可以回复「接种记录」查看下一针的时间，门诊放号后再来预约。"
    ),
    "booking_no_slots": "{vaccine}暂时没有门诊放出可预约的号源，请过几天再来看看。",
    "booking_clinic_head": "{vaccine} 第{number}剂，可预约的门诊：",
    "booking_clinic_line": "{clinic}（余{free}个）",
    "booking_clinic_mine": "　← 建档门诊",
    "booking_day_head": "{clinic}，请选择日期：",
    "booking_day_line": "{day}（余{free}个）",
    "booking_day_not_open": "{day}（{opens} 开放预约）",
    # Lottery (摇号) slots in 预约接种's clinic and day lists: never counted as first-come places
    "booking_clinic_line_lottery": "{clinic}（摇号 {places}个名额）",
    "booking_clinic_line_mixed": "{clinic}（余{free}个，另有摇号）",
    "booking_day_line_lottery": "{day}（摇号 {places}个名额，{closes}截止报名）",
    "booking_day_line_lottery_bare": "{day}（摇号 {places}个名额）",
    "booking_day_line_mixed": "{day}（余{free}个，另有摇号）",
    "booking_window_head": "{day}，请选择时段：",
    "booking_gone_head": "抱歉，您选的时段刚刚约满或已停止预约。{day}现在的情况：",
    "booking_day_full": "抱歉，您选的时段刚刚约满，这一天已经没有空余名额了。可以看看其他日期：",
    "booking_window_line": "{window}　{state}　{price}",
    "booking_window_free": "余{free}个",
    "booking_window_opens": "{opens} 开放预约",
    "booking_not_open": "这个时段还没有开放预约，将于 {opens} 开放，请到时再来。您也可以选择其他时段。",
    "booking_confirm": (
        "请核对预约信息：\n"
        "接种人：{name}（{id}）\n"
        "疫苗：{dose}\n"
        "门诊：{clinic}\n"
        "时间：{when}（{window}）\n"
        "费用：{price}\n"
        "{moving}"
        "无误请回复「确认」，不预约请回复「退出」。"
    ),
    "booking_confirm_moving": "确认后原预约将同时取消；新时段约不上时，原预约保持不变。\n",
    "booking_moved": (
        "改期成功！新的预约号：{number}\n"
        "{name}　{vaccine}\n"
        "{clinic}\n"
        "{when}（{window}）\n"
        "原预约已取消。请按时到门诊，出示「亮码接种」中的接种码。"
    ),
    "booking_manage_ask": (
        "{booking}\n改到其他时间请回复「改期」；取消这个预约请回复「确认取消」；保留不变请回复「退出」。"
    ),
    "booking_confirm_hint": "请回复「确认」完成预约，或回复「退出」放弃这次预约。",
    "booking_done": (
        "预约成功！预约号：{number}\n"
        "{name}　{vaccine}\n"
        "{clinic}\n"
        "{when}（{window}）\n"
        "请按时到门诊，出示「亮码接种」中的接种码。如需取消，回复「我的预约」。"
    ),
    "booking_already": (
        "{name}已经预约了{vaccine}（预约号 {number}）：{clinic}，{when}（{window}）。\n"
        "同一种疫苗一次只能保留一个预约。想换时间，请先回复「我的预约」取消原预约，再重新预约。"
    ),
    "booking_mine_none": "您目前没有待接种的预约。回复「预约接种」即可预约。",
    "booking_mine_head": "您的预约（回复序号可以改期或取消）：",
    "booking_mine_line": "{name}　{vaccine}　{clinic}　{when}（{window}）预约号 {number}",
    "booking_cancel_hint": "改到其他时间请回复「改期」，取消预约请回复「确认取消」；想保留预约，回复「退出」即可。",
    "booking_cancelled": "已为{name}取消预约，号源已释放。需要时可以回复「预约接种」重新预约。",
    "booking_cancel_gone": "这个预约已经不在了（可能已取消或已接种），回复「我的预约」查看最新情况。",
    "booking_reminder_first": "{name}明天有接种预约",
    "booking_reminder_when": "{month}月{day}日 {start}–{end}",
    "booking_reminder_remark": (
        "地点：{clinic}。请按预约时段到达，带好身份证（孩子请带上户口本或出生证明），"
        "试点期间请继续携带纸质预防接种证；"
        "到门诊后点菜单「亮码接种」出示接种码。不能前往请回复「我的预约」取消，把名额留给别人。"
    ),
    "console_nav_slots": "预约号源",
    "console_slots_title": "预约号源",
    "console_slots_hint": "发布某种疫苗某一天某个时段的号源；自费疫苗请填写价格（元），免疫规划疫苗留空。停诊时关闭当天或某个时段；已有预约的日子请到「通知」页发停诊通知，预约会按通知取消或改期，家长会收到消息。",
    "console_slots_none": "近期没有发布号源。",
    "console_slots_invalid": "填写有误：请检查疫苗、日期、时段（结束晚于开始）、名额（1–10000）和价格。没有发布任何号源。",
    "console_slots_past": "这个时段已经开始或已过去，不能再发布。",
    "console_slots_added": "号源已发布。",
    "console_slots_closed": "已关闭 {count} 个时段，不再接受新的预约。",
    "console_slots_publish": "发布号源",
    "console_slots_close": "关闭（停诊）",
    "console_slots_vaccine": "疫苗",
    "console_slots_day": "日期",
    "console_slots_start": "开始",
    "console_slots_end": "结束",
    "console_slots_capacity": "名额",
    "console_slots_opens": "开放预约时间（留空则立即开放）",
    "console_slots_price": "自费价格（元）",
    "console_slots_close_start": "只关闭此开始时间的时段（留空关闭全天）",
    "console_slots_booked": "已约",
    "console_slots_free": "免费",
    "console_slots_is_closed": "已关闭",
    # The mini-program channel (its remaining parts): a grantee who is only in the WeChat mini program and
    # cannot be messaged now (outside its chat window, no consent to a notice).
    "grant_added_not_reached": (
        "TA目前只在微信小程序里使用本服务，我们暂时没法给TA发消息。请告诉TA打开小程序看看，授权已经生效，就能看到了。"
    ),
    # Booking in the mini programs' JSON API: its refusals (the chat's booking journey says the same in its own steps).
    "mp_error_booking_full": "抱歉，这个时段刚刚约满了。请刷新后选择其他时段或日期。",
    "mp_error_booking_not_open": "这个时段还没有开放预约，将于 {opens} 开放，请到时再来，或选择其他时段。",
    "mp_error_booking_closed": "这个时段已经停止预约了（门诊已关闭或时间已过）。请刷新后选择其他时段。",
    "mp_error_booking_held": "已经为TA预约过这种疫苗了（预约号 {number}）。如需改时间，请先在「我的预约」里取消原预约。",
    "mp_error_booking_slot_not_found": "没有找到这个时段，请刷新后重新选择。",
    "mp_error_booking_not_offered": "这个时段的疫苗现在还不能为TA预约（不在待接种的疫苗里，或日期早于可接种的日子）。请刷新后重新选择。",
    "mp_error_booking_key_reused": "这次预约请求已经用于另一位家人了。请返回上一页重新预约。",
    "mp_error_booking_not_found": "没有找到这个预约，或您没有管理它的权限。请刷新「我的预约」。",
    "mp_error_booking_not_active": "这个预约已经取消了（或已经接种），不需要再取消。请刷新「我的预约」。",
    # --- clinic notices (通知): the console's page, the refusals, and the template's values -------------
    "notice_first": "{clinic}发来一条通知",
    "notice_day": "{month}月{day}日",
    "notice_kind_closure": "停诊",
    "notice_kind_reschedule": "时段调整",
    "notice_kind_stock": "疫苗到货",
    "notice_kind_free": "门诊通知",
    "notice_outcome_cancelled": "停诊，预约已取消",
    "notice_outcome_moved": "预约改到{month}月{day}日 {start}",
    "notice_outcome_move_failed": "停诊，改期时段已满，预约已取消",
    "notice_refused_empty": "请填写通知内容。",
    "notice_refused_long": "通知内容最多100个字（模板消息放不下更长的文字），请精简后再发送。",
    "notice_refused_no_windows": "请选择通知的日期或时段（最多31个），或选择「本门诊登记的所有家庭」。",
    "notice_refused_closure_action": "停诊和时段调整只能发给已预约的家庭，并要说明预约怎么处理：停诊可取消或改期，时段调整须改期。",
    "notice_refused_action_kind": "只有停诊和时段调整会取消或改期预约；到货和其他通知请选择「预约不变」。",
    "notice_refused_move_target": "请填写改期到的日期（和开始时间），它不能落在要关闭的日期或时段里。",
    "notice_refused_form": "填写有误，请检查通知类型、日期和时段的格式（如 2026-12-08 或 2026-12-08 09:00）。",
    "console_nav_notices": "通知",
    "console_notices_title": "门诊通知",
    "console_notices_hint": "给预约了某些日期或时段的家庭、或本门诊登记的所有家庭发通知（模板消息，接种证持有人和每位授权家人各收到一次）。停诊会关闭所选时段，并按通知取消或改期预约。",
    "console_notices_kind": "通知类型",
    "console_notices_audience": "发给",
    "console_notices_audience_booked": "所选日期或时段已预约的家庭",
    "console_notices_audience_registered": "本门诊登记的所有家庭",
    "console_notices_windows": "日期或时段（每行一个，如 2026-12-08 或 2026-12-08 09:00）",
    "console_notices_choose": "近期时段",
    "console_notices_action": "已有预约",
    "console_notices_action_none": "预约不变",
    "console_notices_action_cancel": "取消预约",
    "console_notices_action_move": "改期到",
    "console_notices_move_to": "改期到（日期，或日期和开始时间）",
    "console_notices_text": "通知内容（最多100字）",
    "console_notices_preview": "预览",
    "console_notices_send": "确认发送",
    "console_notices_preview_title": "发送前请确认",
    "console_notices_preview_counts": "将影响 {bookings} 个预约，通知 {families} 个家庭、共 {accounts} 个账号。",
    "console_notices_sent": "通知已发送：关闭 {slots} 个时段，取消 {cancelled} 个预约，改期 {moved} 个（改期时段已满而取消 {failed} 个）；通知 {accounts} 个账号。",
    "console_notices_list": "已发送的通知",
    "console_notices_none": "还没有发送过通知。",
    "console_notices_report": "送达情况",
    "console_notices_when": "发送时间",
    "console_notices_sent_count": "已送达",
    "console_notices_waiting_count": "等待发送",
    "console_notices_failed_count": "失败",
    "console_notices_recipient": "收件账号",
    "console_notices_status": "状态",
    "console_notices_reason": "原因",
    "console_notices_status_sent": "已送达",
    "console_notices_status_waiting": "等待发送",
    "console_notices_status_failed": "失败",
    "console_notices_problem_no_consent": "用户未订阅小程序通知",
    "console_notices_problem_no_template": "未配置小程序通知模板",
    "console_notices_not_found": "没有找到这条通知。",
    "console_slots_close_booked": "所选日期或时段还有 {count} 个预约，不能直接关闭。请到「通知」页发停诊通知：预约会按通知取消或改期，并告诉每个家庭。",
    "notice_mine_cancelled": "{name}　{vaccine}　{clinic}　{when}（{window}）的预约已被门诊取消。门诊通知：{text}\n需要的话，回复「预约接种」重新预约。",
    "platform_name_wechat": "微信",
    "platform_name_alipay": "支付宝",
    "platform_name_wxmini": "微信小程序",
    # --- booking eligibility (self-paid vaccines by age, sex and spacing) and moving a booking to another clinic ---
    "booking_vaccine_paid": "（自费 {yuan}元起）",
    "booking_clinic_head_any": "{vaccine}，可预约的门诊：",
    "booking_refused_spacing": "按年龄和接种间隔，{name}在{day}还不能接种{vaccine}，最早可以在{earliest}接种。",
    "booking_refused_age": "到{day}时，{name}已超过{vaccine}的可接种年龄，这一天不能预约，可以选更早的日期。",
    "booking_refused": (
        "按年龄、性别和接种记录，{name}现在不需要（或不能）预约{vaccine}。如有疑问，请咨询建档门诊。"
        "回复「预约接种」可以预约其他疫苗。"
    ),
    "booking_move_other_clinic": "想换到其他门诊，请回复「换一家门诊」。",
    "booking_move_no_days": "原门诊暂时没有其他可改的日期，您可以换一家门诊：",
    # --- Lottery (摇号) for scarce vaccines: entering in chat, the outcome, confirming, the no-show penalty ---
    "lottery_when": "{month}月{day}日 {hour}:{minute}",
    "lottery_slot_line": "{window}　摇号 {places}个名额（{closes}截止报名）　{price}",
    "lottery_confirm": (
        "请核对摇号报名信息：\n接种人：{name}\n疫苗：{vaccine}\n门诊：{clinic}\n接种时间：{when}（{window}）\n"
        "名额：{places}个，{price}\n报名截止：{closes}，截止后摇号\n\n"
        "每人每次摇号只能报名一次，中签名额仅限本人使用，不可转让。\n回复「报名摇号」确认报名，回复「退出」放弃。"
    ),
    "lottery_confirm_hint": "请回复「报名摇号」确认报名，或回复「退出」放弃。",
    "lottery_entered": (
        "已为{name}报名摇号（{vaccine}，{clinic}）。\n报名截止：{closes}，截止后立即摇号，结果会通知您和已授权的家人。\n"
        "您的报名编号：{entry}（公示名单里可以按它找到自己）。\n摇号算法和公示数据人人可以核验，回复「我的摇号」查看进度。"
    ),
    "lottery_already": "{name}已经报名过这次摇号了，报名编号：{entry}。一人一次只能报名一次，请等待摇号结果。",
    "lottery_not_open": "这次摇号还没有开始报名，将于 {opens} 开始，请到时再来。",
    "lottery_closed": "这次摇号的报名已经截止了。可以回复「预约接种」看看其他时段。",
    "lottery_penalised": (
        "抱歉，{name}之前有一次摇号中签的{vaccine}预约没有按时接种，按规定在 {until} 前不能报名这种疫苗的摇号。"
        "到期后即可再报名。如有疑问请拨打{phone}。"
    ),
    "lottery_mine_none": "您家里目前没有进行中的摇号。回复「预约接种」选择标有「摇号」的时段即可报名。",
    "lottery_mine_head": "您的摇号：",
    "lottery_mine_line": "{name}　{vaccine}　{clinic}　{state}　编号 {entry}",
    "lottery_state_entered": "已报名，{closes}摇号",
    "lottery_state_waiting": "候补第{position}位",
    "lottery_state_offered": "中签待确认（{deadline}前回复「确认中签」）",
    "lottery_state_confirmed": "已确认，已预约",
    "lottery_state_lapsed": "逾期未确认，名额已顺延",
    "lottery_confirm_none": "您家里目前没有待确认的中签名额。回复「我的摇号」查看摇号进度。",
    "lottery_confirmed": (
        "已为{name}确认中签名额，预约成功！\n{vaccine}　{clinic}　{when}（{window}）\n预约号：{number}\n"
        "请按时到门诊接种；未按时接种的，{days}天内不能再报名这种疫苗的摇号。"
    ),
    "lottery_confirm_lapsed": "抱歉，{name}的中签名额已经过了确认期限，已顺延给候补的家庭。",
    "lottery_confirm_held": "{name}已经有一个{vaccine}的预约了（预约号 {number}）。如要使用中签名额，请先在「我的预约」里取消原预约，再回复「确认中签」。",
    "lottery_confirm_closed": "抱歉，这个时段已经停止接种预约了（门诊已关闭）。门诊会另行通知安排。",
    "lottery_news_won_first": "{name}的{vaccine}摇号中签了",
    "lottery_news_won": "中签，请于{deadline}前确认",
    "lottery_news_won_remark": "请在{deadline}前回复「确认中签」完成预约，逾期名额将顺延给候补。{clinic}",
    "lottery_news_passed_first": "候补名额轮到{name}了",
    "lottery_news_waiting_first": "{name}的{vaccine}摇号结果",
    "lottery_news_waiting": "未中签，候补第{position}位",
    "lottery_news_waiting_remark": "有中签家庭逾期未确认时，名额按摇号顺序顺延，轮到时会再通知您。",
    "console_lottery_closes": "摇号报名截止（填写即为摇号号源）",
    "console_lottery_opens": "摇号报名开始（不填为现在）",
    "console_lottery_invalid": "摇号设置有误：报名截止须晚于现在和报名开始，且在接种日前留出确认时间；摇号号源不填“开放预约”时间。",
    "console_lottery_line": "摇号 {lottery}：{state}，报名{entries}人，待确认{offered}，已确认{confirmed}，候补{waiting}",
    "console_lottery_open": "{closes} 截止报名",
    "console_lottery_drawn": "已摇号",
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
