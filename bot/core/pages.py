"""The one shape of vaxbot's small browser pages: a title and a paragraph, in Chinese, escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping

from aiohttp import web


def simple_page(
    title: str,
    text: str,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    *,
    link: tuple[str, str] | None = None,
) -> web.Response:
    """A mobile-friendly page saying ``text`` under ``title``, with an optional (label, href) link; all escaped."""
    extra = f'<p><a href="{html.escape(link[1])}">{html.escape(link[0])}</a></p>' if link is not None else ""
    document = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{html.escape(title)}</title></head><body style="font-family:sans-serif;padding:24px;line-height:1.6">'
        f"<h3>{html.escape(title)}</h3><p>{html.escape(text)}</p>{extra}</body></html>"
    )
    return web.Response(text=document, content_type="text/html", status=status, headers=headers)
