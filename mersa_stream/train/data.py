"""Datasets -> lists of `Record`s, label maps and splits.

Loaders read each corpus in its own published layout and return frozen records; nothing is
copied or converted on disk. Supported:

- MELD (official release): `train_sent_emo.csv`, `dev_sent_emo.csv`, `test_sent_emo.csv` and the raw
  clip folders `train_splits/`, `dev_splits_complete/`, `output_repeated_splits_test/`
  (`dia{D}_utt{U}.mp4`). Where a clip is absent the record is text-only (`audio=None`).
- IEMOCAP full release: `Session{1..5}/sentences/wav/<dialog>/<utt>.wav`, labels in
  `Session*/dialog/EmoEvaluation/<dialog>.txt`, transcripts in `Session*/dialog/transcriptions/`.
- RAVDESS: `Actor_XX/03-01-EE-II-SS-RR-AA.(wav|flac)` with an optional `metadata.csv`.
- EmoDB (Berlin): `wav/SSTTTEV.(wav|flac)` with an optional `metadata.csv` (German sentences).
- A manifest CSV with columns path,text,label[,speaker]; paths relative to the manifest's folder.

Several corpora train together with `load_corpora` and a combined name such as "ravdess+emodb"
(speakers are corpus-prefixed: actorXX, emodbSS, Ses01F).
"""

from __future__ import annotations

import csv
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..context import MAX_CONTEXT, Turn
from ..errors import ConfigError, InputError

DATASETS = ("meld", "iemocap", "ravdess", "emodb", "manifest")
LABELS_4 = ["neutral", "happy", "sad", "anger"]
LABELS_6_IEMOCAP = ["neutral", "frustrated", "sad", "anger", "excited", "happy"]

# raw label -> canonical label, per dataset and class count (labels not in the map are dropped)
LABEL_MAPS: dict[tuple[str, str], dict[str, str]] = {
    ("meld", "4"): {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "anger"},
    ("iemocap", "4"): {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad",
                       "ang": "anger"},
    ("iemocap", "6"): {"neu": "neutral", "fru": "frustrated", "sad": "sad", "ang": "anger",
                       "exc": "excited", "hap": "happy"},
    ("ravdess", "4"): {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "anger"},
    ("emodb", "4"): {"neutral": "neutral", "happiness": "happy", "sadness": "sad",
                     "anger": "anger"},
}
# a manifest's labels may use any of these spellings
LABEL_ALIASES = {
    "neu": "neutral", "neutral": "neutral",
    "hap": "happy", "happy": "happy", "joy": "happy", "happiness": "happy",
    "sad": "sad", "sadness": "sad",
    "ang": "anger", "angry": "anger", "anger": "anger",
    "exc": "excited", "excited": "excited", "fru": "frustrated", "frustrated": "frustrated",
    "frustration": "frustrated",
}
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fearful", "07": "disgust", "08": "surprised"}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
# the German initial of each emotion in EmoDB file names (Wut, Langeweile, Ekel, Angst, Freude,
# Trauer, Neutral)
EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
                  "T": "sadness", "N": "neutral"}
# SS speaker, TTT text id (a01..b10), E emotion letter, V version letter
_EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([WLEAFTN])([a-z])$")
MELD_CSV = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
MELD_CLIPS = {"train": "train_splits", "dev": "dev_splits_complete",
              "test": "output_repeated_splits_test"}
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Record:
    id: str
    audio: str | None  # absolute path of the clip; None = text only
    text: str
    label: str  # canonical label (one of the dataset's label list)
    speaker: str = ""
    session: str = ""
    split: str = ""  # official split name where the corpus has one (MELD), else ""
    dataset: str = ""
    # the utterances before this one in its conversation, oldest first (at most MAX_CONTEXT;
    # every one, whatever its label): the text branch's context (mersa_stream/context.py)
    turns: tuple[Turn, ...] = ()


def labels_for(dataset: str, classes: str) -> list[str]:
    if classes == "4":
        return list(LABELS_4)
    if classes == "6":
        if dataset != "iemocap":
            raise ConfigError(f"--classes 6 is defined for IEMOCAP only (not {dataset})")
        return list(LABELS_6_IEMOCAP)
    raise ConfigError(f"--classes {classes!r}: one of 4, 6 (IEMOCAP)")


