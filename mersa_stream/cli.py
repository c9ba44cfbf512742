"""The `mersa` command: analyze, models, config (listen and train live in their own modules)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import typer
from rich.console import Console

from .allocator import cap_mmap_threshold
from .config import Config, load_config, to_toml
from .errors import (EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigError,
                     InputError, MersaError)
from .sinks import FORMATS

app = typer.Typer(
    name="mersa", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Speech emotion recognition from sound and words, utterance by utterance (MERSA).")

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

ConfigOption = typer.Option(None, "--config", "-c", help="Config file (default: ./config.toml if present).")
SetOption = typer.Option([], "--set", help="Override one setting: SECTION.KEY=VALUE (repeatable).")
CheckpointOption = typer.Option(None, "--checkpoint", help="Emotion model folder (default: models/default).")
AsrOption = typer.Option(None, "--asr", help="ASR model: a faster-whisper size (tiny.en, small.en), hub id or folder.")
TextEncoderOption = typer.Option(None, "--text-encoder", help="Where to find the checkpoint's text encoder (hub name or folder).")
AudioEncoderOption = typer.Option(None, "--audio-encoder", help="Where to find the checkpoint's audio encoder (wav2vec2 folder/hub name, VGGish weights file).")
DeviceTypeOption = typer.Option(None, "--device-type", help="auto | cpu | cuda.")


def build_config(config_path, overrides, checkpoint=None, asr=None, text_encoder=None,
                 audio_encoder=None, device_type=None, **runtime) -> Config:
    values: dict = {"models": {}, "runtime": {}}
    for key, value in (("checkpoint", checkpoint), ("asr", asr), ("text_encoder", text_encoder),
                       ("audio_encoder", audio_encoder)):
        if value is not None:
            values["models"][key] = str(value)
    if device_type is not None:
        values["runtime"]["device_type"] = device_type
    values["runtime"].update({k: v for k, v in runtime.items() if v is not None})
    return load_config(config_path, overrides, {k: v for k, v in values.items() if v})


@contextlib.contextmanager
def open_output(path: Optional[Path], append: bool = False) -> Iterator:
    if path is None:
        yield sys.stdout
        return
    try:
        handle = open(path, "a" if append else "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot write ({exc.strerror})") from None
    with handle:
        yield handle


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM during `analyze` (a KeyboardInterrupt: no `except Exception` eats it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopOnSignals:
    """SIGINT/SIGTERM -> `Stopped` in the main thread, at once, except inside `writing()`: a
    record being written is finished first, so the output never ends in a cut line on a signal.
    A second signal does not wait."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._writing = 0
        self._pending = False
        self._previous: dict = {}

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self._writing:
            self._pending = True
            return
        raise Stopped(self.signum)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
            if not self._writing and self._pending:
                self._pending = False
                raise Stopped(self.signum)


@dataclass
class ResumeState:
    done: set  # files (as named on the command line) whose results the output holds complete
    dropped: int = 0  # result lines of unfinished files removed (they are redone)
    trimmed: bool = False  # a cut last line (a killed run) was removed


