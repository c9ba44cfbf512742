"""Training on what the runtime classifies: corpus clips cut to the segmenter's speech
(`train.audio_speech_only`, `segmenter.speech_of`)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import have_espeak, speak, write_wav
from mersa_stream.segmenter import speech_of
from mersa_stream.train.data import Record
from mersa_stream.types import SAMPLE_RATE

pytestmark = pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng")


def padded_clip(seconds_before: float = 1.5, seconds_after: float = 1.5) -> np.ndarray:
    """A RAVDESS-like clip: a sentence with silence around it (faint room noise)."""
    speech = speak("Kids are talking by the door.")
    rng = np.random.default_rng(0)
    before = int(seconds_before * SAMPLE_RATE)
    audio = np.zeros(before + len(speech) + int(seconds_after * SAMPLE_RATE), np.float32)
    audio[before:before + len(speech)] = speech
    return (audio + 0.001 * rng.standard_normal(len(audio))).astype(np.float32)


def test_speech_of_keeps_the_sentence_and_drops_the_silence():
    clip = padded_clip()
    speech = speech_of(clip)
    assert speech is not None
    sentence = speak("Kids are talking by the door.")
    # the sentence with at most pre-roll + tail around it (the default segmenter's 0.3 + 0.15 s)
    assert len(sentence) <= len(speech) <= len(sentence) + int(0.6 * SAMPLE_RATE)
    assert len(speech) < len(clip) - 2 * SAMPLE_RATE
    # the energy of the clip is all in what is kept
    assert np.sum(speech.astype(np.float64) ** 2) > 0.99 * np.sum(clip.astype(np.float64) ** 2)
    assert speech_of(np.zeros(2 * SAMPLE_RATE, np.float32)) is None


def test_featurizer_encodes_the_speech_and_keys_it_apart(tmp_path):
    from mersa_stream.decode import load_audio
    from mersa_stream.train.features import AudioFeaturizer

    path = write_wav(tmp_path / "clip.wav", padded_clip())
    clip = load_audio(str(path))  # as the file holds it (16-bit)
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(SAMPLE_RATE, np.float32))
    records = [Record("a", str(path), "", "neutral", dataset="ravdess"),
               Record("q", str(quiet), "", "neutral", dataset="ravdess")]
    whole = AudioFeaturizer("whisper-layers", "tiny.en")
    cut = AudioFeaturizer("whisper-layers", "tiny.en", speech_only=True)
    assert cut.key != whole.key  # never read from the whole clips' cache entries
    whole_feats, cut_feats = whole(records), cut(records)
    expected = whole.encoder.encode([speech_of(clip)])[0]
    np.testing.assert_array_equal(cut_feats[0], expected)
    assert len(cut_feats[0]) < len(whole_feats[0]) - 2 * 50  # Whisper: 50 frames a second
    # a clip with no speech in it stays whole rather than vanishing
    np.testing.assert_array_equal(cut_feats[1], whole_feats[1])
