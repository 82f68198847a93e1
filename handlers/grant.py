"""Journey 5: family authorisation (证照授权).

The holder of a child's certificate lists its grantees, adds one step by step (name → ID number →
relationship → phone → confirm, the order of 实名认证) and revokes one. Each grantee is told on every
platform they follow us on. Adult certificates cannot be authorised, and a grantee cannot authorise anyone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from bot.certificates.rules import (
    GRANT_REFUSAL_REASONS,
    GRANT_REFUSED,
    Grantee,
    Visible,
    active_grants,
    add_grant,
    bound_identity,
    record_view,
    revoke_grant,
    visible_certificates,
)
from bot.chat.conversation import (
    Context,
    Flow,
    Route,
    Router,
    State,
    StatesGroup,
    any_text,
    list_number,
    menu,
    normalise,
    text_in,
)
from bot.chat.menu import LABELS, MenuKey
from bot.core.chinatime import china_date
from bot.core.pii import Vault, mask_id_number, mask_name, mask_phone
from bot.core.update import Text, Update, UpdateKind
from bot.core.validators import InvalidIdNumber, normalize_mobile, normalize_name, parse_id_number
from bot.identity.accounts import tell_grantee
from bot.platforms.wxmini.sender import may_reach
from handlers.common import id_number_problem, is_choice, lines, name_problem
from handlers.picking import record_refusal
from models import CertificateKind, Grant, Identity

# Stored codes, in the order the relationship question lists them (labels: "relationship_<code>").
RELATIONSHIPS = ("father", "mother", "grandfather", "grandmother", "mat_grandfather", "mat_grandmother", "guardian")
# What people also call them; the listed labels themselves are accepted too.
RELATIONSHIP_ALIASES = {
    "爸爸": "father",
    "爸": "father",
    "妈妈": "mother",
    "妈": "mother",
    "爷爷": "grandfather",
    "奶奶": "grandmother",
    "外公": "mat_grandfather",
    "姥爷": "mat_grandfather",
    "外婆": "mat_grandmother",
    "姥姥": "mat_grandmother",
    "监护人": "guardian",
    "其他": "guardian",
}
STARTS = menu(MenuKey.GRANT) | text_in("授权", "授权家人")
_REVOKE = re.compile(r"^撤销(?:授权)?第?(\d{1,2})[号个位条]?$")
REFUSAL_REASONS = GRANT_REFUSAL_REASONS  # a refusal's catalogue key → the reason recorded in the audit log


class GrantSteps(StatesGroup):
    """Picking a certificate, managing its grantees, the steps of adding one, confirming a revocation."""

    choosing = State()
    managing = State()
    name = State()
    id_number = State()
    relationship = State()
    phone = State()
    confirming = State()
    revoking = State()


# Steps holding a half-filled grantee: leaving them discards what was typed.
DRAFT_STEPS = frozenset(
    {GrantSteps.name, GrantSteps.id_number, GrantSteps.relationship, GrantSteps.phone, GrantSteps.confirming}
)


# --- small pure helpers ------------------------------------------------------------------------


def revoke_number(text: str) -> int | None:
    """The number in "撤销2", "撤销 2", "撤销第2位"…, or None."""
    match = _REVOKE.match(normalise(text))
    return int(match.group(1)) if match else None


def _is_revoke(update: Update) -> bool:
    return update.kind is UpdateKind.TEXT and revoke_number(update.text) is not None


def relationship_label(ctx: Context, code: str) -> str:
    """How a stored relationship reads (unknown codes as they are)."""
    key = f"relationship_{code}"
    return ctx.text(key) if key in ctx.services.catalogue else code


def parse_relationship(ctx: Context, text: str) -> str | None:
    """The relationship code for a number of the list, a listed label or a common alias, or None."""
    number = list_number(text)
    if number is not None:
        return RELATIONSHIPS[number - 1] if 1 <= number <= len(RELATIONSHIPS) else None
    word = normalise(text)
    for code in RELATIONSHIPS:
        if word == normalise(relationship_label(ctx, code)):
            return code
    return RELATIONSHIP_ALIASES.get(word)


# --- loading what a step works on --------------------------------------------------------------


async def _identity(ctx: Context) -> Identity | None:
    return await bound_identity(ctx.session, await ctx.account())


async def _held_children(ctx: Context, identity: Identity) -> list[Visible]:
    """The children's certificates this person holds (the only ones that can be authorised)."""
    visible = await visible_certificates(ctx.session, ctx.services.vault, identity)
    return [item for item in visible if item.role == "holder" and item.certificate.kind == CertificateKind.CHILD]


