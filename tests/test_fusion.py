import math

import pytest
import torch

from mersa_stream.fusion import ARCHITECTURES, FusionConfig, FusionModel


def build(architecture, seed=0):
    torch.manual_seed(seed)
    config = FusionConfig(architecture=architecture, text_dim=24, audio_dim=20, num_classes=4,
                          hidden=16, heads=4)
    return FusionModel.build(config).eval()


def batch(seed=1, text_lengths=(5, 3, 0), audio_lengths=(7, 0, 4)):
    g = torch.Generator().manual_seed(seed)
    b, t, s = len(text_lengths), max(text_lengths), max(audio_lengths)
    text, audio = torch.randn(b, t, 24, generator=g), torch.randn(b, s, 20, generator=g)
    text_mask = torch.arange(t)[None] < torch.tensor(text_lengths)[:, None]
    audio_mask = torch.arange(s)[None] < torch.tensor(audio_lengths)[:, None]
    return text, text_mask, audio, audio_mask


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_shapes_and_probabilities(architecture):
    model = build(architecture)
    text, tm, audio, am = batch()
    logits = model(text, tm, audio, am)
    assert logits.shape == (3, 4)
    assert torch.isfinite(logits).all()  # incl. the rows with a missing modality
    probs = model.predict_proba(text, tm, audio, am)
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_masked_positions_change_nothing(architecture):
    model = build(architecture)
    text, tm, audio, am = batch()
    before = model(text, tm, audio, am)
    noisy_text = torch.where(tm[..., None], text, torch.randn_like(text) * 100)
    noisy_audio = torch.where(am[..., None], audio, torch.randn_like(audio) * 100)
    after = model(noisy_text, tm, noisy_audio, am)
    assert torch.allclose(before, after, atol=1e-5)
    # and padding a row to a longer batch gives that row's unpadded result
    alone = model(text[:1, :5], tm[:1, :5], audio[:1, :7], am[:1, :7])
    assert torch.allclose(alone, before[:1], atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_real_positions_do_matter(architecture):
    model = build(architecture)
    text, tm, audio, am = batch()
    before = model(text, tm, audio, am)
    changed = model(text, tm, audio * -3 + 1, am)
    assert not torch.allclose(before[0], changed[0], atol=1e-4)  # row 0 has audio
    assert torch.allclose(before[1], changed[1], atol=1e-5)  # row 1 has none


def test_cross_attention_variant_has_both_directions():
    plain, cross = build("mersa"), build("mersa-xattn")
    names = {n.split(".")[0] for n, _ in cross.named_parameters()}
    assert {"text_to_audio", "audio_to_text"} <= names
    assert not ({"text_to_audio", "audio_to_text"}
                & {n.split(".")[0] for n, _ in plain.named_parameters()})
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(cross) > count(plain)


def test_training_step_lowers_loss():
    model = build("mersa-xattn").train()
    text, tm, audio, am = batch(text_lengths=(5, 3, 4, 2), audio_lengths=(7, 2, 4, 6))
    labels = torch.tensor([0, 1, 2, 3])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(text, tm, audio, am), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and not math.isnan(losses[-1])


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture"):
        FusionModel.build(FusionConfig("transformer-xl", 4, 4, 2))


def test_gated_model_gives_a_missing_modality_no_weight():
    model = build("mersa-gated")
    text, tm, audio, am = batch(text_lengths=(5, 3, 0), audio_lengths=(7, 0, 4))
    out = model.branch_logits(text, tm, audio, am)
    gate = out["gate"]  # columns: text, audio, fused
    assert torch.allclose(gate.sum(-1), torch.ones(3), atol=1e-6)
    assert gate[1, 1] == 0 and gate[2, 0] == 0  # no audio / no text
    assert gate[0].min() > 0
    # the output is the gate's mixture of the three heads' probabilities
    mix = sum(gate[:, i:i + 1] * out[b].softmax(-1)
              for i, b in enumerate(("text", "audio", "fused")))
    assert torch.allclose(model(text, tm, audio, am).exp(), mix, atol=1e-5)


def test_layer_mix_learns_one_weight_per_layer_and_reads_layers_apart():
    torch.manual_seed(0)
    config = FusionConfig(architecture="mersa-xattn", text_dim=24, audio_dim=3 * 20,
                          num_classes=4, hidden=16, heads=4, audio_layers=3)
    model = FusionModel.build(config).eval()
    assert model.audio_mix.weights.shape == (3,)
    layers = torch.randn(2, 5, 3, 20)
    with torch.no_grad():
        model.audio_mix.weights.copy_(torch.tensor([0.0, 30.0, 0.0]))  # ~all weight on layer 1
    mixed = model.audio_mix(layers.reshape(2, 5, 60))
    expected = torch.nn.functional.layer_norm(layers[:, :, 1], (20,))
    assert torch.allclose(mixed, expected, atol=1e-4)
    # one layer: no weights at all, so one-layer checkpoints keep their state dict
    assert not any("audio_mix" in k for k in build("mersa-xattn").state_dict())
