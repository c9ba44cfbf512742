import dataclasses

import numpy as np
import pytest

from mersa_stream.packing import Placement, Word, assign_words, owner, pack, pack_fixed, word_time
from mersa_stream.types import SAMPLE_RATE, Utterance

PRE, TAIL = 0.3, 0.15  # the segmenter's default pre-roll and tail around the speech


def source(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * SAMPLE_RATE)).astype(
        np.float32)


def cut(audio: np.ndarray, index: int, start: float, end: float) -> Utterance:
    """An utterance as the segmenter hands it on: speech [start, end] plus pre-roll and tail."""
    first, last = int((start - PRE) * SAMPLE_RATE), int((end + TAIL) * SAMPLE_RATE)
    return Utterance("x", index, start, end, audio[first:last], first / SAMPLE_RATE)


def to_source(window, t: float) -> float:
    """Window time -> source time through the placement whose audio holds it."""
    for p in window.placements:
        if p.span[0] <= t < p.span[1]:
            return p.utterance.audio_offset + p.skip / SAMPLE_RATE + t - p.span[0]
    raise AssertionError(f"{t} is in no placement")


def test_pauses_are_kept_up_to_the_gap_and_shared_audio_is_laid_once():
    audio = source(40)
    spans = [(1.0, 4.0), (4.3, 6.0), (8.0, 10.0), (10.6, 12.0)]  # pauses 0.3, 2.0, 0.6 s
    items = [cut(audio, i, s, e) for i, (s, e) in enumerate(spans)]
    (window,) = pack(items, gap_s=1.0)
    first, second, third, fourth = window.placements
    # 0.3 s pause < pre-roll + tail: the second one's pre-roll is the first one's tail, laid once
    assert second.skip == pytest.approx(0.15 * SAMPLE_RATE, abs=1)
    assert second.offset == first.offset + first.length
    # 2.0 s of source pause (1.55 s between the audios) shortened to 1.0 s of silence
    assert third.offset - (second.offset + second.length) == SAMPLE_RATE and third.skip == 0
    assert not window.audio[second.offset + second.length:third.offset].any()
    # 0.6 s pause: 0.15 s between the audios, kept
    assert fourth.offset - (third.offset + third.length) == pytest.approx(0.15 * SAMPLE_RATE,
                                                                          abs=1)
    # every laid sample is the source's own, at the source time the mapping says
    for p in window.placements:
        for t in np.linspace(p.span[0], p.span[1] - 1e-3, 7):
            x = int(t * SAMPLE_RATE)
            assert window.audio[x] == audio[int(round(to_source(window, x / SAMPLE_RATE)
                                                      * SAMPLE_RATE))]
    # the speech bounds map into the window where that speech was laid
    for p, (start, end) in zip(window.placements, spans):
        assert to_source(window, p.speech[0] + 1e-4) == pytest.approx(start, abs=1e-3)
        assert to_source(window, p.speech[1] - 1e-4) == pytest.approx(end, abs=1e-3)


def test_in_real_time_with_a_long_gap():
    audio = source(20)
    items = [cut(audio, 0, 1.0, 3.0), cut(audio, 1, 7.0, 9.0)]
    (window,) = pack(items, gap_s=30.0)
    assert window.placements[1].offset / SAMPLE_RATE == pytest.approx(6.7 - 0.7, abs=1e-3)
    assert len(window.audio) / SAMPLE_RATE == pytest.approx(9.15 - 0.7, abs=1e-3)


@pytest.mark.parametrize("gap", [0.0, 0.2, 1.0, 30.0])
def test_every_utterance_lands_in_exactly_one_window(gap):
    rng = np.random.default_rng(int(gap * 10))
    audio = source(900, seed=1)
    items, t = [], 1.0
    for i in range(40):
        length, pause = rng.uniform(0.3, 14.0), rng.uniform(0.1, 2.0)
        items.append(cut(audio, i, t, t + length))
        t += length + pause
    windows = list(pack(iter(items), gap_s=gap))
    assert [p.utterance.index for w in windows for p in w.placements] == list(range(40))
    for w in windows:
        assert len(w.audio) <= 30 * SAMPLE_RATE
        assert w.placements[0].offset == 0 and w.placements[0].skip == 0
        for p in w.placements:  # each utterance's speech is laid whole
            assert p.skip <= (PRE + TAIL) * SAMPLE_RATE
            assert p.skip + p.length == len(p.utterance.audio)