async def _managed(ctx: Context) -> tuple[Identity, Visible] | None:
    """The holder and the certificate this conversation manages, still held; or say it is gone and stop."""
    identity = await _identity(ctx)
    certificate_id = ctx.data.get("certificate_id")
    if identity is not None and certificate_id is not None:
        for item in await _held_children(ctx, identity):
            if item.certificate.id == certificate_id:
                return identity, item
    reason = "not_verified" if identity is None else "not_holder"
    await record_refusal(ctx, identity, GRANT_REFUSED, reason, certificate_id, step=ctx.state or "")
    ctx.say("grant_gone")
    ctx.finish()
    return None


def _grant_lines(ctx: Context, grants: Sequence[Grant]) -> list[str]:
    vault = ctx.services.vault
    return [
        ctx.text(
            "grant_overview_item",
            number=number,
            name=mask_name(vault.open("name", grant.grantee_name_enc)),
            relationship=relationship_label(ctx, grant.relationship),
            phone=mask_phone(vault.open("phone", grant.grantee_phone_enc)),
        )
        for number, grant in enumerate(grants, 1)
    ]


async def _overview(ctx: Context, identity: Identity, visible: Visible) -> str:
    """The certificate's masked header, its numbered grantees and what can be done; audited."""
    grants = await active_grants(ctx.session, visible.certificate.id)
    limit = ctx.settings.max_grantees
    record_view(ctx.session, identity, visible, "grants_view", ctx.update.platform.value, account=await ctx.account())
    lines = [
        ctx.text(
            "grant_overview_head",
            name=visible.file.masked_name,
            id=visible.file.masked_id,
            count=len(grants),
            limit=limit,
        )
    ]
    lines += _grant_lines(ctx, grants) if grants else [ctx.text("grant_overview_empty")]
    lines.append("")
    lines.append(
        ctx.text("grant_overview_options_full" if len(grants) >= limit else "grant_overview_options", limit=limit)
    )
    return "\n".join(lines)


async def _manage(ctx: Context, identity: Identity, visible: Visible, before: str = "") -> None:
    """Show one certificate's grantees and wait for 「添加」/「撤销N」/「退出」."""
    overview = await _overview(ctx, identity, visible)
    ctx.reply(Text(f"{before}\n\n{overview}" if before else overview))
    ctx.data.pop("draft", None)
    ctx.data.pop("grant_id", None)
    ctx.goto(GrantSteps.managing, certificate_id=visible.certificate.id, done="")


def _pick_list(ctx: Context, held: Sequence[Visible]) -> None:
    lines = [ctx.text("grant_pick_head")]
    lines += [
        ctx.text("grant_pick_item", number=number, name=item.file.masked_name, id=item.file.masked_id)
        for number, item in enumerate(held, 1)
    ]
    ctx.reply(Text("\n".join(lines)))
    ctx.finish()
    ctx.goto(GrantSteps.choosing, choices=[item.certificate.id for item in held])


# --- entry and choosing ------------------------------------------------------------------------


