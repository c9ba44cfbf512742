"""One recognizer shared by many live sessions, their utterances recognised in shared batches.

Every session's listener calls `recognize([utterance])` from its own worker thread, as `listen`
does. `SharedBatcher` queues those calls; one thread takes all that are waiting (up to
`max_batch` utterances) and recognises them in one `recognize()` call, so a CPU or a GPU serves
several sessions at once instead of one after the other. Nobody waits for a batch to fill: a
call made while the recognizer is idle runs at once, alone; calls made while it is busy are
gathered for the next batch. Results are the recognizer's own, handed back to each caller.

A session's `SessionRecognizer` can be cancelled (its client went away): its waiting calls leave
the queue and every call returns nothing at once, so no shared time is spent on it any more.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Sequence

from .listen import RecognizerLike
from .types import EmotionResult, Utterance


@dataclass(eq=False)
class _Call:
    session: SessionRecognizer
    utterances: list[Utterance]
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    batches: int = 0
    utterances: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches

    def add(self, size: int) -> None:
        self.batches += 1
        self.utterances += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


class SharedBatcher:
    """`recognize()` from any number of threads; one worker thread batches the calls."""

    def __init__(self, recognizer: RecognizerLike, max_batch: int):
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._calls: deque[_Call] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="mersa-batcher", daemon=True)
        self._thread.start()

    def session(self) -> SessionRecognizer:
        return SessionRecognizer(self)

    def recognize(self, utterances: Sequence[Utterance]) -> list[EmotionResult]:
        return self.session().recognize(utterances)

    def _submit(self, call: _Call) -> None:
        with self._cond:
            if self._closed:
                call.future.set_exception(RuntimeError("the shared recognizer is closed"))
                return
            self._calls.append(call)
            self._cond.notify_all()

    def _forget(self, session: SessionRecognizer) -> None:
        with self._cond:
            gone = [c for c in self._calls if c.session is session]
            for call in gone:
                self._calls.remove(call)
        for call in gone:
            call.future.set_result([])

    def _next_batch(self) -> list[_Call] | None:
        with self._cond:
            while not self._calls and not self._closed:
                self._cond.wait()
            if not self._calls:
                return None
            batch, size = [], 0
            # a call is never split; one larger than max_batch goes alone
            while self._calls and (not batch or
                                   size + len(self._calls[0].utterances) <= self.max_batch):
                call = self._calls.popleft()
                batch.append(call)
                size += len(call.utterances)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            utterances = [u for call in batch for u in call.utterances]
            try:
                results = self.recognizer.recognize(utterances)
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                for call in batch:
                    call.future.set_exception(exc)
                continue
            self.stats.add(len(utterances))
            # one result per utterance, in order (Recognizer.recognize)
            at = 0
            for call in batch:
                call.future.set_result(results[at:at + len(call.utterances)])
                at += len(call.utterances)

    def close(self) -> None:
        """Finish the calls queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()


class SessionRecognizer:
    """One session's view of the shared recognizer (what its listener is given)."""

    def __init__(self, batcher: SharedBatcher):
        self.batcher = batcher
        self.cancelled = False

    def recognize(self, utterances: Sequence[Utterance]) -> list[EmotionResult]:
        if self.cancelled or not utterances:
            return []
        call = _Call(self, list(utterances))
        self.batcher._submit(call)
        return call.future.result()

    def cancel(self) -> None:
        """The session is over: what it still asks for is not recognised."""
        self.cancelled = True
        self.batcher._forget(self)
