"""Throughput of `analyze` with emotion vs faster-whisper's batched transcription alone.

Both run on the same recording, the same loaded Whisper model and settings (tiny.en int8,
beam 5; batch 8 for faster-whisper, config.toml's for mersa), models loaded before timing.
`analyze` runs in both modes (one window per utterance, the default; `--pack`, utterances packed
into shared 30 s windows); each is run `--repeats` times interleaved and the best wall time kept.
Prints audio seconds per wall second for each and the ratio (the headline).

    .venv/bin/python benchmarks/analyze_throughput.py            # 5-minute recording
    .venv/bin/python benchmarks/analyze_throughput.py --minutes 1 --repeats 1

Target (embedded defaults, 2-core CPU): ratio >= 0.90.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import write_wav  # noqa: E402
from listen_latency import build_recording  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint", default=str(ROOT / "models" / "default"))
    parser.add_argument("--device-type", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="mersa's (default: config.toml's batch_size / pack_batch_size)")
    parser.add_argument("--baseline-batch-size", type=int, default=8,
                        help="faster-whisper BatchedInferencePipeline's (its default: 8)")
    parser.add_argument("--input", help="an existing recording instead of a generated one")
    args = parser.parse_args()

    from faster_whisper import BatchedInferencePipeline

    from mersa_stream.allocator import cap_mmap_threshold
    from mersa_stream.config import load_config
    from mersa_stream.decode import stream_audio
    from mersa_stream.pipeline import recognize_stream
    from mersa_stream.recognizer import Recognizer

    cap_mmap_threshold()  # as the `mersa` command does
    if args.input:
        path = Path(args.input)
    else:
        audio, count = build_recording(args.minutes)
        path = write_wav(Path(tempfile.mkdtemp()) / "recording.wav", audio)
    overrides = [f"models.checkpoint={args.checkpoint}", f"runtime.device_type={args.device_type}"]
    if args.batch_size:
        overrides += [f"runtime.batch_size={args.batch_size}",
                      f"runtime.pack_batch_size={args.batch_size}"]
    config = load_config(ROOT / "config.toml", overrides)
    recognizer = Recognizer(config)
    whisper = recognizer.asr.whisper  # the very same loaded model for the baseline
    batched = BatchedInferencePipeline(whisper)
    import soundfile as sf

    seconds = sf.info(str(path)).duration

    def baseline():
        segments, _ = batched.transcribe(str(path), batch_size=args.baseline_batch_size,
                                         beam_size=config.asr.beam_size)
        return sum(1 for _ in segments)

    def mersa(packed):
        before = collections.Counter(recognizer.stage_seconds)
        results = list(recognize_stream(stream_audio(path), str(path), config.segmenter,
                                        recognizer, config.runtime.batch_for(packed), packed=packed,
                                        pack_gap_s=config.runtime.pack_gap_s))
        return len(results), recognizer.stage_seconds - before

    runs = {"faster-whisper batched (transcript only)": baseline,
            "mersa analyze (default: one window per utterance)": lambda: mersa(False),
            "mersa analyze --pack (shared 30 s windows)": lambda: mersa(True)}
    best = {name: float("inf") for name in runs}
    extra = {}
    baseline()  # warm-up
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            extra[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"recording: {seconds:.1f} s ({path.name}); device {recognizer.device}, "
          f"compute {recognizer.asr.whisper.model.compute_type}, "
          f"batch {config.runtime.batch_size}, "
          f"--pack {config.runtime.pack_batch_size} windows, faster-whisper "
          f"{args.baseline_batch_size}, "
          f"best of {args.repeats}")
    for name, wall in best.items():
        print(f"  {name:45s} {seconds / wall:6.1f}x real time  ({wall:.1f} s)")
    base = best["faster-whisper batched (transcript only)"]
    for name in list(runs)[1:]:
        count, stages = extra[name]
        print(f"ratio {name} / faster-whisper batched: {base / best[name]:.2f} (target >= 0.90); "
              f"{count} utterances; stage seconds: "
              + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
