"""The `mersa listen` daemon: source -> live Segmenter -> bounded queue -> recognizer -> sinks.

The main thread reads the source and runs the segmenter (cheap, never waits on recognition); a
worker thread recognises closed utterances one at a time. Between them sits a queue of at most
`listen.queue_size` utterances; when recognition falls behind a paced source (a microphone, a file
played in real time) the overflow policy decides: `drop-oldest` (default: the oldest waiting
utterance is dropped, so the newest speech is answered first), `drop-newest`, or `block` (the
reader waits; a microphone then piles audio up in its capture buffer). A file read as fast as
possible is not paced and always blocks: nothing is dropped; nobody waits on its utterances
either, so (`windows`) they are decoded as `analyze` decodes them, in shared 30 s windows, and the
two commands print the same records. At shutdown (stop(), end of input,
device lost) the open utterance is closed and everything queued is recognised, whatever the policy.

Latency. "End of speech" is when the last voiced frame of the utterance ended, in wall-clock time:
the moment the device delivered that audio (microphone), the moment it would have been spoken
(file played with a speed), or the moment it was fed to the segmenter (file as fast as possible).
Per utterance:
  endpoint   end of speech -> segmenter closes the utterance (merge gap + block size)
  queue      closed -> recognition starts
  recognize  recognition (ASR incl. its encoder, text encoder, fusion; recognizer timings)
  emit       recognition done -> handed to the sinks
  total      end of speech -> emitted (the sum)
All five come from one `Latency` per utterance; the record (`LiveResult.to_record`) and the
`--stats` percentiles carry the same figures.

Speculation (`listen.speculate`). The segmenter announces an utterance tentatively once `tail_ms`
of silence follow it (its audio is final then); when the worker is idle it recognises that
tentative utterance while the pause still runs. If the segmenter then closes the very same
utterance, that result is emitted at once; if speech resumed, it is thrown away. Speculation
starts only on an idle worker and never displaces a closed utterance (one closing meanwhile
waits at most for the speculative recognition in progress). With a
speculative hit, `queue` is 0 and `recognize` is only what was left of it at the close.

Interim and final records (`listen.interim`). An utterance closes only after `merge_gap_ms` of
silence (sentence-sized utterances, segmenter.py), or at a speaker turn up to `turn_probe_ms`
after the next voice began: too long to wait for. So when a speculative recognition finishes and
its utterance is still open (the pause it anticipated still runs, or speech went on within the
same utterance), its result is emitted at once as an interim record (`final` false). When the
utterance closes, its final record (`final` true, same `index`) follows: the same result if
nothing was said since, else the longer utterance's, which supersedes every interim record of
that index. Latency `first`: end of speech -> the first record
(interim or final) carrying the utterance's final audio; the other stages are the final record's.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Protocol

import numpy as np

from .config import Config
from .errors import DeviceError
from .segmenter import Segmenter
from .sinks import Sink
from .sources import Chunk, Source
from .types import SAMPLE_RATE, EmotionResult, Utterance

STAGES = ("total", "endpoint", "queue", "recognize", "emit")
FIRST = "first"  # end of speech -> the utterance's first record, interim or final


class RecognizerLike(Protocol):
    def recognize(self, utterances: list[Utterance]) -> list[EmotionResult]: ...


@dataclass(frozen=True)
class Closed:
    """Queue item: an utterance the segmenter closed, and when its speech ended (wall clock)."""

    utterance: Utterance
    speech_ended_at: float


@dataclass(frozen=True)
class Tentative:
    """Queue item: an utterance announced at `tail_ms` of silence, recognised ahead of its close."""

    utterance: Utterance
    speech_ended_at: float | None = None  # wall clock (None: no interim record for it)


@dataclass(frozen=True)
class Speculation:
    """A tentative utterance's recognition, kept (worker thread) until the close it anticipates."""

    key: tuple
    results: list[EmotionResult]
    begun: float
    done: float


