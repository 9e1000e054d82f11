"""What every bench script sets up before importing a model library.

Offline model loading (the bundled models; a hub look-up only waits for a network this
project does not assume), no telemetry from Chroma or Gradio, quiet tokenizers, and the
repository on `sys.path` so the scripts run as `python bench/<script>.py` without an
install step. Import it before torch, transformers, chromadb or gradio.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _key, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("ANONYMIZED_TELEMETRY", "False"),
    ("GRADIO_ANALYTICS_ENABLED", "False"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "medquad-small"
RESULTS = REPO / "bench" / "results"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q`th percentile (0-100) of `values`: a value that was measured."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_results(stem_name: str, record: dict, md: list[str]) -> Path:
    """`bench/results/<stem_name>.json` (the record) and `.md` (the table lines); prints the
    table. Returns the stem."""
    import json

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / stem_name
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    stem.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return stem
