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
from train.data import LABELS_4, load_manifest
from train.features import FeatureCache, TextFeaturizer, encode_records
from train.fusion_train import TrainConfig
from train.pipeline import Featurizers, RunOptions, run

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
    assert "manifest/test" in result.test and "manifest/test (audio only)" in result.test
    assert result.test["manifest/test"]["count"] == 12  # one speaker of four


def test_seeded_training_is_deterministic(corpus, encoders, tmp_path):
    a = run(options(corpus, encoders, None, tmp_path / "cache", epochs=3), progress=False,
            say=lambda _: None)
    b = run(options(corpus, encoders, None, tmp_path / "cache", epochs=3), progress=False,
            say=lambda _: None)
    assert [h["train_loss"] for h in a.result.history] == [h["train_loss"] for h in b.result.history]


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
    from safetensors.torch import load_file

    from mersa_stream.encoders.text import TextEncoder
    from train.self_align import AlignConfig, SplitEncoder, balanced_batches, self_align
    import random

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


def mersa(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-c", "from mersa_stream.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def mersa_in_process(*args):
    """The same commands without a new interpreter (fast); errors surface as exceptions."""
    from typer.testing import CliRunner

    import train.cli  # noqa: F401  (registers the commands)
    from mersa_stream.cli import app

    out = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(args, out.exit_code, out.stdout, "")


def test_cli_evaluate_and_experiments(trained, corpus, tmp_path):
    result, opts = trained
    proc = mersa_in_process("evaluate", opts.out, "--dataset", "manifest", "--data-dir", str(corpus),
                 "--split", "test", "--scheme", "speaker", "--folds", "4", "--json",
                 "--cache-dir", opts.cache_dir)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["count"] == 12 and sum(map(sum, metrics["confusion"])) == 12
    assert metrics["accuracy"] == pytest.approx(result.test["manifest/test"]["accuracy"])
    for key in ("accuracy", "weighted_f1", "macro_f1", "balanced_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0

    proc = mersa_in_process("experiments", "--dataset", "manifest", "--data-dir", str(corpus),
                 "--out", str(tmp_path / "exp"), "--architectures", "server,mersa",
                 "--audio-encoders", "wav2vec2", "--wav2vec2", opts.audio_spec,
                 "--folds", "4", "--epochs", "2", "--batch-size", "8", "--pair-text", "0.25",
                 "--cache-dir", opts.cache_dir, "--threads", "1", "--text-encoder", opts.text_encoder)
    assert proc.returncode == 0, proc.stderr
    run_config = json.loads((tmp_path / "exp" / "runs" / "mersa_wav2vec2_plain_fold0_seed0"
                             / "config.json").read_text())
    assert run_config["metadata"]["train"]["pair_text"] == 0.25
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
    with pytest.raises(ConfigError, match="--architecture"):
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
