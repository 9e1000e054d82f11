"""Train a cross-encoder reranker for the corpus (`rag-app finetune --reranker`).

No pretrained reranker ships offline (MODELS.md), so this one starts from the bundled
MiniLM encoder with a fresh one-logit classification head and learns it here: binary
cross-entropy on (query, positive) = 1 and (query, mined hard negative) = 0, with the
positive class weighted by the number of negatives. The same train / validation split as
the embedder is used.

Validation reranks the base dense retriever's top 20 for each held-out query
(`CrossEncoderRerankingEvaluator`, positives *not* forced into the list) and compares with
the base order, so "beats no reranking" is measured the way the app uses it; the run is
"recommended" only when it does. Saved as a run with ``"kind": "reranker"`` that
`rag_app.rerank` loads (``models.reranker = "auto"``).

Example:
    >>> report = train_reranker(settings, finetune.data.prepare(settings))
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections import defaultdict

from finetune.data import TrainData, data_fingerprint, prepare
from finetune.publish import (
    TrainReport,
    check_name,
    existing_run,
    new_run_name,
    publish,
    report,
    run_record,
    throughput,
)
from finetune.trainer_args import seen_examples, shared_training_args, validation_seconds
from rag_app.config import Settings
from rag_app.models import resolve_device, resolve_embedder
from rag_app.runs import RunKind

log = logging.getLogger(__name__)

CANDIDATES = 20


def _rerank_samples(data: TrainData, base_model, top: int = CANDIDATES) -> list[dict]:
    """Validation samples: each query with its positives and the base model's top `top`."""
    import numpy as np

    positives: dict[str, set[str]] = defaultdict(set)
    for pair in data.val:
        positives[pair.query].add(pair.passage_id)
    ids = data.passages.ids()
    texts = [data.passages.text[i] for i in ids]
    pvecs = base_model.encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    queries = list(positives)
    qvecs = base_model.encode(
        queries, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    scores = qvecs @ pvecs.T
    samples = []
    for row, query in enumerate(queries):
        order = np.argsort(-scores[row], kind="stable")[: min(top, len(ids))]
        samples.append(
            {
                "query": query,
                "positive": [data.passages.text[p] for p in sorted(positives[query])],
                "documents": [texts[i] for i in order],
            }
        )
    return samples


def train_reranker(
    settings: Settings, data: TrainData, *, name: str | None = None, progress: bool = True
) -> TrainReport:
    """Train, validate against the base order, and publish a reranker run."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import set_seed

    from finetune import negatives

    began = time.perf_counter()
    cfg = settings.finetune
    set_seed(settings.seed)
    resolved = resolve_embedder(settings.models.embedder)
    device = resolve_device(settings.models.device)
    name = check_name(name or new_run_name(resolved.spec, "reranker"))
    if (settings.models_dir / name).exists():
        raise FileExistsError(f"a run named {name!r} already exists in {settings.models_dir}")

    from rag_app.embedder import Embedder

    base = Embedder.load(
        settings.models.embedder, device=device, trust_remote_code=settings.models.trust_remote_code
    )
    rows, mining = negatives.mine(
        data.train,
        data.passages,
        base.model,
        settings,
        num_negatives=cfg.reranker.negatives,
        progress=progress,
    )
    anchors, docs, labels = [], [], []
    for row in rows:
        anchors.append(row["anchor"])
        docs.append(row["positive"])
        labels.append(1.0)
        for key in sorted(k for k in row if k.startswith("negative_")):
            anchors.append(row["anchor"])
            docs.append(row[key])
            labels.append(0.0)
    order = list(range(len(anchors)))
    random.Random(settings.seed).shuffle(order)
    train_dataset = Dataset.from_dict(
        {
            "query": [anchors[i] for i in order],
            "passage": [docs[i] for i in order],
            "label": [labels[i] for i in order],
        }
    )
    samples = _rerank_samples(data, base.model)
    evaluator = CrossEncoderRerankingEvaluator(
        samples=samples,
        at_k=10,
        always_rerank_positives=False,
        name="val",
        batch_size=cfg.reranker.batch_size,
        write_csv=False,
    )

    # A fresh one-logit head on the bundled encoder: trained below, never used untrained.
    model = CrossEncoder(
        resolved.location,
        num_labels=1,
        max_length=cfg.reranker.max_length,
        device=device,
        trust_remote_code=settings.models.trust_remote_code,
    )
    loss = BinaryCrossEntropyLoss(
        model, pos_weight=torch.tensor(float(cfg.reranker.negatives), device=model.device)
    )
    args = CrossEncoderTrainingArguments(
        num_train_epochs=cfg.reranker.epochs,
        per_device_train_batch_size=cfg.reranker.batch_size,
        learning_rate=cfg.reranker.learning_rate,
        **shared_training_args(
            settings,
            name=name,
            device=device,
            progress=progress,
            train_size=len(train_dataset),
            batch_size=cfg.reranker.batch_size,
            best_metric="eval_val_ndcg@10",
        ),
    )
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=loss, evaluator=evaluator
    )
    train_began = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - train_began
    eval_seconds = validation_seconds(trainer)
    model = trainer.model
    raw = evaluator(model)
    metrics = {
        "val_rerank_mrr@10_base": float(raw["val_base_mrr@10"]),
        "val_rerank_mrr@10": float(raw["val_mrr@10"]),
        "val_rerank_ndcg@10_base": float(raw["val_base_ndcg@10"]),
        "val_rerank_ndcg@10": float(raw["val_ndcg@10"]),
    }
    recommended = metrics["val_rerank_ndcg@10"] > metrics["val_rerank_ndcg@10_base"]
    record = run_record(
        settings,
        data,
        name=name,
        kind=RunKind.RERANKER,
        base=base,
        resolved=resolved,
        fingerprint=data_fingerprint(settings, data, "reranker"),
        device=device,
        metrics=metrics,
        recommended=recommended,
        verified=False,
        validation=f"synthetic (reranking the base dense top {CANDIDATES})",
        train_pairs=len(rows),
        beats_no_rerank=recommended,
        labelled_eval=None,
        max_length=cfg.reranker.max_length,
        data={
            "train_queries": len(rows),
            "train_examples": len(train_dataset),
            "val_queries": len(samples),
            **{f"negatives {k}": v for k, v in mining.as_dict().items()},
        },
        steps=int(result.global_step),
        train_seconds=round(train_seconds, 1),
        eval_seconds=round(eval_seconds, 1),
        pairs_per_s=round(
            throughput(seen_examples(result, cfg.reranker.batch_size), train_seconds, eval_seconds),
            2,
        ),
    )
    path = publish(
        settings,
        record,
        data,
        lambda folder: model.save_pretrained(str(folder), safe_serialization=True),
        workspace_split=False,
    )
    if args.output_dir:  # the trainer's checkpoints; the run folder holds the model
        shutil.rmtree(args.output_dir, ignore_errors=True)
    return report(record, path, began=began, batch_size=cfg.reranker.batch_size)


def run(
    settings: Settings,
    *,
    name: str | None = None,
    progress: bool = True,
    force: bool = False,
    data: TrainData | None = None,
) -> TrainReport:
    """Prepare the data (unless given) and train the reranker; reuses an identical run."""
    data = data if data is not None else prepare(settings)
    if not force and name is None:
        found = existing_run(
            settings, data_fingerprint(settings, data, "reranker"), RunKind.RERANKER
        )
        if found is not None:
            return found
    return train_reranker(settings, data, name=name, progress=progress)
