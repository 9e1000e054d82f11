"""Synthetic query generation: real SmolLM2 (embedded backend), resume after SIGKILL, query_filters.

The LLM tests keep generation tiny (a few tokens, a handful of chunks); the dequantised
model is cached once per session and shared by every test workspace.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune import query_filters, structural, synth
from rag_app import chunkstore
from rag_app.types import Chunk

REPO = Path(__file__).resolve().parents[1]

DOCS = {
    "pumps/hyd-pump.md": (
        "Hydraulic Pump Overhaul",
        [
            (
                "Interval",
                "The engine-driven hydraulic pump EDP-3 is overhauled every 6,000 flight hours or 8 years, whichever comes first.",
            ),
            (
                "Removal",
                "Depressurise the green system, cap the pressure and case drain lines, and remove the four mounting nuts of pump EDP-3.",
            ),
        ],
    ),
    "tyres/pressure.md": (
        "Tyre Pressure Checks",
        [
            (
                "Nose tyres",
                "Nose tyres are inflated with dry nitrogen to 5.5 bar cold, with the aircraft loaded on its wheels.",
            ),
            (
                "Daily check",
                "Tyre pressure is checked daily before the first flight with a calibrated gauge; a loss above 10 percent is reported.",
            ),
        ],
    ),
    "stores/shelf-life.md": (
        "Shelf-Life Items in Stores",
        [
            (
                "Sealants",
                "Two-part sealant PR-1422 has a shelf life of 9 months at or below 27 degrees; expired kits are quarantined.",
            ),
            (
                "Labels",
                "Every shelf-life item carries a green label with the batch number and the expiry date written by stores.",
            ),
        ],
    ),
    "tools/torque.md": (
        "Torque Wrench Calibration",
        [
            (
                "Interval",
                "Click-type torque wrenches are calibrated every 12 months or after 5,000 clicks, whichever comes first.",
            ),
            (
                "Dropped tools",
                "A dropped torque wrench is withdrawn from service and sent to the calibration laboratory before further use.",
            ),
        ],
    ),
}


def make_chunks() -> list[Chunk]:
    chunks = []
    for doc_id, (title, sections) in DOCS.items():
        for i, (heading, text) in enumerate(sections):
            chunks.append(
                Chunk(
                    id=f"{doc_id.split('/')[0]}-{i}",
                    doc_id=doc_id,
                    text=f"## {heading}\n\n{text}",
                    title=title,
                    heading_path=f"{title} > {heading}",
                )
            )
    return chunks


@pytest.fixture(scope="session")
def llm_cache(tmp_path_factory):
    """One dequantised-model cache for every test workspace of the session."""
    return tmp_path_factory.mktemp("synth-llm-cache")


@pytest.fixture
def workspace(tmp_path, llm_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ws = tmp_path / "workspace"
    ws.mkdir()
    chunks = make_chunks()
    chunkstore.save(ws / "chunks.jsonl", ws / "ingest-manifest.json", chunks, {"source": "test"})
    (ws / "cache").mkdir()
    (ws / "cache" / "llm").symlink_to(llm_cache, target_is_directory=True)
    return ws


def settings_for(ws: Path, **synth_overrides):
    from rag_app.config import load_settings

    base = {
        "styles": ["keyword", "question"],
        "llm_queries_per_chunk": 2,
        "structural_queries_per_chunk": 0,
        "max_new_tokens": 8,
        "batch_size": 1,
        "consistency_top_k": 0,
        "min_chunk_words": 5,
    }
    base.update(synth_overrides)
    return load_settings(workspace=ws, synth=base, llm={"backend": "embedded"})


def test_the_llm_is_asked_about_a_seeded_sample_of_chunks_by_default(tmp_path):
    """150 chunks by default (what the cross-corpus protocol measured); 0 asks every one."""
    from rag_app.config import load_settings

    chunks = [
        Chunk(
            id=f"c{i}",
            doc_id=f"d{i // 4}",
            text=f"Passage {i} says enough words to be worth a question about topic {i}.",
            title=f"Doc {i // 4}",
        )
        for i in range(400)
    ]
    settings = load_settings(workspace=tmp_path)
    assert settings.synth.max_chunks == 150
    picked, skipped = synth.select_chunks(chunks, settings)
    again, _ = synth.select_chunks(chunks, settings)
    assert skipped == 0 and len(picked) == 150
    assert [c.id for c in picked] == [c.id for c in again]  # seeded: a resumed run asks the same
    other, _ = synth.select_chunks(chunks, load_settings(workspace=tmp_path, seed=7))
    assert {c.id for c in other} != {c.id for c in picked}
    every, _ = synth.select_chunks(
        chunks, load_settings(workspace=tmp_path, synth={"max_chunks": 0})
    )
    assert len(every) == 400
    report = synth.SynthReport(
        chunks=150,
        chunks_skipped=3,
        chunks_generated=150,
        llm_queries=150,
        seconds=1.0,
        llm_seconds=1.0,
        output=tmp_path / "queries.jsonl",
        llm_name="embedded:test",
        prompt_version="v",
        chunks_eligible=400,
    )
    assert "synth: 400 chunks (LLM asked about a sample of 150 of 400" in report.summary()
    no_llm = dataclasses.replace(report, llm_name=None, chunks_generated=0, llm_queries=0)
    assert "synth: 400 chunks (3 skipped" in no_llm.summary()  # structural only: no sample


def test_read_raw_repairs_a_truncated_last_line(tmp_path):
    path = tmp_path / "raw.jsonl"
    good = [{"key": f"c{i}:v", "chunk_id": f"c{i}", "replies": []} for i in range(3)]
    synth.append_rows(path, good)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"key": "c3:v", "chunk_id": "c3", "repl')  # killed mid-write
    rows = synth.read_raw(path)
    assert sorted(rows) == ["c0:v", "c1:v", "c2:v"]
    assert path.read_text(encoding="utf-8").endswith("}\n")  # the partial line is gone
    synth.append_rows(path, [{"key": "c3:v", "chunk_id": "c3", "replies": []}])
    assert sorted(synth.read_raw(path)) == ["c0:v", "c1:v", "c2:v", "c3:v"]


def test_contrast_terms_pick_what_sets_a_chunk_apart_from_its_siblings():
    """Title words and words every sibling shares are left out; codes stay whole."""
    chunks = make_chunks()
    stats = structural.term_statistics(chunks)
    interval, removal = chunks[0], chunks[1]  # the two hydraulic-pump chunks
    assert structural.sibling_key(interval) == structural.sibling_key(removal)
    for chunk in (interval, removal):
        terms = structural.contrast_terms(chunk, stats, 3)
        assert len(terms) == 3
        lowered = {t.lower() for t in terms}
        assert not lowered & {"hydraulic", "pump", "overhaul", "edp-3"}  # title / shared
    for chunk, sibling in ((interval, removal), (removal, interval)):
        for term in structural.contrast_terms(chunk, stats, 3):  # in this chunk, not the other
            assert term in chunk.text.lower() and term not in sibling.text.lower()
    sealants = next(c for c in chunks if "PR-1422" in c.text)
    assert structural.contrast_terms(sealants, stats, 2)[0] == "PR-1422"
    queries = {q.source: q.query for q in structural.structural_queries(interval, stats, 2)}
    assert queries["structure:heading"] == "Interval Hydraulic Pump Overhaul"
    assert queries["structure:terms"].startswith("Hydraulic Pump Overhaul ")


def test_structural_queries_only_no_llm(workspace):
    """With no LLM queries asked, structure alone yields filtered, consistent pairs."""
    settings = settings_for(
        workspace, llm_queries_per_chunk=0, structural_queries_per_chunk=2, consistency_top_k=2
    )
    report = synth.run(settings, progress=False)
    kept = synth.load_queries(settings)
    assert report.filter.generated == 16
    assert report.filter.kept == len(kept) > 0
    dropped = sum(report.filter.dropped.values())
    assert report.filter.generated == report.filter.kept + dropped
    assert all(c.source.startswith("structure:") and 1 <= c.rank <= 2 for c in kept)
    queries = [c.query for c in kept]
    assert any("PR-1422" in q for q in queries)  # a code only one chunk has, kept whole
    saved = json.loads((settings.synth_dir / "report.json").read_text())
    assert saved["kept"] == len(kept)


_CHILD = """
import sys
from rag_app.config import load_settings
from finetune import synth
settings = load_settings(workspace=sys.argv[1], llm={"backend": "embedded"}, synth={
    "styles": ["keyword", "question"], "llm_queries_per_chunk": 2,
    "structural_queries_per_chunk": 0, "max_new_tokens": 8,
    "batch_size": 1, "consistency_top_k": 0, "min_chunk_words": 5})