@dataclass(frozen=True)
class Latency:
    """The wall-clock moments of one live utterance; every stage figure is derived here."""

    speech_ended_at: float
    detected_at: float
    begun: float
    done: float
    emitted_at: float

    @classmethod
    def now(cls, speech_ended_at: float, utterance: Utterance, begun: float,
            done: float) -> Latency:
        """Emitted now: `begun`/`done` bracket the recognition."""
        detected = utterance.detected_at or begun
        # a speculative result may have started (or finished) before the utterance was closed
        begun = max(begun, detected)
        return cls(speech_ended_at, detected, begun, max(done, begun), time.time())

    @property
    def total(self) -> float:
        return self.emitted_at - self.speech_ended_at

    def stages(self) -> dict[str, float]:
        """Seconds per stage, in `STAGES` order (see the module docstring)."""
        return {"total": self.total,
                "endpoint": self.detected_at - self.speech_ended_at,
                "queue": self.begun - self.detected_at,
                "recognize": self.done - self.begun,
                "emit": self.emitted_at - self.done}


@dataclass(frozen=True, kw_only=True)
class LiveResult(EmotionResult):
    """What `listen` emits: a result, and when its speech ended, was closed, recognised and
    emitted. Any `Sink` takes it; its record carries the timing as well."""

    latency: Latency

    @classmethod
    def of(cls, result: EmotionResult, latency: Latency) -> LiveResult:
        values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.init}
        return cls(**{**values, "emitted_at": latency.emitted_at}, latency=latency)

    def to_record(self) -> dict:
        record = super().to_record()
        record["speech_ended_at"] = round(self.latency.speech_ended_at, 4)
        record["detected_at"] = round(self.latency.detected_at, 4)
        record["emitted_at"] = round(self.latency.emitted_at, 4)
        record["latency"] = {k: round(v, 4) for k, v in self.latency.stages().items()}
        return record


class Observer:
    """Told what happens, from either thread (the live view; anything else that wants to know)."""

    def state(self, state: str) -> None: ...  # listening|speech|recognising|stopping|stopped
    def result(self, result: LiveResult) -> None: ...
    def dropped(self, utterance: Utterance, total: int) -> None: ...
    def ready(self, seconds: float) -> None: ...  # the models are loaded (`seconds` after start)


def percentile(values: Iterable[float], q: float) -> float:
    values = list(values)
    return float(np.percentile(values, q)) if values else math.nan


@dataclass
class ListenStats:
    detected: int = 0  # utterances closed by the segmenter
    processed: int = 0  # recognised and emitted
    dropped: int = 0  # removed by the overflow policy
    dropped_indices: list[int] = field(default_factory=list)
    emitted_indices: list[int] = field(default_factory=list)
    skipped: int = 0  # left over after --max-utterances was reached
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    max_queue: int = 0  # most utterances ever waiting
    speculated: int = 0  # tentative utterances recognised ahead of their close
    speculation_hits: int = 0  # ... whose result was emitted (the rest were wasted work)
    interim: int = 0  # interim records emitted (final false)
    source: dict = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.latencies.setdefault(name, []).append(value)

    def summary(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("latencies",)}
        out["latency"] = {name: {"p50": round(percentile(v, 50), 4),
                                 "p95": round(percentile(v, 95), 4), "n": len(v)}
                          for name, v in self.latencies.items()}
        return out


