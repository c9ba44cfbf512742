"""Whisper ASR (faster-whisper / CTranslate2) whose encoder pass also yields the audio features.

Two ways in. `decode_windows` (analyze's default): 30 s windows of consecutive utterances
(packing.py), decoded as faster-whisper's batched pipeline does, with word timestamps.
`transcribe` (listen, `analyze --no-pack`): each utterance padded to Whisper's 30 s window and
encoded once (on a CPU window by window); the same encoder states feed both `generate` (the
transcript) and, for the "whisper" audio kind, the emotion model (the first `ceil(duration * 50)`
frames, the part that covers the utterance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import AsrConfig
from .packing import Word
from .resolve import ResolvedModel
from .types import SAMPLE_RATE, Transcript

FRAMES_PER_SECOND = 50.0
HOP = 160  # samples per mel frame (100 a second); Whisper's alignment counts mel frames
PREPEND_PUNCTUATION = "\"'“¿([{-"  # faster-whisper's defaults for word timestamps
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class AsrOutput:
    transcript: Transcript
    encoder_states: np.ndarray  # (frames, dim) covering the utterance


@dataclass(frozen=True)
class WindowTranscript:
    words: tuple[Word, ...]  # timed, in window seconds
    text: str  # the window's whole transcript
    avg_logprob: float
    no_speech_prob: float


def _avg_logprob(result) -> float:
    """faster-whisper's definition (length penalty 1): cumulative log-prob / (length + 1)."""
    length = len(result.sequences_ids[0])
    return result.scores[0] * length / (length + 1)


def _words(alignment: list[dict]) -> tuple[Word, ...]:
    """faster-whisper's alignment of one window to `Word`s, punctuation joined to its word as
    `transcribe(word_timestamps=True)` does."""
    from faster_whisper.transcribe import merge_punctuations

    merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
    return tuple(Word(float(w["start"]), float(w["end"]), w["word"]) for w in alignment
                 if w["word"])


