"""Fusion training's pieces: cross-corpus pairing and the two-view consistency term."""

import random

import numpy as np
import torch

from train.fusion_train import (Example, TrainConfig, modality_drops, pair_with_text,
                                predict, symmetric_kl, train_fusion)

DIM, CLASSES = 8, 4
LABELS = ["neutral", "happy", "sad", "anger"]


def two_view_corpus(n: int, seed: int) -> list[Example]:
    """Audio whose mean carries the class; the second view is the same clip seen differently
    (another noise draw and a fixed distortion), as packed features are for a clip."""
    centres = np.random.default_rng(0).normal(0, 1.0, (CLASSES, DIM))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % CLASSES
        frames = rng.integers(5, 12)
        audio = centres[y] + rng.normal(0, 2.2, (frames, DIM))
        view = 0.7 * (centres[y] + rng.normal(0, 2.2, (frames, DIM))) + 0.5
        out.append(Example(np.zeros((0, DIM), np.float32), audio.astype(np.float32), y,
                           f"clip{i}", view.astype(np.float32)))
    return out


def view_disagreement(model, examples) -> tuple[float, float]:
    """Mean symmetric KL between the two views' predictions, and the share of differing labels
    (which this small noisy corpus measures too coarsely to assert on)."""
    p = predict(model, examples, DIM, DIM)
    q = predict(model, [Example(e.text, e.view, e.label, e.id) for e in examples], DIM, DIM)
    kl = float(symmetric_kl(torch.log(torch.tensor(p)), torch.log(torch.tensor(q))))
    return kl, float((p.argmax(1) != q.argmax(1)).mean())


def train(examples, val, consistency: float):
    if consistency == 0:  # what --packed-features does without --consistency
        examples = examples + [Example(e.text, e.view, e.label, e.id + "#packed")
                               for e in examples]
    config = TrainConfig(hidden=16, heads=2, dropout=0.1, lr=3e-3, epochs=12, patience=12,
                         batch_size=16, consistency=consistency, threads=1)
    return train_fusion(examples, {"val": val}, LABELS, DIM, DIM, config, progress=False).model


def test_consistency_pulls_the_two_views_predictions_together():
    train_set, held_out = two_view_corpus(160, 0), two_view_corpus(80, 1)
    kl_without, differ_without = view_disagreement(train(train_set, held_out, 0.0), held_out)
    kl_with, differ_with = view_disagreement(train(train_set, held_out, 5.0), held_out)
    assert kl_with < 0.5 * kl_without


def test_pairing_and_dropout_keep_the_second_view():
    rng = random.Random(0)
    audio = [Example(np.zeros((1, DIM), np.float32), np.ones((3, DIM), np.float32), i % 2,
                     f"a{i}", np.full((3, DIM), 2.0, np.float32)) for i in range(40)]
    texts = [Example(np.full((2, DIM), float(i), np.float32), np.zeros((0, DIM), np.float32),
                     i % 2, f"t{i}") for i in range(6)]
    paired = pair_with_text(audio, texts, 0.5, rng)
    swapped = [e for e in paired if e.id.endswith("+text")]
    assert 5 < len(swapped) < 35
    for e in swapped:
        assert e.view is not None and float(e.view[0, 0]) == 2.0
        assert int(e.text[0, 0]) % 2 == e.label  # the words of a same-label example
    drops = modality_drops(audio, random.Random(1), 0.3, 0.3)
    assert set(drops) == {None, "text", "audio"}
    text_only = [Example(e.text, np.zeros((0, DIM), np.float32), 0) for e in audio[:10]]
    assert modality_drops(text_only, random.Random(1), 0.5, 0.5) == [None] * 10
