"""The installable package: the built-in model and the config file are found from any folder, and
a wheel built with `python -m build` carries code, model and web page and works where installed."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import have_espeak, speak, trim, write_wav
from mersa_stream.checkpoint import BUILTIN_FOLDER, checkpoint_folder, read_checkpoint
from mersa_stream.config import Config, find_config_file, load_config
from mersa_stream.errors import ModelError
from mersa_stream.types import SAMPLE_RATE

# -- the built-in model and the config lookup (in-process, fast) --


def test_builtin_default_lives_in_the_package_and_the_old_name_still_finds_it(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ folder here
    folder = checkpoint_folder("default")
    assert folder == BUILTIN_FOLDER / "default" and folder.parent.parent.name == "mersa_stream"
    assert read_checkpoint("default").model_id == "mersa-default"
    assert checkpoint_folder("models/default") == folder  # what older scripts pass
    assert Config().models.checkpoint == "default"
    # a real folder of that name, where one exists, is taken as it is
    (tmp_path / "models" / "default").mkdir(parents=True)
    assert checkpoint_folder("models/default") == Path("models/default")
    with pytest.raises(ModelError, match="models/default: no model.safetensors"):
        read_checkpoint("models/default")
    with pytest.raises(ModelError, match="not-here: checkpoint folder not found.*'default'"):
        read_checkpoint("not-here")


def test_config_file_is_the_working_directorys_then_the_users_then_none(tmp_path, monkeypatch):
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert find_config_file() is None and load_config() == Config()
    user = xdg / "mersa" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[asr]\nbeam_size = 2\n")
    assert find_config_file() == user and load_config().asr.beam_size == 2
    (work / "config.toml").write_text("[asr]\nbeam_size = 3\n")
    assert load_config().asr.beam_size == 3  # the working directory's wins
    named = tmp_path / "named.toml"
    named.write_text("[asr]\nbeam_size = 4\n")
    assert load_config(named).asr.beam_size == 4  # --config wins over both
    (work / "config.toml").unlink()
    user.write_text("[asr]\nbeam_size = 0\n")  # the user's file is checked like any other
    with pytest.raises(Exception, match=f"{user}: asr.beam_size"):
        load_config()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert find_config_file() is None  # ~/.config/mersa/config.toml: not there
    home_config = tmp_path / "home" / ".config" / "mersa" / "config.toml"
    home_config.parent.mkdir(parents=True)
    home_config.write_text("[asr]\nbeam_size = 6\n")
    assert load_config().asr.beam_size == 6


# -- the wheel, installed into a fresh venv --

WHEEL_TIMEOUT = 240


@pytest.fixture(scope="module")
def wheel(repo, tmp_path_factory) -> Path:
    """`python -m build` as a user runs it: an sdist, then the wheel built from that sdist (so
    only what the sdist carries reaches the wheel). `--no-isolation`: the build backend
    (setuptools) is this venv's, not downloaded."""
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                          str(repo)], capture_output=True, text=True, timeout=WHEEL_TIMEOUT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (found,) = out.glob("mersa_stream-*.whl")
    return found


def test_wheel_carries_code_model_and_web_page_and_no_top_level_train(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    model = {"model.safetensors", "text_encoder.safetensors", "config.json", "README.md"}
    assert {f"mersa_stream/models/default/{n}" for n in model} <= names
    assert {"mersa_stream/web/index.html", "mersa_stream/api.py", "mersa_stream/py.typed",
            "mersa_stream/train/cli.py"} <= names
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"mersa_stream"}  # the trainer is mersa_stream.train: no top-level `train`
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    assert b"Requires-Python: >=3.11" in metadata  # tomllib


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed by pip (`--no-deps`, from the wheel file only).

    Installing torch, CTranslate2 and the embedded models again would take minutes and a
    network, so the third-party packages come from this project's venv through one `.pth` line
    naming its site-packages. A path line is only appended to sys.path: the .pth files in that
    folder (this checkout's editable install) are not run, so `mersa_stream` can come from the
    wheel alone; the tests check that it does, from a folder with no checkout and no config."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--no-index", "--no-deps", "--no-cache-dir", "--quiet", str(wheel)],
                             capture_output=True, text=True, timeout=WHEEL_TIMEOUT)
    assert install.returncode == 0, install.stderr[-2000:]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], check=True,
                               capture_output=True, text=True).stdout.strip())
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def clean_env(home: Path) -> dict:
    """No checkout on the path, no user config, no hub."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
    return env


@pytest.fixture(scope="module")
def empty_folder(tmp_path_factory) -> Path:
    if not have_espeak():
        pytest.skip("needs espeak-ng")
    folder = tmp_path_factory.mktemp("empty")
    speech = trim(speak("Good morning, I would like to pay my bill today.", speed=130)) * 0.5
    pad = np.zeros(int(0.6 * SAMPLE_RATE), np.float32)
    rng = np.random.default_rng(0)
    audio = np.concatenate([pad, speech, pad])
    write_wav(folder.parent / "speech.wav", audio + rng.normal(0, 0.003, len(audio)).astype(
        np.float32))
    return folder


@pytest.mark.slow
def test_installed_wheel_analyzes_from_an_empty_folder(fresh_venv, empty_folder, repo):
    env, wav = clean_env(empty_folder.parent / "home"), empty_folder.parent / "speech.wav"
    where = subprocess.run([str(fresh_venv / "bin" / "python"), "-c",
                            "import json, sys, mersa_stream; print(json.dumps([mersa_stream."
                            "__file__, sys.path, [repr(f) for f in sys.meta_path]]))"],
                           cwd=empty_folder, env=env, capture_output=True, text=True, check=True)
    module, path, finders = json.loads(where.stdout)
    assert module.startswith(str(fresh_venv))  # the wheel's copy, not the checkout's
    assert not any(p.startswith(str(repo)) for p in path if p != sysconfig.get_paths()["purelib"])
    assert not any("editable" in f.lower() for f in finders)  # the checkout's finder is not run

    cli = subprocess.run([str(fresh_venv / "bin" / "mersa"), "analyze", str(wav), "-f", "jsonl"],
                         cwd=empty_folder, env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    (record,) = [json.loads(line) for line in cli.stdout.splitlines()]
    assert record["model"] == "mersa-default" and "bill" in record["text"].lower()

    api = subprocess.run([str(fresh_venv / "bin" / "python"), "-c", f"""
import json, mersa_stream
results = list(mersa_stream.analyze({str(wav)!r}, beam_size=1))
r = results[0]
print(json.dumps([len(results), r.text, r.label, r.confidence, sorted(r.probabilities),
                  r.start, r.end, r.channel]))
"""], cwd=empty_folder, env=env, capture_output=True, text=True, timeout=300)
    assert api.returncode == 0, api.stderr
    count, text, label, confidence, labels, start, end, channel = json.loads(api.stdout)
    assert count == 1 and "bill" in text.lower() and label in labels
    assert 0 < confidence <= 1 and 0.3 < start < end and channel is None
    assert labels == sorted(["neutral", "happy", "sad", "anger"])
    assert not any(empty_folder.iterdir())  # nothing written where it ran
