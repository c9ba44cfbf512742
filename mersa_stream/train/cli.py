"""`mersa train`, `mersa experiments`, `mersa evaluate`; `register(app)` attaches them.

Every flag is declared once, here or in the config tree:
- a setting with a default in the config tree ([train], [align], [experiments] of
  mersa_stream/config.py) is a `Flag` (mersa_stream/cli.py): its type, default and choices are
  the key's, so `--lr 3e-4`, `--set train.lr=3e-4` and `lr = 3e-4` in config.toml set one thing
  (flag over --set over file);
- what names one run's data, files and encoders (dataset, folders, output, scheme, ...) is an
  `Arg` below, shared by the commands that take it.

Words: the split *scheme* (official | random | speaker) is `--split` (also spelled `--scheme`) in
`train` and `experiments`, `--scheme` in `evaluate`; the *part* that `evaluate` scores (train |
val | test | all) is `--part` (`--split` there is its deprecated old spelling).
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, List, Optional

import typer

from ..cli import ConfigFlags, Flag, stderr, stdout, with_config_flags
from ..config import TrainConfig
from ..errors import ConfigError
from .options import RunOptions, TextData

# -- settings of the config tree -----------------------------------------------------------

TRAIN_FLAGS = (
    Flag(("--architecture", "-a"), "train.architecture", "Fusion architecture:"),
    Flag(("--batch-size",), "train.batch_size", "Examples per batch (1 = the paper's unpadded "
         "batches)."),
    Flag(("--epochs",), "train.epochs", "Most training epochs."),
    Flag(("--patience",), "train.patience",
         "Early stopping: epochs without a better validation score."),
    Flag(("--lr",), "train.lr", "Learning rate (Adam)."),
    Flag(("--text-dropout",), "train.text_dropout",
         "Modality dropout: P(mask the text) per example."),
    Flag(("--audio-dropout",), "train.audio_dropout",
         "Modality dropout: P(mask the audio) per example."),
    Flag(("--class-weights",), "train.class_weights", "Loss weight per class:"),
    Flag(("--select",), "train.select", "Validation metric for early stopping:"),
    Flag(("--seed",), "train.seed", "Random seed (self-align's too)."),
    Flag(("--threads",), "train.threads", "CPU threads (0 = torch's default)."),
    Flag(("--text-data-per-epoch",), "train.extra_per_epoch",
         "Examples of the --text-data drawn per epoch (0 = all)."),
    Flag(("--pair-text",), "train.pair_text", "Share of audio examples that take the words of a "
         "same-label --text-data example each epoch (cross-corpus pairing)."),
    Flag(("--pair-neutral",), "train.pair_neutral", "Share of --text-data examples that take the "
         "voice of a neutral training clip (keeping their label)."),
    Flag(("--aux-weight",), "train.aux_weight",
         "mersa-gated: weight of the text-only and audio-only heads' losses."),
    Flag(("--context",), "train.text_context", "Text branch: read each utterance after up to "
         "this many earlier utterances of its conversation (0 = alone); saved in the checkpoint."),
)
# what `experiments` varies itself (its grid) rather than taking from [train]
_GRID_VARIES = ("train.architecture", "train.seed")
ALIGN_FLAGS = (
    Flag(("--align-epochs",), "align.epochs", "Self-align epochs."),
    Flag(("--align-layers",), "align.top_layers",
         "Self-align: fine-tune only the top N transformer layers (0 = all)."),
    Flag(("--align-ce-weight",), "align.ce_weight", "Self-align: weight of an auxiliary "
         "cross-entropy head beside the multi-similarity loss (0 = the paper's pure metric "
         "learning)."),
    Flag(("--align-lr",), "align.lr", "Self-align learning rate."),
)
GRID_FLAGS = (
    Flag(("--architectures",), "experiments.architectures", "Comma-separated architectures."),
    Flag(("--audio-encoders",), "experiments.audio_encoders",
         "Comma-separated audio encoder kinds (whisper, whisper-layers, wav2vec2, vggish)."),
    Flag(("--seeds",), "experiments.seeds", "Comma-separated seeds; figures are their mean."),
    Flag(("--all-folds/--no-all-folds",), "experiments.all_folds",
         "Speaker split: run every fold and average (else fold 0)."),
    Flag(("--wav2vec2",), "experiments.wav2vec2",
         "wav2vec2 model (hub name or folder; empty = facebook/wav2vec2-base)."),
    Flag(("--vggish",), "experiments.vggish", "VGGish weights file."),
)


# -- what names one run's data and files -----------------------------------------------------

REQUIRED = ...


@dataclass(frozen=True)
class Arg:
    """A flag that is not a config key. `default` REQUIRED: the flag must be given."""

    names: tuple[str, ...]
    annotation: object  # the type typer parses
    default: object
    help: str
    param: str = ""  # the parameter's name (default: from the first name)

    @property
    def name(self) -> str:
        return self.param or self.names[0].split("/")[0].lstrip("-").replace("-", "_")

    def parameter(self) -> inspect.Parameter:
        option = typer.Option(*self.names, help=self.help)
        default = inspect.Parameter.empty if self.default is REQUIRED else self.default
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=Annotated[self.annotation, option])


def with_args(*args: Arg):
    """Give a command the flags `args`; it receives them as one `args` namespace."""

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "args"]

        @functools.wraps(command)
        def run(**kwargs):
            given = SimpleNamespace(**{arg.name: kwargs.pop(arg.name) for arg in args})
            return command(args=given, **kwargs)

        run.__signature__ = signature.replace(parameters=[*own, *(a.parameter() for a in args)])
        return run

    return decorate


DATASET = Arg(("--dataset", "-d"), str, REQUIRED, "meld | iemocap | ravdess | emodb | manifest | "
              "auto, or corpora joined by + (ravdess+emodb).")
DATA_DIR = Arg(("--data-dir",), List[Path], REQUIRED, "The corpus folder in its published layout "
               "(manifest: the CSV); one per corpus of --dataset a+b, in order.")
CLASSES = Arg(("--classes",), str, RunOptions.classes,
              "4 (neutral, happy, sad, anger) or 6 (IEMOCAP).")
SPLIT = Arg(("--split", "--scheme"), Optional[str], None, "Split scheme: official (MELD) | random "
            "(81/9/10, seed 0) | speaker (by session/actor) | holdout (MELD: validation = 10% of "
            "the training dialogues, test = the official test, else dev). Default: official for "
            "MELD, else speaker.")
FOLD = Arg(("--fold",), int, RunOptions.fold, "Speaker split: which fold is the test set.")
FOLDS = Arg(("--folds",), int, RunOptions.folds,
            "Speaker split: number of folds (by actor/speaker; IEMOCAP by session).")
AUDIO_ENCODER = Arg(("--audio-encoder",), str, RunOptions.audio_encoder, "whisper (the ASR "
                    "pass's last layer) | whisper-layers (every layer, true length) | wav2vec2 | "
                    "vggish.")
AUDIO_SPEC = Arg(("--audio-spec",), str, RunOptions.audio_spec, "Audio encoder model: Whisper "
                 "size/folder, wav2vec2 hub name/folder, VGGish weights file (empty = the kind's "
                 "default).")
TEXT_ENCODER = Arg(("--text-encoder",), str, RunOptions.text_encoder,
                   "BERT-family hub name or folder.")
SELF_ALIGN = Arg(("--self-align",), bool, False, "Run the self-align stage (settings: align.*) "
                 "first; its encoder is saved in the checkpoint.")
ALIGNED = Arg(("--aligned-text-encoder",), Optional[Path], None, "A self-aligned text encoder (a "
              "checkpoint or align folder): `train` uses it; `experiments` runs every "
              "architecture with it too (rows \"self-aligned\").")
TEXT_DATA = Arg(("--text-data",), List[str], [], "Extra text-only training data DATASET:DIR (e.g. "
                "meld:data/meld), repeatable.")
VOICE_DATA = Arg(("--voice-data",), List[str], [], "Extra training data used with its audio, "
                 "DATASET:DIR (e.g. manifest:DIR of synthetic voices reading MELD sentences, "
                 "made by benchmarks/flat_voices.py build --split train), repeatable.")
PACKED = Arg(("--packed-features",), bool, RunOptions.packed_features, "Also train on the audio "
             "features `analyze --pack` computes (whisper only), so one model serves both paths.")
AUGMENT = Arg(("--augment-views",), int, RunOptions.augment_views, "Augmented copies of each "
              "training clip (noise, room, telephone band, codec, gain).")
CALIBRATE = Arg(("--calibrate/--no-calibrate",), bool, RunOptions.calibrate,
                "Fit a temperature on the validation speakers after training.")
NO_AUDIO = Arg(("--no-audio",), bool, False, "Ignore the audio (text branch only).")
NO_TEXT = Arg(("--no-text",), bool, False, "Ignore the text (audio branch only).")
CACHE = Arg(("--cache-dir",), Optional[Path], None,
            "Feature cache folder (default ~/.cache/mersa/features or $MERSA_CACHE).")
ABSOLUTE = Arg(("--allow-absolute-paths",), bool, RunOptions.allow_absolute_paths,
               "Manifest: accept paths outside the manifest's folder.")
MODEL_ID = Arg(("--model-id",), str, RunOptions.model_id,
               "Checkpoint id (default: the --out folder's name).")

# what a training run and a grid of them share
DATA_ARGS = (DATASET, DATA_DIR, CLASSES, SPLIT, FOLDS, TEXT_ENCODER, ALIGNED, TEXT_DATA,
             VOICE_DATA, PACKED,
             AUGMENT, CALIBRATE, NO_AUDIO, NO_TEXT, CACHE, ABSOLUTE)
# RunOptions fields a flag of the same name sets as it is
_SAME = ("classes", "fold", "folds", "audio_encoder", "audio_spec", "text_encoder",
         "packed_features", "augment_views", "calibrate", "allow_absolute_paths", "model_id")


def _text_data(values: List[str], flag: str = "--text-data") -> tuple[TextData, ...]:
    out = []
    for v in values:
        name, sep, folder = v.partition(":")
        if not sep or not folder:
            raise ConfigError(f"{flag} {v!r}: expected DATASET:DIR, e.g. meld:data/meld")
        out.append(TextData(name, folder))
    return tuple(out)


def _corpora(dataset: str, data_dirs: List[Path]) -> str:
    """The dataset's name (auto: detected), after checking one --data-dir per corpus."""
    from .data import DATASETS, detect_dataset

    if dataset != "auto" and not all(d in DATASETS for d in dataset.split("+")):
        raise ConfigError(f"--dataset {dataset!r}: one of {', '.join(DATASETS)}, auto, "
                          f"or corpora joined by + (ravdess+emodb)")
    corpora = dataset.split("+")
    if len(data_dirs) != len(corpora):
        raise ConfigError(f"--dataset {dataset}: give one --data-dir per corpus "
                          f"({len(corpora)}), got {len(data_dirs)}")
    return detect_dataset(data_dirs[0]) if dataset == "auto" else dataset


