"""The `mersa` command: analyze, models, config. `listen`/`devices` (listen_cli.py) and the
trainer's commands (mersa_stream/train/cli.py) are attached by `register_commands()`."""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Iterator, List, Optional, Sequence

import typer
from rich.console import Console

from .allocator import cap_mmap_threshold
from .config import Config, RuntimeConfig, field_for, load_config, nest, to_toml, with_values
from .errors import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    InputError,
    MersaError,
)
from .sinks import FORMATS

app = typer.Typer(
    name="mersa", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Speech emotion recognition from sound and words, utterance by utterance (MERSA).")

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


# -- configuration flags: declared once, typed and defaulted by the config tree (config.py) -----


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one config key. Its type, default and choices are the key's
    own, so the flag defaults to None ("not given": the config file or the tree decides)."""

    names: tuple[str, ...]  # ("--device", "-d")
    key: str  # "listen.device"
    help: str
    parse_as: type | None = None  # when the flag parses differently from the key (a Path)

    @property
    def param(self) -> str:
        return self.names[0].split("/")[0].lstrip("-").replace("-", "_")

    def parameter(self) -> inspect.Parameter:
        spec, hint = field_for(self.key)
        choices = spec.metadata.get("choices")
        default = str(spec.default).lower() if isinstance(spec.default, bool) else spec.default
        option = typer.Option(*self.names, show_default=str(default) if default != "" else False,
                              help=self.help + (f" {' | '.join(choices)}." if choices else "")
                              + f" ({self.key})")
        return inspect.Parameter(self.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[Optional[self.parse_as or hint], option])


# what `analyze`, `listen` and `models` share: which models, where they run
MODEL_FLAGS = (
    Flag(("--checkpoint",), "models.checkpoint",
         "Emotion model folder, or 'default' (the built-in one).", Path),
    Flag(("--asr",), "models.asr",
         "ASR model: a faster-whisper size (e.g. small.en), hub id or folder."),
    Flag(("--text-encoder",), "models.text_encoder",
         "Where to find the checkpoint's text encoder (hub name or folder)."),
    Flag(("--audio-encoder",), "models.audio_encoder", "Where to find the checkpoint's audio "
         "encoder (wav2vec2 folder/hub name, VGGish weights file)."),
    Flag(("--device-type",), "runtime.device_type", "Where the models run:"),
)
PACK_FLAG = Flag(("--pack/--no-pack",), "runtime.pack_windows",
                 "Consecutive utterances share 30 s Whisper windows, each word given to the "
                 "utterance holding its time; --no-pack: one window per utterance, as listen.")
CHANNELS_FLAG = Flag(("--channels",), "analyze.channels", "Two-channel calls: mix them into one, "
                     "or split: each channel its own speaker (records carry \"channel\").")
# many files at once (issue 17, scale.py)
SCALE_FLAGS = (
    Flag(("--workers",), "analyze.workers", "Worker processes, each with its own models; 0: as "
         "many as the cores allow at runtime.cpu_threads each."),
    Flag(("--ray",), "analyze.ray", "Run on a Ray cluster: HOST:PORT, or auto (RAY_ADDRESS, else "
         "a local one)."),
)

# every command that reads the configuration takes these two
_FILE_PARAMETERS = (
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[Path], typer.Option("--config", "-c",
                                     help="Config file (default: ./config.toml, else "
                                     "$XDG_CONFIG_HOME/mersa/config.toml, if present).")]),
    inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=[], annotation=Annotated[
        List[str], typer.Option("--set",
                                help="Override one setting: SECTION.KEY=VALUE (repeatable).")]),
)


@dataclass(frozen=True)
class ConfigFlags:
    """What a command was told about its configuration: --config, --set, and the `Flag`s given."""

    path: Path | None = None
    overrides: tuple[str, ...] = ()
    values: dict[str, object] = field(default_factory=dict)  # config key -> value

    def load(self, batch_size: int | None = None) -> Config:
        """The config file, then --set, then the flags. `batch_size` (`analyze --batch-size`)
        counts windows or utterances depending on runtime.pack_windows, which the rest decides."""
        config = load_config(self.path, self.overrides, nest(self.values))
        if batch_size is None:
            return config
        key = RuntimeConfig.batch_key(config.runtime.pack_windows)
        return with_values(config, {"runtime": {key: batch_size}}, "--batch-size")


def with_config_flags(*flags: Flag):
    """Give a command --config, --set and `flags`; it receives them as one `flags: ConfigFlags`
    argument instead of a parameter each (typer reads the rewritten signature)."""

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "flags"]

        @functools.wraps(command)
        def run(**kwargs):
            given = {flag.key: kwargs.pop(flag.param) for flag in flags}
            found = ConfigFlags(kwargs.pop("config"), tuple(kwargs.pop("set_")),
                                {key: str(value) if isinstance(value, Path) else value
                                 for key, value in given.items() if value is not None})
            return command(flags=found, **kwargs)

        shared = [*_FILE_PARAMETERS, *(flag.parameter() for flag in flags)]
        run.__signature__ = signature.replace(parameters=[*own, *shared])
        return run

    return decorate


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
@with_config_flags(*MODEL_FLAGS, PACK_FLAG, CHANNELS_FLAG, *SCALE_FLAGS)
def analyze(
    flags: ConfigFlags,
    files: List[Path] = typer.Argument(
        ..., readable=False, help="Audio or video files (wav, flac, ogg, mp3, m4a, mp4 ...), "
        "folders (searched recursively) or glob patterns ('calls/**/*.mp3')."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | jsonl | csv | srt."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write results to this file instead of stdout."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", show_default=f"{RuntimeConfig.pack_batch_size} windows, "
        f"--no-pack {RuntimeConfig.batch_size}", help="30 s windows decoded together "
        "(runtime.pack_batch_size); with --no-pack, utterances (runtime.batch_size)."),
    resume: bool = typer.Option(
        False, "--resume", help="With -f jsonl -o FILE: skip the files FILE already holds "
        "complete, redo the rest, append (FILE gets a completion record per file)."),
    report_path: Optional[Path] = typer.Option(
        None, "--report", help="Also write a timeline report of the files analysed: .html (one "
        "self-contained page) or .png (a picture); written even if some files fail."),
):
    """Find the utterances in FILES and say, for each, its time span, words and emotion."""
    from .recognizer import RecognizerLoader, resolve_models
    from .report import report_kind

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
    if resume and (fmt != "jsonl" or output is None):
        raise ConfigError("--resume needs --format jsonl and --output FILE")
    if report_path is not None:
        report_kind(report_path)  # a bad --report stops the run before any file
    cfg = flags.load(batch_size)
    report = RunReport()
    files = _expand_inputs(files, cfg, report)
    with StopOnSignals() as guard:
        try:
            state = prepare_resume(output, [str(f) for f in files]) if resume else None
            if state is not None and (state.done or state.dropped or state.trimmed):
                _say(f"{output}: resuming: {len(state.done & set(map(str, files)))} file(s) "
                     f"already complete" + (f", {state.dropped} result(s) of unfinished files "
                                            "dropped" if state.dropped else "")
                     + (", a cut last line removed" if state.trimmed else ""))
            # Every model is found now (a missing one stops the run here, before any file), but
            # loaded only once a file has speech, in the background while it is decoded.
            recognizer = RecognizerLoader(cfg, resolve_models(cfg))
            _analyze_files(files, fmt, output, cfg, recognizer, guard, report,
                           state.done if state is not None else None, report_path)
        except Stopped as stop:
            _say(f"stopped by {stop.name}: {report.files} file(s) finished, {report.results} "
                 f"result(s) written" + ("; run again with --resume to finish" if resume else ""))
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if report.crashed:
        raise typer.Exit(EXIT_INTERNAL)
    if report.failed:
        raise typer.Exit(EXIT_INPUT)


def _analyze_files(files, fmt, output, cfg, recognizer, guard: StopOnSignals, report: RunReport,
                   done: Optional[set], report_path: Optional[Path] = None) -> None:
    """Each file decoded in chunks, segmented and recognised as it streams; each result written
    (whole, flushed) as soon as it exists. One bad file is reported and the others go on."""
    from .progress import AudioProgress
    from .recognizer import RecognizerLoader
    from .scale import file_results
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
        if report_path is not None:  # --report: drawn on close (after a failure or stop too)
            from .report import ReportSink

            sink = ReportSink(sink, report_path, [str(f) for f in files
                                                  if done is None or str(f) not in done])
        if isinstance(recognizer, RecognizerLoader):
            recognizer.waiting = functools.partial(_loading_models, progress)
        todo = [path for path in files if done is None or str(path) not in done]
        report.skipped += len(files) - len(todo)
        progress.add_files(todo)
        # one file after the other here, or on worker processes / a Ray cluster (scale.py):
        # either way each file's results, whole, in time order
        outcomes = file_results(todo, cfg, recognizer, _say, progress.track)
        try:
            for path, results in outcomes:
                name = str(path)
                found = 0
                try:
                    for result in results:
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
                    kind = getattr(exc, "kind", exc.__class__.__name__)  # a worker's: its own
                    _say(f"{name}: internal error ({kind}"
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
            outcomes.close()  # stops the workers at once when the run stops early
            sink.close()


def _expand_inputs(files: Sequence[Path], cfg: Config, report: RunReport) -> list[Path]:
    """Folders and glob patterns -> their files (scale.py); one that holds none is reported
    like an unreadable file (exit 3) and the others go on. Ray, when asked for, must be there
    and answer (before the output is opened)."""
    from .scale import check_ray, expand_inputs

    if cfg.analyze.ray:
        check_ray(cfg.analyze.ray)
    inputs = expand_inputs(files)
    for problem in inputs.problems:
        report.failed += 1
        _say(problem)
    return inputs.files


@contextlib.contextmanager
def _loading_models(progress) -> Iterator[None]:
    """A "loading models" spinner on a terminal while a file waits for them (the progress bar,
    rich's other live display, is paused meanwhile: one at a time)."""
    if not stderr.is_terminal:
        yield
        return
    progress.progress.stop()
    try:
        with stderr.status("loading models", spinner="dots"):
            yield
    finally:
        progress.progress.start()


@app.command()
@with_config_flags(*MODEL_FLAGS)
def models(flags: ConfigFlags):
    """List the models `analyze` and `listen` would use and where each comes from."""
    from rich.table import Table

    from .checkpoint import BUILTIN_FOLDER
    from .recognizer import resolve_models

    cfg = flags.load()
    inv = resolve_models(cfg)
    ckpt = inv.checkpoint
    text_origin = inv.text_encoder.origin + (" + self-aligned weights from checkpoint"
                                             if ckpt.has_text_encoder_weights else "")
    audio = inv.audio_encoder
    rows = [
        ("emotion", f"{ckpt.model_id} ({ckpt.fusion.architecture}: {', '.join(ckpt.labels)})",
         "built-in" if ckpt.path.parent == BUILTIN_FOLDER else "checkpoint", str(ckpt.path)),
        (inv.asr.role, inv.asr.spec, inv.asr.origin, str(inv.asr.path)),
        (inv.text_encoder.role, inv.text_encoder.spec, text_origin, str(inv.text_encoder.path)),
        (audio.role, f"{ckpt.audio_encoder.kind}: {audio.spec}", audio.origin, str(audio.path))
        if audio is not None else
        ("audio encoder", f"whisper encoder of {inv.asr.spec}", "shared with ASR",
         str(inv.asr.path)),
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
@with_config_flags()
def show_config(flags: ConfigFlags):
    """Print the effective configuration (config.toml + overrides) as TOML."""
    stdout.print(to_toml(flags.load()), markup=False, highlight=False)


# -- `mersa report`: the timeline report of earlier results (mersa_stream/report.py) ------------


@app.command("report")
def report_command(
    results: List[Path] = typer.Argument(
        ..., readable=False, help="JSONL files written by `mersa analyze -f jsonl`."),
    report_path: Path = typer.Option(
        ..., "--report", help="The report to write: .html (one self-contained page) or .png."),
):
    """Draw the timeline report (a section per file) of `analyze -f jsonl` results."""
    from .report import read_jsonl, report_kind, write_report

    report_kind(report_path)
    write_report(read_jsonl(results), report_path)


# the commands defined here, in listen_cli.py and serve.py: running one of them needs no trainer
RUNTIME_COMMANDS = ("analyze", "models", "config", "devices", "listen", "report",
                    "serve")


def register_commands(args: Sequence[str] | None = None) -> None:
    """Attach the commands defined in other modules (they import this one, hence not at the top).
    Nothing is swallowed: a module that fails to import is a bug, and must say so.

    `args` (the command line after `mersa`): when it runs one of `RUNTIME_COMMANDS`, the trainer's
    commands are left out: importing them imports torch (seconds), which those commands never
    need, or need only once a file has speech. Anything else (`mersa --help`, a trainer command,
    a mistyped one) sees them all."""
    from . import listen_cli, serve

    listen_cli.register(app)
    serve.register(app)  # `serve` (issue 16)
    if args and args[0] in RUNTIME_COMMANDS:
        return
    from mersa_stream.train import cli as train_cli  # `train`, `experiments`, `evaluate`

    train_cli.register(app)


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
    # (OMP_WAIT_POLICY and TOKENIZERS_PARALLELISM: set by the package itself, __init__.py)
    cap_mmap_threshold()
    register_commands(sys.argv[1:])
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
    # Done: what is left is the interpreter's teardown, whose last garbage collection walks
    # torch's object graph (~0.5 s on 2 cores). Frozen objects are left to the exit instead
    # (every output is already closed; atexit handlers and flushing still happen).
    gc.freeze()
    sys.exit(code if isinstance(code, int) else EXIT_OK)
