"""Arguments and measurements shared by the Hugging Face trainers (full embedder, reranker)."""

from __future__ import annotations

import logging
from typing import Any

from rag_app.config import Settings

log = logging.getLogger(__name__)


def shared_training_args(
    settings: Settings,
    *,
    name: str,
    device: str,
    progress: bool,
    train_size: int,
    batch_size: int,
    best_metric: str,
) -> dict[str, Any]:
    """Trainer arguments the embedder and the reranker share: schedule, checkpoints
    (evaluated and saved once an epoch unless `eval_steps` says otherwise, best one kept),
    seeding and device precision."""
    import torch

    cfg = settings.finetune
    steps_per_epoch = max(1, -(-train_size // batch_size))
    eval_steps = cfg.eval_steps or steps_per_epoch
    on_gpu = device.startswith("cuda")
    return {
        "output_dir": str(settings.workspace / "tmp" / f"{name}-checkpoints"),
        "max_steps": cfg.max_steps,
        "weight_decay": cfg.weight_decay,
        **warmup_args(cfg.warmup_ratio),
        "eval_strategy": "steps",
        "eval_steps": eval_steps,
        "save_strategy": "steps",
        "save_steps": eval_steps,
        "save_total_limit": 2,
        "load_best_model_at_end": True,
        "metric_for_best_model": best_metric,
        "greater_is_better": True,
        "logging_steps": max(1, min(50, eval_steps)),
        "seed": settings.seed,
        "data_seed": settings.seed,
        "report_to": "none",
        "use_cpu": device == "cpu",
        "fp16": on_gpu and not torch.cuda.is_bf16_supported(),
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
    }


def validation_seconds(trainer) -> float:
    """Seconds the trainer spent in its evaluator during `train()` (from its log history).

    The per-epoch validation that picks the best checkpoint embeds every passage, which on a
    CPU can cost as much as the training steps; throughput is reported without it.
    """
    return float(sum(h.get("eval_runtime", 0.0) for h in trainer.state.log_history))


def warmup_args(ratio: float) -> dict[str, float]:
    """Transformers 5 takes a warmup ratio as a float `warmup_steps`; 4.x as `warmup_ratio`."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": ratio}
    return {"warmup_ratio": ratio}  # pragma: no cover


def seen_examples(result, batch_size: int) -> int:
    """Training examples processed (steps x batch size)."""
    return int(result.global_step) * batch_size
