"""What the emotion side (audio features + text encoder + fusion) adds to `analyze` over its ASR.

Runs `analyze`'s per-utterance path over one recording with the given checkpoint(s) and prints,
per checkpoint, the seconds spent in each recognizer stage and the emotion side's share against
the ASR measured in the same run (the baseline).

    .venv/bin/python benchmarks/emotion_overhead.py --minutes 2
    .venv/bin/python benchmarks/emotion_overhead.py --checkpoint models/default --checkpoint OLD

Target (issue: trustworthy emotion): emotion side <= 15% of the ASR's time on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import write_wav  # noqa: E402
from listen_latency import build_recording  # noqa: E402

EMOTION_STAGES = ("audio_encoder", "text_encoder", "fusion")


def stage_seconds(checkpoint: str, path: Path) -> tuple[int, collections.Counter]:
    from mersa_stream.config import load_config
    from mersa_stream.decode import stream_audio
    from mersa_stream.pipeline import recognize_stream
    from mersa_stream.recognizer import Recognizer

    config = load_config(ROOT / "config.toml", [f"models.checkpoint={checkpoint}",
                                                 "runtime.device_type=cpu"])
    recognizer = Recognizer(config)
    results = list(recognize_stream(stream_audio(path), str(path), config.segmenter, recognizer,
                                    config.runtime.batch_for(False), packed=False,
                                    pack_gap_s=config.runtime.pack_gap_s))
    return len(results), recognizer.stage_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--checkpoint", action="append",
                        help="repeatable (default: models/default)")
    args = parser.parse_args()
    audio, _ = build_recording(args.minutes)
    path = write_wav(Path(tempfile.mkdtemp()) / "recording.wav", audio)
    for checkpoint in args.checkpoint or [str(ROOT / "models" / "default")]:
        count, stages = stage_seconds(checkpoint, path)
        emotion = sum(stages[s] for s in EMOTION_STAGES)
        print(f"{checkpoint}: {count} utterances; asr {stages['asr']:.2f} s; "
              + ", ".join(f"{s} {stages[s]:.2f} s" for s in EMOTION_STAGES)
              + f"; emotion / asr = {emotion / stages['asr']:.3f} (target <= 0.15)")


if __name__ == "__main__":
    main()
