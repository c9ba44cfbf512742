"""One training run end to end: data -> (self-align) -> cached features -> fusion -> checkpoint."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from mersa_stream.checkpoint import Checkpoint, EncoderSpec, save_checkpoint
from mersa_stream.config import RuntimeConfig
from mersa_stream.errors import ConfigError
from mersa_stream.resolve import DEFAULT_TEXT_ENCODER

from .data import Record, class_counts, labels_for, load_dataset, make_split
from .features import AudioFeaturizer, FeatureCache, TextFeaturizer, encode_records
from .fusion_train import Example, TrainConfig, TrainResult, evaluate_examples, train_fusion
from .metrics import METRICS, format_metrics

LICENCES = {
    "meld": "MELD (Poria et al. 2019), GPL-3.0",
    "ravdess": "RAVDESS (Livingstone & Russo 2018), CC BY-NC-SA 4.0",
    "iemocap": "IEMOCAP (Busso et al. 2008), USC licence: research use only, not redistributable",
    "manifest": "user-supplied data (licence of the user's corpus)",
}
AUDIO_SPECS = {"whisper": "tiny.en", "wav2vec2": "facebook/wav2vec2-base", "vggish": ""}


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
    split: str = "speaker"
    fold: int = 0
    folds: int = 5
    split_seed: int = 0
    audio_encoder: str = "whisper"
    audio_spec: str = ""
    text_encoder: str = DEFAULT_TEXT_ENCODER
    text_max_tokens: int = 64
    aligned_weights: str | None = None  # folder/file with self-aligned text-encoder tensors
    use_audio: bool = True
    use_text: bool = True
    text_data: tuple[TextData, ...] = ()
    cache_dir: str | None = None
    allow_absolute_paths: bool = False
    model_id: str = ""
    command: str = ""
    packed_features: bool = False  # also train on the audio features of `analyze --pack`
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class RunResult:
    result: TrainResult
    val: dict[str, dict]
    test: dict[str, dict]
    checkpoint: Path | None
    labels: list[str]
    counts: dict[str, dict]
    seconds: float
    cache_lines: list[str]


PACK_GAP_S = RuntimeConfig().pack_gap_s


def command_line() -> str:
    return "mersa " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def load_aligned(path: str | None) -> dict:
    if not path:
        return {}
    from safetensors.torch import load_file

    p = Path(path)
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

    def audio(self, kind: str, spec: str, packed_gap: float | None = None) -> AudioFeaturizer:
        key = (kind, spec, packed_gap)
        if key not in self._audio:
            self._audio[key] = AudioFeaturizer(kind, spec, packed_gap=packed_gap)
        return self._audio[key]

    def text(self, spec: str, aligned: str | None, max_tokens: int) -> TextFeaturizer:
        key = (spec, aligned or "", max_tokens)
        if key not in self._text:
            self._text[key] = TextFeaturizer(spec, load_aligned(aligned), max_tokens)
        return self._text[key]


def to_examples(records: Sequence[Record], labels: list[str], text_feats, audio_feats,
                text_dim: int, audio_dim: int, use_text=True, use_audio=True) -> list[Example]:
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for r, t, a in zip(records, text_feats, audio_feats):
        t = t if (use_text and t is not None and r.text.strip()) else np.zeros((0, text_dim), np.float16)
        a = a if (use_audio and a is not None) else np.zeros((0, audio_dim), np.float16)
        out.append(Example(t, a, index[r.label], r.id))
    return out


def featurize(records, featurizers: Featurizers, opts: RunOptions, progress=None):
    text_f = featurizers.text(opts.text_encoder, opts.aligned_weights, opts.text_max_tokens)
    texts = encode_records(records, text_f, "text", featurizers.cache, 64, progress) \
        if opts.use_text else [None] * len(records)
    if opts.use_audio and any(r.audio for r in records):
        audio_f = featurizers.audio(opts.audio_encoder, opts.audio_spec or
                                    AUDIO_SPECS[opts.audio_encoder])
        audios = encode_records(records, audio_f, "audio", featurizers.cache, 8, progress)
        audio_dim = audio_f.dim
    else:
        audios, audio_dim = [None] * len(records), (
            featurizers.audio(opts.audio_encoder, opts.audio_spec or
                              AUDIO_SPECS[opts.audio_encoder]).dim)
    return texts, audios, text_f.dim, audio_dim


def run(opts: RunOptions, featurizers: Featurizers | None = None, progress: bool = True,
        say=print) -> RunResult:
    from tqdm import tqdm

    start = time.perf_counter()
    featurizers = featurizers or Featurizers(FeatureCache(Path(opts.cache_dir)) if opts.cache_dir
                                             else FeatureCache())
    bar = tqdm if progress else None
    labels = labels_for(opts.dataset, opts.classes)
    records = load_dataset(opts.dataset, opts.data_dir, opts.classes, opts.allow_absolute_paths)
    splits = make_split(opts.dataset, records, opts.split, opts.fold, opts.folds, opts.split_seed)
    if not splits["train"] or not splits["val"]:
        raise ConfigError(f"{opts.dataset}: the {opts.split} split leaves no training or "
                          f"validation data")
    sets = {f"{opts.dataset}/{k}": v for k, v in splits.items() if v}
    for extra in opts.text_data:
        extra_labels = labels_for(extra.dataset, opts.classes)
        if extra_labels != labels:
            raise ConfigError(f"--text-data {extra.dataset}: its labels differ from {opts.dataset}'s")
        extra_records = load_dataset(extra.dataset, extra.data_dir, opts.classes)
        extra_split = make_split(extra.dataset, extra_records, "official" if extra.dataset == "meld"
                                 else "random", seed=opts.split_seed)
        # text only: the audio of an extra text dataset is never used
        for k, v in extra_split.items():
            if v:
                sets[f"{extra.dataset}/{k}"] = [replace(r, audio=None) for r in v]
    counts = {name: class_counts(v) for name, v in sets.items()}
    examples: dict[str, list[Example]] = {}
    text_dim = audio_dim = 0
    for name, recs in sets.items():
        texts, audios, text_dim, audio_dim = featurize(recs, featurizers, opts, bar)
        examples[name] = to_examples(recs, labels, texts, audios, text_dim, audio_dim,
                                     opts.use_text, opts.use_audio)
    cache_lines = [s.line(f"{m} features") for m, s in featurizers.cache.stats.items()]
    for line in cache_lines:
        say(line)
    train_set = examples[f"{opts.dataset}/train"]
    packed_f = None
    if opts.packed_features and opts.use_audio and opts.audio_encoder == "whisper":
        # the same clips once more, with the features `analyze --pack` computes (neighbours in
        # the window), so that one model serves both the packed and the per-utterance path
        records = splits["train"]
        packed_f = featurizers.audio("whisper", opts.audio_spec or AUDIO_SPECS["whisper"],
                                     packed_gap=PACK_GAP_S)
        packed = encode_records(records, packed_f, "audio", featurizers.cache, 8, bar)
        train_set = train_set + [replace(e, audio=a, id=e.id + "#packed")
                                 for e, a in zip(train_set, packed) if len(e.audio)]
    extra_set = [e for n, v in examples.items() if n.endswith("/train")
                 and not n.startswith(f"{opts.dataset}/") for e in v]
    val_sets = {n: v for n, v in examples.items() if n.endswith("/val")}
    test_sets = {n: v for n, v in examples.items() if n.endswith("/test")}
    log_path = None
    if opts.out:
        Path(opts.out).mkdir(parents=True, exist_ok=True)
        log_path = Path(opts.out) / "train_log.jsonl"
    result = train_fusion(train_set, val_sets, labels, text_dim, audio_dim, opts.train,
                          log_path=log_path, progress=progress,
                          describe=f"{opts.train.architecture} {opts.audio_encoder}",
                          extra=extra_set)
    cfg = opts.train
    val = {n: evaluate_examples(result.model, v, labels, text_dim, audio_dim,
                                cfg.max_audio_frames) for n, v in val_sets.items()}
    test = {n: evaluate_examples(result.model, v, labels, text_dim, audio_dim,
                                 cfg.max_audio_frames) for n, v in test_sets.items()}
    if packed_f is not None and splits.get("test"):
        name = f"{opts.dataset}/test"
        feats = encode_records(splits["test"], packed_f, "audio", featurizers.cache, 8, bar)
        test[f"{name} (packed windows)"] = evaluate_examples(
            result.model, [replace(e, audio=a) for e, a in zip(test_sets[name], feats)], labels,
            text_dim, audio_dim, cfg.max_audio_frames)
    # one-modality behaviour (the runtime meets both)
    for n, v in list(test_sets.items()) + list(val_sets.items()):
        if any(len(e.audio) for e in v) and any(len(e.text) for e in v):
            target = test if n in test_sets else val
            target[f"{n} (audio only)"] = evaluate_examples(result.model, v, labels, text_dim,
                                                            audio_dim, cfg.max_audio_frames,
                                                            drop="text")
    for name, m in {**val, **test}.items():
        say(f"{name}: {format_metrics(m)}")
    ckpt_path = None
    if opts.out:
        aligned = load_aligned(opts.aligned_weights)
        audio_spec = opts.audio_spec or AUDIO_SPECS[opts.audio_encoder]
        ckpt = Checkpoint(
            model=result.model, labels=labels,
            text_encoder=EncoderSpec("bert", opts.text_encoder, text_dim,
                                     {"max_tokens": opts.text_max_tokens}),
            audio_encoder=EncoderSpec(opts.audio_encoder, audio_spec, audio_dim),
            model_id=opts.model_id or Path(opts.out).name, text_encoder_weights=aligned,
            metadata={"command": opts.command or command_line(), "best_epoch": result.best_epoch,
                      "train": cfg.to_dict(), "dataset": opts.dataset, "split": opts.split,
                      "fold": opts.fold, "folds": opts.folds,
                      "text_data": [asdict(t) for t in opts.text_data],
                      "self_aligned": bool(aligned),
                      "metrics": {"val": _short(val), "test": _short(test)}})
        ckpt_path = save_checkpoint(ckpt, opts.out, model_card(opts, result, val, test, counts,
                                                                labels))
        for f in Path(opts.out).iterdir():
            if f.is_file():
                f.chmod(0o644)
    return RunResult(result, val, test, ckpt_path, labels, counts,
                     time.perf_counter() - start, cache_lines)


def _short(metrics: dict[str, dict]) -> dict:
    return {n: {k: round(m[k], 4) for k in METRICS} | {"count": m["count"]}
            for n, m in metrics.items()}


def _table(metrics: dict[str, dict]) -> str:
    rows = ["| set | n | accuracy | weighted F1 | macro F1 | balanced acc |",
            "|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        rows.append(f"| {name} | {m['count']} | " +
                    " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |")
    return "\n".join(rows)


def model_card(opts: RunOptions, result: TrainResult, val, test, counts, labels) -> str:
    cfg = opts.train
    datasets = [opts.dataset] + [t.dataset for t in opts.text_data]
    licences = "\n".join(f"- {LICENCES[d]}" for d in dict.fromkeys(datasets))
    research = any(d in ("meld", "ravdess", "iemocap") for d in datasets)
    count_lines = "\n".join(f"- {n}: " + ", ".join(f"{k} {v}" for k, v in c.items())
                            for n, c in counts.items())
    return f"""# {opts.model_id or Path(opts.out).name}

