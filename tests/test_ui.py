"""The chat UI end to end: a real Gradio server on loopback, driven by real Chromium.

Retrieval and indexing are the production ones (MiniLM, Chroma, BM25) over a small
corpus written here; the LLM is off (`backend = "none"`), so answers are the retrieval-only
fallback and the tests stay fast. The LLM path has its own tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rag_app import index, ingest
from rag_app.chat import BASELINE, ChatService, RetrieverChoice
from rag_app.models import resolve_embedder
from rag_app.ui.app import exposure_warning, free_port, launch

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

DOCS = {
    "task_cards/wheel-pos1.md": (
        "---\ntitle: Main wheel change POS 1\ndoc_type: task_card\ndepartment: LMD\n---\n"
        "# Main wheel change POS 1\n\nTorque the axle nut to 410 Nm, back off, then 160 Nm. "
        "Fit the locking bolt NW-LB-7 and safety it with lock wire.\n"
    ),
    "task_cards/brake-pos2.md": (
        "---\ntitle: Brake unit change POS 2\ndoc_type: task_card\ndepartment: LMD\n---\n"
        "# Brake unit change POS 2\n\nBleed the brake at the bleed valve until no air shows. "
        "Check the wear pin protrudes at least 1.5 mm with the parking brake set.\n"
    ),
    "policies/duty-time.md": (
        "---\ntitle: Duty time limits\ndoc_type: policy\ndepartment: QAD\n---\n"
        "# Duty time limits\n\nNo technician works more than 13 hours in a shift, handover "
        "included, and the rest between shifts is at least 11 hours.\n"
    ),
    "safety/fod.md": (
        "---\ntitle: Foreign object damage walk\ndoc_type: safety\ndepartment: SFO\n---\n"
        "# FOD walk\n\nA FOD walk of the apron is done before the first departure each day. "
        "Anything found goes in the FOD bin and is logged on form NW-F-212.\n"
    ),
}


def _fake_finetuned_run(models_dir: Path) -> str:
    """A registry entry pointing at a copy of the base weights.

    Enough for the UI's toggle and compare view, which only need a second embedder run;
    the training itself is covered by the finetune tests.
    """
    run = models_dir / "ui-test-run"
    shutil.copytree(resolve_embedder("all-MiniLM-L6-v2").path, run)
    (run / "run.json").write_text(
        json.dumps(
            {
                "name": "ui-test-run",
                "kind": "embedder",
                "base_model": "all-MiniLM-L6-v2",
                "created": "2026-11-25T00:00:00+00:00",
                "metrics": {},
            }
        )
    )
    return str(run)


@pytest.fixture(scope="module")
def ui_settings(tmp_path_factory):
    from rag_app.config import load_settings

    root = tmp_path_factory.mktemp("ui")
    corpus = root / "corpus"
    for rel, text in DOCS.items():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpus / rel).write_text(text)
    settings = load_settings(
        workspace=root / "ws",
        corpus=corpus,
        llm={"backend": "none"},
        server={"port": free_port()},
    )
    ingest.run(settings, progress=False)
    index.run(settings, progress=False)
    index.run(settings, model=_fake_finetuned_run(settings.models_dir), progress=False)
    return settings


@pytest.fixture(scope="module")
def server(ui_settings):
    demo, url = launch(ui_settings, block=False)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(server)
        page.wait_for_selector("#question textarea", timeout=30_000)
        yield page
        browser.close()


def test_service_lists_baseline_and_finetuned(ui_settings):
    service = ChatService(ui_settings, load_llm=False)
    keys = [o.key for o in service.options()]
    assert keys == [BASELINE, "ui-test-run"]
    hits = service.search("axle nut torque", RetrieverChoice.of(BASELINE, "hybrid", rerank=False))
    assert hits[0].chunk.doc_id == "task_cards/wheel-pos1.md"
    assert {"bm25", "dense", "fused"} <= set(hits[0].ranks)


def test_browser_question_shows_answer_and_sources(page):
    page.fill("#question textarea", "how many hours can a tech work in one shift?")
    page.click("#ask")
    page.wait_for_function(
        "document.querySelector('#sources').innerText.includes('policies/duty-time.md')",
        timeout=60_000,
    )
    page.wait_for_function(
        "document.querySelector('#chatbot').innerText.includes('13 hours')", timeout=60_000
    )
    sources = page.inner_text("#sources")
    assert "dense #" in sources and "bm25 #" in sources


def test_browser_toggle_finetuned_and_filter(page):
    page.click("#clear")
    page.get_by_label("Fine-tuned (ui-test-run)").check()
    page.fill("#question textarea", "FOD bin form")
    page.click("#ask")
    page.wait_for_function(
        "document.querySelector('#sources').innerText.includes('Fine-tuned (ui-test-run)')",
        timeout=60_000,
    )
    assert "safety/fod.md" in page.inner_text("#sources")


def test_browser_compare_view(page):
    page.fill("#compare-query textarea", "brake wear pin")
    page.click("#compare")
    page.wait_for_function(
        "document.querySelector('#compare-out').innerText.includes('brake-pos2.md')",
        timeout=60_000,
    )
    text = page.inner_text("#compare-out")
    assert "Baseline" in text and "ui-test-run" in text


def _wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        f"document.querySelector({selector!r}).innerText.includes({text!r})", timeout=60_000
    )


def test_browser_marks_sources_and_answer_into_the_feedback_file(page, ui_settings):
    """Ask, mark one source relevant and another not, thumb the answer: all in the files."""
    from rag_app.feedback import FEEDBACK_FILE, QUERY_LOG_FILE, JsonlLog

    question = "how long may a technician work in one shift?"
    page.click("#clear")
    page.get_by_label("Baseline (all-MiniLM-L6-v2)").check()
    page.fill("#question textarea", question)
    page.click("#ask")
    _wait_text(page, "#sources", "[2]")
    _wait_text(page, "#chatbot", "13 hours")
    # the marking controls are on the cards themselves
    first = page.inner_text("#source-1 .source-why").split(" · ", 1)[0]
    second = page.inner_text("#source-2 .source-why").split(" · ", 1)[0]
    page.click("#source-1 .mark-btn[data-mark='relevant']")
    _wait_text(page, "#feedback-status", f"[1] {first} is relevant")
    page.click("#source-2 .mark-btn[data-mark='not_relevant']")
    _wait_text(page, "#feedback-status", f"[2] {second} is not relevant")
    page.locator("#chatbot button[aria-label='Like']").last.click()
    _wait_text(page, "#feedback-status", "answer marked")

    marks = JsonlLog(ui_settings.feedback_dir / FEEDBACK_FILE).read().records
    sources = [m for m in marks if m["target"] == "source" and m["query"] == question]
    assert [(m["mark"], m["chunk"]["doc_id"]) for m in sources[-2:]] == [
        ("relevant", first),
        ("not_relevant", second),
    ]
    assert sources[-1]["retriever"]["key"] == BASELINE
    assert sources[-1]["retriever"]["mode"] == "hybrid"
    assert sources[-1]["chunk"]["content_hash"] and sources[-1]["session"]
    answer = [m for m in marks if m["target"] == "answer"][-1]
    assert answer["mark"] == "up" and answer["query"] == question
    assert "13 hours" in answer["answer"]
    logged = JsonlLog(ui_settings.feedback_dir / QUERY_LOG_FILE).read().records
    asked = [r for r in logged if r["query"] == question]
    assert asked and asked[-1]["turn"] == sources[-1]["turn"]
    assert asked[-1]["hits"][0]["doc_id"] == first


def test_api_sessions_do_not_share_choices(server):
    """Two clients with different retriever choices each get their own results."""
    from gradio_client import Client

    a, b = Client(server, verbose=False), Client(server, verbose=False)
    hits_a = a.predict("wheel axle nut", BASELINE, "bm25", False, api_name="/search")
    hits_b = b.predict("wheel axle nut", "ui-test-run", "dense", False, api_name="/search")
    assert hits_a[0]["ranks"].keys() == {"bm25"}
    assert hits_b[0]["ranks"].keys() == {"dense"}


def test_auth_refuses_anonymous_requests(ui_settings):
    from gradio_client import Client

    settings = ui_settings.model_copy(
        update={
            "server": ui_settings.server.model_copy(
                update={"port": free_port(), "auth": ["ana:s3cret"]}
            )
        }
    )
    demo, url = launch(settings, block=False)
    try:
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises several types
            Client(url, verbose=False).predict("x", api_name="/search")
        ok = Client(url, auth=("ana", "s3cret"), verbose=False)
        assert ok.predict("duty time", BASELINE, "bm25", False, api_name="/search")
    finally:
        demo.close()


def test_exposure_warning_only_without_auth_off_loopback(ui_settings):
    def with_server(**kw):
        return ui_settings.model_copy(update={"server": ui_settings.server.model_copy(update=kw)})

    assert exposure_warning(with_server(host="127.0.0.1")) is None
    assert "without a login" in exposure_warning(with_server(host="0.0.0.0"))
    assert exposure_warning(with_server(host="0.0.0.0", auth=["a:b"])) is None


def test_concurrent_clients_get_their_own_answers(server):
    """20 clients at once through the real queue: no errors, no cross-talk between them."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    questions = {
        "axle nut torque": "task_cards/wheel-pos1.md",
        "brake wear pin": "task_cards/brake-pos2.md",
        "hours in a shift": "policies/duty-time.md",
        "FOD walk apron": "safety/fod.md",
    }
    jobs = [
        (q, doc, ["bm25", "dense", "hybrid"][i % 3])
        for i, (q, doc) in enumerate(list(questions.items()) * 5)
    ]

    def ask(job):
        query, doc, mode = job
        client = Client(server, verbose=False)
        hits = client.predict(query, BASELINE, mode, False, api_name="/search")
        return query, doc, mode, hits

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(ask, jobs))
    assert len(results) == 20
    for _query, doc, mode, hits in results:
        assert hits[0]["doc_id"] == doc
        stages = set(hits[0]["ranks"])
        if mode == "hybrid":
            assert "fused" in stages
        else:
            assert stages == {mode}


def test_chat_stays_usable_when_the_llm_server_is_down(ui_settings):
    """An OpenAI-compatible URL that refuses connections: passages plus a clear note."""
    from gradio_client import Client

    settings = ui_settings.model_copy(
        update={
            "llm": ui_settings.llm.model_copy(
                update={
                    "backend": "openai",
                    "base_url": f"http://127.0.0.1:{free_port()}/v1",
                    "model": "x",
                    "max_retries": 1,
                    "timeout_s": 2,
                }
            ),
            "server": ui_settings.server.model_copy(update={"port": free_port()}),
        }
    )
    demo, url = launch(settings, block=False)
    try:
        chat, _, _ = Client(url, verbose=False).predict(
            "how long can a tech work in one shift?",
            [],
            BASELINE,
            "hybrid",
            False,
            None,
            None,
            api_name="/ask",
        )
        content = chat[-1]["content"]  # Gradio 6: a list of {"type": "text", "text": ...} parts
        answer = content if isinstance(content, str) else " ".join(p["text"] for p in content)
        assert "13 hours" in answer
        assert "127.0.0.1" in answer  # the note names the server that failed
    finally:
        demo.close()
