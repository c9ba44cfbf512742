"""WebRTC-VAD segmentation into utterances, fed chunk by chunk.

`Segmenter.push(chunk)` accepts audio of any length (a microphone read, a decoded file block) and
returns the utterances that closed inside it; `flush()` closes the last one. Because all state
advances frame by frame, any way of cutting the same audio into chunks gives the same result.

Start: at least `start_ratio` of the frames in the last `start_window_ms` are voiced. The reported
start is the first voiced frame of that window. End: `hangover_ms` of unvoiced frames in a row; the
reported end is the end of the last voiced frame. The audio handed on also carries `pre_roll_ms`
before the start and `tail_ms` after the end. An utterance reaching `max_utterance_s` is cut there
and the next one starts at once; one shorter than `min_utterance_ms` of speech is dropped.

Tentative end (live use): as soon as `tail_ms` of unvoiced frames follow the speech, the audio the
utterance will carry if it ends there is complete. `on_tentative(utterance)` is then called with
exactly the Utterance `_close` would return (same index, bounds and samples), so a listener can
start recognising it while the hangover runs; if speech resumes first the tentative one is void.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import numpy as np
import webrtcvad

from .config import SegmenterConfig
from .types import SAMPLE_RATE, Utterance


def to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class Segmenter:
    def __init__(self, config: SegmenterConfig, source: str = "", live: bool = False,
                 on_tentative: Callable[[Utterance], None] | None = None):
        self.config = config
        self.on_tentative = on_tentative
        self.source = source
        self.live = live
        self.vad = webrtcvad.Vad(config.aggressiveness)
        self.frame_len = SAMPLE_RATE * config.frame_ms // 1000
        ms = config.frame_ms
        self.start_window = max(1, config.start_window_ms // ms)
        self.hangover_frames = max(1, config.hangover_ms // ms)
        self.pre_roll_frames = config.pre_roll_ms // ms
        self.tail_frames = config.tail_ms // ms
        # the silent run after which the utterance's audio is final (if it ends there)
        self.tentative_frames = max(1, self.tail_frames)
        self.min_frames = config.min_utterance_ms // ms
        self.max_frames = int(config.max_utterance_s * 1000) // ms
        self._carry = np.zeros(0, np.float32)
        self._frame_index = 0  # index of the next frame to be classified
        # (frame index, samples, voiced) of recent frames, enough for pre-roll + start window
        self._history: deque[tuple[int, np.ndarray, bool]] = deque(
            maxlen=self.pre_roll_frames + self.start_window)
        self._active: list[np.ndarray] | None = None  # frames of the open utterance
        self._active_first = 0  # frame index of _active[0]
        self._speech_first = 0
        self._last_voiced = 0
        self._silent_run = 0
        self._count = 0

    @property
    def in_speech(self) -> bool:
        return self._active is not None

    def push(self, chunk: np.ndarray) -> list[Utterance]:
        """State kept between calls is bounded: under one frame of carry, the pre-roll + start
        window of history, and an open utterance of at most `max_utterance_s` (+ pre-roll)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if not np.isfinite(chunk).all():  # NaN/inf would become arbitrary PCM values
            chunk = np.nan_to_num(chunk, nan=0.0, posinf=1.0, neginf=-1.0)
        data = np.concatenate([self._carry, chunk]) if len(self._carry) else chunk
        n = len(data) // self.frame_len
        self._carry = data[n * self.frame_len:].copy()
        out: list[Utterance] = []
        for i in range(n):
            frame = data[i * self.frame_len:(i + 1) * self.frame_len]
            utterance = self._step(frame)
            if utterance is not None:
                out.append(utterance)
        return out

    def flush(self) -> list[Utterance]:
        """Close the open utterance at end of input (a partial last frame is ignored)."""
        self._carry = np.zeros(0, np.float32)
        if self._active is None:
            return []
        utterance = self._close(self._frame_index)
        return [utterance] if utterance is not None else []

    def _is_speech(self, frame: np.ndarray) -> bool:
        return self.vad.is_speech(to_pcm16(frame), SAMPLE_RATE)

    def _step(self, frame: np.ndarray) -> Utterance | None:
        index = self._frame_index
        self._frame_index += 1
        voiced = self._is_speech(frame)
        frame = frame.copy()
        if self._active is None:
            self._history.append((index, frame, voiced))
            window = list(self._history)[-self.start_window:]
            if len(window) == self.start_window and \
                    sum(v for _, _, v in window) >= self.config.start_ratio * self.start_window:
                self._open(window)
            return None

        self._active.append(frame)
        if voiced:
            self._last_voiced = index
            self._silent_run = 0
        else:
            self._silent_run += 1
        if self._silent_run >= self.hangover_frames:
            return self._close(index + 1)
        if self.on_tentative is not None and self._silent_run == self.tentative_frames:
            tentative = self._utterance(index + 1)
            if tentative is not None:
                self.on_tentative(tentative)
        if index + 1 - self._speech_first >= self.max_frames:
            utterance = self._close(index + 1, cut=True)
            # speech goes on: the next utterance starts on the very next frame
            self._active, self._active_first = [], index + 1
            self._speech_first = self._last_voiced = index + 1
            self._silent_run = 0
            return utterance
        return None

    def _open(self, window) -> None:
        first_voiced = next(i for i, _, v in window if v)
        entries = [e for e in self._history if e[0] >= first_voiced - self.pre_roll_frames]
        self._active = [f for _, f, _ in entries]
        self._active_first = entries[0][0]
        self._speech_first = first_voiced
        self._last_voiced = max(i for i, _, v in window if v)
        self._silent_run = window[-1][0] - self._last_voiced
        self._history.clear()

    def _close(self, end_frame: int, cut: bool = False) -> Utterance | None:
        utterance = self._utterance(end_frame, cut)
        self._active = None
        self._silent_run = 0
        if utterance is not None:
            self._count += 1
        return utterance

    def _utterance(self, end_frame: int, cut: bool = False) -> Utterance | None:
        """The utterance the open one becomes if it ends now (None: too short to keep)."""
        frames, first = self._active, self._active_first
        speech_end = end_frame if cut else self._last_voiced + 1
        if speech_end - self._speech_first < max(1, self.min_frames):
            return None
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
