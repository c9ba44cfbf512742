import numpy as np
import pytest

from mersa_stream.packing import Placement, assign_segments, pack
from mersa_stream.types import SAMPLE_RATE, Utterance


def utterance(index, seconds, value=None):
    n = int(seconds * SAMPLE_RATE)
    audio = np.full(n, value if value is not None else 0.01 * (index + 1), np.float32)
    return Utterance("x", index, float(index), float(index) + seconds, audio, float(index))


def test_windows_hold_utterances_in_order_with_gaps():
    items = [utterance(i, s) for i, s in enumerate([10.0, 12.0, 9.0, 4.0, 29.5])]
    windows = list(pack(items, gap_s=0.5, window_s=30.0))
    assert [[p.utterance.index for p in w.placements] for w in windows] == [[0, 1], [2, 3], [4]]
    first = windows[0]
    assert first.placements[1].offset == int(10.5 * SAMPLE_RATE)
    assert len(first.audio) == int(22.5 * SAMPLE_RATE) <= 30 * SAMPLE_RATE
    for window in windows:
        for p in window.placements:  # each utterance's samples sit where its placement says
            assert np.array_equal(window.audio[p.offset:p.offset + p.length], p.utterance.audio)
    gap = first.audio[10 * SAMPLE_RATE:int(10.5 * SAMPLE_RATE)]
    assert not gap.any()


def test_encoder_frames_cover_each_placement():
    p = Placement(utterance(0, 2.0), offset=int(3.3 * SAMPLE_RATE), length=2 * SAMPLE_RATE)
    assert (p.frames.start, p.frames.stop) == (165, 265)  # 50 frames per second


def test_segments_go_to_the_placement_they_cover():
    placements = [Placement(utterance(0, 2.0), 0, 2 * SAMPLE_RATE),
                  Placement(utterance(1, 3.0), int(2.5 * SAMPLE_RATE), 3 * SAMPLE_RATE),
                  Placement(utterance(2, 1.0), int(6 * SAMPLE_RATE), SAMPLE_RATE)]
    segments = [(0.0, 1.9, " Hello there."), (2.6, 5.4, " How are you doing?"),
                (8.0, 9.0, " Stray.")]
    assert assign_segments(segments, placements) == ["Hello there.", "How are you doing?",
                                                     "Stray."]  # nearest when none overlaps


def test_a_segment_across_a_boundary_is_split_by_time():
    placements = [Placement(utterance(0, 2.0), 0, 2 * SAMPLE_RATE),
                  Placement(utterance(1, 2.0), int(2.2 * SAMPLE_RATE), 2 * SAMPLE_RATE)]
    texts = assign_segments([(0.0, 4.2, " one two three four five six seven eight")], placements)
    assert texts == ["one two three four", "five six seven eight"]
    assert assign_segments([], placements) == ["", ""]


@pytest.mark.parametrize("gap", [0.0, 0.2, 1.0])
def test_every_utterance_lands_in_exactly_one_window(gap):
    rng = np.random.default_rng(int(gap * 10))
    items = [utterance(i, float(s)) for i, s in enumerate(rng.uniform(0.3, 15.0, 40))]
    windows = list(pack(iter(items), gap_s=gap))
    assert [p.utterance.index for w in windows for p in w.placements] == list(range(40))
    assert all(len(w.audio) <= 30 * SAMPLE_RATE for w in windows)
