"""One training run end to end: data -> (self-align) -> cached features -> fusion -> checkpoint."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..checkpoint import Checkpoint, EncoderSpec, checkpoint_folder, save_checkpoint
from ..config import RuntimeConfig
from ..errors import ConfigError
from .data import Record, class_counts, labels_for, load_corpora, load_dataset, make_split
from .features import (
    NO_CONTEXT,
    AudioFeaturizer,
    FeatureCache,
    TextContext,
    TextFeaturizer,
    encode_records,
)
from .fusion_train import Example, TrainResult, evaluate_examples, predict, train_fusion
from .metrics import METRICS, format_metrics
from .options import RunOptions, SetKey, TextData, command_line

# RunOptions, SetKey, TextData, command_line: defined apart (options.py, torch-free), used here
__all__ = ["RunOptions", "RunResult", "SetKey", "TextData", "command_line", "run"]

LICENCES = {
    "meld": "MELD (Poria et al. 2019), GPL-3.0",
    "ravdess": "RAVDESS (Livingstone & Russo 2018), CC BY-NC-SA 4.0",
    "iemocap": "IEMOCAP (Busso et al. 2008), USC licence: research use only, not redistributable",
    "emodb": "EmoDB (Burkhardt et al. 2005), CC0-1.0 as distributed by its maintainers",
    "manifest": "user-supplied data (licence of the user's corpus)",
}


@dataclass
class RunResult:
    result: TrainResult
    val: dict[SetKey, dict]
    test: dict[SetKey, dict]
    checkpoint: Path | None
    labels: list[str]
    counts: dict[SetKey, dict]
    seconds: float
    cache_lines: list[str]


PACK_GAP_S = RuntimeConfig().pack_gap_s


def load_aligned(path: str | None) -> dict:
    if not path:
        return {}
    from safetensors.torch import load_file

    p = checkpoint_folder(path)  # a checkpoint folder, the built-in "default", or the file
    if p.is_dir():
        p = p / "text_encoder.safetensors"
    if not p.is_file():
        raise ConfigError(f"--aligned-text-encoder {path}: no text_encoder.safetensors there")
    return load_file(str(p))


class Featurizers:
    """Encoders built once and shared between the runs of one process (experiments grid)."""

    def __init__(self, cache: FeatureCache):
        self.cache = cache
        self._audio: dict = {}
        self._text: dict = {}

    def audio(self, kind: str, spec: str, packed_gap: float | None = None, view: int = 0,
              speech_only: bool = False) -> AudioFeaturizer:
        key = (kind, spec, packed_gap, view, speech_only)
        if key not in self._audio:
            augment = None
            if view:
                from .augment import Augmenter

                augment = Augmenter()
            self._audio[key] = AudioFeaturizer(kind, spec, packed_gap=packed_gap,
                                               augment=augment, view=view,
                                               speech_only=speech_only)
        return self._audio[key]

    def text(self, spec: str, aligned: str | None, max_tokens: int,
             context: TextContext = NO_CONTEXT) -> TextFeaturizer:
        key = (spec, aligned or "", max_tokens, context)
        if key not in self._text:
            self._text[key] = TextFeaturizer(spec, load_aligned(aligned), max_tokens,
                                             context=context)
        return self._text[key]


def to_examples(records: Sequence[Record], labels: list[str], text_feats, audio_feats,
                text_dim: int, audio_dim: int, use_text=True, use_audio=True) -> list[Example]:
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for r, t, a in zip(records, text_feats, audio_feats):
        if not (use_text and t is not None and r.text.strip()):
            t = np.zeros((0, text_dim), np.float16)
        a = a if (use_audio and a is not None) else np.zeros((0, audio_dim), np.float16)
        out.append(Example(t, a, index[r.label], r.id))
    return out


def featurize(records, featurizers: Featurizers, opts: RunOptions, progress=None):
    text_f = featurizers.text(opts.text_encoder, opts.aligned_weights, opts.text_max_tokens,
                              TextContext.of_config(opts.train))
    texts = encode_records(records, text_f, "text", featurizers.cache, 64, progress) \
        if opts.use_text else [None] * len(records)
    audio_f = run_audio_featurizer(featurizers, opts)
    if opts.use_audio and any(r.audio for r in records):
        audios = encode_records(records, audio_f, "audio", featurizers.cache, 8, progress)
    else:
        audios = [None] * len(records)
    return texts, audios, text_f.dim, audio_f.dim


def run_audio_featurizer(featurizers: Featurizers, opts: RunOptions,
                         view: int = 0) -> AudioFeaturizer:
    """The run's audio featurizer (`view` k: the k-th augmented copy of each clip): one place
    that reads the run's encoder settings, so every use shares one encoder."""
    return featurizers.audio(opts.audio_encoder, opts.audio_spec_or_default, view=view,
                             speech_only=opts.train.audio_speech_only)


