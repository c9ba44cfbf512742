"""`mersa listen` and `mersa devices`; `register(app)` attaches them to the `mersa` command."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .cli import MODEL_FLAGS, ConfigFlags, Flag, stderr, stdout, with_config_flags
from .errors import ConfigError, DeviceError
from .listen import Listener, LiveResult, Observer, format_stats
from .sinks import JsonlSink, Sink

STATE_STYLE = {"listening": "green", "speech": "bold yellow", "recognising": "cyan",
               "stopping": "magenta", "stopped": "dim", "loading": "dim"}


class LiveView(Observer):
    """State line + the last N utterances (time, text, emotion, confidence bar)."""

    def __init__(self, source_name: str, history: int):
        self.source_name = source_name
        self.rows: deque = deque(maxlen=history)
        self.current = "loading"
        self.loading = True  # until ready(): the state line says the models are loading
        self.dropped_total = 0
        self.emitted = 0
        self._lock = threading.Lock()

    def state(self, state: str) -> None:
        self.current = state

    def ready(self, seconds: float) -> None:
        self.loading = False

    def result(self, result: LiveResult) -> None:
        spoken = time.localtime(result.latency.speech_ended_at)
        with self._lock:
            row = (time.strftime("%H:%M:%S", spoken), result, result.latency.total)
            # an interim row is replaced by the next record of its utterance (same index)
            if self.rows and self.rows[-1][1].utterance.index == result.utterance.index \
                    and not self.rows[-1][1].final:
                self.rows[-1] = row
            else:
                self.rows.append(row)
            self.emitted += result.final

    def dropped(self, utterance, total) -> None:
        self.dropped_total = total

    def __rich__(self):
        with self._lock:
            rows = list(self.rows)
        status = Text.assemble(("● ", STATE_STYLE.get(self.current, "")),
                               (self.current, STATE_STYLE.get(self.current, "")),
                               f"   {self.source_name}   {self.emitted} utterances")
        if self.loading:
            status.append("   loading models (what is said now waits for them)", style="dim")
        if self.dropped_total:
            status.append(f"   {self.dropped_total} dropped (recognition behind)", style="red")
        table = Table(expand=True, box=None, pad_edge=False)
        table.add_column("time", width=8, no_wrap=True)
        table.add_column("text", ratio=1, overflow="fold")
        table.add_column("emotion", width=9, no_wrap=True)
        table.add_column("confidence", width=16, no_wrap=True)
        table.add_column("delay", width=6, justify="right", no_wrap=True)
        for when, result, delay in rows:
            filled = int(round(result.confidence * 10))
            bar = Text("█" * filled, style="cyan") + Text("░" * (10 - filled), style="dim")
            bar.append(f" {result.confidence:.0%}")
            text = result.transcript.text or "[no words]"
            table.add_row(when, text if result.final else Text(text + " …", style="italic"),
                          result.label, bar, f"{delay:.2f}s")
        return Group(status, table)


class StderrReporter(Observer):
    """Without the live view: say on stderr when utterances are dropped."""

    def dropped(self, utterance, total) -> None:
        stderr.print(f"mersa: recognition behind, dropped utterance {utterance.index} "
                     f"({utterance.start:.2f}-{utterance.end:.2f} s); {total} dropped so far",
                     markup=False, highlight=False)


class ReadyReporter(Observer):
    """Without the live view: "mersa: listening on ..." on stderr once the models are loaded
    (capture and segmentation began before: what was said meanwhile is recognised then)."""

    def __init__(self, line: str):
        self.line = line

    def ready(self, seconds: float) -> None:
        stderr.print(self.line, markup=False, highlight=False)


@contextlib.contextmanager
def native_stderr_silenced():
    """Send C-level writes to fd 2 (PortAudio/ALSA complaining when a device goes away) to
    /dev/null for the whole session while Python's own stderr keeps working."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    old = sys.stderr
    replacement = os.fdopen(saved, "w", buffering=1, errors="backslashreplace",
                            encoding=getattr(old, "encoding", None) or "utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = replacement
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            replacement.flush()
        os.dup2(saved, 2)
        sys.stderr = old
        with contextlib.suppress(Exception):
            replacement.close()


@contextlib.contextmanager
def stop_on_signals(listener: Listener):
    """First SIGINT/SIGTERM: graceful stop. A second one: KeyboardInterrupt (exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = {"n": 0}

    def handler(signum, frame):
        count["n"] += 1
        if count["n"] > 1:
            raise KeyboardInterrupt
        listener.stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def devices():
    """List the audio input devices `listen --device` can use (index, name, channels, rate)."""
    from .sources import list_input_devices

    found = list_input_devices()
    if not found:
        raise DeviceError("no audio input device found")
    if not stdout.is_terminal:
        for d in found:
            print(f"{d.index}\t{d.name}\t{d.channels}\t{d.default_rate:g}\t{d.host_api}"
                  f"{chr(9) + 'default' if d.is_default else ''}")
        return
    table = Table(title="input devices")
    for column in ("index", "name", "channels", "rate", "host API", ""):
        table.add_column(column)
    for d in found:
        table.add_row(str(d.index), d.name, str(d.channels), f"{d.default_rate:g}", d.host_api,
                      "default" if d.is_default else "")
    stdout.print(table)


DEVICE_FLAG = Flag(("--device", "-d"), "listen.device",
                   "Input device: index or name (see `mersa devices`); default: the system's.")


@with_config_flags(*MODEL_FLAGS, DEVICE_FLAG)
def listen(
    flags: ConfigFlags,
    input_: Optional[Path] = typer.Option(
        None, "--input", "-i",
        help="Read this file through the live path instead of a microphone."),
    realtime: bool = typer.Option(
        False, "--realtime", help="With --input: pace the file in real time."),
    speed: Optional[float] = typer.Option(
        None, "--speed", help="With --input: pace at N times real time."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Append JSON lines to this file (each flushed when written)."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q",
        help="No live view: JSON lines on stdout, nothing else but errors."),
    stats: bool = typer.Option(
        False, "--stats", help="At exit, print counts and p50/p95 latencies to stderr."),
    max_duration: Optional[float] = typer.Option(
        None, "--max-duration", help="Stop after this many seconds of audio."),
    max_utterances: Optional[int] = typer.Option(
        None, "--max-utterances", help="Stop after emitting this many utterances."),
):
    """Listen to a microphone (or a file) and emit each utterance's words and emotion as it ends."""
    from .sources import FileSource, MicrophoneSource

    cfg = flags.load()
    if input_ is None and (realtime or speed is not None):
        raise ConfigError("--realtime and --speed need --input FILE")
    if realtime and speed is not None:
        raise ConfigError("give --realtime or --speed, not both")
    if max_duration is not None and max_duration <= 0:
        raise ConfigError("--max-duration must be greater than 0")
    if max_utterances is not None and max_utterances <= 0:
        raise ConfigError("--max-utterances must be greater than 0")
    if speed is not None and not speed > 0:
        raise ConfigError("--speed must be greater than 0")

    with native_stderr_silenced():
        chunk_ms = cfg.listen.chunk_ms
        if input_ is not None:
            source = FileSource(input_, speed=1.0 if realtime else speed, chunk_ms=chunk_ms)
        else:
            # open the device first: a missing or busy device fails at once, before model loading
            source = MicrophoneSource(cfg.listen.device or None, chunk_ms=chunk_ms)
            source.start()
        try:
            _run(cfg, source, output, quiet, stats, max_duration, max_utterances,
                 windows=input_ is not None and cfg.runtime.pack_windows)
        finally:
            source.close()


def _run(cfg, source, output, quiet, show_stats, max_duration, max_utterances, windows=False):
    """`windows`: an unpaced file is decoded in `analyze`'s shared windows (Listener)."""
    from .recognizer import RecognizerLoader, resolve_models

    live_view = sys.stdout.isatty() and not quiet
    # every model found now (a missing one stops here); loaded in the background while the
    # source is already captured and segmented (what is said meanwhile waits for them)
    recognizer = RecognizerLoader(cfg, resolve_models(cfg))
    recognizer.start()

    sinks: list[Sink] = []
    if not live_view:
        sinks.append(JsonlSink(sys.stdout))
    if output is not None:
        try:
            sinks.append(JsonlSink(open(output, "a", encoding="utf-8"), close_stream=True))
        except OSError as exc:
            raise ConfigError(f"--output {output}: cannot write ({exc.strerror})") from None
    observers = []
    view = None
    if live_view:
        view = LiveView(source.name, cfg.listen.history)
        observers.append(view)
    elif not quiet:
        observers.append(StderrReporter())
    listener = Listener(cfg, recognizer, source, sinks, observers, max_utterances=max_utterances,
                        max_duration=max_duration, windows=windows)
    if not quiet and not live_view:
        # said when the models are loaded: capture has begun already, nothing said is lost
        ready = ReadyReporter(f"mersa: listening on {source.name} (overflow: "
                              f"{listener.policy}); Ctrl-C to stop")
        if listener.loading.is_set():
            listener.observers.append(ready)
        else:
            ready.ready(0.0)
    result = None
    try:
        with stop_on_signals(listener):
            if view is not None:
                with Live(view, console=Console(), refresh_per_second=8, transient=False):
                    result = listener.run()
            else:
                result = listener.run()
    finally:
        if show_stats:
            for line in format_stats(result or listener.stats):
                stderr.print(line, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(devices)
    app.command()(listen)