async def start(ctx: Context) -> None:
    """「证照授权」: verified holders of a child's certificate manage it; everyone else learns why not."""
    identity = await _identity(ctx)
    if identity is None:
        ctx.finish()
        ctx.say("grant_need_verify")
        return
    visible = await visible_certificates(ctx.session, ctx.services.vault, identity)
    held = [item for item in visible if item.role == "holder" and item.certificate.kind == CertificateKind.CHILD]
    if not held:
        ctx.finish()
        for item in visible:  # what they may see but not authorise, and why
            reason = "not_holder" if item.role != "holder" else "adult_certificate"
            await record_refusal(ctx, identity, GRANT_REFUSED, reason, item.certificate.id, step="start")
        texts = [ctx.text("grant_no_child_certificate")]
        granted = [item.file.masked_name for item in visible if item.role == "grantee"]
        if granted:
            texts.append(ctx.text("grant_granted_to_you", names="、".join(granted)))
        lines(ctx, *texts)
        return
    if len(held) == 1:
        ctx.finish()
        await _manage(ctx, identity, held[0])
        return
    _pick_list(ctx, held)


async def choose(ctx: Context) -> None:
    """A number from the list of held children's certificates."""
    identity = await _identity(ctx)
    number = list_number(ctx.update.text)
    choices = list(ctx.data.get("choices", []))
    if identity is None or number is None or not 1 <= number <= len(choices):
        ctx.say("grant_pick_invalid")
        ctx.goto(GrantSteps.choosing)
        return
    for item in await _held_children(ctx, identity):
        if item.certificate.id == choices[number - 1]:
            await _manage(ctx, identity, item)
            return
    await record_refusal(ctx, identity, GRANT_REFUSED, "not_holder", choices[number - 1], step="choose")
    ctx.say("grant_gone")
    ctx.finish()


async def not_a_choice(ctx: Context) -> None:
    """Anything else while the list is open."""
    ctx.say("grant_pick_invalid")
    ctx.goto(GrantSteps.choosing)


# --- managing ------------------------------------------------------------------------------------


async def start_adding(ctx: Context) -> None:
    """「添加」: ask for the grantee's name (unless the certificate has all the grantees it may)."""
    managed = await _managed(ctx)
    if managed is None:
        return
    identity, visible = managed
    limit = ctx.settings.max_grantees
    if len(await active_grants(ctx.session, visible.certificate.id)) >= limit:
        await record_refusal(ctx, identity, GRANT_REFUSED, "full", visible.certificate.id, step="add")
        ctx.say("grant_full", limit=limit)
        ctx.goto(GrantSteps.managing, done="")
        return
    ctx.data.pop("draft", None)
    ctx.goto(GrantSteps.name, draft={}, done="")
    ctx.say("grant_ask_name")


async def ask_revoke(ctx: Context) -> None:
    """「撤销N」: ask to confirm revoking the N-th grantee of the list."""
    managed = await _managed(ctx)
    if managed is None:
        return
    _, visible = managed
    number = revoke_number(ctx.update.text)
    grants = await active_grants(ctx.session, visible.certificate.id)
    if number is None or not 1 <= number <= len(grants):
        ctx.say("grant_revoke_no_such", number=number)
        ctx.goto(GrantSteps.managing, done="")
        return
    grant = grants[number - 1]
    ctx.say(
        "grant_revoke_confirm",
        name=mask_name(ctx.services.vault.open("name", grant.grantee_name_enc)),
        relationship=relationship_label(ctx, grant.relationship),
        child=visible.file.masked_name,
    )
    ctx.goto(GrantSteps.revoking, grant_id=grant.id, done="")


async def revoke_without_number(ctx: Context) -> None:
    """「撤销」 alone: which one?"""
    ctx.say("grant_revoke_which")
    ctx.goto(GrantSteps.managing)


async def confirmed_again(ctx: Context) -> None:
    """A confirmation arriving after the action it confirms was done (a double tap): nothing happens twice."""
    done = ctx.data.get("done")
    ctx.say({"grant": "grant_already_done", "revoke": "grant_revoked_already"}.get(str(done), "grant_manage_hint"))
    ctx.goto(GrantSteps.managing)


