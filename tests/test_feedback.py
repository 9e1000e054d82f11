"""Chat feedback: whole-line appends under concurrency and crashes, summary and export.

The log is exercised through the same `JsonlLog` the chat server uses, from real
processes (20 writers at once, and a writer killed with SIGKILL mid-append); the export
reads a real ingested workspace, so chunk ids and content hashes are the product's own.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_app import ingest
from rag_app.cli import app
from rag_app.feedback import FeedbackRecorder, JsonlLog, LogFormatError, hit_record
from rag_app.feedback.export import export, query_id, summarise
from rag_app.types import Hit

DOCS = {
    "wheel.md": "# Main wheel change\n\nTorque the axle nut to 410 Nm, back off, then 160 Nm.\n",
    "brake.md": "# Brake unit change\n\nBleed the brake at the bleed valve until no air shows.\n",
    "duty.md": "# Duty time limits\n\nNo technician works more than 13 hours in a shift.\n",
}


def _writer(path: str, worker: int, count: int) -> None:
    log = JsonlLog(Path(path))
    for i in range(count):
        # bigger than PIPE_BUF and a page, so an interleaving writer would show
        log.append({"worker": worker, "i": i, "pad": "x" * 9000})


def test_twenty_concurrent_writers_lose_and_tear_nothing(tmp_path):
    path = tmp_path / "feedback.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 25)) for w in range(20)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    records = [json.loads(line) for line in lines[:-1]]  # every line parses
    assert sorted((r["worker"], r["i"]) for r in records) == [
        (w, i) for w in range(20) for i in range(25)
    ]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


KILLED_WRITER = """
import sys
from pathlib import Path
from rag_app.feedback import JsonlLog
log = JsonlLog(Path(sys.argv[1]))
i = 0
while True:
    log.append({"i": i, "pad": "y" * 300_000})
    i += 1
