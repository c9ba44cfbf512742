"""The timeline report: `analyze --report call.html|call.png` and `mersa report results.jsonl`.

One report covers every file of the run, a section per file (a call), because an analyst
compares calls side by side and wants one page to open, search and send. Each section: an
emotion timeline with a lane per channel (one mark per utterance, colour per label, fill opacity
the confidence), the transcript beside it and the per-label totals. HTML is one self-contained
file (inline CSS and SVG, no script, nothing fetched); PNG is a static matplotlib picture.

Only final results are drawn: a record or result with `final: false` (a live, provisional one)
is left out. A result without a channel counts as channel 0.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ConfigError, InputError
from .types import EmotionResult

KINDS = {".html": "html", ".htm": "html", ".png": "png"}

# Conventional colours for the usual emotion names; any other label gets the next free fallback.
LABEL_COLOURS = {
    "neutral": "#8c8c8c", "calm": "#6baed6", "happy": "#f0a500", "joy": "#f0a500",
    "happiness": "#f0a500", "sad": "#2f6db5", "sadness": "#2f6db5", "anger": "#d62728",
    "angry": "#d62728", "fear": "#8e44ad", "fearful": "#8e44ad", "disgust": "#2e8b57",
    "surprise": "#e377c2", "surprised": "#e377c2", "frustration": "#a0522d",
    "excited": "#ff7f0e", "boredom": "#17becf",
}
FALLBACK_COLOURS = ("#17becf", "#bcbd22", "#7f7f7f", "#9467bd", "#8c564b", "#1f77b4", "#ff7f0e")
# A mark's fill never goes fully transparent, so a low-confidence utterance is still seen; its
# outline is always the full label colour.
MIN_OPACITY = 0.12


@dataclass(frozen=True)
class Mark:
    """One utterance as the report draws it (the audio is not kept)."""

    file: str
    index: int
    channel: int
    start: float
    end: float
    text: str
    label: str
    confidence: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def opacity(self) -> float:
        return round(MIN_OPACITY + (1 - MIN_OPACITY) * min(1.0, max(0.0, self.confidence)), 3)

    @classmethod
    def from_result(cls, result: EmotionResult) -> Mark | None:
        if not result.final:
            return None
        u = result.utterance
        return cls(u.source, u.index, int(u.channel or 0), u.start, u.end, result.transcript.text,
                   result.label, float(result.confidence))

    @classmethod
    def from_record(cls, record: dict) -> Mark | None:
        """None for lines that are not results: completion records, provisional results."""
        if "complete" in record or record.get("final", True) is False:
            return None
        return cls(str(record["file"]), int(record.get("index", 0)),
                   int(record.get("channel") or 0), float(record["start"]), float(record["end"]),
                   str(record.get("text", "")), str(record["label"]),
                   float(record.get("confidence", record["probabilities"][record["label"]])))


@dataclass
class Call:
    """One file's marks and whether all its results are in (None: not known, as in the JSONL of
    a run without --resume, which has no completion records)."""

    name: str
    marks: list[Mark] = field(default_factory=list)
    finished: bool | None = False

    @property
    def channels(self) -> list[int]:
        return sorted({m.channel for m in self.marks}) or [0]

    @property
    def length(self) -> float:
        return max((m.end for m in self.marks), default=0.0)

    @property
    def status(self) -> str:
        if self.finished is None:
            return "results as recorded"
        if self.finished:
            return "complete" if self.marks else "complete: no speech found"
        if self.marks:
            return ("not finished (see the run's messages): only the utterances found before "
                    "are shown")
        return "no results (see the run's messages: it could not be read, or the run stopped)"

    @property
    def short_status(self) -> str:
        return self.status.split(" (")[0].split(":")[0]


def totals(marks: Iterable[Mark], labels: Sequence[str]) -> dict[str, tuple[int, float]]:
    """label -> (utterances, seconds of speech), in `labels` order."""
    counts = {label: [0, 0.0] for label in labels}
    for mark in marks:
        entry = counts.setdefault(mark.label, [0, 0.0])
        entry[0] += 1
        entry[1] += mark.seconds
    return {label: (n, s) for label, (n, s) in counts.items()}


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    fallback = iter(c for c in FALLBACK_COLOURS if c not in LABEL_COLOURS.values())
    return {label: LABEL_COLOURS.get(label.lower()) or next(fallback, "#444444")
            for label in labels}


@dataclass
class Report:
    """What a report shows: the calls in order, and every label the model knows."""

    calls: list[Call] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    _by_name: dict[str, Call] = field(default_factory=dict, repr=False)

    def call(self, name: str) -> Call:
        if name not in self._by_name:
            self._by_name[name] = Call(name)
            self.calls.append(self._by_name[name])
        return self._by_name[name]

    def add(self, mark: Mark, labels: Iterable[str] = (), model: str | None = None) -> None:
        self.call(mark.file).marks.append(mark)
        for label in [*labels, mark.label]:
            if label not in self.labels:
                self.labels.append(label)
        if model and model not in self.models:
            self.models.append(model)


def report_kind(path: Path) -> str:
    """'html' or 'png' from the extension; a one-line ConfigError naming --report otherwise.
    Checked before any file is analysed, so a typo costs nothing."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"--report {path}: give a .html or .png file name")
    if kind == "png" and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(f"--report {path}: a .png report needs matplotlib "
                          "(pip install 'mersa-stream[train]'), or give a .html file")
    if not path.parent.is_dir():
        raise ConfigError(f"--report {path}: folder {path.parent} does not exist")
    return kind


