"""The chat page as a person sees it (issue 28): screenshots at two widths, and what a person
would notice checked in the rendered page, on the shipped corpus (Debian's chromium)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_ui import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = "Which aircraft are affected by SB 72-61-009?"
# kept as test artefacts (not committed); README's picture is one of them, copied by hand
SHOTS = Path(os.environ.get("RAG_APP_SCREENSHOTS", Path(__file__).parent / "artifacts"))


@pytest.fixture(scope="module")
def chat_url(shipped):
    from rag_app.ui.app import launch

    demo, url = launch(shipped, block=False)
    yield url
    demo.close()


def _ask(page, question: str) -> None:
    page.fill("#question textarea", question)
    page.click("#ask")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#chatbot .message')].some("
        "m => /Extractive answer|Generated answer/.test(m.innerText))",
        timeout=60_000,
    )
    page.wait_for_selector(
        "#sources .source-card mark.quoted, #sources .source-card", timeout=30_000
    )


@pytest.mark.parametrize("width", [1400, 800])
def test_chat_page_reads_like_a_page(chat_url, width):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(chat_url)
        page.wait_for_selector("#question textarea", timeout=30_000)
        _ask(page, QUESTION)
        page.wait_for_timeout(500)
        page.screenshot(path=str(SHOTS / f"chat-{width}.png"), full_page=True)

        # the owning document is source [1], its passage at body size
        first = page.locator("#sources .source-card").first
        assert "sb-72-61-009" in first.inner_text()
        sizes = page.evaluate(
            "() => [getComputedStyle(document.querySelector('#sources .source-text')).fontSize,"
            " getComputedStyle(document.querySelector('#chatbot .message')).fontSize]"
        )
        assert sizes[0] == sizes[1], sizes
        weight = page.evaluate(
            "() => getComputedStyle(document.querySelector('#sources .source-text')).fontWeight"
        )
        assert int(weight) < 600
        # no entity leaks anywhere in the page's text
        text = page.evaluate("() => document.body.innerText")
        assert not re.search(r"&(gt|lt|amp);", text), re.findall(r".{30}&(?:gt|lt|amp);.{30}", text)
        # every [n] of the answer resolves to a card
        answer = page.locator("#chatbot .message").last.inner_text()
        cited = set(re.findall(r"\[(\d+)\]", answer))
        assert cited
        for n in cited:
            assert page.locator(f"#source-{n}").count() == 1, n
        # the quoted sentence is marked in its card
        assert page.locator("#sources mark.quoted").count() >= 1
        assert "Extractive answer" in answer and "ms" in answer
        if width == 1400:
            box = first.bounding_box()
            assert box is not None and box["y"] < 900, box  # visible without scrolling
        browser.close()


def test_three_questions_show_quote_citation_and_mode(chat_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(chat_url)
        page.wait_for_selector("#question textarea", timeout=30_000)
        for question in (
            QUESTION,
            "main tyre pressure psi",
            "who signs the CRS after a wheel change",
        ):
            _ask(page, question)
            answer = page.locator("#chatbot .message").last.inner_text()
            assert "“" in answer or "|" in answer, answer  # a quote
            assert re.search(r"\[\d+\]", answer), answer  # its citation
            assert "Extractive answer" in answer, answer  # the mode, and why
            assert "quoted from the documents" in answer
            page.click("#clear")
            page.wait_for_timeout(300)
        browser.close()
