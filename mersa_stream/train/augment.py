"""Channel augmentation for training the audio branch: noise, reverberation, telephone band,
lossy codecs and gain.

Every function takes and returns 16 kHz mono float32 numpy arrays of the same length, clipped to
[-1, 1]. Randomness comes only from the `rng` passed in (or, in `Augmenter`, from an integer
seed), so a (clip, seed) pair always gives the same augmented audio and features computed from
it can be cached under `Augmenter.describe()` plus the seed.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import asdict, dataclass

import numpy as np
import soxr

from ..errors import ConfigError
from ..types import SAMPLE_RATE

# bump when an algorithm below changes, so feature caches keyed on describe() are invalidated
AUGMENT_VERSION = 1

NOISE_COLORS = ("white", "pink", "brown")
# codec name -> (FFmpeg encoder, container, encoder sample rate)
CODECS = {"mp3": ("libmp3lame", "mp3", 16_000), "opus": ("libopus", "ogg", 48_000)}
CODEC_ALIASES = {"mp3": "mp3", "libmp3lame": "mp3", "opus": "opus", "libopus": "opus"}


def _out(audio: np.ndarray) -> np.ndarray:
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad to `length` samples."""
    if len(audio) >= length:
        return audio[:length]
    return np.concatenate([audio, np.zeros(length - len(audio), audio.dtype)])


# ----------------------------------------------------------------------------------------- gain

def gain(audio: np.ndarray, db: float) -> np.ndarray:
    return _out(np.asarray(audio, np.float32) * np.float32(10.0 ** (db / 20.0)))


# ---------------------------------------------------------------------------------------- noise

def active_power(audio: np.ndarray, frame: int = 320, floor_db: float = 40.0) -> float:
    """Mean power over the frames within `floor_db` of the loudest 20 ms frame: pauses would
    otherwise count as speech and make the real SNR worse than asked for."""
    x = np.asarray(audio, np.float64)
    n = len(x) // frame * frame
    if n == 0:
        return float(np.mean(x ** 2)) if len(x) else 0.0
    frames = np.mean(x[:n].reshape(-1, frame) ** 2, axis=1)
    loud = frames[frames >= frames.max() * 10 ** (-floor_db / 10)]
    return float(loud.mean())


def coloured_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum 1 (white), 1/f (pink) or 1/f^2 (brown), unit power."""
    white = rng.standard_normal(n)
    if color == "white" or n < 2:
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        # below 20 Hz the 1/f slope is held flat: otherwise DC drift would take all the power
        f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
        spectrum *= f ** (-0.5 if color == "pink" else -1.0)
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n)
    return noise / max(np.sqrt(np.mean(noise ** 2)), 1e-12)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator,
              color: str | None = None) -> np.ndarray:
    """Add white/pink/brown (rng's choice unless `color`) Gaussian noise at `snr_db` below the
    speech power. Silent input has no speech power to refer to and is returned unchanged."""
    color = color or NOISE_COLORS[rng.integers(len(NOISE_COLORS))]
    if color not in NOISE_COLORS:
        raise ConfigError(f"noise colour {color!r}: one of {', '.join(NOISE_COLORS)}")
    audio = np.asarray(audio, np.float32)
    noise = coloured_noise(len(audio), color, rng)  # drawn even for silence: same rng use
    power = active_power(audio)
    if power <= 0:
        return _out(audio.copy())
    return _out(audio + noise * np.sqrt(power / 10 ** (snr_db / 10)))


# -------------------------------------------------------------------------------------- reverb

def room_impulse(rt60_s: float, rng: np.random.Generator, drr_db: float = 3.0) -> np.ndarray:
    """Direct path (1.0) then exponentially decaying Gaussian noise: -60 dB after rt60_s. The
    tail's energy sits `drr_db` below the direct path (a mid-sized room at a few metres)."""
    n = max(2, int(rt60_s * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    # amplitude falls by 1000x (60 dB) over rt60: exp(-ln(1000) t / rt60)
    tail = rng.standard_normal(n) * np.exp(-np.log(1000.0) * t / rt60_s)
    predelay = int(0.002 * SAMPLE_RATE)  # reflections arrive a few ms after the direct sound
    tail[:predelay] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / max(np.sum(tail ** 2), 1e-12))
    tail[0] = 1.0
    return tail


def fft_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a) + len(b) - 1
    size = 1 << (n - 1).bit_length()  # np.convolve of seconds by 10^4 taps is far too slow
    return np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]


