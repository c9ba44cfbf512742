"""The whisper-layers audio encoder with int8 Linear layers (runtime.audio_encoder_int8): features
close to the float32 ones as the fusion model reads them, still each utterance's own, and the
setting reaching the recognizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import speechlike

pytestmark = pytest.mark.slow

LAYERS, WIDTH = 6, 384  # tiny.en: embedding, 4 blocks, final LayerNorm; 384-d each
# Relative error of the layer-normed features (what LayerMix weighs), per layer and clip: 0.06-0.14
# on generated audio and 0.06-0.09 on RAVDESS clips with per-channel int8 weights; float32 gives 0.
# A bound of 0.2 fails if the quantization goes wrong (per-tensor activations of the wrong
# module, the float model left in place) without failing on its known error.
MAX_RELATIVE_ERROR = 0.2


@pytest.fixture(scope="module")
def tiny_en():
    from mersa_stream.resolve import resolve_asr

    return resolve_asr("tiny.en").path


@pytest.fixture(scope="module")
def encoders(tiny_en):
    from mersa_stream.encoders.whisper_layers import WhisperLayerEncoder

    quantized = WhisperLayerEncoder(tiny_en)
    quantized.quantize()
    return WhisperLayerEncoder(tiny_en), quantized


def layer_normed(features: np.ndarray) -> np.ndarray:
    per_layer = torch.from_numpy(features).view(len(features), LAYERS, WIDTH)
    return F.layer_norm(per_layer, (WIDTH,)).numpy()


def relative_error(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per layer: mean frame error norm / mean frame norm, both layer-normed."""
    a, b = layer_normed(reference), layer_normed(other)
    return np.linalg.norm(a - b, axis=-1).mean(0) / np.linalg.norm(a, axis=-1).mean(0)


def test_only_the_linear_layers_are_int8(encoders):
    float_encoder, int8_encoder = encoders
    assert not float_encoder.int8 and int8_encoder.int8
    kinds = {type(m).__module__ + "." + type(m).__name__ for m in int8_encoder.model.modules()}
    assert "torch.nn.modules.linear.Linear" not in kinds
    assert any("quantized" in k and k.endswith("Linear") for k in kinds)
    assert isinstance(int8_encoder.model.conv1, torch.nn.Conv1d)
    assert int8_encoder.model.conv1.weight.dtype == torch.float32
    assert int8_encoder.dim == float_encoder.dim == LAYERS * WIDTH


def test_int8_features_are_close_to_float(encoders):
    float_encoder, int8_encoder = encoders
    audios = [speechlike(seconds, seed) for seed, seconds in enumerate((1.5, 3.0, 6.0))]
    for reference, quantized in zip(float_encoder.encode(audios), int8_encoder.encode(audios)):
        assert quantized.shape == reference.shape
        error = relative_error(reference, quantized)
        assert error[0] == 0.0  # the embedding (convolutions) stays float32
        assert 0.0 < error[1:].min() and error.max() < MAX_RELATIVE_ERROR, error


def test_int8_features_are_each_utterances_own(encoders):
    """Activations are quantized per call on one utterance: its features do not depend on what
    else is in the batch."""
    _, int8_encoder = encoders
    quiet, loud = speechlike(2.0, 7), 8 * speechlike(3.0, 8)
    alone = int8_encoder.encode([quiet])[0]
    together = int8_encoder.encode([loud, quiet])[1]
    np.testing.assert_array_equal(alone, together)


def test_the_recognizer_quantizes_only_when_asked(tmp_path):
    from helpers import small_checkpoint
    from mersa_stream.config import Config, ModelsConfig, RuntimeConfig
    from mersa_stream.recognizer import Recognizer

    folder = small_checkpoint(tmp_path / "layers", audio_kind="whisper-layers",
                              audio_dim=LAYERS * WIDTH, audio_layers=LAYERS)
    runtime = RuntimeConfig(device_type="cpu", audio_encoder_int8=True)
    recognizer = Recognizer(Config(models=ModelsConfig(checkpoint=str(folder)), runtime=runtime))
    assert recognizer.audio_encoder.int8
    floats = RuntimeConfig(device_type="cpu", audio_encoder_int8=False)
    plain = Recognizer(Config(models=ModelsConfig(checkpoint=str(folder)), runtime=floats))
    assert not plain.audio_encoder.int8
