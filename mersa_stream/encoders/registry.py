"""Audio encoder kinds: what a kind means, in one place for the recognizer and the trainer.

A kind says how its spec is resolved to local weights, how the encoder is built, and its default
spec. Every encoder offers `dim` and `encode(audios) -> list[(frames, dim)]` on 16 kHz mono
float32 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol, Sequence

import numpy as np

from ..errors import ConfigError, ModelError
from ..resolve import DEFAULT_ASR, ResolvedModel, resolve_asr, resolve_file, resolve_transformers


class AudioEncoder(Protocol):
    dim: int

    def encode(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class AudioKind:
    name: str
    default_spec: str
    resolve: Callable[[str], ResolvedModel | None]
    build: Callable[[ResolvedModel | None, str], AudioEncoder]
    # The ASR pass's own encoder states: the recognizer takes them from the transcription instead
    # of running a second encoder.
    in_asr_pass: bool = False


class AsrStatesEncoder:
    """The last Whisper layer on padded 30 s windows, as CTranslate2 computes it for the ASR (the
    original default's features; the trainer's view of what the ASR pass gives the recognizer)."""

    def __init__(self, resolved: ResolvedModel, device: str = "cpu",
                 compute_type: str = "int8", packed_gap: float | None = None):
        from ..asr import WhisperAsr
        from ..config import AsrConfig

        self.asr = WhisperAsr(resolved, AsrConfig(), device=device, compute_type=compute_type)
        self.dim = self.asr.dim
        self.packed_gap = packed_gap

    def encode(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.packed_gap is None:
            return self.asr.encoder_states(audios)
        return self.asr.encoder_states_packed(audios, self.packed_gap)


def _whisper_layers(resolved: ResolvedModel | None, device: str) -> AudioEncoder:
    from .whisper_layers import WhisperLayerEncoder

    return WhisperLayerEncoder(resolved.path, device=device)


def _wav2vec2(resolved: ResolvedModel | None, device: str) -> AudioEncoder:
    from .wav2vec2 import Wav2Vec2Encoder

    return Wav2Vec2Encoder(resolved.path, device=device)


def _vggish(resolved: ResolvedModel | None, device: str) -> AudioEncoder:
    from .vggish import VGGishEncoder

    return VGGishEncoder(resolved.path if resolved else None, device=device)


def _resolve_vggish(spec: str) -> ResolvedModel | None:
    # no weights file = random weights: only the trainer's tests may want that (see `require`)
    return resolve_file(spec, "audio encoder", "--audio-encoder") if spec else None


AUDIO_KINDS: dict[str, AudioKind] = {k.name: k for k in (
    AudioKind("whisper", DEFAULT_ASR, resolve_asr,
              lambda resolved, device: AsrStatesEncoder(resolved, device), in_asr_pass=True),
    AudioKind("whisper-layers", DEFAULT_ASR, resolve_asr, _whisper_layers),
    AudioKind("wav2vec2", "facebook/wav2vec2-base",
              lambda spec: resolve_transformers(spec, "audio encoder", "--audio-encoder"),
              _wav2vec2),
    AudioKind("vggish", "", _resolve_vggish, _vggish),
)}


def audio_kind(name: str) -> AudioKind:
    if name not in AUDIO_KINDS:
        raise ConfigError(f"audio encoder {name!r}: one of {', '.join(AUDIO_KINDS)}")
    return AUDIO_KINDS[name]


def resolve_audio(name: str, spec: str, require: bool = True) -> ResolvedModel | None:
    """The kind's weights for `spec` (empty = the kind's default); with `require`, a kind whose
    weights cannot be found is a ModelError instead of random weights."""
    kind = audio_kind(name)
    resolved = kind.resolve(spec or kind.default_spec)
    if resolved is None:
        if require:
            raise ModelError(f"audio encoder {name}: needs its weights file; pass its path with "
                             f"--audio-encoder")
        return None
    return replace(resolved, role="audio encoder")
