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


def pack(utterances: Iterable[Utterance], gap_s: float = 0.2,
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
    """Text per placement from a window's (start, end, text) segments.

    A segment inside one placement goes to it (the nearest one when it overlaps none). A segment
    that Whisper ran across a boundary is split: its words are shared out in proportion to the
    time it overlaps each placement, in order.
    """
    texts: list[list[str]] = [[] for _ in placements]
    for start, end, text in segments:
        words = text.split()
        if not words:
            continue
        overlaps = [max(0.0, min(end, p.span[1]) - max(start, p.span[0])) for p in placements]
        total = sum(overlaps)
        if total <= 0 or max(overlaps) >= 0.9 * total:
            middle = (start + end) / 2
            best = max(range(len(placements)), key=lambda i: (
                overlaps[i], -abs(middle - sum(placements[i].span) / 2)))
            texts[best].append(" ".join(words))
            continue
        cut, used = 0, 0.0
        for i, overlap in enumerate(overlaps):
            if overlap <= 0:
                continue
            used += overlap
            upto = round(len(words) * used / total)
            if upto > cut:
                texts[i].append(" ".join(words[cut:upto]))
                cut = upto
    return [" ".join(t) for t in texts]
