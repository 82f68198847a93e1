"""Journey 6, the family's side: show code (亮码接种).

For a chosen certificate the bot sends a QR code image (a short-lived, single-use reference with no
personal data in it) and a link to a page that keeps a fresh code on screen. Holders and grantees alike
may show a code; every code shown is audited. Nothing here calls a platform: the image is a PNG the outbox
uploads before sending.
"""

from __future__ import annotations

import base64
from datetime import timedelta

from bot.certificates.rules import Visible, record_view
from bot.chat.conversation import Context, State, StatesGroup
from bot.chat.menu import MenuKey
from bot.core.update import Article, Image, Text
from bot.showcode.codes import issue_code, qr_png
from bot.showcode.page import code_page_url, open_code_page
from handlers.my_code import no_certificate
from handlers.picking import Picker
from models import Identity

ENTRY_WORDS = ("亮码", "亮码接种", "接种码", "出示接种码", "我的接种码", "本人接种码", "二维码", "出示二维码")


class ShowCodeSteps(StatesGroup):
    """Choosing one of several certificates."""

    choosing = State()


async def show(ctx: Context, identity: Identity, visible: Visible) -> None:
    """The masked caption, the code as an image, and the link to the code page; audited."""
    settings = ctx.settings
    vault = ctx.services.vault
    record_view(ctx.session, identity, visible, "code_show", ctx.update.platform.value, account=await ctx.account())
    ttl = timedelta(seconds=settings.code_ttl_seconds)
    issued = issue_code(
        ctx.session, vault, certificate_id=visible.certificate.id, identity_id=identity.id, now=ctx.now, ttl=ttl
    )
    page_ttl = timedelta(seconds=settings.code_page_ttl_seconds)
    handle = open_code_page(
        ctx.session, vault, certificate_id=visible.certificate.id, identity_id=identity.id, now=ctx.now, ttl=page_ttl
    )
    masked = {"name": visible.file.masked_name, "id": visible.file.masked_id}
    # The caption first: only a text can be the webhook's own answer; the image needs an upload.
    ctx.reply(Text(ctx.text("code_caption", minutes=int(ttl.total_seconds() // 60), **masked)))
    ctx.reply(Image(png_base64=base64.b64encode(qr_png(issued.payload)).decode("ascii"), credential=True))
    ctx.reply(
        Article(
            title=ctx.text("code_page_link_title", **masked),
            description=ctx.text("code_page_link_description", minutes=int(page_ttl.total_seconds() // 60)),
            url=code_page_url(settings, handle),
            credential=True,
        )
    )


PICKER = Picker(
    state=ShowCodeSteps.choosing,
    act=show,
    need_verify="code_need_verify",
    none="code_none",
    head="code_pick_head",
    on_none=no_certificate,
)

router = PICKER.router("show_code", MenuKey.SHOW_CODE, ENTRY_WORDS)
