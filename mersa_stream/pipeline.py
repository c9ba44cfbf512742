"""source -> segmenter -> recognizer, as lazy generators. `analyze` and `listen` share all of it;
only the source of audio chunks differs (a decoded file, a microphone)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from .config import Config, RuntimeConfig, SegmenterConfig
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
                     packed: bool = False,
                     pack_gap_s: float = RuntimeConfig.pack_gap_s,
                     on_speech: Callable[[], None] | None = None) -> Iterator[EmotionResult]:
    """`batch_size` counts utterances, or with `packed` 30 s windows (see packing.py); packing
    happens before batching, so the results do not depend on the batch size. The recognizer is
    called only with utterances: a file with no speech never uses it."""
    segmenter = Segmenter(segmenter_config, source=source)
    yield from recognize_utterances(segment(chunks, segmenter, on_speech), recognizer, batch_size,
                                    packed, pack_gap_s)


def recognize_utterances(utterances: Iterable[Utterance], recognizer: Recognizer | RecognizerLoader,
                         batch_size: int = 1, packed: bool = False,
                         pack_gap_s: float = RuntimeConfig.pack_gap_s) -> Iterator[EmotionResult]:
    """Utterances (of one source, in order) -> their results, in the same order: `packed`,
    consecutive utterances in shared 30 s windows, each word given to the utterance that holds
    its time (packing.py; `analyze`), else each utterance in its own window (`listen`)."""
    if packed:
        for windows in batched(pack(utterances, gap_s=pack_gap_s), batch_size):
            yield from recognizer.recognize_windows(windows)
    else:
        for batch in batched(utterances, batch_size):
            yield from recognizer.recognize(batch)


# -- one file, as `analyze` runs it (and the Python API): mixed or split channels (issue 15) --


def recognize_file(path: str | Path, config: Config, recognizer: Recognizer | RecognizerLoader,
                   name: str | None = None,
                   track: Callable[[Path, Iterator[np.ndarray]], Iterable[np.ndarray]] | None
                   = None,
                   on_speech: Callable[[], None] | None = None) -> Iterator[EmotionResult]:
    """`path` decoded as it streams, segmented and recognised. `analyze.channels`: "mix" (one
    stream) or "split" (each channel its own speaker stream, results by start time, each with
    its channel: channels.py). `name`: the source written in the results (default: the path);
    `track`: wraps the decoded chunks (a progress bar)."""
    from .channels import segment_channels
    from .decode import stream_audio, stream_channels

    path = Path(path)
    name = str(path) if name is None else name
    split = config.analyze.channels == "split"
    chunks = stream_channels(path) if split else stream_audio(path)
    if track is not None:
        chunks = track(path, chunks)
    if split:
        utterances = segment_channels(chunks, config.segmenter, name, on_speech)
    else:
        utterances = segment(chunks, Segmenter(config.segmenter, source=name), on_speech)
    runtime = config.runtime
    yield from recognize_utterances(utterances, recognizer,
                                    runtime.batch_for(runtime.pack_windows),
                                    packed=runtime.pack_windows, pack_gap_s=runtime.pack_gap_s)
