"""Typed keys for what the application holds (aiohttp's answer to globals)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.code_page import CodePageRoutes
from bot.config import Settings
from bot.conversation import Services
from bot.engine import Engine
from bot.face.dev import DevFace
from bot.keys import Keyring
from bot.metrics import Metrics
from bot.outbox import OutboxWorker
from bot.platforms.alipay import AlipayGateway
from bot.platforms.alipay_api import AlipayAPI
from bot.platforms.wechat import WeChatGateway
from bot.platforms.wechat_api import WeChatAPI
from bot.scheduler import Scheduler
from bot.verification import VerificationRoutes

SETTINGS = web.AppKey("settings", Settings)
KEYRING = web.AppKey("keyring", Keyring)
METRICS = web.AppKey("metrics", Metrics)
DB = web.AppKey("db", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
HTTP = web.AppKey("http", aiohttp.ClientSession)
SERVICES = web.AppKey("services", Services)
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
