import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from helpers import LABELS, small_checkpoint
from mersa_stream.checkpoint import load_checkpoint, save_checkpoint
from mersa_stream.errors import ModelError


@pytest.mark.parametrize("architecture", ["server", "3m-ser", "mersa", "mersa-xattn"])
def test_round_trip_is_bit_exact(tmp_path, architecture):
    folder = small_checkpoint(tmp_path / "a", architecture=architecture, seed=5)
    first = load_checkpoint(folder)
    second_folder = save_checkpoint(first, tmp_path / "b", card=(folder / "README.md").read_text())
    second = load_checkpoint(second_folder)
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ((folder / "model.safetensors").read_bytes()
            == (second_folder / "model.safetensors").read_bytes())
    assert second.labels == LABELS and second.model.config == first.model.config
    assert second.text_encoder == first.text_encoder and second.audio_encoder == first.audio_encoder
    assert (second_folder / "README.md").read_text().startswith("# test checkpoint")


def test_text_encoder_weights_travel_with_the_checkpoint(tmp_path):
    ckpt = load_checkpoint(small_checkpoint(tmp_path / "a"))
    ckpt.text_encoder_weights = {"encoder.layer.5.output.dense.bias": torch.arange(384.0)}
    folder = save_checkpoint(ckpt, tmp_path / "b", card="# c\n")
    loaded = load_checkpoint(folder)
    assert torch.equal(loaded.text_encoder_weights["encoder.layer.5.output.dense.bias"],
                       torch.arange(384.0))


def test_pickle_is_refused_without_loading(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError, match="pickle"):
        load_checkpoint(bad)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError, match="never unpickled"):
        load_checkpoint(folder)
    assert not marker.exists()


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    folder = small_checkpoint(tmp_path / "v")
    edit_config(folder, format_version=99)
    with pytest.raises(ModelError, match="format version 99 is not supported"):
        load_checkpoint(folder)

    folder = small_checkpoint(tmp_path / "labels")
    edit_config(folder, labels=["calm", "angry"])
    with pytest.raises(ModelError, match="do not match the model's 4 classes"):
        load_checkpoint(folder)

    folder = small_checkpoint(tmp_path / "corrupt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="damaged"):
        load_checkpoint(folder)

    folder = small_checkpoint(tmp_path / "shape")
    state = load_checkpoint(folder).model.state_dict()
    state["head.2.weight"] = torch.zeros(3, 7)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="do not match the config"):
        load_checkpoint(folder)

    with pytest.raises(ModelError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "notjson" / "config.json").write_text("{nope")
    with pytest.raises(ModelError, match="not valid JSON") as info:
        load_checkpoint(tmp_path / "notjson")
    assert "\n" not in info.value.message


def test_shipped_default_is_a_small_calibrated_gated_checkpoint_with_its_card():
    from mersa_stream.checkpoint import checkpoint_folder

    folder = checkpoint_folder("default")  # the built-in name: the copy inside the package
    ckpt = load_checkpoint("default")
    assert ckpt.model_id == "mersa-default" and ckpt.labels == LABELS
    config = ckpt.model.config
    assert (ckpt.audio_encoder.kind, config.audio_layers) == ("whisper-layers", 6)
    # trained on the speech the segmenter finds in each clip, as the runtime classifies it
    assert ckpt.audio_encoder.options == {"speech_only": True}
    assert (config.architecture, ckpt.text_encoder.dim) == ("mersa-gated", 384)
    assert config.temperature != 1.0  # calibrated on held-out speakers
    # the self-align change travels (only the top MiniLM layers), the base encoders do not
    assert ckpt.text_encoder_weights
    assert all(k.startswith(("encoder.layer.4.", "encoder.layer.5."))
               for k in ckpt.text_encoder_weights)
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 25 * 2 ** 20
    assert (folder / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    card = (folder / "README.md").read_text()
    for section in ("## Data", "## Licences", "## Metrics", "## Command", "## Calibration",
                    "## Across speakers", "## Across corpora", "## Flat synthetic voices"):
        assert section in card, section
    assert "--self-align" in card and "--voice-data" in card
    assert "/tmp" not in card + (folder / "config.json").read_text()
