"""What the emotion side (audio features + text encoder + fusion) adds to `analyze` over its ASR.

The recording is segmented once; then, interleaved and best of `--repeats`, the wall time of the
ASR alone on those utterances (the baseline: `WhisperAsr.transcribe`, batches as `analyze`'s) and
of the whole recognizer (`Recognizer.recognize`: ASR + emotion) for each checkpoint. Prints the
ratio and the recognizer's stage seconds.

    .venv/bin/python benchmarks/emotion_overhead.py --minutes 2
    .venv/bin/python benchmarks/emotion_overhead.py --checkpoint default --checkpoint OLD

Target (issue: trustworthy emotion): the emotion side adds <= 15% over the ASR alone (2-core CPU).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

# as the `mersa` command does (cli.main): torch's and CTranslate2's OpenMP pools must not spin
# while the other runs beside them
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from helpers import write_wav  # noqa: E402
from listen_latency import build_recording  # noqa: E402


def best_wall(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", action="append",
                        help="repeatable (default: the built-in default)")
    args = parser.parse_args()

    from mersa_stream.config import load_config
    from mersa_stream.decode import stream_audio
    from mersa_stream.pipeline import batched, segment
    from mersa_stream.recognizer import Recognizer
    from mersa_stream.segmenter import Segmenter

    audio, _ = build_recording(args.minutes)
    path = write_wav(Path(tempfile.mkdtemp()) / "recording.wav", audio)
    recognizers = {}
    for checkpoint in args.checkpoint or ["default"]:
        config = load_config(ROOT / "config.toml", [f"models.checkpoint={checkpoint}",
                                                    "runtime.device_type=cpu"])
        recognizers[checkpoint] = Recognizer(config)
    utterances = list(segment(stream_audio(path), Segmenter(config.segmenter, str(path))))
    batches = list(batched(utterances, config.runtime.batch_for(False)))
    asr = next(iter(recognizers.values())).asr  # the same ASR settings for every checkpoint
    runs = {"ASR alone": lambda: [asr.transcribe([u.audio for u in b]) for b in batches]}
    for name, recognizer in recognizers.items():
        runs[name] = lambda r=recognizer: [r.recognize(b) for b in batches]
    walls = collections.defaultdict(lambda: float("inf"))
    for _ in range(args.repeats):  # interleaved, so a busy spell touches every run alike
        for name, run in runs.items():
            walls[name] = min(walls[name], best_wall(run, 1))
    base = walls["ASR alone"]
    print(f"{len(utterances)} utterances, {args.minutes:g} min; best of {args.repeats}")
    print(f"  ASR alone: {base:.2f} s")
    for name, recognizer in recognizers.items():
        stages = recognizer.stage_seconds
        print(f"  {name}: {walls[name]:.2f} s, +{walls[name] / base - 1:.1%} over the ASR alone "
              f"(target <= 15%); stage seconds over all runs: "
              + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
