"""Fusion training on cached (frozen) encoder features.

The lab's recipe: Adam (lr 1e-4), StepLR(step 30, gamma 0.1), dropout 0.5, up to 200 epochs,
early stopping on validation. Padded batches with masks by default (same maths as batch size 1,
which is offered too). Modality dropout: with probability `text_dropout` / `audio_dropout` a
training example that has both modalities loses one of them (never both), so a one-modality input
at run time still gets a sensible label. Every setting is a key of the config tree's [train]
section (mersa_stream/config.py: `TrainConfig`).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig  # the settings: the config tree's [train]
from ..fusion import FusionModel, pad_sequences
from .metrics import compute_metrics


@dataclass
class Example:
    text: np.ndarray  # (T, Dt); (0, Dt) = no text
    audio: np.ndarray  # (S, Da); (0, Da) = no audio
    label: int
    id: str = ""


def collate(batch: Sequence[Example], text_dim: int, audio_dim: int, max_audio: int,
            rng: random.Random | None = None, text_dropout: float = 0.0,
            audio_dropout: float = 0.0):
    text, text_mask = pad_sequences([e.text for e in batch], text_dim)
    audio, audio_mask = pad_sequences([e.audio for e in batch], audio_dim, max_audio)
    if rng is not None:
        for i, e in enumerate(batch):
            if len(e.text) and len(e.audio):
                u = rng.random()
                if u < text_dropout:
                    text_mask[i] = False
                elif u < text_dropout + audio_dropout:
                    audio_mask[i] = False
    labels = torch.tensor([e.label for e in batch], dtype=torch.long)
    return text, text_mask, audio, audio_mask, labels


def batches(examples: Sequence[Example], size: int, rng: random.Random | None):
    """Shuffled (training) or in order; a batch holds examples of similar length (less padding)."""
    order = list(range(len(examples)))
    if rng is None:
        return [order[i:i + size] for i in range(0, len(order), size)]
    rng.shuffle(order)
    # bucket: sort windows of 50 batches by length, then shuffle the batches
    window = size * 50
    out = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window],
                       key=lambda i: len(examples[i].audio) * 1000 + len(examples[i].text))
        out += [chunk[i:i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(out)
    return out


def predict_logits(model: FusionModel, examples: Sequence[Example], text_dim: int,
                   audio_dim: int, batch_size: int = 64, max_audio: int = 1500,
                   drop: str | None = None) -> np.ndarray:
    """Raw logits (N, C), before the temperature (the one batching loop: `predict` and
    `calibration.calibrate` both use it); `drop` = "text" or "audio" masks that modality."""
    model.eval()
    out = []
    order = sorted(range(len(examples)),
                   key=lambda i: (len(examples[i].audio), len(examples[i].text)))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            t, tm, a, am, _ = collate([examples[i] for i in idx], text_dim, audio_dim, max_audio)
            if drop == "text":
                tm[:] = False
            elif drop == "audio":
                am[:] = False
            out.append((idx, model(t, tm, a, am).float().numpy()))
    logits = np.zeros((len(examples), model.config.num_classes), np.float32)
    for idx, z in out:
        logits[idx] = z
    return logits


def predict(model: FusionModel, examples: Sequence[Example], text_dim: int, audio_dim: int,
            batch_size: int = 64, max_audio: int = 1500, drop: str | None = None) -> np.ndarray:
    """Class probabilities (N, C) as `FusionModel.predict_proba` gives them: softmax of the
    logits divided by `model.config.temperature`. `drop` = "text" or "audio" masks that
    modality."""
    z = predict_logits(model, examples, text_dim, audio_dim, batch_size, max_audio, drop)
    return torch.softmax(torch.from_numpy(z) / model.config.temperature, -1).numpy()


def metrics_from_probs(examples: Sequence[Example], probs: np.ndarray, labels) -> dict:
    """The four metrics, confusion matrix, count and ECE of predictions `probs` (N, C)."""
    return compute_metrics([e.label for e in examples], probs.argmax(1).tolist(), labels,
                           probs=probs)


def evaluate_examples(model, examples, labels, text_dim, audio_dim, max_audio=1500, drop=None):
    probs = predict(model, examples, text_dim, audio_dim, max_audio=max_audio, drop=drop)
    return metrics_from_probs(examples, probs, labels)


def pair_with_text(train: Sequence[Example], extra: Sequence[Example], share: float,
                   rng: random.Random) -> list[Example]:
    """Cross-corpus pairing: with no corpus that has emotional words *and* emotional voices (RAVDESS
    says two fixed sentences), a model never sees both modalities informative at once and learns
    to ignore the words whenever there is audio. So, each epoch, `share` of the audio examples
    take the text of a random text-only example with the same label."""
    if share <= 0 or not extra:
        return list(train)
    by_label: dict[int, list[Example]] = {}
    for e in extra:
        if len(e.text):
            by_label.setdefault(e.label, []).append(e)
    out = []
    for e in train:
        donors = by_label.get(e.label)
        if donors and len(e.audio) and rng.random() < share:
            e = Example(rng.choice(donors).text, e.audio, e.label, e.id + "+text")
        out.append(e)
    return out


def pair_with_neutral_voice(extra: Sequence[Example], train: Sequence[Example], share: float,
                            neutral: int, rng: random.Random) -> list[Example]:
    """Text-only examples that take the voice of a neutral audio clip (keeping their label):
    nothing else teaches the model that a calm or flat voice saying emotional words should be
    labelled by the words, which is the synthetic-voice case and much of real speech."""
    voices = [e for e in train if e.label == neutral and len(e.audio)]
    if share <= 0 or not voices:
        return list(extra)
    return [Example(e.text, rng.choice(voices).audio, e.label, e.id + "+neutral-voice")
            if len(e.text) and not len(e.audio) and rng.random() < share else e for e in extra]


def corpus_of(example: Example) -> str:
    return example.id.split("/", 1)[0]


def balance_corpora(train: Sequence[Example], rng: random.Random) -> list[Example]:
    """Each corpus resampled (with replacement) up to the largest one's size, so one corpus's
    voices do not dominate an epoch."""
    by_corpus: dict[str, list[Example]] = {}
    for e in train:
        by_corpus.setdefault(corpus_of(e), []).append(e)
    if len(by_corpus) < 2:
        return list(train)
    largest = max(len(v) for v in by_corpus.values())
    out = []
    for examples in by_corpus.values():
        out += examples + [rng.choice(examples) for _ in range(largest - len(examples))]
    return out


def training_loss(model: FusionModel, batch, loss_fn: nn.Module, aux_weight: float
                  ) -> torch.Tensor:
    """Cross-entropy of the model's output; for a gated model plus its one-modality heads' losses
    on the rows where that modality is present (each head must stand alone)."""
    t, tm, a, am, y = batch
    if not hasattr(model, "branch_logits"):
        return loss_fn(model(t, tm, a, am), y)
    out = model.branch_logits(t, tm, a, am)
    loss = loss_fn(out["final"], y)
    for branch, present in (("text", tm.any(1)), ("audio", am.any(1))):
        if aux_weight > 0 and present.any():
            loss = loss + aux_weight * loss_fn(out[branch][present], y[present])
    return loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class TrainResult:
    model: FusionModel
    best_epoch: int
    val_metrics: dict[str, dict]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def train_fusion(train: Sequence[Example], val: dict[str, Sequence[Example]], labels: list[str],
                 text_dim: int, audio_dim: int, config: TrainConfig | None = None,
                 log_path: Path | None = None, progress: bool = True,
                 extra: Sequence[Example] = (), audio_layers: int = 1) -> TrainResult:
    """Train one fusion model; keep the weights of the best validation epoch.

    `extra`: further training examples (text-only data such as MELD next to RAVDESS); each epoch
    takes `config.extra_per_epoch` of them at random (0 = all), so a small audio corpus is not
    drowned by a large text corpus and an epoch stays short.

    Selection: the mean of `config.select` over the validation sets (e.g. RAVDESS actors + MELD
    dev, each weighted equally); ties go to the lower validation loss.
    """
    from tqdm import tqdm

    config = config or TrainConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    model = FusionModel.build(config.fusion(text_dim, audio_dim, len(labels), audio_layers))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size,
                                                gamma=config.gamma)
    weight = None
    if config.class_weights == "balanced":
        counts = np.bincount([e.label for e in train], minlength=len(labels)).astype(float)
        counts += np.bincount([e.label for e in extra], minlength=len(labels))
        weight = torch.tensor(counts.sum() / (len(labels) * np.maximum(counts, 1)),
                              dtype=torch.float)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    rng = random.Random(config.seed)
    log = open(log_path, "w", encoding="utf-8") if log_path else None
    best_score, best_loss, best_state, best_epoch, best_val = -math.inf, math.inf, None, 0, {}
    history, since_best, start = [], 0, time.perf_counter()
    epochs = tqdm(range(1, config.epochs + 1), desc=config.architecture, disable=not progress,
                  leave=False, dynamic_ncols=True)
    try:
        for epoch in epochs:
            model.train()
            total, seen = 0.0, 0
            epoch_set = pair_with_text(train, extra, config.pair_text, rng)
            if config.balance_corpora:
                epoch_set = balance_corpora(epoch_set, rng)
            if extra:
                k = config.extra_per_epoch
                drawn = list(extra) if k <= 0 or k >= len(extra) else rng.sample(list(extra), k)
                epoch_set += pair_with_neutral_voice(drawn, train, config.pair_neutral,
                                                     labels.index("neutral")
                                                     if "neutral" in labels else -1, rng)
            for idx in batches(epoch_set, config.batch_size, rng):
                batch = collate([epoch_set[i] for i in idx], text_dim, audio_dim,
                                config.max_audio_frames, rng, config.text_dropout,
                                config.audio_dropout)
                loss = training_loss(model, batch, loss_fn, config.aux_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            scheduler.step()
            val_metrics, val_loss = {}, 0.0
            for name, examples in val.items():
                probs = predict(model, examples, text_dim, audio_dim,
                                max_audio=config.max_audio_frames)
                y = np.array([e.label for e in examples])
                val_loss += float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-9, 1)).mean())
                val_metrics[name] = metrics_from_probs(examples, probs, labels)
            val_loss /= max(1, len(val))
            score = float(np.mean([m[config.select] for m in val_metrics.values()]))
            row = {"epoch": epoch, "train_loss": total / max(1, seen), "val_loss": val_loss,
                   "val_score": score, "lr": optimizer.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - start,
                   "val": {n: {k: m[k] for k in ("accuracy", "weighted_f1", "macro_f1",
                                                  "balanced_accuracy")}
                           for n, m in val_metrics.items()}}
            history.append(row)
            if log:
                log.write(json.dumps(row) + "\n")
                log.flush()
            tied = abs(score - best_score) <= 1e-9
            if score > best_score + 1e-9 or (tied and val_loss < best_loss):
                best_score, best_loss, best_epoch, best_val = score, val_loss, epoch, val_metrics
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                since_best = 0
            else:
                since_best += 1
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{score:.3f}",
                               best=f"{best_score:.3f}@{best_epoch}")
            if since_best >= config.patience and epoch >= config.min_epochs:
                break
    finally:
        if log:
            log.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_epoch, best_val, history, time.perf_counter() - start)

