"""The clinic console in real headless Chromium, with the family in the sandbox beside it (issue 13's "done when").

A grandmother with a granted certificate shows the child's code in the chat (Alipay, in the sandbox); a
nurse signs in to the console with the demo registrar's account, scans the code (the text a QR reader
reads from the chat's image, typed into the scan field as a USB scanner would), calls the number,
registers the child with the 三查七对 data on screen and sends the dose plan for 一验证; the grandmother
answers 「确认」 in the chat and the console shows it live; the vaccinator records the dose with its lot and
site; the observation countdown runs and ends (the console's clock is moved, not waited for); 留观结束. The
family receives each message, and the dose is in the records. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from bot.cli import DEV_ALIPAY_PREFIX, DEV_API_PREFIX, build_serving_app
from bot.dev.demo import CHILD, DEMO_STAFF_PASSWORD, GRANDMA, PARENT, seed_demo
from bot.web.appkeys import CONSOLE, SERVICES, SESSIONS
from models import utcnow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _read(png: bytes) -> str:
    """What a clinic's scanner reads from a screenshot."""
    result = zxingcpp.read_barcode(Image.open(io.BytesIO(png)).convert("L"))
    assert result is not None, "no QR code in the screenshot"
    return str(result.text)


def _browser_or_skip() -> str:
    if CHROMIUM is None:
        if os.environ.get("VAXBOT_REQUIRE_BROWSER") == "1":
            pytest.fail("VAXBOT_REQUIRE_BROWSER=1 but no chromium is installed")
        pytest.skip("no chromium here (CI installs it and sets VAXBOT_REQUIRE_BROWSER=1)")
    return CHROMIUM


