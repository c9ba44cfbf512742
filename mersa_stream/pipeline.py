"""source -> segmenter -> recognizer, as lazy generators. `analyze` and `listen` share all of it;
only the source of audio chunks differs (a decoded file, a microphone)."""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import numpy as np

from .config import SegmenterConfig
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
                     recognizer: Recognizer, batch_size: int = 1) -> Iterator[EmotionResult]:
    segmenter = Segmenter(segmenter_config, source=source)
    for batch in batched(segment(chunks, segmenter), batch_size):
        yield from recognizer.recognize(batch)
