"""Hostile input and misconfiguration (issue 30): one bad file never stops an ingest, typos
never switch security off, nothing outside the corpus is indexed by following a link."""

from __future__ import annotations

import io
import os
import sys
import zipfile

import pytest

from rag_app import chunkstore, ingest
from rag_app.config import ConfigError

GOOD = "# Wheel change\n\nTorque the axle nut to 270 Nm, back off, then 135 Nm final.\n"


def _broken_docx() -> bytes:
    """A valid zip whose XML parts are truncated garbage."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types xmlns='garbage'><Default Ext")
        z.writestr("word/document.xml", "<w:document><w:body><w:p><w:r><w:t>half")
    return buf.getvalue()


@pytest.mark.skipif(sys.platform != "linux", reason="byte file names are a POSIX thing")
def test_one_bad_file_never_stops_the_ingest(settings_factory, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.md").write_text(GOOD)
    os.close(os.open(os.fsencode(corpus) + b"/caf\xe9.md", os.O_CREAT | os.O_WRONLY))
    with open(os.fsencode(corpus) + b"/caf\xe9.md", "w") as handle:
        handle.write("# Cafe\n\nThe cafe notice says the kettle is descaled weekly.\n")
    (corpus / "broken.docx").write_bytes(_broken_docx())
    settings = settings_factory(corpus=corpus)
    report = ingest.run(settings, progress=False)
    reasons = dict(report.skipped)
    assert "broken.docx" in reasons and "could not be read" in reasons["broken.docx"]
    docs = {c.doc_id for c in chunkstore.load_chunks(settings.chunks_path, settings.manifest_path)}
    assert docs == {"good.md", "caf\\xe9.md"}  # the odd name is kept, printable and stable
    assert ingest.run(settings, progress=False).unchanged == 2


def test_symlinks_out_of_the_corpus_are_skipped_unless_allowed(settings_factory, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nThe root password is hunter2.\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.md").write_text(GOOD)
    (corpus / "inside-link.md").symlink_to(corpus / "good.md")
    (corpus / "passwd.md").symlink_to(outside / "secret.md")
    (corpus / "etc").symlink_to(outside, target_is_directory=True)
    settings = settings_factory(corpus=corpus)
    report = ingest.run(settings, progress=False)
    reasons = dict(report.skipped)
    assert "outside the corpus" in reasons["passwd.md"]
    assert "outside the corpus" in reasons["etc/"]
    texts = " ".join(
        c.text for c in chunkstore.load_chunks(settings.chunks_path, settings.manifest_path)
    )
    assert "hunter2" not in texts
    allowed = settings_factory(
        corpus=corpus, workspace=tmp_path / "ws2", ingest={"follow_symlinks_outside": True}
    )
    ingest.run(allowed, progress=False)
    assert "hunter2" in " ".join(
        c.text for c in chunkstore.load_chunks(allowed.chunks_path, allowed.manifest_path)
    )


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('[server]\nauht = ["ana:pw"]\n', {}, "unknown key server.auht; did you mean server.auth?"),
        (
            "[feedback]\nlog_querys = false\n",
            {},
            "unknown key feedback.log_querys; did you mean feedback.log_queries?",
        ),
        ("", {"RAG_APP_SERVER__AUHT": '["ana:pw"]'}, "did you mean server.auth?"),
        ("[finetune.adapter]\nepoks = 3\n", {}, "did you mean finetune.adapter.epochs?"),
    ],
)
def test_a_misspelled_key_is_an_error_naming_the_right_one(
    settings_factory, tmp_path, monkeypatch, toml, env, message
):
    config = tmp_path / "rag-app.toml"
    config.write_text(toml)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from rag_app.config import load_settings

    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        load_settings(config)


def test_chunks_of_a_respaced_file_keep_offsets_in_order():
    """The splitter re-spaces this text, so every exact search for a piece misses; the
    bounded search (linear time: bench/bench_ingest_size.py) must still give every chunk an
    offset at or after the previous one's, inside the document."""
    from rag_app.ingest.chunker import chunk_document
    from rag_app.ingest.readers import ExtractedDoc

    sentence = "Torque   the  axle nut\tto 270 Nm   before the final check of the wheel. "
    text = sentence * 3000
    doc = ExtractedDoc(text=text, title="Big")
    chunks = chunk_document(
        "big.txt", doc, chunk_size=128, chunk_overlap=16, tokenizer=None, base_metadata={}
    )
    assert len(chunks) > 50
    starts = [c.start_char for c in chunks]
    assert starts == sorted(starts) and all(
        0 <= c.start_char < c.end_char <= len(text) for c in chunks
    )


def test_short_latin1_text_is_read_as_western_and_flagged(caplog):
    from rag_app.ingest.readers import decode_text

    with caplog.at_level("WARNING"):
        assert decode_text("crème".encode("latin-1"), "menu.txt") == "crème"
        assert decode_text("Niño pequeño, señal.".encode("latin-1")) == "Niño pequeño, señal."
    assert "menu.txt: not UTF-8; guessed cp1252" in caplog.text
    russian = "Привет, как дела? Это текст на русском языке для проверки кодировки."
    assert decode_text(russian.encode("cp1251")) == russian  # language evidence still wins


def test_questions_are_cleaned_and_bounded():
    from rag_app.chat import QuestionTooLong, clean_question

    assert (
        clean_question("  torque\x00 of the\taxle\nnut \x1b[31m ", 100)
        == "torque of the axle nut [31m"
    )
    with pytest.raises(QuestionTooLong, match="max_question_chars"):
        clean_question("x" * 101, 100)


def test_a_partial_dense_index_is_served_with_a_visible_warning(settings_factory, tmp_path):
    """After an interrupted `rag-app index`, search says how much of the corpus dense
    retrieval can see instead of quietly serving a part of it."""
    from rag_app import index
    from rag_app.chat import BASELINE, ChatService, RetrieverChoice
    from rag_app.retrieve import build_dense, load_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.md").write_text(f"# Doc {i}\n\nPart {i} torque is {i * 10} Nm.\n")
    settings = settings_factory(corpus=corpus, llm={"backend": "none"})
    ingest.run(settings, progress=False)
    index.run(settings, progress=False)
    dense = build_dense(settings, load_corpus(settings))
    dense.store.collection.delete(ids=[c.id for c in load_corpus(settings).chunks[:2]])
    service = ChatService(settings, load_llm=False)
    note = service.search_note("torque", RetrieverChoice.of(BASELINE, "hybrid", False))
    assert "holds 4 of 6 chunks" in note and "rag-app index" in note


def test_a_missing_model_is_one_line_and_the_chat_refuses_to_start(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rag_app.cli import app

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.md").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_APP_MODELS__EMBEDDER", str(tmp_path / "no-such-model"))
    runner = CliRunner()
    ingested = runner.invoke(app, ["ingest", str(corpus), "-w", str(tmp_path / "ws")])
    assert ingested.exit_code == 1
    assert "no-such-model" in ingested.output and "Traceback" not in ingested.output
    (tmp_path / "ws").mkdir(exist_ok=True)
    (tmp_path / "ws" / "chunks.jsonl").write_text("")
    chat = runner.invoke(app, ["chat", "-w", str(tmp_path / "ws")])
    assert chat.exit_code == 1 and "no-such-model" in chat.output