"""


def test_sigkill_mid_append_leaves_a_readable_file(tmp_path):
    path = tmp_path / "feedback.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            not path.exists() or path.stat().st_size < 3_000_000
        ):
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    result = JsonlLog(path).read()
    assert len(result.records) >= 5
    assert [r["i"] for r in result.records] == list(range(len(result.records)))
    # the next append starts on a line of its own whatever the kill left behind
    JsonlLog(path).append({"i": "after"})
    again = JsonlLog(path).read()
    assert not again.torn_tail
    assert again.records[-1] == {"i": "after"}
    assert path.read_bytes().endswith(b"\n")


def test_torn_tail_is_skipped_then_cut_and_middle_damage_is_an_error(tmp_path, caplog):
    path = tmp_path / "feedback.jsonl"
    log = JsonlLog(path)
    log.append({"n": 1})
    with path.open("ab") as handle:
        handle.write(b'{"n": 2, "tor')  # a crash mid-append
    result = log.read()
    assert [r["n"] for r in result.records] == [1]
    assert result.torn_tail
    assert "torn last line" in caplog.text
    log.append({"n": 3})
    assert path.read_text().splitlines() == ['{"n": 1}', '{"n": 3}']

    path.write_text('{"n": 1}\nnot json\n{"n": 3}\n')
    with pytest.raises(LogFormatError, match=r"feedback.jsonl:2: malformed record"):
        log.read()
    lenient = log.read(strict=False)
    assert [r["n"] for r in lenient.records] == [1, 3]
    assert lenient.skipped and ":2:" in lenient.skipped[0]


# --- summary and export on a real workspace ------------------------------------------------
@pytest.fixture
def workspace(settings_factory, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text)
    settings = settings_factory(corpus=corpus, llm={"backend": "none"})
    ingest.run(settings, progress=False)
    return settings


def _chunks(settings):
    from rag_app.chunkstore import load_chunks

    return {c.doc_id: c for c in load_chunks(settings.chunks_path, settings.manifest_path)}


def _hit(chunk, position=1):
    return hit_record(Hit(chunk, ranks={"dense": position}), position)


def _mark(recorder, mark, query, chunk, user=None, session="s1", key="baseline"):
    recorder.mark_source(
        mark,
        turn="t",
        query=query,
        retriever={"key": key, "mode": "hybrid", "dim": None, "rerank": False},
        hit=_hit(chunk),
        user=user,
        session=session,
    )


def test_export_votes_remaps_and_counts(workspace, tmp_path):
    chunks = _chunks(workspace)
    rec = FeedbackRecorder(workspace)
    q = "what torque for the axle nut?"
    _mark(rec, "relevant", q, chunks["wheel.md"], user="ana")
    _mark(rec, "not_relevant", q, chunks["brake.md"], user="ana")
    _mark(rec, "relevant", "What torque for the  AXLE nut?", chunks["wheel.md"], user="bo")
    # ana changes her mind about brake.md: one voter, latest mark wins
    _mark(rec, "relevant", q, chunks["brake.md"], user="ana")
    _mark(rec, "not_relevant", q, chunks["brake.md"], user="ana")
    # a tie between two voters on duty.md: no label
    _mark(rec, "relevant", q, chunks["duty.md"], user="ana")
    _mark(rec, "not_relevant", q, chunks["duty.md"], user="bo")
    # a mark on a passage whose text changed since: dropped
    stale = dict(_hit(chunks["duty.md"]), content_hash="0" * 16, chunk_id="gone")
    rec.mark_source("relevant", turn="t", query="hours?", retriever={"key": "baseline"}, hit=stale)
    rec.mark_answer("up", turn="t", query=q, retriever={"key": "run-1"}, answer="410 Nm", hits=[])

    out = tmp_path / "export"
    report = export(workspace, out)
    assert (report.queries, report.relevant, report.not_relevant) == (1, 1, 1)
    assert (report.conflicts, report.dropped_stale, report.superseded) == (1, 1, 2)
    assert report.answer_marks == 1
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert queries == [{"_id": query_id(q), "text": q}]
    qrels = (out / "qrels" / "train.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore"
    assert sorted(qrels[1:]) == sorted(
        [
            f"{query_id(q)}\t{chunks['wheel.md'].id}\t1",
            f"{query_id(q)}\t{chunks['brake.md'].id}\t0",
        ]
    )
    assert json.loads((out / "export.json").read_text())["conflicts"] == 1

    summary = summarise(workspace)
    assert summary["marks"] == 9
    assert summary["by_retriever"]["run-1"] == {"up": 1}
    assert summary["by_user"]["ana"]["relevant"] == 3
    assert summary["passages_with_several_voters"] == 2  # wheel (agree) and duty (tie)
    assert summary["agreement"] == 0.5

    with pytest.raises(FileExistsError, match="exists"):
        export(workspace, out)
    assert export(workspace, out, force=True).queries == 1


def test_export_matches_a_moved_passage_by_content(workspace, tmp_path):
    chunks = _chunks(workspace)
    rec = FeedbackRecorder(workspace)
    _mark(rec, "relevant", "bleed the brake", chunks["brake.md"])
    corpus = Path(workspace.corpus)
    (corpus / "brake.md").rename(corpus / "brake-unit.md")  # new doc id -> new chunk id
    ingest.run(workspace, progress=False)
    moved = _chunks(workspace)["brake-unit.md"]
    assert moved.id != chunks["brake.md"].id
    report = export(workspace, tmp_path / "out")
    assert report.remapped == 1
    assert moved.id in (tmp_path / "out" / "qrels" / "train.tsv").read_text()


def test_cli_feedback_errors_name_the_problem(workspace, tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    ws = ["-w", str(workspace.workspace)]
    result = runner.invoke(app, ["feedback", "export", str(tmp_path / "x"), *ws])
    assert result.exit_code == 1
    assert "no feedback yet" in result.output

    chunks = _chunks(workspace)
    _mark(FeedbackRecorder(workspace), "relevant", "axle nut", chunks["wheel.md"])
    (tmp_path / "taken").mkdir()
    result = runner.invoke(app, ["feedback", "export", str(tmp_path / "taken"), *ws])
    assert result.exit_code == 1 and "--force" in result.output

    result = runner.invoke(app, ["feedback", *ws])
    assert result.exit_code == 0, result.output
    assert "1 marks" in result.output

    with (workspace.feedback_dir / "feedback.jsonl").open("a") as handle:
        handle.write("{broken\n")
        handle.write('{"type": "mark"}\n')
    result = runner.invoke(app, ["feedback", *ws])
    assert result.exit_code == 1
    assert "feedback.jsonl:2: malformed record" in result.output
    result = runner.invoke(app, ["feedback", "--skip-invalid", *ws])
    assert result.exit_code == 0 and "skipped" in result.output


def test_logs_obey_the_settings(settings_factory):
    off = settings_factory(feedback={"enabled": False, "log_queries": False})
    rec = FeedbackRecorder(off)
    assert rec.log_query(turn="t", query="q", retriever={}, hits=[]) is False
    with pytest.raises(PermissionError):
        rec.mark_source("relevant", turn="t", query="q", retriever={}, hit={})
    assert not off.feedback_dir.exists()
    with pytest.raises(ValueError, match="one of"):
        FeedbackRecorder(settings_factory()).mark_source(
            "maybe", turn="t", query="q", retriever={}, hit={}
        )


def test_finetune_names_file_and_line_of_a_label_that_matches_no_chunk(workspace, tmp_path):
    from typer.testing import CliRunner

    chunks = _chunks(workspace)
    _mark(FeedbackRecorder(workspace), "relevant", "axle nut torque", chunks["wheel.md"])
    out = tmp_path / "export"
    export(workspace, out)
    qrels = out / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + f"{query_id('axle nut torque')}\tno-such-chunk\t1\n")
    result = CliRunner().invoke(
        app,
        ["finetune", "-w", str(workspace.workspace), "--train-data", str(out), "--no-synthetic"],
    )
    assert result.exit_code == 1
    assert f"{qrels}: unknown corpus id 'no-such-chunk'" in result.output


def test_real_questions_become_the_prompts_examples_but_never_guard_ones(workspace, tmp_path):
    from finetune.prompts import load_prompts
    from finetune.split import Passages, load_labelled, split_real
    from finetune.synth import real_examples

    chunks = _chunks(workspace)
    csv = tmp_path / "real.csv"
    rows = [
        ("what torque for the axle nut", "wheel.md"),
        ("how do I bleed the brake", "brake.md"),
        ("max hours in one shift", "duty.md"),
        ("second wheel question", "wheel.md"),
    ]
    csv.write_text(
        "query,passage_id\n" + "".join(f"{q},{chunks[d].id}\n" for q, d in rows),
        encoding="utf-8",
    )
    settings = workspace.model_copy(
        update={"finetune": workspace.finetune.model_copy(update={"train_data": [csv]})}
    )
    picked = real_examples(settings, list(chunks.values()))
    all_chunks = list(chunks.values())
    pairs = load_labelled(csv, Passages.from_chunks(all_chunks), all_chunks)
    train, guard = split_real(pairs, guard_fraction=0.3, seed=settings.seed)
    assert guard  # some document is held out for the guard
    guard_queries = {p.query for p in guard}
    assert picked and not {q for *_, q in picked} & guard_queries
    assert len({title for title, *_ in picked}) == len(picked)  # one a document
    assert len(picked) == len({p.doc_id for p in train})

    prompts = load_prompts(None)
    mine = prompts.with_examples("question", picked)
    assert mine.version != prompts.version  # synth rows of the fixed prompt are not reused
    text = " ".join(m["content"] for m in mine.messages("question", "Some passage."))
    assert picked[0][2] in text and "How is asthma treated?" not in text
    assert real_examples(workspace, all_chunks) == []  # no real pairs: the fixed examples
    off = settings.model_copy(
        update={"synth": settings.synth.model_copy(update={"real_examples": 0})}
    )
    assert real_examples(off, all_chunks) == []
