"""benchmarks/flat_voices.py: the class-balanced espeak-ng set and its manifest."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import have_espeak

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")

# (utterance, MELD emotion): three usable sentences per class, plus ones build_set must skip
ROWS = [
    ("I really do not want to talk about this right now.", "neutral"),
    ("The meeting is on Tuesday at the usual place.", "neutral"),
    ("We should probably get going pretty soon.", "neutral"),
    ("This is the best day of my whole life!", "joy"),
    ("Oh wow, I can't believe you got me tickets!", "joy"),
    ("That is wonderful news, congratulations to you both.", "joy"),
    ("I miss her so much since she moved away.", "sadness"),
    ("Nobody came to my birthday party this year.", "sadness"),
    ("I guess it is really over between us then.", "sadness"),
    ("Get out of my apartment right now!", "anger"),
    ("How dare you read my private letters!", "anger"),
    ("I am so sick of you always being late.", "anger"),
    ("Oh no.", "anger"),  # too short (< 3 words)
    (" ".join(["and then"] * 16) + ".", "sadness"),  # too long (> 30 words)
    ("Wait, you did what with my car?", "surprise"),  # not one of the four classes
]


def load_script():
    spec = importlib.util.spec_from_file_location("flat_voices",
                                                  REPO / "benchmarks" / "flat_voices.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_meld(folder: Path) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "dev_sent_emo.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                         "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"])
        for i, (text, emotion) in enumerate(ROWS):
            writer.writerow([i + 1, text, "Ross", emotion, "neutral", i // 3, i % 3, 1, 1,
                             "00:00:01,000", "00:00:02,000"])
    return folder


def test_build_set_balanced_audible_manifest(tmp_path):
    from mersa_stream.train.data import class_counts, load_manifest

    flat = load_script()
    meld = write_meld(tmp_path / "meld")
    out = tmp_path / "set"
    voices = ["en-us", "en-us+f3"]
    manifest = flat.build_set(meld, "dev", 8, voices, out, seed=0, log=lambda *a: None)
    assert manifest == out / "manifest.csv"

    with open(manifest, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "text", "label", "speaker"]
    assert {r["speaker"] for r in rows} == set(voices)  # voices rotate within each class

    flacs = sorted((out / "audio").glob("*.flac"))
    assert len(flacs) == 8
    for path in flacs:
        audio, rate = sf.read(str(path), dtype="float32")
        assert rate == 16000 and audio.ndim == 1
        assert len(audio) > 0.5 * rate
        assert float(np.sqrt(np.mean(audio ** 2))) > 0.01, path.name

    records = load_manifest(manifest)
    assert class_counts(records) == {"anger": 2, "happy": 2, "neutral": 2, "sad": 2}
    truth = {text: {"joy": "happy", "sadness": "sad"}.get(emo, emo) for text, emo in ROWS}
    for r in records:
        assert r.audio is not None and Path(r.audio).is_file()
        assert truth[r.text] == r.label
        assert 3 <= len(r.text.split()) <= 30

    # the same arguments re-use every file; the manifest is the same
    before = {p: p.stat().st_mtime_ns for p in flacs}
    text_before = manifest.read_text()
    flat.build_set(meld, "dev", 8, voices, out, seed=0, log=lambda *a: None)
    assert {p: p.stat().st_mtime_ns for p in flacs} == before
    assert manifest.read_text() == text_before