def _check_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{path}: {what} data folder not found")
    return path


# ---------------------------------------------------------------------------------------- MELD

def _meld_text(text: str) -> str:
    # the official CSVs carry cp1252 artefacts for quotes and dashes
    for bad, good in (("\x92", "'"), ("\x91", "'"), ("\x93", '"'), ("\x94", '"'), ("\x85", "..."),
                      ("\x96", "-"), ("\x97", "-"), ("\u2019", "'"), ("\u2018", "'"),
                      ("\u201c", '"'), ("\u201d", '"'), ("\u2014", "-"), ("\u2026", "...")):
        text = text.replace(bad, good)
    return " ".join(text.split())


def meld_splits(data_dir: Path) -> list[str]:
    return [s for s, name in MELD_CSV.items() if (data_dir / name).is_file()]


def load_meld(data_dir: str | Path, classes: str = "4",
              splits: Sequence[str] = ("train", "dev", "test")) -> list[Record]:
    data_dir = _check_dir(Path(data_dir), "MELD")
    mapping = LABEL_MAPS[("meld", classes)] if classes == "4" else None
    if mapping is None:
        labels_for("meld", classes)
    found = meld_splits(data_dir)
    if not found:
        raise InputError(f"{data_dir}: not a MELD folder (no {', '.join(MELD_CSV.values())})")
    records = []
    for split in splits:
        if split not in found:
            continue
        clips = data_dir / MELD_CLIPS[split]
        with open(data_dir / MELD_CSV[split], encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f)
            need = {"Utterance", "Emotion", "Dialogue_ID", "Utterance_ID", "Speaker"}
            if not need <= set(reader.fieldnames or []):
                raise InputError(f"{data_dir / MELD_CSV[split]}: not a MELD CSV "
                                 f"(needs columns {', '.join(sorted(need))})")
            rows = list(reader)
        # a dialogue's utterances in their order, whatever order the CSV lists them in
        rows.sort(key=lambda row: (_number(row["Dialogue_ID"]), _number(row["Utterance_ID"])))
        history: dict[str, list[Turn]] = {}
        for row in rows:
            dia, utt = row["Dialogue_ID"].strip(), row["Utterance_ID"].strip()
            text, speaker = _meld_text(row["Utterance"]), row["Speaker"].strip()
            turns = history.setdefault(dia, [])
            label = mapping.get(row["Emotion"].strip().lower())
            if label is not None:
                clip = clips / f"dia{dia}_utt{utt}.mp4"
                records.append(Record(
                    id=f"meld/{split}/dia{dia}_utt{utt}",
                    audio=str(clip) if clip.is_file() else None,
                    text=text, label=label, speaker=speaker,
                    session=f"{split}/dia{dia}", split=split, dataset="meld",
                    turns=tuple(turns[-MAX_CONTEXT:])))
            turns.append(Turn(text, speaker))
    return records


def _number(value: str) -> tuple[int, str]:
    value = value.strip()
    return (int(value), "") if value.isdigit() else (1 << 30, value)


# ------------------------------------------------------------------------------------- IEMOCAP

