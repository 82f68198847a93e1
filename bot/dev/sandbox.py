"""The development sandbox: chat with vaxbot in a browser as a WeChat or an Alipay user.

No shortcut around the webhooks: every message typed on the page is signed (and, on WeChat, encrypted)
by the platform simulators and posted over HTTP to ``/wechat`` or ``/alipay``, exactly as the platforms
do; what comes back is the passive reply (WeChat) and whatever vaxbot sent through the platforms' APIs,
read from the same fakes its outbox delivers to. Development only: ``bot.cli`` never mounts it in
production.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from bot.chat.menu import MENU
from bot.core.config import Settings
from bot.dev.demo import GRANDMA, PARENT, WX_PARENT, DemoPerson
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.alipay.sender import IMAGE_ACTION_NAME
from bot.reminders.doses import next_reminder_time, plan_reminders, send_due_reminders
from bot.web.appkeys import SERVICES, SESSIONS, WORKER
from models import utcnow

MOUNT = "/sandbox"


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


def _wechat_view(body: dict[str, Any]) -> dict[str, str]:
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
        values = " / ".join(str(value.get("value", "")) for value in body.get("data", {}).values())
        return {"kind": "template", "text": values}
    return {"kind": "text", "text": f"[{kind}]"}


def _alipay_view(method: str, biz: dict[str, Any]) -> dict[str, str]:
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
        context = biz.get("template", {}).get("context", {})
        values = [str(value.get("value", "")) for value in context.values() if isinstance(value, dict)]
        return {"kind": "template", "text": " / ".join(values)}
    return {"kind": "template", "text": str(biz.get("data", ""))}


class Sandbox:
    """The page and its small API, in front of the platform simulators and the fakes."""

    def __init__(self, settings: Settings, wechat_fake: FakeWeChatAPI, alipay_fake: FakeAlipayGateway | None) -> None:
        self._settings = settings
        self._wechat_fake = wechat_fake
        self._alipay_fake = alipay_fake
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

    def app(self) -> web.Application:
        """The sub-application to mount at :data:`MOUNT`."""
        app = web.Application()
        app.router.add_get("", self.page)
        app.router.add_get("/", self.page)
        app.router.add_get("/api/config", self.config)
        app.router.add_post("/api/send", self.send)
        app.router.add_get("/api/inbox", self.inbox)
        app.router.add_get("/api/media/{media_id}", self.media)
        app.router.add_post("/api/reminders", self.reminders)
        return app

    async def page(self, _request: web.Request) -> web.Response:
        text = resources.files("bot.dev").joinpath("sandbox.html").read_text(encoding="utf-8")
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def config(self, _request: web.Request) -> web.Response:
        menu = [
            {"name": group, "items": [{"label": label, "key": key.value} for label, key in items]}
            for group, items in MENU
        ]
        platforms = ["wechat"] + (["alipay"] if self._alipay is not None else [])
        return web.json_response({"users": demo_users(), "menu": menu, "platforms": platforms})

    def _base(self) -> str:
        # Our own address from the settings, never from the request's Host header.
        return f"http://{self._settings.host}:{self._settings.port}"

    async def send(self, request: web.Request) -> web.Response:
        """One thing the user did: posted to our own webhook, signed like the platform."""
        try:
            payload = await request.json()
            platform, user = str(payload["platform"]), str(payload["user"])
            action, value = str(payload["action"]), str(payload.get("value", ""))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "bad request"}, status=400)
        if action not in ("text", "click", "follow", "unfollow", "enter") or (action == "text" and not value.strip()):
            return web.json_response({"error": "bad action"}, status=400)
        async with aiohttp.ClientSession() as http:
            if platform == "wechat":
                return await self._send_wechat(http, self._base(), user, action, value)
            if platform == "alipay" and self._alipay is not None:
                return await self._send_alipay(http, self._base(), user, action, value)
        return web.json_response({"error": "unknown platform"}, status=400)

    async def _send_wechat(
        self, http: aiohttp.ClientSession, base: str, user: str, action: str, value: str
    ) -> web.Response:
        sim = self._wechat
        if action == "text":
            xml = sim.text(user, value)
        elif action == "click":
            xml = sim.event(user, "CLICK", create_time=self._tick(), EventKey=value)
        elif action == "enter":
            return web.json_response({"replies": []})  # WeChat has no page-enter event
        else:
            xml = sim.event(user, "subscribe" if action == "follow" else "unsubscribe", create_time=self._tick())
        signed = sim.sign(xml)
        async with http.post(f"{base}/wechat", params=signed.query, data=signed.body) as response:
            body = await response.text()
            if response.status != 200:
                return web.json_response({"error": f"HTTP {response.status}"}, status=502)
        reply = sim.open_reply(body)
        return web.json_response({"replies": [_wechat_view(reply)] if reply is not None else []})

    async def _send_alipay(
        self, http: aiohttp.ClientSession, base: str, user: str, action: str, value: str
    ) -> web.Response:
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
                return web.json_response({"error": f"HTTP {response.status}"}, status=502)
        sim.open_reply(body)  # the signed ack must verify, as Alipay checks it
        return web.json_response({"replies": []})

    def _tick(self) -> int:
        # Taps dedupe on WeChat's one-second CreateTime: give each tap its own second.
        self._clock = max(self._clock + 1, int(time.time()))
        return self._clock

    async def reminders(self, request: web.Request) -> web.Response:
        """Fast-forward to the reminder hour: plan reminders now and send those due by then (a demo aid)."""
        sessions, services = request.config_dict[SESSIONS], request.config_dict[SERVICES]
        now = utcnow()
        planned = await plan_reminders(sessions, services.vault, self._settings, now)
        morning = next_reminder_time(now, self._settings.reminder_hour)
        sent = await send_due_reminders(sessions, services.vault, services.catalogue, self._settings, morning)
        request.config_dict[WORKER].wake()
        return web.json_response({"planned": planned, "sent": sent})

    async def media(self, request: web.Request) -> web.Response:
        """An image vaxbot uploaded to the WeChat fake (what the user's phone would download)."""
        content = self._wechat_fake.media.get(request.match_info["media_id"])
        if content is None:
            raise web.HTTPNotFound()
        return web.Response(body=content, content_type="image/png", headers={"Cache-Control": "no-store"})

    async def inbox(self, request: web.Request) -> web.Response:
        """What the platform delivered to one user since position ``after`` (pushed messages)."""
        platform, user = request.query.get("platform", ""), request.query.get("user", "")
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            after = 0
        if platform == "alipay" and self._alipay_fake is not None:
            sent = self._alipay_fake.received
            items = [
                _alipay_view(item.method, item.biz)
                for item in sent[after:]
                if item.to_user_id == user and "message" in item.method
            ]
            return web.json_response({"items": items, "next": len(sent)})
        pushed = self._wechat_fake.received
        items = [_wechat_view(item.body) for item in pushed[after:] if item.body.get("touser") == user]
        return web.json_response({"items": items, "next": len(pushed)})
