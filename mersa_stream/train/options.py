"""What one training run is (`RunOptions`) and how its evaluation sets are named (`SetKey`):
apart from pipeline.py, so that the command line can build them without importing torch."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

from ..config import RuntimeConfig, TrainConfig
from ..resolve import DEFAULT_TEXT_ENCODER


class SetKey(NamedTuple):
    """Which examples an evaluation is of: a corpus's part, possibly in a variant (the same clips
    seen another way). `name` is how reports, the checkpoint's metadata and its card show it."""

    dataset: str  # a corpus, or corpora joined by + (the run's dataset)
    part: str  # train | val | test
    variant: str = ""  # "" | "audio only" | "packed windows"

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.part}" + (f" ({self.variant})" if self.variant else "")


@dataclass(frozen=True)
class TextData:
    """An extra text-only dataset (e.g. MELD transcripts) mixed into training."""
    dataset: str
    data_dir: str


@dataclass(frozen=True)
class RunOptions:
    dataset: str
    data_dir: str
    out: str | None = None
    classes: str = "4"
    split: str = "speaker"  # the scheme: official | random | speaker (`--split`)
    fold: int = 0
    folds: int = 5
    split_seed: int = 0
    audio_encoder: str = "whisper"
    audio_spec: str = ""
    text_encoder: str = DEFAULT_TEXT_ENCODER
    text_max_tokens: int = RuntimeConfig().text_max_tokens  # as the runtime feeds the model
    aligned_weights: str | None = None  # folder/file with self-aligned text-encoder tensors
    use_audio: bool = True
    use_text: bool = True
    text_data: tuple[TextData, ...] = ()
    cache_dir: str | None = None
    allow_absolute_paths: bool = False
    model_id: str = ""
    command: str = ""
    packed_features: bool = False  # also train on the audio features of `analyze --pack`
    more_data_dirs: tuple[str, ...] = ()  # dataset "a+b": the folders of b, ... after data_dir
    augment_views: int = 0  # augmented copies of each training clip (mersa_stream/train/augment.py)
    calibrate: bool = True  # temperature scaling on the validation speakers
    # extra training data used with its audio, all of it for training (e.g. synthetic voices
    # reading MELD sentences: benchmarks/flat_voices.py build --split train)
    voice_data: tuple[TextData, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)  # the config tree's [train]

    @property
    def audio_spec_or_default(self) -> str:
        from ..encoders.registry import audio_kind

        return self.audio_spec or audio_kind(self.audio_encoder).default_spec


def command_line() -> str:
    return "mersa " + " ".join(shlex.quote(a) for a in sys.argv[1:])
