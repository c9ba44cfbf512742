"""Calm real voices: what `mersa analyze` says of speech that is not angry, happy or sad.

RAVDESS's "calm" clips and EmoDB's "boredom" clips are real, calm voices outside the four classes
the model knows (neutral is the nearest). A trustworthy model calls most of them neutral and is
never near-certain of anger. The clips come from held-out speakers (RAVDESS actors 1, 6, 11, 16
and EmoDB speakers 03 and 12 are fold 0's test speakers). Runs the real command on the files
and prints the label shares, the mean confidence and how often it says anger at >= 0.9.

    .venv/bin/python benchmarks/calm_voices.py --checkpoint default [--checkpoint OLD]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def calm_clips(actors: list[int], speakers: list[str]) -> list[Path]:
    ravdess = [p for a in actors for p in sorted((DATA / "ravdess" / f"Actor_{a:02d}").glob("*"))
               if p.name.split("-")[2] == "02"]  # RAVDESS emotion 02 = calm
    emodb = [p for s in speakers for p in sorted((DATA / "emodb" / "wav").glob(f"{s}*"))
             if p.stem[5] == "L"]  # EmoDB L = Langeweile (boredom)
    return ravdess + emodb


def analyze(checkpoint: str, clips: list[Path]) -> list[dict]:
    out = Path(tempfile.mkdtemp()) / "calm.jsonl"
    subprocess.run([sys.executable, "-m", "mersa_stream", "analyze", *map(str, clips),
                    "--checkpoint", checkpoint, "-f", "jsonl", "-o", str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    return [r for r in map(json.loads, out.read_text().splitlines()) if "label" in r]


def summary(records: list[dict], corpus: str) -> str:
    mine = [r for r in records if f"/{corpus}/" in r["file"]]
    if not mine:
        return f"{corpus}: no utterances"
    labels = collections.Counter(r["label"] for r in mine)
    sure_anger = sum(r["label"] == "anger" and r["confidence"] >= 0.9 for r in mine)
    mean_conf = sum(r["confidence"] for r in mine) / len(mine)
    shares = ", ".join(f"{k} {v / len(mine):.2f}" for k, v in labels.most_common())
    return (f"{corpus}: {len(mine)} utterances; {shares}; mean confidence {mean_conf:.2f}; "
            f"anger at >= 0.9: {sure_anger}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append",
                        help="repeatable (default: the built-in default)")
    parser.add_argument("--actors", default="1,6,11,16")
    parser.add_argument("--speakers", default="03,12")
    args = parser.parse_args()
    if not (DATA / "ravdess").is_dir():
        sys.exit(f"{DATA}: the shared data is not here")
    clips = calm_clips([int(a) for a in args.actors.split(",")], args.speakers.split(","))
    for checkpoint in args.checkpoint or ["default"]:
        records = analyze(checkpoint, clips)
        print(f"{checkpoint}:")
        for corpus in ("ravdess", "emodb"):
            print("  " + summary(records, corpus))


if __name__ == "__main__":
    main()
