"""Encoder features on disk, computed once per (dataset, file, encoder, settings).

Each utterance's features are one `.npy` file (float16, (frames, dim)) under
`<cache>/<encoder digest>/<ab>/<item digest>.npy`:
- the encoder digest covers the encoder kind, spec, a fingerprint of its weights (file sizes and
  mtimes of the model folder, plus a hash of self-aligned text-encoder tensors) and the settings
  (compute type, max tokens ...): a different or changed encoder never reads old features;
- the item digest covers the dataset, the audio file's path + mtime + size (audio) or the text
  itself and, with a conversation context, the context it is read after (text): a changed file
  is re-encoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import TrainConfig
from ..errors import ConfigError, InputError
from .data import Record

DEFAULT_CACHE = Path(os.environ.get("MERSA_CACHE", Path.home() / ".cache" / "mersa" / "features"))


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def folder_fingerprint(path: Path | None) -> list:
    """Names, sizes and mtimes of a model folder's (or file's) weight files."""
    if path is None:
        return []
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                  and p.suffix in (".bin", ".safetensors", ".json",
                                                                   ".onnx", ".npz", ".pth"))
    out = []
    for p in files:
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def tensors_fingerprint(state: dict[str, torch.Tensor] | None) -> str:
    if not state:
        return ""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    computed: int = 0
    seconds: float = 0.0

    def line(self, what: str) -> str:
        return (f"{what}: {self.hits} cached, {self.computed} computed, {self.seconds:.1f} s")


@dataclass
class FeatureCache:
    root: Path = DEFAULT_CACHE
    stats: dict[str, CacheStats] = field(default_factory=dict)

    def folder(self, encoder_key: dict) -> Path:
        d = self.root / digest(encoder_key)[:24]
        d.mkdir(parents=True, exist_ok=True)
        info = d / "encoder.json"
        if not info.exists():
            info.write_text(json.dumps(encoder_key, indent=2, default=str) + "\n")
        return d

    @staticmethod
    def item_key(record: Record, modality: str, context: str = "") -> dict:
        if modality == "audio":
            st = Path(record.audio).stat()
            return {"dataset": record.dataset, "path": str(Path(record.audio).resolve()),
                    "mtime_ns": st.st_mtime_ns, "size": st.st_size}
        # no context: the key of features cached before contexts existed
        return {"dataset": record.dataset, "text": record.text} | \
            ({"context": context} if context else {})

    def get_or_compute(self, records: Sequence[Record], modality: str, encoder_key: dict,
                       compute: Callable[[list[Record]], list[np.ndarray]], batch_size: int = 16,
                       progress: Callable | None = None,
                       context_of: Callable[[Record], str] | None = None) -> list[np.ndarray]:
        """Features of each record (None-audio records get an empty (0, dim) array);
        `context_of`: the text context each record is read after (part of its key)."""
        start = time.perf_counter()
        folder = self.folder(encoder_key)
        stats = self.stats.setdefault(modality, CacheStats())
        out: list[np.ndarray | None] = [None] * len(records)
        todo: list[tuple[int, Path]] = []
        for i, r in enumerate(records):
            if modality == "audio" and r.audio is None:
                continue
            name = digest(self.item_key(r, modality, context_of(r) if context_of else ""))
            path = folder / name[:2] / f"{name}.npy"
            if path.is_file():
                try:
                    out[i] = np.load(path, allow_pickle=False)
                    stats.hits += 1
                    continue
                except (ValueError, OSError):
                    pass  # a damaged entry is recomputed
            todo.append((i, path))
        iterator = range(0, len(todo), batch_size)
        if progress is not None and todo:
            iterator = progress(iterator, total=-(-len(todo) // batch_size),
                                desc=f"encoding {modality}")
        for b in iterator:
            chunk = todo[b:b + batch_size]
            feats = compute([records[i] for i, _ in chunk])
            for (i, path), f in zip(chunk, feats):
                f = np.asarray(f, np.float32)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
                np.save(tmp, f.astype(np.float16))
                os.replace(tmp, path)
                out[i] = f.astype(np.float16)
                stats.computed += 1
        dim = int(encoder_key.get("dim", 0))
        result = [np.zeros((0, dim), np.float16) if f is None else f for f in out]
        stats.seconds += time.perf_counter() - start
        return result


# ---------------------------------------------------------------------------------- encoders

class AudioFeaturizer:
    """One audio encoder (a kind of `mersa_stream.encoders.registry`) + its cache key.

    `packed_gap`: the features `analyze --pack` gives (kind "whisper" only). `augment` + `view`:
    the features of one augmented copy of each clip (view k of a clip is always the same copy).
    `speech_only`: only the speech the runtime segmenter finds in each clip (after `augment`).
    """

    def __init__(self, kind: str, spec: str, compute_type: str = "int8",
                 packed_gap: float | None = None, augment=None, view: int = 0,
                 speech_only: bool = False):
        from ..encoders.registry import AsrStatesEncoder, audio_kind, resolve_audio

        self.kind, self.spec = kind, spec or audio_kind(kind).default_spec
        resolved = resolve_audio(kind, self.spec, require=False)
        settings: dict = {}
        if kind == "whisper":
            self.encoder = AsrStatesEncoder(resolved, compute_type=compute_type,
                                            packed_gap=packed_gap)
            settings = {"compute_type": compute_type}
            if packed_gap is not None:
                settings["packed_gap"] = packed_gap
        else:
            if packed_gap is not None:
                raise ConfigError(f"packed features: only for the whisper kind, not {kind}")
            self.encoder = audio_kind(kind).build(resolved, "cpu")
        self.augment, self.view, self.speech_only = augment, view, speech_only
        if augment is not None:
            settings["augment"] = {"recipe": augment.describe(), "view": view}
        if speech_only:
            settings["speech_only"] = True
        self.dim = int(self.encoder.dim)
        self.key = {"modality": "audio", "kind": kind, "spec": self.spec, "dim": self.dim,
                    "weights": folder_fingerprint(resolved.path if resolved else None),
                    "settings": settings}

    def __call__(self, records: list[Record]) -> list[np.ndarray]:
        from ..decode import load_audio

        audios = []
        for r in records:
            try:
                audio = load_audio(r.audio)
            except InputError as exc:
                raise InputError(f"{r.id}: {exc.message}") from None
            if self.augment is not None:
                audio = self.augment(audio, seed=int(digest([r.id, self.view])[:8], 16))
            if self.speech_only:  # the channel first, then the segmenter, as at run time
                audio = _speech_or_whole(audio)
            audios.append(audio)
        return self.encoder.encode(audios)


def _speech_or_whole(audio: np.ndarray) -> np.ndarray:
    from ..segmenter import speech_of

    speech = speech_of(audio)
    return audio if speech is None else speech  # a clip too quiet to segment stays whole


@dataclass(frozen=True)
class TextContext:
    """How the text branch reads a conversation (the [train] text_context* settings)."""
    turns: int = 0  # earlier utterances (0 = none)
    tokens: int = TrainConfig.text_context_tokens  # the most tokens of them
    speakers: bool = True  # turns marked with their speaker relative to the current one
    mode: str = "pair"  # how the encoder reads it (encoders/text.py: pair | concat)

    def of(self, record: Record) -> str:
        from ..context import format_context

        if not self.turns:
            return ""
        return format_context(record.turns, record.speaker if self.speakers else "", self.turns)

    @classmethod
    def of_config(cls, train) -> TextContext:
        """From the [train] settings (TrainConfig)."""
        return cls(train.text_context, train.text_context_tokens, train.text_context_speakers,
                   train.text_context_mode)

    @classmethod
    def of_options(cls, options: dict) -> TextContext:
        """From a checkpoint's text-encoder options (`settings()`); none there: no context."""
        return cls(int(options.get("context", 0)),
                   int(options.get("context_tokens", TrainConfig.text_context_tokens)),
                   bool(options.get("context_speakers", True)),
                   str(options.get("context_mode", "pair")))

    def settings(self) -> dict:
        """Cache-key and checkpoint settings; none without context (older keys stay valid)."""
        return {"context": self.turns, "context_tokens": self.tokens,
                "context_speakers": self.speakers, "context_mode": self.mode} if self.turns else {}

    def encoder_options(self) -> dict:
        """What `TextEncoder` takes of it (no context: the plain encoder)."""
        return {"context_tokens": self.tokens,
                "context_mode": self.mode if self.turns else "pair"}


