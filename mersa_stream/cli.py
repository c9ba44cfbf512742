"""The `mersa` command: analyze, models, config (listen and train live in their own modules)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console

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
def open_output(path: Optional[Path]) -> Iterator:
    if path is None:
        yield sys.stdout
        return
    try:
        handle = open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot write ({exc.strerror})") from None
    with handle:
        yield handle


@app.command()
def analyze(
    files: List[Path] = typer.Argument(..., help="Audio or video files: wav, flac, ogg, mp3, m4a, mp4 ..."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | jsonl | csv | srt."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results to this file instead of stdout."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="30 s windows recognised together (runtime.batch_size)."),
    pack: Optional[bool] = typer.Option(None, "--pack/--no-pack", help="Pack utterances into shared 30 s Whisper windows (runtime.pack_windows)."),
    config: Optional[Path] = ConfigOption,
    set_: List[str] = SetOption,
    checkpoint: Optional[Path] = CheckpointOption,
    asr: Optional[str] = AsrOption,
    text_encoder: Optional[str] = TextEncoderOption,
    audio_encoder: Optional[str] = AudioEncoderOption,
    device_type: Optional[str] = DeviceTypeOption,
):
    """Find the utterances in FILES and say, for each, its time span, words and emotion."""
    from .decode import stream_audio
    from .pipeline import recognize_stream
    from .progress import AudioProgress
    from .recognizer import Recognizer
    from .sinks import make_sink

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
    cfg = build_config(config, set_, checkpoint, asr, text_encoder, audio_encoder, device_type,
                       batch_size=batch_size, pack_windows=pack)
    with stderr.status("loading models", spinner="dots") if stderr.is_terminal else \
            contextlib.nullcontext():
        recognizer = Recognizer(cfg)
    failed = 0
    with open_output(output) as stream, AudioProgress(stderr) as progress:
        sink = make_sink(fmt, stream, stdout if output is None else Console(file=stream))
        try:
            for path in files:
                name = str(path)
                found = 0
                try:
                    chunks = progress.track(path, stream_audio(path))
                    for result in recognize_stream(chunks, name, cfg.segmenter, recognizer,
                                                   cfg.runtime.batch_size,
                                                   packed=cfg.runtime.pack_windows,
                                                   pack_gap_s=cfg.runtime.pack_gap_s):
                        sink.write(result)
                        found += 1
                except InputError as exc:
                    failed += 1
                    stderr.print(f"mersa: {exc.message}", markup=False, highlight=False)
                    continue
                finally:
                    progress.done(path)
                sink.end_source(name)
                if not found and fmt != "table":
                    stderr.print(f"mersa: {name}: no speech found", markup=False, highlight=False)
        finally:
            sink.close()
    if failed:
        raise typer.Exit(EXIT_INPUT)


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


def main() -> None:
    import click

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _register_optional_commands()
    try:
        code = app(standalone_mode=False)
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except click.exceptions.ClickException as exc:
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
