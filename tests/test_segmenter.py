import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import conversation, have_espeak
from mersa_stream.config import SegmenterConfig
from mersa_stream.pipeline import segment
from mersa_stream.segmenter import Segmenter
from mersa_stream.types import SAMPLE_RATE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # conversations.py

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")

# The synthetic voice is a harmonic complex, not a human voice: the Silero voice check may refuse
# it, so the tests of the frame machinery run on WebRTC alone (test_noise_gate.py tests the check).
SYNTH = SegmenterConfig(voice_check="none")


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
    # gaps of 1.0 and 0.9 s: under -40 dBFS noise the VAD hears a 0.7 s gap as ~0.6 s, within
    # segmenter.merge_gap_ms (one utterance since issue 12)
    return conversation(["The quick brown fox jumps over the lazy dog.",
                         "Please call me back when you can.",
                         "It is going to rain all afternoon."], [1.0, 0.9], noise_db=-40, seed=3)


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
    utterances = run(SYNTH, audio)
    truth = [(1.0, 2.5), (3.5, 4.4)]
    assert len(utterances) == len(truth)
    for u, (start, end) in zip(utterances, truth):
        assert abs(u.start - start) <= 0.15 and abs(u.end - end) <= 0.15
    assert run(SYNTH, np.zeros(SAMPLE_RATE * 5, np.float32)) == []


def test_max_length_cuts_and_min_length_drops():
    long_voice = np.concatenate([np.zeros(8000, np.float32), synthetic_voice(7.0),
                                 np.zeros(8000, np.float32)])
    config = dataclasses.replace(SYNTH, max_utterance_s=3.0)
    utterances = run(config, long_voice)
    assert len(utterances) == 3
    assert all(u.duration <= 3.0 + 1e-9 for u in utterances)
    # cut pieces are contiguous: no speech lost between them
    assert all(abs(a.end - b.start) < 1e-9 for a, b in zip(utterances, utterances[1:]))
    click = np.concatenate([np.zeros(8000, np.float32), synthetic_voice(0.2),
                            np.zeros(8000, np.float32)])
    assert run(dataclasses.replace(SYNTH, min_utterance_ms=400), click) == []
    assert len(run(dataclasses.replace(SYNTH, min_utterance_ms=60), click)) == 1


def test_pre_roll_and_hangover_settings_change_the_audio_kept():
    audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), synthetic_voice(1.0),
                            np.zeros(SAMPLE_RATE, np.float32)])
    base = run(SYNTH, audio)[0]
    wider = run(dataclasses.replace(SYNTH, pre_roll_ms=600, tail_ms=240), audio)[0]
    assert (base.start, base.end) == (wider.start, wider.end)
    assert wider.audio_offset == pytest.approx(base.audio_offset - 0.3)
    assert len(wider.audio) == len(base.audio) + int(0.39 * SAMPLE_RATE)


def collect_tentative(config, audio):
    tentative = []
    segmenter = Segmenter(config, source="x", on_tentative=tentative.append)
    closed = list(segment([audio[i:i + 4800] for i in range(0, len(audio), 4800)], segmenter))
    return tentative, closed


def same_utterance(a, b) -> bool:
    return (a.index, a.start, a.end, a.audio_offset) == (b.index, b.start, b.end, b.audio_offset) \
        and np.array_equal(a.audio, b.audio)


def test_tentative_end_announces_the_utterance_that_closes(talk):
    """At tail_ms of silence the segmenter announces exactly the utterance it closes later."""
    config = SegmenterConfig()
    tentative, closed = collect_tentative(config, talk.audio)
    assert len(closed) == len(talk.spans)
    for u in closed:
        matches = [t for t in tentative if same_utterance(t, u)]
        assert len(matches) == 1, u
    # without the callback the segmentation is the same
    plain = run(config, talk.audio)
    assert [(u.start, u.end) for u in plain] == [(u.start, u.end) for u in closed]


