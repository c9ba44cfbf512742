"""Where `mersa listen` gets its audio: a microphone, or a file sent through the same path.

A source yields `Chunk`s of 16 kHz mono float32 audio, each stamped with the wall-clock time at
which its last sample became available (captured by the device, or fed from the file). `listen`
uses those stamps to say, for every utterance, when its speech ended in wall-clock time.

`chunks()` also yields `None` about every 100 ms when no audio is ready, so that the caller can
look at its stop flag and time limits while a microphone delivers nothing.

MicrophoneSource reads PyAudio in its own thread into a bounded buffer, so capture never waits on
recognition; a read error (device unplugged, sound server gone) or a silent stall ends the stream
with a DeviceError once the audio captured before it has been handed on.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import DeviceError, InputError
from .types import SAMPLE_RATE

TICK_S = 0.1


@dataclass(frozen=True)
class Chunk:
    samples: np.ndarray  # 16 kHz mono float32
    end_time: float  # wall clock (time.time()) when the last sample became available


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null (ALSA and JACK print ~80 lines while probing)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# ------------------------------------------------------------------------------------ devices


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: float
    host_api: str
    is_default: bool


def _pyaudio():
    try:
        import pyaudio
    except ImportError as exc:  # PortAudio missing at run time
        raise DeviceError(f"audio input unavailable: PyAudio cannot load ({exc})") from None
    return pyaudio


def _open_pyaudio():
    pyaudio = _pyaudio()
    with silenced_stderr():
        return pyaudio.PyAudio()


def _input_devices(pa) -> list[InputDevice]:
    try:
        default = pa.get_default_input_device_info()["index"]
    except (OSError, IOError):
        default = None
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) <= 0:
            continue
        try:
            api = pa.get_host_api_info_by_index(info["hostApi"])["name"]
        except (OSError, IOError, KeyError):
            api = "?"
        out.append(InputDevice(i, str(info["name"]), int(info["maxInputChannels"]),
                               float(info["defaultSampleRate"]), api, i == default))
    return out


def list_input_devices() -> list[InputDevice]:
    pa = _open_pyaudio()
    try:
        return _input_devices(pa)
    finally:
        with silenced_stderr():
            pa.terminate()


def pick_device(devices: list[InputDevice], wanted: str | int | None) -> InputDevice:
    """`wanted`: an index, an exact name, a unique part of a name, or None/"" for the default."""
    if not devices:
        raise DeviceError("no audio input device found (is a microphone connected? "
                          "`mersa devices` lists what PortAudio sees)")
    if wanted is None or wanted == "":
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    text = str(wanted).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        for d in devices:
            if d.index == index:
                return d
        raise DeviceError(f"no input device with index {index} (`mersa devices` lists them)")
    exact = [d for d in devices if d.name == text]
    if exact:
        return exact[0]
    partial = [d for d in devices if text.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise DeviceError(f"no input device named '{text}' (`mersa devices` lists them)")
    names = ", ".join(f"{d.index}: {d.name}" for d in partial)
    raise DeviceError(f"input device '{text}' is ambiguous ({names}); give its index")


# ------------------------------------------------------------------------------------ sources


class Source:
    """Base: `name`, `speed` (source seconds per wall second; inf when not paced), `paced`."""

    name: str = ""
    speed: float = 1.0

    @property
    def paced(self) -> bool:
        """True when audio arrives at a fixed rate whatever we do (dropping may be needed)."""
        return math.isfinite(self.speed)

    def start(self) -> None:
        pass

    def chunks(self) -> Iterator[Chunk | None]:
        raise NotImplementedError

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict:
        return {}


class MicrophoneSource(Source):
    """PyAudio input at 16 kHz mono int16, or at the device's own rate resampled with soxr."""

    def __init__(self, device: str | int | None = None, chunk_ms: int = 30,
                 buffer_s: float = 60.0, stall_timeout_s: float = 5.0):
        self.wanted = device
        self.chunk_ms = chunk_ms
        self.stall_timeout_s = stall_timeout_s
        self._buffer: deque[Chunk] = deque(maxlen=max(1, int(buffer_s * 1000 / chunk_ms)))
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._error: str | None = None
        self._finished = False
        self._thread: threading.Thread | None = None
        self._pa = None
        self._stream = None
        self._resampler = None
        self.overruns = 0  # chunks lost because the consumer fell `buffer_s` behind
        self.device: InputDevice | None = None
        self.rate = SAMPLE_RATE
        self.speed = 1.0

    # -- opening
    def start(self) -> None:
        """Open the device and start capturing at once (DeviceError if that is impossible)."""
        if self._thread is not None:
            return
        pyaudio = _pyaudio()
        self._pa = _open_pyaudio()
        try:
            self.device = pick_device(_input_devices(self._pa), self.wanted)
            self.name = f"mic:{self.device.name}"
            self._stream = self._open_stream(pyaudio)
        except BaseException:
            self._terminate()
            raise
        self._thread = threading.Thread(target=self._capture, name="mersa-capture", daemon=True)
        self._thread.start()

    def _open_stream(self, pyaudio):
        errors = []
        rates = [SAMPLE_RATE]
        native = int(round(self.device.default_rate))
        if native != SAMPLE_RATE and native > 0:
            rates.append(native)
        for rate in rates:
            frames = max(1, rate * self.chunk_ms // 1000)
            try:
                with silenced_stderr():
                    stream = self._pa.open(format=pyaudio.paInt16, channels=1, rate=rate,
                                           input=True, input_device_index=self.device.index,
                                           frames_per_buffer=frames)
            except (OSError, IOError, ValueError) as exc:
                errors.append(_describe(exc))
                continue
            self.rate = rate
            if rate != SAMPLE_RATE:
                import soxr

                self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
            return stream
        raise DeviceError(f"cannot open input device {self.device.index} '{self.device.name}' "
                          f"(busy or unavailable: {errors[-1]})")

    # -- capture thread
    def _capture(self) -> None:
        frames = max(1, self.rate * self.chunk_ms // 1000)
        error = None
        try:
            while not self._stop.is_set():
                data = self._stream.read(frames, exception_on_overflow=False)
                now = time.time()
                samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
                if self._resampler is not None:
                    samples = self._resampler.resample_chunk(samples)
                with self._ready:
                    if len(self._buffer) == self._buffer.maxlen:
                        self.overruns += 1
                    self._buffer.append(Chunk(samples, now))
                    self._ready.notify()
        except (OSError, IOError) as exc:
            if not self._stop.is_set():
                error = f"input device '{self.device.name}' lost ({_describe(exc)})"
        except Exception as exc:  # noqa: BLE001 - reported as a device error by the consumer
            error = f"input device '{self.device.name}' failed ({exc.__class__.__name__}: {exc})"
        finally:
            with self._ready:
                self._error = error
                self._finished = True
                self._ready.notify()

    # -- consuming
    def chunks(self) -> Iterator[Chunk | None]:
        self.start()
        last = time.monotonic()
        while True:
            with self._ready:
                if not self._buffer and not self._finished:
                    self._ready.wait(TICK_S)
                chunk = self._buffer.popleft() if self._buffer else None
                finished, error = self._finished and not self._buffer, self._error
            if chunk is not None:
                last = time.monotonic()
                yield chunk
                continue
            if finished:
                if error:
                    raise DeviceError(error)
                return
            if not self._stop.is_set() and time.monotonic() - last > self.stall_timeout_s:
                raise DeviceError(f"input device '{self.device.name}' delivered no audio for "
                                  f"{self.stall_timeout_s:g} s (unplugged or stalled)")
            if self._stop.is_set() and time.monotonic() - last > 1.0:
                return  # the capture thread is stuck in a read: give up on it
            yield None

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._thread is None or not self._thread.is_alive():
            self._terminate()

    def _terminate(self) -> None:
        with silenced_stderr():
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    self._stream.stop_stream()
                with contextlib.suppress(Exception):
                    self._stream.close()
                self._stream = None
            if self._pa is not None:
                with contextlib.suppress(Exception):
                    self._pa.terminate()
                self._pa = None

    def stats(self) -> dict:
        return {"capture_overruns": self.overruns}


class FileSource(Source):
    """A file through the streaming path, in `chunk_ms` blocks.

    speed None: as fast as the pipeline takes it (each chunk stamped with the moment it is fed);
    speed s: paced by the wall clock, s seconds of audio per second (1.0 = real time), each chunk
    stamped with the moment its last sample would have been spoken.
    """

    def __init__(self, path: str | Path, speed: float | None = None, chunk_ms: int = 30):
        from .decode import check_readable

        self.path = Path(path)
        check_readable(self.path)
        if speed is not None and not speed > 0:
            raise InputError(f"--speed {speed}: must be greater than 0")
        self.name = str(path)
        self.speed = float(speed) if speed else math.inf
        self.chunk = max(1, SAMPLE_RATE * chunk_ms // 1000)
        self._stop = threading.Event()
        self.t0: float | None = None

    def _blocks(self) -> Iterator[np.ndarray]:
        from .decode import stream_audio

        pending = np.zeros(0, np.float32)
        for block in stream_audio(self.path):
            data = np.concatenate([pending, block]) if len(pending) else block
            n = len(data) // self.chunk * self.chunk
            for i in range(0, n, self.chunk):
                yield data[i:i + self.chunk]
            pending = data[n:]
        if len(pending):
            yield pending

    def chunks(self) -> Iterator[Chunk | None]:
        position = 0
        for samples in self._blocks():
            if self._stop.is_set():
                return
            position += len(samples)
            if not self.paced:
                yield Chunk(samples, time.time())
                continue
            if self.t0 is None:
                self.t0 = time.time() - len(samples) / SAMPLE_RATE / self.speed
            due = self.t0 + position / SAMPLE_RATE / self.speed
            while (wait := due - time.time()) > 0:
                if wait > TICK_S:
                    time.sleep(TICK_S)
                    yield None
                    if self._stop.is_set():
                        return
                else:
                    time.sleep(wait)
            yield Chunk(samples, due)

    def stop(self) -> None:
        self._stop.set()


def _describe(exc: BaseException) -> str:
    if len(exc.args) >= 2 and isinstance(exc.args[1], str):
        return exc.args[1]
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else exc.__class__.__name__
