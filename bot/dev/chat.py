"""``vaxbot chat``: talk to a running vaxbot from a terminal, exactly as WeChat's or Alipay's servers would.

On WeChat every line is sent as a signed (and, in safe mode, encrypted) push to ``/wechat``; the passive
reply is opened and printed, and messages pushed later through the customer-service API are read back
from the development fake of WeChat's API. On Alipay every line is a signed form post to ``/alipay``
whose signed ack is verified; the answers all arrive later through the development fake of Alipay's
gateway, which is told about each interaction as Alipay itself would know it. Development only.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import aiohttp

from bot.chat.menu import MENU
from bot.core.catalogue import build_catalogue
from bot.core.config import Settings
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.wechat import WeChatClientSim
from bot.dev.sandbox import MOUNT as SANDBOX_MOUNT
from bot.dev.sandbox import alipay_view, wechat_view
from bot.platforms.alipay import sign as alipay_sign

HELP = "输入文字直接发送。命令：/follow 关注  /unfollow 取消关注  /click KEY 点菜单  /menu 菜单项  /quit 退出"
ALIPAY_HELP = HELP.replace("/menu 菜单项", "/enter 进入生活号  /menu 菜单项")


def template_lines(card: Mapping[str, Any]) -> str:
    """A template card (see :func:`bot.dev.sandbox.template_card`) as readable lines: title, rows, link."""
    lines = [f"[模板消息] {card['title']}"]
    if card.get("first"):
        lines.append(f"    {card['first']}")
    lines += [f"    {row['label']}：{row['value']}" for row in card.get("rows", [])]
    if card.get("remark"):
        lines.append(f"    {card['remark']}")
    if card.get("url"):
        lines.append(f"    {card['action']}：{card['url']}")
    return "\n".join(lines)


def describe(body: dict[str, Any], base_url: str = "", settings: Settings | None = None) -> str:
    """A rendering of a message WeChat would show (links and images with an address to open, template cards)."""
    kind = body.get("MsgType") or body.get("msgtype")
    if kind == "text":
        content = body.get("Content") or body.get("text", {}).get("content", "")
        return str(content)
    if kind == "image":
        media_id = body.get("image", {}).get("media_id") or body.get("Image", {}).get("MediaId") or ""
        return f"[图片] {base_url}{SANDBOX_MOUNT}/api/media/{media_id}" if media_id else "[图片]"
    if kind == "news":
        articles = body.get("news", {}).get("articles") or []
        if articles:
            title, url = articles[0]["title"], articles[0]["url"]
        else:
            item = body.get("Articles", {}).get("item", {})
            title, url = item.get("Title", ""), item.get("Url", "")
        return f"[链接] {title} {url}"
    if "template_id" in body:
        settings = settings or Settings()
        return template_lines(wechat_view(body, build_catalogue(settings), settings))
    return f"[{kind}]"


def describe_alipay(method: str, biz: dict[str, Any], settings: Settings | None = None) -> str:
    """A rendering of a message Alipay would show (template messages as cards of lines)."""
    if method.endswith("custom.send"):
        if biz.get("msg_type") == "text":
            return str(biz.get("text", {}).get("content", ""))
        article = (biz.get("articles") or [{}])[0]
        return f"[图文] {article.get('title') or article.get('desc') or ''} {article.get('url') or ''}".rstrip()
    if method.endswith("single.send"):
        settings = settings or Settings()
        return template_lines(alipay_view(method, biz, build_catalogue(settings), settings))
    if method.endswith("templatemessage.send"):
        return "[小程序订阅消息] " + str(biz.get("data", ""))
    return f"[{method}]"


class ChatSession:
    """One user's conversation with a running vaxbot, as a WeChat user."""

    platform = "wechat"

    def __init__(self, http: aiohttp.ClientSession, base_url: str, settings: Settings, user: str, mode: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.mode = mode
        self.settings = settings
        self.sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
        self.inbox_position = 0

    async def start(self) -> None:
        """Skip messages sent before this session."""
        self.inbox_position = (await self._inbox())["next"]

    async def _inbox(self) -> dict[str, Any]:
        async with self.http.get(
            f"{self.base_url}/_dev/wechat/inbox", params={"touser": self.user, "after": str(self.inbox_position)}
        ) as response:
            data: dict[str, Any] = await response.json()
            return data

    async def send(self, line: str) -> list[str]:
        """Send one line (text or a /command); the answers, passive and pushed, in order."""
        if line.startswith("/follow"):
            xml = self.sim.event(self.user, "subscribe")
        elif line.startswith("/unfollow"):
            xml = self.sim.event(self.user, "unsubscribe")
        elif line.startswith("/click"):
            xml = self.sim.event(self.user, "CLICK", EventKey=line.partition(" ")[2].strip())
        else:
            xml = self.sim.text(self.user, line)
        request = self.sim.sign(xml, mode=self.mode)
        async with self.http.post(f"{self.base_url}/wechat", params=request.query, data=request.body) as response:
            body = await response.text()
            if response.status != 200:
                return [f"(HTTP {response.status}: {body})"]
        answers = []
        reply = self.sim.open_reply(body)
        if reply is not None:
            answers.append(describe(reply, self.base_url, self.settings))
        # Pushed messages arrive through the outbox: wait for them a little (longer after an acknowledgement).
        waited, limit = 0.0, 0.6 if reply is not None else 7.0
        while waited < limit:
            await asyncio.sleep(0.2)
            waited += 0.2
            inbox = await self._inbox()
            self.inbox_position = inbox["next"]
            pushed = [describe(item["body"], self.base_url, self.settings) for item in inbox["items"]]
            answers.extend(pushed)
            if pushed and reply is None:
                break
        return answers


class AlipayChatSession:
    """One user's conversation with a running vaxbot, as an Alipay life-account user."""

    platform = "alipay"

    def __init__(self, http: aiohttp.ClientSession, base_url: str, settings: Settings, user: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._interaction = ""
        self.settings = settings
        self.sim = AlipayClientSim(
            settings.alipay_appid,
            alipay_sign.read_private_key(settings.keys_dir / "alipay_platform_private.pem"),
            alipay_sign.read_public_key(settings.keys_dir / "alipay_app_public.pem"),
            on_interaction=self._noted,
        )
        self.inbox_position = 0

    async def start(self) -> None:
        """Skip messages sent before this session."""
        self.inbox_position = (await self._inbox())["next"]

    async def _inbox(self) -> dict[str, Any]:
        async with self.http.get(
            f"{self.base_url}/_dev/alipay/inbox", params={"user": self.user, "after": str(self.inbox_position)}
        ) as response:
            data: dict[str, Any] = await response.json()
            return data

    def _noted(self, _user: str, kind: str) -> None:
        self._interaction = kind

    async def send(self, line: str) -> list[str]:
        """Send one line (text or a /command); the answers pushed back, in order."""
        self._interaction = ""
        if line.startswith("/follow"):
            xml = self.sim.event(self.user, "follow")
        elif line.startswith("/unfollow"):
            xml = self.sim.event(self.user, "unfollow")
        elif line.startswith("/enter"):
            scene = line.partition(" ")[2].strip()
            xml = self.sim.event(self.user, "enter", self.sim.scene(scene) if scene else "")
        elif line.startswith("/click"):
            xml = self.sim.event(self.user, "click", line.partition(" ")[2].strip())
        else:
            xml = self.sim.text(self.user, line)
        if self._interaction:
            # Alipay knows what its user just did; the fake gateway learns it the same moment.
            params = {"user": self.user, "kind": self._interaction}
            async with self.http.post(f"{self.base_url}/_dev/alipay/interaction", params=params) as response:
                response.raise_for_status()
        async with self.http.post(
            f"{self.base_url}/alipay",
            data=self.sim.form(xml),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as response:
            body = await response.read()
            if response.status != 200:
                return [f"(HTTP {response.status}: {body.decode('utf-8', 'replace')})"]
        self.sim.open_reply(body)  # the signed ack must verify, or this raises
        answers: list[str] = []
        waited, limit = 0.0, 7.0
        while waited < limit:
            await asyncio.sleep(0.2)
            waited += 0.2
            inbox = await self._inbox()
            self.inbox_position = inbox["next"]
            pushed = [describe_alipay(item["method"], item["biz"], self.settings) for item in inbox["items"]]
            answers.extend(pushed)
            if answers and not pushed:
                break  # the answers came and nothing more followed
        return answers


async def run_chat(
    settings: Settings,
    base_url: str,
    user: str,
    mode: str,
    read_line: Callable[[], str],
    out: TextIO = sys.stdout,
    platform: str = "wechat",
) -> None:
    """The interactive loop."""
    async with aiohttp.ClientSession() as http:
        session: ChatSession | AlipayChatSession
        if platform == "alipay":
            session = AlipayChatSession(http, base_url, settings, user)
        else:
            session = ChatSession(http, base_url, settings, user, mode)
        try:
            await session.start()
        except aiohttp.ClientError:
            print(f"连接不到 {base_url}，请先运行 make run（或 vaxbot serve）。", file=out)
            return
        if platform == "alipay":
            print(f"已连接 {base_url}，你是支付宝用户 {user}。{ALIPAY_HELP}", file=out)
        else:
            print(f"已连接 {base_url}，你是微信用户 {user}（{mode} 模式）。{HELP}", file=out)
        while True:
            try:
                line = (await asyncio.to_thread(read_line)).strip()
            except EOFError:
                break
            if not line:
                continue
            if line == "/quit":
                break
            if line == "/menu":
                for group, items in MENU:
                    print(f"  {group}: " + "  ".join(f"{label}=/click {key.value}" for label, key in items), file=out)
                continue
            for answer in await session.send(line):
                print(f"vaxbot> {answer}", file=out)
