"""Checkpoints: a folder with model.safetensors + config.json + README.md (the model card).

Optional `text_encoder.safetensors` holds the tensors of the text encoder that differ from its
base model (the self-align stage); everything else comes from the encoder spec. Nothing is ever
unpickled: a pickle or torch file is refused with a message.

A checkpoint is named by its folder, or by a built-in name: `default` is the model shipped inside
this package (mersa_stream/models/default/), found from any working directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelError
from .fusion_config import FusionConfig

if TYPE_CHECKING:  # torch is imported when weights are loaded or saved, not to read a header
    import torch

    from .fusion import FusionModel

FORMAT = "mersa-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TEXT_WEIGHTS = "text_encoder.safetensors"
CONFIG = "config.json"
CARD = "README.md"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")

# built-in checkpoints: name -> folder, package data of mersa_stream (pyproject.toml)
BUILTIN_FOLDER = Path(__file__).resolve().parent / "models"
BUILTIN = ("default",)
# where the default model lived in the repository before it moved into the package: the string
# scripts and habits still pass, so it keeps naming the built-in one unless such a folder exists
LEGACY_DEFAULT = Path("models/default")


def checkpoint_folder(spec: str | Path) -> Path:
    """The folder a checkpoint spec names: a built-in name (`default`), else a path; the old
    `models/default` is the built-in `default` unless that folder exists where it is looked up.
    A built-in name wins over a folder of that name (pass such a folder by its absolute path), so
    that what `default` means never depends on the working directory."""
    text = str(spec)
    if text in BUILTIN:
        return BUILTIN_FOLDER / text
    path = Path(text).expanduser()
    if path == LEGACY_DEFAULT and not path.exists():
        return BUILTIN_FOLDER / "default"
    return path


@dataclass(frozen=True)
class EncoderSpec:
    kind: str  # text: "bert"; audio: "whisper" | "wav2vec2" | "vggish"
    spec: str  # what `resolve` takes: hub name, folder, embedded name, weights file
    dim: int
    options: dict = field(default_factory=dict)


@dataclass
class Checkpoint:
    model: FusionModel
    labels: list[str]
    text_encoder: EncoderSpec
    audio_encoder: EncoderSpec
    model_id: str
    text_encoder_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    def config_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "labels": list(self.labels),
            "fusion": self.model.config.to_dict(),
            "text_encoder": _spec_dict(self.text_encoder),
            "audio_encoder": _spec_dict(self.audio_encoder),
            "metadata": self.metadata,
        }


def _spec_dict(spec: EncoderSpec) -> dict:
    return {"kind": spec.kind, "spec": spec.spec, "dim": spec.dim, "options": spec.options}


def save_checkpoint(checkpoint: Checkpoint, folder: str | Path, card: str) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in checkpoint.model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT})
    if checkpoint.text_encoder_weights:
        save_file({k: v.detach().contiguous().cpu() for k, v in
                   checkpoint.text_encoder_weights.items()}, str(folder / TEXT_WEIGHTS))
    elif (folder / TEXT_WEIGHTS).exists():
        (folder / TEXT_WEIGHTS).unlink()
    (folder / CONFIG).write_text(json.dumps(checkpoint.config_dict(), indent=2) + "\n")
    (folder / CARD).write_text(card)
    return folder


def _refuse_pickle(path: Path) -> None:
    raise ModelError(f"{path}: is a pickle/torch file; only safetensors checkpoints "
                     f"(folder with {WEIGHTS} + {CONFIG}) are loaded, never unpickled")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's header says (config.json), read without its weights or torch: enough
    to resolve its encoders and to list it (`mersa models`)."""

    path: Path
    model_id: str
    labels: list[str]
    fusion: FusionConfig
    text_encoder: EncoderSpec
    audio_encoder: EncoderSpec
    metadata: dict
    has_text_encoder_weights: bool  # text_encoder.safetensors: self-aligned text encoder tensors


def read_checkpoint(folder: str | Path) -> CheckpointInfo:
    """The checkpoint's header, checked as `load_checkpoint` checks it (the same errors), but for
    the weights themselves: their presence is checked, not their content. `folder`: a folder or a
    built-in name (`checkpoint_folder`)."""
    folder = checkpoint_folder(folder)
    if folder.is_file():
        if folder.suffix in PICKLE_SUFFIXES or folder.read_bytes()[:1] == b"\x80":
            _refuse_pickle(folder)
        raise ModelError(f"{folder}: a checkpoint is a folder with {WEIGHTS} and {CONFIG}")
    if not folder.is_dir():
        raise ModelError(f"{folder}: checkpoint folder not found (the built-in model is "
                         f"'default'; or train one with `mersa train` and pass --checkpoint PATH)")
    if not (folder / WEIGHTS).is_file():
        pickles = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            _refuse_pickle(pickles[0])
        raise ModelError(f"{folder}: no {WEIGHTS} in the checkpoint folder")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{folder}: no {CONFIG} in the checkpoint folder") from None
    except (ValueError, OSError) as exc:
        raise ModelError(f"{folder / CONFIG}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelError(f"{folder / CONFIG}: not a mersa checkpoint config")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{folder}: checkpoint format version {config.get('format_version')!r} "
                         f"is not supported (this mersa reads version {FORMAT_VERSION})")
    try:
        labels = [str(x) for x in config["labels"]]
        fusion = FusionConfig(**config["fusion"])
        text = EncoderSpec(**config["text_encoder"])
        audio = EncoderSpec(**config["audio_encoder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{folder / CONFIG}: incomplete or invalid checkpoint config ({exc})") \
            from None
    _check_labels(folder, labels, fusion)
    return CheckpointInfo(path=folder, model_id=str(config.get("model_id", folder.name)),
                          labels=labels, fusion=fusion, text_encoder=text, audio_encoder=audio,
                          metadata=config.get("metadata", {}),
                          has_text_encoder_weights=(folder / TEXT_WEIGHTS).exists())


def _check_labels(folder: Path, labels: list[str], fusion: FusionConfig) -> None:
    if len(labels) != fusion.num_classes or len(set(labels)) != len(labels):
        raise ModelError(f"{folder}: labels {labels} do not match the model's "
                         f"{fusion.num_classes} classes")


def load_checkpoint(folder: str | Path, info: CheckpointInfo | None = None) -> Checkpoint:
    """The whole checkpoint, weights included; `info`: its header, when already read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .fusion import FusionModel

    info = info or read_checkpoint(folder)
    folder, labels, fusion = info.path, info.labels, info.fusion
    try:
        model = FusionModel.build(fusion)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{folder / CONFIG}: incomplete or invalid checkpoint config ({exc})") \
            from None
    _check_labels(folder, labels, fusion)
    try:
        state = load_file(str(folder / WEIGHTS))
        text_weights = load_file(str(folder / TEXT_WEIGHTS)) if (folder / TEXT_WEIGHTS).exists() \
            else {}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{folder}: weights file is damaged ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip() or "shape mismatch"
        raise ModelError(f"{folder}: weights do not match the config ({first})") from None
    model.eval()
    return Checkpoint(model=model, labels=labels, text_encoder=info.text_encoder,
                      audio_encoder=info.audio_encoder, model_id=info.model_id,
                      text_encoder_weights=text_weights, metadata=info.metadata, path=folder)