def reverberate(audio: np.ndarray, rt60_s: float, rng: np.random.Generator,
                drr_db: float | None = None) -> np.ndarray:
    """Convolve with a synthetic room response; trimmed to the input length (the tail past the
    end is dropped, as if the recording stopped) and rescaled to the input's peak."""
    if rt60_s <= 0:
        raise ConfigError(f"rt60 {rt60_s}: must be > 0 seconds")
    drr = rng.uniform(0.0, 8.0) if drr_db is None else drr_db
    audio = np.asarray(audio, np.float32)
    if not len(audio):
        return audio.copy()
    wet = fft_convolve(audio.astype(np.float64), room_impulse(rt60_s, rng, drr))[:len(audio)]
    peak_in, peak_out = np.max(np.abs(audio)), np.max(np.abs(wet))
    return _out(wet * (peak_in / peak_out) if peak_out > 0 else wet)


# ----------------------------------------------------------------------------------- telephone

def band_pass(audio: np.ndarray, low_hz: float = 300.0, high_hz: float = 3400.0,
              taper_hz: float = 100.0) -> np.ndarray:
    """Zero-phase FFT band-pass with raised-cosine edges `taper_hz` wide outside the band (numpy
    only: scipy is not a dependency). Zero-padded so the circular FFT does not wrap the end onto
    the start."""
    n = len(audio)
    size = 1 << (n + 2048 - 1).bit_length()
    f = np.fft.rfftfreq(size, 1 / SAMPLE_RATE)
    below = np.clip((f - (low_hz - taper_hz)) / taper_hz, 0, 1)
    above = np.clip(((high_hz + taper_hz) - f) / taper_hz, 0, 1)
    response = np.minimum(0.5 - 0.5 * np.cos(np.pi * below), 0.5 - 0.5 * np.cos(np.pi * above))
    return np.fft.irfft(np.fft.rfft(audio, size) * response, size)[:n]


def telephone(audio: np.ndarray) -> np.ndarray:
    """A narrowband (8 kHz) telephone channel: 300-3400 Hz, then down to 8 kHz and back."""
    audio = np.asarray(audio, np.float32)
    if len(audio) < 2:
        return audio.copy()
    narrow = soxr.resample(band_pass(audio.astype(np.float64)), SAMPLE_RATE, 8_000)
    return _out(_fit(soxr.resample(narrow, 8_000, SAMPLE_RATE), len(audio)))


# -------------------------------------------------------------------------------------- codecs

@functools.lru_cache(maxsize=None)
def available_codecs() -> tuple[str, ...]:
    """The codecs of CODECS whose encoder PyAV's bundled FFmpeg has."""
    import av

    return tuple(name for name, (encoder, _, _) in CODECS.items()
                 if encoder in av.codecs_available)


