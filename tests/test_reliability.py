"""Reliability through the command line (docs/reliability.md): every bad input gets a one-line
error naming the file and the cause and a documented exit code, never a traceback, and the other
files of the run still finish; a stopped or killed run loses no finished result; `--resume`
completes it without duplicates; memory does not grow with the length of the input.

Everything runs `python -m mersa_stream` in a subprocess, with the embedded ASR/text models and
the small random fusion checkpoint (`tiny_checkpoint`): emotion labels are never asserted.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from helpers import conversation, encode_pyav, have_espeak, write_wav
from mersa_stream.types import SAMPLE_RATE

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng to make speech")]

SENTENCE = "Please tell me what you think about this idea."
LEAD = 0.8  # seconds of near-silence before the sentence (helpers.conversation)
BOUNDARY = 0.3


def run_cli(*args, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "mersa_stream", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout,
                          env=env, **kwargs)


def assert_clean(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    for line in result.stderr.splitlines():
        assert line.startswith("mersa: "), f"stray stderr line: {line!r}"


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "output ends in a cut line"
    return [json.loads(line) for line in text.splitlines()]


# -- permission denied while running as root ------------------------------------------------

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _drop_file_read_override() -> None:
    """In the child before exec: root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH obeys file
    modes like anyone else, so `chmod 000` really denies the read (not a mock)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def permission_mode() -> tuple[str | None, object]:
    """('user', None): not root, chmod 000 is enough; ('root-without-dac', preexec): root, the
    child drops the capabilities that bypass file modes; (None, reason): cannot be tested."""
    if os.geteuid() != 0:
        return "user", None
    probe = subprocess.run([sys.executable, "-c", "import ctypes, sys; libc = ctypes.CDLL(None); "
                            "sys.exit(libc.prctl(24, 1, 0, 0, 0) != 0 "
                            "or libc.prctl(24, 2, 0, 0, 0) != 0)"])
    if probe.returncode != 0:
        return None, "running as root and cannot drop CAP_DAC_OVERRIDE: chmod 000 does not deny"
    return "root-without-dac", _drop_file_read_override


# -- inputs -----------------------------------------------------------------------------------

def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


