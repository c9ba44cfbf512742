"""Flat espeak-ng voices speaking emotional MELD sentences: fused accuracy vs the text branch's.

The check: on such a set the fused model should be at least as accurate as its text branch.

MELD sentences (a class-balanced sample, 3..30 words) are spoken by espeak-ng with its default,
flat prosody, so the voice carries no emotion and the words carry all of it. A model that fuses
well should then score at least its text branch (the audio must not drag it down).

    .venv/bin/python benchmarks/flat_voices.py build --split dev --count 200
    .venv/bin/python benchmarks/flat_voices.py evaluate --split dev --count 200 \\
        --checkpoint default --json flat.json
    .venv/bin/python benchmarks/flat_voices.py voices --voices en-us,en-gb-x-rp   # Whisper WER
    .venv/bin/python benchmarks/flat_voices.py build --split train --count 1200 \\
        --voices en-us+m1,en-us+f2,en,en-us+m5                                 # training material

`build` writes 16 kHz mono FLACs and `manifest.csv` (path,text,label,speaker; speaker = the
espeak-ng voice) to `--out` (default `~/.cache/mersa/flat_voices/<split>-<count>-<seed>`, never
inside the repository); re-running with the same arguments re-uses the files already there.
`evaluate` scores a checkpoint on that manifest three ways (fused, text only, audio only). The text
branch reads the true MELD text (the manifest's text column), not a transcript.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_RATE = 16000
CLASSES = ("neutral", "happy", "sad", "anger")
# the evaluation set's voices, and a disjoint set for training material
DEV_VOICES = ("en-us", "en-us+f3", "en-us+m3", "en-gb-x-rp")
TRAIN_VOICES = ("en-us+m1", "en-us+f2", "en", "en-us+m5")
SPEEDS = (130, 140, 150)  # words per minute, rotated within each voice
MIN_WORDS, MAX_WORDS = 3, 30
CACHE_ROOT = Path.home() / ".cache" / "mersa" / "flat_voices"


def default_out(split: str, count: int, seed: int) -> Path:
    return CACHE_ROOT / f"{split}-{count}-{seed}"


def default_voices(split: str) -> tuple[str, ...]:
    return TRAIN_VOICES if split == "train" else DEV_VOICES


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng (default pitch and pitch range: flat, unemotional) -> 16 kHz mono float32,
    leading and trailing silence trimmed to 0.2 s."""
    import soundfile as sf
    import soxr

    # the text goes in on stdin so that a sentence starting with "-" is not read as an option
    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", "--stdin"],
                         input=text.encode("utf-8"), check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if len(loud):
        pad = int(0.2 * SAMPLE_RATE)
        audio = audio[max(0, loud[0] - pad):loud[-1] + 1 + pad]
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    return audio.astype(np.float32)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def sample_records(records, count: int, seed: int):
    """count // 4 records per class (fewer where a class has fewer), MIN_WORDS..MAX_WORDS words,
    drawn with `seed` from a sorted list (the same records for the same arguments)."""
    per_class = count // len(CLASSES)
    rng = random.Random(seed)
    chosen = {}
    for label in CLASSES:
        pool = sorted((r for r in records if r.label == label
                       and MIN_WORDS <= len(r.text.split()) <= MAX_WORDS
                       and re.search(r"[A-Za-z]", r.text)), key=lambda r: r.id)
        chosen[label] = rng.sample(pool, min(per_class, len(pool)))
    return chosen


