"""Talking to the service as a user of either platform, through each platform's real protocol."""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import ClientResponse

from bot.dev.fakes import alipay_gateway, wechat
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.platforms.alipay.sender import IMAGE_ACTION_NAME
from bot.web.appkeys import ENGINE
from tests.helpers import Client, drain_outbox, post, post_alipay

Step = tuple[str, str]  # (action, argument): follow, unfollow, enter, click KEY, text CONTENT


class Channel(Protocol):
    platform: str
    app_id: str

    async def do(self, user: str, step: Step) -> list[str]: ...

    async def say(self, user: str, text: str) -> str: ...

    def inbox(self, user: str) -> list[str]: ...

    def images(self, user: str) -> list[bytes]: ...


class WeChat:
    platform = "wechat"

    def __init__(self, client: Client, sim: WeChatClientSim, fake: FakeWeChatAPI) -> None:
        self.client, self.sim, self.fake = client, sim, fake
        self.app_id = sim.app_id
        # WeChat's CreateTime has one-second resolution and taps dedupe on it: a script that taps the
        # same menu twice within a second would look like a double tap, so each event gets its own second.
        self._clock = int(time.time()) - 600

    async def say(self, user: str, text: str) -> str:
        """Send a text; everything the user read back, joined."""
        return "\n".join(await self.do(user, ("text", text)))

    def inbox(self, user: str) -> list[str]:
        """Every message pushed to the user so far (passive replies are not kept by WeChat)."""
        return [_pushed(item.body) for item in self.fake.sent_to(user)]

    def images(self, user: str) -> list[bytes]:
        """Every image sent to the user so far, as the uploaded bytes its media_id names."""
        sent = [item.body for item in self.fake.sent_to(user) if item.body.get("msgtype") == "image"]
        return [self.fake.media[body["image"]["media_id"]] for body in sent]

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    async def do(self, user: str, step: Step) -> list[str]:
        action, argument = step
        if action == "text":
            xml = self.sim.text(user, argument)
        elif action == "click":
            xml = self.sim.event(user, "CLICK", create_time=self._tick(), EventKey=argument)
        elif action == "enter":
            return []  # WeChat has no page-enter event
        else:
            xml = self.sim.event(
                user, {"follow": "subscribe", "unfollow": "unsubscribe"}[action], create_time=self._tick()
            )
        before = len(self.fake.sent_to(user))
        status, body = await post(self.client, self.sim.sign(xml))
        assert status == 200
        reply = self.sim.open_reply(body)
        await self.client.app[ENGINE].drain(grace=5)  # the passive claim releases the other replies
        await drain_outbox(self.client)
        passive = [_passive(reply)] if reply is not None else []
        return passive + [_pushed(item.body) for item in self.fake.sent_to(user)[before:]]


class Alipay:
    platform = "alipay"

    def __init__(self, client: Client, sim: AlipayClientSim, fake: FakeAlipayGateway) -> None:
        self.client, self.sim, self.fake = client, sim, fake
        self.app_id = sim.app_id

    async def say(self, user: str, text: str) -> str:
        """Send a text; everything the user read back, joined."""
        return "\n".join(await self.do(user, ("text", text)))

    def inbox(self, user: str) -> list[str]:
        """Every message sent to the user so far."""
        return [_card(item.biz) for item in self.fake.sent_to(user)]

    def images(self, user: str) -> list[bytes]:
        """Every image sent to the user so far (an image-text card whose picture was uploaded)."""
        articles = [item.biz["articles"][0] for item in self.fake.sent_to(user) if item.biz.get("articles")]
        names = [str(a["image_url"]).rsplit("/", 1)[1] for a in articles if a.get("action_name") == IMAGE_ACTION_NAME]
        return [self.fake.images[name.rsplit(".", 1)[0]] for name in names]

    async def do(self, user: str, step: Step) -> list[str]:
        action, argument = step
        if action == "text":
            xml = self.sim.text(user, argument)
        elif action == "click":
            xml = self.sim.event(user, "click", argument)
        elif action == "enter":
            xml = self.sim.event(user, "enter", self.sim.scene(argument) if argument else "")
        else:
            xml = self.sim.event(user, action)
        before = len(self.fake.sent_to(user))
        status, body, _ = await post_alipay(self.client, self.sim.form(xml))
        assert status == 200
        assert self.sim.open_reply(body).inner["XML"]["MsgType"] == "ack"
        await drain_outbox(self.client)
        return [_card(item.biz) for item in self.fake.sent_to(user)[before:]]


def _passive(reply: dict[str, Any]) -> str:
    """A WeChat passive reply as the user reads it (link cards as ``[链接] title url``)."""
    if reply.get("MsgType") == "news":
        item = reply["Articles"]["item"]
        return f"[链接] {item['Title']} {item['Description']} {item['Url']}"
    return str(reply.get("Content", f"[{reply.get('MsgType')}]"))


def _pushed(body: dict[str, Any]) -> str:
    """A WeChat customer-service message as the user reads it."""
    if body.get("msgtype") == "news":
        article = body["news"]["articles"][0]
        return f"[链接] {article['title']} {article['description']} {article['url']}"
    if body.get("msgtype") == "text":
        return str(body["text"]["content"])
    return f"[{body.get('msgtype')}]"


def _card(biz: dict[str, Any]) -> str:
    """An Alipay message as the user reads it."""
    if biz.get("msg_type") == "text":
        return str(biz["text"]["content"])
    if biz.get("msg_type") == "image-text":
        article = biz["articles"][0]
        return f"[链接] {article.get('title', '')} {article.get('desc', '')} {article.get('url', '')}"
    return f"[{biz.get('msg_type') or 'template'}]"


def link_in(answers: list[str]) -> str:
    """The URL of the (first) link card among the answers."""
    for answer in answers:
        if answer.startswith("[链接] "):
            return answer.rsplit(" ", 1)[1]
    raise AssertionError(f"no link card in {answers}")


# The simulated platform apps' browsers know who is logged in from these cookies.
SIM_USER_COOKIES = {"wechat": wechat.SIM_USER_COOKIE, "alipay": alipay_gateway.SIM_USER_COOKIE}


def local_path(url: str) -> str:
    """The path and query of ``url`` (to open it on the test client's server)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def authorise(client: Client, link: str, platform: str, as_user: str) -> ClientResponse:
    """A phone logged in as ``as_user`` opens a verification link; our answer when the platform sends it back."""
    started = await client.get(local_path(link), allow_redirects=False)
    assert started.status == 302, await started.text()
    location = started.headers["Location"]
    cookies = {SIM_USER_COOKIES[platform]: as_user}
    async with client.session.get(location, allow_redirects=False, cookies=cookies) as page:
        assert page.status == 302, await page.text()
        back = page.headers["Location"]
    return await client.get(local_path(back), allow_redirects=False)