# name -> ("error", message) | ("rows", None) | ("no speech", None) | ("finished", None)
# "finished": a valid file whose content is not speech (rows or "no speech found" both fine)
def make_inputs(folder: Path, speech: np.ndarray) -> dict[str, tuple[Path, str, str | None]]:
    rng = np.random.default_rng(0)
    cases: dict[str, tuple[Path, str, str | None]] = {}

    def add(name, kind, message=None):
        cases[name] = (folder / name, kind, message)
        return folder / name

    add("empty.wav", "error", "file is empty (0 bytes)").write_bytes(b"")
    good = write_wav(folder / "for header.wav", speech)
    add("truncated header.wav", "error", "not a readable audio or video file").write_bytes(
        good.read_bytes()[:30])
    good.unlink()
    add("random bytes.wav", "error", "not a readable audio or video file").write_bytes(
        rng.bytes(5000))
    add("notes.txt", "error", "not a readable audio or video file (it is text)").write_text(
        "path,text,label\nclips/a.wav,hello there,happy\n" * 20, encoding="utf-8")
    add("a folder.wav", "error", "no audio or video files").mkdir()  # a folder is searched
    add("missing.wav", "error", "no such file")
    encode_pyav(add("video only.mp4", "error", "has no audio stream"), None, 44100, video=True)
    write_wav(add("locked.wav", "error", "permission denied"), speech).chmod(0)

    write_wav(add("spaces and ünïcödé 音声.wav", "rows"), speech)
    sf.write(str(add("one sample.wav", "no speech")), np.array([0.1], np.float32), SAMPLE_RATE)
    for rate in (8000, 44100, 48000, 96000):
        sf.write(str(add(f"rate {rate}.wav", "rows")),
                 soxr.resample(speech, SAMPLE_RATE, rate), rate, subtype="PCM_16")
    six = np.stack([speech * (0.6 + 0.1 * c) for c in range(6)], axis=1)
    sf.write(str(add("six channels.wav", "rows")), six, SAMPLE_RATE, subtype="PCM_16")
    sf.write(str(add("pcm 24 bit.wav", "rows")), speech, SAMPLE_RATE, subtype="PCM_24")
    sf.write(str(add("float 32 bit.wav", "rows")), speech, SAMPLE_RATE, subtype="FLOAT")
    broken = speech.copy()
    broken[1000:1100] = np.nan
    broken[2000] = np.inf
    broken[2001] = -np.inf
    broken[int((LEAD + 0.5) * SAMPLE_RATE)] = np.nan  # one inside the speech
    sf.write(str(add("nan and inf.wav", "rows")), broken, SAMPLE_RATE, subtype="FLOAT")
    sf.write(str(add("clipped noise.wav", "finished")),
             np.clip(rng.normal(0, 2.0, 3 * SAMPLE_RATE), -1, 1).astype(np.float32), SAMPLE_RATE)
    with sf.SoundFile(str(add("silence 10 min.flac", "no speech")), "w", SAMPLE_RATE, 1,
                      subtype="PCM_16", format="FLAC") as f:
        for _ in range(60):
            f.write(np.zeros(10 * SAMPLE_RATE, np.int16))
    encode_pyav(add("speech.mp3", "rows"), soxr.resample(speech, SAMPLE_RATE, 44100), 44100)
    write_wav(add("good.wav", "rows"), speech)
    return cases


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return conversation([SENTENCE], [], lead=LEAD, noise_db=-45, seed=5).audio


@pytest.fixture(scope="module")
def batch(tmp_path_factory, speech, tiny_checkpoint):
    """One `analyze` run over every bad input, interleaved with good ones."""
    folder = tmp_path_factory.mktemp("inputs")
    cases = make_inputs(folder, speech)
    mode, preexec = permission_mode()
    if mode is None:
        del cases["locked.wav"]
    order = sorted(cases)  # bad and good files interleaved; good.wav is not last by accident
    order.remove("good.wav")
    order.append("good.wav")
    out = folder / "out.jsonl"
    result = run_cli("analyze", *[cases[n][0] for n in order], "--checkpoint", tiny_checkpoint,
                     "-f", "jsonl", "-o", out, cwd=folder,
                     preexec_fn=preexec if mode == "root-without-dac" else None)
    rows = read_jsonl(out)
    return {"cases": cases, "result": result, "rows": rows, "mode": mode,
            "skip_reason": preexec if mode is None else None}


def test_multi_file_run_exit_code_and_no_traceback(batch):
    result = batch["result"]
    assert result.returncode == 3, result.stderr  # some inputs could not be read
    assert_clean(result)
    for line in result.stderr.splitlines():  # each line is about one of the inputs
        assert sum(line.startswith(f"mersa: {p}: ") for p, _, _ in batch["cases"].values()) == 1
    assert batch["rows"][-1]["file"] == str(batch["cases"]["good.wav"][0])  # the last file too


