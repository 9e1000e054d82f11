"""Embedder backends: what ONNX Runtime and int8 gain in speed, and cost in nDCG@10.

Issue 7 asks what an ONNX or int8 backend gains at equal nDCG@10. sentence-transformers'
own ONNX / OpenVINO backends need `optimum`, whose ONNX exporter pins transformers < 4.58
(this project runs 5.x), so this script builds the same thing by hand, outside the product:

- `torch-fp32`: the product path, `Embedder.encode_documents` / `encode_queries`;
- `torch-int8`: torch's `quantize_dynamic` on every `nn.Linear` (no new dependency);
- `onnx-fp32`: the MiniLM transformer exported with `torch.onnx.export`, run by ONNX Runtime
  (installed with chromadb), with the model's own tokenizer, mean pooling and
  normalisation in numpy;
- `onnx-int8`: that graph after ONNX Runtime's dynamic int8 quantisation (per channel).
The ONNX variants need `pip install onnx onnxscript` (not project dependencies); without
them they are skipped.

All four run through `Embedder` (the ONNX ones as its model), so they encode in the
product's length-sorted batches. In one process, on the
same texts:
- speed: `--n` sampled passages per timed pass, backends in rotating order, `--repeats`
  passes; medians and the ratio to torch-fp32;
- quality: the whole corpus and the split's questions, exact cosine top 10, nDCG@10 and
  Recall@10, and each backend minus torch-fp32 with a 95% paired-bootstrap interval.

Usage:
    .venv/bin/python bench/bench_backends.py [--dataset ../shared/datasets/medquad-small]
        [--split test] [--n 256] [--repeats 3] [--threads N] [--backends torch-fp32,...]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import DEFAULT_DATASET

BACKENDS = ("torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def rankings(q, docs, ids: list[str], k: int = 10) -> list[list[str]]:
    """Exact cosine top k (vectors are unit length), as lists of document ids."""
    import numpy as np

    scores = q @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[i] for i in row] for row in top]


class OnnxEncoder:
    """A sentence-transformers MiniLM (transformer + mean pooling + normalise) on ONNX Runtime,
    with the `encode` that `rag_app.embedder.Embedder` calls."""

    def __init__(self, st_model, path: Path, threads: int) -> None:
        import onnxruntime as ort

        self.tokenizer = st_model.tokenizer
        self.max_length = st_model.max_seq_length
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    @staticmethod
    def export(st_model, folder: Path, int8: bool) -> Path:
        """The transformer as ONNX (dynamic batch and length); int8-quantised if asked."""
        import torch

        class LastHidden(torch.nn.Module):
            def __init__(self, model) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                ).last_hidden_state

        fp32 = folder / "model.onnx"
        if not fp32.exists():
            sample = st_model.tokenizer(["a b c", "d"], padding=True, return_tensors="pt")
            torch.onnx.export(
                LastHidden(st_model[0].auto_model).eval(),
                tuple(sample[k] for k in INPUTS),
                str(fp32),
                input_names=list(INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes={k: {0: "batch", 1: "seq"} for k in (*INPUTS, "last_hidden_state")},
                opset_version=17,
                dynamo=False,
            )
        if not int8:
            return fp32
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantised = folder / "model-int8.onnx"
        quantize_dynamic(str(fp32), str(quantised), per_channel=True, weight_type=QuantType.QInt8)
        return quantised

    def _encode(self, texts: list[str]):
        import numpy as np

        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feed = {k: batch[k].astype(np.int64) for k in self.inputs}
        hidden = self.session.run(None, feed)[0]
        mask = batch["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def encode(self, sentences, *, batch_size: int = 32, **_: object):
        """The `SentenceTransformer.encode` subset `Embedder` calls: unit vectors, numpy."""
        import numpy as np

        parts = [
            self._encode(list(sentences[i : i + batch_size]))
            for i in range(0, len(sentences), batch_size)
        ]
        return np.concatenate(parts).astype(np.float32)


def build(names: list[str], fp32, folder: Path, threads: int) -> dict:
    """The encoders to compare, by name (ONNX ones only where onnx is installed)."""
    import torch

    from rag_app.embedder import Embedder

    out = {}
    have_onnx = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
    for name in names:
        if name == "torch-fp32":
            out[name] = fp32
        elif name == "torch-int8":
            model = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(fp32.model), {torch.nn.Linear}, dtype=torch.qint8
            )
            out[name] = Embedder(model, name=name, spec=fp32.spec, fingerprint=name, dim=fp32.dim)
        elif not have_onnx:
            print(f"{name}: skipped (pip install onnx onnxscript)", file=sys.stderr)
        else:
            path = OnnxEncoder.export(fp32.model, folder, int8=name == "onnx-int8")
            onnx = OnnxEncoder(fp32.model, path, threads)
            # wrapped like the torch models, so every backend runs the product's batching
            out[name] = Embedder(onnx, name=name, spec=fp32.spec, fingerprint=name, dim=fp32.dim)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--n", type=int, default=256, help="passages in each timed pass")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from rag_app.embedder import Embedder
    from rag_app.ir.beir import load_beir
    from rag_app.ir.metrics import ndcg_at_k, recall_at_k
    from rag_app.ir.stats import paired_bootstrap

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; known: {', '.join(BACKENDS)}")
    if "torch-fp32" not in names:
        names.insert(0, "torch-fp32")  # the baseline every ratio is against
    data = load_beir(args.dataset, split=args.split, on_duplicate_query="disambiguate")
    ids = list(data.corpus)
    texts = [f"{d.get('title', '')}\n{d['text']}".strip() for d in data.corpus.values()]
    qids = list(data.queries)
    questions = [data.queries[q] for q in qids]

    fp32 = Embedder.load(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        encoders = build(names, fp32, Path(tmp), threads)

        # speed: the same sampled passages, the starting backend rotating each pass
        sample = random.Random(args.seed).sample(texts, min(args.n, len(texts)))
        for enc in encoders.values():  # warm-up
            enc.encode_documents(sample[: args.batch_size], batch_size=args.batch_size)
        times: dict[str, list[float]] = {name: [] for name in encoders}
        order = list(encoders.items())
        for repeat in range(args.repeats):
            shift = repeat % len(order)
            for name, enc in order[shift:] + order[:shift]:
                began = time.perf_counter()
                enc.encode_documents(sample, batch_size=args.batch_size)
                times[name].append(time.perf_counter() - began)
        medians = {name: statistics.median(v) for name, v in times.items()}

        # quality: whole corpus, every question of the split
        per_query: dict[str, list[float]] = {}
        recall: dict[str, float] = {}
        vectors = {}
        for name, enc in encoders.items():
            began = time.perf_counter()
            docs = enc.encode_documents(texts, batch_size=args.batch_size)
            queries = enc.encode_queries(questions)
            vectors[name] = docs
            seconds = time.perf_counter() - began
            print(f"{name}: corpus and questions encoded in {seconds:.0f} s", file=sys.stderr)
            pairs = list(zip(qids, rankings(queries, docs, ids), strict=True))
            per_query[name] = [ndcg_at_k(data.qrels[q], r, 10) for q, r in pairs]
            recall[name] = float(np.mean([recall_at_k(data.qrels[q], r, 10) for q, r in pairs]))

    date = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {threads} threads"
    print(f"{date}, {machine}; {args.dataset.name}: {len(ids)} passages, {len(qids)} questions")
    print(f"timed: {len(sample)} passages, batch {args.batch_size}, median of {args.repeats}")
    print(
        "| backend | passages/s | speed vs torch-fp32 | nDCG@10 | Recall@10 "
        "| nDCG@10 vs torch-fp32 [95% CI] | cosine to torch-fp32 (median / min) |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    base = per_query["torch-fp32"]

    def gap(name: str) -> str:
        if name == "torch-fp32":
            return "–"
        result = paired_bootstrap(base, per_query[name])
        low, high = result.ci_low * 100, result.ci_high * 100
        return f"{result.mean_diff * 100:+.2f} [{low:+.2f}, {high:+.2f}]"

    for name in encoders:
        rate = len(sample) / medians[name]
        ratio = medians["torch-fp32"] / medians[name]
        cos = np.sum(vectors["torch-fp32"] * vectors[name], axis=1)
        print(
            f"| {name} | {rate:.1f} | {ratio:.2f}x | {np.mean(per_query[name]):.4f} "
            f"| {recall[name]:.4f} | {gap(name)} | {np.median(cos):.4f} / {cos.min():.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
