"""VGGish encoder: log-mel front end, filterbank, network layout, weights loading."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from mersa_stream.encoders.vggish import VGGish, VGGishEncoder, log_mel_examples, mel_filterbank
from mersa_stream.errors import ModelError

SR = 16000

TORCHVGGISH_KEYS = {
    f"{part}.{i}.{kind}"
    for part, idx in (("features", (0, 3, 6, 8, 11, 13)), ("embeddings", (0, 2, 4)))
    for i in idx
    for kind in ("weight", "bias")
}


def htk_mel(hz):
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(round(seconds * SR)))).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> VGGishEncoder:
    """One random network for the module (72M parameters: build it once).

    Default torch init makes the bias terms dominate the output, so that different inputs
    give nearly equal embeddings; re-initialise with He-normal weights (variance-preserving
    through ReLU) from a private generator so the outputs depend visibly on the input.
    """
    enc = VGGishEncoder(None)
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for module in enc.model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                module.bias.uniform_(-0.05, 0.05, generator=gen)
    return enc


@pytest.fixture(scope="module")
def state_dict(encoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in encoder.model.state_dict().items()}


# ---------------------------------------------------------------------------- log-mel examples


@pytest.mark.parametrize(
    ("samples", "count"),
    # k examples need 96k frames of 400 samples every 160: 400 + (96k - 1) * 160 samples.
    [(32000, 2), (8000, 1), (0, 1), (15360, 1), (15600, 1), (30959, 1), (30960, 2), (46319, 2),
     (46320, 3)],
)
def test_example_count_and_shape(samples, count):
    ex = log_mel_examples(noise(samples / SR, 0))
    assert ex.shape == (count, 96, 64)
    assert ex.dtype == np.float32
    assert np.isfinite(ex).all()


def test_short_audio_is_zero_padded():
    audio = noise(0.5, 1)
    padded = np.concatenate([audio, np.zeros(15600 - len(audio), np.float32)])
    np.testing.assert_allclose(log_mel_examples(audio), log_mel_examples(padded), rtol=0, atol=0)
    # Silence is log(0 + 0.01) everywhere.
    np.testing.assert_allclose(log_mel_examples(np.zeros(100, np.float32)), np.log(0.01), rtol=1e-6)


def test_examples_do_not_overlap():
    audio = noise(2.0, 2)
    ex = log_mel_examples(audio)
    # The second example starts at frame 96, i.e. sample 96 * 160.
    second = log_mel_examples(audio[96 * 160 :])
    np.testing.assert_allclose(ex[1], second[0], rtol=1e-5, atol=1e-5)


def test_sine_peaks_in_nearest_band():
    lo, hi = htk_mel(125.0), htk_mel(7500.0)
    centres = np.linspace(lo, hi, 66)[1:-1]  # 64 triangle centres, equally spaced in mel
    for freq in (1000.0, 440.0, 3000.0):
        t = np.arange(2 * SR) / SR
        ex = log_mel_examples((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
        expected = int(np.argmin(np.abs(centres - htk_mel(freq))))
        assert int(ex.mean(axis=(0, 1)).argmax()) == expected, freq


def test_first_frame_matches_direct_computation():
    audio = noise(1.0, 3).astype(np.float64)
    n = np.arange(400)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 400)  # periodic Hann
    spectrum = np.abs(np.fft.rfft(audio[160 : 160 + 400] * window, 512))  # frame 1
    bin_mel = htk_mel(np.arange(257) * 8000.0 / 256)
    edges = np.linspace(htk_mel(125.0), htk_mel(7500.0), 66)
    expected = np.empty(64)
    for b in range(64):
        total = 0.0
        for k in range(1, 257):  # DC excluded
            left, centre, right = edges[b], edges[b + 1], edges[b + 2]
            m = bin_mel[k]
            if left < m <= centre:
                total += spectrum[k] * (m - left) / (centre - left)
            elif centre < m < right:
                total += spectrum[k] * (right - m) / (right - centre)
        expected[b] = math.log(total + 0.01)
    np.testing.assert_allclose(log_mel_examples(audio)[0, 1], expected, rtol=1e-5, atol=1e-5)


def test_rejects_multichannel():
    with pytest.raises(ValueError):
        log_mel_examples(np.zeros((16000, 2), np.float32))


# ---------------------------------------------------------------------------- filterbank


def test_filterbank_shape_and_bands():
    fb = mel_filterbank()
    assert fb.shape == (64, 257)
    assert (fb >= 0).all()
    assert (fb.max(axis=1) > 0).all()  # no empty band
    assert (fb <= 1.0 + 1e-12).all()
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()  # bands at 125 Hz are narrower than a 31.25 Hz bin
    bin_hz = np.arange(257) * 8000.0 / 256
    peak_hz = (fb * bin_hz).sum(axis=1) / fb.sum(axis=1)  # centre of mass
    assert (np.diff(peak_hz) > 0).all()
    outside = (bin_hz <= 125.0) | (bin_hz >= 7500.0)
    assert (fb[:, outside] == 0).all()
    assert (fb[:, ~outside].sum(axis=0) > 0).all()  # every bin inside the range is covered
    assert np.all(fb[:, 0] == 0)  # DC


# ---------------------------------------------------------------------------- network


def test_state_dict_keys_match_torchvggish(encoder):
    sd = encoder.model.state_dict()
    assert set(sd) == TORCHVGGISH_KEYS
    assert sd["features.0.weight"].shape == (64, 1, 3, 3)
    assert sd["features.13.weight"].shape == (512, 512, 3, 3)
    assert sd["embeddings.0.weight"].shape == (4096, 12288)
    assert sd["embeddings.4.weight"].shape == (128, 4096)


def test_declared_rate_and_size_match_the_output(encoder):
    """The recognizer sizes its audio features by `dim` and `frames_per_second`: they must
    describe what `encode` returns (one embedding per whole 0.96 s example)."""
    seconds = 9.7
    (out,) = encoder.encode([noise(seconds, 5)])
    assert out.shape == (math.floor(seconds * encoder.frames_per_second), encoder.dim)
    assert encoder.dim == 128  # the published VGGish embedding size


def test_encode_shapes_and_dtype(encoder):
    out = encoder.encode([noise(2.0, 10), noise(0.3, 11), noise(3.5, 12)])
    assert [o.shape for o in out] == [(2, 128), (1, 128), (3, 128)]
    assert all(o.dtype == np.float32 for o in out)
    assert all(np.isfinite(o).all() and (o >= 0).all() for o in out)  # final ReLU
    assert encoder.encode([]) == []


def test_batching_matches_single(encoder):
    audios = [noise(2.5, 20), noise(0.7, 21), noise(4.1, 22), noise(1.0, 23)]
    batched = encoder.encode(audios)
    for audio, got in zip(audios, batched):
        (alone,) = encoder.encode([audio])
        np.testing.assert_allclose(got, alone, rtol=1e-4, atol=1e-5)
    # The comparison above is meaningful only if different inputs give different outputs.
    assert np.abs(batched[0][0] - batched[2][0]).max() > 1e-2
    assert np.abs(batched[0][0] - batched[0][1]).max() > 1e-2


def test_flatten_uses_tensorflow_order():
    # fc input index i = (h * 4 + w) * 512 + c, i.e. the (N, H, W, C) layout of TF VGGish.
    with torch.device("meta"):
        model = VGGish()
    model = model.to_empty(device="cpu").eval()  # skip initialising the big fc layers
    h, w = 4, 1
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in model.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.reset_parameters()
        x = torch.from_numpy(log_mel_examples(noise(2.0, 30))).unsqueeze(1)
        feats = model.features(x)
        assert feats.shape == (2, 512, 6, 4)
        c = int(feats[:, :, h, w].min(0).values.argmax())  # a channel active in both examples
        for layer in (model.embeddings[0], model.embeddings[2], model.embeddings[4]):
            layer.weight.zero_()
            layer.bias.zero_()
        model.embeddings[0].weight[0, (h * 4 + w) * 512 + c] = 1.0
        model.embeddings[2].weight[0, 0] = 1.0
        model.embeddings[4].weight[0, 0] = 1.0
        out = model(x)
    assert torch.count_nonzero(feats[:, c, h, w]) > 0
    torch.testing.assert_close(out[:, 0], feats[:, c, h, w])
    assert torch.count_nonzero(out[:, 1:]) == 0


# ---------------------------------------------------------------------------- weights


def test_safetensors_round_trip(encoder, state_dict, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vggish.safetensors"
    save_file(state_dict, str(path))
    loaded = VGGishEncoder(path)
    audios = [noise(2.0, 40), noise(0.4, 41)]
    for a, b in zip(encoder.encode(audios), loaded.encode(audios)):
        np.testing.assert_array_equal(a, b)
    assert set(loaded.model.state_dict()) == TORCHVGGISH_KEYS


def test_pth_round_trip(encoder, state_dict, tmp_path):
    path = tmp_path / "vggish-test.pth"
    torch.save(state_dict, path)
    loaded = VGGishEncoder(str(path))
    audios = [noise(1.5, 50)]
    np.testing.assert_array_equal(encoder.encode(audios)[0], loaded.encode(audios)[0])


def test_pth_with_code_is_refused(tmp_path):
    # weights_only loading must refuse arbitrary pickled objects (nothing gets executed).
    path = tmp_path / "evil.pth"
    marker = tmp_path / "ran"
    torch.save({"x": _Pwn(str(marker))}, path)
    with pytest.raises(ModelError, match="evil.pth"):
        VGGishEncoder(path)
    assert not marker.exists()


class _Pwn:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_random_bytes_raise_model_error(tmp_path):
    for name in ("garbage.safetensors", "garbage.pth"):
        path = tmp_path / name
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        with pytest.raises(ModelError, match=name.replace(".", r"\.")) as info:
            VGGishEncoder(path)
        assert "\n" not in info.value.message


def test_wrong_shape_raises_model_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "wrong-shape.safetensors"
    save_file({k: torch.zeros(2, 3) for k in TORCHVGGISH_KEYS}, str(path))
    with pytest.raises(ModelError, match=r"wrong-shape\.safetensors.*shape"):
        VGGishEncoder(path)


def test_wrong_keys_raise_model_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "prefixed.safetensors"
    save_file({f"module.{k}": torch.zeros(1) for k in TORCHVGGISH_KEYS}, str(path))
    with pytest.raises(ModelError, match=r"prefixed\.safetensors.*missing"):
        VGGishEncoder(path)


def test_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "vggish.onnx"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match=r"vggish\.onnx"):
        VGGishEncoder(path)
    with pytest.raises(ModelError, match=r"absent\.safetensors"):
        VGGishEncoder(tmp_path / "absent.safetensors")
