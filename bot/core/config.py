"""Settings read from ``VAXBOT_*`` environment variables, with an optional ``.env`` file."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

PREFIX = "VAXBOT_"

# Development defaults: obviously fake, refused in production.
DEV_WECHAT_APPID = "wx0000000000de0001"
DEV_WECHAT_SECRET = "dev-secret-not-for-production"  # noqa: S105 (a public dev value)
DEV_WECHAT_TOKEN = "vaxbotdevtoken"  # noqa: S105
DEV_WECHAT_AES_KEY = "dmF4Ym90LWRldi1lbmNvZGluZy1hZXMta2V5LTAwMDE"
DEV_ALIPAY_APPID = "2099000000000001"
# The mini programs' development values (WeChat mini program; Alipay mini program).
DEV_WXMINI_APPID = "wx0000000000de0002"
DEV_WXMINI_SECRET = "dev-mini-secret-not-for-production"  # noqa: S105 (a public dev value)
DEV_WXMINI_TOKEN = "vaxbotdevminitoken"  # noqa: S105
DEV_WXMINI_AES_KEY = "dmF4Ym90LWRldi1taW5pLXByb2dyYW0tYWVzLWtleTE"
DEV_ALIPAY_MINI_APPID = "2099000000000002"
DEV_SUBSCRIBE_TEMPLATE = "dev-dose-reminder-subscribe"
# Development key files in the keys directory (written by ``vaxbot keys generate-dev``): our app's pair,
# and the pair the built-in fake Alipay signs with, standing in for Alipay's own.
DEV_ALIPAY_APP_KEY = "alipay_app"
DEV_ALIPAY_PLATFORM_KEY = "alipay_platform"
# Dose reminders are template messages; the development fakes accept this id, real platforms do not.
DEV_REMINDER_TEMPLATE = "dev-dose-reminder"
DEV_NOTICE_TEMPLATE = "dev-clinic-notice"

# --- fail closed: where development's tools live, and where outbound calls go ---------------------
# The environments; an unset (or empty) VAXBOT_ENV is none of them and gets production's rules.
ENVIRONMENTS = ("development", "test", "production")
# Where development mounts the platforms' fakes beside the service (and points the API bases at them).
DEV_WECHAT_PREFIX = "/_dev/wechat"
DEV_ALIPAY_PREFIX = "/_dev/alipay"
DEV_WXMINI_PREFIX = "/_dev/wxmini"
SANDBOX_MOUNT = "/sandbox"  # the sandbox's page and API (development only)
# The real platforms: the API bases used when none is set, outside development.
WECHAT_API_BASE = "https://api.weixin.qq.com"
ALIPAY_GATEWAY = "https://openapi.alipay.com/gateway.do"
# The platforms' web authorisation pages (the user's browser goes there, so development uses the public URL).
WECHAT_OAUTH_BASE = "https://open.weixin.qq.com"
ALIPAY_OAUTH_BASE = "https://openauth.alipay.com"
# Face providers that call a real service (everything but the simulated ``dev`` page).
REAL_FACE_PROVIDERS = frozenset({"tencent", "wechat_mini", "alipay"})


# Marks a field whose value never appears in ``repr``/``str`` (logs and tracebacks print settings).
SECRET: Final[dict[str, bool]] = {"secret": True}
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (names of "every interface", not a bind)


def on_this_machine(url: str) -> bool:
    """True when ``url`` names a loopback host (``localhost``, 127.0.0.0/8, ``::1``); no name is resolved."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_url(host: str, port: int) -> str:
    """The http address of a server listening on ``host:port``, as a browser on this machine reaches it."""
    if host in WILDCARD_HOSTS:
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything vaxbot reads from its environment; build with :func:`load_settings`."""

    # development | test | production; empty (unset) gets production's rules: nothing is open by default.
    env: str = ""
    # Hidden in repr: a PostgreSQL URL carries its password.
    database_url: str = dataclasses.field(default="sqlite+aiosqlite:///var/vaxbot.db", metadata=SECRET)
    # Where users' browsers reach us (links in messages). Empty: follows host and port (see local_url).
    public_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    keys_dir: Path = Path("keys")
    log_level: str = "INFO"
    log_format: str = "json"

    wechat_appid: str = DEV_WECHAT_APPID
    wechat_secret: str = dataclasses.field(default=DEV_WECHAT_SECRET, metadata=SECRET)
    wechat_token: str = dataclasses.field(default=DEV_WECHAT_TOKEN, metadata=SECRET)
    wechat_aes_key: str = dataclasses.field(default=DEV_WECHAT_AES_KEY, metadata=SECRET)
    # Empty: the built-in fake on this server in development, WeChat's real API otherwise (see __post_init__).
    wechat_api_base: str = ""
    # Web authorisation (网页授权): where a verification link sends the browser to learn which chat account
    # holds it. WeChat's authorize page lives here; the code is exchanged at wechat_api_base's /sns/oauth2.
    # Empty: the built-in fake on the public address in development, WeChat's real host otherwise.
    wechat_oauth_base: str = ""

    # Alipay life account / mini program; an empty app id turns the channel off. Key settings are
    # file paths; empty means the development files in the keys directory.
    alipay_appid: str = DEV_ALIPAY_APPID
    alipay_private_key: str = ""
    alipay_public_key: str = ""
    alipay_gateway: str = ""  # empty: as wechat_api_base, the built-in fake in development, Alipay's otherwise
    # Alipay's web authorisation page (publicAppAuthorize.htm); the auth_code goes to the gateway. Empty: as
    # wechat_oauth_base.
    alipay_oauth_base: str = ""
    # Alipay's posts carry no signed timestamp: a message older than this is a replay (processed keys
    # are kept for days, so within it a replay is recognised as a duplicate).
    alipay_max_message_age_seconds: int = 24 * 3600

    # The WeChat mini program (小程序): its own app id, secret, message-push token and EncodingAESKey. Unset,
    # the app id is the development one in development and test, and empty (the channel off) in production,
    # so a deployment without a mini program needs no setting for it. Its API is WeChat's.
    wxmini_appid: str = ""
    wxmini_secret: str = dataclasses.field(default=DEV_WXMINI_SECRET, metadata=SECRET)
    wxmini_token: str = dataclasses.field(default=DEV_WXMINI_TOKEN, metadata=SECRET)
    wxmini_aes_key: str = dataclasses.field(default=DEV_WXMINI_AES_KEY, metadata=SECRET)
    wxmini_api_base: str = ""  # empty: the built-in fake in development, WeChat's real API otherwise
    # Subscription messages (订阅消息): the dose-reminder template and the page its card opens.
    wxmini_reminder_template: str = DEV_SUBSCRIBE_TEMPLATE
    wxmini_reminder_page: str = "pages/records/index"
    # A general notice template (fields thing1 what, time2 when): a chat notice (a queue number, a grant…) that
    # finds a mini-program user outside the chat's window goes out this way when they consented; empty: never.
    wxmini_notice_template: str = ""
    wxmini_notice_page: str = "pages/index/index"
    # The clinic desk's news (a queue number, a step, the dose recorded) as a subscription message with typed
    # fields, for a mini-program user outside the chat's window who consented to this template; each field is
    # role=field (roles: name, step, detail, number, time). Empty: a text, as for any other notice.
    wxmini_desk_template: str = ""
    wxmini_desk_fields: tuple[str, ...] = (
        "name=thing1",
        "step=phrase2",
        "detail=thing3",
        "number=character_string4",
        "time=time5",
    )
    wxmini_desk_page: str = "pages/records/index"
    # The Alipay mini program's app id (login via alipay.system.oauth.token with the Alipay keys); unset: the
    # development one in development and test, off in production.
    alipay_mini_appid: str = ""
    # The pages' JSON API (/mp/api/v1): our own session token's lifetime, and a token bucket per session.
    mp_session_ttl_seconds: int = 2 * 3600
    mp_api_burst: int = 30
    mp_api_per_minute: float = 60.0

    # Platform deadlines: WeChat drops the connection after 5 s; answer well before.
    reply_deadline_seconds: float = 4.0
    max_body_bytes: int = 64 * 1024
    # A webhook body must arrive within this once the headers have: a client that stalls mid-body gets
    # 408 and its connection closed instead of holding it open.
    body_read_timeout_seconds: float = 10.0
    timestamp_tolerance_seconds: int = 300
    api_timeout_seconds: float = 10.0

    run_outbox_worker: bool = True
    outbox_poll_seconds: float = 0.5
    outbox_max_attempts: int = 8
    outbox_batch_size: int = 20
    # A late update waits in the inbox under its process's lease, renewed while it works; a dead
    # process's updates are taken over by a live one once their lease lapses.
    inbox_lease_seconds: float = 10.0

    state_ttl_seconds: int = 30 * 60
    processed_key_ttl_days: int = 3
    delivered_outbox_ttl_days: int = 30
    run_scheduler: bool = True

    # Face verification (实名认证): one provider per platform. Empty means "dev" (the simulated page on our own
    # server) outside production; production must name a real one ("dev" is refused there).
    face_provider_wechat: str = ""  # tencent | wechat_mini | dev
    face_provider_alipay: str = ""  # alipay | dev
    # Age range → method (粤健通 model); only "face" runs here, birth_certificate and household are elsewhere.
    face_age_tiers: str = "0-16:face,17-59:face,60-:face"
    face_link_ttl_seconds: int = 30 * 60
    tencent_secret_id: str = dataclasses.field(default="", metadata=SECRET)
    tencent_secret_key: str = dataclasses.field(default="", metadata=SECRET)
    tencent_faceid_rule_id: str = ""
    tencent_faceid_endpoint: str = "https://faceid.tencentcloudapi.com"
    tencent_faceid_version: str = "2018-03-01"
    tencent_region: str = "ap-guangzhou"
    wechat_face_page: str = "pages/face/verify"  # the mini-program page that runs wx.requestFacialVerify

    # Show code (亮码接种): the QR image sent in the chat, the link to the code page, and each code that
    # page shows (it fetches a new one a third of the way through the old one's life).
    code_ttl_seconds: int = 30 * 60
    code_page_ttl_seconds: int = 30 * 60
    code_page_code_seconds: int = 3 * 60
    # The code page's requests are limited in process, by token buckets: a burst, then so many a minute.
    # Per page (its script asks once a minute), per client address, and per address for links that lead
    # nowhere (guessing): past that budget an address gets 429 for any page it has not opened before,
    # without a database lookup. Behind a reverse proxy, name the header it puts the client's address in.
    code_page_page_burst: int = 6
    code_page_page_per_minute: float = 12.0
    code_page_address_burst: int = 60
    code_page_address_per_minute: float = 120.0
    code_page_miss_burst: int = 10
    code_page_miss_per_minute: float = 6.0
    client_address_header: str = ""

    # Dose reminders (接种提醒): template messages (first, keyword1 child, keyword2 doses, keyword3 when,
    # remark), sent at this hour China time for doses late, due, or due within the days ahead.
    wechat_reminder_template: str = DEV_REMINDER_TEMPLATE
    alipay_reminder_template: str = DEV_REMINDER_TEMPLATE
    reminder_hour: int = 9
    reminder_days_ahead: int = 3
    # Booking reminders (预约提醒, the day before): their own templates (first, keyword1 who, keyword2 vaccine,
    # keyword3 when, remark: where and what to bring); empty: the dose-reminder template of that platform.
    wechat_booking_template: str = ""
    alipay_booking_template: str = ""
    wxmini_booking_template: str = ""
    # Clinic desk progress (取号 … 留观结束) outside the customer-service windows: a template message whose
    # values (the person, the step, what it means, when) go under these field names, in that order
    # (WeChat; Alipay's templates take keyword1…). Empty: texts only, which miss anyone who has not written
    # within the window (48 hours on WeChat).
    wechat_desk_template: str = ""
    alipay_desk_template: str = ""
    desk_template_fields: tuple[str, ...] = ("thing1", "thing2", "thing3", "time4")
    # Clinic notices (a closure, a rescheduling, stock, free text): template messages (first, keyword1 who,
    # keyword2 what happened, keyword3 when, remark the clinic's words); the WeChat mini program's go as its
    # general subscription notice (VAXBOT_WXMINI_NOTICE_TEMPLATE) to those who consented.
    wechat_notice_template: str = DEV_NOTICE_TEMPLATE
    alipay_notice_template: str = DEV_NOTICE_TEMPLATE

    # Lotteries (摇号) for scarce vaccines: hours a winner has to confirm a place before it passes down the
    # waiting list, and days a no-show for a lottery vaccine keeps the person out of its lotteries (0: none).
    lottery_confirm_hours: int = 24
    no_show_penalty_days: int = 180

    customer_service_phone: str = "400-101-6588"
    pilot_regions: tuple[str, ...] = ("3206", "3202")
    child_born_on_or_after: date = date(2017, 1, 1)
    adult_dose_on_or_after: date = date(2020, 12, 1)
    adult_min_age: int = 18
    max_grantees: int = 10
    seed_demo_data: bool = True
    # GET /metrics answers only requests carrying "Authorization: Bearer <this>"; empty: /metrics is not served.
    metrics_token: str = dataclasses.field(default="", metadata=SECRET)

    def __repr__(self) -> str:
        """The settings with every secret field (and the database URL, which may hold a password) hidden."""
        shown = (
            f"{field.name}={'<hidden>' if field.metadata.get('secret') else repr(getattr(self, field.name))}"
            for field in dataclasses.fields(self)
        )
        return f"Settings({', '.join(shown)})"

    def __post_init__(self) -> None:
        # A frozen dataclass: filling in derived defaults is the one write it allows itself.
        if not self.public_url:
            object.__setattr__(self, "public_url", local_url(self.host, self.port))
        # Why development defaults to the fakes: its tools act as any user, so nothing it sends may reach
        # a real platform unless someone points it there (and development then refuses, see dev_problems).
        served = local_url(self.host, self.port)
        development = self.env == "development"
        if not self.wechat_api_base:
            object.__setattr__(self, "wechat_api_base", served + DEV_WECHAT_PREFIX if development else WECHAT_API_BASE)
        if self.env in ("development", "test"):
            # Why only there: production turns a mini program on by naming it, never by default.
            if not self.wxmini_appid:
                object.__setattr__(self, "wxmini_appid", DEV_WXMINI_APPID)
            if not self.alipay_mini_appid:
                object.__setattr__(self, "alipay_mini_appid", DEV_ALIPAY_MINI_APPID)
        if not self.wxmini_api_base:
            mini = served + DEV_WXMINI_PREFIX if development else WECHAT_API_BASE
            object.__setattr__(self, "wxmini_api_base", mini)
        if not self.alipay_gateway:
            gateway = f"{served}{DEV_ALIPAY_PREFIX}/gateway.do" if development else ALIPAY_GATEWAY
            object.__setattr__(self, "alipay_gateway", gateway)
        public = self.public_url.rstrip("/")
        if not self.wechat_oauth_base:
            oauth = public + DEV_WECHAT_PREFIX if development else WECHAT_OAUTH_BASE
            object.__setattr__(self, "wechat_oauth_base", oauth)
        if not self.alipay_oauth_base:
            oauth = public + DEV_ALIPAY_PREFIX if development else ALIPAY_OAUTH_BASE
            object.__setattr__(self, "alipay_oauth_base", oauth)

    @property
    def production(self) -> bool:
        """True when running for real users: ``VAXBOT_ENV=production``, or the variable unset (fail closed)."""
        return self.env not in ("development", "test")

    @property
    def dev_tools(self) -> bool:
        """The one rule for development's tools (sandbox, ``/_dev/*`` fakes, the simulated face page, dev keys).

        True only with ``VAXBOT_ENV=development`` set explicitly and every outbound call staying on this
        machine with no real face provider (:meth:`dev_problems`); ``test``, ``production`` and unset never.
        """
        return self.env == "development" and not self.dev_problems()

    def dev_problems(self) -> list[str]:
        """Why development's tools must not run with these settings (empty when fine, or not development).

        The sandbox signs requests as any user and the simulated face page verifies anyone with one click,
        so development must never be wired to a real platform or a real face provider.
        """
        if self.env != "development":
            return []
        problems: list[str] = []
        if not self._on_this_machine(self.wechat_api_base):
            problems.append(f"VAXBOT_WECHAT_API_BASE points at {_host(self.wechat_api_base)}, not this machine")
        if self.wxmini_enabled and not self._on_this_machine(self.wxmini_api_base):
            problems.append(f"VAXBOT_WXMINI_API_BASE points at {_host(self.wxmini_api_base)}, not this machine")
        if self.alipay_enabled and not self._on_this_machine(self.alipay_gateway):
            problems.append(f"VAXBOT_ALIPAY_GATEWAY points at {_host(self.alipay_gateway)}, not this machine")
        for platform, name in (("wechat", self.face_provider_wechat), ("alipay", self.face_provider_alipay)):
            if name in REAL_FACE_PROVIDERS:
                problems.append(f"VAXBOT_FACE_PROVIDER_{platform.upper()} is {name}, a real face provider")
        return problems

    def _on_this_machine(self, url: str) -> bool:
        # Loopback, or the built-in fakes on this server's own address (served on a LAN address, say).
        served = local_url(self.host, self.port)
        prefixes = (served + DEV_WECHAT_PREFIX, served + DEV_ALIPAY_PREFIX, served + DEV_WXMINI_PREFIX)
        return on_this_machine(url) or url.startswith(prefixes)

    def refuse_unsafe_development(self) -> None:
        """Raise :class:`ConfigError` when development is wired to a real platform or face provider."""
        problems = self.dev_problems()
        if problems:
            raise ConfigError(
                "refusing to start in development: "
                + "; ".join(problems)
                + " (development serves the sandbox and the simulated face page, which act as any user:"
                " leave the API bases unset for the built-in fakes, or use VAXBOT_ENV=production)"
            )

    @property
    def env_unset_hint(self) -> str:
        """A note for refusals when VAXBOT_ENV is unset (production's rules apply), else empty."""
        if self.env in ENVIRONMENTS:
            return ""
        return (
            " (VAXBOT_ENV is not set, so production's rules apply: set VAXBOT_ENV=production,"
            " or VAXBOT_ENV=development to develop on this machine — make run does)"
        )

    @property
    def wechat_safe_mode_available(self) -> bool:
        """True when an EncodingAESKey is configured (compatible and safe modes)."""
        return bool(self.wechat_aes_key)

    @property
    def alipay_enabled(self) -> bool:
        """True when the Alipay channel is configured (an app id is set)."""
        return bool(self.alipay_appid)

    @property
    def wxmini_enabled(self) -> bool:
        """True when the WeChat mini program is configured (an app id is set)."""
        return bool(self.wxmini_appid)

    @property
    def alipay_mini_enabled(self) -> bool:
        """True when the Alipay mini program's login is on (its app id set, and the Alipay keys configured)."""
        return bool(self.alipay_mini_appid) and self.alipay_enabled

    @property
    def alipay_private_key_path(self) -> Path:
        """Our app's private key (PKCS#1 or PKCS#8 PEM)."""
        if self.alipay_private_key:
            return Path(self.alipay_private_key)
        return self._dev_key(DEV_ALIPAY_APP_KEY, "private")

    @property
    def alipay_public_key_path(self) -> Path:
        """Alipay's public key, which every inbound post and every API response is checked against."""
        if self.alipay_public_key:
            return Path(self.alipay_public_key)
        return self._dev_key(DEV_ALIPAY_PLATFORM_KEY, "public")

    def _dev_key(self, stem: str, half: str) -> Path:
        return self.keys_dir / f"{stem}_{half}.pem"

    def reminder_template_id(self, platform: str) -> str:
        """The dose-reminder template of one platform (the mini program's is a subscription template)."""
        if platform == "wxmini":
            return self.wxmini_reminder_template
        return self.alipay_reminder_template if platform == "alipay" else self.wechat_reminder_template

    def booking_template_id(self, platform: str) -> str:
        """The booking-reminder template of one platform, else its dose-reminder template."""
        own = {
            "wechat": self.wechat_booking_template,
            "alipay": self.alipay_booking_template,
            "wxmini": self.wxmini_booking_template,
        }.get(platform, "")
        return own or self.reminder_template_id(platform)

    def production_problems(self, dev_keys: bool) -> list[str]:
        """Reasons this configuration must not serve real users (empty when fine)."""
        problems: list[str] = []
        if dev_keys:
            problems.append("the keys in the keys directory are development keys")
        if self.wechat_appid == DEV_WECHAT_APPID:
            problems.append("VAXBOT_WECHAT_APPID is the development app id")
        if self.wechat_secret == DEV_WECHAT_SECRET:
            problems.append("VAXBOT_WECHAT_SECRET is the development secret")
        if self.wechat_token == DEV_WECHAT_TOKEN:
            problems.append("VAXBOT_WECHAT_TOKEN is the development token")
        if self.wechat_aes_key == DEV_WECHAT_AES_KEY:
            problems.append("VAXBOT_WECHAT_AES_KEY is the development key")
        if self.alipay_enabled:
            if self.alipay_appid == DEV_ALIPAY_APPID:
                problems.append("VAXBOT_ALIPAY_APPID is the development app id (set it empty to turn Alipay off)")
            if not self.alipay_private_key:
                problems.append("VAXBOT_ALIPAY_PRIVATE_KEY is not set (the development key would be used)")
            if not self.alipay_public_key:
                problems.append("VAXBOT_ALIPAY_PUBLIC_KEY is not set (the development key would be used)")
        if self.wxmini_enabled:
            for name, dev_value in (
                ("wxmini_appid", DEV_WXMINI_APPID),
                ("wxmini_secret", DEV_WXMINI_SECRET),
                ("wxmini_token", DEV_WXMINI_TOKEN),
                ("wxmini_aes_key", DEV_WXMINI_AES_KEY),
                ("wxmini_reminder_template", DEV_SUBSCRIBE_TEMPLATE),
            ):
                if getattr(self, name) == dev_value:
                    problems.append(
                        f"VAXBOT_{name.upper()} is the development value"
                        " (set VAXBOT_WXMINI_APPID empty to turn the mini program off)"
                    )
            if not self.wxmini_api_base.startswith("https://"):
                problems.append("VAXBOT_WXMINI_API_BASE must be https in production")
        if self.alipay_mini_enabled and self.alipay_mini_appid == DEV_ALIPAY_MINI_APPID:
            problems.append("VAXBOT_ALIPAY_MINI_APPID is the development app id (set it empty to turn it off)")
        if self.wechat_reminder_template in (DEV_REMINDER_TEMPLATE, ""):
            problems.append("VAXBOT_WECHAT_REMINDER_TEMPLATE is not set (the development template id)")
        if self.alipay_enabled and self.alipay_reminder_template in (DEV_REMINDER_TEMPLATE, ""):
            problems.append("VAXBOT_ALIPAY_REMINDER_TEMPLATE is not set (the development template id)")
        if self.wechat_notice_template in (DEV_NOTICE_TEMPLATE, ""):
            problems.append("VAXBOT_WECHAT_NOTICE_TEMPLATE is not set (the development template id)")
        if self.alipay_enabled and self.alipay_notice_template in (DEV_NOTICE_TEMPLATE, ""):
            problems.append("VAXBOT_ALIPAY_NOTICE_TEMPLATE is not set (the development template id)")
        if not self.public_url.startswith("https://"):
            problems.append("VAXBOT_PUBLIC_URL must be https in production (the address users' browsers reach)")
        if not self.face_provider_wechat:
            problems.append("VAXBOT_FACE_PROVIDER_WECHAT is not set (tencent or wechat_mini)")
        if self.alipay_enabled and not self.face_provider_alipay:
            problems.append("VAXBOT_FACE_PROVIDER_ALIPAY is not set (alipay)")
        if self.face_provider_wechat == "dev":
            problems.append("VAXBOT_FACE_PROVIDER_WECHAT is dev (the simulated face page)")
        if self.alipay_enabled and self.face_provider_alipay == "dev":
            problems.append("VAXBOT_FACE_PROVIDER_ALIPAY is dev (the simulated face page)")
        if self.face_provider_wechat == "tencent":
            for name in ("tencent_secret_id", "tencent_secret_key", "tencent_faceid_rule_id"):
                if not getattr(self, name):
                    problems.append(f"VAXBOT_{name.upper()} is not set (needed by the tencent face provider)")
            if not self.tencent_faceid_endpoint.startswith("https://"):
                problems.append("VAXBOT_TENCENT_FACEID_ENDPOINT must be https in production")
        if not self.wechat_oauth_base.startswith("https://"):
            problems.append("VAXBOT_WECHAT_OAUTH_BASE must be https in production")
        if self.alipay_enabled and not self.alipay_oauth_base.startswith("https://"):
            problems.append("VAXBOT_ALIPAY_OAUTH_BASE must be https in production")
        if self.metrics_token and len(self.metrics_token) < 16:
            problems.append("VAXBOT_METRICS_TOKEN is shorter than 16 characters")
        return problems


def _host(url: str) -> str:
    """The host of ``url`` for a message (never its path or query, which may carry credentials)."""
    try:
        return urlsplit(url).hostname or "an address without a host"
    except ValueError:
        return "an unreadable address"


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _convert(field: dataclasses.Field[Any], raw: str) -> Any:
    default = field.default
    name = field.name
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, date):
            return date.fromisoformat(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name.upper()} has an invalid value") from exc
    return raw


