"""Trainer data: each loader on a tiny fixture in the corpus's real layout, label maps, splits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from mersa_stream.errors import ConfigError, InputError
from mersa_stream.train.data import (
    LABELS_4,
    LABELS_6_IEMOCAP,
    class_counts,
    detect_dataset,
    labels_for,
    load_corpora,
    load_dataset,
    load_emodb,
    load_iemocap,
    load_manifest,
    load_meld,
    load_ravdess,
    make_split,
    random_split,
    speaker_folds,
    speaker_split,
)


def touch_wav(path: Path, seconds: float = 0.1) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(16000 * seconds), np.float32), 16000, format="WAV")
    return path


# ------------------------------------------------------------------------------ fixtures

MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]


def make_meld(root: Path, with_test: bool = True) -> Path:
    rows = {
        "train": [("I can\x92t believe it!\nReally.", "joy", 0, 0), ("Okay.", "neutral", 0, 1),
                  ("Why me?", "sadness", 1, 0), ("Get out!", "anger", 1, 1),
                  ("Whoa!", "surprise", 2, 0), ("Eww.", "disgust", 2, 1)],
        "dev": [("Fine.", "neutral", 0, 0), ("Yay!", "joy", 0, 1), ("Boo.", "fear", 1, 0)],
        "test": [("No way.", "anger", 0, 0), ("Sure.", "neutral", 0, 1)],
    }
    names = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
    root.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        if split == "test" and not with_test:
            continue
        with open(root / names[split], "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(MELD_COLUMNS)
            for i, (text, emo, dia, utt) in enumerate(items, 1):
                w.writerow([i, text, "Ross", emo, "x", dia, utt, 1, 1, "00:00:01,000",
                            "00:00:02,000"])
    # raw clips exist for part of train only (the others are text-only)
    touch_wav(root / "train_splits" / "dia0_utt0.mp4")
    touch_wav(root / "train_splits" / "dia1_utt1.mp4")
    return root


def make_iemocap(root: Path, sessions=(1, 2)) -> Path:
    emos = ["neu", "hap", "exc", "sad", "ang", "fru", "xxx", "sur"]
    for s in sessions:
        sess = root / f"Session{s}"
        for dialog_speaker in ("F", "M"):
            dialog = f"Ses0{s}{dialog_speaker}_impro01"
            evals, trans = [], []
            for i, emo in enumerate(emos):
                speaker = "F" if i % 2 == 0 else "M"
                utt = f"{dialog}_{speaker}{i:03d}"
                evals.append(f"[{i}.0000 - {i + 1}.5000]\t{utt}\t{emo}\t[2.5000, 3.0000, 2.0000]")
                trans.append(f"{utt} [{i:03d}.0000-{i + 1:03d}.5000]: words {emo} {i}")
                touch_wav(sess / "sentences" / "wav" / dialog / f"{utt}.wav")
            (sess / "dialog" / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
            (sess / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
            (sess / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(
                "% header line\n\n" + "\n".join(evals) + "\nC-E1:\tNeutral;\t()\n")
            (sess / "dialog" / "transcriptions" / f"{dialog}.txt").write_text(
                "\n".join(trans) + "\n")
    return root


def make_ravdess(root: Path, actors=range(1, 5), metadata: bool = False) -> Path:
    rows = []
    for actor in actors:
        for emo in ("01", "02", "03", "04", "05", "06"):
            for statement in ("01", "02"):
                name = f"03-01-{emo}-01-{statement}-01-{actor:02d}.wav"
                touch_wav(root / f"Actor_{actor:02d}" / name)
                rows.append(name)
    if metadata:
        names = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                 "06": "fearful"}
        with open(root / "metadata.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "actor", "gender", "emotion", "intensity", "transcript",
                        "repetition", "duration_s"])
            for name in rows:
                parts = name[:-4].split("-")
                w.writerow([f"Actor_{parts[6]}/{name}", int(parts[6]), "male", names[parts[2]],
                            "normal", "Kids are talking by the door", 1, 0.1])
    return root


# ------------------------------------------------------------------------------ loaders

def test_meld_official_layout(tmp_path):
    root = make_meld(tmp_path / "meld")
    records = load_meld(root)
    by_id = {r.id: r for r in records}
    # 4-class: surprise, disgust and fear are dropped; joy -> happy, sadness -> sad
    assert sorted({r.label for r in records}) == sorted(LABELS_4)
    assert len([r for r in records if r.split == "train"]) == 4
    assert {r.split for r in records} == {"train", "dev", "test"}
    first = by_id["meld/train/dia0_utt0"]
    assert first.label == "happy"
    assert first.text == "I can't believe it! Really."  # cp1252 artefact + newline cleaned
    assert first.audio and first.audio.endswith("train_splits/dia0_utt0.mp4")
    assert by_id["meld/train/dia0_utt1"].audio is None  # no clip -> text only
    split = make_split("meld", records, "official")
    assert [len(split[k]) for k in ("train", "val", "test")] == [4, 2, 2]


def test_meld_without_test_csv_and_not_meld(tmp_path):
    root = make_meld(tmp_path / "meld", with_test=False)
    assert make_split("meld", load_meld(root), "official")["test"] == []
    with pytest.raises(InputError, match="not a MELD folder"):
        load_meld(tmp_path)


def test_iemocap_four_and_six_classes(tmp_path):
    root = make_iemocap(tmp_path / "IEMOCAP_full_release")
    four = load_iemocap(tmp_path)  # the release folder may be one level down
    six = load_iemocap(root, classes="6")
    # per dialog: neu hap exc sad ang fru xxx sur -> 4-class keeps 5 (exc merged into happy)
    assert len(four) == 2 * 2 * 5
    assert sum(r.label == "happy" for r in four) == 2 * 2 * 2
    assert len(six) == 2 * 2 * 6 and {r.label for r in six} == set(LABELS_6_IEMOCAP)
    r = next(x for x in four if x.id.endswith("Ses01F_impro01_M001"))
    assert (r.label, r.speaker, r.session) == ("happy", "Ses01M", "Session1")
    assert r.text == "words hap 1" and Path(r.audio).is_file()
    assert {x.speaker for x in four} == {"Ses01F", "Ses01M", "Ses02F", "Ses02M"}


def test_ravdess_from_names_and_from_metadata(tmp_path):
    plain = load_ravdess(make_ravdess(tmp_path / "a"))
    meta = load_ravdess(make_ravdess(tmp_path / "b", metadata=True))
    for records in (plain, meta):
        # calm and fearful dropped; angry -> anger
        assert len(records) == 4 * 4 * 2
        assert {r.label for r in records} == set(LABELS_4)
        assert {r.speaker for r in records} == {f"actor{i:02d}" for i in range(1, 5)}
        assert all(Path(r.audio).is_file() for r in records)
    assert {r.text for r in plain} == {"Kids are talking by the door",
                                       "Dogs are sitting by the door"}


def test_manifest_paths_and_labels(tmp_path):
    data = tmp_path / "corpus"
    touch_wav(data / "clips" / "a.wav")
    touch_wav(tmp_path / "outside.wav")
    manifest = data / "manifest.csv"
    manifest.write_text("path,text,label,speaker\nclips/a.wav,hello,angry,s1\n,only text,joy,s2\n")
    records = load_manifest(manifest)
    assert [r.label for r in records] == ["anger", "happy"]
    assert records[0].audio == str((data / "clips" / "a.wav").resolve())
    assert records[1].audio is None and records[1].speaker == "s2"

    manifest.write_text("path,text,label\n../outside.wav,hi,sad\n")
    with pytest.raises(InputError, match="leaves the manifest's folder"):
        load_manifest(manifest)
    assert load_manifest(manifest, allow_absolute_paths=True)[0].label == "sad"
    manifest.write_text(f"path,text,label\n{tmp_path / 'outside.wav'},hi,sad\n")
    with pytest.raises(InputError, match="--allow-absolute-paths"):
        load_manifest(manifest)

    manifest.write_text("path,text,label\nclips/a.wav,hi,bored\n")
    with pytest.raises(InputError, match="label 'bored'"):
        load_manifest(manifest)
    manifest.write_text("file,words\nclips/a.wav,hi\n")
    with pytest.raises(InputError, match="columns path,text,label"):
        load_manifest(manifest)


def test_detect_and_errors(tmp_path):
    assert detect_dataset(make_meld(tmp_path / "m")) == "meld"
    assert detect_dataset(make_ravdess(tmp_path / "r", actors=[1])) == "ravdess"
    assert detect_dataset(make_iemocap(tmp_path / "i", sessions=[1])) == "iemocap"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="unknown dataset layout"):
        detect_dataset(tmp_path / "empty")
    with pytest.raises(ConfigError):
        load_dataset("timit", tmp_path)
    with pytest.raises(ConfigError, match="IEMOCAP only"):
        labels_for("meld", "6")
    assert labels_for("meld", "4") == ["neutral", "happy", "sad", "anger"]


# ------------------------------------------------------------------------------ splits

def test_random_split_is_81_9_10_and_deterministic(tmp_path):
    records = load_ravdess(make_ravdess(tmp_path / "r", actors=range(1, 8)))  # 224 clips
    a, b, c = random_split(records, 0), random_split(records, 0), random_split(records, 1)
    ids_of = lambda parts: {k: [r.id for r in v] for k, v in parts.items()}  # noqa: E731
    assert ids_of(a) == ids_of(b)
    assert [r.id for r in a["test"]] != [r.id for r in c["test"]]
    n = len(records)
    assert len(a["test"]) == round(0.1 * n)
    assert len(a["val"]) == round(0.1 * (n - len(a["test"])))
    ids = [r.id for part in a.values() for r in part]
    assert sorted(ids) == sorted(r.id for r in records)  # a partition


def test_speaker_split_is_speaker_disjoint(tmp_path):
    records = load_ravdess(make_ravdess(tmp_path / "r", actors=range(1, 11)))
    folds = speaker_folds(records, 5, "speaker")
    assert sorted(g for f in folds for g in f) == sorted({r.speaker for r in records})
    seen_test = set()
    for fold in range(5):
        parts = speaker_split(records, fold, 5)
        groups = {k: {r.speaker for r in v} for k, v in parts.items()}
        assert groups["train"] and groups["val"] and groups["test"]
        assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"]
                    or groups["val"] & groups["test"])
        assert sum(len(v) for v in parts.values()) == len(records)
        assert [r.id for r in speaker_split(records, fold, 5)["val"]] == \
            [r.id for r in parts["val"]]
        seen_test |= groups["test"]
    assert seen_test == {r.speaker for r in records}  # every actor is tested exactly in one fold
    with pytest.raises(ConfigError, match="--folds"):
        speaker_split(records, 0, 11)


def test_iemocap_leave_one_session_out(tmp_path):
    records = load_iemocap(make_iemocap(tmp_path / "i", sessions=(1, 2, 3)))
    parts = make_split("iemocap", records, "speaker", fold=1, folds=3)
    assert {r.session for r in parts["test"]} == {"Session2"}
    assert "Session2" not in {r.session for r in parts["train"] + parts["val"]}
    assert not ({r.speaker for r in parts["train"]} & {r.speaker for r in parts["val"]})
    with pytest.raises(ConfigError, match="official split"):
        make_split("meld", records, "speaker")
    with pytest.raises(ConfigError, match="no official split"):
        make_split("iemocap", records, "official")


# ------------------------------------------------------------------------------ EmoDB

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
EMODB_TEXTS = {"a01": "Der Lappen liegt auf dem Eisschrank.",
               "a02": "Das will sie am Mittwoch abgeben.",
               "b01": "Heute abend könnte ich es ihm sagen."}
EMODB_LETTERS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
                 "T": "sadness", "N": "neutral"}


def make_emodb(root: Path, speakers=("03", "08", "09"), metadata: bool = True) -> Path:
    """EmoDB's layout: wav/SSTTTEV.flac (2 s tones here), every emotion for each text."""
    import soundfile as sf

    (root / "wav").mkdir(parents=True, exist_ok=True)
    tone = (0.1 * np.sin(2 * np.pi * 220 * np.arange(3200) / 16000)).astype(np.float32)
    rows = []
    for speaker in speakers:
        for text_id, text in EMODB_TEXTS.items():
            for letter, emotion in EMODB_LETTERS.items():
                name = f"{speaker}{text_id}{letter}a.flac"
                sf.write(str(root / "wav" / name), tone, 16000, format="FLAC", subtype="PCM_16")
                rows.append([f"wav/{name}", speaker, emotion, text_id, text, 0.2])
    (root / "wav" / "notes.txt").write_text("not a clip\n")
    if metadata:
        with open(root / "metadata.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "speaker", "emotion", "text_id", "text", "duration_s"])
            w.writerows(rows)
    return root


def test_emodb_from_metadata_and_from_names(tmp_path):
    meta = load_emodb(make_emodb(tmp_path / "a"))
    plain = load_emodb(make_emodb(tmp_path / "b", metadata=False))
    for records in (meta, plain):
        # boredom, disgust and fear dropped: 4 of 7 emotions per speaker and text
        assert len(records) == 3 * 3 * 4
        assert class_counts(records) == {"anger": 9, "happy": 9, "neutral": 9, "sad": 9}
        assert {r.speaker for r in records} == {"emodb03", "emodb08", "emodb09"}
        assert all(r.session == r.speaker and r.dataset == "emodb" for r in records)
        assert all(Path(r.audio).is_file() for r in records)
        by_id = {r.id: r for r in records}
        # W(ut) anger, F(reude) happy, T(rauer) sad, N neutral
        assert [by_id[f"emodb/08a02{e}a"].label for e in "WFTN"] == LABELS_4[3:] + LABELS_4[1:3] + \
            LABELS_4[:1]
    assert {r.text for r in meta} == set(EMODB_TEXTS.values())  # German, UTF-8 umlauts intact
    assert {r.text for r in plain} == {""}  # the sentence is not in the file name
    assert sorted(r.id for r in meta) == sorted(r.id for r in plain)


def test_emodb_detect_dispatch_and_errors(tmp_path):
    assert detect_dataset(make_emodb(tmp_path / "a")) == "emodb"
    assert detect_dataset(make_emodb(tmp_path / "b", metadata=False)) == "emodb"
    # RAVDESS also has a metadata.csv: still RAVDESS, with its speakers named as before
    ravdess = make_ravdess(tmp_path / "r", actors=[1, 2], metadata=True)
    assert detect_dataset(ravdess) == "ravdess"
    assert {r.speaker for r in load_dataset("auto", ravdess)} == {"actor01", "actor02"}
    assert len(load_dataset("emodb", tmp_path / "a")) == 36
    assert len(load_dataset("auto", tmp_path / "b")) == 36
    with pytest.raises(ConfigError, match="IEMOCAP only"):
        load_emodb(tmp_path / "a", classes="6")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an EmoDB folder"):
        load_emodb(tmp_path / "empty")
    with pytest.raises(InputError, match="data folder not found"):
        load_emodb(tmp_path / "missing")


# ------------------------------------------------------------------------------ several corpora

EMODB_SPEAKERS = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")


def test_load_corpora_and_combined_speaker_split(tmp_path):
    ravdess_dir = make_ravdess(tmp_path / "ravdess", actors=range(1, 21))
    emodb_dir = make_emodb(tmp_path / "emo+db", speakers=EMODB_SPEAKERS)  # '+' in a path is fine
    ravdess = load_ravdess(ravdess_dir)
    both = load_corpora(["ravdess", "emodb"], [ravdess_dir, emodb_dir])
    assert len(both) == len(ravdess) + 10 * 3 * 4
    assert {r.dataset for r in both} == {"ravdess", "emodb"}
    seen_test = set()
    for fold in range(5):
        parts = make_split("ravdess+emodb", both, "speaker", fold=fold, folds=5)
        groups = {k: {r.speaker for r in v} for k, v in parts.items()}
        assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"]
                    or groups["val"] & groups["test"])
        assert sum(len(v) for v in parts.values()) == len(both)
        # every fold tests speakers of both corpora
        assert {r.dataset for r in parts["test"]} == {"ravdess", "emodb"}
        # and the actors a fold tests are those of RAVDESS alone (actorXX sort before emodbSS)
        alone = make_split("ravdess", ravdess, "speaker", fold=fold, folds=5)
        assert {s for s in groups["test"] if s.startswith("actor")} == \
            {r.speaker for r in alone["test"]}
        seen_test |= groups["test"]
    assert seen_test == {r.speaker for r in both}
    assert len(make_split("ravdess+emodb", both, "random")["test"]) == round(0.1 * len(both))


