"""One dataclass tree for every setting; loaded from config.toml, overridden by the command line.

Each field may carry `metadata` with `range=(lo, hi)` or `choices=(...)`; loading checks every key
(unknown key, wrong type, out of range -> ConfigError naming the file and the key).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .context import MAX_CONTEXT
from .errors import ConfigError
from .fusion_config import ARCHITECTURES, FusionConfig

DEFAULT_CONFIG_FILE = "config.toml"


# -- where config.toml is found (issue 15): the working directory, then the user's config folder
def user_config_file() -> Path:
    """$XDG_CONFIG_HOME/mersa/config.toml (XDG_CONFIG_HOME defaults to ~/.config)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mersa" / DEFAULT_CONFIG_FILE


def find_config_file() -> Path | None:
    """The config file used when none is named: ./config.toml, else the user's; None: the
    built-in defaults."""
    for candidate in (Path(DEFAULT_CONFIG_FILE), user_config_file()):
        if candidate.is_file():
            return candidate
    return None


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
    # sentence-sized utterances and the voice check (segmenter.py; issue 12)
    merge_gap_ms: int = _opt(600, range=(0, 10000))
    voice_check: str = _opt("silero", choices=("silero", "none"))
    voice_threshold: float = _opt(0.35, range=(0.01, 0.99))
    # cut a merged utterance at a pause where the voice changes (turns.py, segmenter.py)
    turn_split: bool = True
    turn_gap_ms: int = _opt(250, range=(0, 10000))
    turn_semitones: float = _opt(7.0, range=(0.5, 48.0))
    turn_context_ms: int = _opt(3000, range=(300, 15000))
    turn_probe_ms: int = _opt(1000, range=(300, 10000))


@dataclass(frozen=True)
class ModelsConfig:
    checkpoint: str = "default"  # a folder, or a built-in name (checkpoint.py)
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
    pack_windows: bool = True  # analyze: 30 s windows, words by time (packing.py; issue 12)
    pack_batch_size: int = _opt(4, range=(1, 64))
    pack_gap_s: float = _opt(0.2, range=(0.0, 30.0))
    text_max_tokens: int = _opt(64, range=(8, 512))
    # the whisper-layers audio encoder (emotion features) with int8 Linear layers, at run time
    # only (the trainer's features come from the float32 model); docs/benchmarks.md, "A cheaper
    # audio encoder"
    audio_encoder_int8: bool = False

    @staticmethod
    def batch_key(packed: bool) -> str:
        """The key of what one recognition batch holds in `analyze` (and what `--batch-size`
        sets): 30 s windows when packed, else utterances."""
        return "pack_batch_size" if packed else "batch_size"

    def batch_for(self, packed: bool) -> int:
        return getattr(self, self.batch_key(packed))


@dataclass(frozen=True)
class ListenConfig:
    device: str = ""
    queue_size: int = _opt(8, range=(1, 10000))
    overflow: str = _opt("drop-oldest", choices=("drop-oldest", "drop-newest", "block"))
    history: int = _opt(8, range=(1, 200))
    chunk_ms: int = _opt(30, range=(10, 500))
    speculate: bool = True
    interim: bool = True  # interim records (final false) at pauses (listen.py; issue 12)


# -- `analyze` only (issue 15) --
CHANNEL_MODES = ("mix", "split")


@dataclass(frozen=True)
class AnalyzeConfig:
    # mix: every channel averaged to one; split: each channel its own speaker stream (channels.py)
    channels: str = _opt("mix", choices=CHANNEL_MODES)
    # -- many files at once (issue 17; scale.py, docs/scale.md) --
    workers: int = _opt(0, range=(0, 4096))  # processes; 0: the cores / runtime.cpu_threads
    ray: str = ""  # a Ray cluster's address, or "auto"; empty: this machine


