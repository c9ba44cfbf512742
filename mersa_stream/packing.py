"""Whisper's 30 s windows for `analyze`: consecutive utterances share a window, so Whisper decodes
them with their neighbours as context and one encoder pass and one decoding serve many
utterances (as faster-whisper's batched pipeline does with its VAD chunks).

`pack` lays the utterances out in source order, each pause between two of them kept as it was
but shortened to at most `gap_s` (audio that two utterances share, the next one's pre-roll over
the last one's tail, is laid once). Whisper transcribes the window; `assign_words` then gives each
word, by its time, to the utterance whose speech holds it (or is nearest to it), so no word is
lost, doubled or moved across a boundary.

`pack_fixed` is the older layout (utterances end to end, exactly `gap_s` apart, whatever their
times): the trainer's `--packed-features` still builds its windows that way.
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
    """`utterance.audio[skip:skip + length]` sits at `offset` (samples) in its window."""

    utterance: Utterance
    offset: int
    length: int
    skip: int = 0

    @property
    def span(self) -> tuple[float, float]:
        return self.offset / SAMPLE_RATE, (self.offset + self.length) / SAMPLE_RATE

    @property
    def speech(self) -> tuple[float, float]:
        """The utterance's speech bounds (segmenter start/end) in window seconds."""
        u = self.utterance
        shift = (self.offset - self.skip) / SAMPLE_RATE - u.audio_offset
        return u.start + shift, u.end + shift

    @property
    def frames(self) -> slice:
        first = self.offset // SAMPLES_PER_FRAME
        count = max(1, -(-self.length // SAMPLES_PER_FRAME))
        return slice(first, min(first + count, 1500))


@dataclass(frozen=True)
class Window:
    audio: np.ndarray
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class Word:
    """A decoded word and its time in its window (seconds); `text` keeps Whisper's leading
    space and attached punctuation."""

    start: float
    end: float
    text: str


def pack(utterances: Iterable[Utterance], gap_s: float = 0.2,
         window_s: float = WINDOW_SECONDS) -> Iterator[Window]:
    """Greedy, in order, lazily: a window takes utterances while they fit in `window_s`; pauses
    between them as in the source, at most `gap_s`. Audio is shared only within a channel
    (`analyze --channels split` interleaves the channels' utterances by time)."""
    limit = int(window_s * SAMPLE_RATE)
    current: list[Placement] = []
    cursor = 0  # window samples used
    source_end = 0  # source sample just after the last placed audio
    for u in utterances:
        first = round(u.audio_offset * SAMPLE_RATE)
        skip, pause = 0, 0
        if current:
            if u.channel == current[-1].utterance.channel:  # else other audio, at the same time
                skip = min(max(0, source_end - first), len(u.audio))
            pause = min(max(0, first - source_end), int(gap_s * SAMPLE_RATE))
        length = min(len(u.audio) - skip, limit - cursor - pause)
        if current and length < len(u.audio) - skip:  # it does not fit: a new window
            yield _window(current, cursor)
            current, cursor, skip, pause = [], 0, 0, 0
        if not current:
            length = min(len(u.audio), limit)
        current.append(Placement(u, cursor + pause, length, skip))
        cursor += pause + length
        source_end = first + skip + length
    if current:
        yield _window(current, cursor)


def pack_fixed(utterances: Iterable[Utterance], gap_s: float = 0.2,
               window_s: float = WINDOW_SECONDS) -> Iterator[Window]:
    """Utterances end to end, `gap_s` of silence apart, whatever their times in the source."""
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
        audio[p.offset:p.offset + p.length] = p.utterance.audio[p.skip:p.skip + p.length]
    return Window(audio, tuple(placements))


def owner(t: float, placements: Sequence[Placement]) -> int:
    """The placement whose speech holds window time `t`, else the one whose speech is nearest
    (a word said in a pause, or in the pre-roll or tail, belongs to the speech next to it)."""
    def distance(i: int) -> float:
        start, end = placements[i].speech
        return max(start - t, t - end, 0.0)

    return min(range(len(placements)), key=distance)


def word_time(word: Word, longest_s: float) -> float:
    """Where a word is, for assigning it: the middle of its aligned span, with a span longer than
    `longest_s` cut to its last `longest_s` (Whisper's alignment tends to stretch the first word
    after a pause back into the pause; its end is reliable)."""
    start = max(word.start, word.end - longest_s)
    return (start + word.end) / 2


def assign_words(words: Sequence[Word], placements: Sequence[Placement],
                 longest_s: float = 1.4) -> list[str]:
    """Text per placement from a window's timed words: each word goes to exactly one placement,
    in order."""
    texts: list[list[str]] = [[] for _ in placements]
    for word in words:
        texts[owner(word_time(word, longest_s), placements)].append(word.text)
    return ["".join(t).strip() for t in texts]