BAD = ["empty.wav", "truncated header.wav", "random bytes.wav", "notes.txt", "a folder.wav",
       "missing.wav", "video only.mp4", "locked.wav"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_one_line_naming_file_and_cause(batch, name):
    if name == "locked.wav" and batch["mode"] is None:
        pytest.skip(batch["skip_reason"])
    path, kind, message = batch["cases"][name]
    assert kind == "error"
    lines = [line for line in batch["result"].stderr.splitlines()
             if line.startswith(f"mersa: {path}: ")]
    assert len(lines) == 1, batch["result"].stderr
    assert message in lines[0]
    assert not any(r["file"] == str(path) for r in batch["rows"])
    # the files after it in the run finished: the good file's row is there
    assert any(r["file"] == str(batch["cases"]["good.wav"][0]) for r in batch["rows"])


GOOD = ["spaces and ünïcödé 音声.wav", "rate 8000.wav", "rate 44100.wav", "rate 48000.wav",
        "rate 96000.wav", "six channels.wav", "pcm 24 bit.wav", "float 32 bit.wav",
        "nan and inf.wav", "speech.mp3", "good.wav"]


@pytest.mark.parametrize("name", GOOD)
def test_unusual_but_valid_input_gives_correct_rows(batch, name):
    path, kind, _ = batch["cases"][name]
    assert kind == "rows"
    rows = [r for r in batch["rows"] if r["file"] == str(path)]
    assert len(rows) == 1, (name, rows, batch["result"].stderr)
    assert rows[0]["index"] == 0
    assert rows[0]["start"] == pytest.approx(LEAD, abs=BOUNDARY)
    assert rows[0]["end"] > rows[0]["start"] + 1.0
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert str(path) not in batch["result"].stderr


@pytest.mark.parametrize("name", ["one sample.wav", "silence 10 min.flac", "clipped noise.wav"])
def test_no_speech_is_said_and_not_an_error(batch, name):
    path, kind, _ = batch["cases"][name]
    rows = [r for r in batch["rows"] if r["file"] == str(path)]
    said = f"mersa: {path}: no speech found" in batch["result"].stderr.splitlines()
    if kind == "no speech":
        assert said and not rows
    else:  # clipped noise may or may not look like speech; either way it is not an error
        assert said != bool(rows)


# -- checkpoints, config, command line ------------------------------------------------------

def _checkpoint_case(folder: Path, tiny: Path, case: str) -> tuple[Path, str]:
    import shutil

    import torch

    target = folder / case
    if case == "pickle file":
        target.mkdir()
        torch.save({"weights": torch.zeros(2)}, target / "model.pt")
        return target, "is a pickle/torch file"
    if case == "pickle path":
        target.mkdir()
        torch.save({"weights": torch.zeros(2)}, target / "model.pth")
        return target / "model.pth", "is a pickle/torch file"
    shutil.copytree(tiny, target)
    if case == "corrupt weights":
        (target / "model.safetensors").write_bytes(np.random.default_rng(1).bytes(4096))
        return target, "weights file is damaged"
    config = json.loads((target / "config.json").read_text())
    if case == "other format version":
        config["format_version"] = 999
        message = "checkpoint format version 999"
    else:  # labels that do not match the model's classes
        config["labels"] = config["labels"][:-1]
        message = "do not match the model"
    (target / "config.json").write_text(json.dumps(config))
    return target, message


@pytest.mark.parametrize("case", ["pickle file", "pickle path", "corrupt weights",
                                  "other format version", "labels mismatch"])
def test_bad_checkpoint_is_refused_with_exit_4(tmp_path, speech, tiny_checkpoint, case):
    checkpoint, message = _checkpoint_case(tmp_path, tiny_checkpoint, case)
    wav = write_wav(tmp_path / "good.wav", speech)
    result = run_cli("analyze", wav, "--checkpoint", checkpoint, "-f", "jsonl", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert_clean(result)
    (line,) = result.stderr.splitlines()
    assert str(checkpoint) in line and message in line
    assert result.stdout == ""


@pytest.mark.parametrize("toml, message", [
    ("[segmenter]\nframe_msec = 30\n", "unknown key 'segmenter.frame_msec'"),
    ("[runtime]\nbatch_size = \"eight\"\n", "runtime.batch_size: expected int, got str"),
    ("[segmenter]\naggressiveness = 7\n", "segmenter.aggressiveness: 7 is out of range [0, 3]"),
])
def test_bad_config_is_one_line_with_exit_2(tmp_path, tiny_checkpoint, toml, message):
    config = tmp_path / "my config.toml"
    config.write_text(toml)
    wav = write_wav(tmp_path / "good.wav", tone(1.0))
    result = run_cli("analyze", wav, "--config", config, "--checkpoint", tiny_checkpoint,
                     cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert_clean(result)
    (line,) = result.stderr.splitlines()
    assert str(config) in line and message in line


def test_command_line_mistakes_are_usage_errors_not_tracebacks(tmp_path):
    for args in (["analyze", "x.wav", "--no-such-flag"], ["analyze", "x.wav", "--batch-size", "x"],
                 ["analyze"], ["no-such-command"],
                 ["analyze", "x.wav", "-f", "csv", "--resume"]):
        result = run_cli(*args, cwd=tmp_path, timeout=120)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)


def test_listen_bad_input_file(tmp_path, tiny_checkpoint):
    path = tmp_path / "random bytes.wav"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    result = run_cli("listen", "--input", path, "--quiet", "--checkpoint", tiny_checkpoint,
                     cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert_clean(result)
    assert f"mersa: {path}: not a readable audio or video file" in result.stderr


def test_manifest_paths_cannot_leave_their_folder(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_wav(tmp_path / "outside.wav", tone(1.0))
    manifest = corpus / "manifest.csv"
    manifest.write_text("path,text,label\n../outside.wav,hello,happy\n")
    result = run_cli("train", "--dataset", "manifest", "--data-dir", manifest,
                     "--out", tmp_path / "model", "--epochs", "1", cwd=tmp_path, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "leaves the manifest's folder" in result.stderr
    assert "--allow-absolute-paths" in result.stderr
    assert not (tmp_path / "model").exists()


# -- nothing lost: SIGTERM, SIGKILL, --resume ---------------------------------------------------

TALK = ["I am really happy that you came to visit us.",
        "The weather was cold and windy all day.",
        "Nobody told me that the meeting was cancelled.",
        "We should take the early train tomorrow."]


@pytest.fixture(scope="module")
def talks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("talks")
    audio = conversation(TALK, [0.9, 0.8, 1.0], noise_db=-40, seed=3).audio
    return folder, [write_wav(folder / f"talk {i}.wav", audio) for i in range(2)]


def start_analyze(folder: Path, files, out: Path, checkpoint: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mersa_stream", "analyze", *map(str, files), "--checkpoint",
         str(checkpoint), "-f", "jsonl", "-o", str(out), "--batch-size", "1", "--resume",
         "--no-pack"],  # one utterance at a time, so that a stop can fall inside a file
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(proc: subprocess.Popen, out: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= n:
            assert proc.poll() is None, "the run finished before it could be stopped"
            return
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    raise AssertionError(f"no {n} lines in {timeout} s")


def check_consistent(records: list[dict]) -> dict[str, dict]:
    """Per file: result indexes 0..n-1, each once, in order; a completion record only after all
    n of them. Returns {file: {"results": [...], "complete": N or None}}."""
    files: dict[str, dict] = {}
    for r in records:
        entry = files.setdefault(r["file"], {"results": [], "complete": None})
        assert entry["complete"] is None, f"a line after {r['file']}'s completion record"
        if r.get("complete") is True:
            entry["complete"] = r["utterances"]
            assert r["utterances"] == len(entry["results"])
        else:
            assert r["index"] == len(entry["results"]), "an index missing or repeated"
            entry["results"].append(r)
    return files


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopped_run_keeps_whole_lines_and_resume_completes_it(talks, tiny_checkpoint, how):
    folder, files = talks
    out = folder / f"out {how}.jsonl"
    out.unlink(missing_ok=True)
    proc = start_analyze(folder, files, out, tiny_checkpoint)
    try:
        # talk 0: 4 results + completion record; then stop inside talk 1 (3 results to go)
        wait_for_lines(proc, out, 6)
        proc.send_signal(getattr(signal, how))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how == "SIGTERM":
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert "mersa: stopped by SIGTERM" in err and "--resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    before = read_jsonl(out)  # every line parses, none is cut
    state = check_consistent(before)
    assert state[str(files[0])]["complete"] == len(TALK)
    assert state[str(files[1])]["complete"] is None and state[str(files[1])]["results"]
    if how == "SIGKILL":  # what a kill in the middle of a write would leave
        with open(out, "a", encoding="utf-8") as handle:
            handle.write('{"file": "%s", "index": 9, "sta' % files[1])

    again = run_cli("analyze", *files, "--checkpoint", tiny_checkpoint, "-f", "jsonl", "-o", out,
                    "--batch-size", "1", "--resume", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert_clean(again)
    assert "resuming: 1 file(s) already complete" in again.stderr
    after = read_jsonl(out)
    final = check_consistent(after)
    assert set(final) == {str(f) for f in files}
    for f in files:
        assert final[str(f)]["complete"] == len(TALK)
    # the finished file was not redone: its lines are exactly the ones written before the stop
    first = [r for r in before if r["file"] == str(files[0])]
    assert [r for r in after if r["file"] == str(files[0])] == first
    # the redone files have the same utterances as the first one
    for f in files[1:]:
        assert [(r["start"], r["end"]) for r in final[str(f)]["results"]] == \
            [(r["start"], r["end"]) for r in first if "index" in r]

    if how == "SIGTERM":
        return
    # everything complete: a third run does nothing and changes nothing
    third = run_cli("analyze", *files, "--checkpoint", tiny_checkpoint, "-f", "jsonl", "-o", out,
                    "--resume", cwd=folder)
    assert third.returncode == 0 and read_jsonl(out) == after


# -- memory does not grow with the length of the input ------------------------------------------

def write_long_flac(path: Path, seconds: float, burst_every: float | None = 30.0) -> Path:
    """Near-silence (with a 2 s warbling tone every `burst_every` s), written 30 s at a time:
    the test never holds the file in memory either."""
    rng = np.random.default_rng(0)
    block = int(30 * SAMPLE_RATE)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    burst = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))
    total = int(seconds * SAMPLE_RATE)
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16", format="FLAC") as f:
        for start in range(0, total, block):
            chunk = rng.normal(0, 1e-4, min(block, total - start))
            if burst_every is not None and start % int(burst_every * SAMPLE_RATE) == 0:
                chunk[:len(burst)] += burst[:len(chunk)]
            f.write(chunk.astype(np.float32))
    return path


def peak_rss_mb(*command: str, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Peak RSS of `command` (RUSAGE_CHILDREN of a fresh wrapper that runs only it)."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
               "capture_output=True, text=True); print(r.returncode); print(r.stdout); "
               "print(r.stderr, file=sys.stderr); "
               "print('peak-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    peak = int(result.stdout.strip().splitlines()[-1].split()[1]) / 1024
    return peak, result


def test_analyze_two_hours_in_bounded_memory(tmp_path, tiny_checkpoint):
    """End to end: `mersa analyze` on 10 minutes and on 2 hours of near-silence (no utterance:
    the recogniser is never needed, so this stays fast): the same peak memory. Also: a file
    without speech alone is no error (exit 0, "no speech found")."""
    short = write_long_flac(tmp_path / "ten minutes.flac", 600, burst_every=None)
    long = write_long_flac(tmp_path / "two hours.flac", 7200, burst_every=None)
    peaks = {}
    for path in (short, long):
        peaks[path.name], result = peak_rss_mb(
            sys.executable, "-m", "mersa_stream", "analyze", str(path), "--checkpoint",
            str(tiny_checkpoint), "-f", "jsonl", cwd=tmp_path)
        assert result.stdout.splitlines()[0] == "0", result.stderr
        assert f"{path}: no speech found" in result.stderr
    assert peaks["two hours.flac"] < peaks["ten minutes.flac"] + 50, peaks
