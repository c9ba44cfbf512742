"""The experiment grid: architecture x audio encoder x text encoder (plain / self-aligned),
over folds and seeds, written as the paper's table (accuracy, weighted F1, macro F1, balanced
accuracy) to `<out>/results.md` and `<out>/results.json`."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from mersa_stream.errors import ConfigError
from mersa_stream.fusion import ARCHITECTURES
from mersa_stream.resolve import DEFAULT_TEXT_ENCODER

from .features import AUDIO_ENCODERS, FeatureCache
from .fusion_train import TrainConfig
from .metrics import METRICS, mean_std
from .pipeline import Featurizers, RunOptions, TextData, command_line, run

NAMES = {"server": "SERVER", "3m-ser": "3M-SER", "mersa": "MERSA", "mersa-xattn": "MERSA + xattn"}


def run_grid(dataset: str, data_dir, out: Path, classes: str = "4", split: str = "speaker",
             folds: int = 5, all_folds: bool = False, architectures: Sequence[str] = ARCHITECTURES,
             audio_encoders: Sequence[str] = ("whisper",), audio_specs: dict | None = None,
             aligned: str | None = None, text_data: tuple[TextData, ...] = (),
             use_audio: bool = True, use_text: bool = True, batch_size: int = 32,
             epochs: int = 200, patience: int = 20, seeds: Sequence[int] = (0,),
             cache_dir: str | None = None, allow_absolute_paths: bool = False,
             text_encoder: str = DEFAULT_TEXT_ENCODER, progress: bool = True,
             say: Callable[[str], None] = print, train_overrides: dict | None = None,
             packed_features: bool = False) -> str:
    for a in architectures:
        if a not in ARCHITECTURES:
            raise ConfigError(f"--architectures: {a!r} is not one of {', '.join(ARCHITECTURES)}")
    for e in audio_encoders:
        if e not in AUDIO_ENCODERS:
            raise ConfigError(f"--audio-encoders: {e!r} is not one of {', '.join(AUDIO_ENCODERS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    featurizers = Featurizers(FeatureCache(Path(cache_dir)) if cache_dir else FeatureCache())
    text_variants = [("plain", None)] + ([("self-aligned", aligned)] if aligned else [])
    fold_list = list(range(folds)) if (split == "speaker" and all_folds) else [0]
    rows, start = [], time.perf_counter()
    command = command_line()
    for audio in (audio_encoders if use_audio else audio_encoders[:1]):
        for arch in architectures:
            for text_name, text_weights in text_variants:
                runs = []
                for fold in fold_list:
                    for seed in seeds:
                        name = f"{arch}_{audio}_{text_name}_fold{fold}_seed{seed}"
                        cfg = TrainConfig(architecture=arch, batch_size=batch_size, epochs=epochs,
                                          patience=patience, seed=seed)
                        if train_overrides:
                            cfg = replace(cfg, **train_overrides)
                        opts = RunOptions(
                            dataset=dataset, data_dir=str(data_dir), out=str(out / "runs" / name),
                            classes=classes, split=split, fold=fold, folds=folds,
                            audio_encoder=audio, audio_spec=(audio_specs or {}).get(audio, ""),
                            text_encoder=text_encoder, aligned_weights=text_weights,
                            use_audio=use_audio, use_text=use_text, text_data=text_data,
                            cache_dir=cache_dir, allow_absolute_paths=allow_absolute_paths,
                            model_id=name, command=command, packed_features=packed_features,
                            train=cfg)
                        say(f"== {name}")
                        result = run(opts, featurizers, progress=progress, say=say)
                        scored = {k: v for k, v in result.test.items() if "(" not in k} or \
                            {k: v for k, v in result.val.items() if "(" not in k
                             and k.startswith(dataset)}
                        part, metrics = next(iter(scored.items()))
                        runs.append({"fold": fold, "seed": seed, "part": part,
                                     "best_epoch": result.result.best_epoch,
                                     "seconds": round(result.seconds, 1),
                                     **{m: metrics[m] for m in METRICS},
                                     "count": metrics["count"]})
                row = {"model": NAMES[arch] + ("" if text_name == "plain" or arch in
                                               ("server", "3m-ser") else " (self-aligned)"),
                       "architecture": arch, "audio": audio if use_audio else "-",
                       "text": text_name if use_text else "-", "runs": runs,
                       "part": runs[0]["part"]}
                for m in METRICS:
                    row[m] = mean_std([r[m] for r in runs])
                rows.append(row)
                (out / "results.json").write_text(json.dumps(
                    {"command": command, "dataset": dataset, "split": split, "rows": rows},
                    indent=2) + "\n")
    table = results_table(rows, dataset, split, len(fold_list), list(seeds))
    (out / "results.md").write_text(f"{table}\n\nCommand: `{command}` "
                                    f"({time.perf_counter() - start:.0f} s)\n")
    return table


def results_table(rows: list[dict], dataset: str, split: str, n_folds: int,
                  seeds: list[int]) -> str:
    part = rows[0]["part"] if rows else ""
    lines = [f"{dataset}, split {split}, scored on {part.split('/')[-1]} "
             f"({n_folds} fold(s) x seeds {seeds}; mean ± std)", "",
             "| model | audio | text encoder | accuracy | weighted F1 | macro F1 | balanced acc |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for m in METRICS:
            mean, std = r[m]
            cells.append(f"{mean:.3f} ± {std:.3f}" if len(r["runs"]) > 1 else f"{mean:.3f}")
        lines.append(f"| {NAMES[r['architecture']]} | {r['audio']} | {r['text']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
