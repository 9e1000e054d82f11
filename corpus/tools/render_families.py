"""Render the templated document families of the corpus.

Each family is one YAML file in ``corpus/tools/sources/families/`` holding an ``output`` path
pattern, a Markdown ``template`` and a list of ``variants``. Every ``{{name}}`` in the
template (and in ``output``) is replaced by the variant's value; an unknown or unused name is
an error, so a typo cannot silently ship. The rendered files are committed; running this
script again must reproduce them byte for byte (``--check`` verifies that).

    .venv/bin/python corpus/tools/render_families.py          # write the files
    .venv/bin/python corpus/tools/render_families.py --check  # exit 1 if any differs
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parents[1]
FAMILIES = CORPUS / "tools" / "sources" / "families"
_FIELD = re.compile(r"\{\{\s*([a-z0-9_]+)\s*\}\}")


def _fill(text: str, values: dict[str, str], where: str, used: set[str]) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"{where}: no value for {{{{{key}}}}}")
        used.add(key)
        return str(values[key]).strip()

    return _FIELD.sub(sub, text)


def render_family(path: Path) -> dict[str, str]:
    """Relative output path -> rendered text for one family file."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    template = spec["template"]
    out: dict[str, str] = {}
    for i, variant in enumerate(spec["variants"]):
        values = {k: str(v) for k, v in variant.items()}
        where = f"{path.name} variant {i}"
        used: set[str] = set()
        rel = _fill(spec["output"], values, where, used)
        text = _fill(template, values, where, used)
        unused = set(values) - used
        if unused:
            raise KeyError(f"{where}: values never used: {sorted(unused)}")
        if rel in out:
            raise ValueError(f"{where}: duplicate output {rel}")
        out[rel] = text.rstrip("\n") + "\n"
    return out


def render_all() -> dict[str, str]:
    """Every family's documents, keyed by path relative to ``corpus/``."""
    out: dict[str, str] = {}
    for path in sorted(FAMILIES.glob("*.yaml")):
        for rel, text in render_family(path).items():
            if rel in out:
                raise ValueError(f"{path.name}: {rel} is also rendered by another family")
            out[rel] = text
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in render_all().items():
        target = CORPUS / rel
        data = text.encode("utf-8")
        if target.is_file() and target.read_bytes() == data:
            continue
        stale.append(rel)
        if not args.check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    verb = "differ" if args.check else "written"
    for rel in stale:
        print(f"{verb}: {rel}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
