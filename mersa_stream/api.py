"""The Python API (README, "Python API"): files or pushed audio in, `EmotionResult`s out.

    import mersa_stream

    for r in mersa_stream.analyze("call.wav", channels="split", beam_size=1):
        print(r.channel, r.start, r.end, r.text, r.label, r.confidence)

    recognizer = mersa_stream.Recognizer.from_config(checkpoint="my-model")  # models loaded once
    for r in recognizer.analyze(["a.wav", "b.mp3"]): ...
    with recognizer.stream(sample_rate=8000) as stream: ...  # push(chunk), flush(): stream.py

Options are the config tree's keys (config.py; `mersa config` lists them), so each is defined once
and checked as on the command line: `asr__beam_size=1` or `**{"asr.beam_size": 1}`, or the bare
key (`beam_size=1`) for the sections analysis reads ([segmenter], [models], [asr], [runtime],
[analyze], [listen]). The configuration underneath is found as
`mersa` finds it: ./config.toml, else $XDG_CONFIG_HOME/mersa/config.toml, else the defaults; or
pass `config=` (a file, or a `Config`).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Union

from .config import Config, load_config, nest, with_values
from .errors import ConfigError
from .types import SAMPLE_RATE, EmotionResult

if TYPE_CHECKING:
    from .stream import Stream

PathLike = Union[str, "os.PathLike[str]"]
# where a bare option name is looked up: the sections analysis and streams read (the trainer's
# and the server's also have a `batch_size`, for instance: those take their section's name)
BARE_SECTIONS = ("segmenter", "models", "asr", "runtime", "analyze", "listen")


def _sections() -> dict[str, set[str]]:
    hints = typing.get_type_hints(Config)
    return {section: {f.name for f in dataclasses.fields(hints[section])} for section in hints}


def config_key(name: str) -> str:
    """An option's name -> its dotted config key ("beam_size" -> "asr.beam_size")."""
    sections = _sections()
    dotted = name.replace("__", ".")
    if "." in dotted:
        section, _, key = dotted.partition(".")
        if key not in sections.get(section, ()):
            raise ConfigError(f"option {name!r}: no such setting {dotted!r} (`mersa config` "
                              "lists them)")
        return dotted
    owners = [s for s in BARE_SECTIONS if name in sections[s]]
    if not owners:
        elsewhere = [f"{s}__{name}" for s, keys in sections.items() if name in keys]
        raise ConfigError(f"option {name!r}: " + (f"give its section: {', '.join(elsewhere)}"
                                                   if elsewhere else "no such setting (`mersa "
                                                   "config` lists them)"))
    if len(owners) > 1:
        raise ConfigError(f"option {name!r} is in several sections: give one of "
                          + ", ".join(f"{s}__{name}" for s in owners))
    return f"{owners[0]}.{name}"


def settings(config: Config | PathLike | None = None, **options: Any) -> Config:
    """The configuration `config` (a Config, a config file, or None: found as `mersa` finds it)
    with `options` applied, every key checked (ConfigError otherwise)."""
    base = config if isinstance(config, Config) else load_config(
        None if config is None else Path(config))
    if not options:
        return base
    values = {config_key(name): os.fspath(value) if isinstance(value, os.PathLike) else value
              for name, value in options.items()}
    return with_values(base, nest(values), "options")


def _paths(path_or_paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [Path(path_or_paths)]
    return [Path(p) for p in path_or_paths]


class Recognizer:
    """Every model found at once (a missing one is a ModelError here), loaded in the background
    when first needed and kept: for many files and streams in one process."""

    def __init__(self, config: Config):
        from .recognizer import RecognizerLoader, resolve_models

        self.config = config
        self.engine = RecognizerLoader(config, resolve_models(config))

    @classmethod
    def from_config(cls, config: Config | PathLike | None = None, **options: Any) -> Recognizer:
        """`config`: a Config, a config file, or None (./config.toml, the user's, the defaults);
        `options`: config keys (`checkpoint="my-model"`, `asr__beam_size=1`)."""
        return cls(settings(config, **options))

    def load(self) -> Recognizer:
        """Wait until the models are loaded (else they load on the first speech)."""
        self.engine.get()
        return self

    def analyze(self, path_or_paths: PathLike | Iterable[PathLike], *,
                channels: str | None = None) -> Iterator[EmotionResult]:
        """Each file decoded as it streams, its utterances' results as they come, file after
        file. `channels`: "mix" or "split" (default: the config's `analyze.channels`). An
        unreadable file raises InputError (mersa_stream.InputError) when reached."""
        from .pipeline import recognize_file

        config = self.config if channels is None else with_values(
            self.config, {"analyze": {"channels": channels}}, "channels=")
        for path in _paths(path_or_paths):
            yield from recognize_file(path, config, self.engine, on_speech=self.engine.start)

    def stream(self, *, name: str = "stream", sample_rate: int = SAMPLE_RATE,
               on_result: Callable[[EmotionResult], None] | None = None) -> Stream:
        """A `Stream` (the object behind `listen` and the server) on these models: `push(chunk)`
        mono float32/int16 audio at `sample_rate`, get results back; `flush()` at the end."""
        from .stream import Stream

        return Stream(self.engine, self.config, name=name, sample_rate=sample_rate,
                      on_result=on_result)


def analyze(path_or_paths: PathLike | Iterable[PathLike], *,
            config: Config | PathLike | None = None, **options: Any) -> Iterator[EmotionResult]:
    """The results of one file or several, as `mersa analyze` finds them. Settings and models are
    checked now (ConfigError, ModelError); the files are read as the results are asked for."""
    return Recognizer.from_config(config, **options).analyze(path_or_paths)