def test_load_corpora_errors(tmp_path):
    ravdess_dir = make_ravdess(tmp_path / "r", actors=[1, 2])
    emodb_dir = make_emodb(tmp_path / "e", speakers=("03",))
    with pytest.raises(ConfigError, match="one folder per dataset"):
        load_corpora(["ravdess", "emodb"], [ravdess_dir])
    with pytest.raises(ConfigError, match="shares speaker 'actor01'"):
        load_corpora(["ravdess", "ravdess"], [ravdess_dir, ravdess_dir])
    with pytest.raises(ConfigError, match="one data folder each"):
        load_dataset("ravdess+emodb", tmp_path)
    meld = load_corpora(["meld", "emodb"], [make_meld(tmp_path / "m"), emodb_dir])
    with pytest.raises(ConfigError, match="includes MELD"):
        make_split("meld+emodb", meld, "speaker")
    assert len(load_corpora(["auto", "auto"], [ravdess_dir, emodb_dir])) == 2 * 4 * 2 + 12


def test_real_emodb(tmp_path):
    root = SHARED_DATA / "emodb"
    if not (root / "metadata.csv").is_file():
        pytest.skip(f"{root} not present (the real EmoDB copy, see ../shared/data/README.md)")
    records = load_dataset("auto", root)
    assert len(records) == 339
    assert set(class_counts(records)) == set(LABELS_4)
    assert len({r.speaker for r in records}) == 10
    assert all(r.text and Path(r.audio).is_file() for r in records)
    # the letters in the file names agree with the metadata on every clip
    with open(root / "metadata.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            assert EMODB_LETTERS[Path(row["path"]).stem[5]] == row["emotion"], row["path"]
            assert Path(row["path"]).stem[:2] == row["speaker"]
    ravdess_dir = SHARED_DATA / "ravdess"
    if (ravdess_dir / "metadata.csv").is_file():  # the real 20 actors keep their folds too
        both = load_corpora(["ravdess", "emodb"], [ravdess_dir, root])
        alone = load_ravdess(ravdess_dir)
        for fold in range(5):
            test = {r.speaker for r in make_split("ravdess+emodb", both, "speaker", fold)["test"]}
            assert {s for s in test if s.startswith("actor")} == \
                {r.speaker for r in make_split("ravdess", alone, "speaker", fold)["test"]}
            assert any(s.startswith("emodb") for s in test)


def test_iemocap_records_carry_their_dialogue_in_time_order(tmp_path):
    """The text branch's context (issue 14): the earlier utterances of the dialogue, ordered by
    start time even where the file lists them out of order, the same whichever classes are kept."""
    from mersa_stream.context import Turn

    root = make_iemocap(tmp_path / "IEMOCAP_full_release", sessions=(1,))
    evaluation = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    lines = evaluation.read_text().splitlines()
    evaluation.write_text("\n".join(lines[:2] + lines[2:10][::-1] + lines[10:]) + "\n")
    records = {r.id: r for r in load_iemocap(root)}
    assert records["iemocap/Ses01F_impro01_F000"].turns == ()
    assert records["iemocap/Ses01F_impro01_M003"].turns == (
        Turn("words neu 0", "Ses01F"), Turn("words hap 1", "Ses01M"), Turn("words exc 2", "Ses01F"))
    assert [t.text for t in records["iemocap/Ses01F_impro01_F004"].turns] == [
        "words neu 0", "words hap 1", "words exc 2", "words sad 3"]
    # a label outside the classes is still a turn of the dialogue (fru: 6 classes keep it)
    six = {r.id: r for r in load_iemocap(root, classes="6")}
    assert six["iemocap/Ses01F_impro01_F004"].turns == records["iemocap/Ses01F_impro01_F004"].turns