def test_tentative_end_is_void_when_speech_resumes():
    """A pause longer than tail_ms but shorter than the hangover: announced, then not closed."""
    config = dataclasses.replace(SYNTH, tail_ms=90, hangover_ms=600)
    gap = 0.4  # seconds: well past tail_ms (plus the VAD's own smoothing), short of the hangover
    silence = np.zeros(int(0.5 * SAMPLE_RATE), np.float32)
    pause = np.zeros(int(gap * SAMPLE_RATE), np.float32)
    audio = np.concatenate([silence, synthetic_voice(1.0), pause, synthetic_voice(1.0, seed=1),
                            silence])
    tentative, closed = collect_tentative(config, audio)
    assert len(closed) == 1 and closed[0].duration > 2.0
    assert len(tentative) == 2
    assert tentative[0].end < 1.8 and not same_utterance(tentative[0], closed[0])
    assert same_utterance(tentative[1], closed[0])


def test_no_tentative_end_when_tail_is_not_shorter_than_hangover(talk):
    # merge_gap_ms=0: the hangover alone ends an utterance (the regions are the utterances)
    config = SegmenterConfig(tail_ms=300, hangover_ms=240, merge_gap_ms=0)
    tentative, closed = collect_tentative(config, talk.audio)
    assert closed and tentative == []


# -------------------------------------------------- sentence-sized utterances (issue 12)

PAUSED = ("Come on! Come on! Here, okay, you see this?", "Stop it. Just stop it. I mean it.",
          "Wait. Where are you going?")


def generated(tmp_path, texts, gap, seed=0, noise_db=-50.0):
    import soundfile as sf

    from conversations import make_conversation

    wav, truth = make_conversation(tmp_path, seed=seed, noise_db=noise_db, texts=texts,
                                   gap_range=(gap, gap))
    return sf.read(str(wav), dtype="float32")[0], truth["sentences"]


def test_sentences_with_inner_pauses_are_one_utterance_each(tmp_path):
    """espeak-ng pauses ~0.5 s at a sentence's inner full stops and exclamation marks: merged,
    each sentence is one utterance with its own bounds; cut at every pause, it is fragments."""
    audio, truth = generated(tmp_path, PAUSED, gap=0.9)
    utterances = run(SegmenterConfig(), audio)
    assert len(utterances) == len(truth)
    for u, s in zip(utterances, truth):
        assert abs(u.start - s["start"]) <= 0.25 and abs(u.end - s["end"]) <= 0.25
    fragments = run(SegmenterConfig(merge_gap_ms=0), audio)
    assert len(fragments) >= len(truth) + 4


def test_a_pause_longer_than_the_merge_gap_splits(tmp_path):
    audio, truth = generated(tmp_path, PAUSED[1:], gap=0.5)
    assert len(run(SegmenterConfig(merge_gap_ms=600), audio)) == 1
    assert len(run(SegmenterConfig(merge_gap_ms=400), audio)) >= 2


def test_too_long_an_utterance_is_split_at_a_pause_not_in_a_word(tmp_path):
    """Merged sentences beyond max_utterance_s: the cut falls in a pause (each piece's end within
    a pause of the script), and nothing is lost between the pieces."""
    audio, truth = generated(tmp_path, PAUSED, gap=0.45)
    config = SegmenterConfig(max_utterance_s=5.0)
    utterances = run(config, audio)
    assert len(utterances) >= 2
    assert all(u.duration <= 5.0 + 1e-9 for u in utterances)
    for a, b in zip(utterances, utterances[1:]):
        # cut in a pause: a hard cut at the limit would leave no gap between the pieces
        assert b.start - a.end >= 0.2, (a.end, b.start)
        # ... and what lies between them is quiet (well below the speech's RMS)
        pause = audio[int(a.end * SAMPLE_RATE):int(b.start * SAMPLE_RATE)]
        speech = audio[int(a.start * SAMPLE_RATE):int(a.end * SAMPLE_RATE)]
        assert np.sqrt(np.mean(pause ** 2)) < 0.25 * np.sqrt(np.mean(speech ** 2))
    assert abs(utterances[0].start - truth[0]["start"]) <= 0.25
    assert abs(utterances[-1].end - truth[-1]["end"]) <= 0.25