Speech emotion recognition fusion model (MERSA family), architecture `{cfg.architecture}`,
labels {labels}.

- Audio encoder: `{opts.audio_encoder}` `{opts.audio_spec or AUDIO_SPECS[opts.audio_encoder]}` (frozen)
- Text encoder: `{opts.text_encoder}` (frozen in fusion training){' + self-aligned tensors in text_encoder.safetensors' if opts.aligned_weights else ''}
- Training: Adam lr {cfg.lr}, StepLR({cfg.step_size}, {cfg.gamma}), dropout {cfg.dropout}, batch {cfg.batch_size}
  ({'padded with masks' if cfg.batch_size > 1 else 'unpadded'}), up to {cfg.epochs} epochs, early stopping on
  validation {cfg.select} (patience {cfg.patience}); best epoch {result.best_epoch}; modality dropout
  text {cfg.text_dropout} / audio {cfg.audio_dropout}; cross-corpus text pairing {cfg.pair_text};
  seed {cfg.seed}.

## Data

Dataset `{opts.dataset}` from `{opts.data_dir}`, split `{opts.split}`{f' (fold {opts.fold} of {opts.folds})' if opts.split == 'speaker' else ''}.
{''.join(f'Extra text-only data: `{t.dataset}` from `{t.data_dir}` (its audio is not used).' for t in opts.text_data)}

{count_lines}

## Licences

{licences}
{'''
Trained on corpora licensed for research/non-commercial use (and GPL-3.0 data): use this model
for research only.''' if research else ''}

## Metrics

Validation (used for early stopping: optimistic):

{_table(val)}

Held-out test:

{_table(test) if test else '(no test set)'}

## Command

```
{opts.command or command_line()}
```
"""