class UtteranceQueue:
    """At most `size` utterances waiting; what happens beyond is the overflow policy.

    Besides them: one optional speculative item (`offer`), handed out only when nothing else
    waits and forgotten as soon as a real utterance is put; and the close of the utterance being
    recognised speculatively (`put_claimed`), which joins that recognition outside the queue, as
    the utterance in flight does without speculation.
    """

    def __init__(self, size: int, policy: str, on_drop: Callable[[Utterance], None]):
        self.size, self.policy, self.on_drop = size, policy, on_drop
        self._items: deque[Closed] = deque()
        self._spare: Tentative | None = None
        self._claimed: Closed | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.high_water = 0

    def put(self, item: Closed, block: bool = False, keep: bool = False) -> None:
        """`keep`: queue it beyond `size` instead of applying the policy (while the models load,
        nothing is behind yet: what is said then waits for them)."""
        with self._cond:
            policy = "block" if block else self.policy
            while len(self._items) >= self.size and not keep:
                if policy == "drop-oldest":
                    self.on_drop(self._items.popleft().utterance)
                elif policy == "drop-newest":
                    self.on_drop(item.utterance)
                    return
                else:
                    self._cond.wait(0.1)
            self._items.append(item)
            self._spare = None
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()

    def offer(self, item: Tentative) -> None:
        """A speculative item: kept only while nothing else waits; a newer offer replaces it."""
        with self._cond:
            if not self._items and self._claimed is None and not self._closed:
                self._spare = item
                self._cond.notify_all()

    def put_claimed(self, item: Closed) -> None:
        with self._cond:
            self._claimed, self._spare = item, None
            self._cond.notify_all()

    def get(self) -> Closed | Tentative | None:
        """The next item, or None once closed and empty."""
        with self._cond:
            while not self._items and self._spare is None and self._claimed is None \
                    and not self._closed:
                self._cond.wait()
            if self._claimed is not None:
                item, self._claimed = self._claimed, None
            elif self._items:
                item = self._items.popleft()
            else:
                item, self._spare = self._spare, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Timeline:
    """Source position (samples) -> wall-clock time at which that audio became available."""

    def __init__(self, speed: float, keep: int = 4096):
        self.speed = speed
        self._chunks: deque[tuple[int, float]] = deque(maxlen=keep)  # (end sample, end time)
        self.position = 0

    def add(self, chunk: Chunk) -> None:
        self.position += len(chunk.samples)
        self._chunks.append((self.position, chunk.end_time))

    def wall(self, seconds: float) -> float:
        sample = seconds * SAMPLE_RATE
        if not self._chunks:
            return time.time()
        # the first chunk reaching `sample`, else the last; a linear scan is fine for 4k items
        end, at = next(((end, at) for end, at in self._chunks if end >= sample), self._chunks[-1])
        if math.isfinite(self.speed):
            at -= (end - sample) / SAMPLE_RATE / self.speed
        return at


