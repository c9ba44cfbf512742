"""Score a saved checkpoint on a part of a dataset (features through the same cache as training):
the four metrics, confusion matrix, count and expected calibration error (`ece`, with the
checkpoint's temperature applied as at run time), optionally a reliability diagram.

Words: the *scheme* (official | random | speaker; `RunOptions.split`, `--split`/`--scheme`) says
how a dataset is cut; the *part* (train | val | test | all; `--part`) is which piece is scored."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ..checkpoint import load_checkpoint
from ..errors import ConfigError
from .data import default_split, make_split
from .features import AudioFeaturizer, FeatureCache, TextContext, TextFeaturizer, encode_records
from .fusion_train import metrics_from_probs, predict
from .pipeline import RunOptions, load_run_records, to_examples

PARTS = {"train": "train", "val": "val", "dev": "val", "valid": "val", "validation": "val",
         "test": "test"}


def evaluate(checkpoint: str | Path, data: RunOptions, part: str = "test",
             reliability: str | Path | None = None, progress: bool = True) -> dict:
    """`data`: which dataset, folders, scheme, fold, classes, modalities and cache (the run options
    a training run would have had). `reliability`: a PNG path to write the reliability diagram of
    this evaluation to (recorded as metrics["reliability"])."""
    from tqdm import tqdm

    ckpt = load_checkpoint(checkpoint)
    records = load_run_records(data)
    if part == "all":
        chosen = records
    else:
        if part not in PARTS:
            raise ConfigError(f"--part {part!r}: one of train, val (dev), test, all")
        chosen = make_split(data.dataset, records, data.split, data.fold, data.folds,
                            data.split_seed)[PARTS[part]]
        if not chosen:
            raise ConfigError(f"{data.dataset}: the {data.split} split has no {part} part here "
                              f"(MELD test needs test_sent_emo.csv)")
    unknown = sorted({r.label for r in chosen} - set(ckpt.labels))
    if unknown:
        raise ConfigError(f"{data.dataset}: labels {unknown} are not among the checkpoint's "
                          f"{ckpt.labels}")
    cache = FeatureCache(Path(data.cache_dir)) if data.cache_dir else FeatureCache()
    bar = tqdm if progress else None
    opts = ckpt.text_encoder.options or {}
    text_f = TextFeaturizer(ckpt.text_encoder.spec, ckpt.text_encoder_weights,
                            int(opts.get("max_tokens", RunOptions.text_max_tokens)),
                            context=TextContext.of_options(opts))
    texts = encode_records(chosen, text_f, "text", cache, 64, bar)
    has_audio = data.use_audio and any(r.audio for r in chosen)
    if has_audio:
        # a model trained on the speech the segmenter finds in a clip is scored on it too
        audio_f = AudioFeaturizer(ckpt.audio_encoder.kind, ckpt.audio_encoder.spec,
                                  speech_only=bool((ckpt.audio_encoder.options or {})
                                                   .get("speech_only", False)))
        audios = encode_records(chosen, audio_f, "audio", cache, 8, bar)
    else:
        audios = [None] * len(chosen)
    examples = to_examples(chosen, ckpt.labels, texts, audios, ckpt.text_encoder.dim,
                           ckpt.audio_encoder.dim, data.use_text, has_audio)
    probs = predict(ckpt.model, examples, ckpt.text_encoder.dim, ckpt.audio_encoder.dim)
    metrics = metrics_from_probs(examples, probs, ckpt.labels)
    metrics["temperature"] = float(getattr(ckpt.model.config, "temperature", 1.0))
    metrics["modalities"] = "+".join(m for m, on in (("text", data.use_text),
                                                      ("audio", has_audio)) if on)
    # "split" is the part, as in the JSON of earlier versions
    metrics.update({"checkpoint": str(checkpoint), "dataset": data.dataset, "part": part,
                    "split": part, "scheme": data.split})
    if reliability:
        from .calibration import reliability_diagram

        title = f"{Path(checkpoint).name} on {data.dataset} {part} ({metrics['modalities']})"
        metrics["reliability"] = str(reliability_diagram(
            probs, [e.label for e in examples], reliability, title))
    return metrics


def evaluate_checkpoint(checkpoint: str | Path, dataset: str, data_dir: str | Path,
                        part: str = "test", **options) -> dict:
    """`evaluate` with the run options as keywords (scripts' form): `scheme` is the split scheme,
    `split` the old name of `part`, `progress` and `reliability` as in `evaluate`; the others
    (fold, folds, classes, use_audio, use_text, cache_dir, allow_absolute_paths) are
    `RunOptions` fields."""
    part = options.pop("split", part)
    extra = {k: options.pop(k) for k in ("progress", "reliability") if k in options}
    options["split"] = options.pop("scheme", None) or default_split(dataset)
    known = {f.name for f in fields(RunOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"evaluate_checkpoint: unknown option {unknown[0]!r}")
    if options.get("cache_dir") is not None:
        options["cache_dir"] = str(options["cache_dir"])
    data = RunOptions(dataset=dataset, data_dir=str(data_dir), **options)
    return evaluate(checkpoint, data, part, **extra)
