"""The Embedder: bundled model, fingerprints, length-sorted batching, fine-tuned dirs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rag_app.embedder import Embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load("all-MiniLM-L6-v2", device="cpu")


def test_bundled_model_identity(embedder):
    assert embedder.dim == 384
    assert embedder.name == "all-MiniLM-L6-v2"
    assert re.fullmatch(r"all-MiniLM-L6-v2-[0-9a-f]{12}", embedder.fingerprint)
    assert Embedder.load("all-MiniLM-L6-v2", device="cpu") is embedder  # cached


def test_documents_keep_their_order_after_length_sorting(embedder):
    texts = [
        "short",
        "a considerably longer passage about hydraulic pumps and their overhaul " * 3,
        "medium length text on brakes",
        "",
        "x " * 50,
    ]
    got = embedder.encode_documents(texts, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([embedder.encode_documents([t])[0] for t in texts])
    np.testing.assert_allclose(got, one_by_one, atol=1e-5)
    assert embedder.encode_documents([]).shape == (0, 384)


def test_queries_are_normalised_and_match_their_passage(embedder):
    queries = embedder.encode_queries(["how tight are the pump bolts?"])
    docs = embedder.encode_documents(
        ["Torque the pump mounting bolts to 25 Nm.", "Tyre pressure is checked cold."]
    )
    assert queries.shape == (1, 384) and queries.dtype == np.float32
    sims = docs @ queries[0]
    assert sims[0] > sims[1]


def test_finetuned_directory_gets_its_own_fingerprint(embedder, tmp_path):
    import torch

    run = tmp_path / "models" / "run-1"
    embedder.model.save(str(run))
    (run / "run.json").write_text(json.dumps({"run_id": "run-1", "kind": "embedder"}))
    same_weights = Embedder.load(str(run), device="cpu")
    assert same_weights.name == "run-1"
    assert re.fullmatch(r"run-1-[0-9a-f]{12}", same_weights.fingerprint)

    with torch.no_grad():  # "train" it: any change of weights changes the fingerprint
        next(same_weights.model.parameters()).mul_(1.01)
    other = tmp_path / "models" / "run-2"
    same_weights.model.save(str(other))
    changed = Embedder.load(str(other), device="cpu")
    assert changed.name == "run-2"
    assert changed.fingerprint.split("-")[-1] != same_weights.fingerprint.split("-")[-1]
