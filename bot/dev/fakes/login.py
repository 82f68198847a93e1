"""The simulated platforms' web-authorisation page when no user is logged in (development and tests).

A real authorisation page runs inside the platform's app, which knows who is logged in; the fakes learn it
from a cookie (the sandbox sets it for the person it plays, a test sets it for its browser). A browser
without one, such as the one a ``vaxbot chat`` user opens a link in, is told to open the link in the app,
and offered a form to say which user it plays; the choice comes back as :data:`SIM_USER_PARAM`.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

SIM_USER_PARAM = "sim_user"


def login_page(status: int, text: str, query: Mapping[str, str] | None = None, ask: str = "") -> web.Response:
    """A page saying ``text``; with ``ask``, a form that repeats ``query`` with the user chosen."""
    form = ""
    if query is not None and ask:
        hidden = "".join(
            f"<input type='hidden' name={quoteattr(key)} value={quoteattr(value)}>"
            for key, value in query.items()
            if key != SIM_USER_PARAM
        )
        form = (
            f"<form method='get'><label>{escape(ask)} <input name='{SIM_USER_PARAM}' required></label>"
            f"{hidden}<button type='submit'>打开</button></form>"
        )
    head = "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'></head>"
    html = f"{head}<body><p>{escape(text)}</p>{form}</body></html>"
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")