def audio_layers(featurizers: Featurizers, opts: RunOptions) -> int:
    """How many encoder layers the audio features hold side by side (FusionConfig.audio_layers)."""
    encoder = run_audio_featurizer(featurizers, opts).encoder
    return int(getattr(encoder, "layers", 1))


def load_run_records(opts: RunOptions) -> list[Record]:
    if "+" in opts.dataset:
        return load_corpora(opts.dataset.split("+"), (opts.data_dir,) + opts.more_data_dirs,
                            opts.classes, opts.allow_absolute_paths)
    return load_dataset(opts.dataset, opts.data_dir, opts.classes, opts.allow_absolute_paths)


def augmented_views(train_set: list[Example], records: Sequence[Record], featurizers: Featurizers,
                    opts: RunOptions, progress) -> list[Example]:
    """`opts.augment_views` more copies of the training clips, each through a random channel
    (noise, room, telephone band, codec, gain): the voices of calls are not the studio's."""
    out = []
    for view in range(1, opts.augment_views + 1):
        f = run_audio_featurizer(featurizers, opts, view)
        feats = encode_records(records, f, "audio", featurizers.cache, 8, progress)
        out += [replace(e, audio=a, id=f"{e.id}#aug{view}")
                for e, a in zip(train_set, feats) if len(e.audio)]
    return out


def evaluation_sets(opts: RunOptions, labels: list[str]) -> dict[SetKey, list[Record]]:
    """The run's records by set: its dataset's train/val/test parts, each corpus's held-out
    speakers on their own (dataset a+b), the parts of the text-only --text-data and the
    --voice-data (training only)."""
    records = load_run_records(opts)
    splits = make_split(opts.dataset, records, opts.split, opts.fold, opts.folds, opts.split_seed)
    if not splits["train"] or not splits["val"]:
        raise ConfigError(f"{opts.dataset}: the {opts.split} split leaves no training or "
                          f"validation data")
    sets = {SetKey(opts.dataset, part): v for part, v in splits.items() if v}
    if "+" in opts.dataset:
        for corpus in opts.dataset.split("+"):
            sets[SetKey(corpus, "test")] = [r for r in splits["test"] if r.dataset == corpus]
    for extra in opts.text_data:
        if labels_for(extra.dataset, opts.classes) != labels:
            raise ConfigError(f"--text-data {extra.dataset}: its labels differ from "
                              f"{opts.dataset}'s")
        extra_records = load_dataset(extra.dataset, extra.data_dir, opts.classes)
        extra_split = make_split(extra.dataset, extra_records,
                                 "official" if extra.dataset == "meld" else "random",
                                 seed=opts.split_seed)
        # text only: the audio of an extra text dataset is never used
        for part, v in extra_split.items():
            if v:
                sets[SetKey(extra.dataset, part)] = [replace(r, audio=None) for r in v]
    for extra in opts.voice_data:  # with its audio, all of it for training
        sets[SetKey(f"{extra.dataset} voices", "train")] = load_dataset(
            extra.dataset, extra.data_dir, opts.classes, opts.allow_absolute_paths)
    return sets


