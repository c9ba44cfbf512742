"""The values passed between pipeline stages: source -> segmenter -> recognizer -> sinks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True, eq=False)
class Utterance:
    """One stretch of speech found by the segmenter.

    `start`/`end` are the speech bounds in seconds from the start of the source; `audio` also
    holds the pre-roll before and a short tail after them (16 kHz mono float32).
    """

    source: str
    index: int
    start: float
    end: float
    audio: np.ndarray
    audio_offset: float  # time of audio[0] in the source
    detected_at: float | None = None  # wall clock when the segmenter closed it (live sources)
    channel: int | None = None  # the source's channel (`analyze --channels split`); None: mixed

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Transcript:
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class EmotionResult:
    utterance: Utterance
    transcript: Transcript
    label: str
    probabilities: dict[str, float]
    model_id: str
    timings: dict[str, float] = field(default_factory=dict)
    emitted_at: float | None = None
    # False: an interim record of `listen`, superseded by the final one of the same index
    final: bool = True
    # earlier transcripts the text branch read with this one (issue 14); None: a model that
    # reads each utterance alone
    context: int | None = None

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    # -- the utterance's own values, at hand (the Python API's EmotionResult) --
    @property
    def start(self) -> float:
        return self.utterance.start

    @property
    def end(self) -> float:
        return self.utterance.end

    @property
    def text(self) -> str:
        return self.transcript.text

    @property
    def channel(self) -> int | None:
        return self.utterance.channel

    @property
    def speaker(self) -> str | None:
        """Who spoke, where known: with split channels each channel is one speaker stream."""
        return None if self.channel is None else f"channel {self.channel}"

    def to_record(self) -> dict:
        """The JSON object written for this utterance (JSONL, CSV columns, live events)."""
        u = self.utterance
        record = {
            "file": u.source,
            "index": u.index,
            "start": round(u.start, 3),
            "end": round(u.end, 3),
            "text": self.transcript.text,
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "model": self.model_id,
            "final": self.final,
        }
        if u.channel is not None:
            record["channel"] = u.channel
        if u.detected_at is not None:
            record["detected_at"] = u.detected_at
        if self.emitted_at is not None:
            record["emitted_at"] = self.emitted_at
        if self.context is not None:
            record["context"] = self.context
        if self.timings:
            record["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return record