_EMO_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[")
_TRANS_LINE = re.compile(r"^(\S+)\s+\[[^\]]*\]:\s*(.*)$")


def _iemocap_root(data_dir: Path) -> Path | None:
    for root in (data_dir, data_dir / "IEMOCAP_full_release"):
        if any((root / f"Session{i}").is_dir() for i in range(1, 6)):
            return root
    return None


def load_iemocap(data_dir: str | Path, classes: str = "4") -> list[Record]:
    data_dir = _check_dir(Path(data_dir), "IEMOCAP")
    labels_for("iemocap", classes)
    mapping = LABEL_MAPS[("iemocap", classes)]
    root = _iemocap_root(data_dir)
    if root is None:
        raise InputError(f"{data_dir}: not an IEMOCAP full-release folder (no Session1..5)")
    records = []
    for session_dir in sorted(root.glob("Session[1-5]")):
        session = session_dir.name
        texts: dict[str, str] = {}
        for trans in sorted((session_dir / "dialog" / "transcriptions").glob("*.txt")):
            for line in trans.read_text(encoding="utf-8", errors="replace").splitlines():
                if m := _TRANS_LINE.match(line.strip()):
                    texts[m.group(1)] = m.group(2).strip()
        for evaluation in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
            dialog = evaluation.stem
            lines = [m for line in evaluation.read_text(encoding="utf-8", errors="replace")
                     .splitlines() if (m := _EMO_LINE.match(line.strip()))]
            # utterance ids look like Ses01F_impro01_M000: the speaker is the letter of the last
            # part
            speaker = {m.group(3): f"{m.group(3)[:5]}{m.group(3).rsplit('_', 1)[-1][:1]}"
                       for m in lines}
            # the dialogue before each utterance, in time order, whatever the labels
            timeline = [m.group(3) for m in sorted(lines, key=lambda m: float(m.group(1)))]
            before = {utt: tuple(Turn(texts.get(u, ""), speaker[u])
                                 for u in timeline[max(0, i - MAX_CONTEXT):i])
                      for i, utt in enumerate(timeline)}
            for m in lines:
                utt, emo = m.group(3), m.group(4).lower()
                label = mapping.get(emo)
                if label is None:
                    continue
                wav = session_dir / "sentences" / "wav" / dialog / f"{utt}.wav"
                records.append(Record(
                    id=f"iemocap/{utt}", audio=str(wav) if wav.is_file() else None,
                    text=texts.get(utt, ""), label=label, speaker=speaker[utt],
                    session=session, dataset="iemocap", turns=before[utt]))
    if not records:
        raise InputError(f"{root}: IEMOCAP layout found but no labelled utterances "
                         f"(Session*/dialog/EmoEvaluation/*.txt)")
    return records


# ------------------------------------------------------------------------------------- RAVDESS

def _clip_records(rows, mapping: dict[str, str], dataset: str, speaker_of) -> list[Record]:
    """Records of a one-clip-per-file corpus from its (path, raw emotion, text, speaker) rows;
    rows whose emotion is not in `mapping` are dropped. `speaker_of`: the speaker's group name
    (corpus-prefixed, so corpora never share one)."""
    records = []
    for path, emotion, text, speaker in rows:
        label = mapping.get(emotion)
        if label is not None:
            name = speaker_of(speaker)
            records.append(Record(id=f"{dataset}/{path.stem}", audio=str(path), text=text,
                                  label=label, speaker=name, session=name, dataset=dataset))
    return records


def _ravdess_name(name: str) -> dict | None:
    parts = Path(name).stem.split("-")
    if len(parts) != 7 or not all(p.isdigit() for p in parts):
        return None
    return {"emotion": RAVDESS_EMOTIONS.get(parts[2]), "statement": parts[4],
            "actor": int(parts[6])}


def load_ravdess(data_dir: str | Path, classes: str = "4") -> list[Record]:
    data_dir = _check_dir(Path(data_dir), "RAVDESS")
    labels_for("ravdess", classes)
    mapping = LABEL_MAPS[("ravdess", classes)]
    rows: list[tuple[Path, str, str, int]] = []  # path, emotion, transcript, actor
    metadata = data_dir / "metadata.csv"
    if metadata.is_file():
        with open(metadata, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                path = (data_dir / row["path"]).resolve()
                rows.append((path, row["emotion"].strip().lower(), row.get("transcript", ""),
                             int(row["actor"])))
    else:
        for path in sorted(data_dir.glob("Actor_*/*")):
            info = _ravdess_name(path.name) if path.suffix.lower() in AUDIO_SUFFIXES else None
            if info and info["emotion"]:
                rows.append((path.resolve(), info["emotion"],
                             RAVDESS_STATEMENTS.get(info["statement"], ""), info["actor"]))
    if not rows:
        raise InputError(f"{data_dir}: not a RAVDESS folder (no metadata.csv and no "
                         f"Actor_XX/03-01-EE-II-SS-RR-AA.wav files)")
    return _clip_records(rows, mapping, "ravdess", lambda actor: f"actor{actor:02d}")


# --------------------------------------------------------------------------------------- EmoDB

def _emodb_name(name: str) -> dict | None:
    m = _EMODB_NAME.match(Path(name).stem)
    if not m:
        return None
    return {"speaker": m.group(1), "text_id": m.group(2), "emotion": EMODB_EMOTIONS[m.group(3)]}


def _is_emodb(data_dir: Path) -> bool:
    metadata = data_dir / "metadata.csv"
    if metadata.is_file():
        with open(metadata, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        return {"path", "speaker", "emotion", "text_id"} <= set(header)
    return any(_emodb_name(p.name) for p in data_dir.glob("wav/*")
               if p.suffix.lower() in AUDIO_SUFFIXES)


def load_emodb(data_dir: str | Path, classes: str = "4") -> list[Record]:
    """EmoDB (Berlin Database of Emotional Speech): `wav/SSTTTEV.flac` plus an optional
    `metadata.csv` (path, speaker, emotion, text_id, text, duration_s); without it the labels
    come from the file names and the text is empty (the sentences are not in the names)."""
    data_dir = _check_dir(Path(data_dir), "EmoDB")
    labels_for("emodb", classes)
    mapping = LABEL_MAPS[("emodb", classes)]
    rows: list[tuple[Path, str, str, str]] = []  # path, emotion, text, speaker
    metadata = data_dir / "metadata.csv"
    if metadata.is_file():
        with open(metadata, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not {"path", "speaker", "emotion"} <= set(reader.fieldnames or []):
                raise InputError(f"{metadata}: not an EmoDB metadata.csv (needs columns path, "
                                 f"speaker, emotion[, text])")
            for row in reader:
                rows.append(((data_dir / row["path"]).resolve(), row["emotion"].strip().lower(),
                             (row.get("text") or "").strip(), row["speaker"].strip()))
    else:
        for path in sorted(data_dir.glob("wav/*")):
            info = _emodb_name(path.name) if path.suffix.lower() in AUDIO_SUFFIXES else None
            if info:
                rows.append((path.resolve(), info["emotion"], "", info["speaker"]))
    if not rows:
        raise InputError(f"{data_dir}: not an EmoDB folder (no metadata.csv and no "
                         f"wav/SSTTTEV.flac files)")
    # "3" and "03" are one speaker: metadata written by a spreadsheet may drop the zero
    return _clip_records(rows, mapping, "emodb", lambda speaker: f"emodb{int(speaker):02d}"
                         if speaker.isdigit() else f"emodb{speaker}")


# ------------------------------------------------------------------------------------ manifest

def load_manifest(manifest: str | Path, classes: str = "4",
                  allow_absolute_paths: bool = False) -> list[Record]:
    """CSV with path,text,label[,speaker]. A path may not leave the manifest's folder unless
    `allow_absolute_paths` (then absolute paths and `..` are accepted as they are)."""
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{manifest}: manifest CSV not found")
    labels = labels_for("manifest", classes)
    base = manifest.parent.resolve()
    records = []
    with open(manifest, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not {"path", "text", "label"} <= set(reader.fieldnames or []):
            raise InputError(f"{manifest}: a manifest needs the columns path,text,label[,speaker] "
                             f"(found {', '.join(reader.fieldnames or [])})")
        for line, row in enumerate(reader, start=2):
            raw = (row.get("label") or "").strip().lower()
            label = LABEL_ALIASES.get(raw, raw)
            if label not in labels:
                raise InputError(f"{manifest}:{line}: label {raw!r} is not one of "
                                 f"{', '.join(labels)} (aliases like angry, joy, neu are accepted)")
            audio = None
            if (spec := (row.get("path") or "").strip()):
                given = Path(spec).expanduser()
                path = (given if given.is_absolute() else base / given).resolve()
                if not allow_absolute_paths and not path.is_relative_to(base):
                    raise InputError(f"{manifest}:{line}: path {spec!r} leaves the manifest's "
                                     f"folder; pass --allow-absolute-paths to accept it")
                if not path.is_file():
                    raise InputError(f"{manifest}:{line}: audio file {spec!r} not found")
                audio = str(path)
            if audio is None and not (row.get("text") or "").strip():
                raise InputError(f"{manifest}:{line}: neither audio nor text")
            speaker = (row.get("speaker") or "").strip()
            records.append(Record(id=f"manifest/{line - 1}:{spec}", audio=audio,
                                  text=(row.get("text") or "").strip(), label=label,
                                  speaker=speaker, session=speaker, dataset="manifest"))
    if not records:
        raise InputError(f"{manifest}: no rows")
    return records


# ------------------------------------------------------------------------------------ dispatch

def detect_dataset(data_dir: Path) -> str:
    if data_dir.is_file() and data_dir.suffix.lower() == ".csv":
        return "manifest"
    if meld_splits(data_dir):
        return "meld"
    if _iemocap_root(data_dir) is not None:
        return "iemocap"
    if _is_emodb(data_dir):  # before RAVDESS: both may have a metadata.csv
        return "emodb"
    if (data_dir / "metadata.csv").is_file() or any(data_dir.glob("Actor_*")):
        return "ravdess"
    if (data_dir / "manifest.csv").is_file():
        return "manifest"
    raise InputError(f"{data_dir}: unknown dataset layout (expected MELD CSVs, IEMOCAP "
                     f"Session1..5, RAVDESS Actor_XX folders, EmoDB wav/SSTTTEV files or a "
                     f"manifest CSV)")


def load_dataset(dataset: str, data_dir: str | Path, classes: str = "4",
                 allow_absolute_paths: bool = False) -> list[Record]:
    data_dir = Path(data_dir)
    if dataset == "auto":
        dataset = detect_dataset(data_dir)
    if dataset == "meld":
        return load_meld(data_dir, classes)
    if dataset == "iemocap":
        return load_iemocap(data_dir, classes)
    if dataset == "ravdess":
        return load_ravdess(data_dir, classes)
    if dataset == "emodb":
        return load_emodb(data_dir, classes)
    if dataset == "manifest":
        return load_manifest(data_dir, classes, allow_absolute_paths)
    if "+" in dataset:
        raise ConfigError(f"--dataset {dataset!r}: corpora combined need one data folder each "
                          f"(load_corpora)")
    raise ConfigError(f"--dataset {dataset!r}: one of {', '.join(DATASETS)}")


def corpus_names(dataset: str) -> list[str]:
    """"ravdess+emodb" -> ["ravdess", "emodb"]; a single name -> [name]."""
    return dataset.split("+")


def load_corpora(datasets: Sequence[str], data_dirs: Sequence[str | Path], classes: str = "4",
                 allow_absolute_paths: bool = False) -> list[Record]:
    """Load each (dataset, data_dir) pair and concatenate, for training on several corpora at
    once (split them with `make_split("+".join(datasets), ...)`). Speakers of RAVDESS, EmoDB
    and IEMOCAP are corpus-prefixed, so groups never merge across corpora; names that do
    collide (MELD's or a manifest's free-form speakers, the same corpus twice) are an error
    rather than a silent leak of one speaker into both train and test."""
    if len(datasets) != len(data_dirs) or not datasets:
        raise ConfigError(f"{len(datasets)} datasets for {len(data_dirs)} data folders: "
                          f"give one folder per dataset")
    records: list[Record] = []
    owner: dict[str, str] = {}  # speaker (or id) -> the corpus that had it first
    for dataset, data_dir in zip(datasets, data_dirs):
        part = load_dataset(dataset, data_dir, classes, allow_absolute_paths)
        mine = {f"speaker:{r.speaker}" for r in part if r.speaker} | {f"id:{r.id}" for r in part}
        if clash := sorted((k for k in mine if k in owner), key=lambda k: (k[:3] == "id:", k)):
            kind, name = clash[0].split(":", 1)
            raise ConfigError(f"{data_dir} ({dataset}) shares {kind} {name!r} with "
                              f"{owner[clash[0]]}: combined corpora need distinct speakers "
                              f"and clip ids")
        owner.update({k: f"{data_dir} ({dataset})" for k in mine})
        records.extend(part)
    return records


# -------------------------------------------------------------------------------------- splits

SPLITS = ("official", "random", "speaker", "holdout")
# --split holdout: the share of the official training conversations held out for validation
HOLDOUT_SHARE = 0.1


def random_split(records: Sequence[Record], seed: int = 0, test: float = 0.1,
                 val: float = 0.1) -> dict[str, list[Record]]:
    """The lab's 81/9/10: shuffle with `seed`, hold out `test`, then `val` of the rest."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_test = int(round(test * len(order)))
    rest = order[n_test:]
    n_val = int(round(val * len(rest)))
    pick = lambda idx: [records[i] for i in idx]  # noqa: E731
    return {"train": pick(rest[n_val:]), "val": pick(rest[:n_val]), "test": pick(order[:n_test])}


def group_of(record: Record, key: str) -> str:
    value = getattr(record, key)
    if not value:
        raise ConfigError(f"--split speaker needs a {key} for every record ({record.id} has none)")
    return value


def speaker_folds(records: Sequence[Record], folds: int, test_key: str) -> list[list[str]]:
    """The test groups of each fold: sorted groups dealt round-robin (deterministic)."""
    groups = sorted({group_of(r, test_key) for r in records})
    if folds < 2 or folds > len(groups):
        raise ConfigError(f"--folds {folds}: needs 2..{len(groups)} ({len(groups)} {test_key}s)")
    return [groups[i::folds] for i in range(folds)]


def speaker_split(records: Sequence[Record], fold: int = 0, folds: int = 5,
                  test_key: str = "speaker", val_key: str = "speaker", val: float = 0.1,
                  seed: int = 0) -> dict[str, list[Record]]:
    """Test = the `test_key` groups of fold `fold`; val = ceil(val * remaining) `val_key` groups
    of the rest (seeded); train = the others. Train, val and test share no group."""
    test_groups = set(speaker_folds(records, folds, test_key)[fold % folds])
    rest = [r for r in records if group_of(r, test_key) not in test_groups]
    rest_groups = sorted({group_of(r, val_key) for r in rest})
    n_val = max(1, math.ceil(val * len(rest_groups))) if len(rest_groups) > 1 else 0
    val_groups = set(random.Random(seed + fold).sample(rest_groups, n_val))
    return {"train": [r for r in rest if group_of(r, val_key) not in val_groups],
            "val": [r for r in rest if group_of(r, val_key) in val_groups],
            "test": [r for r in records if group_of(r, test_key) in test_groups]}


def official_split(records: Sequence[Record]) -> dict[str, list[Record]]:
    names = {"train": "train", "dev": "val", "test": "test"}
    out: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for r in records:
        if r.split not in names:
            raise ConfigError("--split official: this dataset has no official split "
                              "(use random or speaker)")
        out[names[r.split]].append(r)
    return out


def holdout_split(records: Sequence[Record], seed: int = 0,
                  share: float = HOLDOUT_SHARE) -> dict[str, list[Record]]:
    """An official split whose validation part is `share` of the training conversations
    (seeded), and whose test part is the official test where there is one, else the official
    dev: early stopping and any choice made on validation never see the reported part."""
    parts = official_split(records)
    train = parts["train"]
    sessions = sorted({group_of(r, "session") for r in train})
    held = set(random.Random(seed).sample(sessions, max(1, round(share * len(sessions))))
               if len(sessions) > 1 else ())
    return {"train": [r for r in train if r.session not in held],
            "val": [r for r in train if r.session in held],
            "test": parts["test"] or parts["val"]}


def make_split(dataset: str, records: Sequence[Record], split: str, fold: int = 0,
               folds: int = 5, seed: int = 0) -> dict[str, list[Record]]:
    if split == "official":
        return official_split(records)
    if split == "holdout":
        return holdout_split(records, seed=seed)
    if split == "random":
        return random_split(records, seed=seed)
    if split == "speaker":
        if "+" in dataset:  # corpora combined: folds over the union of their speakers
            if "meld" in corpus_names(dataset):
                raise ConfigError(f"--split speaker: {dataset} includes MELD, which has an "
                                  f"official split but no speaker-disjoint one")
            return speaker_split(records, fold, folds, "speaker", "speaker", seed=seed)
        if dataset == "iemocap":  # leave one session out; validation speakers from the others
            return speaker_split(records, fold, folds, "session", "speaker", seed=seed)
        if dataset == "meld":
            raise ConfigError("--split speaker: MELD has an official split (use official)")
        return speaker_split(records, fold, folds, "speaker", "speaker", seed=seed)
    raise ConfigError(f"--split {split!r}: one of {', '.join(SPLITS)}")


def default_split(dataset: str) -> str:
    return "official" if dataset == "meld" else "speaker"


def class_counts(records: Iterable[Record]) -> dict[str, int]:
    return dict(sorted(Counter(r.label for r in records).items()))