async def manage_hint(ctx: Context) -> None:
    """Anything else while a certificate's grantees are shown."""
    ctx.say("grant_manage_hint")
    ctx.goto(GrantSteps.managing)


# --- adding, step by step --------------------------------------------------------------------------


def _draft(ctx: Context) -> dict[str, str]:
    draft = ctx.data.get("draft")
    return dict(draft) if isinstance(draft, dict) else {}


def _ask_relationship(ctx: Context) -> None:
    choices = "\n".join(f"{number}. {relationship_label(ctx, code)}" for number, code in enumerate(RELATIONSHIPS, 1))
    ctx.say("grant_ask_relationship", choices=choices)


async def got_name(ctx: Context) -> None:
    """Validate the grantee's name and ask for their ID number."""
    problem = name_problem(ctx.update.text, "grant_bad_name")
    name = normalize_name(ctx.update.text)
    if problem is not None or name is None:
        ctx.say(problem or "grant_bad_name")
        ctx.goto(GrantSteps.name)
        return
    ctx.goto(GrantSteps.id_number, draft={**_draft(ctx), "name": ctx.services.vault.seal_text("name", name)})
    ctx.say("grant_ask_id")


async def got_id_number(ctx: Context) -> None:
    """Validate the grantee's ID number: well-formed, not the holder's, not the child's, not already granted."""
    managed = await _managed(ctx)
    if managed is None:
        return
    identity, visible = managed
    off_topic = id_number_problem(ctx.update.text)
    if off_topic is not None:
        ctx.say(off_topic)
        ctx.goto(GrantSteps.id_number)
        return
    try:
        parsed = parse_id_number(ctx.update.text, china_date(ctx.now))
    except InvalidIdNumber as exc:
        ctx.say(exc.reason)
        ctx.goto(GrantSteps.id_number)
        return
    vault = ctx.services.vault
    digest = vault.digest("id_number", parsed.value)
    refusal = ""
    if digest == identity.id_number_hash:
        refusal = "grant_self"
    elif visible.file.id_number and parsed.value == visible.file.id_number.upper():
        refusal = "grant_is_child"
    elif any(
        grant.grantee_id_number_hash == digest for grant in await active_grants(ctx.session, visible.certificate.id)
    ):
        refusal = "grant_duplicate"
    if refusal:
        reason = REFUSAL_REASONS[refusal]
        await record_refusal(ctx, identity, GRANT_REFUSED, reason, visible.certificate.id, step="id_number")
        lines(ctx, ctx.text(refusal), ctx.text("grant_ask_id_again"))
        ctx.goto(GrantSteps.id_number)
        return
    ctx.goto(GrantSteps.relationship, draft={**_draft(ctx), "id_number": vault.seal_text("id_number", parsed.value)})
    _ask_relationship(ctx)


async def got_relationship(ctx: Context) -> None:
    """A number or a word for the relationship; then ask for the phone."""
    code = parse_relationship(ctx, ctx.update.text)
    if code is None:
        ctx.say("grant_bad_relationship")
        ctx.goto(GrantSteps.relationship)
        return
    ctx.goto(GrantSteps.phone, draft={**_draft(ctx), "relationship": code})
    ctx.say("grant_ask_phone")


async def got_phone(ctx: Context) -> None:
    """Validate the phone and show the whole grant, masked, for confirmation."""
    managed = await _managed(ctx)
    if managed is None:
        return
    _, visible = managed
    phone = normalize_mobile(ctx.update.text)
    if phone is None:
        ctx.say("phone_invalid")
        ctx.goto(GrantSteps.phone)
        return
    vault = ctx.services.vault
    draft = {**_draft(ctx), "phone": vault.seal_text("phone", phone)}
    grantee = _grantee(vault, draft)
    if grantee is None:  # a step was skipped (a stale state): start the grantee again
        ctx.goto(GrantSteps.name, draft={})
        ctx.say("grant_ask_name")
        return
    ctx.goto(GrantSteps.confirming, draft=draft)
    ctx.say(
        "grant_confirm",
        child=visible.file.masked_name,
        name=mask_name(grantee.name),
        relationship=relationship_label(ctx, grantee.relationship),
        id=mask_id_number(grantee.id_number),
        phone=mask_phone(grantee.phone),
    )


