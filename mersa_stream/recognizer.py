"""Utterances -> EmotionResults: ASR (whose encoder pass gives the Whisper audio features),
text encoder, fusion model. Built once from the config and the checkpoint it names."""

from __future__ import annotations

import time
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .asr import WhisperAsr, pick_compute_type, pick_device
from .checkpoint import Checkpoint, load_checkpoint
from .config import Config
from .encoders.text import TextEncoder
from .errors import ModelError
from .fusion import pad_sequences
from .resolve import ResolvedModel, resolve_asr, resolve_file, resolve_transformers
from .packing import Window, assign_segments
from .types import EmotionResult, Transcript, Utterance


@dataclass(frozen=True)
class ModelInventory:
    checkpoint: Checkpoint
    asr: ResolvedModel
    text_encoder: ResolvedModel
    audio_encoder: ResolvedModel | None  # None: the ASR model's own Whisper encoder


def resolve_models(config: Config) -> ModelInventory:
    checkpoint = load_checkpoint(config.models.checkpoint)
    asr = resolve_asr(config.models.asr)
    text = resolve_transformers(config.models.text_encoder or checkpoint.text_encoder.spec,
                                "text encoder", "--text-encoder")
    kind = checkpoint.audio_encoder.kind
    audio_spec = config.models.audio_encoder or checkpoint.audio_encoder.spec
    if kind == "whisper":
        audio = None
    elif kind == "wav2vec2":
        audio = resolve_transformers(audio_spec, "audio encoder", "--audio-encoder")
    elif kind == "vggish":
        audio = resolve_file(audio_spec, "audio encoder", "--audio-encoder")
    else:
        raise ModelError(f"{checkpoint.path}: unknown audio encoder kind '{kind}'")
    return ModelInventory(checkpoint, asr, text, audio)


def is_repetitive(text: str, threshold: float = 2.4) -> bool:
    """Whisper's own test for a decoding loop: the text compresses too well."""
    data = text.encode("utf-8")
    return len(data) > 40 and len(data) / len(zlib.compress(data)) > threshold


class Recognizer:
    def __init__(self, config: Config, inventory: ModelInventory | None = None):
        runtime = config.runtime
        if runtime.cpu_threads:
            torch.set_num_threads(runtime.cpu_threads)
        self.inventory = inventory or resolve_models(config)
        self.checkpoint = ckpt = self.inventory.checkpoint
        self.device = pick_device(runtime.device_type)
        self.asr = WhisperAsr(self.inventory.asr, config.asr, device=self.device,
                              compute_type=pick_compute_type(self.device, runtime.compute_type),
                              cpu_threads=runtime.cpu_threads)
        self.text_encoder = TextEncoder(self.inventory.text_encoder.path, runtime.text_max_tokens,
                                        device=self.device, state_dict=ckpt.text_encoder_weights)
        self.audio_encoder = self._audio_encoder()
        audio_dim = self.audio_encoder.dim if self.audio_encoder else self.asr.dim
        for role, have, want in (("text encoder", self.text_encoder.dim, ckpt.text_encoder.dim),
                                 ("audio encoder", audio_dim, ckpt.audio_encoder.dim)):
            if have != want:
                raise ModelError(f"{ckpt.path}: the model expects a {want}-d {role}, "
                                 f"the one configured gives {have}-d")
        self.model = ckpt.model.to(self.device).eval()
        self.labels = ckpt.labels
        self.stage_seconds: Counter[str] = Counter()  # cumulative, per stage (benchmarks, stats)
        self.model_id = ckpt.model_id

    def _audio_encoder(self):
        resolved, kind = self.inventory.audio_encoder, self.checkpoint.audio_encoder.kind
        if resolved is None:
            return None
        if kind == "wav2vec2":
            from .encoders.wav2vec2 import Wav2Vec2Encoder

            return Wav2Vec2Encoder(resolved.path, device=self.device)
        from .encoders.vggish import VGGishEncoder

        return VGGishEncoder(resolved.path, device=self.device)

    def recognize(self, utterances: Sequence[Utterance]) -> list[EmotionResult]:
        """One batch, each utterance in its own Whisper window (listen, and analyze --no-pack)."""
        if not utterances:
            return []
        start = time.perf_counter()
        asr_out = self.asr.transcribe([u.audio for u in utterances])
        asr_time = time.perf_counter() - start
        return self._classify(utterances, [o.transcript for o in asr_out],
                              [o.encoder_states for o in asr_out], asr_time)

    def recognize_windows(self, windows: Sequence[Window]) -> list[EmotionResult]:
        """One batch of packed windows (see packing.py): one encoder pass and one decoding each."""
        if not windows:
            return []
        start = time.perf_counter()
        segments, states = self.asr.decode_windows([w.audio for w in windows])
        utterances, transcripts, frames = [], [], []
        for window, window_segments, window_states in zip(windows, segments, states):
            texts = assign_segments(window_segments, window.placements)
            utterances += [p.utterance for p in window.placements]
            transcripts += [Transcript(text) for text in texts]
            frames += [window_states[p.frames].copy() for p in window.placements]
        # A window's decoding can loop; those utterances get their own window.
        redo = [i for i, t in enumerate(transcripts) if is_repetitive(t.text)]
        for i, out in zip(redo, self.asr.transcribe([utterances[i].audio for i in redo])):
            transcripts[i], frames[i] = out.transcript, out.encoder_states
        return self._classify(utterances, transcripts, frames, time.perf_counter() - start)

    def _classify(self, utterances, transcripts, whisper_frames, asr_time) -> list[EmotionResult]:
        clock = time.perf_counter
        t1 = clock()
        if self.audio_encoder is None:
            audio_frames = whisper_frames
        else:
            audio_frames = self.audio_encoder.encode([u.audio for u in utterances])
        t2 = clock()
        text_states, text_mask = self.text_encoder.encode([t.text for t in transcripts])
        t3 = clock()
        audio, audio_mask = pad_sequences(audio_frames, self.checkpoint.audio_encoder.dim)
        probs = self.model.predict_proba(text_states.float(), text_mask, audio.to(self.device),
                                         audio_mask.to(self.device)).cpu().numpy()
        t4 = clock()
        timings = {"asr": asr_time, "audio_encoder": t2 - t1, "text_encoder": t3 - t2,
                   "fusion": t4 - t3}
        self.stage_seconds.update(timings)
        return [self._result(u, t, p, timings) for u, t, p in zip(utterances, transcripts, probs)]

    def _result(self, utterance, transcript, probs, timings) -> EmotionResult:
        best = int(np.argmax(probs))
        return EmotionResult(
            utterance=utterance, transcript=transcript, label=self.labels[best],
            probabilities={label: float(p) for label, p in zip(self.labels, probs)},
            model_id=self.model_id, timings=dict(timings))