NO_CONTEXT = TextContext()


class TextFeaturizer:
    """Token states of a BERT-family encoder (optionally with self-aligned weights), each text
    read after its conversation context where `context` asks for one."""

    def __init__(self, spec: str, state_dict: dict[str, torch.Tensor] | None = None,
                 max_tokens: int = 64, encoder=None, context: TextContext = NO_CONTEXT):
        from ..encoders.text import TextEncoder
        from ..resolve import resolve_transformers

        resolved = resolve_transformers(spec, "text encoder", "--text-encoder")
        self.encoder = encoder or TextEncoder(resolved.path, max_tokens, state_dict=state_dict,
                                              **context.encoder_options())
        self.spec = spec
        self.context = context
        self.dim = self.encoder.dim
        self.key = {"modality": "text", "kind": "bert", "spec": spec, "dim": self.dim,
                    "weights": folder_fingerprint(resolved.path),
                    "aligned": tensors_fingerprint(state_dict),
                    "settings": {"max_tokens": max_tokens} | context.settings()}

    def __call__(self, records: list[Record]) -> list[np.ndarray]:
        contexts = [self.context.of(r) for r in records] if self.context.turns else None
        states, mask = self.encoder.encode([r.text for r in records], contexts)
        return [s[m].float().numpy() for s, m in zip(states, mask)]


def encode_records(records: Sequence[Record], featurizer, modality: str, cache: FeatureCache,
                   batch_size: int = 16, progress=None) -> list[np.ndarray]:
    if modality == "text":
        context_of = featurizer.context.of if featurizer.context.turns else None
        # sort by length so a batch pads little; results come back in the records' order
        order = sorted(range(len(records)), key=lambda i: len(records[i].text) + (
            len(context_of(records[i])) if context_of else 0))
        feats = cache.get_or_compute([records[i] for i in order], modality, featurizer.key,
                                     featurizer, batch_size, progress, context_of)
        out: list = [None] * len(records)
        for i, f in zip(order, feats):
            out[i] = f
        return out
    return cache.get_or_compute(records, modality, featurizer.key, featurizer, batch_size, progress)
