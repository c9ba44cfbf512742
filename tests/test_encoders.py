"""Hub-only encoders (wav2vec2, bert-base, VGGish) through the runtime's own code path, on tiny
randomly initialised models built from a config here."""


import numpy as np
import pytest
import torch

from helpers import LABELS, small_checkpoint, with_minilm_tokenizer
from mersa_stream.config import Config, ModelsConfig
from mersa_stream.encoders.text import TextEncoder
from mersa_stream.encoders.vggish import VGGish, VGGishEncoder
from mersa_stream.encoders.wav2vec2 import Wav2Vec2Encoder
from mersa_stream.recognizer import Recognizer
from mersa_stream.resolve import resolve_transformers
from mersa_stream.types import SAMPLE_RATE, Utterance


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert") / "tiny-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    return with_minilm_tokenizer(folder)


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("w2v") / "tiny-wav2vec2"
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, conv_dim=(16,) * 7,
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                                 feat_extract_norm="group")).save_pretrained(folder)
    return folder


def test_text_encoder_masks_and_empty_text(tiny_bert):
    encoder = TextEncoder(tiny_bert, max_tokens=16)
    states, mask = encoder.encode(["hello there", "", "a much longer sentence " * 10])
    assert states.shape[0] == 3 and states.shape[2] == 32 and states.shape[1] == 16
    assert mask[0].sum() == 4  # [CLS] hello there [SEP]
    assert not mask[1].any()  # an empty transcript is a missing modality
    assert mask[2].all()  # truncated at max_tokens


def test_wav2vec2_frames_per_second(tiny_wav2vec2):
    encoder = Wav2Vec2Encoder(tiny_wav2vec2)
    rng = np.random.default_rng(0)
    two, half = encoder.encode([rng.normal(0, 0.1, 2 * SAMPLE_RATE).astype(np.float32),
                                rng.normal(0, 0.1, SAMPLE_RATE // 2).astype(np.float32)])
    assert two.shape == (99, 32) and half.shape == (24, 32)  # 20 ms stride, 25 ms receptive field
    assert np.isfinite(two).all()


@pytest.mark.parametrize("audio_kind, encoder_class", [("wav2vec2", Wav2Vec2Encoder),
                                                       ("vggish", VGGishEncoder)])
def test_recognizer_with_hub_style_encoders(tmp_path, tiny_bert, tiny_wav2vec2, audio_kind,
                                            encoder_class):
    if audio_kind == "wav2vec2":
        audio_spec, audio_dim = str(tiny_wav2vec2), 32
    else:
        from safetensors.torch import save_file

        torch.manual_seed(0)
        audio_spec, audio_dim = str(tmp_path / "vggish.safetensors"), 128
        save_file(VGGish().state_dict(), audio_spec)
    folder = small_checkpoint(tmp_path / "ckpt", architecture="mersa-xattn", text_dim=32,
                              audio_dim=audio_dim, audio_kind=audio_kind, audio_spec=audio_spec,
                              text_spec=str(tiny_bert))
    recognizer = Recognizer(Config(models=ModelsConfig(checkpoint=str(folder))))
    assert type(recognizer.audio_encoder) is encoder_class
    rng = np.random.default_rng(1)
    utterances = [Utterance("x", i, 0.0, n / SAMPLE_RATE,
                            rng.normal(0, 0.05, n).astype(np.float32), 0.0)
                  for i, n in enumerate((SAMPLE_RATE, 2 * SAMPLE_RATE))]
    results = recognizer.recognize(utterances)
    assert [r.utterance.index for r in results] == [0, 1]
    for r in results:
        assert r.label in LABELS and sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert r.timings["audio_encoder"] > 0


def test_checkpoint_and_encoder_dimensions_must_agree(tmp_path, tiny_bert):
    from mersa_stream.errors import ModelError

    folder = small_checkpoint(tmp_path / "ckpt", text_dim=48, text_spec=str(tiny_bert))
    with pytest.raises(ModelError, match="expects a 48-d text encoder"):
        Recognizer(Config(models=ModelsConfig(checkpoint=str(folder))))


def _mpnet_available() -> bool:
    from mersa_stream.encoders.mpnet import RELEASE, is_unpacked, models_cache, part_files

    return is_unpacked(models_cache() / "all-mpnet-base-v2", RELEASE) or part_files() is not None


@pytest.mark.slow
@pytest.mark.skipif(not _mpnet_available(), reason="the mpnet extra is not installed")
def test_embedded_mpnet_resolves_and_encodes_in_context():
    """The optional all-mpnet-base-v2 (issue 14): found like MiniLM, read through transformers'
    MPNetModel (relative positions: not the plain BERT of bert.py), 768-d sentence states whose
    mean is what sentence-transformers' mean pooling gives (similar sentences closer)."""
    resolved = resolve_transformers("all-mpnet-base-v2", "text encoder", "--text-encoder")
    assert resolved.origin.startswith("embedded") and (resolved.path / "config.json").is_file()
    encoder = TextEncoder(resolved.path, max_tokens=64, backend="auto")
    assert type(encoder.model).__name__ == "MPNetModel" and encoder.dim == 768
    texts = ["I am so happy today.", "I feel very glad now.", "The train leaves at noon."]
    states, mask = encoder.encode(texts)
    pooled = torch.nn.functional.normalize(
        (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    similar, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert similar > unrelated + 0.2
    in_context, context_mask = encoder.encode(texts, ["B: I lost my job.", "", ""])
    assert context_mask.sum(1).tolist() == mask.sum(1).tolist()  # the current tokens only
    assert not torch.allclose(in_context[0][context_mask[0]], states[0][mask[0]], atol=1e-3)
    torch.testing.assert_close(in_context[1][context_mask[1]], states[1][mask[1]], atol=1e-4,
                               rtol=0)
