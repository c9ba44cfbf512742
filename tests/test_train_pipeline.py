"""Trainer end to end on a tiny corpus with tiny random encoders: training lowers the loss, the
checkpoint loads (and runs in `mersa analyze`), the feature cache is re-used and invalidated,
self-align changes only the top layers, the CLI commands work and fail with one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mersa_stream.checkpoint import load_checkpoint
from mersa_stream.resolve import resolve_transformers
from mersa_stream.train.data import LABELS_4, load_manifest
from mersa_stream.train.features import FeatureCache, TextFeaturizer, encode_records
from mersa_stream.train.fusion_train import TrainConfig
from mersa_stream.train.pipeline import Featurizers, RunOptions, SetKey, run

REPO = Path(__file__).resolve().parent.parent
WORDS = {"neutral": "ordinary table window", "happy": "wonderful joy delight",
         "sad": "tears grief sorrow", "anger": "furious rage hate"}
TONES = {"neutral": 220.0, "happy": 660.0, "sad": 140.0, "anger": 1200.0}


def tiny_bert(folder: Path, layers: int) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    minilm = resolve_transformers("sentence-transformers/all-MiniLM-L6-v2", "text", "--x").path
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    root = tmp_path_factory.mktemp("encoders")
    bert = tiny_bert(root / "bert", layers=2)
    torch.manual_seed(0)
    w2v = root / "w2v"
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, conv_dim=(16,) * 7,
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                                 feat_extract_norm="group")).save_pretrained(w2v)
    return bert, w2v


def write_corpus(root: Path, speakers: int = 4, per_class: int = 3) -> Path:
    """A manifest corpus whose text and audio both carry the label (a learnable task)."""
    rng = np.random.default_rng(0)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    lines = ["path,text,label,speaker"]
    t = np.arange(int(0.4 * 16000)) / 16000
    for s in range(speakers):
        for label in LABELS_4:
            for k in range(per_class):
                name = f"clips/s{s}_{label}_{k}.wav"
                audio = 0.3 * np.sin(2 * np.pi * TONES[label] * (1 + 0.02 * k) * t)
                audio = audio + 0.01 * rng.standard_normal(len(t))
                sf.write(str(root / name), audio.astype(np.float32), 16000)
                filler = ["well", "so", "and", "then"][(s + k) % 4]
                lines.append(f"{name},{filler} {WORDS[label]},{label},spk{s}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def options(corpus, encoders, out, cache, **train) -> RunOptions:
    bert, w2v = encoders
    cfg = dict(epochs=12, patience=100, hidden=32, heads=4, lr=3e-3, batch_size=8, threads=1)
    cfg.update(train)
    return RunOptions(dataset="manifest", data_dir=str(corpus), out=str(out) if out else None,
                      split="speaker", folds=4, audio_encoder="wav2vec2", audio_spec=str(w2v),
                      text_encoder=str(bert), cache_dir=str(cache), command="test",
                      train=TrainConfig(**cfg))


@pytest.fixture(scope="module")
def trained(corpus, encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    opts = options(corpus, encoders, root / "ckpt", root / "cache")
    return run(opts, progress=False, say=lambda _: None), opts


def test_training_lowers_loss_and_saves_a_loadable_checkpoint(trained):
    result, opts = trained
    history = result.result.history
    assert len(history) == 12
    first, last = history[0]["train_loss"], min(h["train_loss"] for h in history[-3:])
    assert last < 0.8 * first, (first, last)
    log = [json.loads(x) for x in (Path(opts.out) / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 13))
    ckpt = load_checkpoint(opts.out)
    assert ckpt.labels == LABELS_4
    assert ckpt.model.config.architecture == "mersa-xattn"
    assert (ckpt.text_encoder.spec, ckpt.text_encoder.dim) == (opts.text_encoder, 32)
    assert (ckpt.audio_encoder.kind, ckpt.audio_encoder.dim) == ("wav2vec2", 32)
    # the saved weights are the best epoch's: same outputs as the model in memory
    torch.manual_seed(1)
    x = (torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool),
         torch.randn(2, 7, 32), torch.ones(2, 7, dtype=torch.bool))
    torch.testing.assert_close(ckpt.model(*x), result.result.model.eval()(*x))
    card = (Path(opts.out) / "README.md").read_text()
    assert "## Licences" in card and "## Metrics" in card and "test" in card
    assert ckpt.metadata["best_epoch"] == result.result.best_epoch
    # held-out speakers: scored, and the audio-only view exists
    test = SetKey("manifest", "test")
    assert set(result.test) == {test, SetKey("manifest", "test", "audio only")}
    assert result.test[test]["count"] == 12  # one speaker of four
    # the metadata and the card show the keys' display names
    assert set(ckpt.metadata["metrics"]["test"]) == {"manifest/test", "manifest/test (audio only)"}
    assert "| manifest/test (audio only) | 12 |" in card


def test_evaluation_sets_are_typed_keys_shown_as_before():
    assert SetKey("ravdess", "test").name == "ravdess/test"
    assert SetKey("ravdess+emodb", "val", "audio only").name == "ravdess+emodb/val (audio only)"
    assert SetKey("manifest", "test")._replace(variant="packed windows").name == \
        "manifest/test (packed windows)"


def test_seeded_training_is_deterministic(corpus, encoders, tmp_path):
    a = run(options(corpus, encoders, None, tmp_path / "cache", epochs=3), progress=False,
            say=lambda _: None)
    b = run(options(corpus, encoders, None, tmp_path / "cache", epochs=3), progress=False,
            say=lambda _: None)
    losses = [[h["train_loss"] for h in r.result.history] for r in (a, b)]
    assert losses[0] == losses[1]


def test_feature_cache_reused_and_invalidated(corpus, encoders, tmp_path):
    bert, _ = encoders
    records = load_manifest(corpus)
    text = TextFeaturizer(str(bert), max_tokens=16)

    cache = FeatureCache(tmp_path / "cache")
    first = encode_records(records, text, "text", cache)
    assert (cache.stats["text"].hits, cache.stats["text"].computed) == (0, len(records))

    again = FeatureCache(tmp_path / "cache")
    second = encode_records(records, text, "text", again)
    assert (again.stats["text"].hits, again.stats["text"].computed) == (len(records), 0)
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)

    # another encoder setting (max_tokens) has its own entries
    other = FeatureCache(tmp_path / "cache")
    encode_records(records, TextFeaturizer(str(bert), max_tokens=8), "text", other)
    assert other.stats["text"].computed == len(records)

    # audio: a rewritten file is re-encoded, the others are read back
    featurizers = Featurizers(FeatureCache(tmp_path / "cache"))
    audio = featurizers.audio("wav2vec2", str(encoders[1]))
    encode_records(records, audio, "audio", featurizers.cache)
    path = Path(records[0].audio)
    data, rate = sf.read(str(path))
    sf.write(str(path), np.concatenate([data, data]), rate)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    again = FeatureCache(tmp_path / "cache")
    feats = encode_records(records, audio, "audio", again)
    assert (again.stats["audio"].hits, again.stats["audio"].computed) == (len(records) - 1, 1)
    assert len(feats[0]) > len(feats[1])  # twice as long now


@pytest.mark.parametrize("ce_weight", [0.0, 0.5])  # the paper's pure metric loss; + a CE head
def test_self_align_changes_only_top_layers(corpus, encoders, tmp_path, ce_weight):
    import random

    from safetensors.torch import load_file

    from mersa_stream.encoders.text import TextEncoder
    from mersa_stream.train.self_align import (
        AlignConfig,
        SplitEncoder,
        balanced_batches,
        self_align,
    )

    bert, _ = encoders
    records = load_manifest(corpus)
    # the cut model (frozen bottom + top layers run by hand) equals the full model
    enc = TextEncoder(bert, 16)
    split = SplitEncoder(enc.model, top_layers=1)
    batch, _ = enc.tokenize([r.text for r in records[:5]])
    with torch.no_grad():
        torch.testing.assert_close(split.top(split.bottom(batch), batch["attention_mask"]),
                                   enc.model(**batch).last_hidden_state, atol=1e-5, rtol=1e-4)

    labels = [LABELS_4.index(r.label) for r in records]
    for b in balanced_batches(labels, 2, random.Random(0)):
        assert sorted({labels[i] for i in b}) == [0, 1, 2, 3] and len(b) == 8

    out = self_align(records[:32], records[32:], LABELS_4, bert, tmp_path / "align",
                     AlignConfig(epochs=2, per_class=2, top_layers=1, lr=1e-3, tsne_points=16,
                                 ce_weight=ce_weight),
                     say=lambda _: None, progress=False)
    weights = load_file(str(out / "text_encoder.safetensors"))
    assert weights and all(k.startswith("encoder.layer.1.") for k in weights)
    for name in ("tsne_before.png", "tsne_after.png", "align_log.jsonl", "align.json"):
        assert (out / name).stat().st_size > 0
    plain = TextEncoder(bert, 16).encode(["tears grief"])[0]
    aligned = TextEncoder(bert, 16, state_dict=weights).encode(["tears grief"])[0]
    assert not torch.allclose(plain, aligned)
    report = json.loads((out / "align.json").read_text())
    assert "probe_before" in report and "probe_after" in report


def mersa(*args, cwd=REPO, timeout=300):
    return subprocess.run([sys.executable, "-c", "from mersa_stream.cli import main; main()",
                           *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def mersa_in_process(*args):
    """The trainer's commands without a new interpreter (fast), on an app of their own; errors
    surface as exceptions."""
    import typer
    from typer.testing import CliRunner

    from mersa_stream.train import cli

    app = typer.Typer()
    cli.register(app)
    out = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(args, out.exit_code, out.stdout, "")


def test_cli_evaluate_and_experiments(trained, corpus, tmp_path):
    result, opts = trained
    proc = mersa_in_process("evaluate", opts.out, "--dataset", "manifest",
                            "--data-dir", str(corpus), "--part", "test", "--scheme", "speaker",
                            "--folds", "4", "--json", "--cache-dir", opts.cache_dir)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["count"] == 12 and sum(map(sum, metrics["confusion"])) == 12
    assert (metrics["part"], metrics["scheme"]) == ("test", "speaker")
    assert metrics["accuracy"] == pytest.approx(result.test[SetKey("manifest", "test")]["accuracy"])
    for key in ("accuracy", "weighted_f1", "macro_f1", "balanced_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert isinstance(metrics["ece"], float) and 0.0 <= metrics["ece"] <= 1.0
    saved_t = load_checkpoint(opts.out).model.config.temperature
    assert metrics["temperature"] == pytest.approx(saved_t)
    # the scripts' form (benchmarks/flat_voices.py): `split` is the part, `scheme` the scheme
    from mersa_stream.train.evaluate import evaluate_checkpoint

    same = evaluate_checkpoint(opts.out, "manifest", corpus, split="test", scheme="speaker",
                               folds=4, cache_dir=Path(opts.cache_dir), progress=False)
    assert (same["count"], same["accuracy"]) == (metrics["count"], metrics["accuracy"])

    png = tmp_path / "diagrams" / "reliability.png"
    # `--split` is evaluate's old spelling of --part: still understood
    proc = mersa_in_process("evaluate", opts.out, "--dataset", "manifest",
                            "--data-dir", str(corpus), "--split", "test", "--scheme", "speaker",
                            "--folds", "4", "--cache-dir", opts.cache_dir,
                            "--reliability", str(png))
    assert proc.returncode == 0, proc.stderr
    assert f"ece {metrics['ece']:.3f}" in proc.stdout and "ECE" in proc.stdout
    assert str(png) in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    proc = mersa_in_process("experiments", "--dataset", "manifest", "--data-dir", str(corpus),
                 "--out", str(tmp_path / "exp"), "--architectures", "server,mersa",
                 "--audio-encoders", "wav2vec2", "--wav2vec2", opts.audio_spec,
                 "--folds", "4", "--epochs", "2", "--batch-size", "8", "--pair-text", "0.25",
                 "--cache-dir", opts.cache_dir, "--threads", "1",
                 "--text-encoder", opts.text_encoder, "--set", "train.hidden=16",
                 "--set", "train.heads=2", "--seeds", "3")
    assert proc.returncode == 0, proc.stderr
    run_config = json.loads((tmp_path / "exp" / "runs" / "mersa_wav2vec2_plain_fold0_seed3"
                             / "config.json").read_text())
    # flags and --set reach [train]; the grid sets architecture and seed itself
    settings = run_config["metadata"]["train"]
    assert (settings["pair_text"], settings["hidden"], settings["batch_size"]) == (0.25, 16, 8)
    assert (settings["architecture"], settings["seed"]) == ("mersa", 3)
    assert run_config["fusion"]["hidden"] == 16 and run_config["fusion"]["heads"] == 2
    table = (tmp_path / "exp" / "results.md").read_text()
    assert "| SERVER | wav2vec2 | plain |" in table and "| MERSA | wav2vec2 | plain |" in table
    assert "balanced acc" in table
    assert len(json.loads((tmp_path / "exp" / "results.json").read_text())["rows"]) == 2


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "x.wav").write_bytes(b"")
    (tmp_path / "data" / "manifest.csv").write_text("path,text,label\n../x.wav,hi,sad\n")
    proc = mersa("train", "--dataset", "manifest", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "o"))
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0 and "--allow-absolute-paths" in proc.stderr
    from mersa_stream.errors import ConfigError

    with pytest.raises(ConfigError, match="--dataset 'nope'"):
        mersa_in_process("train", "--dataset", "nope", "--data-dir", str(tmp_path),
                         "--out", str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="train.architecture: 'lstm' is not one of"):
        mersa_in_process("train", "--dataset", "manifest", "--data-dir", str(tmp_path / "data"),
                         "--out", str(tmp_path / "o"), "--architecture", "lstm")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_trained_checkpoint_runs_in_analyze(trained, tmp_path):
    from helpers import speak, write_wav

    _, opts = trained
    audio = np.concatenate([np.zeros(8000, np.float32), speak("I am so happy today"),
                            np.zeros(8000, np.float32)])
    wav = write_wav(tmp_path / "s.wav", audio)
    proc = mersa("analyze", str(wav), "--format", "jsonl", "--checkpoint", opts.out)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    assert rows and all(r["label"] in LABELS_4 for r in rows), proc.stdout
    assert all(set(r["probabilities"]) == set(LABELS_4) for r in rows)


# -------------------------------------------------------------- the shipped recipe, end to end

def write_two_corpora(root: Path) -> tuple[Path, Path]:
    """RAVDESS- and EmoDB-layout folders (3 speakers each, 2 clips per class per speaker) of
    short tones whose pitch carries the label."""
    rng = np.random.default_rng(1)
    t = np.arange(int(0.5 * 16000)) / 16000

    def clip(label: str, k: int) -> np.ndarray:
        audio = 0.3 * np.sin(2 * np.pi * TONES[label] * (1 + 0.03 * k) * t)
        return (audio + 0.01 * rng.standard_normal(len(t))).astype(np.float32)

    ravdess, emodb = root / "ravdess", root / "emodb"
    codes = {"neutral": "01", "happy": "03", "sad": "04", "anger": "05"}
    for actor in (1, 2, 3):
        for label, code in codes.items():
            for statement in (1, 2):
                name = f"03-01-{code}-01-0{statement}-01-{actor:02d}.wav"
                path = ravdess / f"Actor_{actor:02d}" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), clip(label, statement), 16000)
    letters = {"neutral": ("N", "neutral"), "happy": ("F", "happiness"), "sad": ("T", "sadness"),
               "anger": ("W", "anger")}
    texts = {"a01": "Der Lappen liegt auf dem Eisschrank.", "a02": "Das will sie am Mittwoch "
             "abgeben."}
    rows = ["path,speaker,emotion,text_id,text,duration_s"]
    (emodb / "wav").mkdir(parents=True)
    for speaker in ("03", "08", "09"):
        for label, (letter, emotion) in letters.items():
            for k, (text_id, text) in enumerate(texts.items()):
                name = f"{speaker}{text_id}{letter}a.wav"
                sf.write(str(emodb / "wav" / name), clip(label, k), 16000)
                rows.append(f"wav/{name},{speaker},{emotion},{text_id},{text},0.5")
    (emodb / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ravdess, emodb


@pytest.mark.slow
def test_two_corpora_whisper_layers_gated_recipe_end_to_end(encoders, tmp_path):
    """`mersa train` on ravdess+emodb (a folder each) with the whisper-layers encoder, the gated
    architecture, augmentation, neutral-voice pairing of MELD-format text data and calibration:
    a loadable checkpoint with per-corpus test sets and both corpora's licences."""
    from mersa_stream.config import TrainConfig as Settings
    from mersa_stream.train.calibration import T_MAX, T_MIN
    from mersa_stream.train.pipeline import LICENCES
    from test_train_data import make_meld

    bert, _ = encoders
    ravdess, emodb = write_two_corpora(tmp_path / "data")
    meld = make_meld(tmp_path / "data" / "meld")
    voices = tmp_path / "data" / "voices"  # a manifest of voiced clips, used with their audio
    voices.mkdir()
    rows = ["path,text,label,speaker"]
    for k, label in enumerate(TONES):
        sf.write(str(voices / f"v{k}.wav"), 0.2 * np.sin(np.arange(8000) / 16000 * 2 * np.pi
                                                          * 150).astype(np.float32), 16000)
        rows.append(f"v{k}.wav,words of {label},{label},synthetic")
    (voices / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ckpt"
    proc = mersa("train", "--dataset", "ravdess+emodb", "--data-dir", str(ravdess),
                 "--data-dir", str(emodb), "--audio-encoder", "whisper-layers",
                 "--architecture", "mersa-gated", "--augment-views", "1", "--pair-neutral", "0.3",
                 "--epochs", "2", "--folds", "3", "--text-data", f"meld:{meld}",
                 "--voice-data", f"manifest:{voices}",
                 "--text-encoder", str(bert), "--cache-dir", str(tmp_path / "cache"),
                 "--threads", "1", "--set", "train.hidden=32", "--set", "train.heads=4",
                 "--set", "train.audio_speech_only=true", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(out)
    config = ckpt.model.config
    assert (ckpt.audio_encoder.kind, config.audio_layers) == ("whisper-layers", 6)  # tiny.en: 4+2
    assert (config.architecture, config.hidden, config.heads) == ("mersa-gated", 32, 4)
    assert config.dropout == Settings().dropout  # the fusion default, by way of [train]
    fitted = [line for line in proc.stderr.splitlines() if line.startswith("calibration:")]
    assert len(fitted) == 1
    assert config.temperature == pytest.approx(float(fitted[0].split()[2]), abs=5e-4)
    assert T_MIN <= config.temperature <= T_MAX
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    settings = ckpt.metadata["train"]
    assert (settings["pair_neutral"], settings["architecture"], settings["epochs"]) == \
        (0.3, "mersa-gated", 2)
    tests = ckpt.metadata["metrics"]["test"]
    for name in ("ravdess+emodb/test", "ravdess/test", "emodb/test", "meld/test"):
        assert tests[name]["count"] > 0, name
    assert tests["ravdess/test"]["count"] + tests["emodb/test"]["count"] == \
        tests["ravdess+emodb/test"]["count"]
    card = (out / "README.md").read_text()
    for corpus in ("ravdess", "emodb", "meld"):
        assert LICENCES[corpus] in card, corpus
    assert f"`{ravdess}`, `{emodb}`" in card
    assert "| emodb/test |" in card and "| ravdess/test |" in card
    assert ckpt.metadata["voice_data"] == [{"dataset": "manifest", "data_dir": str(voices)}]
    assert "manifest voices/train: anger 1, happy 1, neutral 1, sad 1" in card
    # trained on the segmenter's speech of each clip: saved, and `evaluate` reads clips so too
    assert ckpt.audio_encoder.options == {"speech_only": True}
    from mersa_stream.train.evaluate import evaluate_checkpoint

    scored = evaluate_checkpoint(out, "emodb", emodb, part="all", cache_dir=tmp_path / "scored",
                                 progress=False)
    assert scored["count"] == 24
    keys = [json.loads(p.read_text()) for p in (tmp_path / "scored").glob("*/encoder.json")]
    audio_keys = [k for k in keys if k["modality"] == "audio"]
    assert [k["settings"] for k in audio_keys] == [{"speech_only": True}]
