"""The WeChat mini program's side for the tests: its fake API, its pushes, and a user of its chat."""

from __future__ import annotations

from typing import Any

from bot.chat.menu import LABELS
from bot.dev.fakes.wxmini import FakeMiniProgramAPI, MiniProgramClientSim
from bot.web.appkeys import ENGINE
from tests.channels import Step, _pushed
from tests.helpers import Client, drain_outbox, post

MINI_APPID = "wx0000000000de0002"


class MiniProgram:
    """A user of the mini program's customer-service chat: each step is a signed push to ``/wechat/mini``.

    The chat has no menu: a menu tap is the item's label typed, as a user of the chat would. Following and
    unfollowing do not exist; ``follow`` and ``enter`` open the chat (``user_enter_tempsession``).
    """

    platform = "wxmini"

    def __init__(self, client: Client, sim: MiniProgramClientSim, fake: FakeMiniProgramAPI, fmt: str = "xml") -> None:
        self.client, self.sim, self.fake, self.fmt = client, sim, fake, fmt
        self.app_id = sim.app_id

    async def say(self, user: str, text: str) -> str:
        """Send a text; everything the user read back, joined."""
        return "\n".join(await self.do(user, ("text", text)))

    def inbox(self, user: str) -> list[str]:
        """Every customer-service message sent to the user so far."""
        return [_read(item.body) for item in self.fake.sent_to(user)]

    def images(self, user: str) -> list[bytes]:
        """Every image sent to the user so far, as the uploaded bytes."""
        sent = [item.body for item in self.fake.sent_to(user) if item.body.get("msgtype") == "image"]
        return [self.fake.media[body["image"]["media_id"]] for body in sent]

    async def push(self, body: str, mode: str = "safe") -> tuple[int, str]:
        """Sign and post one push; (status, body)."""
        return await post(self.client, self.sim.sign_push(body, mode=mode), path="/wechat/mini")

    async def do(self, user: str, step: Step) -> list[str]:
        """One step of a journey script; what the user read back."""
        action, argument = step
        if action == "unfollow":
            return []
        if action in ("follow", "enter"):
            body = self.sim.enter(user, argument, fmt=self.fmt)
            self.fake.note_contact(user, "enter")
        else:
            text = LABELS[argument] if action == "click" else argument
            body = self.sim.text_push(user, text, fmt=self.fmt)
            self.fake.note_contact(user, "message")
        before = len(self.fake.sent_to(user))
        status, answer = await self.push(body)
        assert (status, answer) == (200, "success")
        await self.client.app[ENGINE].drain(grace=5)
        await drain_outbox(self.client)
        return [_read(item.body) for item in self.fake.sent_to(user)[before:]]


def _read(body: dict[str, Any]) -> str:
    """A mini-program customer-service message as the user reads it (a link card like the Official Account's)."""
    if body.get("msgtype") == "link":
        link = body["link"]
        return f"[链接] {link['title']} {link['description']} {link['url']}"
    return _pushed(body)
