import dataclasses

import numpy as np
import pytest

from helpers import conversation, have_espeak
from mersa_stream.config import SegmenterConfig
from mersa_stream.pipeline import segment
from mersa_stream.segmenter import Segmenter
from mersa_stream.types import SAMPLE_RATE

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")


def synthetic_voice(seconds: float, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic complex with syllable-rate amplitude modulation."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (0.15 * voice * envelope).astype(np.float32)


def run(config, audio, chunk_sizes=None, seed=0):
    segmenter = Segmenter(config, source="x")
    if chunk_sizes is None:
        return list(segment([audio], segmenter))
    rng = np.random.default_rng(seed)
    pieces, i = [], 0
    while i < len(audio):
        n = int(rng.choice(chunk_sizes))
        pieces.append(audio[i:i + n])
        i += n
    return list(segment(pieces, segmenter))


@pytest.fixture(scope="module")
def talk():
    return conversation(["The quick brown fox jumps over the lazy dog.",
                         "Please call me back when you can.",
                         "It is going to rain all afternoon."], [1.0, 0.7], noise_db=-40, seed=3)


def test_finds_each_sentence_within_tolerance(talk):
    utterances = run(SegmenterConfig(), talk.audio)
    assert len(utterances) == len(talk.spans)
    for u, (start, end) in zip(utterances, talk.spans):
        assert abs(u.start - start) < 0.3 and abs(u.end - end) < 0.3
        # the audio handed on covers the speech plus pre-roll/tail and lines up with the source
        offset = int(round(u.audio_offset * SAMPLE_RATE))
        assert np.array_equal(u.audio, talk.audio[offset:offset + len(u.audio)])
        assert u.audio_offset <= u.start and u.audio_offset + len(u.audio) / SAMPLE_RATE >= u.end
    assert [u.index for u in utterances] == list(range(len(utterances)))


@pytest.mark.parametrize("sizes", [[1], [479, 480, 481], [160, 3000, 17, 9600], [SAMPLE_RATE * 3]])
def test_chunked_feeding_equals_whole_file(talk, sizes):
    audio = talk.audio if sizes != [1] else talk.audio[:SAMPLE_RATE * 4]
    whole = run(SegmenterConfig(), audio)
    fed = run(SegmenterConfig(), audio, sizes, seed=len(sizes))
    assert [(u.start, u.end, u.audio_offset) for u in fed] == \
        [(u.start, u.end, u.audio_offset) for u in whole]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(fed, whole))


def test_synthetic_voice_bursts_and_silence():
    gap = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([gap, synthetic_voice(1.5), gap, synthetic_voice(0.9, 200), gap])
    utterances = run(SegmenterConfig(), audio)
    truth = [(1.0, 2.5), (3.5, 4.4)]
    assert len(utterances) == len(truth)
    for u, (start, end) in zip(utterances, truth):
        assert abs(u.start - start) <= 0.15 and abs(u.end - end) <= 0.15
    assert run(SegmenterConfig(), np.zeros(SAMPLE_RATE * 5, np.float32)) == []


def test_max_length_cuts_and_min_length_drops():
    long_voice = np.concatenate([np.zeros(8000, np.float32), synthetic_voice(7.0),
                                 np.zeros(8000, np.float32)])
    config = SegmenterConfig(max_utterance_s=3.0)
    utterances = run(config, long_voice)
    assert len(utterances) == 3
    assert all(u.duration <= 3.0 + 1e-9 for u in utterances)
    # cut pieces are contiguous: no speech lost between them
    assert all(abs(a.end - b.start) < 1e-9 for a, b in zip(utterances, utterances[1:]))
    click = np.concatenate([np.zeros(8000, np.float32), synthetic_voice(0.2),
                            np.zeros(8000, np.float32)])
    assert run(SegmenterConfig(min_utterance_ms=400), click) == []
    assert len(run(SegmenterConfig(min_utterance_ms=60), click)) == 1


def test_pre_roll_and_hangover_settings_change_the_audio_kept():
    audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), synthetic_voice(1.0),
                            np.zeros(SAMPLE_RATE, np.float32)])
    base = run(SegmenterConfig(), audio)[0]
    wider = run(dataclasses.replace(SegmenterConfig(), pre_roll_ms=600, tail_ms=240), audio)[0]
    assert (base.start, base.end) == (wider.start, wider.end)
    assert wider.audio_offset == pytest.approx(base.audio_offset - 0.3)
    assert len(wider.audio) == len(base.audio) + int(0.39 * SAMPLE_RATE)
