"""Segmentation into sentence/turn-sized utterances, fed chunk by chunk.

`Segmenter.push(chunk)` accepts audio of any length (a microphone read, a decoded file block) and
returns the utterances that closed inside it; `flush()` closes the last one. Because all state
advances frame by frame, any way of cutting the same audio into chunks gives the same result.

Voiced frames. A frame is voiced when WebRTC VAD calls it speech and, with `voice_check =
"silero"`, the Silero VAD model (shipped with faster-whisper, run here on a stream of 32 ms
blocks) gives the audio under it a speech probability of at least `voice_threshold`. WebRTC alone
fires on noise, notably where a noise level steps up; Silero does not, so noise opens nothing.

Utterances. Speech starts when at least `start_ratio` of the frames in the last `start_window_ms`
are voiced; the reported start is the first voiced frame of that window. A run of `hangover_ms`
unvoiced frames ends a speech region (the VAD's raw material); regions separated by pauses
shorter than `merge_gap_ms` (a sentence's commas and full stops, breaths) form one utterance, so
the utterance ends after max(hangover_ms, merge_gap_ms) of unvoiced frames; the reported end is
the end of its last voiced frame. The audio handed on also carries `pre_roll_ms` before the start
and `tail_ms` after the end. An utterance reaching `max_utterance_s` is split at its longest
pause (with no pause at all, at the limit itself) and the rest goes on as the next utterance;
one shorter than `min_utterance_ms` of speech is dropped.

Tentative end (live use): as soon as `tail_ms` of unvoiced frames follow the speech, the audio the
utterance will carry if it ends there is complete. `on_tentative(utterance)` is then called with
exactly the Utterance `_close` would return (same index, bounds and samples), so a listener can
start recognising it while the pause runs; if speech resumes first the tentative one is void
(`pending` says which tentative utterance still stands). With merging this happens at every
pause of tail_ms or more inside an utterance, each time with the longer utterance.

Turns (`turn_split`). Merging joins two speakers' sentences when the pause between them is short.
So an inner pause of at least `turn_gap_ms` (never less than tail_ms) is also a candidate cut:
once speech resumes, the voice's pitch register over the last `turn_context_ms` of voiced audio
before it is compared (turns.py) with that over the first `turn_probe_ms` after it, or less when
a pause of tail_ms, the close or `max_utterance_s` comes first; at least `turn_semitones` apart,
the utterance is cut there as a split is (same fields, tail and pre-roll). The test comes before
the tentative announcement at the next pause, and the utterance cut at the pause is exactly the
one announced tentatively in it, so a listener's speculative recognition of it stands.
"""

from __future__ import annotations

import importlib.util
import time
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np
import webrtcvad

from .config import SegmenterConfig
from .turns import register_change
from .types import SAMPLE_RATE, Utterance

SILERO_BLOCK = 512  # samples per Silero VAD step at 16 kHz
SILERO_CONTEXT = 64  # samples of the previous block each step also sees


def to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


_silero_session = None


def silero_session():
    """faster-whisper's Silero VAD model (ONNX), loaded once. Located without importing
    faster_whisper itself, which would pull in CTranslate2 for commands that need no model."""
    global _silero_session
    if _silero_session is None:
        import onnxruntime

        spec = importlib.util.find_spec("faster_whisper")
        path = Path(spec.submodule_search_locations[0]) / "assets" / "silero_vad_v6.onnx"
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1
        options.log_severity_level = 4
        _silero_session = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"], sess_options=options)
    return _silero_session


