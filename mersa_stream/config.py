"""One dataclass tree for every setting; loaded from config.toml, overridden by the command line.

Each field may carry `metadata` with `range=(lo, hi)` or `choices=(...)`; loading checks every key
(unknown key, wrong type, out of range -> ConfigError naming the file and the key).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

DEFAULT_CONFIG_FILE = "config.toml"


def _opt(default, *, range=None, choices=None):
    meta = {}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SegmenterConfig:
    frame_ms: int = _opt(30, choices=(10, 20, 30))
    aggressiveness: int = _opt(3, range=(0, 3))
    start_window_ms: int = _opt(150, range=(10, 2000))
    start_ratio: float = _opt(0.8, range=(0.05, 1.0))
    hangover_ms: int = _opt(240, range=(30, 5000))
    pre_roll_ms: int = _opt(300, range=(0, 2000))
    tail_ms: int = _opt(150, range=(0, 2000))
    min_utterance_ms: int = _opt(300, range=(0, 10000))
    max_utterance_s: float = _opt(15.0, range=(1.0, 30.0))


@dataclass(frozen=True)
class ModelsConfig:
    checkpoint: str = "models/default"
    asr: str = "tiny.en"
    text_encoder: str = ""
    audio_encoder: str = ""


@dataclass(frozen=True)
class AsrConfig:
    beam_size: int = _opt(5, range=(1, 20))
    language: str = "en"
    no_speech_threshold: float = _opt(0.6, range=(0.0, 1.0))
    log_prob_threshold: float = _opt(-1.0, range=(-100.0, 0.0))
    max_new_tokens: int = _opt(200, range=(1, 440))


@dataclass(frozen=True)
class RuntimeConfig:
    device_type: str = _opt("auto", choices=("auto", "cpu", "cuda"))
    compute_type: str = _opt("auto", choices=("auto", "int8", "int8_float16", "float16", "float32"))
    cpu_threads: int = _opt(0, range=(0, 256))
    batch_size: int = _opt(2, range=(1, 256))
    pack_windows: bool = False
    pack_batch_size: int = _opt(8, range=(1, 64))
    pack_gap_s: float = _opt(0.2, range=(0.0, 5.0))
    text_max_tokens: int = _opt(64, range=(8, 512))

    def batch_for(self, packed: bool) -> int:
        """What one recognition batch holds in `analyze`: windows when packed, else utterances."""
        return self.pack_batch_size if packed else self.batch_size


@dataclass(frozen=True)
class ListenConfig:
    device: str = ""
    queue_size: int = _opt(8, range=(1, 10000))
    overflow: str = _opt("drop-oldest", choices=("drop-oldest", "drop-newest", "block"))
    history: int = _opt(8, range=(1, 200))
    chunk_ms: int = _opt(30, range=(10, 500))
    speculate: bool = True


@dataclass(frozen=True)
class Config:
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)


def _check_value(where: str, f: dataclasses.Field, value, hint):
    expected = hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    if "range" in f.metadata:
        lo, hi = f.metadata["range"]
        if not lo <= value <= hi:
            raise ConfigError(f"{where}: {value!r} is out of range [{lo}, {hi}]")
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        choices = ", ".join(map(str, f.metadata["choices"]))
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    return value


def _build(cls, data: dict, origin: str, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{origin}: unknown key '{prefix}{unknown[0]}'")
    values = {}
    for name, value in data.items():
        f, hint, where = fields[name], hints[name], f"{origin}: {prefix}{name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a [{prefix}{name}] table")
            values[name] = _build(hint, value, origin, f"{prefix}{name}.")
        else:
            values[name] = _check_value(where, f, value, hint)
    return cls(**values)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_override(text: str) -> dict:
    """`section.key=value` with a TOML value; a bare word is taken as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node: dict = {}
    cursor = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return node


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = (),
                values: dict | None = None) -> Config:
    """Load `path` (or ./config.toml when present), then apply `--set` overrides and `values`.

    `values` is a nested dict from explicit command-line flags, applied last.
    """
    data: dict = {}
    origin = "defaults"
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.__class__.__name__})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    config = _build(Config, data, origin)
    extra: dict = {}
    for item in overrides:
        extra = _merge(extra, _parse_override(item))
    if values:
        extra = _merge(extra, values)
    if extra:
        merged = _merge(dataclasses.asdict(config), extra)
        config = _build(Config, merged, f"{origin} + command line")
    return config


def to_toml(config: Config) -> str:
    """Render a config as TOML (used by `mersa config --show`)."""
    lines = []
    for section, values in dataclasses.asdict(config).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            else:
                lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)
