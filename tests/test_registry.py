"""One definition of "the newest usable run" (issue 20): every "auto" and "latest" agrees.

`models.reranker = "auto"` skipped rerankers that lost to no reranking while
`finetune.negatives.cross_encoder = "auto"` took them, and the eval could pick an
embedder run folder without a model in it. All of them now ask `rag_app.runs.latest`.
"""

from __future__ import annotations

import json

from eval.demo import _newest_embedder
from eval.leak import find_finetuned
from finetune import train
from rag_app import runs
from rag_app.rerank import find_trained_reranker


def _run(settings, name: str, kind: str, created: str, files=(), **record) -> None:
    folder = settings.models_dir / name
    folder.mkdir(parents=True)
    for file in files:
        (folder / file).write_text("{}")
    record = {"name": name, "kind": kind, "created": created, **record}
    (folder / "run.json").write_text(json.dumps(record))


def test_every_auto_and_latest_picks_the_same_usable_run(settings_factory, monkeypatch):
    settings = settings_factory(finetune={"negatives": {"cross_encoder": "auto"}})
    _run(
        settings,
        "rr-good",
        "reranker",
        "2026-12-01T00:00:00",
        ["config.json"],
        beats_no_rerank=True,
    )
    _run(
        settings,
        "rr-worse",
        "reranker",
        "2026-12-02T00:00:00",
        ["config.json"],
        beats_no_rerank=False,
    )
    _run(settings, "emb-adapter", "embedder", "2026-12-01T00:00:00", ["adapter.json"])
    _run(settings, "emb-empty", "embedder", "2026-12-02T00:00:00")  # no model files in it

    good = settings.models_dir / "rr-good"
    assert runs.latest(settings, "reranker").path == good
    assert runs.latest(settings, "reranker", usable=False).name == "rr-worse"
    assert find_trained_reranker(settings) == good  # models.reranker = "auto"
    loaded = []

    class _Fake:
        model = "cross-encoder"

    def fake_load(spec, device="cpu"):
        loaded.append(spec)
        return _Fake()

    monkeypatch.setattr("rag_app.rerank.Reranker.load", staticmethod(fake_load))
    assert train._cross_encoder(settings, "cpu") == "cross-encoder"
    assert loaded == [str(good)]  # finetune.negatives.cross_encoder = "auto"
    assert runs.latest(settings, "reranker").path == good

    adapter = settings.models_dir / "emb-adapter"
    assert find_finetuned(settings) == adapter  # the eval's fine-tuned default
    assert _newest_embedder(settings) == str(adapter)  # the demo's
    assert runs.latest(settings, "embedder").path == adapter


def test_run_json_has_one_typed_reader_and_writer(tmp_path, caplog):
    """`write_record` and `read_record` are the contract: enums come back as enums, a
    trainer's own fields survive, and a folder whose run.json is not a run is skipped with
    the reason (issue 29)."""
    from finetune.publish import write_record

    record = runs.RunRecord(
        kind="embedder", name="a1", method="adapter", adapter_kind="linear", best_epoch=3
    )
    (tmp_path / "a1").mkdir()
    write_record(tmp_path / "a1", record)
    read = runs.read_record(tmp_path / "a1")
    assert read.kind is runs.RunKind.EMBEDDER and read.method is runs.Method.ADAPTER
    assert read.run_id == "a1" and read.created  # filled on writing
    assert read.model_extra == {"best_epoch": 3}
    assert read.label == "embedder (linear query adapter)"
    assert read.verdict is runs.Verdict.NOT_RECOMMENDED

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text('{"kind": "tokenizer"}')
    with caplog.at_level("WARNING"):
        assert runs.read_record(tmp_path / "bad") is None
    assert "kind" in caplog.text and "does not hold a run" in caplog.text
    assert runs.read_record(tmp_path / "missing") is None


def test_one_verdict_wording_everywhere():
    """The CLI, the chat's labels and the model card say the same thing for the same run."""
    from finetune import model_card

    cases = {
        (True, True): ("recommended", "**Recommended**"),
        (True, False): ("unverified (synthetic validation only)", "**Unverified**"),
        (False, True): ("not recommended (no gain on the labelled set)", "on the labelled set"),
        (False, False): ("not recommended (no gain on validation)", "base model on validation"),
    }
    for (recommended, verified), (line, card) in cases.items():
        record = runs.RunRecord(kind="embedder", recommended=recommended, verified=verified)
        assert record.verdict_text.startswith(line)
        assert card in model_card.render(record)
