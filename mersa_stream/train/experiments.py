"""The experiment grid: architecture x audio encoder x text encoder (plain / self-aligned),
over folds and seeds, written as the paper's table (accuracy, weighted F1, macro F1, balanced
accuracy) to `<out>/results.md` and `<out>/results.json`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..config import ExperimentsConfig
from ..encoders.registry import AUDIO_KINDS
from ..errors import ConfigError
from ..fusion import ARCHITECTURES
from .features import FeatureCache
from .metrics import METRICS, mean_std
from .pipeline import Featurizers, RunOptions, RunResult, SetKey, command_line, run

NAMES = {"server": "SERVER", "3m-ser": "3M-SER", "mersa": "MERSA", "mersa-xattn": "MERSA + xattn",
         "mersa-gated": "MERSA + xattn + gate"}


@dataclass(frozen=True)
class GridOptions:
    """What `run_grid` runs: every run starts from `base` (dataset, scheme, encoders, the [train]
    settings ...) and the grid ([experiments]) varies architecture, audio encoder, text encoder
    (plain, and self-aligned when `base.aligned_weights` is given), fold and seed."""

    base: RunOptions
    out: Path
    grid: ExperimentsConfig = ExperimentsConfig()

    def check(self) -> None:
        for a in ExperimentsConfig.items(self.grid.architectures):
            if a not in ARCHITECTURES:
                raise ConfigError(f"--architectures: {a!r} is not one of "
                                  f"{', '.join(ARCHITECTURES)}")
        for e in ExperimentsConfig.items(self.grid.audio_encoders):
            if e not in AUDIO_KINDS:
                raise ConfigError(f"--audio-encoders: {e!r} is not one of "
                                  f"{', '.join(AUDIO_KINDS)}")
        if not self.grid.seed_list():
            raise ConfigError("--seeds: give at least one seed")

    def folds(self) -> list[int]:
        every = self.base.split == "speaker" and self.grid.all_folds
        return list(range(self.base.folds)) if every else [0]

    def audio_spec(self, kind: str) -> str:
        return {"wav2vec2": self.grid.wav2vec2, "vggish": self.grid.vggish}.get(kind, "")


def scored(result: RunResult, dataset: str) -> tuple[SetKey, dict]:
    """What a grid cell reports: the dataset's held-out test part, else its validation part."""
    for sets, part in ((result.test, "test"), (result.val, "val")):
        if SetKey(dataset, part) in sets:
            return SetKey(dataset, part), sets[SetKey(dataset, part)]
    raise ConfigError(f"{dataset}: the run has neither a test nor a validation part")


def run_grid(options: GridOptions, progress: bool = True,
             say: Callable[[str], None] = print) -> str:
    options.check()
    base, grid = options.base, options.grid
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    featurizers = Featurizers(FeatureCache(Path(base.cache_dir)) if base.cache_dir
                              else FeatureCache())
    text_variants = [("plain", None)] + ([("self-aligned", base.aligned_weights)]
                                         if base.aligned_weights else [])
    fold_list, seeds = options.folds(), list(grid.seed_list())
    audio_encoders = ExperimentsConfig.items(grid.audio_encoders)
    rows, start, part = [], time.perf_counter(), ""
    command = base.command or command_line()
    for audio in (audio_encoders if base.use_audio else audio_encoders[:1]):
        for arch in ExperimentsConfig.items(grid.architectures):
            for text_name, text_weights in text_variants:
                runs = []
                for fold in fold_list:
                    for seed in seeds:
                        name = f"{arch}_{audio}_{text_name}_fold{fold}_seed{seed}"
                        opts = replace(base, out=str(out / "runs" / name), fold=fold,
                                       audio_encoder=audio, audio_spec=options.audio_spec(audio),
                                       aligned_weights=text_weights, model_id=name,
                                       command=command,
                                       train=replace(base.train, architecture=arch, seed=seed))
                        say(f"== {name}")
                        result = run(opts, featurizers, progress=progress, say=say)
                        key, metrics = scored(result, base.dataset)
                        part = key.part
                        runs.append({"fold": fold, "seed": seed, "part": key.name,
                                     "best_epoch": result.result.best_epoch,
                                     "seconds": round(result.seconds, 1),
                                     **{m: metrics[m] for m in METRICS},
                                     "count": metrics["count"]})
                row = {"model": NAMES[arch] + ("" if text_name == "plain" or arch in
                                               ("server", "3m-ser") else " (self-aligned)"),
                       "architecture": arch, "audio": audio if base.use_audio else "-",
                       "text": text_name if base.use_text else "-", "runs": runs,
                       "part": runs[0]["part"]}
                for m in METRICS:
                    row[m] = mean_std([r[m] for r in runs])
                rows.append(row)
                (out / "results.json").write_text(json.dumps(
                    {"command": command, "dataset": base.dataset, "split": base.split,
                     "rows": rows}, indent=2) + "\n")
    caption = (f"{base.dataset}, split {base.split}, scored on {part} ({len(fold_list)} fold(s) "
               f"x seeds {seeds}; mean ± std)")
    table = results_table(rows, caption)
    (out / "results.md").write_text(f"{table}\n\nCommand: `{command}` "
                                    f"({time.perf_counter() - start:.0f} s)\n")
    return table


def results_table(rows: list[dict], caption: str) -> str:
    lines = [caption, "",
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