def test_an_utterance_longer_than_a_window_is_cut_to_it():
    audio = source(40)
    (window,) = pack([cut(audio, 0, 1.0, 31.5)])
    assert len(window.audio) == 30 * SAMPLE_RATE


def test_fixed_layout_keeps_the_trainers_windows():
    items = [Utterance("x", i, 0.0, s, np.full(int(s * SAMPLE_RATE), 0.1, np.float32), 0.0)
             for i, s in enumerate([10.0, 12.0, 9.0, 4.0, 29.5])]
    windows = list(pack_fixed(items, gap_s=0.5, window_s=30.0))
    assert [[p.utterance.index for p in w.placements] for w in windows] == [[0, 1], [2, 3], [4]]
    assert windows[0].placements[1].offset == int(10.5 * SAMPLE_RATE)
    assert (windows[0].placements[1].frames.start, windows[0].placements[1].frames.stop) == (
        525, 1125)  # Whisper's 50 encoder frames a second


def placements_of(spans, gap=0.5):
    audio = source(60)
    (window,) = pack([cut(audio, i, s, e) for i, (s, e) in enumerate(spans)], gap_s=gap)
    return window.placements


def test_each_word_goes_once_to_the_utterance_holding_its_time():
    placements = placements_of([(1.0, 3.0), (3.4, 5.0), (7.0, 8.0)])
    a, b, c = (p.speech for p in placements)
    words = [Word(a[0] - 0.2, a[0] + 0.2, " One"),  # starts in the pre-roll
             Word(a[1] - 0.3, a[1] + 0.05, " two."),  # ends in the tail
             Word(b[0] - 0.05, b[0] + 0.25, " Three"),  # across the 0.4 s pause, mostly in b
             Word(b[1] - 0.1, b[1] + 0.6, " four"),  # mostly in the pause after b, nearest b
             Word(c[0] - 0.35, c[0] + 0.1, " five"),  # mostly before c, nearer c than b
             Word(c[1], c[1] + 0.4, " six.")]  # past the last speech
    assert assign_words(words, placements) == ["One two.", "Three four", "five six."]
    assert assign_words([], placements) == ["", "", ""]


def test_a_word_stretched_back_into_a_pause_goes_where_it_ends():
    placements = placements_of([(1.0, 3.0), (5.0, 6.0)], gap=2.0)
    (_, first), (second, _) = (p.speech for p in placements)
    stretched = Word(first - 0.5, second + 0.1, " Hey")  # its middle is nearer the first
    assert owner((stretched.start + stretched.end) / 2, placements) == 0
    assert word_time(stretched, 1.4) > (first + second) / 2
    assert assign_words([Word(first - 0.3, first, " bye."), stretched], placements) == [
        "bye.", "Hey"]


def test_placement_frames_cover_it():
    p = Placement(Utterance("x", 0, 0.0, 2.0, np.zeros(2 * SAMPLE_RATE, np.float32), 0.0),
                  offset=int(3.3 * SAMPLE_RATE), length=2 * SAMPLE_RATE)
    assert (p.frames.start, p.frames.stop) == (165, 265)


def test_channels_never_share_audio():
    """`--channels split`: the channels' utterances come interleaved by time and may overlap;
    each is laid whole, its own channel's audio."""
    left, right = source(10, seed=1), source(10, seed=2)
    items = [dataclasses.replace(cut(left, 0, 1.0, 4.0), channel=0),
             dataclasses.replace(cut(right, 1, 3.0, 6.0), channel=1)]
    (window,) = pack(items, gap_s=0.5)
    first, second = window.placements
    assert second.skip == 0 and second.offset == first.offset + first.length
    assert np.array_equal(window.audio[second.offset:], items[1].audio)
    assert assign_words([Word(*first.speech, " left"), Word(*second.speech, " right")],
                        window.placements) == ["left", "right"]
