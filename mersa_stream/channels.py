"""Split channels (`analyze --channels split`): each channel of a file is its own speaker stream.

Contact-centre recordings put the agent on one channel and the customer on the other; mixed down,
who said what is lost. Here every channel gets its own segmenter, and the utterances of all
channels come out as one sequence ordered by start time, each carrying its channel and numbered
in that order. Recognition then treats them like any other utterances.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Callable, Iterable, Iterator

import numpy as np

from .config import SegmenterConfig
from .segmenter import Segmenter
from .types import SAMPLE_RATE, Utterance


def _earliest_start_bound(segmenter: Segmenter, config: SegmenterConfig, now: float) -> float:
    """No utterance this segmenter has yet to close can start before this time (seconds).

    Open speech (pauses being merged into it included) is cut by `max_utterance_s`; outside
    speech, the next utterance's first voiced frame lies within the start window that opens it.
    The frames classified may trail the audio pushed (a partial frame carried over, a voice
    check's block still filling: tens of milliseconds); the hangover is margin for that."""
    margin = (config.start_window_ms + config.hangover_ms + config.frame_ms) / 1000
    if segmenter.in_speech:
        margin += config.max_utterance_s
    return now - margin


def segment_channels(blocks: Iterable[np.ndarray], config: SegmenterConfig, source: str,
                     on_speech: Callable[[], None] | None = None) -> Iterator[Utterance]:
    """(channels, samples) blocks -> the utterances of every channel, by start time.

    An utterance is held back only until no channel can still produce one that starts earlier
    (a bounded delay: at most `max_utterance_s` and a little, in audio time). `on_speech` is
    called once, when any channel first hears speech."""
    segmenters: list[Segmenter] = []
    held: list[tuple[float, int, int, Utterance]] = []  # (start, channel, index, utterance)
    seen = 0  # samples per channel so far
    emitted = 0

    def release(before: float) -> Iterator[Utterance]:
        nonlocal emitted
        while held and held[0][0] < before:
            _, channel, _, utterance = heapq.heappop(held)
            yield dataclasses.replace(utterance, channel=channel, index=emitted)
            emitted += 1

    def hold(channel: int, utterances: list[Utterance]) -> None:
        for utterance in utterances:
            heapq.heappush(held, (utterance.start, channel, utterance.index, utterance))

    for block in blocks:
        if block.ndim != 2:
            raise ValueError(f"expected (channels, samples) blocks, got shape {block.shape}")
        if not segmenters:
            segmenters = [Segmenter(config, source=source) for _ in range(block.shape[0])]
        for channel, segmenter in enumerate(segmenters):
            hold(channel, segmenter.push(block[channel]))
        if on_speech is not None and (held or any(s.in_speech for s in segmenters)):
            on_speech()
            on_speech = None
        seen += block.shape[1]
        now = seen / SAMPLE_RATE
        yield from release(min(_earliest_start_bound(s, config, now) for s in segmenters))
    for channel, segmenter in enumerate(segmenters):
        hold(channel, segmenter.flush())
    if on_speech is not None and held:
        on_speech()
    yield from release(float("inf"))
