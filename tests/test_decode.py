import numpy as np
import pytest
import soundfile as sf

from helpers import encode_pyav
from mersa_stream.decode import load_audio, stream_audio
from mersa_stream.errors import InputError
from mersa_stream.types import SAMPLE_RATE


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.4 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def dominant_frequency(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio))


@pytest.mark.parametrize("suffix, subtype, rate, channels", [
    (".wav", "PCM_16", 16000, 1), (".wav", "PCM_24", 44100, 2), (".wav", "FLOAT", 48000, 6),
    (".flac", "PCM_16", 22050, 1), (".ogg", "VORBIS", 32000, 2), (".wav", "PCM_16", 8000, 1),
])
def test_soundfile_formats_become_16k_mono(tmp_path, suffix, subtype, rate, channels):
    path = tmp_path / f"tone{suffix}"
    sf.write(str(path), tone(2.0, rate, channels=channels), rate, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 2 * SAMPLE_RATE) <= 32
    assert abs(dominant_frequency(audio) - 440) < 5
    assert 0.35 < np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("suffix, codec, video", [(".mp3", "mp3", False), (".m4a", "aac", False),
                                                  (".mp4", "aac", True)])
def test_compressed_formats_through_pyav(tmp_path, suffix, codec, video):
    path = tmp_path / f"tone{suffix}"
    encode_pyav(path, tone(2.0, 44100, freq=660), 44100, codec, video=video)
    audio = load_audio(path)
    assert abs(len(audio) / SAMPLE_RATE - 2.0) < 0.1
    assert abs(dominant_frequency(audio) - 660) < 5


def test_long_file_is_streamed_in_chunks(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(str(path), tone(35.0, 48000), 48000)
    chunks = list(stream_audio(path))
    assert len(chunks) >= 4 and max(len(c) for c in chunks) <= 10 * SAMPLE_RATE + 64
    assert abs(sum(len(c) for c in chunks) - 35 * SAMPLE_RATE) <= 32


def test_non_finite_samples_are_made_safe(tmp_path):
    audio = tone(1.0, 16000).astype(np.float32)
    audio[100:200] = np.nan
    audio[300] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(str(path), audio, 16000, subtype="FLOAT")
    decoded = load_audio(path)
    assert np.isfinite(decoded).all() and np.abs(decoded).max() <= 1.0


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "file is empty"),
    (lambda p: p.write_text("hello, this is text\n" * 50), "not a readable audio"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not a readable audio"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: None, "no such file"),
])
def test_unreadable_inputs_name_the_file(tmp_path, make, message):
    path = tmp_path / "bad input é.wav"
    make(path)
    with pytest.raises(InputError) as info:
        load_audio(path)
    assert message in info.value.message and str(path) in info.value.message
    assert "\n" not in info.value.message


def test_video_without_audio_stream(tmp_path):
    path = encode_pyav(tmp_path / "silent.mp4", None, 44100, video=True)
    with pytest.raises(InputError, match="has no audio stream"):
        load_audio(path)
