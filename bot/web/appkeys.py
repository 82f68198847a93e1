"""Typed keys for what the application holds (aiohttp's answer to globals)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.chat.conversation import Router, Services
from bot.chat.engine import Engine
from bot.core.config import Settings
from bot.core.keys import Keyring
from bot.core.metrics import Metrics
from bot.core.scheduler import Scheduler
from bot.identity.face.dev import DevFace
from bot.identity.verification import VerificationRoutes
from bot.outbox.queue import OutboxWorker
from bot.platforms.alipay.client import AlipayAPI
from bot.platforms.alipay.inbound import AlipayGateway
from bot.platforms.wechat.client import WeChatAPI
from bot.platforms.wechat.inbound import WeChatGateway
from bot.platforms.wxmini.client import MiniProgramAPI
from bot.platforms.wxmini.inbound import MiniProgramGateway
from bot.showcode.page import CodePageRoutes
from bot.web.console.routes import ConsoleRoutes
from bot.web.mp_api import MiniProgramApi

SETTINGS = web.AppKey("settings", Settings)
KEYRING = web.AppKey("keyring", Keyring)
METRICS = web.AppKey("metrics", Metrics)
DB = web.AppKey("db", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
HTTP = web.AppKey("http", aiohttp.ClientSession)
SERVICES = web.AppKey("services", Services)
ROUTER = web.AppKey("router", Router)
ENGINE = web.AppKey("engine", Engine)
WECHAT = web.AppKey("wechat", WeChatGateway)
ALIPAY = web.AppKey("alipay", AlipayGateway)
ALIPAY_API = web.AppKey("alipay_api", AlipayAPI)
WECHAT_API = web.AppKey("wechat_api", WeChatAPI)
WORKER = web.AppKey("worker", OutboxWorker)
SCHEDULER = web.AppKey("scheduler", Scheduler)
VERIFICATION = web.AppKey("verification", VerificationRoutes)
DEV_FACE = web.AppKey("dev_face", DevFace)
CODE_PAGES = web.AppKey("code_pages", CodePageRoutes)
# The WeChat mini program (present when it is configured).
WXMINI = web.AppKey("wxmini", MiniProgramGateway)
WXMINI_API = web.AppKey("wxmini_api", MiniProgramAPI)
ALIPAY_MINI_API = web.AppKey("alipay_mini_api", AlipayAPI)  # the Alipay mini program's app (login, certify)
MP_API = web.AppKey("mp_api", MiniProgramApi)  # the mini programs' JSON API
CONSOLE = web.AppKey("console", ConsoleRoutes)
