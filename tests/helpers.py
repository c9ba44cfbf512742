"""Test fixtures made by the tests themselves: espeak-ng speech, noise, small checkpoints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mersa_stream.checkpoint import Checkpoint, EncoderSpec, save_checkpoint
from mersa_stream.fusion import FusionConfig, FusionModel
from mersa_stream.types import SAMPLE_RATE

LABELS = ["neutral", "happy", "sad", "anger"]


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """espeak-ng speech as 16 kHz mono float32."""
    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    import io

    audio, rate = sf.read(io.BytesIO(raw), dtype="float32")
    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0]:loud[-1] + 1] if len(loud) else audio[:0]


@dataclass
class Conversation:
    audio: np.ndarray
    spans: list[tuple[float, float]]  # true speech start/end of each sentence, seconds
    sentences: list[str]


def conversation(sentences: list[str], pauses: list[float], lead: float = 0.8,
                 noise_db: float = -45.0, seed: int = 0,
                 voices: tuple[str, ...] = ("en-us", "en-us+f3"), speed: int = 130) -> Conversation:
    """Sentences separated by pauses, two alternating voices, white noise `noise_db` dBFS under it
    all. (espeak-ng's en-gb voice and speeds above ~140 wpm are hard for Whisper tiny.en.)"""
    rng = np.random.default_rng(seed)
    parts, spans, t = [np.zeros(int(lead * SAMPLE_RATE), np.float32)], [], lead
    for i, sentence in enumerate(sentences):
        speech = trim(speak(sentence, voices[i % len(voices)], speed)) * 0.5
        spans.append((t, t + len(speech) / SAMPLE_RATE))
        parts.append(speech)
        t += len(speech) / SAMPLE_RATE
        pause = pauses[i] if i < len(pauses) else lead
        parts.append(np.zeros(int(pause * SAMPLE_RATE), np.float32))
        t += pause
    audio = np.concatenate(parts)
    audio = audio + rng.normal(0, 10 ** (noise_db / 20), len(audio)).astype(np.float32)
    return Conversation(audio.astype(np.float32), spans, sentences)


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    sf.write(str(path), audio, rate, subtype="PCM_16")
    return path


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))


def small_checkpoint(folder: Path, architecture: str = "mersa-xattn", text_dim: int = 384,
                     audio_dim: int = 384, audio_kind: str = "whisper", audio_spec: str = "tiny.en",
                     text_spec: str = "sentence-transformers/all-MiniLM-L6-v2", seed: int = 0,
                     hidden: int = 32, heads: int = 4, audio_layers: int = 1) -> Path:
    """An untrained (random) fusion model saved as a real checkpoint."""
    import torch

    torch.manual_seed(seed)
    config = FusionConfig(architecture=architecture, text_dim=text_dim, audio_dim=audio_dim,
                          num_classes=len(LABELS), hidden=hidden, heads=heads,
                          audio_layers=audio_layers)
    model = FusionModel.build(config).eval()
    checkpoint = Checkpoint(model=model, labels=list(LABELS),
                            text_encoder=EncoderSpec("bert", text_spec, text_dim),
                            audio_encoder=EncoderSpec(audio_kind, audio_spec, audio_dim),
                            model_id=f"test-{architecture}")
    return save_checkpoint(checkpoint, folder,
                           card="# test checkpoint\nRandom weights, tests only.\n")


def encode_pyav(path: Path, audio: np.ndarray | None, rate: int, codec: str = "mp3",
                video: bool = False) -> Path:
    """Encode with PyAV (FFmpeg): mp3/aac audio, optionally beside a video stream (mp4);
    `audio=None` gives a video with no audio stream."""
    import av

    with av.open(str(path), "w") as container:
        # every stream is added before the first packet is muxed
        vstream = container.add_stream("mpeg4", rate=10) if video else None
        stream = container.add_stream(codec, rate=rate) if audio is not None else None
        if stream is not None:
            stream.layout = "mono"
        if vstream is not None:
            vstream.width, vstream.height = 64, 48
            for _ in range(5):
                frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                for packet in vstream.encode(frame):
                    container.mux(packet)
            for packet in vstream.encode(None):
                container.mux(packet)
        if stream is not None:
            samples = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
            size = stream.codec_context.frame_size or 1152
            for pts in range(0, len(samples), size):
                frame = av.AudioFrame.from_ndarray(samples[None, pts:pts + size], format="s16",
                                                   layout="mono")
                frame.sample_rate, frame.pts = rate, pts
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return path


# -- records of `listen`, the stream and the server, compared by what the audio alone decides --
MERSA = [sys.executable, "-c", "from mersa_stream.cli import main; main()"]
# what depends on the audio alone (not on when or from where it was sent)
CONTENT = ("index", "start", "end", "text", "label", "confidence", "probabilities", "model")


def content(record: dict) -> dict:
    return {key: record[key] for key in CONTENT}


def finals(records: list[dict]) -> list[dict]:
    """The final records; each interim one (listen.interim) must be superseded by one of them."""
    final = [r for r in records if r.get("final", True)]
    indices = [r["index"] for r in final]
    assert all(r["index"] in indices for r in records if not r.get("final", True))
    return final


def listen_finals(wav: Path, checkpoint: Path) -> list[dict]:
    """The final records of `mersa listen --input WAV` (unpaced) with this checkpoint, each
    utterance decoded alone as live listening does (a stream, the server)."""
    proc = subprocess.run([*MERSA, "listen", "--input", str(wav), "--quiet",
                           "--set", "runtime.pack_windows=false",
                           "--checkpoint", str(checkpoint)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return finals([json.loads(line) for line in proc.stdout.splitlines()])


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


def with_minilm_tokenizer(folder: Path) -> Path:
    """A tiny random BERT-family model saved in `folder` gets the embedded MiniLM's WordPiece
    tokenizer (the hub is out of reach: no tokenizer of its own to download)."""
    from mersa_stream.resolve import resolve_transformers

    minilm = resolve_transformers("sentence-transformers/all-MiniLM-L6-v2", "text encoder",
                                  "--x").path
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)
    return folder


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Harmonics with a wandering pitch and a syllable-rate envelope (no espeak needed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * voice * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
