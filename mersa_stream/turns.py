"""A turn-change cue from the audio itself: the voice's pitch register before and after a pause.

The segmenter (segmenter.py, `turn_split`) asks, at a pause inside an open utterance, whether the
speech on both sides comes from different voices: whether the median pitch of its voiced audio
(a few seconds before, up to a second after) differs by `turn_semitones` or more. Why pitch and
why the median (docs/benchmarks.md, "Segmentation", measured on tuning seeds): between a man's and
a woman's espeak-ng voice it differs by 7-15 semitones, across a pause inside a sentence by under
3 in 90% of cases (rarely 7 or more), while the pitch jump across the pause itself moves +-6
semitones inside a sentence. Statistics of the spectrum (MFCC means and variances, a Gaussian
divergence or BIC between the two sides) told turns from inner pauses barely better than chance on
1-3 s of speech: the words said, not the voice, dominate them. The limits: two voices of one pitch
range are not told apart, and acted emotion moves a real speaker's register as far as a change of
sex (RAVDESS), so on such speech the cue cuts about as often between one actor's sentences as
between a man's and a woman's.

Pitch here: the normalised autocorrelation of 40 ms windows every 10 ms, its highest peak between
70 and 400 Hz; windows whose peak stays under 0.5 (no clear period) are left out. numpy only.
"""

from __future__ import annotations

import numpy as np

from .types import SAMPLE_RATE

WINDOW = 640  # samples (40 ms): two periods of the lowest pitch looked for
HOP = 160  # 10 ms
F0_MIN, F0_MAX = 70.0, 400.0
CLARITY = 0.5  # lowest normalised autocorrelation peak of a window with a pitch
MIN_PITCHED = 20  # windows (200 ms) each side needs before a register is trusted


def pitch(audio: np.ndarray) -> np.ndarray:
    """F0 in Hz of each 40 ms window (10 ms hop) of `audio` that has a clear period."""
    if len(audio) < WINDOW:
        return np.zeros(0)
    n = 1 + (len(audio) - WINDOW) // HOP
    x = audio[np.arange(WINDOW)[None, :] + HOP * np.arange(n)[:, None]].astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    ac = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * WINDOW)) ** 2)[:, :WINDOW]
    energy = ac[:, 0]
    lo, hi = int(SAMPLE_RATE / F0_MAX), int(SAMPLE_RATE / F0_MIN)
    lag = lo + np.argmax(ac[:, lo:hi + 1], axis=1)
    peak = ac[np.arange(n), lag] / np.maximum(energy, 1e-12)
    clear = (peak >= CLARITY) & (energy > 0)
    return SAMPLE_RATE / lag[clear]


def register(runs: list[np.ndarray]) -> float | None:
    """Median pitch in semitones (re 1 Hz) over stretches of voiced audio; None: too little
    pitched audio to say."""
    f0 = np.concatenate([pitch(run) for run in runs] + [np.zeros(0)])
    if len(f0) < MIN_PITCHED:
        return None
    return float(12 * np.log2(np.median(f0)))


def register_change(before: list[np.ndarray], after: list[np.ndarray]) -> float | None:
    """How far apart (semitones) the voices' registers are on the two sides of a pause; None:
    one side has too little pitched audio."""
    a, b = register(before), register(after)
    return None if a is None or b is None else abs(a - b)