# -- `mersa serve` (issue 16; mersa_stream/serve.py, docs/serve.md) --


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # any other address needs a token
    port: int = _opt(8765, range=(0, 65535))  # 0: a free port, printed at start-up
    token: str = ""  # empty: the MERSA_TOKEN environment variable, else no token
    origins: str = ""  # web pages besides the server's own that may open sessions ("*": any)
    max_sessions: int = _opt(8, range=(1, 10000))
    max_message_bytes: int = _opt(262144, range=(1024, 64 * 1024 * 1024))
    max_queued_audio_s: float = _opt(30.0, range=(1.0, 3600.0))
    max_unsent_messages: int = _opt(256, range=(1, 100000))
    idle_timeout_s: float = _opt(30.0, range=(1.0, 86400.0))
    drain_timeout_s: float = _opt(10.0, range=(0.0, 3600.0))  # at shutdown, to finish sessions
    batch_size: int = _opt(8, range=(1, 256))  # utterances of all sessions recognised together


# -- the trainer's sections (mersa_stream/train/): `mersa train` and `mersa experiments` --

# The fusion model's own hyper-parameters: [train] offers them, FusionConfig (fusion_config.py)
# holds their defaults and is built from them (TrainConfig.fusion), so they are defined once.
FUSION_HYPER_PARAMETERS = ("hidden", "heads", "dropout", "attention_dropout")
_FUSION_FIELDS = {f.name: f for f in dataclasses.fields(FusionConfig)}
# the validation metrics (mersa_stream/train/metrics.py computes them; train.select picks one)
METRICS = ("accuracy", "weighted_f1", "macro_f1", "balanced_accuracy")


def _fusion_opt(name: str, *, range):
    return _opt(_FUSION_FIELDS[name].default, range=range)


