"""Throughput of `mersa analyze` over a folder of recordings: 1 and 2 worker processes, and Ray.

Builds an archive of `--files` generated recordings (espeak-ng, random sentences and pauses,
lengths spread around `--minutes`), then times the whole `mersa analyze FOLDER -f jsonl` command
(start-up and model loading included: what a user waits for) in each mode:

  baseline      one process, every core (today's default: analyze.workers=0, cpu_threads=0)
  1x1           one worker of one thread (the per-worker figure docs/scale.md scales from)
  2x1           two worker processes of one thread each (--workers 2)
  ray           a local Ray cluster (`ray start --head`, started once, not timed) with
                one 1-thread actor per core (--ray ADDRESS)

The modes run `--repeats` times, interleaved, and each keeps its best wall time (a shared
machine's load comes and goes). Prints files per minute, audio hours per hour, and the ratio to
the baseline, and checks every mode found the same utterances. For the local modes it also
prints the CPU time the run's processes used (user + system): audio hours per CPU hour does not
depend on what else the machine runs, and is what one core-sized worker does on an idle core.

    .venv/bin/python benchmarks/scale.py                       # 8 files, 0.5 to 1.5 min each
    .venv/bin/python benchmarks/scale.py --files 4 --minutes 0.5 --modes baseline,2x1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import write_wav  # noqa: E402
from listen_latency import build_recording  # noqa: E402
from mersa_stream.types import SAMPLE_RATE  # noqa: E402

MODES = {
    "baseline": ["--workers", "1"],
    "1x1": ["--workers", "1", "--set", "runtime.cpu_threads=1"],
    "2x1": ["--workers", "2", "--set", "runtime.cpu_threads=1"],
    "ray": ["--set", "runtime.cpu_threads=1"],  # + --ray ADDRESS
}


def build_archive(folder: Path, files: int, minutes: float, seed: int) -> float:
    """`files` recordings, 0.5x to 1.5x `minutes` long; their total audio seconds."""
    total = 0.0
    for i in range(files):
        length = minutes * (0.5 + i / max(1, files - 1))
        audio, _ = build_recording(length, seed=seed + i)
        write_wav(folder / f"call-{i:03d}.wav", audio)
        total += len(audio) / SAMPLE_RATE
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ray(cpus: int) -> tuple[subprocess.Popen, str, str]:
    port, temp = free_port(), tempfile.mkdtemp(prefix="ray")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head",
                             "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", str(cpus), "--include-dashboard", "false",
                             "--disable-usage-stats", "--temp-dir", temp, "--block"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    for line in head.stdout:
        if "--block" in line:
            return head, f"127.0.0.1:{port}", temp
    raise SystemExit("ray start --head did not come up")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(folder: Path, args: list[str], out: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, result records) of one `mersa analyze` over the folder. The
    CPU time counts every process the command waited for (its workers; not Ray's actors)."""
    cpu = children_cpu()
    begun = time.perf_counter()
    # a session of its own, as the Ray cluster's processes have: with the kernel's autogroup
    # scheduling, a shared machine's CPU is shared out per session, and every mode competes
    # with the other jobs on equal terms
    done = subprocess.run([sys.executable, "-m", "mersa_stream", "analyze", str(folder),
                           "--format", "jsonl", "--output", str(out), *args],
                          capture_output=True, text=True, start_new_session=True)
    wall, cpu = time.perf_counter() - begun, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"mersa analyze {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return wall, cpu, sum("complete" not in r for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=1.0, help="mean length of a file")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    work = Path(tempfile.mkdtemp(prefix="mersa-scale-"))
    folder = work / "archive"
    folder.mkdir()
    audio = build_archive(folder, args.files, args.minutes, args.seed)
    print(f"{args.files} files, {audio / 60:.1f} min of audio; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    head = temp = None
    try:
        if "ray" in modes:
            head, address, temp = start_ray(os.cpu_count() or 1)
        best: dict[str, float] = {}
        cpu: dict[str, float] = {}
        found: dict[str, int] = {}
        for repeat in range(args.repeats):
            for mode in modes:
                extra = MODES[mode] + (["--ray", address] if mode == "ray" else [])
                wall, used, found[mode] = run(folder, extra, work / f"{mode}.jsonl")
                best[mode] = min(wall, best.get(mode, wall))
                cpu[mode] = min(used, cpu.get(mode, used))
                print(f"  run {repeat + 1} {mode}: {wall:.1f} s, {used:.1f} CPU s (load "
                      f"{os.getloadavg()[0]:.1f})", flush=True)
        for mode in modes:
            wall = best[mode]
            per_cpu = f"  {audio / cpu[mode]:6.2f} audio h per CPU h" if mode != "ray" else ""
            print(f"{mode:9s} {wall:7.1f} s  {args.files / wall * 60:6.2f} files/min  "
                  f"{audio / wall:6.2f} audio h/h{per_cpu}  ({found[mode]} utterances)")
        if "baseline" in best:
            print("throughput vs baseline: " + ", ".join(f"{m} x{best['baseline'] / best[m]:.2f}"
                                                         for m in modes))
        if len(set(found.values())) > 1:
            raise SystemExit("the modes found different numbers of utterances")
    finally:
        if head is not None:
            head.send_signal(signal.SIGTERM)
            head.wait(60)
        import shutil

        for folder in (temp, work):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
