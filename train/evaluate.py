"""Score a saved checkpoint on a dataset split (features through the same cache as training)."""

from __future__ import annotations

from pathlib import Path

from mersa_stream.checkpoint import load_checkpoint
from mersa_stream.errors import ConfigError

from .data import load_dataset, make_split
from .features import AudioFeaturizer, FeatureCache, TextFeaturizer, encode_records
from .fusion_train import evaluate_examples
from .pipeline import to_examples

PARTS = {"train": "train", "val": "val", "dev": "val", "valid": "val", "validation": "val",
         "test": "test"}


def evaluate_checkpoint(checkpoint: str | Path, dataset: str, data_dir: str | Path,
                        split: str = "test", scheme: str = "official", fold: int = 0,
                        folds: int = 5, classes: str = "4", use_audio: bool = True,
                        use_text: bool = True, cache_dir: str | Path | None = None,
                        allow_absolute_paths: bool = False, progress: bool = True) -> dict:
    from tqdm import tqdm

    ckpt = load_checkpoint(checkpoint)
    records = load_dataset(dataset, data_dir, classes, allow_absolute_paths)
    if split == "all":
        chosen = records
    else:
        if split not in PARTS:
            raise ConfigError(f"--split {split!r}: one of train, val (dev), test, all")
        chosen = make_split(dataset, records, scheme, fold, folds)[PARTS[split]]
        if not chosen:
            raise ConfigError(f"{dataset}: the {scheme} split has no {split} part here "
                              f"(MELD test needs test_sent_emo.csv)")
    unknown = sorted({r.label for r in chosen} - set(ckpt.labels))
    if unknown:
        raise ConfigError(f"{dataset}: labels {unknown} are not among the checkpoint's "
                          f"{ckpt.labels}")
    cache = FeatureCache(Path(cache_dir)) if cache_dir else FeatureCache()
    bar = tqdm if progress else None
    opts = ckpt.text_encoder.options or {}
    text_f = TextFeaturizer(ckpt.text_encoder.spec, ckpt.text_encoder_weights,
                            int(opts.get("max_tokens", 64)))
    texts = encode_records(chosen, text_f, "text", cache, 64, bar)
    has_audio = use_audio and any(r.audio for r in chosen)
    if has_audio:
        audio_f = AudioFeaturizer(ckpt.audio_encoder.kind, ckpt.audio_encoder.spec)
        audios = encode_records(chosen, audio_f, "audio", cache, 8, bar)
    else:
        audios = [None] * len(chosen)
    examples = to_examples(chosen, ckpt.labels, texts, audios, ckpt.text_encoder.dim,
                           ckpt.audio_encoder.dim, use_text, has_audio)
    metrics = evaluate_examples(ckpt.model, examples, ckpt.labels, ckpt.text_encoder.dim,
                                ckpt.audio_encoder.dim)
    metrics["modalities"] = "+".join(m for m, on in (("text", use_text), ("audio", has_audio)) if on)
    metrics.update({"checkpoint": str(checkpoint), "dataset": dataset, "split": split,
                    "scheme": scheme})
    return metrics
