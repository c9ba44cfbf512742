"""Packing utterances into Whisper's 30 s windows (analyze): one encoder pass and one decoding per
window instead of per utterance, as faster-whisper's batched pipeline does with its VAD chunks.

Utterances are laid end to end with `gap_s` of silence between them, so that Whisper closes a
timestamped segment at each boundary; each decoded segment goes to the utterance it overlaps most,
and each utterance's encoder frames are sliced out of its window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .types import SAMPLE_RATE, Utterance

WINDOW_SECONDS = 30.0
SAMPLES_PER_FRAME = SAMPLE_RATE // 50  # Whisper encoder: 50 frames per second


@dataclass(frozen=True)
class Placement:
    utterance: Utterance
    offset: int  # first sample in the window
    length: int

    @property
    def span(self) -> tuple[float, float]:
        return self.offset / SAMPLE_RATE, (self.offset + self.length) / SAMPLE_RATE

    @property
    def frames(self) -> slice:
        first = self.offset // SAMPLES_PER_FRAME
        count = max(1, -(-self.length // SAMPLES_PER_FRAME))
        return slice(first, min(first + count, 1500))


@dataclass(frozen=True)
class Window:
    audio: np.ndarray
    placements: tuple[Placement, ...]


def pack(utterances: Iterable[Utterance], gap_s: float = 0.5,
         window_s: float = WINDOW_SECONDS) -> Iterator[Window]:
    """Greedy, in order, lazily: a window takes utterances while they fit in `window_s`."""
    limit, gap = int(window_s * SAMPLE_RATE), int(gap_s * SAMPLE_RATE)
    current: list[Placement] = []
    cursor = 0
    for u in utterances:
        length = min(len(u.audio), limit)
        start = cursor + gap if current else 0
        if current and start + length > limit:
            yield _window(current, cursor)
            current, start = [], 0
        current.append(Placement(u, start, length))
        cursor = start + length
    if current:
        yield _window(current, cursor)


def _window(placements: list[Placement], length: int) -> Window:
    audio = np.zeros(length, np.float32)
    for p in placements:
        audio[p.offset:p.offset + p.length] = p.utterance.audio[:p.length]
    return Window(audio, tuple(placements))


def assign_segments(segments: Sequence[tuple[float, float, str]],
                    placements: Sequence[Placement]) -> list[str]:
    """Text per placement: each (start, end, text) segment goes to the placement it overlaps most
    (the nearest one when it overlaps none)."""
    texts: list[list[str]] = [[] for _ in placements]
    for start, end, text in segments:
        def score(p: Placement) -> tuple[float, float]:
            a, b = p.span
            overlap = min(end, b) - max(start, a)
            return overlap, -abs((start + end) / 2 - (a + b) / 2)

        best = max(range(len(placements)), key=lambda i: score(placements[i]))
        if text.strip():
            texts[best].append(text.strip())
    return [" ".join(t) for t in texts]