def run_options(args: SimpleNamespace, train: TrainConfig | None = None, **fields) -> RunOptions:
    """The RunOptions of the flags `args` and the config tree's [train] settings `train`;
    `fields` (out ...) are set as given."""
    from ..encoders.registry import AUDIO_KINDS
    from .data import default_split
    from .options import command_line

    dataset = _corpora(args.dataset, args.data_dir)
    given = {k: v for k, v in vars(args).items() if k in _SAME}
    if given.get("audio_encoder", "whisper") not in AUDIO_KINDS:
        raise ConfigError(f"--audio-encoder {given['audio_encoder']!r}: one of "
                          f"{', '.join(AUDIO_KINDS)}")
    if given.get("augment_views", 0) < 0:
        raise ConfigError(f"--augment-views {given['augment_views']}: 0 or more")
    cache = getattr(args, "cache_dir", None)
    aligned = getattr(args, "aligned_text_encoder", None)
    scheme = getattr(args, "split", None) or getattr(args, "scheme", None)
    if train is not None:
        fields["train"] = train
    return RunOptions(dataset=dataset, data_dir=str(args.data_dir[0]),
                      more_data_dirs=tuple(str(d) for d in args.data_dir[1:]),
                      text_data=_text_data(getattr(args, "text_data", [])),
                      voice_data=_text_data(getattr(args, "voice_data", []), "--voice-data"),
                      aligned_weights=str(aligned) if aligned else None,
                      use_audio=not getattr(args, "no_audio", False),
                      use_text=not getattr(args, "no_text", False),
                      cache_dir=str(cache) if cache else None, command=command_line(),
                      split=scheme or default_split(dataset), **given, **fields)


