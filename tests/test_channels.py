"""Two-channel calls (`analyze --channels split`): each channel decoded apart, segmented as its own
speaker stream, results interleaved by start time with their channel."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from helpers import have_espeak, speak, trim, word_error_rate, write_wav
from mersa_stream.channels import segment_channels
from mersa_stream.config import SegmenterConfig
from mersa_stream.decode import stream_audio, stream_channels
from mersa_stream.types import SAMPLE_RATE

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng")

# (channel, start s, voice, words): the agent's long first sentence is still going when the
# customer's short reply starts and ends, so closing order and start order differ
CALL = [
    (0, 0.5, "en-us", "Thank you for calling the support line, how can I help you today?"),
    (1, 1.6, "en-us+f3", "Hello."),
    (1, 5.5, "en-us+f3", "My internet has been down for three days."),
    (0, 9.0, "en-us", "I am sorry to hear that."),
]


def stereo_call(seconds: float = 11.5, noise_db: float = -45.0) -> tuple[np.ndarray, list]:
    """(samples, 2) at 16 kHz and the true (channel, start, end, words) of each line."""
    rng = np.random.default_rng(3)
    audio = rng.normal(0, 10 ** (noise_db / 20), (int(seconds * SAMPLE_RATE), 2))
    truth = []
    for channel, start, voice, text in CALL:
        speech = trim(speak(text, voice, speed=130)) * 0.5
        at = int(start * SAMPLE_RATE)
        audio[at:at + len(speech), channel] += speech
        truth.append((channel, start, start + len(speech) / SAMPLE_RATE, text))
    return audio.astype(np.float32), truth


@pytest.fixture(scope="module")
def call():
    if not have_espeak():
        pytest.skip("needs espeak-ng")
    return stereo_call()


def test_stream_channels_keeps_each_side_and_resamples(tmp_path):
    rate = 44_100
    t = np.arange(2 * rate) / rate
    left = np.where(t < 1, 0.5 * np.sin(2 * np.pi * 440 * t), 0).astype(np.float32)
    right = np.where(t >= 1, 0.3 * np.sin(2 * np.pi * 660 * t), 0).astype(np.float32)
    path = tmp_path / "two.wav"
    sf.write(str(path), np.stack([left, right], axis=1), rate, subtype="FLOAT")
    blocks = list(stream_channels(path))
    assert all(b.ndim == 2 and b.shape[0] == 2 and b.dtype == np.float32 for b in blocks)
    both = np.concatenate(blocks, axis=1)
    assert abs(both.shape[1] - 2 * SAMPLE_RATE) <= 2
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    first, second = slice(1000, SAMPLE_RATE - 1000), slice(SAMPLE_RATE + 1000, -1000)
    assert rms(both[0, first]) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert rms(both[1, second]) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)
    assert rms(both[0, second]) < 1e-3 and rms(both[1, first]) < 1e-3
    mono = np.concatenate(list(stream_audio(path)))  # mix: the average of the channels
    np.testing.assert_allclose(mono, both.mean(axis=0), atol=1e-4)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_stream_channels_through_ffmpeg_formats(tmp_path):
    rate = 48_000
    t = np.arange(rate) / rate
    wav = tmp_path / "two.wav"
    sf.write(str(wav), np.stack([0.5 * np.sin(2 * np.pi * 300 * t), 0 * t], axis=1), rate)
    m4a = tmp_path / "two.m4a"  # AAC: libsndfile cannot read it, PyAV does
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)],
                   check=True)
    both = np.concatenate(list(stream_channels(m4a)), axis=1)
    assert both.shape[0] == 2 and abs(both.shape[1] - SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    middle = slice(2000, SAMPLE_RATE - 4000)
    assert np.sqrt(np.mean(both[0, middle] ** 2)) > 0.3
    assert np.sqrt(np.mean(both[1, middle] ** 2)) < 0.01


def utterances(audio: np.ndarray, block_s: float):
    block = int(block_s * SAMPLE_RATE)
    blocks = (np.ascontiguousarray(audio[i:i + block].T) for i in range(0, len(audio), block))
    return list(segment_channels(blocks, SegmenterConfig(), "call.wav"))


@needs_espeak
def test_split_channels_are_interleaved_by_start_with_their_channel(call):
    audio, truth = call
    found = utterances(audio, 10.0)
    assert [u.channel for u in found] == [c for c, _, _, _ in truth]
    assert [u.start for u in found] == pytest.approx([s for _, s, _, _ in truth], abs=0.2)
    assert [u.end for u in found] == pytest.approx([e for _, _, e, _ in truth], abs=0.3)
    assert [u.index for u in found] == list(range(len(truth)))  # numbered in output order
    assert {u.source for u in found} == {"call.wav"}
    # each utterance holds its own channel's audio only: the other side is near silence
    for u in found:
        at = round(u.audio_offset * SAMPLE_RATE)
        own = audio[at:at + len(u.audio), u.channel]
        np.testing.assert_allclose(u.audio, own, atol=1e-6)
    # however the audio is cut, the same utterances come out
    again = utterances(audio, 0.37)
    assert [(u.channel, u.start, u.end) for u in again] == \
        [(u.channel, u.start, u.end) for u in found]


@needs_espeak
def test_a_mono_file_split_is_one_channel(call):
    audio, truth = call
    mono = np.ascontiguousarray(audio[:, :1])
    found = utterances(mono, 1.0)
    assert {u.channel for u in found} == {0}
    assert len(found) == sum(1 for c, *_ in truth if c == 0)


@pytest.mark.slow
@needs_espeak
def test_analyze_channels_split_labels_each_side(tmp_path, call, tiny_checkpoint):
    audio, truth = call
    wav = tmp_path / "call.wav"
    sf.write(str(wav), audio, SAMPLE_RATE, subtype="PCM_16")
    out = tmp_path / "split.jsonl"
    run = subprocess.run([sys.executable, "-m", "mersa_stream", "analyze", str(wav),
                          "--checkpoint", str(tiny_checkpoint), "--channels", "split",
                          "-f", "jsonl", "-o", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["channel"] for r in records] == [c for c, _, _, _ in truth]
    assert [r["start"] for r in records] == sorted(r["start"] for r in records)
    for record, (_, _, _, text) in zip(records, truth):
        if len(text.split()) > 2:  # "Hello." alone is too short to hold Whisper to its words
            assert word_error_rate(text, record["text"]) <= 0.35, (text, record["text"])
    # mixed (the default), the same file gives no channel, and both sides' words
    mixed = subprocess.run([sys.executable, "-m", "mersa_stream", "analyze", str(wav),
                            "--checkpoint", str(tiny_checkpoint), "-f", "jsonl"],
                           capture_output=True, text=True, timeout=300)
    assert mixed.returncode == 0, mixed.stderr
    lines = [json.loads(line) for line in mixed.stdout.splitlines()]
    assert lines and all("channel" not in r for r in lines)
    assert "internet" in " ".join(r["text"].lower() for r in lines)


def test_channels_is_a_checked_setting(tmp_path):
    wav = write_wav(tmp_path / "x.wav", np.zeros(SAMPLE_RATE, np.float32))
    run = subprocess.run([sys.executable, "-m", "mersa_stream", "analyze", str(wav),
                          "--channels", "left"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "left" in run.stderr and "mix" in run.stderr


def test_every_format_shows_the_channel_when_split():
    import csv
    import io

    from rich.console import Console

    from mersa_stream.sinks import CsvSink, SrtSink, TableSink
    from mersa_stream.types import EmotionResult, Transcript, Utterance

    def result(channel, text):
        u = Utterance("call.wav", 0, 1.0, 2.0, np.zeros(10, np.float32), 0.7, channel=channel)
        return EmotionResult(u, Transcript(text), "anger", {"neutral": 0.2, "anger": 0.8}, "m")

    for channel, present in ((1, True), (None, False)):
        buffer = io.StringIO()
        sink = CsvSink(buffer)
        sink.write(result(channel, "hello"))
        rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
        assert ("channel" in rows[0]) is present and rows[0]["text"] == "hello"
        if present:
            assert rows[0]["channel"] == "1" and rows[0]["p_anger"] == "0.8"
        srt = io.StringIO()
        SrtSink(srt).write(result(channel, "hello"))
        assert ("[channel 1: anger 80%] hello" in srt.getvalue()) is present
        console = Console(file=io.StringIO(), width=120)
        table = TableSink(console)
        table.write(result(channel, "hello"))
        table.end_source("call.wav")
        assert ("channel" in console.file.getvalue()) is present
