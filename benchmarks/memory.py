"""Peak RSS of `mersa analyze` and `mersa listen --input`, and its growth over a long input.

Generates a multi-speaker espeak-ng recording (default 30 minutes), runs each command on it in a
subprocess and samples the child's resident memory (VmRSS) every 0.5 s. Growth = RSS at the end
vs RSS once the first 10% of the run is done (after model loading and warm-up).

    .venv/bin/python benchmarks/memory.py                 # 30-minute input
    .venv/bin/python benchmarks/memory.py --minutes 5
    .venv/bin/python benchmarks/memory.py --only analyze     # the default analyze only

Targets (embedded defaults, 2-core CPU): peak RSS <= 1.0 GB; growth over 30 minutes <= 5%.
"""

from __future__ import annotations

import argparse
import os
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


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def profile(command: list[str]) -> dict:
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    samples: list[tuple[float, float]] = []
    while child.poll() is None:
        value = rss_mb(child.pid)
        if value is not None:
            samples.append((time.perf_counter() - start, value))
        time.sleep(0.5)
    wall = time.perf_counter() - start
    if child.returncode != 0 or not samples:
        raise SystemExit(f"{' '.join(command)} failed: {child.stderr.read().decode()[-500:]}")
    early = next(v for t, v in samples if t >= 0.1 * wall)
    late = samples[-1][1]
    return {"wall": wall, "peak": max(v for _, v in samples), "early": early, "late": late,
            "growth": (late - early) / early}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--input", help="an existing recording instead of a generated one")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override SECTION.KEY=VALUE for every run (repeatable)")
    parser.add_argument("--only", nargs="*", default=[],
                        help="run only these: 'analyze', 'analyze --no-pack', 'listen --input'")
    args = parser.parse_args()
    path = Path(args.input) if args.input else write_wav(
        Path(tempfile.mkdtemp()) / "long.wav", build_recording(args.minutes)[0])
    mersa = [sys.executable, "-m", "mersa_stream"]
    settings = [arg for o in args.overrides for arg in ("--set", o)]
    runs = {
        "analyze": mersa + ["analyze", str(path), "--format", "jsonl", "--output", "/dev/null"],
        "analyze --no-pack": mersa + ["analyze", str(path), "--no-pack", "--format", "jsonl",
                                      "--output", "/dev/null"],
        "listen --input": mersa + ["listen", "--input", str(path), "--quiet"],
    }
    print(f"input: {path.name}, {args.minutes:g} min; load average {os.getloadavg()[0]:.1f}")
    for name, command in runs.items():
        if args.only and name not in args.only:
            continue
        r = profile(command + settings)
        print(f"  {name:15s} peak {r['peak']:7.1f} MB  RSS after 10% {r['early']:7.1f} MB  "
              f"at end {r['late']:7.1f} MB  growth {100 * r['growth']:+.1f}%  "
              f"({r['wall']:.0f} s)")


if __name__ == "__main__":
    main()
