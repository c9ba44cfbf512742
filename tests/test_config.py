import os
import re
import subprocess
import sys

import pytest

from mersa_stream.config import Config, load_config
from mersa_stream.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_shipped_config_equals_defaults_and_documents_every_key(repo):
    assert load_config(repo / "config.toml") == Config()
    lines = (repo / "config.toml").read_text().splitlines()
    import dataclasses

    for section in dataclasses.fields(Config):
        for key in dataclasses.fields(getattr(Config(), section.name)):
            index = next((i for i, line in enumerate(lines)
                          if re.match(rf"{key.name}\s*=", line)), None)
            assert index is not None, f"config.toml lacks {section.name}.{key.name}"
            above = [line for line in lines[:index] if line.strip()]
            assert above[-1].startswith("#") or re.match(r"\w+\s*=", above[-1]), key.name


def test_values_and_overrides(tmp_path):
    path = write(tmp_path, "[segmenter]\naggressiveness = 1\n[runtime]\nbatch_size = 4\n")
    config = load_config(path, ["segmenter.hangover_ms=500", "models.asr=small.en"],
                         {"runtime": {"batch_size": 2}})
    assert config.segmenter.aggressiveness == 1
    assert config.segmenter.hangover_ms == 500
    assert config.models.asr == "small.en"
    assert config.runtime.batch_size == 2  # explicit flags win over the file


@pytest.mark.parametrize("text, message", [
    ("[segmenter]\nloudness = 3\n", "unknown key 'segmenter.loudness'"),
    ("[nonsense]\nx = 1\n", "unknown key 'nonsense'"),
    ("[segmenter]\naggressiveness = \"high\"\n", "segmenter.aggressiveness: expected int"),
    ("[segmenter]\naggressiveness = 7\n", "segmenter.aggressiveness: 7 is out of range [0, 3]"),
    ("[segmenter]\nframe_ms = 25\n", "segmenter.frame_ms: 25 is not one of 10, 20, 30"),
    ("[segmenter]\nmax_utterance_s = 45\n", "out of range"),
    ("[runtime]\ndevice_type = \"tpu\"\n", "runtime.device_type"),
    ("segmenter = 3\n", "expected a [segmenter] table"),
    ("[segmenter\n", "not valid TOML"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in info.value.message
    assert str(path) in info.value.message
    assert "\n" not in info.value.message


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="segmenter.aggressiveness"):
        load_config(None, ["segmenter.aggressiveness=9"])
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        load_config(None, ["segmenter"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_batch_size_flag_sets_what_one_batch_holds():
    """`analyze --batch-size` counts 30 s windows (the default, packing), or utterances with
    --no-pack, however packing was turned off (flag, --set, config file)."""
    from mersa_stream.cli import ConfigFlags

    defaults = Config().runtime
    packed = ConfigFlags().load(batch_size=5).runtime
    assert (packed.batch_size, packed.pack_batch_size) == (defaults.batch_size, 5)
    for single in (ConfigFlags(values={"runtime.pack_windows": False}),
                   ConfigFlags(overrides=("runtime.pack_windows=false",))):
        plain = single.load(batch_size=5).runtime
        assert (plain.batch_size, plain.pack_batch_size) == (5, defaults.pack_batch_size)
    with pytest.raises(ConfigError, match="--batch-size: runtime.pack_batch_size: 100 is out of"):
        ConfigFlags().load(batch_size=100)


def mersa_help(*command: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "mersa_stream", *command, "--help"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_command_is_registered():
    listed = mersa_help()
    for command in ("analyze", "models", "config", "devices", "listen", "train", "experiments",
                    "evaluate"):
        assert re.search(rf"^\W*{command}\s", listed, re.M), command


@pytest.mark.parametrize("command", ["analyze", "listen", "models"])
def test_model_flags_are_shared_and_default_from_the_config_tree(command):
    text = mersa_help(command)
    for flag in ("--config", "--set", "--checkpoint", "--asr", "--text-encoder",
                 "--audio-encoder", "--device-type"):
        assert re.search(rf"{flag}\b", text), flag
    assert f"default: ({Config().models.asr})" in text
    assert "(models.asr)" in text
