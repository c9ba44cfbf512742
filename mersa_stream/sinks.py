"""Where results go: a rich table, JSON lines, CSV or SRT. Every sink writes a whole record at a
time and flushes it, so a stopped run leaves only complete lines behind."""

from __future__ import annotations

import csv
import io
import json
from typing import Protocol, TextIO

from rich.console import Console
from rich.table import Table

from .types import EmotionResult

FORMATS = ("table", "jsonl", "csv", "srt")


class Sink(Protocol):
    def write(self, result: EmotionResult) -> None: ...
    def end_source(self, source: str, utterances: int = 0) -> None: ...
    def close(self) -> None: ...


def completion_record(source: str, utterances: int) -> dict:
    """The JSONL line (`analyze --resume`) that says every utterance of `source` is above it."""
    return {"file": source, "complete": True, "utterances": utterances}


class JsonlSink:
    """One JSON object per line, each written whole and flushed. With `completion_records`, a
    file's last line is `completion_record(file, n)`: what `analyze --resume` goes by."""

    def __init__(self, stream: TextIO, completion_records: bool = False,
                 close_stream: bool = False):
        self.stream = stream
        self.completion_records = completion_records
        self.close_stream = close_stream

    def _write_line(self, record: dict) -> None:
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()

    def write(self, result: EmotionResult) -> None:
        self._write_line(result.to_record())

    def end_source(self, source: str, utterances: int = 0) -> None:
        if self.completion_records:
            self._write_line(completion_record(source, utterances))

    def close(self) -> None:
        self.stream.flush()
        if self.close_stream:
            self.stream.close()


class CsvSink:
    """Columns: file, index, [channel,] start, end, text, label, confidence, p_<label>...,
    model (channel: `--channels split` only)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.labels: list[str] | None = None
        self.channel: list[str] = []

    def write(self, result: EmotionResult) -> None:
        record = result.to_record()
        if self.labels is None:
            self.labels = list(record["probabilities"])
            self.channel = ["channel"] if "channel" in record else []
            self._row(["file", "index", *self.channel, "start", "end", "text", "label",
                       "confidence", *[f"p_{label}" for label in self.labels], "model"])
        probs = record["probabilities"]
        self._row([record["file"], record["index"], *[record.get(k, "") for k in self.channel],
                   record["start"], record["end"], record["text"], record["label"],
                   record["confidence"], *[probs[k] for k in self.labels], record["model"]])

    def _row(self, values) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self.stream.write(buffer.getvalue())
        self.stream.flush()

    def end_source(self, source: str, utterances: int = 0) -> None:
        pass

    def close(self) -> None:
        self.stream.flush()


def srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


class SrtSink:
    """Subtitles: one cue per utterance, `[label 87%] text` (split channels: `[channel 1: label
    87%] text`); numbering restarts per file."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.count = 0

    def write(self, result: EmotionResult) -> None:
        self.count += 1
        u = result.utterance
        text = result.transcript.text or "…"
        who = f"{result.speaker}: " if result.speaker else ""
        self.stream.write(f"{self.count}\n{srt_time(u.start)} --> {srt_time(u.end)}\n"
                          f"[{who}{result.label} {result.confidence:.0%}] {text}\n\n")
        self.stream.flush()

    def end_source(self, source: str, utterances: int = 0) -> None:
        self.count = 0

    def close(self) -> None:
        self.stream.flush()


class TableSink:
    """A rich table per file, printed when the file is done. Only the printed cells are kept
    until then (not the utterance audio), so a long file costs a few bytes per utterance."""

    def __init__(self, console: Console):
        self.console = console
        self.rows: list[tuple[str, ...]] = []
        self.split = False  # `--channels split`: a channel cell first, a channel column

    def write(self, result: EmotionResult) -> None:
        u = result.utterance
        cells = (f"{u.start:.2f}", f"{u.end:.2f}", result.transcript.text or "[no words]",
                 result.label, f"{result.confidence:.2f}")
        self.split = u.channel is not None
        self.rows.append(cells if u.channel is None else (str(u.channel), *cells))

    def end_source(self, source: str, utterances: int = 0) -> None:
        table = Table(title=source, title_justify="left", expand=False)
        if self.split:
            table.add_column("channel", justify="right")
        for name, justify in (("start", "right"), ("end", "right"), ("text", "left"),
                              ("emotion", "left"), ("confidence", "right")):
            table.add_column(name, justify=justify, overflow="fold")
        for row in self.rows:
            table.add_row(*row)
        if self.rows:
            self.console.print(table)
        else:
            self.console.print(f"{source}: no speech found")
        self.rows = []

    def close(self) -> None:
        pass


def make_sink(fmt: str, stream: TextIO, console: Console, completion_records: bool = False) -> Sink:
    if fmt == "table":
        return TableSink(console)
    if fmt == "jsonl":
        return JsonlSink(stream, completion_records)
    return {"csv": CsvSink, "srt": SrtSink}[fmt](stream)
