"""Decode any audio file to 16 kHz mono float32, streamed in chunks (a long file never sits whole).
`stream_channels` keeps the channels apart instead (`analyze --channels split`).

libsndfile (soundfile) reads wav/flac/ogg/aiff and, where built with it, mp3; PyAV (FFmpeg) reads
the rest: mp3, m4a/aac, opus, the audio track of mp4/mkv/webm.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import InputError
from .types import SAMPLE_RATE

CHUNK_SECONDS = 10.0
MIN_RATE, MAX_RATE = 1_000, 768_000  # a header outside this is damaged, not exotic
MAX_BLOCK_SAMPLES = 4_000_000  # frames x channels read at once (16 MB of float32), any header
SNIFF_BYTES = 4096
# what libsndfile, soxr and PyAV raise (besides av.error.FFmpegError) on damaged data
_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError, OSError, EOFError, TypeError)


def _finite(block: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(block)):
        block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(block, -1.0, 1.0, out=block)


def _soundfile_chunks(path: Path, info, split: bool = False) -> Iterator[np.ndarray]:
    """Mono chunks, or with `split` (channels, samples) blocks."""
    if not MIN_RATE <= info.samplerate <= MAX_RATE or info.channels < 1:
        raise InputError(f"{path}: damaged header ({info.samplerate} Hz, {info.channels} "
                         f"channels)")
    block = max(1, min(int(CHUNK_SECONDS * info.samplerate), MAX_BLOCK_SAMPLES // info.channels))
    width = info.channels if split else 1
    resampler = None if info.samplerate == SAMPLE_RATE else soxr.ResampleStream(
        info.samplerate, SAMPLE_RATE, width, dtype="float32", quality="HQ")
    with sf.SoundFile(str(path)) as f:
        while True:
            data = f.read(block, dtype="float32", always_2d=True)
            last = len(data) < block
            if not split:
                data = data.mean(axis=1, dtype=np.float32)
            data = np.ascontiguousarray(data)
            if resampler is not None:
                data = resampler.resample_chunk(data, last=last)
            if len(data):
                yield _finite(np.ascontiguousarray(data.T) if split else data)
            if last:
                return


def _pyav_chunks(path: Path, split: bool = False) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable audio or video file ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            if container.streams.video:
                raise InputError(f"{path}: has no audio stream (video only)")
            raise InputError(f"{path}: not an audio or video file (read as "
                             f"{container.format.name}, no audio stream)")
        stream = container.streams.audio[0]
        # planar float keeps channels apart: to_ndarray() gives (channels, samples)
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=SAMPLE_RATE) \
            if split else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        shape = (stream.layout.nb_channels if split else 1, -1)
        pending: list[np.ndarray] = []
        pending_len = 0
        target = int(CHUNK_SECONDS * SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(shape))
                    pending_len += pending[-1].shape[1]
                if pending_len >= target:
                    yield _join(pending, split)
                    pending, pending_len = [], 0
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(shape))
        except av.error.DecoderNotFoundError:
            raise InputError(f"{path}: unsupported audio codec (no decoder for it)") from None
        except (av.error.FFmpegError, *_DECODE_ERRORS) as exc:
            raise InputError(f"{path}: audio stream is damaged ({_reason(exc)})") from None
        if pending:
            yield _join(pending, split)


def _join(blocks: list[np.ndarray], split: bool) -> np.ndarray:
    """(channels, samples) pieces -> one block: as it is with `split`, else its only row."""
    data = np.concatenate(blocks, axis=1).astype(np.float32, copy=False)
    return _finite(data if split else data[0])


def _reason(exc: BaseException) -> str:
    """The library's own words, on one line, without errno numbers or the (already named) path."""
    text = getattr(exc, "strerror", None) or str(exc)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(text).strip())
    text = text.splitlines()[0].strip() if text else ""
    return (text or exc.__class__.__name__)[:160]


def looks_like_text(head: bytes) -> bool:
    """Plain text (UTF-8, no NUL, almost all printable): a transcript, a CSV, a playlist ..."""
    if not head or b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # only a multi-byte character cut by the sniff may fail
            return False
        text = head[:exc.start].decode("utf-8")
    printable = sum(c.isprintable() or c in "\t\r\n\f" for c in text)
    return printable >= 0.95 * max(1, len(text))


def check_readable(path: Path) -> bytes:
    """One-line InputError for a path that is no readable file; else its first bytes.

    Permission is tested by opening the file, not with os.access: that is what counts (root,
    ACLs, network file systems)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied (on a folder above it)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({_reason(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        return b""  # a pipe or device: nothing to sniff without consuming it
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({_reason(exc)})") from None
    if not head:
        raise InputError(f"{path}: file is empty (0 bytes)")
    return head


def stream_audio(path: str | Path) -> Iterator[np.ndarray]:
    """Yield consecutive 16 kHz mono float32 chunks of `path`; InputError if unreadable.

    Nothing is read before the first chunk is asked for; a file is never held whole."""
    return _stream(Path(path), split=False)


def stream_channels(path: str | Path) -> Iterator[np.ndarray]:
    """Like `stream_audio`, but each channel kept: 16 kHz float32 blocks of shape (channels,
    samples), as many rows as the file has channels (one for a mono file)."""
    return _stream(Path(path), split=True)


def _stream(path: Path, split: bool) -> Iterator[np.ndarray]:
    head = check_readable(path)
    try:
        info = sf.info(str(path))
    except _DECODE_ERRORS:
        info = None
    if info is not None and info.frames > 0:
        try:
            yield from _soundfile_chunks(path, info, split)
            return
        except _DECODE_ERRORS as exc:
            raise InputError(f"{path}: audio data is damaged ({_reason(exc)})") from None
    if info is None and looks_like_text(head):
        # FFmpeg would read text as ANSI art or follow it as a playlist: say what it is instead
        raise InputError(f"{path}: not a readable audio or video file (it is text)")
    yield from _pyav_chunks(path, split)


def load_audio(path: str | Path) -> np.ndarray:
    """The whole file at once (tests, short clips); the pipeline uses `stream_audio`."""
    chunks = list(stream_audio(path))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