def _say(line: str) -> None:
    stderr.print(line, markup=False, highlight=False)


def _threads(count: int) -> None:
    if count:
        import torch

        torch.set_num_threads(count)


# -- the commands --------------------------------------------------------------------------

@with_config_flags(*TRAIN_FLAGS, *ALIGN_FLAGS)
@with_args(*DATA_ARGS, FOLD, AUDIO_ENCODER, AUDIO_SPEC, SELF_ALIGN, MODEL_ID)
def train(flags: ConfigFlags, args: SimpleNamespace,
          out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write.")):
    """Train a fusion model (optionally after self-aligning the text encoder) and save a
    checkpoint."""
    from .pipeline import run

    config = flags.load()
    opts = run_options(args, config.train, out=str(out))
    _threads(config.train.threads)
    if args.self_align:
        from .self_align import align_for_run

        if opts.aligned_weights:
            raise ConfigError("--self-align and --aligned-text-encoder: pick one")
        align_dir = align_for_run(opts, config.align, out / "self_align", say=_say)
        opts = replace(opts, aligned_weights=str(align_dir))
    result = run(opts, say=_say)
    if args.self_align:  # the checkpoint holds the aligned tensors: no second copy
        (out / "self_align" / "text_encoder.safetensors").unlink(missing_ok=True)
    _say(f"checkpoint: {result.checkpoint} (best epoch {result.result.best_epoch}, "
         f"{result.seconds:.0f} s)")


@with_config_flags(*GRID_FLAGS, *(f for f in TRAIN_FLAGS if f.key not in _GRID_VARIES))
@with_args(*DATA_ARGS)
def experiments(flags: ConfigFlags, args: SimpleNamespace,
                out: Path = typer.Option(Path("experiments"), "--out", "-o",
                                         help="Folder for the results table, logs and "
                                              "checkpoints.")):
    """Run the grid (architecture x audio encoder x text encoder) and write the paper-style
    table."""
    from .experiments import GridOptions, run_grid

    config = flags.load()
    base = run_options(args, config.train)
    _threads(config.train.threads)
    table = run_grid(GridOptions(base, out, config.experiments), say=_say)
    stdout.print(table, markup=False, highlight=False)


@with_args(DATASET, DATA_DIR, replace(SPLIT, names=("--scheme",), param="scheme"), FOLD, FOLDS,
           CLASSES, NO_AUDIO, NO_TEXT, CACHE, ABSOLUTE)
def evaluate(
    args: SimpleNamespace,
    checkpoint: Path = typer.Argument(Path("default"), help="Checkpoint folder, or "
                                      "'default' (the built-in model)."),
    part: Optional[str] = typer.Option(None, "--part", show_default="test",
                                       help="Which part: train | val (MELD: dev) | test | all."),
    old_part: Optional[str] = typer.Option(None, "--split", help="Deprecated: the old name of "
                                           "--part (train and experiments: --split is the "
                                           "scheme)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    reliability: Optional[Path] = typer.Option(
        None, "--reliability", metavar="PNG", help="Also write the reliability diagram "
        "(accuracy per confidence bin) of this evaluation to PNG."),
):
    """Score a checkpoint on a part of a dataset: four metrics, expected calibration error (ECE),
    confusion matrix and count. (`--split` here is the deprecated spelling of `--part`.)"""
    from .evaluate import evaluate as score
    from .metrics import format_confusion, format_metrics

    if old_part is not None:
        if part is not None:
            raise ConfigError("--part and --split (its deprecated spelling): give one")
        _say("mersa: evaluate --split is deprecated: it is --part (the split scheme is --scheme)")
        part = old_part
    part = part or "test"
    data = run_options(args)
    metrics = score(checkpoint, data, part, reliability=reliability)
    if as_json:
        stdout.print(json.dumps(metrics), markup=False, highlight=False, soft_wrap=True)
        return
    stdout.print(f"{checkpoint} on {data.dataset} {part} ({metrics['modalities']}): "
                 f"{format_metrics(metrics)}", markup=False, highlight=False)
    stdout.print(format_confusion(metrics), markup=False, highlight=False)
    stdout.print(f"temperature {metrics['temperature']:.3f}, ECE {metrics['ece']:.3f} "
                 "(expected calibration error, 10 bins)", markup=False, highlight=False)
    if reliability:
        stdout.print(f"reliability diagram: {metrics['reliability']}", markup=False,
                     highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(experiments)
    app.command()(evaluate)
