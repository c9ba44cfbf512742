"""Fusion training's pieces: cross-corpus pairing and modality dropout."""

import random

import numpy as np

from train.fusion_train import Example, collate, pair_with_text

DIM = 8


def audio_example(i: int) -> Example:
    return Example(np.zeros((1, DIM), np.float32), np.ones((3, DIM), np.float32), i % 2, f"a{i}")


def test_pairing_gives_a_share_of_audio_examples_the_words_of_a_same_label_text():
    texts = [Example(np.full((2, DIM), float(i), np.float32), np.zeros((0, DIM), np.float32),
                     i % 2, f"t{i}") for i in range(6)]
    audio = [audio_example(i) for i in range(200)]
    paired = pair_with_text(audio, texts, 0.3, random.Random(0))
    swapped = [e for e in paired if e.id.endswith("+text")]
    assert 40 <= len(swapped) <= 80
    for e in swapped:
        assert int(e.text[0, 0]) % 2 == e.label and e.audio.shape == (3, DIM)
    assert pair_with_text(audio, texts, 0.0, random.Random(0)) == audio


def test_modality_dropout_hides_one_side_of_two_and_never_the_only_one():
    both = [audio_example(i) for i in range(60)]
    _, text_mask, _, audio_mask, _ = collate(both, DIM, DIM, 1500, random.Random(1), 0.3, 0.3)
    text_hidden, audio_hidden = ~text_mask.any(1), ~audio_mask.any(1)
    assert 5 < int(text_hidden.sum()) < 35 and 5 < int(audio_hidden.sum()) < 35
    assert not bool((text_hidden & audio_hidden).any())
    text_only = [Example(e.text, np.zeros((0, DIM), np.float32), 0) for e in both[:10]]
    _, text_mask, _, _, _ = collate(text_only, DIM, DIM, 1500, random.Random(1), 0.9, 0.0)
    assert bool(text_mask.any(1).all())
