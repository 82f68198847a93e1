"""A simulated face provider on our own server, for development, the demo and the tests.

:meth:`DevFace.start` returns ``{public_url}/_dev/face/<ref>``: a small page (served by :meth:`DevFace.app`,
mounted at :data:`MOUNT`) where whoever holds the phone chooses 通过, 不通过 or 换一个人, and is sent back
(303) to the attempt's return URL. :meth:`DevFace.query` then answers what was chosen; 换一个人 passes with
another person's ID number, so that the caller's own check of the reported identity can be exercised.

State lives in memory (one process, development only); ``build_face_providers`` refuses it in production.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from xml.sax.saxutils import escape

from aiohttp import web

from bot.core.pii import mask_name
from bot.core.validators import id_check_char
from bot.identity.face.base import Outcome, Started, StartRequest, Subject

MOUNT = "/_dev/face"
KEEP_SECONDS = 24 * 3600  # attempts older than this are forgotten
DECISIONS = {"pass": "通过", "fail": "不通过", "other": "换一个人"}
# The page's words (a development page, not part of the bot's message catalogue).
PAGE_TITLE = "模拟人脸识别（仅用于开发演示）"
PAGE_SUBJECT = "待验证：{name}"
PAGE_NOTE = "这是开发环境的模拟页面，不会采集人脸。请选择本次验证的结果："
PAGE_DONE = "本次验证已完成，请返回对话。"
PAGE_UNKNOWN = "验证链接无效或已过期。"


@dataclasses.dataclass
class DevAttempt:
    """One started attempt and, once chosen, its decision."""

    reference: str
    subject: Subject
    return_url: str
    created: float
    decision: str | None = None  # pass | fail | other


def other_person(id_number: str) -> str:
    """A valid ID number of someone else (same region and birth date, another serial number)."""
    serial = (int(id_number[14:17]) + 7) % 1000
    first17 = f"{id_number[:14]}{serial:03d}"
    return first17 + id_check_char(first17)


class DevFace:
    """The simulated provider: a page on our server records the decision, ``query`` reports it."""

    name = "dev"

    def __init__(self, public_url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._base = public_url.rstrip("/") + MOUNT
        self._clock = clock
        self.attempts: dict[str, DevAttempt] = {}

    async def start(self, request: StartRequest) -> Started:
        """Remember the subject; the URL of the simulated page."""
        self._forget_old()
        ref = secrets.token_urlsafe(18)
        self.attempts[ref] = DevAttempt(request.reference, request.subject, request.return_url, self._clock())
        return Started(url=f"{self._base}/{ref}", provider_ref=ref)

    async def query(self, provider_ref: str, request: StartRequest) -> Outcome:
        """What was chosen on the page (nothing yet: not completed)."""
        attempt = self.attempts.get(provider_ref)
        if attempt is None:
            return Outcome(False, reason="expired")
        if attempt.reference != request.reference:
            return Outcome(False, reason="dev_other_attempt")
        subject = attempt.subject
        if attempt.decision == "pass":
            return Outcome(True, name=subject.name, id_number=subject.id_number)
        if attempt.decision == "other":
            return Outcome(True, name=subject.name, id_number=other_person(subject.id_number))
        if attempt.decision == "fail":
            return Outcome(False, reason="dev_failed")
        return Outcome(False, reason="not_completed")

    def decide(self, provider_ref: str, decision: str) -> str:
        """Record the decision once (``KeyError`` unknown, ``ValueError`` bad or repeated); the return URL."""
        attempt = self.attempts[provider_ref]
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}")
        if attempt.decision is not None:
            raise ValueError("already decided")
        attempt.decision = decision
        return attempt.return_url

    def _forget_old(self) -> None:
        cutoff = self._clock() - KEEP_SECONDS
        for ref in [ref for ref, attempt in self.attempts.items() if attempt.created < cutoff]:
            del self.attempts[ref]

    # --- the page ---

    def app(self) -> web.Application:
        """The sub-application to mount at :data:`MOUNT`: ``GET`` and ``POST /{ref}``."""
        app = web.Application()
        app.router.add_get("/{ref}", self._page)
        app.router.add_post("/{ref}", self._decide)
        return app

    async def _page(self, request: web.Request) -> web.Response:
        attempt = self.attempts.get(request.match_info["ref"])
        if attempt is None:
            return _html(404, f"<p>{PAGE_UNKNOWN}</p>")
        if attempt.decision is not None:
            return _html(200, f"<p>{PAGE_DONE}</p>")
        subject = escape(PAGE_SUBJECT.format(name=mask_name(attempt.subject.name)))
        buttons = "".join(
            f'<button type="submit" name="decision" value="{value}">{label}</button> '
            for value, label in DECISIONS.items()
        )
        return _html(200, f'<p>{subject}</p><p>{PAGE_NOTE}</p><form method="post">{buttons}</form>')

    async def _decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        decision = str(form.get("decision", ""))
        if decision not in DECISIONS:
            return _html(400, f"<p>{PAGE_NOTE}</p>")
        try:
            return_url = self.decide(request.match_info["ref"], decision)
        except KeyError:
            return _html(404, f"<p>{PAGE_UNKNOWN}</p>")
        except ValueError:
            return _html(409, f"<p>{PAGE_DONE}</p>")
        raise web.HTTPSeeOther(return_url)


def _html(status: int, body: str) -> web.Response:
    html = (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{PAGE_TITLE}</title></head><body><h1>{PAGE_TITLE}</h1>{body}</body></html>"
    )
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")
