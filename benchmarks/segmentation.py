"""Segmentation against known sentence boundaries (issue 12): utterance count, boundary error,
utterances made of noise; and noise-only audio, which must give no utterance at all.

Recordings (benchmarks/conversations.py, made in a temporary folder): espeak-ng conversations of
`--sentences` sentences (several voices, punctuation pauses, gaps 0.3-1.5 s) clean and under
white and pink noise, and `--ravdess` real RAVDESS clips back to back with 0.9 s of -54 dBFS white
noise between them (skipped where ../shared/data/ravdess is absent). Noise-only: white, pink and
brown noise at several levels, level steps, mains hum and music-like tones, 10 s each.

Per recording: sentences, utterances, their ratio (target within +-10%), median start/end
boundary error of the utterance overlapping each sentence most (target <= 0.25 s), sentences
split in two or more, utterances holding two or more sentences, and utterances overlapping no
sentence (noise; target 0).

    .venv/bin/python benchmarks/segmentation.py                       # the defaults
    .venv/bin/python benchmarks/segmentation.py --set segmenter.voice_check=none
    .venv/bin/python benchmarks/segmentation.py --sweep merge_gap_ms=0,300,450,600,750,900
    .venv/bin/python benchmarks/segmentation.py --sweep voice_check=silero,none
    .venv/bin/python benchmarks/segmentation.py --sweep turn_split=false,true
    .venv/bin/python benchmarks/segmentation.py --seeds 10,11,12,13 --sweep turn_semitones=4,5,6,7,8
    .venv/bin/python benchmarks/segmentation.py --seeds 10,11,12,13 --ravdess 0 --turn-stats
    .venv/bin/python benchmarks/segmentation.py --energy-gate     # the SNR-gate alternative
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from conversations import (  # noqa: E402
    RAVDESS_DIR,
    SAMPLE_RATE,
    _speech_bounds,
    make_conversation,
    make_ravdess_conversation,
    noise,
)
from mersa_stream.config import SegmenterConfig, load_config  # noqa: E402
from mersa_stream.pipeline import segment  # noqa: E402
from mersa_stream.segmenter import Segmenter  # noqa: E402

BLOCK = SAMPLE_RATE // 10  # 100 ms file blocks, as `analyze` reads


class EnergyGated(Segmenter):
    """The alternative measured against Silero (not shipped): WebRTC AND an SNR gate, the frame's
    level at least `snr_db` above a noise floor that follows a drop at once and a rise at
    `rise_db_per_s` (so that speech does not lift it)."""

    snr_db, rise_db_per_s = 10.0, 3.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._floor = None

    def _is_speech(self, frame: np.ndarray) -> bool:
        level = 10 * np.log10(float(np.mean(frame.astype(np.float64) ** 2)) + 1e-12)
        step = self.rise_db_per_s * self.config.frame_ms / 1000
        self._floor = level if self._floor is None else min(level, self._floor + step)
        return super()._is_speech(frame) and level >= self._floor + self.snr_db


class TurnTested(Segmenter):
    """The shipped segmenter, noting (pause start, pause end, semitones or None) at every pause
    its turn test looks at (`--turn-stats`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tested: list[tuple[float, float, float | None]] = []

    def _register_change(self, cut: int, rest_speech: int) -> float | None:
        change = super()._register_change(cut, rest_speech)
        fs = self.config.frame_ms / 1000
        self.tested.append((cut * fs, rest_speech * fs, change))
        return change


GATES = {"segmenter": Segmenter, "energy": EnergyGated}
GATE = "segmenter"


def utterances(config: SegmenterConfig, audio: np.ndarray) -> list[tuple[float, float]]:
    blocks = (audio[i:i + BLOCK] for i in range(0, len(audio), BLOCK))
    return [(u.start, u.end) for u in segment(blocks, GATES[GATE](config, source="bench"))]


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def score(found: list[tuple[float, float]], truth: list[dict]) -> dict:
    spans = [(s["start"], s["end"]) for s in truth]
    errors = []
    for span in spans:
        best = max(found, key=lambda u: overlap(u, span), default=None)
        if best is not None and overlap(best, span) > 0:
            errors += [abs(best[0] - span[0]), abs(best[1] - span[1])]
        else:
            errors.append(float("inf"))  # missed: counts as an unbounded error
    per_sentence = [sum(overlap(u, s) > 0 for u in found) for s in spans]
    per_utterance = [sum(overlap(u, s) > 0 for s in spans) for u in found]
    return {"sentences": len(spans), "utterances": len(found),
            "ratio": len(found) / max(1, len(spans)),
            "median_boundary_error": float(np.median(errors)) if errors else 0.0,
            "missed": sum(n == 0 for n in per_sentence),
            "split": sum(n > 1 for n in per_sentence),
            "merged": sum(n > 1 for n in per_utterance),
            "noise": sum(n == 0 for n in per_utterance)}


def recordings(folder: Path, n_sentences: int, n_clips: int, seeds: list[int]):
    """(name, audio, truth sentences) of each benchmark recording (no espeak-ng ones with
    `n_sentences` 0)."""
    for seed in seeds if n_sentences else []:
        for noise_db, kind in ((None, "white"), (-45.0, "white"), (-35.0, "pink")):
            wav, truth = make_conversation(folder, n_sentences, seed, noise_db, noise_kind=kind,
                                           name=f"conv-{seed}-{kind}{noise_db}")
            label = f"espeak s{seed} " + ("clean" if noise_db is None else f"{kind} {noise_db:g}")
            yield label, sf.read(str(wav), dtype="float32")[0], truth["sentences"]
        # the recording: every gap 0.9 s
        wav, truth = make_conversation(folder, n_sentences, seed, -50.0, gap_range=(0.9, 0.9),
                                       name=f"conv-{seed}-gap0.9")
        yield f"espeak s{seed} gaps 0.9, white -50", sf.read(str(wav), dtype="float32")[0], \
            truth["sentences"]
    if n_clips:
        try:
            wav, truth = make_ravdess_conversation(folder, n_clips, gap_s=0.9, noise_db=-54.0)
        except FileNotFoundError as exc:
            print(f"(RAVDESS skipped: {exc})")
            return
        yield f"ravdess {n_clips} clips", sf.read(str(wav), dtype="float32")[0], \
            truth["sentences"]


PAIR_KINDS = ("same actor", "same sex", "other sex")


PAIR_GAP_S = 0.3


def ravdess_pairs(n_pairs: int, gap_s: float = PAIR_GAP_S, seed: int = 0):
    """(kind, audio, truth) of two RAVDESS clips (trimmed to their speech) `gap_s` apart, -54
    dBFS white noise in the gap: the same actor twice (any two emotions: the risk of a turn cue),
    two actors of the same sex, of the other sex; `n_pairs` of each kind."""
    with open(RAVDESS_DIR / "metadata.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    for kind in PAIR_KINDS:
        for _ in range(n_pairs):
            a = rows[rng.integers(len(rows))]
            fits = [r for r in rows if r["path"] != a["path"] and {
                "same actor": r["actor"] == a["actor"],
                "same sex": r["actor"] != a["actor"] and r["gender"] == a["gender"],
                "other sex": r["gender"] != a["gender"]}[kind]]
            b = fits[rng.integers(len(fits))]
            parts, truth, t = [np.zeros(int(0.8 * SAMPLE_RATE), np.float32)], [], 0.8
            for k, row in enumerate((a, b)):
                clip, rate = sf.read(str(RAVDESS_DIR / row["path"]), dtype="float32")
                clip = clip.mean(axis=1) if clip.ndim > 1 else clip
                if rate != SAMPLE_RATE:
                    clip = soxr.resample(clip, rate, SAMPLE_RATE).astype(np.float32)
                first, last = _speech_bounds(clip)
                speech = clip[first:last]
                truth.append({"start": t, "end": t + len(speech) / SAMPLE_RATE})
                gap = int((gap_s if k == 0 else 0.8) * SAMPLE_RATE)
                parts += [speech, noise("white", gap, -54.0, rng)]
                t += (len(speech) + gap) / SAMPLE_RATE
            yield kind, np.concatenate(parts).astype(np.float32), truth


def pair_report(config: SegmenterConfig, pairs: list) -> None:
    """Of the RAVDESS pairs that pauses alone leave as one utterance, how many the turn cue cuts
    in two (at the gap: one utterance per clip)."""
    merged_by_pause = dataclasses.replace(config, turn_split=False)
    print(f"RAVDESS pairs ({len(pairs) // len(PAIR_KINDS)} of each kind, "
          f"{PAIR_GAP_S:g} s apart): one utterance by pauses alone -> cut in two at the gap; "
          "pairs with a clip split (pauses alone -> with this config)")
    for kind in PAIR_KINDS:
        merged = cut = split_before = split_after = 0
        for k, audio, truth in pairs:
            if k != kind:
                continue
            before = score(utterances(merged_by_pause, audio), truth)
            after = score(utterances(config, audio), truth)
            split_before += before["split"] > 0
            split_after += after["split"] > 0
            if before["utterances"] == 1:
                merged += 1
                cut += after["utterances"] == 2 and after["merged"] == 0
        print(f"  {kind:<12} {merged:>3} one utterance by pauses alone, {cut:>3} of them cut; "
              f"a clip split: {split_before} -> {split_after}")


def noise_only(seconds: float = 10.0):
    """(name, audio) of noise without any voice."""
    rng = np.random.default_rng(7)
    n = int(seconds * SAMPLE_RATE)
    for kind in ("white", "pink", "brown"):
        for db in (-60.0, -45.0, -30.0, -20.0):
            yield f"{kind} {db:g} dBFS", noise(kind, n, db, rng)
    quiet, loud = noise("white", n, -66.0, rng), noise("white", n, -40.0, rng)
    steps = np.where((np.arange(n) // SAMPLE_RATE) % 2 == 1, loud, quiet)
    yield "white steps -66/-40 dBFS every 1 s", steps.astype(np.float32)
    silent = np.zeros(n, np.float32)
    gaps = np.where((np.arange(n) // int(0.9 * SAMPLE_RATE)) % 3 == 1,
                    noise("white", n, -54.0, rng), silent)
    yield "silence with 0.9 s bursts of -54 dBFS", gaps.astype(np.float32)
    yield "hum 50 Hz -30 dBFS", noise("hum", n, -30.0, rng)
    yield "tones -25 dBFS", noise("tones", n, -25.0, rng)
    yield "tones + pink -35 dBFS", noise("tones", n, -25.0, rng) + noise("pink", n, -35.0, rng)


def pause_kind(pause: tuple[float, float], truth: list[dict]) -> str:
    """"inner": inside a sentence; else a turn, between voices of different or the same sex
    (espeak-ng: "+f" variants are female)."""
    for a, b in zip(truth, truth[1:]):
        if overlap(pause, (a["end"], b["start"])) > 0:
            female = ["+f" in s["voice"] for s in (a, b)]
            return "turn, other sex" if female[0] != female[1] else "turn, same sex"
    return "inner"


def turn_stats(config: SegmenterConfig, recs: list) -> None:
    """The register change (semitones) measured at each pause the turn test looked at, by what
    the pause really is."""
    found: dict[str, list] = {"inner": [], "turn, other sex": [], "turn, same sex": []}
    for name, audio, truth in recs:
        if not name.startswith("espeak"):
            continue
        segmenter = TurnTested(config, source="bench")
        list(segment((audio[i:i + BLOCK] for i in range(0, len(audio), BLOCK)), segmenter))
        for start, end, change in segmenter.tested:
            found[pause_kind((start, end), truth)].append(change)
    print(f"\nturn test at pauses >= {config.turn_gap_ms} ms (semitones; threshold "
          f"{config.turn_semitones:g}):")
    for kind, changes in found.items():
        known = np.array([c for c in changes if c is not None])
        spread = (f"median {np.median(known):.1f}, 90% {np.percentile(known, 90):.1f}, "
                  f"range {known.min():.1f}-{known.max():.1f}, "
                  f"cut {int(np.sum(known >= config.turn_semitones))}") if len(known) else ""
        print(f"  {kind:<16} {len(changes):>4} tested, {len(changes) - len(known):>3} without "
              f"a verdict; {spread}")


def report(config: SegmenterConfig, recs: list, noises: list) -> dict:
    totals = {"noise_only": 0, "noise_in_recordings": 0}
    print(f"{'recording':<34}{'sent':>5}{'utt':>5}{'ratio':>7}{'med err':>9}"
          f"{'miss':>6}{'split':>6}{'merge':>6}{'noise':>6}")
    ratios, errors = [], []
    for name, audio, truth in recs:
        s = score(utterances(config, audio), truth)
        ratios.append(s["ratio"])
        errors.append(s["median_boundary_error"])
        totals["noise_in_recordings"] += s["noise"]
        print(f"{name:<34}{s['sentences']:>5}{s['utterances']:>5}{s['ratio']:>7.2f}"
              f"{s['median_boundary_error']:>9.3f}{s['missed']:>6}{s['split']:>6}"
              f"{s['merged']:>6}{s['noise']:>6}")
    found = {name: len(utterances(config, audio)) for name, audio in noises}
    totals["noise_only"] = sum(found.values())
    print("noise-only audio, utterances: "
          + (", ".join(f"{name}: {n}" for name, n in found.items() if n) or "none"))
    if not ratios:
        return totals
    print(f"=> utterances/sentences {min(ratios):.2f}..{max(ratios):.2f} (target 0.90..1.10); "
          f"median boundary error worst {max(errors):.3f} s (target <= 0.25); "
          f"utterances of noise in recordings {totals['noise_in_recordings']}, "
          f"on noise-only audio {totals['noise_only']} (target 0)")
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=60, help="per espeak-ng recording "
                        "(0: none)")
    parser.add_argument("--ravdess", type=int, default=48, help="RAVDESS clips (0: none)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated conversation seeds")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override, as with mersa")
    parser.add_argument("--sweep", default="", metavar="KEY=V1,V2,...",
                        help="a [segmenter] key and the values to compare")
    parser.add_argument("--no-noise-only", action="store_true")
    parser.add_argument("--ravdess-pairs", type=int, default=0, metavar="N",
                        help="also: N pairs of RAVDESS clips 0.3 s apart of each kind (same "
                             "actor, two actors of the same / the other sex)")
    parser.add_argument("--turn-stats", action="store_true",
                        help="also: the register change at each pause the turn test looked at, "
                             "by kind (inside a sentence, a turn between voices of either sex)")
    parser.add_argument("--energy-gate", action="store_true",
                        help="measure the SNR gate instead (with voice_check none: WebRTC AND "
                             "energy >= floor + 10 dB)")
    args = parser.parse_args()
    global GATE
    if args.energy_gate:
        GATE = "energy"
        args.set.append("segmenter.voice_check=none")
    config = load_config(overrides=args.set).segmenter
    with tempfile.TemporaryDirectory() as folder:
        recs = list(recordings(Path(folder), args.sentences, args.ravdess,
                               [int(s) for s in args.seeds.split(",")]))
    noises = [] if args.no_noise_only else list(noise_only())
    pairs = list(ravdess_pairs(args.ravdess_pairs)) if args.ravdess_pairs else []

    def run(segmenter: SegmenterConfig) -> None:
        report(segmenter, recs, noises)
        if args.turn_stats:
            turn_stats(segmenter, recs)
        if pairs:
            pair_report(segmenter, pairs)

    if not args.sweep:
        print(f"[segmenter] {dataclasses.asdict(config)}")
        return run(config)
    key, values = args.sweep.split("=", 1)
    for raw in values.split(","):
        # parsed and checked as `--set` is (a TOML value: true/false, numbers)
        swept = load_config(overrides=[*args.set, f"segmenter.{key}={raw}"]).segmenter
        print(f"\n--- segmenter.{key} = {getattr(swept, key)}")
        run(swept)


if __name__ == "__main__":
    main()
