"""Start-up (issue 18): what each command loads, not how long it takes (benchmarks/startup.py
times it). Commands that need no model import no torch or transformers; a file with no speech
loads no model; the text encoder is its concrete class (or, for a plain BERT, the PyTorch copy
that gives the very same numbers); models load while the audio is read, and nothing said
meanwhile is lost."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from helpers import conversation, have_espeak, small_checkpoint, write_wav
from mersa_stream.resolve import resolve_transformers
from mersa_stream.types import SAMPLE_RATE, EmotionResult, Transcript

HEAVY = ("torch", "transformers", "faster_whisper", "ctranslate2")
# `mersa ARGS` in a fresh interpreter; at exit, stderr's last line lists the HEAVY modules loaded
PROBE = ("import atexit, sys; atexit.register(lambda: print('LOADED', ','.join(m for m in "
         f"{HEAVY!r} if m in sys.modules), file=sys.stderr)); "
         "from mersa_stream.cli import main; main()")
TEXTS = ["Hello, Narrow.", "", "I can't believe you did that!!! [SEP] café naïve 北京",
         "word " * 100, "  ", "Well... okay then. Ångström", "x"]


def mersa(*args, cwd=None) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("LOADED"), proc.stderr
    return proc, set(filter(None, last.removeprefix("LOADED").strip().split(",")))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("startup") / "ckpt")


@pytest.fixture(scope="module")
def minilm():
    return resolve_transformers("sentence-transformers/all-MiniLM-L6-v2", "text", "--x").path


# ------------------------------------------------------------------- what each command imports


@pytest.mark.parametrize("args", [["config"], ["devices"], ["models"], ["analyze", "--help"]])
def test_commands_that_load_no_model_import_neither_torch_nor_transformers(args, checkpoint,
                                                                           repo):
    extra = ["--checkpoint", checkpoint] if args == ["models"] else []
    proc, loaded = mersa(*args, *extra, cwd=repo)
    assert proc.returncode in (0, 5), proc.stderr  # devices: 5 on a machine without a microphone
    assert not loaded, loaded


def test_models_lists_the_checkpoint_from_its_header(checkpoint, repo):
    proc, loaded = mersa("models", "--checkpoint", checkpoint, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert rows[0][:3] == ["emotion", "test-mersa-xattn (mersa-xattn: neutral, happy, sad, anger)",
                           "checkpoint"]
    assert [row[0] for row in rows] == ["emotion", "asr", "text encoder", "audio encoder"] or \
        [row[0] for row in rows] == ["emotion", "ASR", "text encoder", "audio encoder"]
    assert not loaded


def test_help_lists_every_command_without_transformers(repo):
    proc, loaded = mersa("--help", cwd=repo)
    assert proc.returncode == 0
    for command in ("analyze", "models", "config", "devices", "listen", "train", "evaluate"):
        assert command in proc.stdout
    assert not loaded, loaded


def test_a_file_with_no_speech_loads_no_model(tmp_path, checkpoint, repo):
    noise = np.random.default_rng(0).normal(0, 0.003, SAMPLE_RATE).astype(np.float32)
    wav = write_wav(tmp_path / "quiet.wav", noise)
    proc, loaded = mersa("analyze", wav, "-f", "jsonl", "--checkpoint", checkpoint, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "no speech found" in proc.stderr
    assert not loaded, loaded


def test_a_missing_model_still_stops_analyze_before_any_file(tmp_path, repo):
    """The models are found up front (they load later): a missing one is exit 4 at once, even
    when the files have no speech."""
    wav = write_wav(tmp_path / "quiet.wav", np.zeros(SAMPLE_RATE, np.float32))
    proc, _ = mersa("analyze", wav, "--checkpoint", tmp_path / "nowhere", cwd=repo)
    assert proc.returncode == 4
    assert "checkpoint folder not found" in proc.stderr


# ------------------------------------------------------------------------------ text encoder


def test_model_classes_are_those_auto_model_picks():
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    from mersa_stream.encoders.text import MODEL_CLASSES

    for model_type, name in MODEL_CLASSES.items():
        assert MODEL_MAPPING_NAMES[model_type] == name, model_type


def test_text_encoder_loads_the_concrete_class_not_auto_model(minilm, monkeypatch):
    import transformers

    from mersa_stream.encoders.text import TextEncoder, model_class

    def refuse(*args, **kwargs):
        raise AssertionError("AutoModel used")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    assert model_class(minilm) is transformers.BertModel
    encoder = TextEncoder(minilm, backend="transformers")
    assert type(encoder.model) is transformers.BertModel


def test_an_unknown_model_type_goes_through_auto_model(tmp_path):
    import transformers

    from mersa_stream.encoders.text import model_class, model_class_name

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-type"}))
    assert model_class_name(tmp_path) is None
    assert model_class(tmp_path) is transformers.AutoModel


def test_plain_bert_backend_gives_the_same_tokens_and_states(minilm):
    from mersa_stream.encoders.text import TextEncoder

    light = TextEncoder(minilm, 16, backend="auto")
    full = TextEncoder(minilm, 16, backend="transformers")
    assert light.backend == "bert" and full.backend == "transformers"
    for batch in ([TEXTS[0]], TEXTS, [""], TEXTS[2:4]):
        a, _ = light.tokenize(batch)
        b, _ = full.tokenize(batch)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert torch.equal(a[key], b[key]), (key, batch)
        (sa, ma), (sb, mb) = light.encode(batch), full.encode(batch)
        assert torch.equal(sa, sb) and torch.equal(ma, mb)


def test_plain_bert_backend_takes_checkpoint_text_weights(minilm):
    """Self-aligned tensors (transformers' names) load into either backend alike."""
    from mersa_stream.encoders.text import TextEncoder

    base = TextEncoder(minilm, 16, backend="transformers").model.state_dict()
    generator = torch.Generator().manual_seed(0)
    changed = {k: v + 0.01 * torch.randn(v.shape, generator=generator)
               for k, v in base.items() if k.startswith(("encoder.layer.5.", "pooler."))}
    light = TextEncoder(minilm, 16, state_dict=changed, backend="auto")
    full = TextEncoder(minilm, 16, state_dict=changed, backend="transformers")
    assert torch.equal(light.encode(TEXTS)[0], full.encode(TEXTS)[0])
    assert not torch.equal(light.encode(TEXTS)[0],
                           TextEncoder(minilm, 16, backend="auto").encode(TEXTS)[0])


def test_plain_bert_backend_does_not_import_transformers(minilm):
    code = ("import sys; from mersa_stream.encoders.text import TextEncoder; "
            f"e = TextEncoder({str(minilm)!r}, backend='auto'); e.encode(['hello there']); "
            "assert e.backend == 'bert'; print('transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_other_models_take_the_transformers_backend(tmp_path, minilm):
    from mersa_stream.encoders import bert

    folder = tmp_path / "roberta"
    shutil.copytree(minilm, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    assert bert.supported(minilm) and not bert.supported(folder)
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    assert not bert.supported(folder)


# ------------------------------------------------------------------- loading in the background


class FakeRecognizer:
    def __init__(self, config=None, inventory=None):
        self.calls = 0

    def recognize(self, utterances):
        self.calls += 1
        return [EmotionResult(u, Transcript("words"), "neutral", {"neutral": 1.0}, "fake")
                for u in utterances]

    def recognize_windows(self, windows):
        raise AssertionError("not packed here")


def test_loader_builds_once_and_hands_errors_to_the_caller():
    from mersa_stream.errors import ModelError
    from mersa_stream.recognizer import RecognizerLoader

    built = []

    def build(config, inventory):
        built.append(threading.current_thread().name)
        return FakeRecognizer()

    loader = RecognizerLoader(None, build=build)
    assert loader.recognize([]) == [] and not loader.started  # nothing to do: nothing loaded
    loader.start()
    loader.start()
    assert isinstance(loader.get(), FakeRecognizer) and loader.get() is loader.get()
    assert built == ["mersa-load-models"] and loader.ready and loader.load_seconds is not None

    def fail(config, inventory):
        raise ModelError("text encoder 'x': cannot load (broken)")

    with pytest.raises(ModelError, match="cannot load"):
        RecognizerLoader(None, build=fail).get()


@pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng to make speech")
def test_analyze_pipeline_starts_loading_at_the_first_speech(tmp_path):
    from mersa_stream.config import SegmenterConfig
    from mersa_stream.pipeline import recognize_stream
    from mersa_stream.recognizer import RecognizerLoader

    conv = conversation(["Why did you not call me yesterday?"], [], lead=0.8)
    chunks = np.array_split(conv.audio, 20)
    seen = []

    def build(config, inventory):
        return FakeRecognizer()

    loader = RecognizerLoader(None, build=build)
    silent = recognize_stream([np.zeros(SAMPLE_RATE, np.float32)] * 3, "quiet",
                              SegmenterConfig(), loader, on_speech=loader.start)
    assert list(silent) == [] and not loader.started

    def tracking():
        for i, chunk in enumerate(chunks):
            seen.append((i, loader.started))
            yield chunk

    results = list(recognize_stream(tracking(), "speech", SegmenterConfig(), loader,
                                    on_speech=loader.start))
    assert len(results) == 1
    # loading began while the audio was still being read, before the utterance closed
    started_at = next(i for i, started in seen if started)
    assert started_at < len(chunks) - 1


@pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng to make speech")
def test_listen_keeps_what_is_said_while_the_models_load(tmp_path):
    """A paced source, drop-oldest and a queue of 1: while the models load (1 s), every closed
    utterance waits for them; none is dropped. Then the observers hear `ready`."""
    from mersa_stream.config import load_config
    from mersa_stream.listen import Listener, Observer
    from mersa_stream.recognizer import RecognizerLoader
    from mersa_stream.sinks import JsonlSink
    from mersa_stream.sources import FileSource

    # pauses of 1 s: 0.6 s ones are within segmenter.merge_gap_ms (one utterance; issue 12)
    conv = conversation(["Good morning.", "Where are you?", "Come here now."], [1.0, 1.0],
                        lead=0.5, seed=3)
    wav = write_wav(tmp_path / "three.wav", conv.audio)
    fake = FakeRecognizer()

    def build(config, inventory):
        time.sleep(1.0)
        return fake

    class Ready(Observer):
        seconds: list = []

        def ready(self, seconds):
            self.seconds.append(seconds)

    cfg = load_config(None, ["listen.overflow=drop-oldest", "listen.queue_size=1",
                             "listen.speculate=false"], {})
    loader = RecognizerLoader(cfg, build=build)
    loader.start()
    stream = io.StringIO()
    observer = Ready()
    listener = Listener(cfg, loader, FileSource(wav, speed=20.0), [JsonlSink(stream)], [observer])
    assert listener.loading.is_set()
    stats = listener.run()
    assert stats.detected == 3 and stats.dropped == 0 and stats.processed == 3
    assert [json.loads(line)["index"] for line in stream.getvalue().splitlines()] == [0, 1, 2]
    assert len(observer.seconds) == 1 and observer.seconds[0] >= 1.0
    assert stats.max_queue >= 2  # they did wait beyond the queue's size
