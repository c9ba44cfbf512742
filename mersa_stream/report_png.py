"""The timeline report as a static picture (`--report call.png`), drawn with matplotlib: per file,
the timeline (a lane per channel, colour per label, fill opacity the confidence), the per-label
seconds beside it and the first lines of the transcript under it. report.py decides what is
shown; this module only draws it. matplotlib is imported here only (the `train` extra)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from .report import Call, Report, clock, label_colours, totals

TRANSCRIPT_LINES = 12  # per file: a picture is a glance; the HTML report has every line
WIDTH_IN, DPI = 12.0, 100


def render_png(report: Report, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colours = label_colours(report.labels)
    calls = report.calls or [Call("(no files)")]
    heights = []
    for call in calls:
        heights += [0.5 + 0.45 * len(call.channels), 0.25 + 0.19 * _shown_lines(call)]
    figure = Figure(figsize=(WIDTH_IN, sum(heights) + 0.9 * len(calls) + 0.6), dpi=DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[4, 1])
    for number, call in enumerate(calls):
        timeline = figure.add_subplot(grid[2 * number, 0])
        _draw_timeline(timeline, call, colours)
        _draw_totals(figure.add_subplot(grid[2 * number, 1]), call, report.labels, colours)
        _draw_transcript(figure.add_subplot(grid[2 * number + 1, :]), call, colours)
    handles = [_patch(colours[label], label) for label in report.labels]
    if handles:
        figure.legend(handles=handles, loc="outside upper center", ncols=len(handles),
                      frameon=False, title="fill opacity: confidence")
    figure.savefig(path, format="png", facecolor="white")


def _patch(colour: str, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor=colour, label=label)


def _shown_lines(call: Call) -> int:
    return min(len(call.marks), TRANSCRIPT_LINES) + (len(call.marks) > TRANSCRIPT_LINES) or 1


def _draw_timeline(axes, call: Call, colours: dict[str, str]) -> None:
    from matplotlib.colors import to_rgba
    from matplotlib.ticker import MaxNLocator

    channels = call.channels
    for lane, channel in enumerate(channels):  # one collection per lane: fast for long calls
        marks = [m for m in call.marks if m.channel == channel]
        if marks:
            axes.broken_barh([(m.start, max(m.seconds, 0.05)) for m in marks], (lane + 0.1, 0.8),
                             facecolors=[to_rgba(colours[m.label], m.opacity) for m in marks],
                             edgecolors=[colours[m.label] for m in marks], linewidth=1.2)
    axes.set_xlim(0, max(call.length, 1.0) * 1.01)
    axes.set_ylim(0, len(channels))
    axes.set_yticks([lane + 0.5 for lane in range(len(channels))],
                    [f"channel {c}" for c in channels])
    axes.invert_yaxis()
    # whole seconds, in steps a clock reads well (1, 2, 5, 10, 15, 30, 60 s ...)
    axes.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 1.5, 2, 3, 5, 6, 10],
                                             integer=True))
    axes.xaxis.set_major_formatter(lambda seconds, _: clock(seconds, tenths=False))
    if not call.marks:
        axes.text(0.5, 0.5, "no utterances", ha="center", va="center", color="#888888",
                  transform=axes.transAxes)
    axes.set_title(f"{call.name}  ({call.status}; {len(call.marks)} utterances)", loc="left",
                   fontsize=10)
    axes.grid(axis="x", color="#dddddd")
    axes.set_axisbelow(True)


def _draw_totals(axes, call: Call, labels: list[str], colours: dict[str, str]) -> None:
    if not call.marks:
        axes.axis("off")
        return
    sums = totals(call.marks, labels)
    names = list(sums)
    axes.barh(names, [s for _, s in sums.values()], color=[colours[n] for n in names])
    for row, (count, seconds) in enumerate(sums.values()):
        axes.annotate(f" {count} · {seconds:.1f} s", (seconds, row), va="center", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("seconds of speech", fontsize=8)
    axes.tick_params(labelsize=8)
    axes.margins(x=0.45)


def _draw_transcript(axes, call: Call, colours: dict[str, str]) -> None:
    axes.axis("off")
    marks = sorted(call.marks, key=lambda m: (m.start, m.channel))
    lines = len(marks[:TRANSCRIPT_LINES]) + (len(marks) > TRANSCRIPT_LINES)
    step = 1.0 / max(lines, 1)
    for row, mark in enumerate(marks[:TRANSCRIPT_LINES]):
        y = 1.0 - (row + 0.5) * step
        axes.text(0.0, y, f"{clock(mark.start)}  ch {mark.channel}", fontsize=8, va="center",
                  family="monospace", transform=axes.transAxes)
        axes.text(0.12, y, f"{mark.label} {mark.confidence:.0%}", fontsize=8, va="center",
                  color="white", transform=axes.transAxes,
                  bbox={"boxstyle": "round,pad=0.2", "facecolor": colours[mark.label],
                        "edgecolor": "none"})
        axes.text(0.22, y, textwrap.shorten(mark.text or "[no words]", 120, placeholder=" …"),
                  fontsize=8, va="center", transform=axes.transAxes)
    if len(marks) > TRANSCRIPT_LINES:
        axes.text(0.0, 1.0 - (lines - 0.5) * step, f"… {len(marks) - TRANSCRIPT_LINES} more "
                  "utterances (the HTML report has every line)", fontsize=8, style="italic",
                  va="center", transform=axes.transAxes)