synth.run(settings, progress=False)
"""


@pytest.mark.slow
def test_resume_after_sigkill_real_llm(workspace):
    """Kill a synth run mid-way, damage its last line, re-run: every chunk exactly once."""
    raw = workspace / "synth" / synth.RAW_FILE
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(workspace)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if raw.is_file() and raw.read_bytes().count(b"\n") >= 2:
                break
            if child.poll() is not None:
                pytest.fail(f"synth child exited early: {child.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("synth child wrote nothing in time")
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    before = synth.read_raw(raw)
    assert 2 <= len(before) < 8, "killed too late to test resuming"
    with raw.open("a", encoding="utf-8") as handle:
        handle.write('{"key": "tyres-0:x", "replies": [{"style": "ke')  # a torn last write

    from rag_app.llm.factory import build_llm

    # The batch size is not part of a row's key: resume the rest in one batch.
    settings = settings_for(
        workspace, structural_queries_per_chunk=1, consistency_top_k=3, batch_size=8
    )
    llm = build_llm(settings)
    report = synth.run(settings, llm=llm, progress=False)

    lines = raw.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]  # every line parses: the torn one is gone
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 8  # no duplicate, no missing chunk
    assert {r["chunk_id"] for r in rows} == {c.id for c in make_chunks()}
    assert report.chunks_generated == 8 - len(before)  # finished chunks were not redone
    assert report.llm_queries == 2 * report.chunks_generated
    assert all(len(r["replies"]) == 2 for r in rows)
    assert {rep["style"] for r in rows for rep in r["replies"]} == {"keyword", "question"}
    # Filtering accounts for every candidate, and survivors passed the round trip.
    f = report.filter
    assert f.generated == 8 * 2 + 8
    assert f.generated == f.kept + sum(f.dropped.values())
    kept = synth.load_queries(settings)
    assert len(kept) == f.kept
    assert all(c.rank is not None and c.rank <= 3 for c in kept)
    assert all(
        query_filters.parse_query(c.query) == c.query for c in kept if c.source.startswith("llm")
    )

    # A third run has nothing left to ask the LLM.
    again = synth.run(settings, llm=llm, progress=False)
    assert again.chunks_generated == 0 and again.llm_queries == 0
    assert len(raw.read_text(encoding="utf-8").splitlines()) == 8


def test_synth_cli_structural_only(workspace):
    from typer.testing import CliRunner

    from rag_app.cli import app

    result = CliRunner().invoke(
        app,
        ["synth", "-w", str(workspace), "--per-chunk", "0", "--structural", "1", "--llm", "none"],
    )
    assert result.exit_code == 0, result.output
    assert "synth: 8 chunks" in result.output and "kept" in result.output
    assert (workspace / "synth" / "queries.jsonl").is_file()
    missing = CliRunner().invoke(app, ["synth", "-w", str(workspace / "nothing"), "--llm", "none"])
    assert missing.exit_code == 1 and "rag-app ingest" in missing.output


class _Scripted:
    """A generator that answers every prompt with its own name (no model to load)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prompts = 0

    def generate_many(self, messages, **kwargs):
        self.prompts += len(messages)
        return [f"what does the {self.name} passage say about torque?" for _ in messages]


def test_another_generator_regenerates_and_the_same_one_reuses(workspace):
    """The raw log is keyed by the generator and its sampling settings (issue 29): after a
    run with the bundled model, a stronger one is asked again instead of getting the small
    model's questions back; the same generator again reuses every row."""
    settings = settings_for(workspace, consistency_top_k=0)
    small, big, big_again = _Scripted("small"), _Scripted("big"), _Scripted("big")
    first = synth.run(settings, llm=small, progress=False)
    assert small.prompts > 0 and first.chunks_generated == first.chunks
    second = synth.run(settings, llm=big, progress=False)
    assert big.prompts == small.prompts and second.chunks_generated == second.chunks
    third = synth.run(settings, llm=big_again, progress=False)
    assert big_again.prompts == 0 and third.chunks_generated == 0
    assert f"replies for {third.chunks} chunks reused from big" in third.summary()
    hotter = settings_for(workspace, consistency_top_k=0, temperature=0.9)
    assert synth.run(hotter, llm=_Scripted("big"), progress=False).chunks_generated > 0
