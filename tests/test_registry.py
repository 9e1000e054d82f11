"""One definition of "the newest usable run" (issue 20): every "auto" and "latest" agrees.

`models.reranker = "auto"` skipped rerankers that lost to no reranking while
`finetune.negatives.cross_encoder = "auto"` took them, and the eval could pick an
embedder run folder without a model in it. All of them now ask `rag_app.registry.latest`.
"""

from __future__ import annotations

import json

from eval.demo import _newest_embedder
from eval.leak import find_finetuned
from finetune import run_store as finetune_registry
from finetune import train
from rag_app import registry
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
    assert registry.latest(settings, "reranker").path == good
    assert registry.latest(settings, "reranker", usable=False).name == "rr-worse"
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
    assert finetune_registry.resolve_run(settings, "latest", kind="reranker").path == good

    adapter = settings.models_dir / "emb-adapter"
    assert find_finetuned(settings) == adapter  # the eval's fine-tuned default
    assert _newest_embedder(settings) == str(adapter)  # the demo's
    assert finetune_registry.resolve_run(settings, "latest", kind="embedder").path == adapter
