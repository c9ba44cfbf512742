"""Do `analyze` (shared 30 s windows, words by time: the default) and `analyze --no-pack` (one
Whisper window per utterance, as `listen`) give the same texts and labels? Both paths end to end
through `Recognizer`, on RAVDESS test clips (one speaker fold; accuracy too) or on a generated
espeak-ng recording. The audio features are the utterance's own on both paths, so labels differ
only where the texts do.

    .venv/bin/python benchmarks/pack_agreement.py --ravdess ../shared/data/ravdess
    .venv/bin/python benchmarks/pack_agreement.py --minutes 5 --checkpoint default
    .venv/bin/python benchmarks/pack_agreement.py --minutes 5 --commands   # the commands themselves

`--commands`: the same recording through `mersa analyze F` and `mersa listen --input F` (unpaced),
each a process of its own; their final records are compared field by field.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def ravdess_utterances(data_dir: str, fold: int):
    from mersa_stream.decode import load_audio
    from mersa_stream.train.data import load_dataset, make_split
    from mersa_stream.types import Utterance

    records = make_split("ravdess", load_dataset("ravdess", data_dir, "4"), "speaker", fold)["test"]
    utterances, t = [], 0.0
    for i, r in enumerate(records):  # one after another, 1 s apart, as in a recording
        audio = load_audio(r.audio)
        seconds = len(audio) / 16000
        utterances.append(Utterance("ravdess", i, t, t + seconds, audio, t))
        t += seconds + 1.0
    return utterances, [r.label for r in records]


def recording_utterances(minutes: float, config):
    from listen_latency import build_recording
    from mersa_stream.pipeline import segment
    from mersa_stream.segmenter import Segmenter

    audio, _ = build_recording(minutes)
    return list(segment([audio], Segmenter(config.segmenter, "recording"))), None


def compare_commands(minutes: float, checkpoint: str) -> None:
    import json
    import subprocess
    import tempfile

    import soundfile as sf

    from listen_latency import build_recording

    audio, _ = build_recording(minutes)
    mersa = [sys.executable, "-m", "mersa_stream", "--checkpoint", checkpoint]
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "recording.wav"
        sf.write(wav, audio, 16000)
        runs = {name: subprocess.run(mersa[:3] + command + mersa[3:], capture_output=True,
                                     text=True, check=True).stdout
                for name, command in (("analyze", ["analyze", str(wav), "-f", "jsonl"]),
                                      ("listen", ["listen", "--input", str(wav), "--quiet"]))}
    a, b = ([r for r in map(json.loads, runs[name].splitlines()) if r.get("final", True)]
            for name in ("analyze", "listen"))
    print(f"{len(a)} utterances from analyze, {len(b)} from listen --input")
    for field in ("start", "end", "text", "label"):
        same = sum(x[field] == y[field] for x, y in zip(a, b))
        print(f"  {field}: {same}/{len(a)} the same")
    delta = max(abs(x["probabilities"][k] - y["probabilities"][k])
                for x, y in zip(a, b) for k in x["probabilities"])
    print(f"  largest |dp|: {delta:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", help="RAVDESS folder: score its test actors (speaker fold)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=5.0, help="else: espeak-ng recording")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--commands", action="store_true",
                        help="compare `mersa analyze` and `mersa listen --input` end to end")
    args = parser.parse_args()
    if args.commands:
        return compare_commands(args.minutes, args.checkpoint)

    from mersa_stream.config import load_config
    from mersa_stream.packing import pack
    from mersa_stream.pipeline import batched
    from mersa_stream.recognizer import Recognizer

    config = load_config(None, [f"models.checkpoint={args.checkpoint}"])
    recognizer = Recognizer(config)
    utterances, truth = ravdess_utterances(args.ravdess, args.fold) if args.ravdess else \
        recording_utterances(args.minutes, config)
    single = [r for b in batched(utterances, config.runtime.batch_for(False))
              for r in recognizer.recognize(b)]
    windows = pack(utterances, gap_s=config.runtime.pack_gap_s)
    packed = [r for b in batched(windows, config.runtime.batch_for(True))
              for r in recognizer.recognize_windows(b)]
    agree = sum(a.label == b.label for a, b in zip(single, packed))
    same_text = [(a, b) for a, b in zip(single, packed) if a.transcript.text == b.transcript.text]
    print(f"{len(same_text)}/{len(single)} texts agree; of those, "
          f"{sum(a.label == b.label for a, b in same_text)} labels agree")
    delta = np.mean([max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities)
                     for a, b in zip(single, packed)])
    print(f"{recognizer.model_id}: {agree}/{len(single)} labels agree, mean max |dp| {delta:.3f}")
    if truth is not None:
        for name, results in (("per utterance", single), ("windows", packed)):
            accuracy = np.mean([r.label == t for r, t in zip(results, truth)])
            print(f"  accuracy {name}: {accuracy:.3f}")


if __name__ == "__main__":
    main()