class SileroStream:
    """Silero speech probabilities for consecutive 512-sample blocks of a stream. The model's
    LSTM state runs through the blocks in order, so any chunking gives the same probabilities
    (one batched call per push: cheap for file blocks, one block at a time for a microphone)."""

    def __init__(self, origin: int = 0):
        self.session = silero_session()
        self.origin = origin  # stream sample at which block 0 starts
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(SILERO_CONTEXT, np.float32)
        self._carry = np.zeros(0, np.float32)
        self.first = 0  # block index of probs[0]
        self.probs: deque[float] = deque()

    @property
    def heard(self) -> int:
        """The stream sample up to which every block has a probability."""
        return self.origin + (self.first + len(self.probs)) * SILERO_BLOCK

    def push(self, samples: np.ndarray) -> None:
        data = np.concatenate([self._carry, samples]) if len(self._carry) else samples
        n = len(data) // SILERO_BLOCK
        self._carry = data[n * SILERO_BLOCK:].copy()
        if n == 0:
            return
        blocks = data[:n * SILERO_BLOCK].reshape(n, SILERO_BLOCK)
        context = np.concatenate([self._context[None], blocks[:-1, -SILERO_CONTEXT:]])
        self._context = blocks[-1, -SILERO_CONTEXT:].copy()
        probs, self._h, self._c = self.session.run(
            None, {"input": np.concatenate([context, blocks], 1).astype(np.float32),
                   "h": self._h, "c": self._c})
        self.probs.extend(np.asarray(probs, np.float32).reshape(-1).tolist())

    def finish(self) -> None:
        """Pad the last partial block with silence."""
        if len(self._carry):
            self.push(np.zeros(SILERO_BLOCK - len(self._carry), np.float32))

    def max_prob(self, start: int, end: int) -> float:
        """Highest probability of the blocks overlapping stream samples [start, end)."""
        lo = (start - self.origin) // SILERO_BLOCK
        hi = (end - 1 - self.origin) // SILERO_BLOCK
        return max(self.probs[j - self.first] for j in range(lo, hi + 1))

    def forget_before(self, sample: int) -> None:
        while self.probs and self.origin + (self.first + 1) * SILERO_BLOCK <= sample:
            self.probs.popleft()
            self.first += 1


