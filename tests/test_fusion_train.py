"""Fusion training's pieces: cross-corpus pairing and modality dropout."""

import random

import numpy as np

from mersa_stream.train.fusion_train import Example, collate, pair_with_text

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


def test_neutral_voice_pairing_gives_text_only_examples_a_neutral_clip_and_keeps_their_label():
    from mersa_stream.train.fusion_train import pair_with_neutral_voice

    voices = [Example(np.zeros((1, DIM), np.float32), np.full((3, DIM), i, np.float32), i % 2,
                      f"ravdess/{i}") for i in range(10)]  # label 0 = neutral
    texts = [Example(np.ones((2, DIM), np.float32), np.zeros((0, DIM), np.float32), 1 + i % 3,
                     f"meld/{i}") for i in range(300)]
    paired = pair_with_neutral_voice(texts, voices, 0.5, 0, random.Random(0))
    voiced = [e for e in paired if len(e.audio)]
    assert 110 <= len(voiced) <= 190
    for e in voiced:
        assert int(e.audio[0, 0]) % 2 == 0  # a neutral clip's voice
        assert e.label == int(e.id.split("/")[1].split("+")[0]) % 3 + 1  # its own label kept
    assert pair_with_neutral_voice(texts, voices, 0.0, 0, random.Random(0)) == texts


def test_corpora_are_balanced_per_epoch():
    from mersa_stream.train.fusion_train import balance_corpora

    train = [audio_example(i) for i in range(30)]
    train = [Example(e.text, e.audio, e.label, f"{'ravdess' if i < 24 else 'emodb'}/{i}")
             for i, e in enumerate(train)]
    epoch = balance_corpora(train, random.Random(0))
    counts = {c: sum(e.id.startswith(c) for e in epoch) for c in ("ravdess", "emodb")}
    assert counts == {"ravdess": 24, "emodb": 24}
    assert {e.id for e in train} <= {e.id for e in epoch}  # nothing dropped


def test_gated_training_loss_adds_the_one_modality_heads():
    import torch

    from mersa_stream.fusion import FusionConfig, FusionModel
    from mersa_stream.train.fusion_train import training_loss

    torch.manual_seed(0)
    model = FusionModel.build(FusionConfig("mersa-gated", DIM, DIM, 2, hidden=8, heads=2)).eval()
    batch = collate([audio_example(i) for i in range(6)], DIM, DIM, 1500)
    loss_fn = torch.nn.CrossEntropyLoss()
    plain = training_loss(model, batch, loss_fn, 0.0)
    with_heads = training_loss(model, batch, loss_fn, 0.5)
    assert with_heads > plain > 0


def test_training_settings_live_in_the_config_tree_and_reference_the_fusion_defaults():
    import pytest

    from mersa_stream.config import FUSION_HYPER_PARAMETERS, TrainConfig, load_config
    from mersa_stream.errors import ConfigError
    from mersa_stream.fusion_config import FusionConfig

    defaults = FusionConfig("mersa", DIM, DIM, 2)
    for name in FUSION_HYPER_PARAMETERS:  # one definition: FusionConfig's
        assert getattr(TrainConfig(), name) == getattr(defaults, name)
    config = load_config(None, ["train.hidden=32", "train.lr=3e-4", "align.lr=1e-3",
                                "experiments.seeds='1, 2'"])
    built = config.train.fusion(DIM, 6, 4, audio_layers=2)
    assert (built.hidden, built.heads, built.dropout) == (32, defaults.heads, defaults.dropout)
    shape = (built.text_dim, built.audio_dim, built.num_classes, built.audio_layers)
    assert shape == (DIM, 6, 4, 2)
    assert (config.train.lr, config.align.lr) == (3e-4, 1e-3)
    assert config.experiments.seed_list() == (1, 2)
    with pytest.raises(ConfigError, match="train.architecture: 'lstm' is not one of"):
        load_config(None, ["train.architecture=lstm"])
    with pytest.raises(ConfigError, match="train.pair_neutral: 1.5 is out of range"):
        load_config(None, ["train.pair_neutral=1.5"])