class Listener:
    """Run one listening session: `run()` returns the statistics when the session ends.

    `stop()` may be called from any thread or a signal handler: capture stops, the open utterance
    is closed, what is queued is recognised and emitted, sinks are flushed, `run()` returns.
    A DeviceError from the source ends the session the same way, then is raised from `run()`.
    """

    def __init__(self, config: Config, recognizer: RecognizerLike, source: Source,
                 sinks: Iterable[Sink] = (), observers: Iterable[Observer] = (),
                 max_utterances: int | None = None, max_duration: float | None = None,
                 windows: bool = False):
        self.config = config
        # an unpaced file has no one waiting on each utterance: decode it as `analyze` does
        self.windowed = windows and not source.paced
        self.recognizer = recognizer
        self.source = source
        self.sinks = list(sinks)
        self.observers = list(observers)
        self.max_utterances = max_utterances
        self.max_duration = max_duration
        self.stats = ListenStats()
        self.stop_requested = threading.Event()
        self._limit_reached = threading.Event()
        self._lock = threading.Lock()
        policy = config.listen.overflow if source.paced else "block"
        self.policy = policy
        self.queue = UtteranceQueue(config.listen.queue_size, policy, self._dropped)
        self.timeline = Timeline(source.speed)
        speculate = self._speculate if config.listen.speculate and not self.windowed else None
        self.segmenter = Segmenter(config.segmenter, source=source.name, live=True,
                                   on_tentative=speculate)
        self._speculated: Speculation | None = None  # worker thread only
        # (speculation key, emitted_at) of the last interim record (worker thread only)
        self._interim: tuple[tuple, float] | None = None
        self._ahead_key: tuple | None = None  # key of the speculative recognition begun last
        self.error: BaseException | None = None
        # Models loading (a recognizer with `get()`, recognizer.RecognizerLoader): capture and
        # segmentation run meanwhile; the worker waits for them, and what is said is kept.
        self.loading = threading.Event()
        if getattr(recognizer, "get", None) is not None and not getattr(recognizer, "ready", True):
            self.loading.set()

    # -- control
    def stop(self) -> None:
        self.stop_requested.set()
        self.source.stop()

    def _notify(self, method: str, *args) -> None:
        for observer in self.observers:
            getattr(observer, method)(*args)

    def _dropped(self, utterance: Utterance) -> None:
        with self._lock:
            self.stats.dropped += 1
            self.stats.dropped_indices.append(utterance.index)
            total = self.stats.dropped
        self._notify("dropped", utterance, total)

    # -- main loop
    def run(self) -> ListenStats:
        started = time.time()
        worker = threading.Thread(target=self._work, name="mersa-recognizer", daemon=True)
        worker.start()
        error = None
        in_speech = False
        self._notify("state", "listening")
        try:
            for chunk in self.source.chunks():
                if self.stop_requested.is_set() or self._limit_reached.is_set():
                    self.source.stop()
                if chunk is None:
                    continue
                if self._limit_reached.is_set():
                    continue  # drain what the source still hands over, without using it
                self.timeline.add(chunk)
                for utterance in self.segmenter.push(chunk.samples):
                    self._enqueue(utterance)
                if self.segmenter.in_speech != in_speech:
                    in_speech = self.segmenter.in_speech
                    self._notify("state", "speech" if in_speech else "listening")
                if self.max_duration is not None and \
                        self.timeline.position / SAMPLE_RATE >= self.max_duration:
                    self.source.stop()
                    self.stop_requested.set()
        except DeviceError as exc:
            error = exc
        finally:
            self.source.stop()
            self._notify("state", "stopping")
            try:
                if not self._limit_reached.is_set():
                    for utterance in self.segmenter.flush():
                        self._enqueue(utterance, final=True)
            finally:
                self.queue.close()
                worker.join()
                self._notify("state", "stopped")
                self.source.close()
                for sink in self.sinks:
                    sink.end_source(self.source.name, self.stats.processed)
                    sink.close()
                self.stats.audio_seconds = round(self.timeline.position / SAMPLE_RATE, 3)
                self.stats.wall_seconds = round(time.time() - started, 3)
                self.stats.max_queue = self.queue.high_water
                self.stats.source = self.source.stats()
        if self.error is not None:
            raise self.error
        if error is not None:
            raise error
        return self.stats

    def _enqueue(self, utterance: Utterance, final: bool = False) -> None:
        speech_end = self.timeline.wall(utterance.end)
        with self._lock:
            self.stats.detected += 1
            claimed = self._ahead_key == speculation_key(utterance)
            if claimed:
                self._ahead_key = None
        item = Closed(utterance, speech_end)
        if claimed:
            self.queue.put_claimed(item)
        else:
            # at shutdown nothing is dropped: the queue may wait, whatever the policy; while the
            # models load, a paced source's utterances wait beyond the queue's size
            self.queue.put(item, block=final,
                           keep=self.loading.is_set() and self.policy != "block")

    def _speculate(self, utterance: Utterance) -> None:
        if not self._limit_reached.is_set() and not self.stop_requested.is_set():
            ended = self.timeline.wall(utterance.end) if self.config.listen.interim else None
            self.queue.offer(Tentative(utterance, ended))

    # -- recognition thread
    def _work(self) -> None:
        try:
            if self.loading.is_set():
                begun = time.perf_counter()
                self.recognizer.get()
                self.loading.clear()
                seconds = getattr(self.recognizer, "load_seconds", None)
                self._notify("ready", seconds if seconds is not None else
                             time.perf_counter() - begun)
            if self.windowed:
                self._work_in_windows()
            while (item := self.queue.get()) is not None:
                if isinstance(item, Tentative):
                    self._recognize_ahead(item)
                    continue
                if self._limit_reached.is_set():
                    with self._lock:
                        self.stats.skipped += 1
                    continue
                self._notify("state", "recognising")
                utterance = item.utterance
                ahead, self._speculated = self._speculated, None
                if ahead is not None and ahead.key == speculation_key(utterance):
                    results = [replace(r, utterance=utterance) for r in ahead.results]
                    begun, done = ahead.begun, ahead.done
                    with self._lock:
                        self.stats.speculation_hits += 1
                else:
                    begun = time.time()
                    results = self.recognizer.recognize([utterance])
                    done = time.time()
                first = None
                if self._interim is not None and self._interim[0] == speculation_key(utterance):
                    first = self._interim[1]
                self._interim = None
                for result in results:
                    self._emit(LiveResult.of(result, Latency.now(item.speech_ended_at,
                                                                 result.utterance, begun, done)),
                               first)
                self._notify("state", "speech" if self.segmenter.in_speech else "listening")
        except BaseException as exc:  # noqa: BLE001 - re-raised from run() in the main thread
            self.error = exc
            self.stop()
            # keep draining so that the main thread never waits on a full queue
            while self.queue.get() is not None:
                pass

    def _work_in_windows(self) -> None:
        """Unpaced file input: the closed utterances go through `analyze`'s own path (shared 30 s
        windows, words by time: pipeline.recognize_utterances), so `listen --input F` and
        `analyze F` print the same utterances, texts and labels. Returns when the queue closes."""
        from .pipeline import recognize_utterances

        closed: dict[int, Closed] = {}

        def utterances():
            while not self._limit_reached.is_set() and (item := self.queue.get()) is not None:
                closed[item.utterance.index] = item
                yield item.utterance

        runtime = self.config.runtime
        begun = time.time()
        for result in recognize_utterances(utterances(), self.recognizer,
                                           runtime.batch_for(True), packed=True,
                                           pack_gap_s=runtime.pack_gap_s):
            item = closed.pop(result.utterance.index)
            done = time.time()
            self._emit(LiveResult.of(result, Latency.now(item.speech_ended_at, result.utterance,
                                                         begun, done)))
            begun = done
            if self._limit_reached.is_set():
                break

    def _recognize_ahead(self, item: Tentative) -> None:
        if self._limit_reached.is_set():
            return
        utterance = item.utterance
        key = speculation_key(utterance)
        with self._lock:
            self._ahead_key = key
        begun = time.time()
        results = self.recognizer.recognize([utterance])
        done = time.time()
        self._speculated = Speculation(key, results, begun, done)
        with self._lock:
            self.stats.speculated += 1
        if item.speech_ended_at is not None and self.segmenter.open_index == utterance.index:
            # the pause still runs, or speech resumed within the same utterance: say what was
            # heard up to the pause now (the close may be merge_gap_ms away, or a turn test's
            # probe); the final record of the same index supersedes it
            self._emit_interim(results, item.speech_ended_at, begun, done)

    def _emit_interim(self, results: list[EmotionResult], speech_ended_at: float, begun: float,
                      done: float) -> None:
        for result in results:
            live = LiveResult.of(replace(result, final=False),
                                 Latency.now(speech_ended_at, result.utterance, begun, done))
            self._interim = (speculation_key(result.utterance), live.emitted_at)
            for sink in self.sinks:
                sink.write(live)
            with self._lock:
                self.stats.interim += 1
            self._notify("result", live)

    def _emit(self, result: LiveResult, first: float | None = None) -> None:
        """A final record; `first`: when an interim record of the same audio was emitted."""
        for sink in self.sinks:
            sink.write(result)
        with self._lock:
            self.stats.processed += 1
            self.stats.emitted_indices.append(result.utterance.index)
            first_at = result.latency.emitted_at if first is None else first
            self.stats.add(FIRST, first_at - result.latency.speech_ended_at)
            for name, value in result.latency.stages().items():
                self.stats.add(name, value)
            for name, value in result.timings.items():
                self.stats.add(name, value)
            limit = self.max_utterances is not None and self.stats.processed >= self.max_utterances
        self._notify("result", result)
        if limit:
            self._limit_reached.set()
            self.stop()


