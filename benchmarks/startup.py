"""Start-up: wall time of `mersa` commands in a fresh process, against faster-whisper loading the
same Whisper model in a fresh process (the baseline), measured in the same run, interleaved,
best of `--repeats`.

    .venv/bin/python benchmarks/startup.py --repeats 5
    .venv/bin/python benchmarks/startup.py --repeats 5 --before /tmp/head  # + an older tree

Figures: `mersa --help`, `config`, `devices`, `models`; `analyze` on a 1 s speech clip (espeak-ng,
made here) and on 1 s with no speech; `listen --input` on the speech clip to its first record (the
time the record line reaches stdout). Baselines: `WhisperModel(...)` alone, and with the clip
transcribed. Every command runs with `HF_HUB_OFFLINE=1` and the configuration of the repository
root (the built-in `default` checkpoint, embedded tiny.en and all-MiniLM-L6-v2). Warm disk
cache: one untimed run of each first.

Wall time moves with the load of a shared machine; CPU time (user + system, all threads) much
less: both are printed, best of the repeats each.

Targets (issue 18; 2-core CPU): analyze <= 3.0 s; --help, config, devices <= 0.5 s; models
<= 1.0 s; no speech <= 1.5 s (and no model loaded: tests/test_startup.py checks that).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import SAMPLE_RATE, speak, trim, write_wav  # noqa: E402

MERSA = [sys.executable, "-c", "from mersa_stream.cli import main; main()"]
TARGETS = {"mersa --help": 0.5, "mersa config": 0.5, "mersa devices": 0.5, "mersa models": 1.0,
           "mersa analyze (1 s speech)": 3.0, "mersa analyze (1 s, no speech)": 1.5}


def clips(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    speech = trim(speak("Hello there, how are you?", speed=170)) * 0.5
    speech = speech[:int(0.8 * SAMPLE_RATE)]
    pad = np.zeros(int(0.1 * SAMPLE_RATE), np.float32)
    audio = np.concatenate([pad, speech, pad])
    audio = np.pad(audio, (0, max(0, SAMPLE_RATE - len(audio))))
    noise = rng.normal(0, 10 ** (-50 / 20), SAMPLE_RATE).astype(np.float32)
    return (write_wav(folder / "speech-1s.wav", audio + noise),
            write_wav(folder / "silence-1s.wav", noise))


def timed(command: list[str], env: dict, first_line: bool = False, cwd: Path = ROOT
          ) -> tuple[float, float]:
    """(wall seconds from start to exit, or with `first_line` to the first line on stdout;
    CPU seconds, user + system, of the whole process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begun = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    if first_line:
        line = proc.stdout.readline()
        seconds = time.perf_counter() - begun
        proc.communicate()
        if not line.startswith("{"):
            raise SystemExit(f"no record from {' '.join(command[3:])}: {line!r}")
    else:
        proc.communicate()
        seconds = time.perf_counter() - begun
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoint", type=Path, help="Another checkpoint for `models`, "
                        "`analyze` and `listen` (default: config.toml's, the built-in default)")
    parser.add_argument("--before", type=Path, help="Also time `analyze`, `models` and `--help` "
                        "of another source tree (e.g. `git archive HEAD mersa_stream "
                        "config.toml | tar -x -C DIR`), with this venv, in DIR")
    args = parser.parse_args()

    from mersa_stream.resolve import resolve_asr

    whisper = resolve_asr("tiny.en").path
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        speech, silence = clips(Path(tmp))
        baseline_load = [sys.executable, "-c", "from faster_whisper import WhisperModel; "
                         f"WhisperModel({str(whisper)!r}, device='cpu', compute_type='int8')"]
        baseline_run = [sys.executable, "-c", "from faster_whisper import WhisperModel; "
                        f"m = WhisperModel({str(whisper)!r}, device='cpu', compute_type='int8'); "
                        f"print(' '.join(s.text for s in m.transcribe({str(speech)!r})[0]))"]
        own = ["--checkpoint", str(args.checkpoint.resolve())] if args.checkpoint else []
        runs = {
            "python -c pass (the interpreter alone)": ([sys.executable, "-c", "pass"], False),
            "faster-whisper: load the model (baseline)": (baseline_load, False),
            "faster-whisper: load + transcribe the clip": (baseline_run, False),
            "mersa --help": ([*MERSA, "--help"], False),
            "mersa config": ([*MERSA, "config"], False),
            "mersa devices": ([*MERSA, "devices"], False),
            "mersa models": ([*MERSA, "models", *own], False),
            "mersa analyze (1 s speech)":
                ([*MERSA, "analyze", str(speech), "-f", "jsonl", *own], False),
            "mersa analyze (1 s, no speech)":
                ([*MERSA, "analyze", str(silence), "-f", "jsonl", *own], False),
            "mersa listen --input (1 s speech) to its first record":
                ([*MERSA, "listen", "--input", str(speech), "--quiet", *own], True),
        }
        places = {name: ROOT for name in runs}
        if args.before is not None:
            before_env = {**env, "PYTHONPATH": str(args.before.resolve())}
            checkpoint = own  # none: the other tree's own config.toml and default model
            for name, extra in (("--help", []), ("models", checkpoint),
                                ("analyze (1 s speech)", [str(speech), "-f", "jsonl", *checkpoint]),
                                ("analyze (1 s, no speech)",
                                 [str(silence), "-f", "jsonl", *checkpoint])):
                key = f"before: mersa {name}"
                runs[key] = ([*MERSA, name.split()[0], *extra], False)
                places[key] = args.before.resolve()
        envs = {name: before_env if name.startswith("before:") else env for name in runs}
        for name, (command, first_line) in runs.items():  # warm the disk cache
            timed(command, envs[name], first_line, places[name])
        best = {name: (float("inf"), float("inf")) for name in runs}
        loads = []
        for _ in range(args.repeats):  # interleaved: the load on the machine hits every row
            loads.append(os.getloadavg()[0])
            for name, (command, first_line) in runs.items():
                wall, cpu = timed(command, envs[name], first_line, places[name])
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    base = best["faster-whisper: load the model (baseline)"]
    print(f"best of {args.repeats}, fresh processes, {os.cpu_count()} CPUs, 1-minute load "
          f"average {min(loads):.1f}-{max(loads):.1f} during the run")
    print(f"{'run':<56}{'wall s':>7}{'x base':>7}{'CPU s':>7}{'x base':>7}{'target':>9}")
    for name, (wall, cpu) in best.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"{'<=' if wall <= target else '>'}{target:g} s"
        print(f"{name:<56}{wall:>7.2f}{wall / base[0]:>7.2f}{cpu:>7.2f}{cpu / base[1]:>7.2f}"
              f"{verdict:>9}")


if __name__ == "__main__":
    main()
