"""Which face provider each platform uses, the age tiers, and building the providers from the settings.

* ``VAXBOT_FACE_PROVIDER_WECHAT``: ``tencent`` (FaceID's H5 page), ``wechat_mini`` (WeChat's own face
  verification in a mini program) or ``dev``; ``VAXBOT_FACE_PROVIDER_ALIPAY``: ``alipay`` or ``dev``.
  Unset means ``dev`` outside production; in production it must be set, and ``dev`` is refused there
  (``Settings.production_problems`` and :func:`build_face_providers`).
* ``VAXBOT_FACE_AGE_TIERS``: who verifies how, by age (粤健通 model), e.g. ``0-16:birth_certificate,
  17-59:face,60-:household``. The ranges start at 0, follow each other without gaps and end open; only
  ``face`` runs in this deployment, the other methods are answered by the journey as done elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping

import aiohttp

from bot.core.config import ConfigError, Settings
from bot.identity.face.alipay_certify import AlipayCertify
from bot.identity.face.base import FaceProvider
from bot.identity.face.dev import DevFace
from bot.identity.face.tencent import TencentFaceID
from bot.identity.face.wechat_mini import WeChatMiniFace
from bot.platforms.alipay.client import AlipayAPI
from bot.platforms.wechat.client import WeChatAPI

FACE = "face"
METHODS = frozenset({FACE, "birth_certificate", "household"})
PROVIDERS = {"wechat": ("tencent", "wechat_mini", "dev"), "alipay": ("alipay", "dev")}
# The face of the mini program's own users: WeChat's face with the mini program's app id, secret, token and
# their openid in it (``wechat_mini`` is the same face run from the Official Account's credentials).
MINI_PROGRAM_FACE = "wxmini"
# The Alipay mini program's users certify with Alipay's identity verification signed as the mini program.
ALIPAY_MINI_PROGRAM_FACE = "alipaymini"
_TIER = re.compile(r"^(\d+)-(\d*):([a-z_]+)$")


@dataclasses.dataclass(frozen=True)
class AgeTier:
    """Ages ``low`` to ``high`` inclusive (``high`` None: and older) verify with ``method``."""

    low: int
    high: int | None
    method: str


@dataclasses.dataclass(frozen=True)
class AgeTiers:
    """The age tiers, contiguous from 0 and open at the top."""

    tiers: tuple[AgeTier, ...]

    @classmethod
    def parse(cls, text: str) -> AgeTiers:
        """Parse ``low-high:method`` items separated by commas; :class:`ConfigError` says what is wrong."""
        tiers: list[AgeTier] = []
        for item in (part.strip().replace(" ", "") for part in text.split(",")):
            match = _TIER.match(item)
            if match is None:
                raise ConfigError(f"VAXBOT_FACE_AGE_TIERS: {item!r} is not low-high:method")
            low, high_text, method = int(match[1]), match[2], match[3]
            high = int(high_text) if high_text else None
            if method not in METHODS:
                raise ConfigError(f"VAXBOT_FACE_AGE_TIERS: unknown method {method!r} ({', '.join(sorted(METHODS))})")
            if high is not None and high < low:
                raise ConfigError(f"VAXBOT_FACE_AGE_TIERS: {item!r} ends before it starts")
            expected = 0 if not tiers else tiers[-1].high
            if expected is None:
                raise ConfigError(f"VAXBOT_FACE_AGE_TIERS: {item!r} follows the open-ended tier")
            if tiers:
                expected += 1
            if low != expected:
                raise ConfigError(f"VAXBOT_FACE_AGE_TIERS: {item!r} should start at {expected} (no gaps or overlaps)")
            tiers.append(AgeTier(low, high, method))
        if tiers[-1].high is not None:
            raise ConfigError("VAXBOT_FACE_AGE_TIERS: the last tier must be open-ended (e.g. 60-:face)")
        return cls(tuple(tiers))

    def method_for_age(self, age: int) -> str:
        """``face``, ``birth_certificate`` or ``household`` for someone ``age`` years old."""
        if age < 0:
            raise ValueError("age must not be negative")
        for tier in self.tiers:
            if tier.low <= age and (tier.high is None or age <= tier.high):
                return tier.method
        raise AssertionError("the tiers cover every age")  # parse() guarantees it


@functools.lru_cache(maxsize=8)
def _parse_tiers(text: str) -> AgeTiers:
    return AgeTiers.parse(text)


def age_tiers(settings: Settings) -> AgeTiers:
    """The configured age tiers (:class:`ConfigError` when the setting is malformed)."""
    return _parse_tiers(settings.face_age_tiers)


def method_for_age(settings: Settings, age: int) -> str:
    """How someone ``age`` years old verifies: ``face``, ``birth_certificate`` or ``household``."""
    return age_tiers(settings).method_for_age(age)


def provider_name_for(settings: Settings, platform: str) -> str:
    """The face provider's name for ``platform`` (``wechat`` / ``alipay``); unset is ``dev`` outside production.

    :class:`ConfigError` in production when unset (:func:`build_face_providers` refuses to start so).
    """
    if platform == "wxmini":
        return MINI_PROGRAM_FACE  # the mini program's own face, with its own credentials and openid
    if platform == "alipaymini":
        return ALIPAY_MINI_PROGRAM_FACE  # Alipay's certify, signed with the Alipay mini program's app id
    variable = f"VAXBOT_FACE_PROVIDER_{platform.upper()}"
    configured = settings.face_provider_wechat if platform == "wechat" else settings.face_provider_alipay
    if configured:
        return configured
    if settings.production:
        raise ConfigError(f"{variable} is not set (one of {', '.join(PROVIDERS[platform][:-1])})")
    return "dev"


def build_face_providers(
    settings: Settings,
    http: aiohttp.ClientSession,
    wechat_api: WeChatAPI,
    alipay_api: AlipayAPI | None,
    dev: DevFace | None = None,
    mini_api: WeChatAPI | None = None,
    alipay_mini_api: AlipayAPI | None = None,
) -> dict[str, FaceProvider]:
    """One provider per platform (``wechat``, ``alipay`` when on, ``wxmini`` / ``alipaymini`` with their APIs).

    Both platforms on ``dev`` share one :class:`DevFace` (its page is mounted once, see :func:`dev_face`);
    pass ``dev`` when its page was mounted before the providers could be built.
    :class:`ConfigError` for an unknown or (in production) unset provider, ``dev`` in production,
    ``tencent`` without credentials, ``alipay`` without an Alipay client, or malformed age tiers.
    """
    age_tiers(settings)
    providers: dict[str, FaceProvider] = {}
    platforms = ("wechat", "alipay") if settings.alipay_enabled else ("wechat",)
    for platform in platforms:
        variable = f"VAXBOT_FACE_PROVIDER_{platform.upper()}"
        name = provider_name_for(settings, platform)
        if name not in PROVIDERS[platform]:
            raise ConfigError(f"{variable} must be one of {', '.join(PROVIDERS[platform])}")
        if name == "dev":
            if settings.production:
                raise ConfigError(f"{variable} is dev (the simulated face page), refused in production")
            dev = dev or DevFace(settings.public_url)
            providers[platform] = dev
        elif name == "tencent":
            missing = [
                f"VAXBOT_{field.upper()}"
                for field in ("tencent_secret_id", "tencent_secret_key", "tencent_faceid_rule_id")
                if not getattr(settings, field)
            ]
            if missing:
                raise ConfigError(f"{variable} is tencent but {', '.join(missing)} not set")
            providers[platform] = TencentFaceID(http, settings)
        elif name == "wechat_mini":
            providers[platform] = WeChatMiniFace(wechat_api, page=settings.wechat_face_page)
        else:
            if alipay_api is None:
                raise ConfigError(f"{variable} is alipay but the Alipay channel has no API client")
            providers[platform] = AlipayCertify(alipay_api)
    if mini_api is not None:
        # Users of the mini program verify there, with its credentials (``mini_api``) and their openid in it.
        providers["wxmini"] = WeChatMiniFace(mini_api, page=settings.wechat_face_page, name=MINI_PROGRAM_FACE)
    if alipay_mini_api is not None:
        # The Alipay mini program's users certify with its app id (``alipay_mini_api`` signs as the mini program).
        providers["alipaymini"] = AlipayCertify(alipay_mini_api, name=ALIPAY_MINI_PROGRAM_FACE)
    return providers


def by_provider_name(providers: Mapping[str, FaceProvider]) -> dict[str, FaceProvider]:
    """The same providers keyed by their ``name`` (what a stored attempt records), e.g. ``{"dev": …}``."""
    return {provider.name: provider for provider in providers.values()}


def dev_face(providers: Mapping[str, FaceProvider]) -> DevFace | None:
    """The simulated provider among ``providers``, whose :meth:`DevFace.app` must be mounted at ``MOUNT``."""
    for provider in providers.values():
        if isinstance(provider, DevFace):
            return provider
    return None


def needs_dev_face(settings: Settings) -> bool:
    """Whether ``create_app`` mounts the simulated face page: in development only, when a platform uses it.

    Outside development (``Settings.dev_tools``) the page is never mounted; a test that uses the simulated
    provider serves its page itself.
    """
    if not settings.dev_tools:
        return False
    platforms = ("wechat", "alipay") if settings.alipay_enabled else ("wechat",)
    return any(provider_name_for(settings, platform) == "dev" for platform in platforms)