def write_report(report: Report, path: Path) -> None:
    """Rendered whole, then moved into place: an existing report is replaced, never cut."""
    kind = report_kind(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if kind == "html":
            tmp.write_text(render_html(report), encoding="utf-8")
        else:
            from .report_png import render_png

            render_png(report, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"--report {path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


class ReportSink:
    """A sink (sinks.Sink) that keeps every final result's `Mark` and writes the report on close.
    It wraps the run's own sink, which always goes first: the report never delays an output."""

    def __init__(self, inner, path: Path, files: Sequence[str] = ()):
        self.inner = inner
        self.path = path
        self.report = Report()
        for name in files:  # files with no results still get a section saying so
            self.report.call(name)

    def write(self, result: EmotionResult) -> None:
        self.inner.write(result)
        mark = Mark.from_result(result)
        if mark is not None:
            self.report.add(mark, result.probabilities, result.model_id)

    def end_source(self, source: str, utterances: int = 0) -> None:
        self.inner.end_source(source, utterances)
        self.report.call(source).finished = True

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            write_report(self.report, self.path)


def read_jsonl(paths: Sequence[Path]) -> Report:
    """A report from `analyze -f jsonl` output: results, completion records (a file with one is
    complete) and provisional `final: false` results (left out)."""
    report = Report()
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") \
                from None
        known = {call.name for call in report.calls}
        for number, line in enumerate(lines, 1):
            if line.strip():
                _read_line(report, line, f"{path}:{number}")
        new = [call for call in report.calls if call.name not in known]
        if not any(call.finished for call in new):  # written without --resume: nothing to go by
            for call in new:
                call.finished = None
    return report


def _read_line(report: Report, line: str, where: str) -> None:
    try:
        record = json.loads(line)
        if record.get("complete") is True:
            report.call(str(record["file"])).finished = True
            return
        mark = Mark.from_record(record)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{where}: not a line of `mersa analyze -f jsonl`") from None
    if mark is not None:
        probabilities = record.get("probabilities")
        report.add(mark, probabilities if isinstance(probabilities, dict) else (),
                   record.get("model"))


# -- HTML ---------------------------------------------------------------------------------------

LANE_H, LANE_GAP, AXIS_H, LEFT, RIGHT, WIDTH = 34, 8, 22, 86, 28, 960

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 4px;word-break:break-all}
.meta{color:#666;margin:0 0 12px}section{border-top:1px solid #ddd}
.grid{display:grid;grid-template-columns:minmax(0,3fr) minmax(280px,2fr);gap:20px}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
svg.timeline{width:100%;height:auto;display:block}
svg text{font:13px system-ui,sans-serif;fill:#555}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 8px;text-align:left;
vertical-align:top}th{border-bottom:1px solid #ccc;font-weight:600}td.n{text-align:right}
.transcript{max-height:460px;overflow:auto;border:1px solid #eee;align-self:start}
.transcript tr:target{background:#fff3bf}.chip{display:inline-block;padding:0 6px;
border-radius:8px;color:#fff;font-size:12px;white-space:nowrap}
.legend span{margin-right:14px;white-space:nowrap}.sw{display:inline-block;width:12px;
height:12px;border-radius:2px;vertical-align:-1px;margin-right:4px}
.bar{display:flex;height:12px;width:220px;background:#f2f2f2}.bar div{height:12px}
.zero{color:#aaa}
"""


def render_html(report: Report) -> str:
    colours = label_colours(report.labels)
    calls = report.calls
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        # an inline icon: the browser asks for no /favicon.ico
        "<link rel='icon' href='data:,'>",
        f"<title>{_e(_title(calls))}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(_title(calls))}</h1>",
        f"<p class='meta'>{len(calls)} file(s), "
        f"{sum(len(c.marks) for c in calls)} utterance(s); model "
        f"{_e(', '.join(report.models) or 'unknown')}; made "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Fill opacity: confidence.</p>",
        _legend(report.labels, colours),
    ]
    if len(calls) > 1:
        parts.append(_overview(calls, report.labels, colours))
    for number, call in enumerate(calls):
        parts.append(_section(call, f"f{number}", report.labels, colours))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _title(calls: Sequence[Call]) -> str:
    if len(calls) == 1:
        return f"Emotion timeline: {Path(calls[0].name).name}"
    return "Emotion timelines"


def clock(seconds: float, tenths: bool = True) -> str:
    """m:ss.s, or h:mm:ss.s from an hour on (without the tenths when `tenths` is False)."""
    minutes, secs = divmod(round(max(0.0, seconds), 1 if tenths else 0), 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{hours}:{minutes:02d}" if hours else f"{minutes}"
    return f"{text}:{secs:04.1f}" if tenths else f"{text}:{int(secs):02d}"


def _legend(labels: Sequence[str], colours: dict[str, str]) -> str:
    items = "".join(f"<span><i class='sw' style='background:{colours[label]}'></i>{_e(label)}"
                    "</span>" for label in labels)
    return f"<p class='legend'>{items}</p>"


def _share_bar(marks: Sequence[Mark], labels: Sequence[str], colours: dict[str, str]) -> str:
    sums = totals(marks, labels)
    speech = sum(s for _, s in sums.values()) or 1.0
    cells = "".join(f"<div title='{_e(label)} {s / speech:.0%}' style='width:{100 * s / speech:.2f}"
                    f"%;background:{colours[label]}'></div>" for label, (_, s) in sums.items() if s)
    return f"<div class='bar'>{cells}</div>"


def _overview(calls: Sequence[Call], labels: Sequence[str], colours: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><td><a href='#f{n}'>{_e(c.name)}</a></td><td>{_e(c.short_status)}</td>"
        f"<td class='n'>{len(c.marks)}</td><td class='n'>{sum(m.seconds for m in c.marks):.1f}"
        f"</td><td>{_share_bar(c.marks, labels, colours)}</td></tr>" for n, c in enumerate(calls))
    every = [m for c in calls for m in c.marks]
    return ("<h2>All files</h2><table><tr><th>file</th><th>status</th><th>utterances</th>"
            f"<th>speech s</th><th>share of speech by label</th></tr>{rows}</table>"
            + _totals_table(every, labels, colours, channels=[]))


def _section(call: Call, anchor: str, labels: Sequence[str], colours: dict[str, str]) -> str:
    head = (f"<section id='{anchor}'><h2>{_e(call.name)}</h2><p class='meta'>{_e(call.status)}; "
            f"{len(call.marks)} utterance(s), last speech ends at {clock(call.length)}</p>")
    if not call.marks:
        return head + "</section>"
    left = _timeline(call, anchor, colours) + _totals_table(
        call.marks, labels, colours, call.channels if len(call.channels) > 1 else [])
    return (head + f"<div class='grid'><div>{left}</div>"
            f"<div class='transcript'>{_transcript(call, anchor, colours)}</div></div></section>")


def _tick_step(length: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if length / step <= 10:
            return step
    return 7200


def _timeline(call: Call, anchor: str, colours: dict[str, str]) -> str:
    """An inline SVG: a lane per channel, a `rect.mark` per utterance linking to its line of the
    transcript, a tooltip (<title>) with time, label, confidence and words."""
    channels = call.channels
    length = max(call.length, 1.0)
    scale = (WIDTH - LEFT - RIGHT) / length
    height = len(channels) * (LANE_H + LANE_GAP) + AXIS_H
    out = [f"<svg class='timeline' viewBox='0 0 {WIDTH} {height}' role='img' "
           f"aria-label='emotion timeline of {_e(call.name)}'>"]
    for lane, channel in enumerate(channels):
        y = lane * (LANE_H + LANE_GAP)
        out.append(f"<rect class='lane' x='{LEFT}' y='{y}' width='{WIDTH - LEFT - RIGHT}' "
                   f"height='{LANE_H}' fill='#f4f4f4'/><text x='4' y='{y + LANE_H / 2 + 4}'>"
                   f"channel {channel}</text>")
    step = _tick_step(length)
    for tick in range(0, int(length // step) + 1):
        x = LEFT + tick * step * scale
        out.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{height - AXIS_H + 4}' "
                   f"stroke='#ddd'/><text x='{x:.1f}' y='{height - 6}' text-anchor='middle'>"
                   f"{clock(tick * step, tenths=False)}</text>")
    for mark in call.marks:
        y = channels.index(mark.channel) * (LANE_H + LANE_GAP)
        x, w = LEFT + mark.start * scale, max(2.0, mark.seconds * scale)
        colour = colours[mark.label]
        tip = (f"{clock(mark.start)}-{clock(mark.end)} channel {mark.channel}: {mark.label} "
               f"{mark.confidence:.0%}. {mark.text}")
        out.append(f"<a href='#{anchor}-u{mark.index}-c{mark.channel}'><rect class='mark' "
                   f"data-label='{_e(mark.label)}' x='{x:.2f}' y='{y + 2}' width='{w:.2f}' "
                   f"height='{LANE_H - 4}' fill='{colour}' fill-opacity='{mark.opacity}' "
                   f"stroke='{colour}' stroke-width='1.5'><title>{_e(tip)}</title></rect></a>")
    out.append("</svg>")
    return "".join(out)


def _transcript(call: Call, anchor: str, colours: dict[str, str]) -> str:
    rows = "".join(
        f"<tr id='{anchor}-u{m.index}-c{m.channel}'><td class='n'>{clock(m.start)}</td>"
        f"<td class='n'>{m.channel}</td><td><span class='chip' style='background:"
        f"{colours[m.label]};opacity:{max(m.opacity, 0.45)}'>{_e(m.label)} {m.confidence:.0%}"
        f"</span></td><td>{_e(m.text) or '<i>[no words]</i>'}</td></tr>"
        for m in sorted(call.marks, key=lambda m: (m.start, m.channel)))
    return ("<table><tr><th>start</th><th>ch</th><th>emotion</th><th>words</th></tr>"
            f"{rows}</table>")


def _totals_table(marks: Sequence[Mark], labels: Sequence[str], colours: dict[str, str],
                  channels: Sequence[int]) -> str:
    """Per label: utterances and seconds, per channel when there are several, and in all."""
    everything = totals(marks, labels)
    speech = sum(s for _, s in everything.values()) or 1.0
    by_channel = {c: totals([m for m in marks if m.channel == c], labels) for c in channels}
    head = "".join(f"<th>ch {c} utt.</th><th>ch {c} s</th>" for c in channels)
    rows = []
    for label, (count, seconds) in everything.items():
        cells = "".join(f"<td class='n'>{by_channel[c][label][0]}</td>"
                        f"<td class='n'>{by_channel[c][label][1]:.1f}</td>" for c in channels)
        rows.append(f"<tr class='{'' if count else 'zero'}'><td><i class='sw' style='background:"
                    f"{colours[label]}'></i>{_e(label)}</td>{cells}<td class='n'>{count}</td>"
                    f"<td class='n'>{seconds:.1f}</td><td class='n'>{seconds / speech:.0%}</td>"
                    "</tr>")
    return (f"<table class='totals'><tr><th>label</th>{head}<th>utterances</th><th>seconds</th>"
            f"<th>share</th></tr>{''.join(rows)}</table>")
