"""The one streaming object behind `listen`'s stages, `mersa serve` and the Python API.

`Stream` is pushed audio as it arrives and hands back what the live path emitted meanwhile:

    with Stream(recognizer, config, sample_rate=8000) as stream:
        for block in blocks:                 # float32 or int16 mono, any length
            for result in stream.push(block):
                print(result.to_record())
        rest = stream.flush()                # end of input: the last utterance, and the rest

Inside runs the very `Listener` of `mersa listen` (segmenter, speculation, recognition worker,
records, latencies), fed by a `PushSource` instead of a microphone or a file. That source is not
paced (speed inf): `Listener` then never drops an utterance (overflow policy `block`), and each
block is stamped with the moment it was pushed, so "end of speech" is when the server had that
audio (the latency a live client sees, minus its own network). What `push` has not been able to
hand on yet is `backlog_seconds`; a server bounds it (`serve.max_queued_audio_s`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Iterable, Iterator

import numpy as np

from .config import Config
from .errors import InputError
from .listen import Listener, ListenStats, LiveResult, Observer, RecognizerLike
from .sources import TICK_S, Chunk, Source
from .types import SAMPLE_RATE, EmotionResult


class PushSource(Source):
    """Audio handed in by `put()` (any thread), handed on by `chunks()` in `chunk_ms` blocks.

    Small pushes are gathered into whole blocks (the cut a file source makes), so the listener's
    timeline keeps a bounded number of entries whatever a client sends; a block is stamped with
    the moment its last sample arrived. `end()`: no more audio; what is buffered is still handed
    on. `stop()` (the listener's): hand on nothing more."""

    def __init__(self, name: str, chunk_ms: int = 30):
        self.name = name
        self.speed = float("inf")
        self.block = max(1, SAMPLE_RATE * chunk_ms // 1000)
        self._pending: list[np.ndarray] = []  # the partial block being gathered
        self._pending_len = 0
        self._ready: deque[Chunk] = deque()
        self._ready_samples = 0
        self._cond = threading.Condition()
        self._ended = False
        self._stopped = False

    def put(self, samples: np.ndarray, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._cond:
            if self._ended:
                raise InputError(f"{self.name}: audio pushed after the end of input")
            self._pending.append(samples)
            self._pending_len += len(samples)
            if self._pending_len >= self.block:
                data = np.concatenate(self._pending)
                whole = len(data) // self.block * self.block
                for i in range(0, whole, self.block):
                    self._ready.append(Chunk(data[i:i + self.block], now))
                self._ready_samples += whole
                rest = data[whole:]
                self._pending, self._pending_len = ([rest] if len(rest) else []), len(rest)
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            if not self._ended and self._pending_len:
                self._ready.append(Chunk(np.concatenate(self._pending), time.time()))
                self._ready_samples += self._pending_len
                self._pending, self._pending_len = [], 0
            self._ended = True
            self._cond.notify_all()

    @property
    def backlog_seconds(self) -> float:
        """Audio received but not yet taken by the listener (the segmenter)."""
        with self._cond:
            return (self._ready_samples + self._pending_len) / SAMPLE_RATE

    def chunks(self) -> Iterator[Chunk | None]:
        while True:
            with self._cond:
                if not self._ready and not self._ended and not self._stopped:
                    self._cond.wait(TICK_S)
                if self._stopped:
                    return
                chunk = self._ready.popleft() if self._ready else None
                if chunk is not None:
                    self._ready_samples -= len(chunk.samples)
                elif self._ended:
                    return
            yield chunk  # None: nothing yet (the listener looks at its stop flags)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class _Collector:
    """The listener's sink: keeps results for the next `push`/`flush`, tells `on_result`."""

    def __init__(self, on_result: Callable[[LiveResult], None] | None):
        self.on_result = on_result
        self._results: list[LiveResult] = []
        self._lock = threading.Lock()

    def write(self, result: EmotionResult) -> None:
        with self._lock:
            self._results.append(result)
        if self.on_result is not None:
            self.on_result(result)

    def take(self) -> list[LiveResult]:
        with self._lock:
            taken, self._results = self._results, []
        return taken

    def end_source(self, source: str, utterances: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


def as_float32(samples: np.ndarray) -> np.ndarray:
    """Mono float32 from float (as is) or int16 (/32768) samples; anything else is an error."""
    samples = np.asarray(samples)
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1:
        raise InputError(f"expected mono samples (one dimension), got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    raise InputError(f"expected float32 or int16 samples, got {samples.dtype}")


class Stream:
    """Push audio, get each utterance's words and emotion as `listen` would emit them.

    `push()` never waits for recognition: it returns the results emitted since the last call
    (also given to `on_result`, from the recognition thread, as they come). `flush()` ends the
    input, closes the open utterance, waits until everything is recognised and returns the rest.
    `close()` stops taking audio without waiting for the end of input. A recognition error is
    raised from the next `push()` or `flush()`.
    """

    def __init__(self, recognizer: RecognizerLike, config: Config, *, name: str = "stream",
                 sample_rate: int = SAMPLE_RATE,
                 on_result: Callable[[LiveResult], None] | None = None,
                 observers: Iterable[Observer] = ()):
        if not isinstance(sample_rate, int) or not 1000 <= sample_rate <= 384_000:
            raise InputError(f"sample rate {sample_rate!r}: expected an integer in "
                             "[1000, 384000] Hz")
        self.name = name
        self.sample_rate = sample_rate
        self._resampler = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32")
        self.source = PushSource(name, config.listen.chunk_ms)
        self._collector = _Collector(on_result)
        self.listener = Listener(config, recognizer, self.source, [self._collector], observers)
        self._error: BaseException | None = None
        self._flushed = False
        self._thread = threading.Thread(target=self._run, name=f"mersa-stream-{name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.listener.run()
        except BaseException as exc:  # noqa: BLE001 - raised again from push()/flush()
            self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    # -- input
    def push(self, samples: np.ndarray) -> list[LiveResult]:
        """Mono samples at `sample_rate`, float32 (in [-1, 1]) or int16; any length."""
        self._check()
        if self._flushed:
            raise InputError(f"{self.name}: audio pushed after flush()")
        audio = as_float32(samples)
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio)
        if len(audio):
            self.source.put(audio)
        return self._collector.take()

    def flush(self, timeout: float | None = None) -> list[LiveResult]:
        """End of input: returns the remaining results once all are recognised (within
        `timeout` seconds, if given: TimeoutError otherwise)."""
        if not self._flushed:
            self._flushed = True
            if self._resampler is not None:
                tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                if len(tail):
                    self.source.put(tail)
                # released now: a native object still alive at interpreter exit is reported
                self._resampler = None
            self.source.end()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.name}: recognition not finished after {timeout} s")
        self._check()
        return self._collector.take()

    def close(self) -> None:
        """Stop taking audio (what is buffered is dropped). Like `listen` stopped, the listener
        still recognises the utterance it holds and those queued; `close` waits for that."""
        self._flushed = True
        self._resampler = None
        self.listener.stop()
        self._thread.join()

    # -- state
    def results(self) -> list[LiveResult]:
        """The results emitted since the last call (push/flush/results), without pushing."""
        return self._collector.take()

    @property
    def backlog_seconds(self) -> float:
        """Audio pushed but not yet taken by the segmenter (it grows when recognition is
        `listen.queue_size` utterances behind)."""
        return self.source.backlog_seconds

    @property
    def done(self) -> bool:
        """Flushed (or closed) and finished."""
        return self._flushed and not self._thread.is_alive()

    @property
    def stats(self) -> ListenStats:
        return self.listener.stats

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.close()
