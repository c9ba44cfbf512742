"""Throughput of `analyze` with emotion vs faster-whisper's batched transcription alone.

Both run on the same recording (a generated conversation, benchmarks/conversations.py), the same
loaded Whisper model and settings (tiny.en int8, beam 5; batch 8 for faster-whisper, config.toml's
for mersa), models loaded before timing. Runs, interleaved, `--repeats` times each, best wall time
kept:
- faster-whisper `BatchedInferencePipeline.transcribe` (the baseline);
- `mersa analyze` as shipped (30 s windows of consecutive utterances, words assigned by time);
- the same transcripts without emotion (segmentation, windows, decoding, word assignment only):
  the difference is what the emotion features cost;
- with `--per-utterance`, also `analyze --no-pack` (one Whisper window per utterance).
- with `--variant "SECTION.KEY=VALUE ..."` (repeatable), also `analyze` with those overrides
  (space-separated), on its own Recognizer (e.g. runtime.audio_encoder_int8=true), in the same
  interleaved runs.
Prints audio seconds per wall second for each and the ratio to the baseline (the headline), and
the ratio of the process's CPU seconds (all threads), steadier where other work shares the CPUs.

    .venv/bin/python benchmarks/analyze_throughput.py            # ~5-minute conversation
    .venv/bin/python benchmarks/analyze_throughput.py --sentences 20 --repeats 1

Target (embedded defaults, 2-core CPU): ratio >= 0.90.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

# as the `mersa` command sets it (cli.main), before torch and CTranslate2 start their threads;
# the baseline runs in this same process, under the same setting
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from conversations import make_conversation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=80, help="~3.8 s each with its gap")
    parser.add_argument("--noise-db", type=float, default=-50.0)
    parser.add_argument("--per-utterance", action="store_true",
                        help="also time `analyze --no-pack` (slow)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device-type", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="mersa's (default: config.toml's pack_batch_size / batch_size)")
    parser.add_argument("--baseline-batch-size", type=int, default=8,
                        help="faster-whisper BatchedInferencePipeline's (its default: 8)")
    parser.add_argument("--input", help="an existing recording instead of a generated one")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override SECTION.KEY=VALUE (repeatable)")
    parser.add_argument("--variant", dest="variants", action="append", default=[],
                        help="also time analyze with these space-separated overrides "
                        "SECTION.KEY=VALUE (repeatable)")
    args = parser.parse_args()

    from faster_whisper import BatchedInferencePipeline

    from mersa_stream.allocator import cap_mmap_threshold
    from mersa_stream.config import load_config
    from mersa_stream.decode import stream_audio
    from mersa_stream.packing import assign_words, pack
    from mersa_stream.pipeline import batched as in_batches
    from mersa_stream.pipeline import recognize_stream, segment
    from mersa_stream.recognizer import Recognizer

    cap_mmap_threshold()  # as the `mersa` command does
    if args.input:
        path = Path(args.input)
    else:
        path, _ = make_conversation(Path(tempfile.mkdtemp()), args.sentences,
                                    noise_db=args.noise_db)
    overrides = [f"models.checkpoint={args.checkpoint}", f"runtime.device_type={args.device_type}"]
    if args.batch_size:
        overrides += [f"runtime.batch_size={args.batch_size}",
                      f"runtime.pack_batch_size={args.batch_size}"]
    overrides += args.overrides
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

    def mersa(packed, recognizer=recognizer):
        before = collections.Counter(recognizer.stage_seconds)
        results = list(recognize_stream(stream_audio(path), str(path), config.segmenter,
                                        recognizer, config.runtime.batch_for(packed), packed=packed,
                                        pack_gap_s=config.runtime.pack_gap_s))
        return len(results), recognizer.stage_seconds - before

    def transcripts_only():
        from mersa_stream.segmenter import Segmenter

        utterances = segment(stream_audio(path), Segmenter(config.segmenter, str(path)))
        texts = []
        for windows in in_batches(pack(utterances, gap_s=config.runtime.pack_gap_s),
                                  config.runtime.batch_for(True)):
            for window, decoded in zip(windows, recognizer.asr.decode_windows(
                    [w.audio for w in windows])):
                texts += assign_words(decoded.words, window.placements)
        return len(texts), collections.Counter()

    runs = {"faster-whisper batched (transcript only)": baseline,
            "mersa analyze (default: shared 30 s windows)": lambda: mersa(True),
            "mersa analyze, transcripts only (no emotion)": transcripts_only}
    if args.per_utterance:
        runs["mersa analyze --no-pack (window per utterance)"] = lambda: mersa(False)
    for variant in args.variants:  # the segmenter, packing and batches stay the default's
        other = Recognizer(load_config(ROOT / "config.toml", overrides + variant.split()))
        runs[f"mersa analyze, {variant}"] = lambda other=other: mersa(True, other)
    best = {name: float("inf") for name in runs}
    cpu = {name: float("inf") for name in runs}  # this process's CPU seconds, all threads
    extra = {}
    baseline()  # warm-up
    for _ in range(args.repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            extra[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print(f"recording: {seconds:.1f} s ({path.name}); device {recognizer.device}, "
          f"compute {recognizer.asr.whisper.model.compute_type}, "
          f"batch {config.runtime.pack_batch_size} windows (--no-pack "
          f"{config.runtime.batch_size} utterances), faster-whisper "
          f"{args.baseline_batch_size}, "
          f"best of {args.repeats}")
    for name, wall in best.items():
        print(f"  {name:60s} {seconds / wall:6.1f}x real time  ({wall:.1f} s wall, "
              f"{cpu[name]:.1f} CPU s)")
    first = next(iter(runs))
    for name in list(runs)[1:]:
        count, stages = extra[name]
        print(f"ratio {name} / faster-whisper batched: {best[first] / best[name]:.2f} "
              f"(target >= 0.90; by CPU seconds {cpu[first] / cpu[name]:.2f}); {count} "
              f"utterances; stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