class Segmenter:
    def __init__(self, config: SegmenterConfig, source: str = "", live: bool = False,
                 on_tentative: Callable[[Utterance], None] | None = None):
        self.config = config
        self.on_tentative = on_tentative
        self.source = source
        self.live = live
        self.vad = webrtcvad.Vad(config.aggressiveness)
        self.silero = SileroStream() if config.voice_check == "silero" else None
        self.frame_len = SAMPLE_RATE * config.frame_ms // 1000
        ms = config.frame_ms
        self.start_window = max(1, config.start_window_ms // ms)
        self.hangover_frames = max(1, config.hangover_ms // ms)
        # the pause that ends an utterance: shorter ones are merged into it
        self.end_frames = max(self.hangover_frames, config.merge_gap_ms // ms)
        self.pre_roll_frames = config.pre_roll_ms // ms
        self.tail_frames = config.tail_ms // ms
        # the silent run after which the utterance's audio is final (if it ends there)
        self.tentative_frames = max(1, self.tail_frames)
        self.min_frames = config.min_utterance_ms // ms
        # a pause that may be a turn; at least tail_ms long, so the utterance cut at it carries
        # its full tail: the one announced tentatively in that pause
        self.turn_gap_frames = max(config.turn_gap_ms // ms, self.tentative_frames)
        self.context_frames = max(1, config.turn_context_ms // ms)
        self.probe_frames = max(1, config.turn_probe_ms // ms)
        self._turn: tuple[int, int] | None = None  # (first, end) frame of a pause to test
        self._probe = 0  # voiced frames heard since that pause
        self.max_frames = int(config.max_utterance_s * 1000) // ms
        self._carry = np.zeros(0, np.float32)
        # frames cut and WebRTC-classified, waiting for Silero to cover them (index, samples, vad)
        self._waiting: deque[tuple[int, np.ndarray, bool]] = deque()
        self._next_cut = 0  # index of the next frame to cut from the stream
        self._frame_index = 0  # index of the next frame to be classified
        # (frame index, samples, voiced) of recent frames, enough for pre-roll + start window
        self._history: deque[tuple[int, np.ndarray, bool]] = deque(
            maxlen=self.pre_roll_frames + self.start_window)
        self._active: list[np.ndarray] | None = None  # frames of the open utterance
        self._voiced: list[bool] = []  # ... and whether each was voiced
        self._active_first = 0  # frame index of _active[0]
        self._speech_first = 0
        self._last_voiced = 0
        self._silent_run = 0
        self._count = 0
        self.pending: Utterance | None = None  # the tentative utterance still standing

    @property
    def in_speech(self) -> bool:
        return self._active is not None

    @property
    def open_index(self) -> int | None:
        """The index the open utterance will have (None: none is open)."""
        return self._count if self._active is not None else None

    def push(self, chunk: np.ndarray) -> list[Utterance]:
        """State kept between calls is bounded: under one frame of carry (plus one Silero block),
        the pre-roll + start window of history, and an open utterance of at most
        `max_utterance_s` (+ pre-roll)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if not np.isfinite(chunk).all():  # NaN/inf would become arbitrary PCM values
            chunk = np.nan_to_num(chunk, nan=0.0, posinf=1.0, neginf=-1.0)
        data = np.concatenate([self._carry, chunk]) if len(self._carry) else chunk
        n = len(data) // self.frame_len
        self._carry = data[n * self.frame_len:].copy()
        if self.silero is not None:
            self.silero.push(chunk)
        for i in range(n):
            frame = data[i * self.frame_len:(i + 1) * self.frame_len].copy()
            self._waiting.append((self._next_cut, frame, self._is_speech(frame)))
            self._next_cut += 1
        return self._classify_waiting()

    def flush(self) -> list[Utterance]:
        """Close the open utterance at end of input (a partial last frame is ignored)."""
        self._carry = np.zeros(0, np.float32)
        if self.silero is not None:
            self.silero.finish()
        out = self._classify_waiting()
        if self.silero is not None:  # audio pushed later starts a new stream where frames do
            self.silero = SileroStream(origin=self._next_cut * self.frame_len)
        if self._active is not None:
            out += self._end(self._frame_index)
        return out

    def _classify_waiting(self) -> list[Utterance]:
        out: list[Utterance] = []
        while self._waiting:
            index, frame, vad = self._waiting[0]
            start, end = index * self.frame_len, (index + 1) * self.frame_len
            if self.silero is not None:
                if self.silero.heard < end:
                    break  # Silero has not heard all of this frame yet
                vad = vad and self.silero.max_prob(start, end) >= self.config.voice_threshold
                self.silero.forget_before(start)
            self._waiting.popleft()
            out += self._step(frame, vad)
        return out

    def _is_speech(self, frame: np.ndarray) -> bool:
        return self.vad.is_speech(to_pcm16(frame), SAMPLE_RATE)

    def _step(self, frame: np.ndarray, voiced: bool) -> list[Utterance]:
        index = self._frame_index
        self._frame_index += 1
        if self._active is None:
            self._history.append((index, frame, voiced))
            window = list(self._history)[-self.start_window:]
            if len(window) == self.start_window and \
                    sum(v for _, _, v in window) >= self.config.start_ratio * self.start_window:
                self._open(window)
            return []

        self._active.append(frame)
        self._voiced.append(voiced)
        out: list[Utterance] = []
        if voiced:
            if self.config.turn_split and self._silent_run >= self.turn_gap_frames:
                self._turn, self._probe = (index - self._silent_run, index), 0
            self._last_voiced = index
            self._silent_run = 0
            self.pending = None
            if self._turn is not None:
                self._probe += 1
                if self._probe >= self.probe_frames:
                    out += self._test_turn()
        else:
            self._silent_run += 1
            if self._silent_run == self.tentative_frames:
                out += self._test_turn()  # before this pause's tentative announcement
        if self._silent_run >= self.end_frames:
            return out + self._end(index + 1)
        if self.on_tentative is not None and self._silent_run == self.tentative_frames:
            tentative = self._utterance(index + 1)
            if tentative is not None:
                self.pending = tentative
                self.on_tentative(tentative)
        if index + 1 - self._speech_first >= self.max_frames:
            out += self._test_turn()
            if index + 1 - self._speech_first >= self.max_frames:
                out += [u for u in [self._split(index + 1)] if u is not None]
        return out

    def _open(self, window) -> None:
        first_voiced = next(i for i, _, v in window if v)
        entries = [e for e in self._history if e[0] >= first_voiced - self.pre_roll_frames]
        self._active = [f for _, f, _ in entries]
        self._voiced = [v for _, _, v in entries]
        self._active_first = entries[0][0]
        self._speech_first = first_voiced
        self._last_voiced = max(i for i, _, v in window if v)
        self._silent_run = window[-1][0] - self._last_voiced
        self._turn = None
        self._history.clear()

    def _end(self, end_frame: int) -> list[Utterance]:
        """Close the open utterance, after testing the pause that awaits the turn test."""
        out = self._test_turn()
        utterance = self._close(end_frame)
        return out + ([utterance] if utterance is not None else [])

    def _close(self, end_frame: int) -> Utterance | None:
        utterance = self._utterance(end_frame)
        self._active = None
        self._voiced = []
        self._silent_run = 0
        self._turn = None
        self.pending = None
        if utterance is not None:
            self._count += 1
        return utterance

    def _longest_pause(self) -> tuple[int, int] | None:
        """(first, end) frame indices of the open utterance's longest inner pause (among equals,
        the latest); None: no pause."""
        best, run_start = None, None
        offset = self._active_first
        for k in range(self._speech_first - offset, len(self._voiced)):
            if not self._voiced[k]:
                run_start = k if run_start is None else run_start
            elif run_start is not None:
                if best is None or k - run_start >= best[1] - best[0]:
                    best = (run_start, k)
                run_start = None
        return None if best is None else (best[0] + offset, best[1] + offset)

    def _split(self, end_frame: int) -> Utterance | None:
        """The open utterance reached max_utterance_s: close it at its longest pause and go on
        with the rest (at the limit itself when it has no pause)."""
        pause = self._longest_pause()
        if pause is not None and pause[0] - self._speech_first >= max(1, self.min_frames):
            return self._cut(*pause)
        utterance = self._utterance(end_frame, cut=True)
        if utterance is not None:
            self._count += 1
        self._silent_run = 0
        self._go_on(end_frame, end_frame)
        return utterance

    def _cut(self, cut: int, rest_speech: int) -> Utterance | None:
        """Close the open utterance at its pause [cut, rest_speech) (with at most tail_ms of the
        pause) and go on with the speech after it (with at most pre_roll_ms of the pause)."""
        keep = cut - self._active_first + min(self.tail_frames, rest_speech - cut)
        last_voiced, self._last_voiced = self._last_voiced, cut - 1
        utterance = self._utterance(cut, keep=keep)
        self._last_voiced = last_voiced
        if utterance is not None:
            self._count += 1
        self._go_on(max(cut, rest_speech - self.pre_roll_frames), rest_speech)
        return utterance

    def _go_on(self, rest_first: int, rest_speech: int) -> None:
        """The open utterance becomes its rest: audio from rest_first, speech from rest_speech."""
        drop = rest_first - self._active_first
        self._active, self._voiced = self._active[drop:], self._voiced[drop:]
        self._active_first, self._speech_first = rest_first, rest_speech
        self._last_voiced = max(self._last_voiced, rest_speech)
        self.pending = None

    def _test_turn(self) -> list[Utterance]:
        """Cut at the pause awaiting the turn test if the voices on its two sides differ. Both
        sides must hold min_utterance_ms of speech, so that neither piece would be dropped.
        Nothing happens when no pause awaits the test."""
        if self._turn is None:
            return []
        (cut, rest_speech), self._turn = self._turn, None
        if cut - self._speech_first < max(1, self.min_frames) or \
                self._last_voiced + 1 - rest_speech < max(1, self.min_frames):
            return []
        change = self._register_change(cut, rest_speech)
        if change is None or change < self.config.turn_semitones:
            return []
        utterance = self._cut(cut, rest_speech)
        return [utterance] if utterance is not None else []

    def _register_change(self, cut: int, rest_speech: int) -> float | None:
        """Semitones between the voices' registers before and after the pause [cut, rest_speech)
        of the open utterance; None: too little pitched speech on a side."""
        before = self._voiced_runs(self._speech_first, cut, self.context_frames, latest=True)
        after = self._voiced_runs(rest_speech, self._last_voiced + 1, self.probe_frames)
        return register_change(before, after)

    def _voiced_runs(self, lo: int, hi: int, limit: int, latest: bool = False) -> list[np.ndarray]:
        """The audio of the first (latest: last) `limit` voiced frames in frames [lo, hi), as
        runs of consecutive frames."""
        first = self._active_first
        picked = [k for k in range(lo, hi) if self._voiced[k - first]]
        picked = picked[-limit:] if latest else picked[:limit]
        runs: list[list[np.ndarray]] = []
        for j, k in enumerate(picked):
            if j == 0 or picked[j - 1] != k - 1:
                runs.append([])
            runs[-1].append(self._active[k - first])
        return [np.concatenate(run) for run in runs]

    def _utterance(self, end_frame: int, cut: bool = False,
                   keep: int | None = None) -> Utterance | None:
        """The utterance the open one becomes if it ends now (None: too short to keep)."""
        frames, first = self._active, self._active_first
        speech_end = end_frame if cut else self._last_voiced + 1
        if speech_end - self._speech_first < max(1, self.min_frames):
            return None
        if keep is None:
            keep = min(len(frames), speech_end - first + (0 if cut else self.tail_frames))
        audio = np.concatenate(frames[:keep]) if keep else np.zeros(0, np.float32)
        fs = self.config.frame_ms / 1000
        return Utterance(
            source=self.source,
            index=self._count,
            start=self._speech_first * fs,
            end=speech_end * fs,
            audio=audio,
            audio_offset=first * fs,
            detected_at=time.time() if self.live else None,
        )


def speech_of(audio: np.ndarray, config: SegmenterConfig | None = None) -> np.ndarray | None:
    """What the runtime would classify of a whole clip: its utterances (pre-roll and tail
    included) joined, or None where the segmenter finds no speech. The trainer's
    `train.audio_speech_only` reads corpus clips this way."""
    segmenter = Segmenter(config or SegmenterConfig())
    utterances = segmenter.push(audio) + segmenter.flush()
    return np.concatenate([u.audio for u in utterances]) if utterances else None