@dataclass(frozen=True)
class TrainConfig:
    """Fusion training (mersa_stream/train/fusion_train.py): the lab's recipe by default."""

    architecture: str = _opt("mersa-xattn", choices=ARCHITECTURES)
    hidden: int = _fusion_opt("hidden", range=(1, 4096))
    heads: int = _fusion_opt("heads", range=(1, 64))
    dropout: float = _fusion_opt("dropout", range=(0.0, 1.0))
    attention_dropout: float = _fusion_opt("attention_dropout", range=(0.0, 1.0))
    lr: float = _opt(1e-4, range=(0.0, 1.0))
    weight_decay: float = _opt(0.0, range=(0.0, 1.0))
    step_size: int = _opt(30, range=(1, 100_000))  # StepLR
    gamma: float = _opt(0.1, range=(0.0, 1.0))
    epochs: int = _opt(200, range=(1, 100_000))
    patience: int = _opt(20, range=(1, 100_000))
    min_epochs: int = _opt(5, range=(0, 100_000))
    batch_size: int = _opt(32, range=(1, 4096))  # 1 = the paper's unpadded batches
    text_dropout: float = _opt(0.15, range=(0.0, 1.0))
    audio_dropout: float = _opt(0.15, range=(0.0, 1.0))
    class_weights: str = _opt("none", choices=("none", "balanced"))
    select: str = _opt("accuracy", choices=METRICS)  # validation metric for early stopping
    max_audio_frames: int = _opt(1500, range=(1, 1_000_000))
    extra_per_epoch: int = _opt(0, range=(0, 1_000_000_000))  # --text-data drawn (0 = all)
    pair_text: float = _opt(0.0, range=(0.0, 1.0))  # audio examples given same-label words
    # share of text-only extra examples given the voice of a neutral training clip (the words
    # decide when the voice is calm: see fusion_train.pair_with_neutral_voice)
    pair_neutral: float = _opt(0.0, range=(0.0, 1.0))
    aux_weight: float = _opt(0.5, range=(0.0, 100.0))  # mersa-gated: one-modality heads' losses
    balance_corpora: bool = True  # each epoch, resample smaller corpora up to the largest
    # audio of each corpus clip cut to what the runtime segmenter finds in it (default
    # [segmenter] settings), utterances joined: the runtime only ever classifies segmenter output,
    # while corpus clips carry leading/trailing silence (RAVDESS: half of each clip) or are cut at
    # a fixed length (EmoDB). Saved in the checkpoint; `mersa evaluate` reads clips the same way.
    audio_speech_only: bool = False
    seed: int = _opt(0, range=(0, 2**31 - 1))
    threads: int = _opt(0, range=(0, 256))
    # -- conversation context of the text branch (issue 14, mersa_stream/context.py): saved in
    # the checkpoint, so the runtime reads a trained model's utterances the way it was trained
    text_context: int = _opt(0, range=(0, MAX_CONTEXT))  # earlier utterances read (0 = none)
    text_context_tokens: int = _opt(96, range=(8, 448))  # the most tokens of them (the latest)
    text_context_speakers: bool = True  # mark turns "A:" (same speaker) / "B:" ... where known
    # pair: context and utterance read together; concat: apart, the context's mean embedding
    # beside each token's state (mersa_stream/encoders/text.py)
    text_context_mode: str = _opt("pair", choices=("pair", "concat"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fusion(self, text_dim: int, audio_dim: int, num_classes: int,
               audio_layers: int = 1) -> FusionConfig:
        """The model these settings train."""
        return FusionConfig(self.architecture, text_dim, audio_dim, num_classes,
                            audio_layers=audio_layers,
                            **{name: getattr(self, name) for name in FUSION_HYPER_PARAMETERS})


@dataclass(frozen=True)
class AlignConfig:
    """Self-align (train/self_align.py, `mersa train --self-align`): SapBERT's recipe."""

    epochs: int = _opt(2, range=(1, 10_000))
    per_class: int = _opt(8, range=(1, 4096))  # batch = per_class x classes
    lr: float = _opt(2e-5, range=(0.0, 1.0))
    weight_decay: float = _opt(0.01, range=(0.0, 1.0))
    top_layers: int = _opt(2, range=(0, 1000))  # 0 = the whole encoder
    alpha: float = _opt(2.0, range=(0.0, 1000.0))  # MultiSimilarityLoss
    beta: float = _opt(50.0, range=(0.0, 1000.0))
    base: float = _opt(0.5, range=(-1.0, 1.0))
    miner: str = _opt("multisimilarity", choices=("multisimilarity", "triplet"))
    miner_epsilon: float = _opt(0.1, range=(0.0, 10.0))
    ce_weight: float = _opt(0.0, range=(0.0, 100.0))  # auxiliary cross-entropy head (0 = none)
    tsne_points: int = _opt(800, range=(0, 100_000))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ExperimentsConfig:
    """The grid of `mersa experiments` (train/experiments.py); lists are comma-separated."""

    architectures: str = "server,3m-ser,mersa,mersa-xattn"
    audio_encoders: str = "whisper"
    seeds: str = "0"
    all_folds: bool = False  # speaker split: every fold (else fold 0)
    wav2vec2: str = ""  # the wav2vec2 kind's model; empty = the registry's default
    vggish: str = ""  # the VGGish kind's weights file

    @staticmethod
    def items(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())

    def seed_list(self) -> tuple[int, ...]:
        try:
            return tuple(int(s) for s in self.items(self.seeds))
        except ValueError:
            raise ConfigError(f"experiments.seeds {self.seeds!r}: comma-separated integers") \
                from None


@dataclass(frozen=True)
class Config:
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    experiments: ExperimentsConfig = field(default_factory=ExperimentsConfig)


def _check_value(where: str, f: dataclasses.Field, value, hint):
    expected = hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {expected.__name__}, "
                          f"got {type(value).__name__} {value!r}")
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
    return nest({key.strip(): value})


def nest(flat: typing.Mapping[str, object]) -> dict:
    """{"models.asr": "small.en"} -> {"models": {"asr": "small.en"}} (the shape TOML loads)."""
    node: dict = {}
    for key, value in flat.items():
        cursor = node
        parts = key.split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
    return node


def field_for(key: str) -> tuple[dataclasses.Field, type]:
    """The field behind a dotted key ("models.asr") and its type: what a command-line flag
    setting that key takes its type, default and choices from."""
    section, name = key.split(".")
    cls = typing.get_type_hints(Config)[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return fields[name], typing.get_type_hints(cls)[name]


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = (),
                values: dict | None = None) -> Config:
    """Load `path` (or, when None, the file `find_config_file` finds, if any), then apply
    `--set` overrides and `values`.

    `values` is a nested dict from explicit command-line flags, applied last.
    """
    data: dict = {}
    origin = "defaults"
    if path is None:
        path = find_config_file()
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
        config = with_values(config, extra, f"{origin} + command line")
    return config


def with_values(config: Config, values: dict, origin: str) -> Config:
    """`config` with the nested `values` applied, every key checked as when loading."""
    return _build(Config, _merge(dataclasses.asdict(config), values), origin)


def to_toml(config: Config) -> str:
    """Render a config as TOML (what `mersa config` prints)."""
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