class Ahead:
    """The console's clock: the real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset


async def test_the_clinic_desk_in_chromium(
    make_settings: Any, backend: str, aiohttp_server: Any, unused_tcp_port: int
) -> None:
    executable = _browser_or_skip()
    from playwright.async_api import async_playwright

    port = unused_tcp_port
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        env="development",
        port=port,
        public_url=base,
        wechat_api_base=f"{base}{DEV_API_PREFIX}",
        wechat_oauth_base=f"{base}{DEV_API_PREFIX}",
        alipay_gateway=f"{base}{DEV_ALIPAY_PREFIX}/gateway.do",
        alipay_oauth_base=f"{base}{DEV_ALIPAY_PREFIX}",
        run_outbox_worker=True,
        outbox_poll_seconds=0.1,
    )
    app = build_serving_app(settings)
    await aiohttp_server(app, host="127.0.0.1", port=port)
    ARTIFACTS.mkdir(exist_ok=True)
    assert await seed_demo(app[SESSIONS], app[SERVICES].vault)
    clock = Ahead()
    app[CONSOLE].clock = clock
    shot = f"console-{backend}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=FLAGS)
        family = await browser.new_page()
        await family.goto(f"{base}/sandbox")
        log = family.locator("#log")

        async def menu(group: str, item: str) -> None:
            await family.locator(".group > button", has_text=group).click()
            await family.locator(".items button", has_text=item).click()

        async def say(text: str) -> None:
            await family.fill("#text", text)
            await family.press("#text", "Enter")

        async def verify(name: str, id_number: str) -> None:
            await menu("帮助", "实名认证")
            await log.get_by_text("请输入您的姓名").last.wait_for()
            await say(name)
            await log.get_by_text("请输入您本人的18位身份证号").last.wait_for()
            await say(id_number)
            link = log.get_by_role("link", name="点击进行人脸识别").last
            await link.wait_for()
            async with family.expect_popup() as popup_info:
                await link.click()
            popup = await popup_info.value
            await popup.get_by_role("button", name="通过", exact=True).click()
            await popup.get_by_text("实名认证成功").wait_for()
            await popup.close()
            await log.get_by_text("实名认证成功！您已认证为").last.wait_for(timeout=15000)

        # The family: the mother claims the child on WeChat and authorises the grandmother…
        await family.click("#follow")
        await log.get_by_text("欢迎关注").first.wait_for()
        await verify(PARENT.name, PARENT.id_number)
        await menu("我的接种证", "申领接种证")
        await log.get_by_text("您可以申领的电子预防接种证").last.wait_for()
        said = "\n".join(await log.locator(".msg:not(.me)").all_inner_texts())
        number = re.search(r"(\d+)\. 林\*满", said)
        assert number is not None, said
        await say(number.group(1))
        await log.get_by_text("请核对接种证信息").last.wait_for()
        await say("同意并申领")
        await log.get_by_text("电子预防接种证申领成功").last.wait_for()
        await menu("我的接种证", "证照授权")
        await log.get_by_text("已授权 0/10 人").last.wait_for()
        for text in ("添加", GRANDMA.name, GRANDMA.id_number, "祖母", "13912345678"):
            answers = await log.locator(".msg:not(.me)").count()
            await say(text)
            await family.wait_for_function(
                "n => document.querySelectorAll('#log .msg:not(.me)').length > n", arg=answers
            )
        await log.get_by_text("确认授权").last.wait_for()
        await say("确认授权")
        await log.get_by_text("已授权 1/10 人").last.wait_for()
        # …who verifies on Alipay and shows the grandchild's code.
        await family.select_option("#platform", "alipay")
        await family.select_option("#user", "grandma")
        await family.click("#follow")
        await log.get_by_text("欢迎关注").first.wait_for(timeout=15000)
        await verify(GRANDMA.name, GRANDMA.id_number)
        await menu("亮码预约", "亮码接种")
        image = log.locator(".image img").last
        await image.wait_for(timeout=15000)
        await family.wait_for_function("() => [...document.querySelectorAll('.image img')].every(i => i.complete)")
        code = _read(await image.screenshot())

        # The nurse: the sandbox's link leads to the console; the demo accounts are listed there.
        async with family.expect_popup() as popup_info:
            await family.click("#clinic")
        desk = await popup_info.value
        await desk.locator("#demo-staff").wait_for()
        assert "demo-registrar" in await desk.inner_text("#demo-staff")
        await desk.screenshot(path=str(ARTIFACTS / f"{shot}-sign-in.png"))

        async def sign_in(login: str) -> None:
            await desk.goto(f"{base}/clinic/sign-in")
            await desk.fill("input[name=login]", login)
            await desk.fill("input[name=password]", DEMO_STAFF_PASSWORD)
            await desk.click("#sign-in button[type=submit]")
            await desk.locator("#sign-out").wait_for()

        await sign_in("demo-registrar")
        # 取号: the scanner types into the focused field and presses Enter.
        await desk.goto(f"{base}/clinic/scan")
        assert await desk.evaluate("document.activeElement.id") == "code"
        await desk.keyboard.type(code)
        await desk.keyboard.press("Enter")
        await desk.locator("#ticket").wait_for()
        assert "取号成功：1号" in await desk.inner_text("#ticket")
        await desk.screenshot(path=str(ARTIFACTS / f"{shot}-scan.png"))
        await log.get_by_text("排队号：1号").last.wait_for(timeout=15000)  # the grandmother is told her number

        # Today's queue, 叫号, and the visit: 三查七对 on screen.
        await desk.click("text=今日队列")
        assert "林*满" in await desk.inner_text("#queue") and CHILD.name not in await desk.content()
        await desk.screenshot(path=str(ARTIFACTS / f"{shot}-queue.png"))
        await desk.click("#call-next")
        await desk.locator("#facts").wait_for()
        assert await desk.inner_text("#full-name") == CHILD.name
        assert await desk.inner_text("#sex") == "男" and "岁" in await desk.inner_text("#age")
        due = await desk.inner_text("#due")
        assert "剂" in due, due
        # 登记: the four health questions.
        for question in ("fever", "allergies", "recent_vaccines", "contraindications"):
            await desk.check(f"input[name={question}][value=no]")
        await desk.fill("input[name=desk]", "2号接种台")
        await desk.click("#register-form button[type=submit]")
        await desk.locator("#plan-form").wait_for()
        await log.get_by_text("已完成登记").last.wait_for(timeout=15000)
        # 一验证: the first dose due, the lot, manufacturer and expiry, sent to the family.
        dose = await desk.locator("#dose-choice option").first.inner_text()
        vaccine, dose_number = re.fullmatch(r"(.+) 第(\d+)剂", dose).groups()  # type: ignore[union-attr]
        # Another vaccine or dose than the due list's needs a reason: the fields appear only then.
        assert not await desk.locator("#override-reason").is_visible()
        await desk.select_option("#dose-choice", "other")
        assert await desk.locator("#override-reason").is_visible()
        await desk.select_option("#dose-choice", index=0)
        assert not await desk.locator("#override-reason").is_visible()
        await desk.fill("#lot", "202611A03")
        await desk.fill("#manufacturer", "华北制药")
        await desk.fill("#expires", (utcnow() + timedelta(days=300)).date().isoformat())
        await desk.click("#plan-form button[type=submit]")
        await desk.locator("#live-status").wait_for()
        await desk.screenshot(path=str(ARTIFACTS / f"{shot}-confirmation-waiting.png"), full_page=True)
        request = log.get_by_text("请核对后回复「确认」").last
        await request.wait_for(timeout=15000)
        assert f"即将为 林*满 接种：{vaccine} 第{dose_number}剂，批号 202611A03" in await request.inner_text()

        # The grandmother confirms in the chat; the console sees it live (no reload by hand).
        await say("确认")
        await desk.locator("#confirmed").wait_for(timeout=15000)
        assert "聊天中确认" in await desk.inner_text("#confirmed")
        await family.screenshot(path=str(ARTIFACTS / f"{shot}-family-confirmed.png"))
        # The registrar may not record the dose: the vaccinator's desk does.
        assert await desk.locator("#vaccinate-form").count() == 0
        visit_url = desk.url
        await desk.click("#sign-out")
        await sign_in("demo-vaccinator")
        await desk.goto(visit_url)
        await desk.select_option("#site", label="左上臂三角肌")
        await desk.select_option("#route", label="肌内")
        await desk.click("#vaccinate-form button[type=submit]")
        countdown = desk.locator("#observe .countdown")
        await countdown.wait_for()
        await desk.wait_for_function(
            "() => /^(29|30):\\d\\d$/.test(document.querySelector('#observe .countdown').textContent)"
        )
        await desk.screenshot(path=str(ARTIFACTS / f"{shot}-observing.png"), full_page=True)
        recorded = log.get_by_text("请在留观区留观30分钟").last
        await recorded.wait_for(timeout=15000)
        assert f"{vaccine} 第{dose_number}剂，批号 202611A03" in await recorded.inner_text()

        # 留观: the observation area's countdown; half an hour later (the console's clock) it is over.
        await desk.click("text=留观")
        await desk.locator("#observing .countdown").wait_for()
        for _ in range(2):  # the console stays in use, so the session does not go idle
            clock.offset += timedelta(minutes=16)
            await desk.reload()
        await desk.wait_for_function(
            "() => document.querySelector('#observing .countdown').textContent === '已满30分钟'"
        )
        await desk.screenshot(path=str(ARTIFACTS / f"{shot}-observation-over.png"))
        await desk.click("#observing button.finish")
        await desk.get_by_text("现在没有人在留观").wait_for()
        over = log.get_by_text("留观结束，可以离开了").last
        await over.wait_for(timeout=15000)
        assert "下一针" in await over.inner_text() or "没有待种" in await over.inner_text()
        await desk.click("text=今日汇总")
        assert "今日接种剂次：1" in await desk.inner_text("main")
        await desk.screenshot(path=str(ARTIFACTS / f"{shot}-summary.png"))

        # The family's records show the dose given today at this clinic.
        await menu("我的接种证", "接种记录")
        await log.get_by_text(vaccine).last.wait_for(timeout=15000)
        records = "\n".join(await log.locator(".msg:not(.me)").all_inner_texts())
        today = clock().date()  # the server's "today" is China time; the dose date is checked loosely
        assert f"第{dose_number}剂" in records and f"{today.year}年" in records
        await family.screenshot(path=str(ARTIFACTS / f"{shot}-family.png"))
        await browser.close()
