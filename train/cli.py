"""`mersa train`, `mersa experiments`, `mersa evaluate` (registered on the main typer app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from mersa_stream.cli import app, stderr, stdout
from mersa_stream.errors import ConfigError

DatasetOption = typer.Option(..., "--dataset", "-d", help="meld | iemocap | ravdess | manifest | auto.")
DataDirOption = typer.Option(..., "--data-dir", help="The corpus folder in its published layout (manifest: the CSV).")
ClassesOption = typer.Option("4", "--classes", help="4 (neutral, happy, sad, anger) or 6 (IEMOCAP).")
SplitOption = typer.Option(None, "--split", help="official (MELD) | random (81/9/10, seed 0) | speaker (by session/actor). Default: official for MELD, else speaker.")
FoldOption = typer.Option(0, "--fold", help="Speaker split: which fold is the test set.")
FoldsOption = typer.Option(5, "--folds", help="Speaker split: number of folds (by actor/speaker; IEMOCAP by session).")
CacheOption = typer.Option(None, "--cache-dir", help="Feature cache folder (default ~/.cache/mersa/features or $MERSA_CACHE).")
AbsOption = typer.Option(False, "--allow-absolute-paths", help="Manifest: accept paths outside the manifest's folder.")
TextDataOption = typer.Option([], "--text-data", help="Extra text-only training data DATASET:DIR (e.g. meld:data/meld), repeatable.")
PackedOption = typer.Option(False, "--packed-features", help="Also train on the audio features `analyze --pack` computes (Whisper encoder only), so one model serves both paths.")
PairTextOption = typer.Option(0.0, "--pair-text", min=0.0, max=1.0, help="Share of audio examples that take the words of a same-label --text-data example each epoch (cross-corpus pairing).")


def _text_data(values: List[str]):
    from .pipeline import TextData

    out = []
    for v in values:
        name, sep, folder = v.partition(":")
        if not sep or not folder:
            raise ConfigError(f"--text-data {v!r}: expected DATASET:DIR, e.g. meld:data/meld")
        out.append(TextData(name, folder))
    return tuple(out)


def _split(dataset: str, split: Optional[str], data_dir: Path) -> tuple[str, str]:
    from .data import DATASETS, default_split, detect_dataset

    if dataset not in DATASETS + ("auto",):
        raise ConfigError(f"--dataset {dataset!r}: one of {', '.join(DATASETS)}, auto")
    if dataset == "auto":
        dataset = detect_dataset(data_dir)
    return split or default_split(dataset), dataset


@app.command()
def train(
    dataset: str = DatasetOption,
    data_dir: Path = DataDirOption,
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write."),
    classes: str = ClassesOption,
    split: Optional[str] = SplitOption,
    fold: int = FoldOption,
    folds: int = FoldsOption,
    architecture: str = typer.Option("mersa-xattn", "--architecture", "-a", help="server | 3m-ser | mersa | mersa-xattn."),
    audio_encoder: str = typer.Option("whisper", "--audio-encoder", help="whisper | wav2vec2 | vggish."),
    audio_spec: str = typer.Option("", "--audio-spec", help="Audio encoder model: Whisper size/folder, wav2vec2 hub name/folder, VGGish weights file."),
    text_encoder: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--text-encoder", help="BERT-family hub name or folder."),
    self_align: bool = typer.Option(False, "--self-align", help="Run the self-align stage first (its encoder is saved in the checkpoint)."),
    aligned: Optional[Path] = typer.Option(None, "--aligned-text-encoder", help="Re-use a self-aligned encoder (a checkpoint or align folder)."),
    align_epochs: int = typer.Option(2, "--align-epochs", help="Self-align epochs."),
    align_layers: int = typer.Option(2, "--align-layers", help="Self-align: fine-tune only the top N transformer layers (0 = all)."),
    align_ce_weight: float = typer.Option(0.0, "--align-ce-weight", min=0.0, help="Self-align: weight of an auxiliary cross-entropy head beside the multi-similarity loss (0 = the paper's pure metric learning)."),
    align_lr: float = typer.Option(2e-5, "--align-lr", help="Self-align learning rate."),
    text_data: List[str] = TextDataOption,
    text_data_per_epoch: int = typer.Option(0, "--text-data-per-epoch", help="Examples of the --text-data drawn per epoch (0 = all)."),
    packed_features: bool = PackedOption,
    pair_text: float = PairTextOption,
    no_audio: bool = typer.Option(False, "--no-audio", help="Ignore the audio (text branch only)."),
    no_text: bool = typer.Option(False, "--no-text", help="Ignore the text (audio branch only)."),
    batch_size: int = typer.Option(32, "--batch-size", help="1 = the paper's unpadded batches."),
    epochs: int = typer.Option(200, "--epochs"),
    patience: int = typer.Option(20, "--patience", help="Early stopping: epochs without a better validation score."),
    lr: float = typer.Option(1e-4, "--lr"),
    text_dropout: float = typer.Option(0.15, "--text-dropout", help="Modality dropout: P(mask the text) per example."),
    audio_dropout: float = typer.Option(0.15, "--audio-dropout", help="Modality dropout: P(mask the audio) per example."),
    class_weights: str = typer.Option("none", "--class-weights", help="none | balanced."),
    select: str = typer.Option("accuracy", "--select", help="Validation metric for early stopping: accuracy | weighted_f1 | macro_f1 | balanced_accuracy."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0 = torch's default)."),
    cache_dir: Optional[Path] = CacheOption,
    allow_absolute_paths: bool = AbsOption,
    model_id: str = typer.Option("", "--model-id"),
):
    """Train a fusion model (optionally after self-aligning the text encoder) and save a checkpoint."""
    from .fusion_train import TrainConfig
    from .metrics import METRICS
    from .pipeline import RunOptions, command_line, run

    if select not in METRICS:
        raise ConfigError(f"--select {select!r}: one of {', '.join(METRICS)}")
    if class_weights not in ("none", "balanced"):
        raise ConfigError(f"--class-weights {class_weights!r}: none or balanced")
    split, dataset = _split(dataset, split, data_dir)
    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = TrainConfig(architecture=architecture, batch_size=batch_size, epochs=epochs,
                      patience=patience, lr=lr, text_dropout=text_dropout,
                      audio_dropout=audio_dropout, class_weights=class_weights, select=select,
                      seed=seed, threads=threads, extra_per_epoch=text_data_per_epoch,
                      pair_text=pair_text)
    from mersa_stream.fusion import ARCHITECTURES

    if architecture not in ARCHITECTURES:
        raise ConfigError(f"--architecture {architecture!r}: one of {', '.join(ARCHITECTURES)}")
    opts = RunOptions(dataset=dataset, data_dir=str(data_dir), out=str(out), classes=classes,
                      split=split, fold=fold, folds=folds, audio_encoder=audio_encoder,
                      audio_spec=audio_spec, text_encoder=text_encoder,
                      aligned_weights=str(aligned) if aligned else None,
                      use_audio=not no_audio, use_text=not no_text,
                      text_data=_text_data(text_data),
                      cache_dir=str(cache_dir) if cache_dir else None,
                      allow_absolute_paths=allow_absolute_paths, model_id=model_id,
                      command=command_line(), packed_features=packed_features, train=cfg)
    if self_align:
        from .self_align import AlignConfig, align_for_run

        if aligned:
            raise ConfigError("--self-align and --aligned-text-encoder: pick one")
        align_dir = align_for_run(opts, AlignConfig(epochs=align_epochs, top_layers=align_layers,
                                                    ce_weight=align_ce_weight, lr=align_lr,
                                                    seed=seed), out / "self_align", say=_say)
        from dataclasses import replace

        opts = replace(opts, aligned_weights=str(align_dir))
    result = run(opts, say=_say)
    if self_align:  # the checkpoint holds the aligned tensors: no second copy
        (out / "self_align" / "text_encoder.safetensors").unlink(missing_ok=True)
    _say(f"checkpoint: {result.checkpoint} (best epoch {result.result.best_epoch}, "
         f"{result.seconds:.0f} s)")


def _say(line: str) -> None:
    stderr.print(line, markup=False, highlight=False)


@app.command()
def experiments(
    dataset: str = DatasetOption,
    data_dir: Path = DataDirOption,
    out: Path = typer.Option(Path("experiments"), "--out", "-o", help="Folder for the results table, logs and checkpoints."),
    classes: str = ClassesOption,
    split: Optional[str] = SplitOption,
    folds: int = FoldsOption,
    all_folds: bool = typer.Option(False, "--all-folds", help="Speaker split: run every fold and average (else fold 0)."),
    architectures: str = typer.Option("server,3m-ser,mersa,mersa-xattn", "--architectures", help="Comma-separated."),
    audio_encoders: str = typer.Option("whisper", "--audio-encoders", help="Comma-separated: whisper, wav2vec2, vggish."),
    wav2vec2: str = typer.Option("facebook/wav2vec2-base", "--wav2vec2", help="wav2vec2 model (hub name or folder)."),
    vggish: str = typer.Option("", "--vggish", help="VGGish weights file."),
    text_encoder: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--text-encoder", help="BERT-family hub name or folder."),
    aligned: Optional[Path] = typer.Option(None, "--aligned-text-encoder", help="A self-aligned text encoder: every architecture is also run with it (rows \"self-aligned\")."),
    text_data: List[str] = TextDataOption,
    no_audio: bool = typer.Option(False, "--no-audio"),
    no_text: bool = typer.Option(False, "--no-text"),
    batch_size: int = typer.Option(32, "--batch-size"),
    epochs: int = typer.Option(200, "--epochs"),
    patience: int = typer.Option(20, "--patience"),
    lr: float = typer.Option(1e-4, "--lr"),
    text_data_per_epoch: int = typer.Option(0, "--text-data-per-epoch"),
    pair_text: float = PairTextOption,
    packed_features: bool = PackedOption,
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds; figures are their mean."),
    threads: int = typer.Option(0, "--threads"),
    cache_dir: Optional[Path] = CacheOption,
    allow_absolute_paths: bool = AbsOption,
):
    """Run the grid (architecture x audio encoder x text encoder) and write the paper-style table."""
    from .experiments import run_grid

    split, dataset = _split(dataset, split, data_dir)
    if threads:
        import torch

        torch.set_num_threads(threads)
    table = run_grid(dataset=dataset, data_dir=data_dir, out=out, classes=classes, split=split,
                     folds=folds, all_folds=all_folds,
                     architectures=[a.strip() for a in architectures.split(",") if a.strip()],
                     audio_encoders=[a.strip() for a in audio_encoders.split(",") if a.strip()],
                     audio_specs={"wav2vec2": wav2vec2, "vggish": vggish},
                     aligned=str(aligned) if aligned else None, text_data=_text_data(text_data),
                     use_audio=not no_audio, use_text=not no_text, batch_size=batch_size,
                     epochs=epochs, patience=patience,
                     seeds=[int(s) for s in seeds.split(",") if s.strip()],
                     cache_dir=str(cache_dir) if cache_dir else None,
                     allow_absolute_paths=allow_absolute_paths, text_encoder=text_encoder,
                     packed_features=packed_features,
                     train_overrides={"lr": lr, "extra_per_epoch": text_data_per_epoch,
                                      "pair_text": pair_text},
                     say=_say)
    stdout.print(table, markup=False, highlight=False)


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(Path("models/default"), help="Checkpoint folder."),
    dataset: str = DatasetOption,
    data_dir: Path = DataDirOption,
    split: str = typer.Option("test", "--split", help="Which part: train | val (MELD: dev) | test | all."),
    scheme: Optional[str] = typer.Option(None, "--scheme", help="official | random | speaker (default: official for MELD, else speaker)."),
    fold: int = FoldOption,
    folds: int = FoldsOption,
    classes: str = ClassesOption,
    no_audio: bool = typer.Option(False, "--no-audio", help="Mask the audio (text branch only)."),
    no_text: bool = typer.Option(False, "--no-text", help="Mask the text (audio branch only)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    cache_dir: Optional[Path] = CacheOption,
    allow_absolute_paths: bool = AbsOption,
):
    """Score a checkpoint on a dataset split: four metrics, confusion matrix and count."""
    from .evaluate import evaluate_checkpoint
    from .metrics import format_confusion, format_metrics

    scheme, dataset = _split(dataset, scheme, data_dir)
    metrics = evaluate_checkpoint(checkpoint, dataset, data_dir, split, scheme, fold, folds,
                                  classes, use_audio=not no_audio, use_text=not no_text,
                                  cache_dir=cache_dir, allow_absolute_paths=allow_absolute_paths)
    if as_json:
        stdout.print(json.dumps(metrics), markup=False, highlight=False, soft_wrap=True)
        return
    stdout.print(f"{checkpoint} on {dataset} {split} ({metrics['modalities']}): "
                 f"{format_metrics(metrics)}", markup=False, highlight=False)
    stdout.print(format_confusion(metrics), markup=False, highlight=False)
