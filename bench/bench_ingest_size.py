"""Ingest time against file size: is it linear? (issue 30)

    .venv/bin/python bench/bench_ingest_size.py                 # 1, 5 and 20 MB, 1,000 files

One plain-text file of each size (paragraphs of varied sentences, as a long manual), and a
folder of 1,000 small files with the same total as the 1 MB file, each ingested into a
fresh workspace with the default settings; prints seconds, MB/s and the ratio of each time
to linear scaling from the 1 MB run.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from _common import write_results

WORDS = [
    "torque",
    "wrench",
    "axle",
    "nut",
    "seating",
    "final",
    "locking",
    "bolt",
    "inspection",
    "interval",
    "hours",
    "bracket",
    "sealant",
    "shelf",
    "life",
    "months",
    "brake",
    "accumulator",
    "precharge",
    "nitrogen",
    "bar",
    "pressure",
    "gauge",
    "propeller",
    "de-ice",
    "brush",
    "block",
    "slip",
    "ring",
    "wear",
    "limit",
    "technician",
    "certifying",
    "staff",
    "release",
]


def text_of(n_bytes: int, seed: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24)))
        sentence = sentence.capitalize() + f" {rng.randint(1, 999)} Nm."
        if rng.random() < 0.15:
            sentence += "\n\n"
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)


def ingest_seconds(folder: Path, work: Path) -> tuple[float, int]:
    from rag_app import ingest
    from rag_app.config import load_settings

    settings = load_settings(workspace=work, corpus=folder, ingest={"max_file_mb": 64})
    t0 = time.perf_counter()
    report = ingest.run(settings, progress=False)
    return time.perf_counter() - t0, report.chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,20", help="File sizes in MB.")
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm = root / "warm-up"  # loads the tokenizer once, outside the timed runs
        warm.mkdir()
        (warm / "a.txt").write_text(text_of(2_000, seed=0))
        ingest_seconds(warm, root / "ws-warm")
        for mb in [float(x) for x in args.sizes.split(",")]:
            folder = root / f"one-{mb:g}mb"
            folder.mkdir()
            (folder / "manual.txt").write_text(text_of(int(mb * 2**20), seed=1))
            seconds, chunks = ingest_seconds(folder, root / f"ws-{mb:g}")
            rows.append((f"one {mb:g} MB file", mb, seconds, chunks))
            print(rows[-1], flush=True)
        folder = root / "many"
        folder.mkdir()
        for i in range(args.files):
            (folder / f"note-{i:04d}.txt").write_text(text_of(2**20 // args.files, seed=i))
        seconds, chunks = ingest_seconds(folder, root / "ws-many")
        rows.append((f"{args.files:,} files, 1 MB in all", 1.0, seconds, chunks))
    base = rows[0][2] / rows[0][1]
    md = [
        f"Ingest time against size ({time.strftime('%Y-%m-%d')}, `python bench/bench_ingest_size.py`)",
        "",
        "| input | MB | seconds | chunks | MB/s | time / linear from the first row |",
        "|---|---|---|---|---|---|",
    ]
    for name, mb, seconds, chunks in rows:
        md.append(
            f"| {name} | {mb:g} | {seconds:.1f} | {chunks:,} | {mb / seconds:.2f} | "
            f"{seconds / (base * mb):.2f} |"
        )
    write_results("ingest-size", {"rows": rows}, md)


if __name__ == "__main__":
    main()