def prepare_resume(path: Path, names: Sequence[str]) -> ResumeState:
    """Make the JSONL output `path` of an earlier `analyze --resume` ready to be appended to.

    A file counts as done when its completion record (`{"file", "complete": true, "utterances":
    N}`) follows exactly N result lines of it. A cut last line is removed; the lines of files in
    `names` that are not done are removed too (those files are redone from the start); all other
    lines are kept as they are. The file is rewritten (atomically) only when something is removed.
    A line that is not a mersa JSONL record stops the run: this output is someone else's file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ResumeState(set())
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot read it to resume ({exc.strerror})") from None
    lines = data.split(b"\n")
    cut = lines.pop()  # b"" if the file ends with a newline; else a line a kill cut short
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("file"), str):
            raise ConfigError(f"--output {path}:{number}: not a line of `mersa analyze -f jsonl`; "
                              "refusing to resume into this file")
        records.append((line, record))
    results: dict[str, int] = {}
    for _, record in records:
        if "complete" not in record:
            results[record["file"]] = results.get(record["file"], 0) + 1
    done = {r["file"] for _, r in records
            if r.get("complete") is True and r.get("utterances") == results.get(r["file"], 0)}
    redo = set(names) - done
    keep = [line for line, r in records if r["file"] not in redo]
    state = ResumeState(done, dropped=len(records) - len(keep), trimmed=bool(cut.strip()))
    if state.dropped or cut or len(keep) != len(lines):
        tmp = path.with_name(path.name + ".resume-tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(b"".join(line + b"\n" for line in keep))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ConfigError(f"--output {path}: cannot rewrite it to resume ({exc.strerror})") \
                from None
    return state


@dataclass
class RunReport:
    files: int = 0  # finished: all their results written
    results: int = 0
    failed: int = 0  # unreadable inputs (exit 3)
    crashed: int = 0  # internal errors (exit 1)
    skipped: int = 0  # --resume: already complete


def _say(message: str) -> None:
    stderr.print(f"mersa: {message}", markup=False, highlight=False)


@app.command()
def analyze(
    files: List[Path] = typer.Argument(..., readable=False, help="Audio or video files: wav, flac, ogg, mp3, m4a, mp4 ..."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | jsonl | csv | srt."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results to this file instead of stdout."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Utterances recognised together (runtime.batch_size); with --pack, 30 s windows (runtime.pack_batch_size)."),
    pack: Optional[bool] = typer.Option(None, "--pack/--no-pack", help="Pack utterances into shared 30 s Whisper windows (runtime.pack_windows)."),
    resume: bool = typer.Option(False, "--resume", help="With -f jsonl -o FILE: skip the files FILE already holds complete, redo the rest, append (FILE gets a completion record per file)."),
    config: Optional[Path] = ConfigOption,
    set_: List[str] = SetOption,
    checkpoint: Optional[Path] = CheckpointOption,
    asr: Optional[str] = AsrOption,
    text_encoder: Optional[str] = TextEncoderOption,
    audio_encoder: Optional[str] = AudioEncoderOption,
    device_type: Optional[str] = DeviceTypeOption,
):
    """Find the utterances in FILES and say, for each, its time span, words and emotion."""
    from .recognizer import Recognizer

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
    if resume and (fmt != "jsonl" or output is None):
        raise ConfigError("--resume needs --format jsonl and --output FILE")
    cfg = build_config(config, set_, checkpoint, asr, text_encoder, audio_encoder, device_type,
                       pack_windows=pack)
    if batch_size is not None:
        key = "pack_batch_size" if cfg.runtime.pack_windows else "batch_size"
        cfg = build_config(config, [*set_, f"runtime.{key}={batch_size}"], checkpoint, asr,
                           text_encoder, audio_encoder, device_type, pack_windows=pack)
    report = RunReport()
    with StopOnSignals() as guard:
        try:
            state = prepare_resume(output, [str(f) for f in files]) if resume else None
            if state is not None and (state.done or state.dropped or state.trimmed):
                _say(f"{output}: resuming: {len(state.done & set(map(str, files)))} file(s) "
                     f"already complete" + (f", {state.dropped} result(s) of unfinished files "
                                            "dropped" if state.dropped else "")
                     + (", a cut last line removed" if state.trimmed else ""))
            with stderr.status("loading models", spinner="dots") if stderr.is_terminal else \
                    contextlib.nullcontext():
                recognizer = Recognizer(cfg)
            _analyze_files(files, fmt, output, cfg, recognizer, guard, report,
                           state.done if state is not None else None)
        except Stopped as stop:
            _say(f"stopped by {stop.name}: {report.files} file(s) finished, {report.results} "
                 f"result(s) written" + ("; run again with --resume to finish" if resume else ""))
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if report.crashed:
        raise typer.Exit(EXIT_INTERNAL)
    if report.failed:
        raise typer.Exit(EXIT_INPUT)


def _analyze_files(files, fmt, output, cfg, recognizer, guard: StopOnSignals, report: RunReport,
                   done: Optional[set]) -> None:
    """Each file decoded in chunks, segmented and recognised as it streams; each result written
    (whole, flushed) as soon as it exists. One bad file is reported and the others go on."""
    from .decode import stream_audio
    from .pipeline import recognize_stream
    from .progress import AudioProgress
    from .sinks import make_sink

    def emit(call, *args) -> None:
        try:
            with guard.writing():
                call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise ConfigError(f"--output {output or 'stdout'}: cannot write "
                              f"({exc.strerror or exc})") from None

    with open_output(output, append=done is not None) as stream, \
            AudioProgress(stderr) as progress:
        sink = make_sink(fmt, stream, stdout if output is None else Console(file=stream),
                         completion_records=done is not None)
        try:
            for path in files:
                name = str(path)
                if done is not None and name in done:
                    report.skipped += 1
                    continue
                found = 0
                try:
                    chunks = progress.track(path, stream_audio(path))
                    for result in recognize_stream(chunks, name, cfg.segmenter, recognizer,
                                                   cfg.runtime.batch_for(cfg.runtime.pack_windows),
                                                   packed=cfg.runtime.pack_windows,
                                                   pack_gap_s=cfg.runtime.pack_gap_s):
                        emit(sink.write, result)
                        found += 1
                        report.results += 1
                except InputError as exc:
                    report.failed += 1
                    _say(exc.message)
                    continue
                except MersaError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bug: say so, and finish the other files
                    report.crashed += 1
                    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                    _say(f"{name}: internal error ({exc.__class__.__name__}"
                         f"{': ' + reason if reason else ''}); please report it")
                    if os.environ.get("MERSA_DEBUG"):
                        import traceback

                        traceback.print_exc()
                    continue
                finally:
                    progress.done(path)
                emit(sink.end_source, name, found)
                report.files += 1
                if done is not None:
                    done.add(name)
                if not found and fmt != "table":
                    _say(f"{name}: no speech found")
        finally:
            sink.close()


@app.command()
def models(
    config: Optional[Path] = ConfigOption,
    set_: List[str] = SetOption,
    checkpoint: Optional[Path] = CheckpointOption,
    asr: Optional[str] = AsrOption,
    text_encoder: Optional[str] = TextEncoderOption,
    audio_encoder: Optional[str] = AudioEncoderOption,
):
    """List the models `analyze` and `listen` would use and where each comes from."""
    from rich.table import Table

    from .recognizer import resolve_models

    cfg = build_config(config, set_, checkpoint, asr, text_encoder, audio_encoder)
    inv = resolve_models(cfg)
    ckpt = inv.checkpoint
    text_origin = inv.text_encoder.origin + (" + self-aligned weights from checkpoint"
                                             if ckpt.text_encoder_weights else "")
    audio = inv.audio_encoder
    rows = [
        ("emotion", f"{ckpt.model_id} ({ckpt.model.config.architecture}: {', '.join(ckpt.labels)})",
         "checkpoint", str(ckpt.path)),
        (inv.asr.role, inv.asr.spec, inv.asr.origin, str(inv.asr.path)),
        (inv.text_encoder.role, inv.text_encoder.spec, text_origin, str(inv.text_encoder.path)),
        ("audio encoder", f"whisper encoder of {inv.asr.spec}", "shared with ASR", str(inv.asr.path))
        if audio is None else (audio.role, audio.spec, audio.origin, str(audio.path)),
    ]
    if not stdout.is_terminal:  # piped: one tab-separated line per model
        for row in rows:
            print("\t".join(row))
        return
    table = Table(title="models")
    for column in ("role", "model", "origin", "path"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    stdout.print(table)


@app.command("config")
def show_config(
    config: Optional[Path] = ConfigOption,
    set_: List[str] = SetOption,
):
    """Print the effective configuration (config.toml + overrides) as TOML."""
    stdout.print(to_toml(load_config(config, set_)), markup=False, highlight=False)


def _register_optional_commands() -> None:
    """Commands that live in their own modules register themselves on `app` when imported."""
    import importlib

    for module in ("mersa_stream.listen_cli", "train.cli"):
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(module)


def _click_exceptions() -> tuple[tuple, tuple]:
    """(usage errors, aborts) of click and of the copy of click newer typers carry inside."""
    import click

    usage, abort = [click.exceptions.ClickException], [click.exceptions.Abort, typer.Abort]
    with contextlib.suppress(ImportError):
        from typer._click import exceptions as vendored

        usage.append(vendored.ClickException)
        if hasattr(vendored, "Abort"):
            abort.append(vendored.Abort)
    return tuple(usage), tuple(abort)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cap_mmap_threshold()
    _register_optional_commands()
    usage_errors, aborts = _click_exceptions()
    try:
        code = app(standalone_mode=False)
    except aborts:
        code = EXIT_INTERRUPTED
    except usage_errors as exc:
        exc.show()
        code = EXIT_USAGE
    except MersaError as exc:
        stderr.print(f"mersa: {exc.message}", markup=False, highlight=False)
        code = exc.exit_code
    except KeyboardInterrupt:
        stderr.print("mersa: interrupted", markup=False)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_OK
    sys.exit(code if isinstance(code, int) else EXIT_OK)
