"""The browser sandbox in real headless Chromium: verify, claim, show code and authorise on WeChat; the
grandparent's view on Alipay, and a dose reminder as a card; a reload keeps each conversation, and
「重置演示」 empties them and puts the demo world back.

Everything goes through the page as a person would use it; the page's server side signs (and on WeChat
encrypts) each message and posts it to the real webhooks. The QR codes are read from screenshots with a
real QR reader and taken to the clinic desk. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import select

from bot.cli import DEV_ALIPAY_PREFIX, DEV_API_PREFIX, build_serving_app
from bot.desk.queue import take_number
from bot.dev.demo import GRANDMA, PARENT, seed_demo
from bot.web.appkeys import SERVICES, SESSIONS
from models import Clinic, utcnow

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


async def _desk(app: Any, payload: str) -> int:
    """Scan a code at the demo clinic; returns the queue number."""
    services = app[SERVICES]
    async with app[SESSIONS]() as session, session.begin():
        clinic = (await session.scalars(select(Clinic).order_by(Clinic.id))).first()
        assert clinic is not None
        ticket = await take_number(
            session,
            services.vault,
            services.catalogue,
            clinic_code=clinic.code,
            pilot_regions=services.settings.pilot_regions,
            payload=payload,
            staff="nurse",
            now=utcnow(),
        )
    return ticket.queue_number


def _browser_or_skip() -> str:
    if CHROMIUM is None:
        if os.environ.get("VAXBOT_REQUIRE_BROWSER") == "1":
            pytest.fail("VAXBOT_REQUIRE_BROWSER=1 but no chromium is installed")
        pytest.skip("no chromium here (CI installs it and sets VAXBOT_REQUIRE_BROWSER=1)")
    return CHROMIUM


async def test_parent_on_wechat_grandparent_on_alipay(
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
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=FLAGS)
        page = await browser.new_page()
        await page.goto(f"{base}/sandbox")
        log = page.locator("#log")

        async def menu(group: str, item: str) -> None:
            await page.locator(".group > button", has_text=group).click()
            await page.locator(".items button", has_text=item).click()

        async def transcript() -> list[str]:
            """The bubbles on screen (images by their address), once the pending one has settled."""
            await page.wait_for_function("() => !document.querySelector('#log .pending')")
            return [
                text or str(src)
                for text, src in await log.locator(":scope > *").evaluate_all(
                    "nodes => nodes.map(n => [n.innerText, n.querySelector('img')?.getAttribute('src')])"
                )
            ]

        async def say(text: str) -> None:
            await page.fill("#text", text)
            await page.press("#text", "Enter")

        async def verify(name: str, id_number: str) -> None:
            await menu("帮助", "实名认证")
            await log.get_by_text("请输入您的姓名").last.wait_for()
            await say(name)
            await log.get_by_text("请输入您本人的18位身份证号").last.wait_for()
            await say(id_number)
            link = log.get_by_role("link", name="点击进行人脸识别").last
            await link.wait_for()
            async with page.expect_popup() as popup_info:
                await link.click()
            popup = await popup_info.value
            await popup.get_by_role("button", name="通过", exact=True).click()
            await popup.get_by_text("实名认证成功").wait_for()
            await popup.screenshot(path=str(ARTIFACTS / f"sandbox-{backend}-face-page.png"))
            await popup.close()
            await log.get_by_text("实名认证成功！您已认证为").last.wait_for(timeout=15000)

        # WeChat, as the parent: follow, verify, claim.
        await page.click("#follow")
        await log.get_by_text("欢迎关注").first.wait_for()
        await verify(PARENT.name, PARENT.id_number)
        await menu("我的接种证", "申领接种证")
        await log.get_by_text("您可以申领的电子预防接种证").last.wait_for()
        said = "\n".join(await log.locator(".msg:not(.me)").all_inner_texts())  # what vaxbot sent
        assert PARENT.id_number not in said and PARENT.name not in said and "林*雨" in said
        number = re.search(r"(\d+)\. 林\*满", said)
        assert number is not None, said
        await say(number.group(1))
        await log.get_by_text("请核对接种证信息").last.wait_for()
        await say("同意并申领")
        await log.get_by_text("电子预防接种证申领成功").last.wait_for()
        # …show the child's code: the image in the chat, then the page that keeps a fresh one.
        await menu("亮码预约", "亮码接种")
        image = log.locator(".image img").last
        await image.wait_for(timeout=15000)
        await page.wait_for_function("() => [...document.querySelectorAll('.image img')].every(i => i.complete)")
        chat_code = _read(await image.screenshot())
        await page.screenshot(path=str(ARTIFACTS / f"sandbox-{backend}-code-chat.png"))
        assert re.fullmatch(r"VX1:[A-Z2-7]{24}:\d{10}:[A-Z2-7]{24}", chat_code), chat_code
        code_link = log.get_by_role("link", name="打开林*满的接种码页面").last
        await code_link.wait_for(timeout=15000)
        async with page.expect_popup() as popup_info:
            await code_link.click()
        code_page = await popup_info.value
        await code_page.locator("#code svg").wait_for(timeout=15000)
        assert "林*满" in await code_page.inner_text("body") and PARENT.name not in await code_page.content()
        await code_page.screenshot(path=str(ARTIFACTS / f"sandbox-{backend}-code-page.png"))
        page_code = _read(await code_page.locator("#code").screenshot())
        assert page_code != chat_code and page_code.startswith("VX1:")
        await code_page.close()
        assert await _desk(app, page_code) == 1  # the nurse scans the page's code: 取号
        await log.get_by_text("排队号：1号").last.wait_for(timeout=15000)
        # …and authorise the grandmother, step by step.
        await menu("我的接种证", "证照授权")
        await log.get_by_text("已授权 0/10 人").last.wait_for()
        for text in ("添加", GRANDMA.name, GRANDMA.id_number, "祖母", "13912345678"):
            answers = await log.locator(".msg:not(.me)").count()
            await say(text)
            # The next step's question, not a pause: each answer waits for the bot's reply to the last.
            await page.wait_for_function("n => document.querySelectorAll('#log .msg:not(.me)').length > n", arg=answers)
        await log.get_by_text("确认授权").last.wait_for()
        await say("确认授权")
        await log.get_by_text("已授权 1/10 人").last.wait_for()
        await page.screenshot(path=str(ARTIFACTS / f"sandbox-{backend}-wechat.png"))
        wechat_transcript = await transcript()

        # Alipay, as the grandmother: the same journeys through the other platform's protocol.
        await page.select_option("#platform", "alipay")
        await page.select_option("#user", "grandma")
        assert "支付宝生活号" in await page.inner_text("#bar")
        await page.click("#follow")
        await log.get_by_text("欢迎关注").first.wait_for(timeout=15000)
        await verify(GRANDMA.name, GRANDMA.id_number)
        await menu("我的接种证", "接种记录")
        await log.get_by_text("乙肝疫苗").last.wait_for(timeout=15000)  # the grandchild's records
        await menu("亮码预约", "亮码接种")  # a grantee may show the grandchild's code too
        grandma_image = log.locator(".image img").last
        await grandma_image.wait_for(timeout=15000)
        await page.wait_for_function("() => [...document.querySelectorAll('.image img')].every(i => i.complete)")
        assert _read(await grandma_image.screenshot()).startswith("VX1:")
        # Fast-forward to the reminder hour: the grandchild's late doses reach the grandmother here too.
        await page.click("#remind")
        card = log.locator(".template", has_text="林*满").last
        await card.wait_for(timeout=15000)
        await page.screenshot(path=str(ARTIFACTS / f"sandbox-{backend}-alipay.png"))
        await card.screenshot(path=str(ARTIFACTS / f"sandbox-{backend}-reminder-card.png"))
        said = "\n".join(await log.locator(".msg:not(.me)").all_inner_texts())
        assert GRANDMA.id_number not in said and GRANDMA.name not in said and "林*满" in said
        # The reminder is a card: a title, the opening line, labelled rows, the remark and the link.
        assert await card.locator(".tpl-title").inner_text() == "接种提醒"
        assert "林*满" in await card.locator(".tpl-first").inner_text()
        assert await card.locator(".tpl-row dt").all_inner_texts() == ["接种对象", "待种疫苗", "接种时间"]
        values = await card.locator(".tpl-row dd").all_inner_texts()
        assert values[0] == "林*满" and "剂" in values[1] and values[2], values
        assert "门诊" in await card.locator(".tpl-remark").inner_text()
        assert await card.locator("a.tpl-link").get_attribute("href") == f"{base}/"
        assert " / " not in await card.inner_text()

        # A reload shows the same conversation, for each platform and person.
        alipay_transcript = await transcript()
        await page.reload()
        await log.locator(".template").last.wait_for()
        assert await page.input_value("#platform") == "alipay" and await page.input_value("#user") == "grandma"
        assert await transcript() == alipay_transcript
        await page.select_option("#platform", "wechat")
        await page.select_option("#user", "parent")
        await log.locator(".template").last.wait_for()
        # What came while the mother was away is there too: the same reminder reached her on WeChat.
        wechat_now = await transcript()
        assert wechat_now[: len(wechat_transcript)] == wechat_transcript
        assert len(wechat_now) == len(wechat_transcript) + 1 and wechat_now[-1].startswith("接种提醒\n")
        await page.reload()
        await log.locator(".template").last.wait_for()
        assert await page.input_value("#platform") == "wechat" and await page.input_value("#user") == "parent"
        assert await transcript() == wechat_now

        # 「重置演示」: dismissing the question changes nothing; confirming empties every conversation.
        page.once("dialog", lambda dialog: dialog.dismiss())
        await page.click("#reset")
        assert await transcript() == wechat_now
        questions: list[str] = []

        async def accept(dialog: Any) -> None:
            questions.append(dialog.message)
            await dialog.accept()

        page.once("dialog", accept)
        await page.click("#reset")
        await page.get_by_role("status").get_by_text("演示已重置").wait_for(timeout=15000)
        assert questions and "重置演示" in questions[0]
        assert await log.locator(":scope > *").count() == 0
        await page.screenshot(path=str(ARTIFACTS / f"sandbox-{backend}-reset.png"))
        await page.reload()
        await page.wait_for_function("() => document.querySelector('#hint').textContent !== ''")
        assert await transcript() == []
        await page.select_option("#platform", "alipay")
        await page.select_option("#user", "grandma")
        assert await transcript() == []
        # …and the demo world is back: the mother's child, claimed above, is claimable again.
        await page.select_option("#platform", "wechat")
        await page.select_option("#user", "parent")
        await page.click("#follow")
        await log.get_by_text("欢迎关注").first.wait_for(timeout=15000)
        await verify(PARENT.name, PARENT.id_number)
        await menu("我的接种证", "申领接种证")
        await log.get_by_text("您可以申领的电子预防接种证").last.wait_for()
        assert re.search(r"\d+\. 林\*满", "\n".join(await log.locator(".msg:not(.me)").all_inner_texts()))
        await browser.close()