def _grantee(vault: Vault, draft: dict[str, str]) -> Grantee | None:
    if not all(draft.get(field) for field in ("id_number", "name", "relationship", "phone")):
        return None
    return Grantee(
        id_number=vault.open_text("id_number", draft["id_number"]),
        name=vault.open_text("name", draft["name"]),
        relationship=draft["relationship"],
        phone=vault.open_text("phone", draft["phone"]),
    )


async def confirm_grant(ctx: Context) -> None:
    """「确认授权」: add the grant, tell the grantee on each platform they use, and show the list again."""
    managed = await _managed(ctx)
    if managed is None:
        return
    identity, visible = managed
    vault = ctx.services.vault
    grantee = _grantee(vault, _draft(ctx))
    if grantee is None:
        await _manage(ctx, identity, visible)
        return
    limit = ctx.settings.max_grantees
    grant, refusal = await add_grant(
        ctx.session,
        vault,
        identity,
        visible.certificate,
        grantee,
        ctx.settings,
        ctx.update.platform.value,
        ctx.now,
        account=await ctx.account(),
    )
    if grant is None:
        reason = REFUSAL_REASONS.get(refusal, refusal)
        await record_refusal(ctx, identity, GRANT_REFUSED, reason, visible.certificate.id, step="confirm")
        await _manage(ctx, identity, visible, before=ctx.text(refusal, limit=limit))
        return
    told = await tell_grantee(ctx.session, ctx.services.catalogue, vault, identity, visible.file.masked_name, grant)
    notice_template = ctx.services.settings.wxmini_notice_template
    # A mini-program-only grantee outside its window and without a consent hears nothing: say so, not "told".
    reached = [account for account in told if await may_reach(ctx.session, account, notice_template, ctx.now)]
    count = len(await active_grants(ctx.session, visible.certificate.id))
    lines(
        ctx,
        ctx.text(
            "grant_added",
            name=mask_name(grantee.name),
            relationship=relationship_label(ctx, grantee.relationship),
            child=visible.file.masked_name,
            count=count,
            limit=limit,
        ),
        ctx.text("grant_added_notified" if reached else "grant_added_not_reached" if told else "grant_added_not_yet"),
        ctx.text("grant_added_more"),
    )
    ctx.data.pop("draft", None)
    ctx.goto(GrantSteps.managing, done="grant")


async def confirm_hint(ctx: Context) -> None:
    """Anything else while the grant waits for 「确认授权」."""
    ctx.say("grant_confirm_hint")
    ctx.goto(GrantSteps.confirming)


# --- revoking ------------------------------------------------------------------------------------------


async def confirm_revoke(ctx: Context) -> None:
    """「确认撤销」: revoke (once, however often it is confirmed) and tell the grantee."""
    managed = await _managed(ctx)
    if managed is None:
        return
    identity, visible = managed
    grant_id = ctx.data.get("grant_id")
    grant = await ctx.session.get(Grant, grant_id) if isinstance(grant_id, int) else None
    if grant is None or grant.certificate_id != visible.certificate.id:
        # Not a grant of this certificate (a stale step): nothing is revoked, and the attempt is on record.
        await record_refusal(ctx, identity, GRANT_REFUSED, "no_such_grant", visible.certificate.id, step="revoke")
        await _manage(ctx, identity, visible)
        return
    revoked = await revoke_grant(
        ctx.session,
        identity,
        visible.certificate,
        grant,
        ctx.update.platform.value,
        ctx.now,
        account=await ctx.account(),
    )
    ctx.data.pop("grant_id", None)
    if not revoked:
        ctx.say("grant_revoked_already")
        ctx.goto(GrantSteps.managing, done="revoke")
        return
    vault = ctx.services.vault
    await tell_grantee(
        ctx.session, ctx.services.catalogue, vault, identity, visible.file.masked_name, grant, revoked=True
    )
    ctx.say(
        "grant_revoked",
        name=mask_name(vault.open("name", grant.grantee_name_enc)),
        relationship=relationship_label(ctx, grant.relationship),
        child=visible.file.masked_name,
        count=len(await active_grants(ctx.session, visible.certificate.id)),
        limit=ctx.settings.max_grantees,
    )
    ctx.goto(GrantSteps.managing, done="revoke")