def build_set(meld_dir: str | Path, split: str, count: int, voices=None, out_dir=None,
              seed: int = 0, speeds=SPEEDS, log=print) -> Path:
    """Speak a class-balanced MELD sample; returns the manifest's path.

    Within each class the voices rotate (and the speeds rotate per voice), so every class has
    the same mix of voices and speeds: the voice says nothing about the label."""
    import soundfile as sf

    from mersa_stream.train.data import load_meld

    if not have_espeak():
        raise SystemExit("espeak-ng not found (apt-get install espeak-ng)")
    voices = list(voices or default_voices(split))
    speeds = [int(s) for s in speeds]
    out_dir = Path(out_dir) if out_dir else default_out(split, count, seed)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    records = load_meld(meld_dir, "4", splits=[split])
    if not records:
        raise SystemExit(f"{meld_dir}: no MELD {split} records")
    chosen = sample_records(records, count, seed)
    by_class: dict[str, list[tuple[dict, dict]]] = {label: [] for label in CLASSES}
    made = reused = 0
    start = time.perf_counter()
    for label in CLASSES:
        if len(chosen[label]) < count // len(CLASSES):
            log(f"note: only {len(chosen[label])} {label} utterances of {MIN_WORDS}..{MAX_WORDS} "
                f"words in MELD {split}")
        for j, r in enumerate(chosen[label]):
            voice = voices[j % len(voices)]
            speed = speeds[(j // len(voices)) % len(speeds)]
            name = f"{_slug(r.id.split('/', 1)[1])}-{_slug(voice)}-{speed}.flac"
            path = out_dir / "audio" / name
            if path.is_file() and path.stat().st_size > 0:
                reused += 1
            else:
                audio = speak(r.text, voice, speed)
                tmp = path.with_name(path.name + ".tmp")
                sf.write(str(tmp), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
                tmp.replace(path)
                made += 1
            by_class[label].append((
                {"path": f"audio/{name}", "text": r.text, "label": label, "speaker": voice},
                {"id": r.id, "file": f"audio/{name}", "label": label, "voice": voice,
                 "speed": speed, "words": len(r.text.split())}))
    # the classes interleaved, so that any prefix of the manifest is balanced too
    longest = max(len(v) for v in by_class.values())
    pairs = [by_class[c][j] for j in range(longest) for c in CLASSES if j < len(by_class[c])]
    rows, items = [p[0] for p in pairs], [p[1] for p in pairs]
    manifest = out_dir / "manifest.csv"
    tmp = manifest.with_name("manifest.csv.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "text", "label", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(manifest)
    (out_dir / "build.json").write_text(json.dumps({
        "meld_dir": str(Path(meld_dir).resolve()), "split": split, "count": count, "seed": seed,
        "voices": voices, "speeds": speeds, "min_words": MIN_WORDS, "max_words": MAX_WORDS,
        "items": items}, indent=1) + "\n")
    log(f"{len(rows)} utterances ({made} spoken, {reused} re-used) in "
        f"{time.perf_counter() - start:.1f} s -> {manifest}")
    return manifest


# ------------------------------------------------------------------------------------ evaluate

def evaluate_set(checkpoint: str | Path, manifest: Path, cache_dir=None,
                 progress: bool = False) -> dict[str, dict]:
    from mersa_stream.train.evaluate import evaluate_checkpoint

    out = {}
    for name, use_audio, use_text in (("fused", True, True), ("text", False, True),
                                      ("audio", True, False)):
        out[name] = evaluate_checkpoint(checkpoint, "manifest", manifest, split="all",
                                        scheme="random", use_audio=use_audio, use_text=use_text,
                                        cache_dir=cache_dir, progress=progress)
    return out


def format_table(results: dict[str, dict]) -> str:
    columns = [("accuracy", "accuracy"), ("weighted F1", "weighted_f1"),
               ("balanced acc.", "balanced_accuracy")]
    if any("ece" in m for m in results.values()):
        columns.append(("ECE", "ece"))
    lines = ["| model | n | " + " | ".join(c for c, _ in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for name, m in results.items():
        cells = [f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "-" for _, k in columns]
        lines.append(f"| {name} ({m.get('modalities', '')}) | {m.get('count', '')} | "
                     + " | ".join(cells) + " |")
    diff = results["fused"]["accuracy"] - results["text"]["accuracy"]
    lines.append("")
    lines.append(f"fused - text: {diff:+.3f}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- voices

def check_voices(meld_dir, split: str, voices, speeds, sentences: int, seed: int) -> None:
    """Whisper tiny.en word error rate of each voice (and speed) on a few MELD sentences."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import word_error_rate
    from mersa_stream.asr import WhisperAsr
    from mersa_stream.config import AsrConfig
    from mersa_stream.resolve import resolve_asr
    from mersa_stream.train.data import load_meld

    chosen = sample_records(load_meld(meld_dir, "4", splits=[split]), 4 * sentences, seed)
    texts = [r.text for label in CLASSES for r in chosen[label]][:sentences * 4]
    asr = WhisperAsr(resolve_asr("tiny.en"), AsrConfig(), device="cpu", compute_type="int8")
    print(f"| voice | wpm | mean WER ({len(texts)} sentences) | sentences with WER > 0.5 |")
    print("|---|---:|---:|---:|")
    for voice in voices:
        for speed in speeds:
            audios = [speak(t, voice, speed) for t in texts]
            hyps = [o.transcript.text for o in asr.transcribe(audios)]
            wers = [word_error_rate(t, h) for t, h in zip(texts, hyps)]
            print(f"| {voice} | {speed} | {np.mean(wers):.3f} | {sum(w > 0.5 for w in wers)} |",
                  flush=True)


# ---------------------------------------------------------------------------------------- main

def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="step", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--meld-dir", default=str(ROOT.parent / "shared" / "data" / "meld"))
    common.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    common.add_argument("--count", type=int, default=200, help="count // 4 per class")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--voices", type=_list, default=None,
                        help=f"comma-separated espeak-ng voices (default: dev/test "
                             f"{','.join(DEV_VOICES)}; train {','.join(TRAIN_VOICES)})")
    common.add_argument("--speeds", type=lambda v: [int(x) for x in _list(v)],
                        default=list(SPEEDS), help="words per minute, comma-separated")
    common.add_argument("--out", type=Path, default=None,
                        help=f"default {CACHE_ROOT}/<split>-<count>-<seed>")
    sub.add_parser("build", parents=[common], help="speak the sample, write FLACs + manifest.csv")
    ev = sub.add_parser("evaluate", parents=[common],
                        help="fused / text only / audio only on the built set")
    ev.add_argument("--checkpoint", default="default")
    ev.add_argument("--cache-dir", default=None, help="feature cache (default: the trainer's)")
    ev.add_argument("--json", type=Path, default=None, help="write the three metric dicts here")
    ev.add_argument("--build", action="store_true", help="build the set first if it is missing")
    ev.add_argument("--progress", action="store_true")
    vo = sub.add_parser("voices", parents=[common],
                        help="Whisper tiny.en WER per voice and speed (which voices are usable)")
    vo.add_argument("--sentences", type=int, default=5, help="per class")
    args = parser.parse_args(argv)

    out = args.out or default_out(args.split, args.count, args.seed)
    if args.step == "build":
        start = time.perf_counter()
        build_set(args.meld_dir, args.split, args.count, args.voices, out, args.seed, args.speeds)
        print(f"build: {time.perf_counter() - start:.1f} s")
        return 0
    if args.step == "voices":
        check_voices(args.meld_dir, args.split, args.voices or default_voices(args.split),
                     args.speeds, args.sentences, args.seed)
        return 0
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        if not args.build:
            raise SystemExit(f"{manifest} not found: run the build step first (or pass --build)")
        build_set(args.meld_dir, args.split, args.count, args.voices, out, args.seed, args.speeds)
    start = time.perf_counter()
    results = evaluate_set(args.checkpoint, manifest, args.cache_dir, args.progress)
    print(f"{args.checkpoint} on {manifest}\n")
    print(format_table(results))
    print(f"\nevaluate: {time.perf_counter() - start:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
