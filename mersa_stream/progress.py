"""A progress bar over audio seconds for long inputs, and one over the files and audio hours of a
many-file run (shown on a terminal only)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

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


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class _Amount(ProgressColumn):
    """Seconds done of one file; or, for the run's files (issue 17), files and audio hours
    done, and the audio hours recognised per hour of wall time so far."""

    def render(self, task) -> Text:
        if "files" not in task.fields:
            return Text(f"{task.completed:.0f}/{task.total:.0f} s")
        rate = task.completed / task.elapsed if task.elapsed else 0.0  # audio h per hour
        return Text(f"{task.fields['done']}/{task.fields['files']} files "
                    f"{_clock(task.completed)}/{_clock(task.total or 0)} audio x{rate:.1f}")


class AudioProgress:
    def __init__(self, console: Console, min_seconds: float = 60.0):
        self.enabled = console.is_terminal
        self.min_seconds = min_seconds
        # a narrow bar: the files line must fit 80 columns (rich crops text, not bars)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(24), _Amount(),
                                 TimeRemainingColumn(), console=console, transient=True,
                                 disable=not self.enabled)
        self.tasks: dict[Path, int] = {}
        self.files_task: int | None = None
        self.durations: dict[Path, float] = {}
        self.files_done = 0

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
            # mono chunks, or (channels, samples) blocks (`--channels split`)
            self.progress.advance(task, chunk.shape[-1] / SAMPLE_RATE)

    def add_files(self, paths: Sequence[Path]) -> None:
        """A bar over all the files of a run (more than one), advanced by each file's audio
        duration as it is done: the ETA follows audio hours, not file counts."""
        if not self.enabled or len(paths) < 2:
            return
        self.durations = {path: audio_duration(path) or 0.0 for path in paths}
        self.files_task = self.progress.add_task("", total=sum(self.durations.values())
                                                 or None, files=len(paths), done=0)

    def done(self, path: Path) -> None:
        if path in self.tasks:
            self.progress.remove_task(self.tasks.pop(path))
        if self.files_task is not None:
            self.files_done += 1
            self.progress.update(self.files_task, advance=self.durations.pop(path, 0.0),
                                 done=self.files_done)
