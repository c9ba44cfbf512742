"""The turn-change cue (turns.py) and the segmenter's cut at a turn (segmenter.py, turn_split):
two voices a short pause apart are two utterances, one voice's sentence with inner full stops
stays one, and the cut keeps the segmenter's guarantees (chunking, exact tentative utterances)."""

import dataclasses

import numpy as np
import pytest

from helpers import conversation, have_espeak
from mersa_stream.config import SegmenterConfig
from mersa_stream.listen import speculation_key
from mersa_stream.pipeline import segment
from mersa_stream.segmenter import Segmenter
from mersa_stream.turns import pitch, register, register_change
from mersa_stream.types import SAMPLE_RATE

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")

# a man's voice, then a woman's (espeak-ng: about 11 semitones apart), no pause inside a sentence
TWO = ["We should leave before the traffic gets bad.", "The kids are playing in the garden."]
# a sentence with inner full stops: espeak-ng pauses ~0.5 s at each, as long as a short turn gap
STOPS = "Stop it. Just stop it. I mean it."


def harmonic(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.1 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))).astype(np.float32)


def run(config, audio, chunk=4800, on_tentative=None):
    segmenter = Segmenter(config, source="x", on_tentative=on_tentative)
    return list(segment([audio[i:i + chunk] for i in range(0, len(audio), chunk)], segmenter))


def same(a, b) -> bool:
    return (a.index, a.start, a.end, a.audio_offset) == (b.index, b.start, b.end, b.audio_offset) \
        and np.array_equal(a.audio, b.audio)


def test_pitch_and_register_change_of_periodic_sounds():
    assert np.median(pitch(harmonic(120.0))) == pytest.approx(120.0, rel=0.02)
    assert np.median(pitch(harmonic(220.0))) == pytest.approx(220.0, rel=0.02)
    change = register_change([harmonic(120.0)], [harmonic(220.0, 0.5)])
    assert change == pytest.approx(12 * np.log2(220 / 120), abs=0.4)
    assert register_change([harmonic(120.0)], [harmonic(121.0)]) < 0.5
    # noise and silence have no clear period: no register, no verdict
    noise = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE).astype(np.float32)
    assert register([noise]) is None and register([np.zeros(SAMPLE_RATE, np.float32)]) is None
    assert register_change([harmonic(120.0)], [noise]) is None
    assert register([harmonic(120.0, 0.03)]) is None  # shorter than one 40 ms window


@pytest.fixture(scope="module")
def two_voices():
    return conversation(TWO, [0.35], noise_db=-50, seed=1, voices=("en-us", "en-us+f3"))


@needs_espeak
def test_two_voices_a_short_pause_apart_are_two_utterances(two_voices):
    utterances = run(SegmenterConfig(), two_voices.audio)
    assert len(utterances) == 2
    for u, (start, end) in zip(utterances, two_voices.spans):
        assert abs(u.start - start) <= 0.25 and abs(u.end - end) <= 0.25
    assert [u.index for u in utterances] == [0, 1]
    # cut as a split cuts: the audio lines up with the source, at most tail_ms of the pause
    # after the first and pre_roll_ms before the second
    for u in utterances:
        offset = int(round(u.audio_offset * SAMPLE_RATE))
        assert np.array_equal(u.audio, two_voices.audio[offset:offset + len(u.audio)])
    first, second = utterances
    assert first.audio_offset + len(first.audio) / SAMPLE_RATE == pytest.approx(first.end + 0.15)
    assert second.audio_offset >= first.end
    # without the cue, or with a turn gap longer than the pause, they are merged as before
    assert len(run(SegmenterConfig(turn_split=False), two_voices.audio)) == 1
    assert len(run(SegmenterConfig(turn_gap_ms=450), two_voices.audio)) == 1
    # a threshold above the two voices' distance keeps them together
    assert len(run(SegmenterConfig(turn_semitones=24.0), two_voices.audio)) == 1


@needs_espeak
@pytest.mark.parametrize("voice", ["en-us", "en-us+f3"])
def test_one_voice_with_inner_full_stops_stays_one_utterance(voice):
    talk = conversation([STOPS, STOPS], [1.0], noise_db=-50, seed=2, voices=(voice,))
    assert len(run(SegmenterConfig(turn_split=False), talk.audio)) == 2
    utterances = run(SegmenterConfig(), talk.audio)
    assert len(utterances) == 2
    for u, (start, end) in zip(utterances, talk.spans):
        assert abs(u.start - start) <= 0.25 and abs(u.end - end) <= 0.25


@needs_espeak
@pytest.mark.parametrize("sizes", [[479, 480, 481], [160, 3000, 17, 9600]])
def test_chunking_does_not_change_a_turn_cut(two_voices, sizes):
    audio = two_voices.audio
    whole = list(segment([audio], Segmenter(SegmenterConfig(), source="x")))
    rng = np.random.default_rng(len(sizes))
    pieces, i = [], 0
    while i < len(audio):
        n = int(rng.choice(sizes))
        pieces.append(audio[i:i + n])
        i += n
    fed = list(segment(pieces, Segmenter(SegmenterConfig(), source="x")))
    assert len(whole) == 2
    assert len(fed) == len(whole) and all(same(a, b) for a, b in zip(fed, whole))


@needs_espeak
def test_the_tentative_utterance_in_a_turn_pause_is_the_one_cut_there(two_voices):
    """Announced at tail_ms into the pause, void when speech resumes, then cut at that very pause
    once the voices are compared: same utterance, same speculation key (listen reuses it)."""
    config = SegmenterConfig()
    tentative = []
    segmenter = Segmenter(config, source="x", on_tentative=tentative.append)
    audio, closed, pending_after_cut = two_voices.audio, [], []
    for i in range(0, len(audio), 480):
        out = segmenter.push(audio[i:i + 480])
        if out and segmenter.in_speech:
            pending_after_cut.append(segmenter.pending)
        closed += out
    closed += segmenter.flush()
    assert len(closed) == 2
    first = closed[0]
    matches = [t for t in tentative if same(t, first)]
    assert len(matches) == 1
    assert speculation_key(matches[0]) == speculation_key(first)
    # cut while the second voice speaks: nothing tentative stands then
    assert pending_after_cut == [None]
    assert any(same(t, closed[1]) for t in tentative)
    # the callback does not change the segmentation
    assert [(u.start, u.end) for u in run(config, audio)] == [(u.start, u.end) for u in closed]


@needs_espeak
def test_a_pending_turn_is_tested_when_the_input_ends(two_voices):
    """Input ending inside the second voice's speech, before its probe is complete: the flush
    tests the pause first, then closes the rest."""
    config = dataclasses.replace(SegmenterConfig(), turn_probe_ms=10000)
    end = int((two_voices.spans[1][1] - 0.2) * SAMPLE_RATE)
    assert [u.index for u in run(config, two_voices.audio[:end])] == [0, 1]
    assert len(run(dataclasses.replace(config, turn_split=False), two_voices.audio[:end])) == 1


@needs_espeak
def test_a_pending_turn_is_tested_before_a_max_length_split(two_voices):
    """The limit falls about half a second into the second voice, before its probe is complete:
    the pause is tested first (and cut as a turn), so no split is needed inside the speech."""
    first_speech = two_voices.spans[1][0] - two_voices.spans[0][0]
    config = SegmenterConfig(max_utterance_s=round(first_speech + 0.5, 2))
    utterances = run(config, two_voices.audio)
    assert [u.index for u in utterances] == [0, 1]
    for u, (start, end) in zip(utterances, two_voices.spans):
        assert abs(u.start - start) <= 0.25 and abs(u.end - end) <= 0.25