def _encode(audio: np.ndarray, encoder: str, container: str, rate: int, bitrate: int) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.layout, stream.bit_rate = "mono", int(bitrate)
        # PyAV re-blocks frames to the encoder's frame size itself
        step = 4096
        for pts in range(0, len(audio), step):
            frame = av.AudioFrame.from_ndarray(audio[None, pts:pts + step], format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = rate, pts
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def _decode(data: bytes, rate: int) -> np.ndarray:
    import av

    chunks = []
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def codec_roundtrip(audio: np.ndarray, codec: str, bitrate: int) -> np.ndarray:
    """Encode to mp3 or opus (`bitrate` in bits/s) in memory and decode back. The containers
    record the encoder delay (LAME tag, Ogg pre-skip) and FFmpeg removes it on decoding, so the
    output lines up with the input; it is then trimmed or zero-padded to the input length."""
    name = CODEC_ALIASES.get(codec)
    if name is None:
        raise ConfigError(f"codec {codec!r}: one of {', '.join(sorted(CODEC_ALIASES))}")
    encoder, container, rate = CODECS[name]
    if name not in available_codecs():
        raise ConfigError(f"codec {codec!r}: the FFmpeg bundled with PyAV has no {encoder} "
                          f"encoder (available: {', '.join(available_codecs()) or 'none'})")
    audio = np.asarray(audio, np.float32)
    if not len(audio):
        return audio.copy()
    # opus runs at 48 kHz only; soxr both ways keeps the rate conversion the same as telephone()
    wide = audio if rate == SAMPLE_RATE else soxr.resample(audio, SAMPLE_RATE, rate)
    decoded = _decode(_encode(np.ascontiguousarray(wide, np.float32), encoder, container, rate,
                              bitrate), rate)
    if rate != SAMPLE_RATE and len(decoded):
        decoded = soxr.resample(decoded, rate, SAMPLE_RATE)
    return _out(_fit(decoded.astype(np.float32), len(audio)))


# ------------------------------------------------------------------------------------ recipe

def seed_for(*parts: object) -> int:
    """A stable integer seed from e.g. (record id, epoch): Python's hash() changes per process."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _check_range(name: str, pair: tuple[float, float]) -> None:
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ConfigError(f"augment {name} {pair!r}: needs (low, high) with low <= high")


@dataclass(frozen=True)
class Augmenter:
    """A random chain, in the order sound meets it: room (reverb), background (noise), channel
    (telephone band, codec), level (gain). Each step applies with its probability."""

    p_reverb: float = 0.3
    rt60_s: tuple[float, float] = (0.2, 0.8)
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_telephone: float = 0.1
    p_codec: float = 0.2
    codecs: tuple[str, ...] = ("mp3", "opus")
    bitrates: tuple[int, ...] = (16_000, 24_000, 32_000)
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-6.0, 6.0)

    def __post_init__(self):
        for name in ("p_reverb", "p_noise", "p_telephone", "p_codec", "p_gain"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment {name} {getattr(self, name)}: must be in [0, 1]")
        for name in ("rt60_s", "snr_db", "gain_db"):
            _check_range(name, getattr(self, name))
        if self.rt60_s[0] <= 0:
            raise ConfigError(f"augment rt60_s {self.rt60_s!r}: must be > 0")
        unknown = [c for c in self.codecs if c not in CODEC_ALIASES]
        if unknown or not self.bitrates:
            raise ConfigError(f"augment codecs {self.codecs!r} / bitrates {self.bitrates!r}: "
                              f"codecs from {', '.join(CODECS)}, at least one bitrate")

    def usable_codecs(self) -> tuple[str, ...]:
        """The configured codecs this FFmpeg can encode (the others are skipped, not errors)."""
        have = available_codecs()
        return tuple(c for c in self.codecs if CODEC_ALIASES[c] in have)

    def __call__(self, audio: np.ndarray, seed: int) -> np.ndarray:
        # one generator per step, all from the seed: changing one step's probability or range
        # leaves the other steps' choices for the same seed as they were
        rngs = [np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, step]) for step in range(5)]
        x = np.asarray(audio, np.float32)
        if rngs[0].random() < self.p_reverb:
            x = reverberate(x, rngs[0].uniform(*self.rt60_s), rngs[0])
        if rngs[1].random() < self.p_noise:
            x = add_noise(x, rngs[1].uniform(*self.snr_db), rngs[1])
        if rngs[2].random() < self.p_telephone:
            x = telephone(x)
        codecs = self.usable_codecs()
        if rngs[3].random() < self.p_codec and codecs:
            x = codec_roundtrip(x, codecs[rngs[3].integers(len(codecs))],
                                int(self.bitrates[rngs[3].integers(len(self.bitrates))]))
        if rngs[4].random() < self.p_gain:
            x = gain(x, rngs[4].uniform(*self.gain_db))
        return _out(x)

    def describe(self) -> dict:
        """JSON-ready settings for a feature-cache key; includes the codecs actually usable here,
        since a missing encoder changes the outputs."""
        # numbers as floats (bitrates as ints): p_noise=1 and p_noise=1.0 are one setting
        settings = {k: ([int(b) for b in v] if k == "bitrates" else list(v) if k == "codecs"
                        else [float(b) for b in v] if isinstance(v, tuple) else float(v))
                    for k, v in asdict(self).items()}
        return {"version": AUGMENT_VERSION, **settings, "usable_codecs": list(self.usable_codecs())}
