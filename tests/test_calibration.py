"""Calibration: ECE and its bins, temperature fitting, the reliability diagram, `calibrate` on a
real fusion model, and the temperature reaching evaluation (`predict`, the metrics)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mersa_stream.fusion import FusionConfig, FusionModel
from mersa_stream.train.calibration import (
    calibrate,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    reliability_diagram,
)
from mersa_stream.train.fusion_train import Example, evaluate_examples, predict, predict_logits
from mersa_stream.train.metrics import compute_metrics, format_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def test_ece_of_a_hand_computed_example():
    probs = np.array([[0.95, 0.05],   # conf .95, correct  -> bin 9
                      [0.85, 0.15],   # conf .85, wrong    -> bin 8
                      [0.35, 0.65],   # conf .65, correct  -> bin 6
                      [0.62, 0.38]])  # conf .62, wrong    -> bin 6
    labels = np.array([0, 1, 1, 1])
    # bin 9: |1 - .95| * 1/4 ; bin 8: |0 - .85| * 1/4 ; bin 6: |.5 - .635| * 2/4
    expected = 0.05 / 4 + 0.85 / 4 + 0.135 / 2
    assert expected == pytest.approx(0.2925)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2925, abs=1e-12)
    rb = reliability_bins(probs, labels)
    assert rb.count.tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 1, 1]
    assert rb.accuracy[6] == pytest.approx(0.5) and rb.confidence[6] == pytest.approx(0.635)
    assert np.isnan(rb.accuracy[0]) and np.isnan(rb.confidence[0])
    assert rb.ece() == pytest.approx(0.2925, abs=1e-12)
    # torch inputs, and fewer bins: one bin (0.5, 1] holds all -> |acc .5 - mean conf .7675|
    assert expected_calibration_error(torch.tensor(probs), torch.tensor(labels), bins=2) == \
        pytest.approx(abs(0.5 - (0.95 + 0.85 + 0.65 + 0.62) / 4), abs=1e-12)


def test_ece_zero_when_confidence_equals_accuracy_and_bins_right_closed():
    # a confidence on an edge belongs to the bin below it: (0.3, 0.4] holds 0.4
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.4, 0.3, 0.3], [0.1, 0.1, 0.8]])
    labels = np.array([0, 1, 1, 2])
    rb = reliability_bins(probs, labels)
    assert rb.count.tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 2]  # 0.4 in (0.3, 0.4], 1.0 last
    assert expected_calibration_error(probs[:2], labels[:2]) == 0.0
    assert np.isnan(expected_calibration_error(np.zeros((0, 3)), np.zeros(0, int)))
    with pytest.raises(ValueError):
        expected_calibration_error(probs, np.array([0, 1, 3]))


def synthetic(scale: float, n: int = 6000, classes: int = 4, seed: int = 0):
    """Logits of a model that is calibrated at scale 1: labels are drawn from softmax(logits).
    Scaled by `scale` > 1 the same model is over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.6, size=(n, classes))
    p = softmax(logits)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits * scale, labels


def test_fit_temperature_fixes_an_over_confident_model():
    logits, labels = synthetic(5.0)
    accuracy = float(np.mean(logits.argmax(1) == labels))
    assert 0.5 < accuracy < 0.7, accuracy  # "correct about 60% of the time"
    t = fit_temperature(logits, labels)
    assert 4.0 < t < 6.0, t  # the true answer is 5
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits / t), labels)
    assert before > 0.2 and after < 0.03 and after < before / 5, (before, after)
    assert nll(logits, labels, t) < nll(logits, labels) - 0.5
    # the fitted T is the minimum: both neighbours are worse
    assert nll(logits, labels, t) < min(nll(logits, labels, t * 0.9), nll(logits, labels, t * 1.1))
    # same answer from a torch tensor
    assert fit_temperature(torch.tensor(logits, dtype=torch.float32),
                           torch.tensor(labels)) == pytest.approx(t, rel=1e-3)