async def revoke_hint(ctx: Context) -> None:
    """Anything else while a revocation waits for 「确认撤销」."""
    ctx.say("grant_revoke_confirm_hint")
    ctx.goto(GrantSteps.revoking)


# --- moving back and leaving ---------------------------------------------------------------------------


async def back(ctx: Context) -> None:
    """「上一步」: the step before this one (the list, from the first step of adding or from revoking)."""
    state = ctx.state
    if state == GrantSteps.choosing.name:
        ctx.say("grant_pick_invalid")
        return
    if state == GrantSteps.id_number.name:
        ctx.goto(GrantSteps.name)
        ctx.say("grant_ask_name")
        return
    if state == GrantSteps.relationship.name:
        ctx.goto(GrantSteps.id_number)
        ctx.say("grant_ask_id")
        return
    if state == GrantSteps.phone.name:
        ctx.goto(GrantSteps.relationship)
        _ask_relationship(ctx)
        return
    if state == GrantSteps.confirming.name:
        ctx.goto(GrantSteps.phone)
        ctx.say("grant_ask_phone")
        return
    managed = await _managed(ctx)
    if managed is None:
        return
    identity, visible = managed
    choices = ctx.data.get("choices") or []
    if state == GrantSteps.managing.name and len(choices) > 1:
        _pick_list(ctx, await _held_children(ctx, identity))
        return
    await _manage(ctx, identity, visible)


async def timed_out(ctx: Context) -> None:
    """Someone writes after a grant step expired: nothing was saved, and how to start again."""
    ctx.say("grant_timed_out")


FLOW = Flow(
    name="grant",
    title=LABELS[MenuKey.GRANT],
    entry_points=[Route(STARTS, start)],
    states={
        GrantSteps.choosing: [Route(is_choice, choose), Route(STARTS, start), Route(any_text, not_a_choice)],
        GrantSteps.managing: [
            Route(text_in("添加", "添加授权", "新增", "添加家人", "新增授权"), start_adding),
            Route(_is_revoke, ask_revoke),
            Route(text_in("撤销", "撤销授权", "取消授权"), revoke_without_number),
            Route(text_in("确认授权", "确认撤销", "确认"), confirmed_again),
            Route(STARTS, start),
            Route(any_text, manage_hint),
        ],
        GrantSteps.name: [Route(any_text, got_name)],
        GrantSteps.id_number: [Route(any_text, got_id_number)],
        GrantSteps.relationship: [Route(any_text, got_relationship)],
        GrantSteps.phone: [Route(any_text, got_phone)],
        GrantSteps.confirming: [Route(text_in("确认授权", "确认"), confirm_grant), Route(any_text, confirm_hint)],
        GrantSteps.revoking: [Route(text_in("确认撤销", "确认"), confirm_revoke), Route(any_text, revoke_hint)],
    },
    fallbacks=[Route(text_in("上一步", "返回上一步"), back)],
    timeout=timedelta(minutes=15),
    unsaved=DRAFT_STEPS,
    on_timeout=timed_out,
)

router = Router("grant")
router.include(FLOW)
