"""source -> segmenter -> recognizer, as lazy generators. `analyze` and `listen` share all of it;
only the source of audio chunks differs (a decoded file, a microphone)."""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import numpy as np

from .config import SegmenterConfig
from .packing import pack
from .recognizer import Recognizer
from .segmenter import Segmenter
from .types import EmotionResult, Utterance


def segment(chunks: Iterable[np.ndarray], segmenter: Segmenter) -> Iterator[Utterance]:
    for chunk in chunks:
        yield from segmenter.push(chunk)
    yield from segmenter.flush()


def batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def recognize_stream(chunks: Iterable[np.ndarray], source: str, segmenter_config: SegmenterConfig,
                     recognizer: Recognizer, batch_size: int = 1, packed: bool = False,
                     pack_gap_s: float = 0.2) -> Iterator[EmotionResult]:
    """`batch_size` counts utterances, or with `packed` 30 s windows (see packing.py); packing
    happens before batching, so the results do not depend on the batch size."""
    segmenter = Segmenter(segmenter_config, source=source)
    utterances = segment(chunks, segmenter)
    if packed:
        for windows in batched(pack(utterances, gap_s=pack_gap_s), batch_size):
            yield from recognizer.recognize_windows(windows)
    else:
        for batch in batched(utterances, batch_size):
            yield from recognizer.recognize(batch)
