"""The Whisper encoder in PyTorch (emotion features): equal to CTranslate2's, every layer, true
length, and an utterance's features independent of what it is recognized with."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from helpers import speechlike
from mersa_stream.errors import ModelError
from mersa_stream.types import SAMPLE_RATE, Utterance

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_en():
    from mersa_stream.resolve import resolve_asr

    return resolve_asr("tiny.en").path


@pytest.fixture(scope="module")
def encoder(tiny_en):
    from mersa_stream.encoders.whisper_layers import WhisperLayerEncoder

    return WhisperLayerEncoder(tiny_en)


def test_pytorch_encoder_equals_ctranslate2(tiny_en, encoder):
    import ctranslate2
    from faster_whisper.audio import pad_or_trim

    mel = pad_or_trim(encoder.features(speechlike(4.0, 0)))[None].astype(np.float32)
    ct2 = ctranslate2.models.Whisper(str(tiny_en), device="cpu", compute_type="float32")
    reference = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(mel)), np.float32)[0]
    with torch.inference_mode():
        ours = encoder.model(torch.from_numpy(mel))[-1][0].numpy()
    assert ours.shape == reference.shape == (1500, 384)
    assert np.abs(ours - reference).max() < 5e-3, np.abs(ours - reference).max()


def test_every_layer_on_the_true_length(encoder):
    audio = speechlike(2.0, 1)
    (features,) = encoder.encode([audio])
    assert encoder.layers == 6  # embedding, 4 blocks, final LayerNorm
    assert features.shape == (101, 6 * 384)  # 50 frames a second (+1 for the STFT's padding)
    layers = features.reshape(len(features), 6, 384)
    # the layers differ: a mix of them is not the same as any one of them
    assert not np.allclose(layers[:, 2], layers[:, 5], atol=1e-2)
    # true length: appending silence changes nothing but adds frames only if the encoder padded
    (longer,) = encoder.encode([np.concatenate([audio, np.zeros(SAMPLE_RATE, np.float32)])])
    assert longer.shape[0] == 151


def _ct2_file(path, spec: str, variables: list[tuple[str, np.ndarray, int]]):
    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = struct.pack("<I", 6) + string(spec) + struct.pack("<I", 3)
    out += struct.pack("<I", len(variables))
    for name, value, dtype_id in variables:
        out += string(name) + struct.pack("<B", value.ndim)
        out += b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<BI", dtype_id, value.nbytes) + value.tobytes()
    path.write_bytes(out + struct.pack("<I", 0))


def test_reader_takes_only_the_encoder_and_refuses_what_it_cannot_use(tmp_path):
    from mersa_stream.encoders.whisper_layers import read_ct2_variables

    ok = tmp_path / "ok.bin"
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    _ct2_file(ok, "WhisperSpec", [("decoder/x", np.zeros(4, np.float32), 0),
                                  ("encoder/w", weight, 4)])
    variables = read_ct2_variables(ok)
    assert list(variables) == ["encoder/w"]
    np.testing.assert_array_equal(variables["encoder/w"], weight)

    other = tmp_path / "other.bin"
    _ct2_file(other, "TransformerSpec", [])
    with pytest.raises(ModelError, match="not Whisper"):
        read_ct2_variables(other)
    quantized = tmp_path / "int8.bin"
    _ct2_file(quantized, "WhisperSpec", [("encoder/w", np.zeros(4, np.int8), 1)])
    with pytest.raises(ModelError, match="int8"):
        read_ct2_variables(quantized)


def test_features_do_not_depend_on_batch_or_packing(tmp_path):
    from helpers import small_checkpoint
    from mersa_stream.config import Config
    from mersa_stream.packing import pack
    from mersa_stream.recognizer import Recognizer

    ckpt = small_checkpoint(tmp_path / "ckpt", audio_kind="whisper-layers", audio_dim=6 * 384,
                            audio_layers=6)
    from dataclasses import replace

    config = Config()
    config = replace(config, models=replace(config.models, checkpoint=str(ckpt)))
    recognizer = Recognizer(config)
    seen: dict[int, list[np.ndarray]] = {}
    original = recognizer.audio_features

    def spy(utterances, whisper_frames):
        features = original(utterances, whisper_frames)
        for u, f in zip(utterances, features):
            seen.setdefault(u.index, []).append(f)
        return features

    recognizer.audio_features = spy
    clips = [speechlike(1.5, 2), speechlike(2.5, 3), speechlike(1.0, 4)]
    utterances = [Utterance("x", i, 0.0, len(a) / SAMPLE_RATE, a, 0.0)
                  for i, a in enumerate(clips)]
    recognizer.recognize(utterances[:1])
    recognizer.recognize(utterances)
    windows = list(pack(utterances, gap_s=config.runtime.pack_gap_s))
    assert len(windows) == 1  # all three share one Whisper window
    recognizer.recognize_windows(windows)
    first = seen[0]
    assert len(first) == 3
    for other in first[1:]:
        np.testing.assert_array_equal(other, first[0])
    assert first[0].shape[1] == 6 * 384
