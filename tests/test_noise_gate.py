"""Noise is not speech (issue 12): the segmenter's voice check (Silero VAD behind WebRTC) emits
nothing from noise-only audio, and still finds the speech around the noise."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import have_espeak
from mersa_stream.config import SegmenterConfig
from mersa_stream.pipeline import segment
from mersa_stream.segmenter import Segmenter
from mersa_stream.types import SAMPLE_RATE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # conversations.py

from conversations import noise, speak  # noqa: E402

SECONDS = 6


def found(audio: np.ndarray, config: SegmenterConfig | None = None) -> list:
    config = config or SegmenterConfig()
    blocks = [audio[i:i + 1600] for i in range(0, len(audio), 1600)]
    return list(segment(blocks, Segmenter(config, source="noise")))


def steps(rng, low_db: float, high_db: float, period_s: float = 1.0) -> np.ndarray:
    """White noise whose level steps between two levels every `period_s`."""
    n = SECONDS * SAMPLE_RATE
    high = (np.arange(n) // int(period_s * SAMPLE_RATE)) % 2 == 1
    return np.where(high, noise("white", n, high_db, rng),
                    noise("white", n, low_db, rng)).astype(np.float32)


def noises():
    rng = np.random.default_rng(0)
    n = SECONDS * SAMPLE_RATE
    for kind in ("white", "pink", "brown"):
        for db in (-55.0, -35.0, -20.0):
            yield f"{kind}{db:g}", noise(kind, n, db, rng)
    yield "steps-66/-40", steps(rng, -66.0, -40.0)
    yield "steps-silence/-54", steps(rng, -120.0, -54.0, 0.9)
    yield "hum-30", noise("hum", n, -30.0, rng)
    yield "tones-25", noise("tones", n, -25.0, rng)
    yield "tones+pink", noise("tones", n, -25.0, rng) + noise("pink", n, -35.0, rng)


NOISES = dict(noises())


@pytest.mark.parametrize("name", list(NOISES))
def test_noise_alone_gives_no_utterance(name):
    assert found(NOISES[name]) == []


def test_webrtc_alone_does_fire_on_noise_steps():
    """What the voice check is for: WebRTC VAD by itself calls level steps and loud noise speech
    (so the test above could fail)."""
    webrtc = SegmenterConfig(voice_check="none")
    fired = [name for name, audio in NOISES.items() if found(audio, webrtc)]
    assert "steps-66/-40" in fired and len(fired) >= 3, fired


@pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")
@pytest.mark.parametrize("name", ["steps-66/-40", "pink-35", "tones+pink", "hum-30"])
def test_speech_around_noise_is_still_found(name):
    """Sentence, noise, sentence (the noise between, and under everything at -60 dBFS): exactly
    the two sentences, bounds within 0.25 s; nothing inside the noise."""
    rng = np.random.default_rng(1)
    first = speak("Thank you so much for coming tonight.", "en-us") * 0.5
    second = speak("Have you seen my keys anywhere?", "en-us+f3") * 0.5
    lead = np.zeros(SAMPLE_RATE, np.float32)
    gap = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([lead, first, gap, NOISES[name], gap, second, lead])
    audio = audio + noise("white", len(audio), -60.0, rng)
    t1 = len(lead) / SAMPLE_RATE
    t2 = t1 + (len(first) + 2 * len(gap) + len(NOISES[name])) / SAMPLE_RATE
    truth = [(t1, t1 + len(first) / SAMPLE_RATE), (t2, t2 + len(second) / SAMPLE_RATE)]
    utterances = found(audio)
    assert [(round(u.start, 2), round(u.end, 2)) for u in utterances] and \
        len(utterances) == 2, [(u.start, u.end) for u in utterances]
    for u, (start, end) in zip(utterances, truth):
        assert abs(u.start - start) <= 0.25 and abs(u.end - end) <= 0.25


@pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")
def test_speech_under_steady_noise_is_found():
    rng = np.random.default_rng(2)
    speech = speak("I lost my wallet on the bus this morning.", "en-us+m3") * 0.5
    pad = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([pad, speech, pad])
    for kind in ("white", "pink", "brown"):
        noisy = audio + noise(kind, len(audio), -35.0, rng)
        utterances = found(noisy)
        assert len(utterances) == 1, kind
        assert abs(utterances[0].start - 1.0) <= 0.25


@pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")
@pytest.mark.parametrize("sound", ["Ha ha ha ha ha!", "Hmm. Mmm.", "Ooh. Ahh."])
def test_a_voice_without_words_is_kept(sound):
    """Laughter, a hum, a sigh: a human voice, so an utterance (its text may be empty; the
    emotion comes from the audio). The threshold is what decides: at its top it is refused."""
    pad = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([pad, speak(sound, "en-us+f3") * 0.5, pad])
    assert len(found(audio)) == 1
    assert found(audio, dataclasses.replace(SegmenterConfig(), voice_threshold=0.99)) == []