def run(opts: RunOptions, featurizers: Featurizers | None = None, progress: bool = True,
        say=print) -> RunResult:
    from tqdm import tqdm

    start = time.perf_counter()
    featurizers = featurizers or Featurizers(FeatureCache(Path(opts.cache_dir)) if opts.cache_dir
                                             else FeatureCache())
    bar = tqdm if progress else None
    labels = labels_for(opts.dataset, opts.classes)
    sets = evaluation_sets(opts, labels)
    main = {part: SetKey(opts.dataset, part) for part in ("train", "val", "test")}
    counts = {key: class_counts(v) for key, v in sets.items()}
    examples: dict[SetKey, list[Example]] = {}
    text_dim = audio_dim = 0
    for key, recs in sets.items():
        texts, audios, text_dim, audio_dim = featurize(recs, featurizers, opts, bar)
        examples[key] = to_examples(recs, labels, texts, audios, text_dim, audio_dim,
                                    opts.use_text, opts.use_audio)
    cache_lines = [s.line(f"{m} features") for m, s in featurizers.cache.stats.items()]
    for line in cache_lines:
        say(line)
    train_set = examples[main["train"]]
    packed_f = None
    if opts.packed_features and opts.use_audio and opts.audio_encoder == "whisper":
        # the same clips once more, with the features `analyze --pack` computes (neighbours in
        # the window), so that one model serves both the packed and the per-utterance path
        packed_f = featurizers.audio("whisper", opts.audio_spec_or_default, packed_gap=PACK_GAP_S)
        packed = encode_records(sets[main["train"]], packed_f, "audio", featurizers.cache, 8, bar)
        train_set = train_set + [replace(e, audio=a, id=e.id + "#packed")
                                 for e, a in zip(train_set, packed) if len(e.audio)]
    if opts.augment_views and opts.use_audio:
        train_set = train_set + augmented_views(examples[main["train"]], sets[main["train"]],
                                                featurizers, opts, bar)
    extra_set = [e for key, v in examples.items()
                 if key.part == "train" and key.dataset != opts.dataset for e in v]
    val_sets = {key: v for key, v in examples.items() if key.part == "val"}
    test_sets = {key: v for key, v in examples.items() if key.part == "test"}
    log_path = None
    if opts.out:
        Path(opts.out).mkdir(parents=True, exist_ok=True)
        log_path = Path(opts.out) / "train_log.jsonl"
    result = train_fusion(train_set, {key.name: v for key, v in val_sets.items()}, labels,
                          text_dim, audio_dim, opts.train, log_path=log_path, progress=progress,
                          extra=extra_set, audio_layers=audio_layers(featurizers, opts))
    cfg = opts.train
    if opts.calibrate and val_sets:
        from .calibration import calibrate

        temperature = calibrate(result.model, [e for v in val_sets.values() for e in v],
                                text_dim, audio_dim, cfg.max_audio_frames)
        say(f"calibration: temperature {temperature:.3f} (fitted on the validation speakers)")

    def score(examples: Sequence[Example], drop: str | None = None) -> dict:
        return evaluate_examples(result.model, examples, labels, text_dim, audio_dim,
                                 cfg.max_audio_frames, drop=drop)

    val = {key: score(v) for key, v in val_sets.items()}
    test = {key: score(v) for key, v in test_sets.items()}
    if packed_f is not None and main["test"] in test_sets:
        feats = encode_records(sets[main["test"]], packed_f, "audio", featurizers.cache, 8, bar)
        test[main["test"]._replace(variant="packed windows")] = score(
            [replace(e, audio=a) for e, a in zip(test_sets[main["test"]], feats)])
    # one-modality behaviour (the runtime meets both)
    for target, evaluated in ((test, test_sets), (val, val_sets)):
        for key, v in evaluated.items():
            if any(len(e.audio) for e in v) and any(len(e.text) for e in v):
                target[key._replace(variant="audio only")] = score(v, drop="text")
    for key, m in {**val, **test}.items():
        say(f"{key.name}: {format_metrics(m)}")
    if opts.out and main["test"] in test_sets:
        from .calibration import reliability_diagram

        held_out = test_sets[main["test"]]
        reliability_diagram(predict(result.model, held_out, text_dim, audio_dim,
                                    max_audio=cfg.max_audio_frames),
                            [e.label for e in held_out], Path(opts.out) / "reliability.png",
                            title=f"{opts.dataset} test (held-out speakers)")
    done = RunResult(result, val, test, None, labels, counts, 0.0, cache_lines)
    if opts.out:
        done.checkpoint = save_run(opts, done, text_dim, audio_dim)
    done.seconds = time.perf_counter() - start
    return done


def save_run(opts: RunOptions, done: RunResult, text_dim: int, audio_dim: int) -> Path:
    """The checkpoint of a run: weights, encoders, metadata (settings, metrics) and model card."""
    aligned = load_aligned(opts.aligned_weights)
    result = done.result
    ckpt = Checkpoint(
        model=result.model, labels=done.labels,
        text_encoder=EncoderSpec("bert", opts.text_encoder, text_dim,
                                 {"max_tokens": opts.text_max_tokens}
                                 | TextContext.of_config(opts.train).settings()),
        audio_encoder=EncoderSpec(opts.audio_encoder, opts.audio_spec_or_default, audio_dim,
                                  {"speech_only": True} if opts.train.audio_speech_only else {}),
        model_id=opts.model_id or Path(opts.out).name, text_encoder_weights=aligned,
        metadata={"command": opts.command or command_line(), "best_epoch": result.best_epoch,
                  "train": opts.train.to_dict(), "dataset": opts.dataset, "split": opts.split,
                  "fold": opts.fold, "folds": opts.folds,
                  "text_data": [asdict(t) for t in opts.text_data],
                  "voice_data": [asdict(t) for t in opts.voice_data],
                  "self_aligned": bool(aligned),
                  "metrics": {"val": _short(done.val), "test": _short(done.test)}})
    path = save_checkpoint(ckpt, opts.out, model_card(opts, done))
    for f in Path(opts.out).iterdir():
        if f.is_file():
            f.chmod(0o644)
    return path