def test_fit_temperature_near_one_for_a_calibrated_model_and_bounded():
    logits, labels = synthetic(1.0, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    under, labels = synthetic(0.5, seed=2)  # under-confident: T < 1 sharpens
    assert fit_temperature(under, labels) == pytest.approx(0.5, abs=0.08)
    assert fit_temperature(np.zeros((0, 4)), []) == 1.0
    assert fit_temperature(np.zeros((5, 3)), [0, 1, 2, 0, 1]) == 1.0  # flat: nothing to fit
    separable = np.eye(3)[[0, 1, 2] * 5] * 3.0
    assert fit_temperature(separable, [0, 1, 2] * 5) == pytest.approx(0.05, rel=1e-3)
    assert fit_temperature(np.eye(3)[[0, 1, 2]] * 9.0, [1, 2, 0]) == pytest.approx(20.0)


def test_reliability_diagram_writes_a_png(tmp_path):
    import matplotlib.image

    logits, labels = synthetic(5.0, n=800)
    path = reliability_diagram(softmax(logits), labels, tmp_path / "sub" / "rel.png", "over")
    assert path == tmp_path / "sub" / "rel.png"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 300
    assert image[..., :3].std() > 0.05  # something was drawn
    # empty input still gives a picture (ECE n/a)
    empty = reliability_diagram(np.zeros((0, 4)), [], tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_SIGNATURE


def tiny_model_and_examples(seed: int = 0):
    torch.manual_seed(seed)
    cfg = FusionConfig(architecture="mersa", text_dim=8, audio_dim=6, num_classes=4, hidden=16,
                       heads=2, dropout=0.0, attention_dropout=0.0)
    model = FusionModel.build(cfg).eval()
    with torch.no_grad():  # a sharp head: over-confident on labels it cannot know
        model.head[-1].weight.mul_(12.0)
    rng = np.random.default_rng(seed)
    examples = [Example(rng.normal(size=(int(rng.integers(0, 5)), 8)).astype(np.float32),
                        rng.normal(size=(int(rng.integers(1, 9)), 6)).astype(np.float32),
                        0, f"e{i}") for i in range(300)]
    # labels drawn from softmax(logits / 4): the model is over-confident by a temperature of 4
    truth = softmax(predict_logits(model, examples, 8, 6).astype(np.float64) / 4.0)
    for e, p in zip(examples, truth):
        e.label = int(rng.choice(4, p=p))
    return model, examples


def test_calibrate_changes_confidence_not_the_argmax():
    model, examples = tiny_model_and_examples()
    before = predict(model, examples, 8, 6)
    logits = predict_logits(model, examples, 8, 6)
    assert np.allclose(before, softmax(logits.astype(np.float64)), atol=1e-5)
    config = model.config
    t = calibrate(model, {"a/val": examples[:150], "b/val": examples[150:]}, 8, 6)
    assert 2.5 < t < 6.5, t  # about 4, and not merely at a bound
    assert model.config.temperature == t
    assert replace(model.config, temperature=1.0) == config  # nothing else changed
    after = predict(model, examples, 8, 6)
    assert (after.argmax(1) == before.argmax(1)).all()
    assert (after.max(1) < before.max(1) - 1e-4).all()
    labels = [e.label for e in examples]
    ece_before, ece_after = (expected_calibration_error(p, labels) for p in (before, after))
    assert ece_before > 0.15 and ece_after < ece_before / 2, (ece_before, ece_after)
    # the raw logits did not move; predict matches predict_proba (the run-time path)
    np.testing.assert_allclose(predict_logits(model, examples, 8, 6), logits, rtol=1e-6)
    from mersa_stream.fusion import pad_sequences

    text, tm = pad_sequences([e.text for e in examples[:7]], 8)
    audio, am = pad_sequences([e.audio for e in examples[:7]], 6)
    runtime = model.predict_proba(text, tm, audio, am).numpy()
    np.testing.assert_allclose(runtime, after[:7], atol=1e-5)
    # a list gives the same T as the dict; refitting does not compound the temperature
    assert calibrate(model, examples, 8, 6) == pytest.approx(t)
    # the metrics of a calibrated model carry its (lower) ECE
    m = evaluate_examples(model, examples, ["n", "h", "s", "a"], 8, 6)
    assert m["ece"] == pytest.approx(expected_calibration_error(after, labels))
    assert calibrate(model, [], 8, 6) == 1.0 and model.config.temperature == 1.0


def test_metrics_carry_ece_only_with_probs():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    y = [0, 1, 1]
    m = compute_metrics(y, probs.argmax(1).tolist(), ["x", "y"], probs=probs)
    assert m["ece"] == pytest.approx(expected_calibration_error(probs, y))
    assert "ece " in format_metrics(m)
    plain = compute_metrics(y, probs.argmax(1).tolist(), ["x", "y"])
    assert "ece" not in plain and "ece" not in format_metrics(plain)
    assert np.isnan(compute_metrics([], [], ["x", "y"], probs=np.zeros((0, 2)))["ece"])
