"""The Python API: `mersa_stream.analyze`, `Recognizer.from_config`, `Stream`, `EmotionResult`."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mersa_stream
from helpers import conversation, have_espeak, word_error_rate, write_wav
from mersa_stream.api import config_key, settings
from mersa_stream.errors import ConfigError, InputError, ModelError
from mersa_stream.types import SAMPLE_RATE

SENTENCES = ["I am really happy that you came to visit us this weekend.",
             "We should take the early train tomorrow morning."]


def test_import_is_cheap_and_each_name_loads_when_used():
    code = """
import sys, mersa_stream
heavy = [m for m in ("numpy", "torch", "ctranslate2", "typer") if m in sys.modules]
assert not heavy, heavy
from mersa_stream import analyze, Recognizer, Stream, EmotionResult, InputError
from mersa_stream.stream import Stream as Own
assert Stream is Own and analyze.__module__ == "mersa_stream.api"
assert "torch" not in sys.modules  # the models load when first needed, not on import
assert {"analyze", "Recognizer", "Stream", "EmotionResult"} <= set(dir(mersa_stream))
try:
    mersa_stream.nothing_here
except AttributeError as exc:
    assert "nothing_here" in str(exc)
else:
    raise SystemExit("no AttributeError")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_import_makes_idle_openmp_workers_sleep_unless_told_otherwise():
    """torch's and CTranslate2's OpenMP teams must not spin beside each other (the API too)."""
    code = "import os, mersa_stream; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for own, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, env=env if own is None else {**env,
                                                                       "OMP_WAIT_POLICY": own})
        assert run.stdout.strip() == expected, run.stderr


def test_options_are_the_config_trees_keys(tmp_path):
    assert config_key("beam_size") == "asr.beam_size"
    assert config_key("batch_size") == "runtime.batch_size"  # not serve's or train's
    assert config_key("asr__beam_size") == config_key("asr.beam_size") == "asr.beam_size"
    config = settings(beam_size=1, channels="split", checkpoint=tmp_path / "ckpt",
                      **{"segmenter.hangover_ms": 300}, train__lr=0.5)
    assert (config.asr.beam_size, config.analyze.channels, config.segmenter.hangover_ms,
            config.train.lr) == (1, "split", 300, 0.5)
    assert config.models.checkpoint == str(tmp_path / "ckpt")  # a Path is taken as its text
    with pytest.raises(ConfigError, match="'beem_size': no such setting"):
        settings(beem_size=1)
    with pytest.raises(ConfigError, match="'lr': give its section: train__lr"):
        settings(lr=0.1)
    with pytest.raises(ConfigError, match="no such setting 'asr.nope'"):
        settings(asr__nope=1)
    with pytest.raises(ConfigError, match="options: asr.beam_size: 0 is out of range"):
        settings(beam_size=0)
    with pytest.raises(ConfigError, match="analyze.channels: 'left' is not one of mix, split"):
        settings(channels="left")
    # a config file underneath, then the options over it
    path = tmp_path / "mine.toml"
    path.write_text("[asr]\nbeam_size = 3\nlanguage = \"de\"\n")
    mine = settings(path, beam_size=2)
    assert (mine.asr.beam_size, mine.asr.language) == (2, "de")


def test_models_are_checked_when_the_recognizer_is_made(tmp_path):
    with pytest.raises(ModelError, match="checkpoint folder not found"):
        mersa_stream.analyze(tmp_path / "x.wav", checkpoint=tmp_path / "missing")


@pytest.fixture(scope="module")
def talk_file(tmp_path_factory):
    if not have_espeak():
        pytest.skip("needs espeak-ng")
    talk = conversation(SENTENCES, [1.0], noise_db=-45, seed=2)
    return talk, write_wav(tmp_path_factory.mktemp("api") / "talk.wav", talk.audio)


@pytest.fixture(scope="module")
def recognizer(tiny_checkpoint):
    return mersa_stream.Recognizer.from_config(checkpoint=tiny_checkpoint)


@pytest.mark.slow
def test_recognizer_analyzes_files_and_streams_alike(talk_file, recognizer, tmp_path):
    talk, wav = talk_file
    results = list(recognizer.analyze([wav, str(wav)]))  # Path or str, one file or several
    assert len(results) == 2 * len(SENTENCES)
    for r, sentence, (start, end) in zip(results, SENTENCES * 2, talk.spans * 2):
        assert isinstance(r, mersa_stream.EmotionResult)
        assert r.start == pytest.approx(start, abs=0.2) and r.end == pytest.approx(end, abs=0.3)
        assert word_error_rate(sentence, r.text) <= 0.35, r.text
        assert r.label in r.probabilities and r.confidence == max(r.probabilities.values())
        assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert r.channel is None and r.speaker is None
        assert r.to_record()["file"] == str(wav)
    # a two-channel copy, split: the same words, each on its channel
    stereo = np.zeros((len(talk.audio), 2), np.float32)
    first_end = int((talk.spans[0][1] + 0.4) * SAMPLE_RATE)
    stereo[:first_end, 1] = talk.audio[:first_end]
    stereo[first_end:, 0] = talk.audio[first_end:]
    two = write_wav(tmp_path / "two.wav", stereo)
    split = list(recognizer.analyze(two, channels="split"))
    assert [(r.channel, r.speaker) for r in split] == [(1, "channel 1"), (0, "channel 0")]
    assert [r.text for r in split] == [r.text for r in results[:2]]
    assert [r.to_record()["channel"] for r in split] == [1, 0]
    # the streaming object on the same models: int16 pushed in uneven pieces, same utterances
    pcm = (talk.audio * 32767).astype(np.int16)
    streamed = []
    with recognizer.stream() as stream:
        for i in range(0, len(pcm), 1234):
            streamed += stream.push(pcm[i:i + 1234])
        streamed += stream.flush()
    assert [r.start for r in streamed] == pytest.approx([r.start for r in results[:2]], abs=0.05)
    for r, sentence in zip(streamed, SENTENCES):
        assert word_error_rate(sentence, r.text) <= 0.35, r.text
    with pytest.raises(InputError, match="no such file"):
        list(recognizer.analyze(Path(tmp_path) / "gone.wav"))
