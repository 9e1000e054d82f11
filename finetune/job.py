"""`rag-app finetune`'s embedder job: prepare the data, reuse or train by `finetune.method`.

Lives apart from the trainers so that neither imports the other (the adapter and the full
fine-tune both build on `finetune.data` and `finetune.publish`).
"""

from __future__ import annotations

from finetune.adapter import train_adapter
from finetune.data import data_fingerprint, prepare
from finetune.publish import TrainReport, existing_run
from finetune.train import train_embedder
from rag_app.config import Settings
from rag_app.runs import RunKind


def run(
    settings: Settings, *, name: str | None = None, progress: bool = True, force: bool = False
) -> TrainReport:
    """Prepare the data and fine-tune the embedder (`rag-app finetune`), by
    `finetune.method`: a query adapter (the default) or every weight.

    When a run with the same base model, data and settings exists it is returned instead
    (`reused=True`), unless `force`.
    """
    data = prepare(settings)
    job = "adapter" if settings.finetune.method == "adapter" else "embedder"
    if not force and name is None:
        found = existing_run(settings, data_fingerprint(settings, data, job), RunKind.EMBEDDER)
        if found is not None:
            return found
    if job == "adapter":
        return train_adapter(settings, data, name=name, progress=progress)
    return train_embedder(settings, data, name=name, progress=progress)