_DESK_FIELD = re.compile(r"^(name|step|detail|number|time)=[a-z_]+\d+$")


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from ``VAXBOT_*`` variables; a ``.env`` file fills what the environment lacks."""
    source = dict(os.environ if environ is None else environ)
    file_path = env_file or Path(source.get(f"{PREFIX}ENV_FILE", ".env"))
    merged = {**_read_env_file(file_path), **source}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        raw = merged.get(PREFIX + field.name.upper())
        if raw is None or (raw == "" and not isinstance(field.default, str)):
            continue
        values[field.name] = _convert(field, raw)
    values.update(overrides)
    settings = Settings(**values)
    if settings.env and settings.env not in ENVIRONMENTS:
        raise ConfigError("VAXBOT_ENV must be development, test or production")
    settings.refuse_unsafe_development()
    if settings.wechat_aes_key and len(settings.wechat_aes_key) != 43:
        raise ConfigError("VAXBOT_WECHAT_AES_KEY must be the 43-character EncodingAESKey")
    if settings.wxmini_aes_key and len(settings.wxmini_aes_key) != 43:
        raise ConfigError("VAXBOT_WXMINI_AES_KEY must be the 43-character EncodingAESKey")
    if settings.mp_session_ttl_seconds < 60 or settings.mp_api_burst < 1 or settings.mp_api_per_minute <= 0:
        raise ConfigError(
            f"{PREFIX}MP_SESSION_TTL_SECONDS must be at least 60, {PREFIX}MP_API_BURST at least 1"
            f" and {PREFIX}MP_API_PER_MINUTE positive"
        )
    for name in ("code_ttl_seconds", "code_page_ttl_seconds", "code_page_code_seconds"):
        if getattr(settings, name) < 60:
            raise ConfigError(f"{PREFIX}{name.upper()} must be at least 60 (a code must live long enough to show)")
    if settings.lottery_confirm_hours < 1 or settings.no_show_penalty_days < 0:
        raise ConfigError(
            f"{PREFIX}LOTTERY_CONFIRM_HOURS must be at least 1 and {PREFIX}NO_SHOW_PENALTY_DAYS not negative"
        )
    if not 0 <= settings.reminder_hour <= 23 or settings.reminder_days_ahead < 0:
        raise ConfigError(f"{PREFIX}REMINDER_HOUR must be 0–23 and {PREFIX}REMINDER_DAYS_AHEAD not negative")
    for name in ("page", "address", "miss"):
        burst, rate = f"code_page_{name}_burst", f"code_page_{name}_per_minute"
        if getattr(settings, burst) < 1 or getattr(settings, rate) <= 0:
            raise ConfigError(f"{PREFIX}{burst.upper()} must be at least 1 and {PREFIX}{rate.upper()} positive")
    if settings.body_read_timeout_seconds <= 0:
        raise ConfigError(f"{PREFIX}BODY_READ_TIMEOUT_SECONDS must be positive")
    desk_roles = [item.partition("=")[0] for item in settings.wxmini_desk_fields]
    if (
        not all(_DESK_FIELD.match(item) for item in settings.wxmini_desk_fields)
        or len(set(desk_roles)) != len(desk_roles)
        or not {"name", "step"} <= set(desk_roles)
    ):
        raise ConfigError(
            f"{PREFIX}WXMINI_DESK_FIELDS must be role=field items (roles name, step, detail, number, time; name and"
            " step at least, each once; fields typed like thing1, phrase2, character_string4, time5)"
        )
    if settings.code_page_code_seconds > settings.code_page_ttl_seconds:
        raise ConfigError(f"{PREFIX}CODE_PAGE_CODE_SECONDS must not exceed {PREFIX}CODE_PAGE_TTL_SECONDS")
    return settings
