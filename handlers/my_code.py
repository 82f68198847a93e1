"""Auto-filing (自动建档), the family's side: a code for someone who has no file yet.

* 「我的接种码」 from a verified person with no certificate, no file and nothing to claim shows a code for
  themselves: scanned at a clinic, the registrar checks them and files them (:mod:`bot.desk.filing`).
* 「添加孩子」: a parent adds a child with no file — name, ID or birth-certificate number (then sex and birth
  date), confirms, and gets the child's code to show at the clinic.
* 「建档码」 shows the codes of the requests still waiting for a clinic again.

What the parent types waits in the conversation state sealed (it is the child's personal data).
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

from bot.certificates.rules import Standing, bound_identity, pending_for
from bot.chat.conversation import Context, Flow, Route, Router, State, StatesGroup, any_text, normalise, text_in
from bot.core.chinatime import china_date
from bot.core.update import Image, Text, UpdateKind
from bot.core.validators import InvalidIdNumber, normalize_name, parse_id_number
from bot.desk.filing import (
    FilingDetails,
    issue_filing_code,
    open_details,
    own_details,
    pending_filings,
    request_filing,
)
from handlers.common import name_problem
from models import FilingRequest, Identity

OWN_CODE_WORDS = frozenset({normalise("我的接种码"), normalise("本人接种码"), normalise("我本人的接种码")})
ADD_WORDS = ("添加孩子", "新增孩子", "给孩子建档", "孩子没有档案", "添加孩子建档")
AGAIN_WORDS = ("建档码", "我的建档码", "孩子的建档码")
DRAFT_FIELD = "filing_draft"
BIRTH_CERT = re.compile(r"^[A-Z]\d{9}$")
DATE_TEXT = re.compile(r"^(\d{4})\D{1,2}(\d{1,2})\D{1,2}(\d{1,2})\D?$")


class AddChildSteps(StatesGroup):
    """Adding a child who has no file: name, number, sex and birth date (birth certificate only), confirm."""

    name = State()
    number = State()
    sex = State()
    birth_date = State()
    confirming = State()


def _draft(ctx: Context) -> dict[str, str]:
    sealed = ctx.data.get("draft")
    return json.loads(ctx.services.vault.open_text(DRAFT_FIELD, sealed)) if sealed else {}


def _keep(ctx: Context, state: State, draft: dict[str, str]) -> None:
    ctx.goto(state, draft=ctx.services.vault.seal_text(DRAFT_FIELD, json.dumps(draft, ensure_ascii=False)))


async def show_filing_code(ctx: Context, identity: Identity, request: FilingRequest) -> None:
    """The request's code as an image, with a masked caption saying what happens at the clinic."""
    details = open_details(ctx.services.vault, request)
    ttl = timedelta(seconds=ctx.settings.code_ttl_seconds)
    issued = issue_filing_code(ctx.session, ctx.services.vault, request, identity_id=identity.id, now=ctx.now, ttl=ttl)
    key = "filing_code_self" if request.relation == "self" else "filing_code_child"
    minutes = int(ttl.total_seconds() // 60)
    ctx.reply(Text(ctx.text(key, name=details.masked_name, id=details.masked_id, minutes=minutes)))
    ctx.reply(Image(qr_text=issued.payload, credential=True))  # drawn by the sender, off the event loop


async def no_certificate(ctx: Context, identity: Identity) -> None:
    """亮码 with no certificate: how to get one; 「我的接种码」 from someone with no file at all: their filing code.

    A tap on 亮码接种 most often means a child's code (a lost grant, a certificate not yet claimed), so it
    explains claiming and grants, and mentions the filing code only to someone who has no file; the
    words 「我的接种码」 ask for the person's own code, and get it.
    """
    items = await pending_for(ctx.session, ctx.services.vault, identity, ctx.settings, china_date(ctx.now))
    has_own_file = any(item.file.relation == "self" for item in items)
    asked_for_own = ctx.update.kind is UpdateKind.TEXT and normalise(ctx.update.text) in OWN_CODE_WORDS
    claimable = any(item.standing in (Standing.CLAIMABLE, Standing.TAKEN) for item in items)
    if has_own_file or not asked_for_own or claimable:
        ctx.say("code_none")
        if not has_own_file:
            ctx.say("filing_self_hint")
        return
    try:
        details = own_details(ctx.services.vault, identity)
    except InvalidIdNumber:
        ctx.say("code_none")
        return
    request = await request_filing(ctx.session, ctx.services.vault, identity, details, "self", ctx.now)
    await show_filing_code(ctx, identity, request)
    ctx.say("filing_child_hint")


async def start(ctx: Context) -> None:
    """「添加孩子」: ask for the child's name (verified parents only)."""
    ctx.finish()
    if await bound_identity(ctx.session, await ctx.account()) is None:
        ctx.say("filing_need_verify")
        return
    ctx.say("filing_ask_name")
    _keep(ctx, AddChildSteps.name, {})


async def got_name(ctx: Context) -> None:
    """The child's name; then the ID or birth-certificate number."""
    problem = name_problem(ctx.update.text, "filing_bad_name")
    name = normalize_name(ctx.update.text)
    if problem is not None or name is None:
        ctx.say(problem or "filing_bad_name")
        _keep(ctx, AddChildSteps.name, _draft(ctx))
        return
    ctx.say("filing_ask_number")
    _keep(ctx, AddChildSteps.number, {"name": name})


async def got_number(ctx: Context) -> None:
    """An ID number (sex and birth date follow from it) or a birth-certificate number (both asked next)."""
    draft = _draft(ctx)
    text = ctx.update.text.strip().replace(" ", "").upper()
    if BIRTH_CERT.match(text):
        ctx.say("filing_ask_sex")
        _keep(ctx, AddChildSteps.sex, {**draft, "birth_cert_no": text})
        return
    try:
        parsed = parse_id_number(text, china_date(ctx.now))
    except InvalidIdNumber as exc:
        ctx.say(exc.reason if len(text) == 18 else "filing_bad_number")
        _keep(ctx, AddChildSteps.number, draft)
        return
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is not None and ctx.services.vault.digest("id_number", parsed.value) == identity.id_number_hash:
        ctx.say("filing_own_number")
        _keep(ctx, AddChildSteps.number, draft)
        return
    draft = {
        **draft,
        "id_number": parsed.value,
        "sex": "M" if parsed.male else "F",
        "birth_date": parsed.birth_date.isoformat(),
    }
    await _ask_confirm(ctx, draft)


async def got_sex(ctx: Context) -> None:
    """男 or 女; then the birth date."""
    draft = _draft(ctx)
    sex = {"男": "M", "女": "F", "男孩": "M", "女孩": "F"}.get(ctx.update.text.strip())
    if sex is None:
        ctx.say("filing_ask_sex")
        _keep(ctx, AddChildSteps.sex, draft)
        return
    ctx.say("filing_ask_birth_date")
    _keep(ctx, AddChildSteps.birth_date, {**draft, "sex": sex})


async def got_birth_date(ctx: Context) -> None:
    """A birth date such as 2026-11-20 or 2026年11月20日 (not in the future)."""
    draft = _draft(ctx)
    match = DATE_TEXT.match(ctx.update.text.strip())
    born: date | None = None
    if match:
        try:
            born = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            born = None
    if born is None or born > china_date(ctx.now) or born.year < 1900:
        ctx.say("filing_bad_birth_date")
        _keep(ctx, AddChildSteps.birth_date, draft)
        return
    await _ask_confirm(ctx, {**draft, "birth_date": born.isoformat()})


def _details(draft: dict[str, str]) -> FilingDetails:
    return FilingDetails(
        name=draft["name"],
        sex=draft["sex"],
        birth_date=date.fromisoformat(draft["birth_date"]),
        id_number=draft.get("id_number", ""),
        birth_cert_no=draft.get("birth_cert_no", ""),
    )


async def _ask_confirm(ctx: Context, draft: dict[str, str]) -> None:
    details = _details(draft)
    ctx.say(
        "filing_confirm",
        name=details.masked_name,
        id=details.masked_id,
        sex=ctx.text("filing_sex_" + details.sex),
        birth=f"{details.birth_date.year}年{details.birth_date.month}月",
    )
    _keep(ctx, AddChildSteps.confirming, draft)


async def confirm(ctx: Context) -> None:
    """「确认」: the request is made (or the same one found) and the child's code shown."""
    draft = _draft(ctx)
    ctx.finish()
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is None or not draft:
        ctx.say("filing_need_verify")
        return
    request = await request_filing(ctx.session, ctx.services.vault, identity, _details(draft), "child", ctx.now)
    await show_filing_code(ctx, identity, request)


async def confirm_hint(ctx: Context) -> None:
    """Anything else while the child's details wait for 「确认」."""
    ctx.say("filing_confirm_hint")
    _keep(ctx, AddChildSteps.confirming, _draft(ctx))


async def again(ctx: Context) -> None:
    """「建档码」: the codes of this person's requests still waiting for a clinic."""
    identity = await bound_identity(ctx.session, await ctx.account())
    if identity is None:
        ctx.say("filing_need_verify")
        return
    waiting = await pending_filings(ctx.session, identity.id)
    if not waiting:
        ctx.say("filing_none_waiting")
        return
    for request in waiting:
        await show_filing_code(ctx, identity, request)


FLOW = Flow(
    name="add_child",
    title="添加孩子",
    entry_points=[Route(text_in(*ADD_WORDS), start)],
    states={
        AddChildSteps.name: [Route(any_text, got_name)],
        AddChildSteps.number: [Route(any_text, got_number)],
        AddChildSteps.sex: [Route(any_text, got_sex)],
        AddChildSteps.birth_date: [Route(any_text, got_birth_date)],
        AddChildSteps.confirming: [Route(text_in("确认", "确定"), confirm), Route(any_text, confirm_hint)],
    },
    timeout=timedelta(minutes=15),
    unsaved=frozenset({AddChildSteps.number, AddChildSteps.sex, AddChildSteps.birth_date, AddChildSteps.confirming}),
)

router = Router("my_code")
router.include(FLOW)
router.add([Route(text_in(*AGAIN_WORDS), again)])
