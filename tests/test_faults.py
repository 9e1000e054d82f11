"""Fault injection across stages: `rag-app finetune` killed with SIGKILL mid-training.

The run is the real CLI in a subprocess on a tiny workspace (the beir_tiny passages as
chunks, structural pseudo-queries only, MiniLM, a few steps of batch 8). It is killed once
the trainer has written a checkpoint (so model-looking weights exist on disk, in the
workspace's tmp folder); nothing may then appear in the model registry, and a re-run must
train and publish a complete run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES

TINY = FIXTURES / "beir_tiny"
RAG_APP = Path(sys.executable).with_name("rag-app")


def _config(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    config = tmp_path / "faults.toml"
    config.write_text(
        f"""
workspace = {json.dumps(str(ws))}
corpus = {json.dumps(str(TINY))}

[synth]
llm_queries_per_chunk = 0
structural_queries_per_chunk = 2
min_chunk_words = 3
consistency_top_k = 0

[finetune]
method = "full"
batch_size = 8
max_seq_length = 64
eval_steps = 1
learning_rate = 5e-5
warmup_ratio = 0.0
negatives_range_min = 1
reranker = false
""",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def tiny_workspace(tmp_path, monkeypatch):
    from finetune import synth
    from rag_app import chunkstore
    from rag_app.config import load_settings

    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path)
    # load_settings(path) exports RAG_APP_CONFIG for good; scope it to this test instead.
    monkeypatch.setenv("RAG_APP_CONFIG", str(config))
    settings = load_settings()
    settings.workspace.mkdir(parents=True)
    chunks = []
    from rag_app.types import Chunk

    for line in (TINY / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        chunks.append(
            Chunk(id=row["_id"], doc_id=row["title"].lower(), text=row["text"], title=row["title"])
        )
    chunkstore.save(settings.chunks_path, settings.manifest_path, chunks, {})
    assert synth.run(settings, progress=False).filter.kept >= 20
    return settings, config


def _finetune(config: Path, max_steps: int, **kwargs):
    # One torch thread: on a small shared machine two spinning threads are several times
    # slower per step than one.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["RAG_APP_FINETUNE__MAX_STEPS"] = str(max_steps)
    cmd = [str(RAG_APP), "finetune", "-c", str(config)]
    return subprocess.Popen(cmd, env=env, text=True, **kwargs)


@pytest.mark.slow
def test_killed_finetune_publishes_nothing_and_a_rerun_completes(tiny_workspace):
    from rag_app.embedder import Embedder
    from rag_app.runs import list_runs

    settings, config = tiny_workspace
    tmp = settings.workspace / "tmp"
    # Many steps, a checkpoint after every one: the kill lands while training goes on.
    child = _finetune(config, 500, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if any(tmp.glob("*-checkpoints/checkpoint-*/model.safetensors")):
                break
            if child.poll() is not None:
                pytest.fail(f"finetune exited before a checkpoint: {child.stderr.read()[-2000:]}")
            time.sleep(0.1)
        else:
            pytest.fail("finetune wrote no checkpoint in time")
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert any(tmp.glob("*-checkpoints/checkpoint-*")), "killed after training finished"

    # Half-trained weights exist only under tmp/: the registry (which the UI, `index
    # --model latest` and `models` read) sees no run, and models/ holds no folder.
    assert list_runs(settings) == []
    models = settings.models_dir
    assert not models.exists() or not any(models.iterdir())

    again = _finetune(config, 1, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err[-2000:]
    runs = list_runs(settings)
    assert len(runs) == 1, out
    run = runs[0]
    assert run.kind == "embedder" and run.record.steps == 1
    assert (run.path / "run.json").is_file() and (run.path / "model.safetensors").is_file()
    assert str(run.path) in out
    assert not any(tmp.glob(f"{run.name}*")), "the completed run left staging behind"
    tuned = Embedder.load(str(run.path), device="cpu")
    assert tuned.encode_queries(["asthma inhaler"]).shape == (1, 384)


@pytest.mark.parametrize("key", ["/etc", "../models/x", "sentence-transformers/all-mpnet-base-v2"])
def test_chat_api_refuses_a_retriever_that_is_not_a_listed_run(settings_factory, key):
    """`/search` and `/ask` take the retriever key from the client: only the baseline and
    the registry's runs are accepted, so a client cannot make the server load a model from
    an arbitrary path or hub id."""
    from rag_app.chat import ChatService, RetrieverChoice

    service = ChatService(settings_factory())
    with pytest.raises(KeyError, match="unknown retriever"):
        service.search("axle nut torque", RetrieverChoice.of(key, "bm25", rerank=False))
    with pytest.raises(KeyError, match="unknown retriever"):
        service.dims(key)
    assert not service._retrievers
