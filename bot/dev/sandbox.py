"""The development sandbox: chat with vaxbot in a browser as a WeChat or an Alipay user.

No shortcut around the webhooks: every message typed on the page is signed (and, on WeChat, encrypted)
by the platform simulators and posted over HTTP to ``/wechat`` or ``/alipay``, exactly as the platforms
do; what comes back is the passive reply (WeChat) and whatever vaxbot sent through the platforms' APIs,
read from the same fakes its outbox delivers to. Each conversation's transcript is kept here, so a reload
shows it again, and 「重置演示」 puts the demo world back as it was. Development only: ``bot.cli`` mounts it
only when ``Settings.dev_tools`` (VAXBOT_ENV=development, everything on this machine).
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from bot.chat.menu import LABELS, MENU
from bot.core.catalogue import Catalogue
from bot.core.config import SANDBOX_MOUNT, Settings, local_url
from bot.dev.demo import GRANDMA, PARENT, WX_PARENT, DemoPerson, reset_demo
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import SIM_USER_COOKIE as ALIPAY_USER_COOKIE
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import SIM_USER_COOKIE as WECHAT_USER_COOKIE
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.dev.fakes.wxmini import FakeMiniProgramAPI, MiniProgramClientSim
from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.alipay.sender import IMAGE_ACTION_NAME
from bot.reminders.doses import next_reminder_time, plan_reminders, send_due_reminders
from bot.web.appkeys import DB, DEV_FACE, SERVICES, SESSIONS, WORKER
from models import utcnow

MOUNT = SANDBOX_MOUNT
TRANSCRIPT_LIMIT = 300  # entries kept per conversation (the oldest go first)
CONVERSATION_LIMIT = 64  # conversations kept (the least recently used go first)
TOKEN_HEADER = "X-Sandbox-Token"  # noqa: S105 (a header name): carries the page's token on every POST
_KEYWORD = re.compile(r"keyword(\d+)")


def demo_users() -> list[dict[str, str]]:
    """The demo people one can be, with a chat id per platform (ID numbers are fictional demo data)."""
    people: list[tuple[str, DemoPerson, str]] = [
        ("parent", PARENT, "南通的妈妈：申领孩子的接种证，为家人授权"),
        ("grandma", GRANDMA, "南通的奶奶：被授权后查看孙子的接种证"),
        ("wuxi-parent", WX_PARENT, "无锡的爸爸"),
    ]
    return [
        {
            "key": key,
            "name": person.name,
            "id_number": person.id_number,
            "about": about,
            "wechat": f"o-demo-{key}",
            "alipay": f"2088{index:012d}",
        }
        for index, (key, person, about) in enumerate(people, start=1)
    ]


def template_card(
    catalogue: Catalogue,
    title: str,
    fields: Mapping[str, Any],
    url: str = "",
    action: str = "",
) -> dict[str, Any]:
    """A template message as the phone shows it: title, ``first``, labelled keyword rows, ``remark``, link.

    ``fields`` are the template's values as sent (``{"first": {"value": …}, "keyword1": {"value": …}, …}``);
    entries that are not ``{"value": …}`` (Alipay's ``head_color``, ``url``, ``action_name``) are not text.
    """
    values = {key: str(value.get("value", "")) for key, value in fields.items() if isinstance(value, Mapping)}
    keywords = sorted(
        ((int(match.group(1)), key) for key in values if (match := _KEYWORD.fullmatch(key))), key=lambda pair: pair[0]
    )
    rows = []
    for _, key in keywords:
        label_key = f"sandbox_template_{key}"
        rows.append({"label": catalogue(label_key) if label_key in catalogue else key, "value": values[key]})
    card: dict[str, Any] = {
        "kind": "template",
        "title": title,
        "first": values.get("first", ""),
        "rows": rows,
        "remark": values.get("remark", ""),
        "url": url,
        "action": action or (catalogue("sandbox_template_link") if url else ""),
    }
    card["text"] = "\n".join(
        part
        for part in [title, card["first"], *(f"{row['label']}：{row['value']}" for row in rows), card["remark"]]
        if part
    )
    return card


def template_title(catalogue: Catalogue, settings: Settings, platform: str, template_id: str) -> str:
    """The title a template carries on the platform (known for the dose reminder, generic otherwise)."""
    if template_id and template_id == settings.reminder_template_id(platform):
        return catalogue("sandbox_template_reminder")
    return catalogue("sandbox_template_other")


def wechat_view(body: dict[str, Any], catalogue: Catalogue, settings: Settings) -> dict[str, Any]:
    """How the WeChat app shows one message (a passive reply or a pushed one)."""
    kind = str(body.get("msgtype") or body.get("MsgType") or "")
    if kind == "text":
        return {"kind": "text", "text": str(body.get("text", {}).get("content") or body.get("Content") or "")}
    if kind == "news":
        if "news" in body:
            article = body["news"]["articles"][0]
            return {"kind": "link", "title": article["title"], "text": article["description"], "url": article["url"]}
        item = body["Articles"]["item"]
        return {"kind": "link", "title": item["Title"], "text": item["Description"], "url": item["Url"]}
    if kind == "image":
        media_id = str(body.get("image", {}).get("media_id") or body.get("Image", {}).get("MediaId") or "")
        return {"kind": "image", "text": "[图片]", "src": f"{MOUNT}/api/media/{media_id}"}
    if "template_id" in body:
        template_id = str(body["template_id"])
        title = template_title(catalogue, settings, "wechat", template_id)
        return template_card(catalogue, title, body.get("data") or {}, str(body.get("url") or ""))
    return {"kind": "text", "text": f"[{kind}]"}


def mini_view(body: dict[str, Any], catalogue: Catalogue, settings: Settings) -> dict[str, Any]:
    """How WeChat shows one message of the mini program: its chat (text, image, link) or a subscription card."""
    if body.get("msgtype") == "link":
        link = body["link"]
        return {"kind": "link", "title": link["title"], "text": link.get("description", ""), "url": link["url"]}
    if "template_id" in body:  # a subscription message, shown in 服务通知 as a card
        template_id = str(body["template_id"])
        title = template_title(catalogue, settings, "wxmini", template_id)
        return template_card(catalogue, title, body.get("data") or {}, str(body.get("page") or ""))
    return wechat_view(body, catalogue, settings)


def alipay_view(method: str, biz: dict[str, Any], catalogue: Catalogue, settings: Settings) -> dict[str, Any]:
    """How the Alipay app shows one message the gateway delivered."""
    if method.endswith("custom.send"):
        if biz.get("msg_type") == "text":
            return {"kind": "text", "text": str(biz["text"]["content"])}
        article = (biz.get("articles") or [{}])[0]
        if article.get("action_name") == IMAGE_ACTION_NAME and article.get("image_url"):
            return {"kind": "image", "text": str(article.get("title", "")), "src": str(article["image_url"])}
        return {
            "kind": "link",
            "title": str(article.get("title", "")),
            "text": str(article.get("desc", "")),
            "url": str(article.get("url", "")),
        }
    if method.endswith("single.send"):
        template = biz.get("template") or {}
        context = template.get("context") or {}
        title = template_title(catalogue, settings, "alipay", str(template.get("template_id", "")))
        return template_card(
            catalogue, title, context, str(context.get("url") or ""), str(context.get("action_name") or "")
        )
    return {"kind": "text", "text": str(biz.get("data", ""))}


class Transcripts:
    """What each sandbox conversation showed, in memory and bounded, so that a reload shows it again.

    Why here and not in the page's storage: this server already sees every message the page sends and
    every reply and delivered message it shows, including those delivered while no page was open (a
    reminder, an answer that came after a reload); the page would miss those. One copy here is also what
    every tab and browser sees, and what 「重置演示」 clears in one place. It is development only and
    forgotten on restart, like the platform fakes it mirrors.
    """

    def __init__(self, per_conversation: int = TRANSCRIPT_LIMIT, conversations: int = CONVERSATION_LIMIT) -> None:
        self._per_conversation = per_conversation
        self._conversations = conversations
        self._logs: OrderedDict[tuple[str, str], deque[dict[str, Any]]] = OrderedDict()
        self._next_id = 1
        self.epoch = secrets.token_hex(6)  # changes on clear, so pages drop what they hold

    def add(self, platform: str, user: str, who: str, view: Mapping[str, Any]) -> None:
        """Append one entry (``who``: ``me``, ``bot`` or ``note``) to a conversation."""
        key = (platform, user)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = deque(maxlen=self._per_conversation)
            while len(self._logs) > self._conversations:
                self._logs.popitem(last=False)
        self._logs.move_to_end(key)
        log.append({**view, "id": self._next_id, "who": who})
        self._next_id += 1

    def since(self, platform: str, user: str, after: int) -> list[dict[str, Any]]:
        """The entries of one conversation with an id above ``after``, oldest first."""
        return [entry for entry in self._logs.get((platform, user), ()) if entry["id"] > after]

    def clear(self) -> None:
        """Forget every conversation."""
        self._logs.clear()
        self.epoch = secrets.token_hex(6)


class _SendFailed(Exception):
    """The webhook did not take the message."""


class Sandbox:
    """The page and its small API, in front of the platform simulators and the fakes."""

    def __init__(
        self,
        settings: Settings,
        wechat_fake: FakeWeChatAPI,
        alipay_fake: FakeAlipayGateway | None,
        mini_fake: FakeMiniProgramAPI | None = None,
    ) -> None:
        self._settings = settings
        self._wechat_fake = wechat_fake
        self._alipay_fake = alipay_fake
        self._mini_fake = mini_fake
        self._mini: MiniProgramClientSim | None = None
        if mini_fake is not None:
            self._mini = MiniProgramClientSim(settings.wxmini_token, settings.wxmini_appid, settings.wxmini_aes_key)
        self._mini_seen = 0
        self._wechat = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
        self._alipay: AlipayClientSim | None = None
        if alipay_fake is not None:
            self._alipay = AlipayClientSim(
                settings.alipay_appid,
                alipay_sign.read_private_key(settings.keys_dir / "alipay_platform_private.pem"),
                alipay_sign.read_public_key(settings.keys_dir / "alipay_app_public.pem"),
                on_interaction=alipay_fake.note_interaction,
            )
        self._clock = 0
        self.transcripts = Transcripts()
        self._wechat_seen = 0  # how far the fakes' delivery lists have been copied into the transcripts
        self._alipay_seen = 0
        self._token = secrets.token_urlsafe(24)  # for every POST: only the page, read same-origin, knows it

    def app(self) -> web.Application:
        """The sub-application to mount at :data:`MOUNT`."""
        app = web.Application()
        app.router.add_get("", self.page)
        app.router.add_get("/", self.page)
        app.router.add_get("/api/config", self.config)
        app.router.add_post("/api/send", self.send)
        app.router.add_get("/api/transcript", self.transcript)
        app.router.add_get("/api/media/{media_id}", self.media)
        app.router.add_post("/api/reminders", self.reminders)
        app.router.add_post("/api/reset", self.reset)
        return app

    async def page(self, _request: web.Request) -> web.Response:
        """The chat page."""
        text = resources.files("bot.dev").joinpath("sandbox.html").read_text(encoding="utf-8")
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def config(self, request: web.Request) -> web.Response:
        """Who one can be, the menu, the platforms, the page's texts and the reset token."""
        catalogue = request.config_dict[SERVICES].catalogue
        menu = [
            {
                "name": group,
                "items": [
                    {"label": label, "key": key.value, "shown": _shown(catalogue, "click", key.value)}
                    for label, key in items
                ],
            }
            for group, items in MENU
        ]
        names = ("reset_confirm", "reset_failed", "me_follow", "me_enter")
        texts = {name: catalogue(f"sandbox_{name}") for name in names}
        return web.json_response(
            {
                "users": demo_users(),
                "menu": menu,
                "platforms": self._platforms(),
                "texts": texts,
                "token": self._token,
            },
            headers={"Cache-Control": "no-store"},
        )

    def _platforms(self) -> list[str]:
        return ["wechat"] + (["alipay"] if self._alipay is not None else []) + (["wxmini"] if self._mini else [])

    def _base(self) -> str:
        # Our own address from the settings, never from the request's Host header (a wildcard host is
        # reached over loopback).
        return local_url(self._settings.host, self._settings.port)

    async def send(self, request: web.Request) -> web.Response:
        """One thing the user did: posted to our own webhook, signed like the platform, and transcribed."""
        problem = self._cross_site(request)  # it signs as any user: only the page itself may ask
        if problem is not None:
            return web.json_response({"error": problem}, status=403)
        try:
            payload = await request.json()
            platform, user = str(payload["platform"]), str(payload["user"])
            action, value = str(payload["action"]), str(payload.get("value", ""))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "bad request"}, status=400)
        if action not in ("text", "click", "follow", "unfollow", "enter") or (action == "text" and not value.strip()):
            return web.json_response({"error": "bad action"}, status=400)
        if platform not in self._platforms():
            return web.json_response({"error": "unknown platform"}, status=400)
        if not user or len(user) > 64:
            return web.json_response({"error": "bad user"}, status=400)
        services = request.config_dict[SERVICES]
        catalogue = services.catalogue
        self._absorb(catalogue)  # what was delivered before this message comes before it
        self.transcripts.add(platform, user, "me", {"kind": "text", "text": _shown(catalogue, action, value)})
        try:
            async with aiohttp.ClientSession() as http:
                if platform == "wechat":
                    replies = await self._send_wechat(http, self._base(), user, action, value)
                elif platform == "wxmini":
                    replies = await self._send_mini(http, self._base(), user, action, value)
                else:
                    replies = await self._send_alipay(http, self._base(), user, action, value)
        except (_SendFailed, aiohttp.ClientError) as exc:
            error = str(exc) or type(exc).__name__
            self.transcripts.add(platform, user, "note", {"text": catalogue("sandbox_send_failed", error=error)})
            return web.json_response({"error": error}, status=502)
        for reply in replies:
            self.transcripts.add(platform, user, "bot", wechat_view(reply, catalogue, self._settings))
        self._absorb(catalogue)
        response = web.json_response({"ok": True})
        self._log_in(response, platform, user)
        return response

    def _log_in(self, response: web.StreamResponse, platform: str, user: str) -> None:
        """Make the simulated platform app's browser logged in as the person the page plays.

        A link the page shows opens in this browser, and a verification link first asks the platform's
        web authorisation (the fake's page) whose browser it is: the real app knows who is logged in, the
        fake reads this cookie. It is set on every message and every poll, so switching person or platform
        on the page switches who the phone belongs to; it is scoped to the fake's authorisation page only.
        """
        if platform == "wechat":
            path = URL(self._settings.wechat_oauth_base).path.rstrip("/") + "/connect/oauth2/"
            response.set_cookie(WECHAT_USER_COOKIE, user, path=path, httponly=True, samesite="Lax")
        elif platform == "alipay":
            path = URL(self._settings.alipay_oauth_base).path.rstrip("/") + "/oauth2/"
            response.set_cookie(ALIPAY_USER_COOKIE, user, path=path, httponly=True, samesite="Lax")

    async def _send_wechat(
        self, http: aiohttp.ClientSession, base: str, user: str, action: str, value: str
    ) -> list[dict[str, Any]]:
        sim = self._wechat
        if action == "text":
            xml = sim.text(user, value)
        elif action == "click":
            xml = sim.event(user, "CLICK", create_time=self._tick(), EventKey=value)
        elif action == "enter":
            return []  # WeChat has no page-enter event
        else:
            xml = sim.event(user, "subscribe" if action == "follow" else "unsubscribe", create_time=self._tick())
        signed = sim.sign(xml)
        async with http.post(f"{base}/wechat", params=signed.query, data=signed.body) as response:
            body = await response.text()
            if response.status != 200:
                raise _SendFailed(f"HTTP {response.status}")
        reply = sim.open_reply(body)
        return [reply] if reply is not None else []

    async def _send_mini(
        self, http: aiohttp.ClientSession, base: str, user: str, action: str, value: str
    ) -> list[dict[str, Any]]:
        """The mini program's chat: no menu (a tap is its label typed), no follow (opening the chat instead)."""
        sim, fake = self._mini, self._mini_fake
        assert sim is not None and fake is not None
        if action == "unfollow":
            return []  # a mini program has no follow to end
        if action in ("follow", "enter"):
            body = sim.enter(user, value, create_time=self._tick())
            fake.note_contact(user, "enter")
        else:
            body = sim.text_push(user, LABELS.get(value, value) if action == "click" else value)
            fake.note_contact(user, "message")
        signed = sim.sign_push(body)
        async with http.post(f"{base}/wechat/mini", params=signed.query, data=signed.body) as response:
            if response.status != 200:
                raise _SendFailed(f"HTTP {response.status}")
        return []  # every answer arrives through message/custom/send

    async def _send_alipay(
        self, http: aiohttp.ClientSession, base: str, user: str, action: str, value: str
    ) -> list[dict[str, Any]]:
        sim = self._alipay
        assert sim is not None
        if action == "text":
            xml = sim.text(user, value)
        elif action == "enter":
            xml = sim.event(user, "enter", sim.scene(value) if value else "")
        else:
            xml = sim.event(user, action, value)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with http.post(f"{base}/alipay", data=sim.form(xml), headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise _SendFailed(f"HTTP {response.status}")
        sim.open_reply(body)  # the signed ack must verify, as Alipay checks it
        return []  # every answer on Alipay arrives through the gateway

    def _tick(self) -> int:
        # Taps dedupe on WeChat's one-second CreateTime: give each tap its own second.
        self._clock = max(self._clock + 1, int(time.time()))
        return self._clock

    def _absorb(self, catalogue: Catalogue) -> None:
        """Copy what the platform fakes delivered since the last look into the conversations it went to."""
        # No await in here: the cursors and the transcripts move together.
        pushed = self._wechat_fake.received
        if len(pushed) < self._wechat_seen:  # the fake was emptied
            self._wechat_seen = 0
        for item in pushed[self._wechat_seen :]:
            if item.body.get("touser"):
                view = wechat_view(item.body, catalogue, self._settings)
                self.transcripts.add("wechat", str(item.body["touser"]), "bot", view)
        self._wechat_seen = len(pushed)
        if self._mini_fake is not None:
            delivered = self._mini_fake.received
            if len(delivered) < self._mini_seen:
                self._mini_seen = 0
            for item in delivered[self._mini_seen :]:
                if item.body.get("touser"):
                    view = mini_view(item.body, catalogue, self._settings)
                    self.transcripts.add("wxmini", str(item.body["touser"]), "bot", view)
            self._mini_seen = len(delivered)
        if self._alipay_fake is None:
            return
        sent = self._alipay_fake.received
        if len(sent) < self._alipay_seen:
            self._alipay_seen = 0
        for call in sent[self._alipay_seen :]:
            if call.to_user_id and "message" in call.method:
                view = alipay_view(call.method, call.biz, catalogue, self._settings)
                self.transcripts.add("alipay", call.to_user_id, "bot", view)
        self._alipay_seen = len(sent)

    async def transcript(self, request: web.Request) -> web.Response:
        """One conversation's entries after id ``after`` (all of them after a reload), with the epoch."""
        platform, user = request.query.get("platform", ""), request.query.get("user", "")
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            after = 0
        self._absorb(request.config_dict[SERVICES].catalogue)
        items = self.transcripts.since(platform, user, after)
        response = web.json_response(
            {"epoch": self.transcripts.epoch, "items": items}, headers={"Cache-Control": "no-store"}
        )
        if platform in self._platforms() and user and len(user) <= 64:
            self._log_in(response, platform, user)
        return response

    async def reminders(self, request: web.Request) -> web.Response:
        """Fast-forward to the reminder hour: plan reminders now and send those due by then (a demo aid)."""
        problem = self._cross_site(request)
        if problem is not None:
            return web.json_response({"error": problem}, status=403)
        sessions, services = request.config_dict[SESSIONS], request.config_dict[SERVICES]
        now = utcnow()
        planned = await plan_reminders(sessions, services.vault, self._settings, now)
        morning = next_reminder_time(now, self._settings.reminder_hour)
        sent = await send_due_reminders(sessions, services.vault, services.catalogue, self._settings, morning)
        request.config_dict[WORKER].wake()
        try:
            payload = await request.json()
            platform, user = str(payload["platform"]), str(payload["user"])
        except (ValueError, KeyError, TypeError):
            platform = user = ""
        if platform in self._platforms() and user:
            note = services.catalogue("sandbox_reminders_sent", count=sent)
            self._absorb(services.catalogue)
            self.transcripts.add(platform, user, "note", {"text": note})
        return web.json_response({"planned": planned, "sent": sent})

    async def reset(self, request: web.Request) -> web.Response:
        """「重置演示」: the demo world back to its start (database, fakes, transcripts); same-origin only."""
        if not self._settings.dev_tools:
            raise web.HTTPNotFound()
        problem = self._cross_site(request)
        if problem is not None:
            return web.json_response({"error": problem}, status=403)
        services = request.config_dict[SERVICES]
        await reset_demo(request.config_dict[DB], services.vault)
        self._clear_fakes()
        dev_face = request.config_dict.get(DEV_FACE)
        if dev_face is not None:
            dev_face.attempts.clear()
        self.transcripts.clear()
        return web.json_response({"epoch": self.transcripts.epoch, "message": services.catalogue("sandbox_reset_done")})

    def _cross_site(self, request: web.Request) -> str | None:
        """Why this request may come from another site (None when it is the page's own)."""
        # Three locks, any of which a cross-site page cannot open: the browser's Origin must be ours, a
        # JSON body and a custom header need a CORS preflight we never grant, and the token is only
        # readable by a page of our own origin (from /api/config).
        origin = request.headers.get("Origin", "")
        if not origin or origin != f"{request.scheme}://{request.host}":
            return "cross-origin request"
        if request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
            return "cross-site request"
        if request.content_type != "application/json":
            return "JSON only"
        if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), self._token.encode()):
            return "bad token"
        return None

    def _clear_fakes(self) -> None:
        """Empty what the platform fakes delivered and remember (their access tokens stay valid)."""
        wechat = self._wechat_fake
        wechat.received.clear()
        wechat.media.clear()
        wechat.face_sessions.clear()
        wechat.oauth_codes.clear()
        self._wechat_seen = 0
        alipay = self._alipay_fake
        if alipay is not None:
            alipay.received.clear()
            alipay.pages.clear()
            alipay.images.clear()
            alipay.interactions.clear()
            alipay.unfollowed.clear()
            alipay.enter_used_on.clear()
            alipay.certifications.clear()
            alipay.auth_codes.clear()
        self._alipay_seen = 0
        mini = self._mini_fake
        if mini is not None:
            mini.received.clear()
            mini.media.clear()
            mini.face_sessions.clear()
            mini.login_codes.clear()
            mini.consents.clear()
            mini.contacts.clear()
        self._mini_seen = 0

    async def media(self, request: web.Request) -> web.Response:
        """An image vaxbot uploaded to the WeChat fake (what the user's phone would download)."""
        media_id = request.match_info["media_id"]
        content = self._wechat_fake.media.get(media_id)
        if content is None and self._mini_fake is not None:
            content = self._mini_fake.media.get(media_id)
        if content is None:
            raise web.HTTPNotFound()
        return web.Response(body=content, content_type="image/png", headers={"Cache-Control": "no-store"})


def _shown(catalogue: Catalogue, action: str, value: str) -> str:
    """What the user's own bubble says for one action."""
    if action == "text":
        return value
    if action == "click":
        return catalogue("sandbox_me_menu", label=LABELS.get(value, value))
    return catalogue(f"sandbox_me_{action}")