def speculation_key(utterance: Utterance) -> tuple:
    """What identifies a tentative utterance with the one closed later (same audio)."""
    return (utterance.index, utterance.start, utterance.end, len(utterance.audio))


def format_stats(stats: ListenStats) -> list[str]:
    """Lines for `--stats` (stderr at exit)."""
    s = stats
    lines = [f"utterances: {s.detected} detected, {s.processed} emitted, {s.dropped} dropped"
             + (f" (indices {s.dropped_indices})" if s.dropped else "")
             + (f", {s.skipped} beyond --max-utterances" if s.skipped else ""),
             f"audio: {s.audio_seconds:.1f} s in {s.wall_seconds:.1f} s wall; "
             f"most utterances waiting: {s.max_queue}"]
    if s.speculated:
        lines.append(f"speculative recognitions: {s.speculated}, "
                     f"{s.speculation_hits} used (the rest: speech resumed)")
    if s.interim:
        lines.append(f"interim records: {s.interim}")
    overruns = s.source.get("capture_overruns")
    if overruns:
        lines.append(f"capture buffer overruns: {overruns} blocks lost")
    if s.latencies:
        lines.append(f"{'latency (s)':<14}{'p50':>8}{'p95':>8}{'n':>6}")
        order = [FIRST, *STAGES] + [k for k in s.latencies if k not in (FIRST, *STAGES)]
        for name in order:
            values = s.latencies.get(name)
            if values:
                lines.append(f"{name:<14}{percentile(values, 50):>8.3f}"
                             f"{percentile(values, 95):>8.3f}{len(values):>6}")
    return lines
