"""source -> segmenter -> recognizer, as lazy generators. `analyze` and `listen` share all of it;
only the source of audio chunks differs (a decoded file, a microphone)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from .config import SegmenterConfig
from .packing import pack
from .segmenter import Segmenter
from .types import EmotionResult, Utterance

if TYPE_CHECKING:
    from .recognizer import Recognizer, RecognizerLoader


def segment(chunks: Iterable[np.ndarray], segmenter: Segmenter,
            on_speech: Callable[[], None] | None = None) -> Iterator[Utterance]:
    """`on_speech`: called (once) as soon as the segmenter hears speech, before the utterance
    is closed (`analyze` starts loading the models then)."""
    for chunk in chunks:
        for utterance in segmenter.push(chunk):
            if on_speech is not None:
                on_speech()
                on_speech = None
            yield utterance
        if on_speech is not None and segmenter.in_speech:
            on_speech()
            on_speech = None
    yield from segmenter.flush()


def batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def recognize_stream(chunks: Iterable[np.ndarray], source: str, segmenter_config: SegmenterConfig,
                     recognizer: Recognizer | RecognizerLoader, batch_size: int = 1,
                     packed: bool = False, pack_gap_s: float = 0.2,
                     on_speech: Callable[[], None] | None = None) -> Iterator[EmotionResult]:
    """`batch_size` counts utterances, or with `packed` 30 s windows (see packing.py); packing
    happens before batching, so the results do not depend on the batch size. The recognizer is
    called only with utterances: a file with no speech never uses it."""
    segmenter = Segmenter(segmenter_config, source=source)
    utterances = segment(chunks, segmenter, on_speech)
    if packed:
        for windows in batched(pack(utterances, gap_s=pack_gap_s), batch_size):
            yield from recognizer.recognize_windows(windows)
    else:
        for batch in batched(utterances, batch_size):
            yield from recognizer.recognize(batch)