def pick_device(device_type: str) -> str:
    if device_type != "auto":
        return device_type
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def pick_compute_type(device: str, compute_type: str) -> str:
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class WhisperAsr:
    frames_per_second = FRAMES_PER_SECOND

    def __init__(self, model: ResolvedModel, config: AsrConfig, device: str = "cpu",
                 compute_type: str = "int8", cpu_threads: int = 0):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        from .errors import ModelError

        try:
            self.whisper = WhisperModel(str(model.path), device=device, compute_type=compute_type,
                                        cpu_threads=cpu_threads, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(
                f"ASR model '{model.spec}': cannot load ({str(exc).splitlines()[0]})"
            ) from None
        self.model_id = model.spec
        self.config = config
        self.device = device
        multilingual = self.whisper.model.is_multilingual
        language = config.language if multilingual else "en"
        self.tokenizer = Tokenizer(self.whisper.hf_tokenizer, multilingual, task="transcribe",
                                   language=language)
        self.prompt = self.whisper.get_prompt(self.tokenizer, [], without_timestamps=True)
        self.dim = self._probe_dim()

    def _probe_dim(self) -> int:
        states = self._encode([np.zeros(SAMPLE_RATE // 10, np.float32)])
        return int(states.shape[-1])

    def features(self, audio: np.ndarray) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        return pad_or_trim(self.whisper.feature_extractor(audio))

    def _encode(self, audios: Sequence[np.ndarray]):
        """Encoder states (n, 1500, dim) of the audios' padded 30 s windows, as CTranslate2 storage.

        On a CPU one window at a time: the encoder's self-attention over 1500 frames holds ~60 MB
        a window while it runs, and batching windows there gains no speed (docs/benchmarks.md),
        so a batch of 8 packed windows would cost ~0.45 GB of peak memory for nothing."""
        mels = np.stack([self.features(a) for a in audios]).astype(np.float32)
        if self.device != "cpu" or len(mels) == 1:
            return self.whisper.encode(mels)
        import ctranslate2

        states = np.concatenate([np.asarray(self.whisper.encode(m[None]), dtype=np.float32)
                                 for m in mels])
        return ctranslate2.StorageView.from_array(states)  # keeps `states` alive

    @staticmethod
    def frames_for(num_samples: int) -> int:
        return max(1, min(1500, math.ceil(num_samples / SAMPLE_RATE * FRAMES_PER_SECOND)))

    def encoder_states(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Only the audio features (the trainer's feature cache): no decoding."""
        if not audios:
            return []
        states = self._to_numpy(self._encode(audios))
        return [s[:self.frames_for(len(a))].copy() for a, s in zip(audios, states)]

    def encoder_states_packed(self, audios: Sequence[np.ndarray], gap_s: float
                              ) -> list[np.ndarray]:
        """The trainer's `--packed-features`: the audios laid end to end into shared 30 s
        windows (`packing.pack_fixed`), each one's frames sliced out of its window."""
        from .packing import pack_fixed
        from .types import Utterance

        items = [Utterance("", i, 0.0, len(a) / SAMPLE_RATE, a, 0.0) for i, a in enumerate(audios)]
        windows = list(pack_fixed(items, gap_s=gap_s))
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(audios)
        for window, states in zip(
            windows, self._to_numpy(self._encode([w.audio for w in windows]))
        ):
            for p in window.placements:
                out[p.utterance.index] = states[p.frames].copy()
        return out

    def decode_windows(self, windows: Sequence[np.ndarray], timed: Sequence[bool] | None = None
                       ) -> list[WindowTranscript]:
        """Each window (up to 30 s of consecutive speech) decoded as faster-whisper's batched
        pipeline does (one encoder pass, beam search without timestamp tokens, no previous
        text), then its words timed by Whisper's cross-attention alignment (faster-whisper's
        `find_alignment`, the word timestamps of `transcribe(word_timestamps=True)`).
        `timed[i]` False: window i needs no word times (one utterance has all its words), and
        gets none, which saves its alignment."""
        if not windows:
            return []
        encoded = self._encode(windows)
        cfg = self.config
        results = self.whisper.model.generate(
            encoded, [list(self.prompt) for _ in windows], beam_size=cfg.beam_size,
            max_length=self.whisper.max_length, return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=self._suppress_tokens())
        out, to_align = [], []
        for i, result in enumerate(results):
            tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
            avg_logprob = _avg_logprob(result)
            if (result.no_speech_prob > cfg.no_speech_threshold
                    and avg_logprob < cfg.log_prob_threshold):
                tokens = []
            out.append(WindowTranscript((), self.tokenizer.decode(tokens).strip(),
                                        float(avg_logprob), float(result.no_speech_prob)))
            if tokens and (timed is None or timed[i]):
                to_align.append((i, tokens))
        if to_align:
            states = self._to_numpy(encoded)
            for i, tokens in to_align:
                out[i] = WindowTranscript(self._timed_words(states[i], tokens, len(windows[i])),
                                          out[i].text, out[i].avg_logprob, out[i].no_speech_prob)
        return out

    def _timed_words(self, states: np.ndarray, tokens: list[int], samples: int
                     ) -> tuple[Word, ...]:
        """One window's words, timed by alignment against its encoder states. A window at a time:
        aligning 8 together held ~130 MB more for no speed."""
        import ctranslate2

        storage = ctranslate2.StorageView.from_array(states[None])
        if self.device == "cuda":
            storage = storage.to_device(ctranslate2.Device.cuda)
        (alignment,) = self.whisper.find_alignment(self.tokenizer, [tokens], storage,
                                                   min(3000, math.ceil(samples / HOP)))
        return _words(alignment)

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[AsrOutput]:
        """One encoder pass for the batch; transcripts and sliced encoder states per utterance."""
        if not audios:
            return []
        encoded = self._encode(audios)
        cfg = self.config
        results = self.whisper.model.generate(
            encoded, [list(self.prompt) for _ in audios],
            beam_size=cfg.beam_size, max_length=len(self.prompt) + cfg.max_new_tokens,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self._suppress_tokens())
        states = self._to_numpy(encoded)
        out = []
        for audio, result, state in zip(audios, results, states):
            tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
            text = self.tokenizer.decode(tokens).strip()
            avg_logprob = _avg_logprob(result)
            if (result.no_speech_prob > cfg.no_speech_threshold
                    and avg_logprob < cfg.log_prob_threshold):
                text = ""
            out.append(AsrOutput(Transcript(text, float(avg_logprob), float(result.no_speech_prob)),
                                 state[:self.frames_for(len(audio))].copy()))
        return out

    def _suppress_tokens(self) -> list[int]:
        from faster_whisper.transcribe import get_suppressed_tokens

        return get_suppressed_tokens(self.tokenizer, [-1])

    def _to_numpy(self, storage) -> np.ndarray:
        if self.device == "cuda":
            import ctranslate2

            storage = storage.to_device(ctranslate2.Device.cpu)
        return np.asarray(storage, dtype=np.float32)
