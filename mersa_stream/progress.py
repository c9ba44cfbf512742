"""A progress bar over audio seconds for long inputs (shown on a terminal only)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .types import SAMPLE_RATE


def audio_duration(path: Path) -> float | None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.frames > 0 else None
    except Exception:  # noqa: BLE001 - any unreadable header: fall back to PyAV, then unknown
        pass
    try:
        import av

        with av.open(str(path)) as container:
            return container.duration / 1_000_000 if container.duration else None
    except Exception:  # noqa: BLE001
        return None


class AudioProgress:
    def __init__(self, console: Console, min_seconds: float = 60.0):
        self.enabled = console.is_terminal
        self.min_seconds = min_seconds
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                                 TimeRemainingColumn(), console=console, transient=True,
                                 disable=not self.enabled)
        self.tasks: dict[Path, int] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def track(self, path: Path, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        duration = audio_duration(path) if self.enabled else None
        if duration is None or duration < self.min_seconds:
            yield from chunks
            return
        task = self.tasks[path] = self.progress.add_task(path.name, total=duration)
        for chunk in chunks:
            yield chunk
            self.progress.advance(task, len(chunk) / SAMPLE_RATE)

    def done(self, path: Path) -> None:
        if path in self.tasks:
            self.progress.remove_task(self.tasks.pop(path))
