"""Decode any audio file to 16 kHz mono float32, streamed in chunks (a long file never sits whole).

libsndfile (soundfile) reads wav/flac/ogg/aiff and, where built with it, mp3; PyAV (FFmpeg) reads
the rest: mp3, m4a/aac, opus, the audio track of mp4/mkv/webm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import InputError
from .types import SAMPLE_RATE

CHUNK_SECONDS = 10.0


def _finite(block: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(block)):
        block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(block, -1.0, 1.0, out=block)


def _soundfile_chunks(path: Path, info) -> Iterator[np.ndarray]:
    block = max(1, int(CHUNK_SECONDS * info.samplerate))
    resampler = None if info.samplerate == SAMPLE_RATE else soxr.ResampleStream(
        info.samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    with sf.SoundFile(str(path)) as f:
        while True:
            data = f.read(block, dtype="float32", always_2d=True)
            last = len(data) < block
            mono = np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)) if len(data) else \
                np.zeros(0, np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if len(mono):
                yield _finite(mono)
            if last:
                return


def _pyav_chunks(path: Path) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable audio or video file ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise InputError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pending: list[np.ndarray] = []
        pending_len = 0
        target = int(CHUNK_SECONDS * SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1))
                    pending_len += pending[-1].shape[0]
                if pending_len >= target:
                    yield _finite(np.concatenate(pending).astype(np.float32, copy=False))
                    pending, pending_len = [], 0
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: audio stream is damaged ({_reason(exc)})") from None
        if pending:
            yield _finite(np.concatenate(pending).astype(np.float32, copy=False))


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:160]


def check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")


def stream_audio(path: str | Path) -> Iterator[np.ndarray]:
    """Yield consecutive 16 kHz mono float32 chunks of `path`; InputError if unreadable."""
    path = Path(path)
    check_readable(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        info = None
    if info is not None and info.frames > 0:
        try:
            yield from _soundfile_chunks(path, info)
            return
        except sf.LibsndfileError as exc:
            raise InputError(f"{path}: audio data is damaged ({_reason(exc)})") from None
    yield from _pyav_chunks(path)


def load_audio(path: str | Path) -> np.ndarray:
    """The whole file at once (tests, short clips); the pipeline uses `stream_audio`."""
    chunks = list(stream_audio(path))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