def _short(metrics: dict[SetKey, dict]) -> dict:
    return {key.name: {k: round(m[k], 4) for k in METRICS + ("ece",) if k in m}
            | {"count": m["count"]} for key, m in metrics.items()}


def _table(metrics: dict[SetKey, dict]) -> str:
    rows = ["| set | n | accuracy | weighted F1 | macro F1 | balanced acc | ECE |",
            "|---|---|---|---|---|---|---|"]
    for key, m in metrics.items():
        rows.append(f"| {key.name} | {m['count']} | " +
                    " | ".join(f"{m[k]:.3f}" for k in METRICS) + f" | {m.get('ece', 0):.3f} |")
    return "\n".join(rows)


def model_card(opts: RunOptions, done: RunResult) -> str:
    cfg, result, labels = opts.train, done.result, done.labels
    # every corpus of a combined dataset (ravdess+emodb) has its own licence
    datasets = opts.dataset.split("+") + [t.dataset for t in opts.text_data]
    licences = "\n".join(f"- {LICENCES[d]}" for d in dict.fromkeys(datasets))
    research = any(d in ("meld", "ravdess", "iemocap") for d in datasets)
    count_lines = "\n".join(f"- {key.name}: " + ", ".join(f"{k} {v}" for k, v in c.items())
                            for key, c in done.counts.items())
    aligned = " + self-aligned tensors in text_encoder.safetensors" if opts.aligned_weights else ""
    batching = "padded with masks" if cfg.batch_size > 1 else "unpadded"
    folders = "`, `".join((opts.data_dir,) + opts.more_data_dirs)
    fold = f" (fold {opts.fold} of {opts.folds})" if opts.split == "speaker" else ""
    extra = "".join(f"Extra text-only data: `{t.dataset}` from `{t.data_dir}` (its audio is not "
                    "used). " for t in opts.text_data)
    extra += "".join(f"Extra training data with its audio: `{t.dataset}` from `{t.data_dir}`. "
                     for t in opts.voice_data)
    research_note = ("\nTrained on corpora licensed for research/non-commercial use (and GPL-3.0 "
                     "data): use this model\nfor research only." if research else "")
    temperature = result.model.config.temperature
    calibration = ("Probabilities are calibrated by temperature scaling on the validation "
                   f"speakers (temperature\n{temperature:.3f})" if opts.calibrate else
                   "Probabilities are not calibrated (`--no-calibrate`: temperature\n"
                   f"{temperature:.3f})")
    return f"""# {opts.model_id or Path(opts.out).name}

Speech emotion recognition fusion model (MERSA family), architecture `{cfg.architecture}`,
labels {labels}.

- Audio encoder: `{opts.audio_encoder}` `{opts.audio_spec_or_default}` (frozen)
- Text encoder: `{opts.text_encoder}` (frozen in fusion training){aligned}
- Training: Adam lr {cfg.lr}, StepLR({cfg.step_size}, {cfg.gamma}), dropout {cfg.dropout}, \
batch {cfg.batch_size}
  ({batching}), up to {cfg.epochs} epochs, early stopping on
  validation {cfg.select} (patience {cfg.patience}); best epoch {result.best_epoch}; \
modality dropout
  text {cfg.text_dropout} / audio {cfg.audio_dropout}; cross-corpus text pairing {cfg.pair_text};
  neutral-voice pairing {cfg.pair_neutral}; augmented views {opts.augment_views}; \
seed {cfg.seed}.

## Data

Dataset `{opts.dataset}` from `{folders}`, split `{opts.split}`{fold}.
{extra}

{count_lines}

## Licences

{licences}
{research_note}

## Metrics

Validation (used for early stopping: optimistic):

{_table(done.val)}

Held-out test:

{_table(done.test) if done.test else '(no test set)'}

{calibration}; `reliability.png` is the held-out test set's reliability
diagram where there is one.

## Command

```
{opts.command or command_line()}
```
"""
