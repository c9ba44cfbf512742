"""What the emotion side (audio features + text encoder + fusion) adds to `analyze` over its ASR.

The recording is segmented once; then, interleaved and best of `--repeats`, the wall time of the
ASR alone on those utterances (the baseline: `WhisperAsr.transcribe`, batches as `analyze`'s) and
of the whole recognizer (`Recognizer.recognize`: ASR + emotion) for each checkpoint. Prints the
ratio and the recognizer's stage seconds. With `--variant "SECTION.KEY=VALUE ..."` (repeatable),
also the default checkpoint with those overrides (e.g. runtime.audio_encoder_int8=true); and for
each recognizer with an audio encoder, that encoder alone on every utterance, in its worker thread
as `analyze` runs it (wall and this process's CPU seconds).

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


def timed(run) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU: this process's, all threads."""
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, time.process_time() - start_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", action="append",
                        help="repeatable (default: the built-in default)")
    parser.add_argument("--variant", dest="variants", action="append", default=[],
                        help="also the default checkpoint with these space-separated overrides "
                        "SECTION.KEY=VALUE (repeatable)")
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
    for variant in args.variants:
        recognizers[variant] = Recognizer(load_config(
            ROOT / "config.toml", ["runtime.device_type=cpu"] + variant.split()))
    utterances = list(segment(stream_audio(path), Segmenter(config.segmenter, str(path))))
    batches = list(batched(utterances, config.runtime.batch_for(False)))
    asr = next(iter(recognizers.values())).asr  # the same ASR settings for every checkpoint
    runs = {"ASR alone": lambda: [asr.transcribe([u.audio for u in b]) for b in batches]}
    for name, recognizer in recognizers.items():
        runs[name] = lambda r=recognizer: [r.recognize(b) for b in batches]
    for name, recognizer in recognizers.items():
        if recognizer.audio_encoder is not None:  # as recognize() starts it, in its worker
            runs[f"{name}: audio encoder alone"] = \
                lambda r=recognizer: r._audio_features_ahead(utterances).result()
    walls = collections.defaultdict(lambda: float("inf"))
    cpus = collections.defaultdict(lambda: float("inf"))
    for _ in range(args.repeats):  # interleaved, so a busy spell touches every run alike
        for name, run in runs.items():
            wall, cpu = timed(run)
            walls[name], cpus[name] = min(walls[name], wall), min(cpus[name], cpu)
    base = walls["ASR alone"]
    print(f"{len(utterances)} utterances, {args.minutes:g} min; best of {args.repeats}; load "
          f"average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print(f"  ASR alone: {base:.2f} s ({cpus['ASR alone']:.2f} CPU s)")
    for name, recognizer in recognizers.items():
        stages = recognizer.stage_seconds
        print(f"  {name}: {walls[name]:.2f} s ({cpus[name]:.2f} CPU s), "
              f"+{walls[name] / base - 1:.1%} over the ASR alone (target <= 15%); stage seconds "
              f"over all runs: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    for name in runs:
        if name.endswith("audio encoder alone"):
            print(f"  {name}: {walls[name]:.2f} s ({cpus[name]:.2f} CPU s)")


if __name__ == "__main__":
    main()
