"""`analyze`'s shared Whisper windows with the real embedded models: every decoded word lands in
exactly one utterance, the one that said it, across utterance and window edges; an utterance's
emotion does not depend on the window it was decoded in; `analyze` and `listen` agree."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import conversation, have_espeak, words, write_wav
from mersa_stream.config import Config, ModelsConfig
from mersa_stream.packing import assign_words, pack
from mersa_stream.recognizer import Recognizer
from mersa_stream.types import SAMPLE_RATE, Utterance

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng")]

# ~32 s: two windows; pauses of 0.35-0.6 s, shorter than pre-roll + tail, so neighbouring
# utterances share audio and words sit close to each edge
SENTENCES = ["Elephants are very large animals.",
             "I bought a new piano for my sister.",
             "We are meeting again on Tuesday.",
             "Coffee is ready in the kitchen.",
             "My garden is full of yellow flowers.",
             "He rides his bicycle to work every day.",
             "Do not forget your umbrella.",
             "The doctor will see you now.",
             "Please open the window a little.",
             "She gave me a box of chocolate.",
             "We drove to the airport at night.",
             "Thank you for the lovely dinner."]
PAUSES = [0.35, 0.5, 0.4, 0.6, 0.35, 0.45, 0.5, 0.4, 0.35, 0.6, 0.4]
PRE_ROLL, TAIL = 0.3, 0.15  # the segmenter's defaults


@pytest.fixture(scope="module")
def talk():
    return conversation(SENTENCES, PAUSES, noise_db=-50, seed=3)


@pytest.fixture(scope="module")
def utterances(talk):
    """One utterance per sentence, cut as the segmenter cuts (speech + pre-roll + tail), so
    the test does not depend on where the segmenter's defaults put the boundaries."""
    out = []
    for i, (start, end) in enumerate(talk.spans):
        first, last = int((start - PRE_ROLL) * SAMPLE_RATE), int((end + TAIL) * SAMPLE_RATE)
        out.append(Utterance("talk", i, start, end, talk.audio[first:last], first / SAMPLE_RATE))
    return out


@pytest.fixture(scope="module")
def recognizer(tiny_checkpoint):
    return Recognizer(Config(models=ModelsConfig(checkpoint=str(tiny_checkpoint))))


@pytest.fixture(scope="module")
def decoded(utterances, recognizer):
    """analyze's path on the utterances, and what Whisper decoded for each window."""
    windows = list(pack(utterances, gap_s=Config().runtime.pack_gap_s))
    asr, seen = recognizer.asr, []
    original = asr.decode_windows

    def spy(audios, *args):
        seen.extend(original(audios, *args))
        return seen[-len(audios):]

    asr.decode_windows = spy
    try:
        results = recognizer.recognize_windows(windows)
    finally:
        del asr.decode_windows
    return windows, seen, results


def test_every_word_lands_once_in_the_utterance_that_said_it(utterances, decoded):
    windows, seen, results = decoded
    assert len(windows) >= 2 and any(p.skip > 0 for w in windows for p in w.placements)
    assert [r.utterance.index for r in results] == list(range(len(SENTENCES)))
    # nothing lost, nothing doubled, nothing reordered: the utterances' words, in order, are
    # the windows' words
    for window, d in zip(windows, seen):  # timed words where a window is shared
        assert "".join(w.text for w in d.words).strip() == (
            d.text if len(window.placements) > 1 else "")
    assert words(" ".join(r.transcript.text for r in results)) == words(
        " ".join(d.text for d in seen))
    assert [r.transcript.text for r in results] == [
        t for w, d in zip(windows, seen) for t in (
            assign_words(d.words, w.placements) if len(w.placements) > 1 else [d.text])]
    # each content word that belongs to one sentence only is found in that sentence's utterance
    # (short words are left out: a misheard "of" may come out as another sentence's "on")
    owners = collections.defaultdict(set)
    for i, sentence in enumerate(SENTENCES):
        for word in words(sentence):
            if len(word) >= 4:
                owners[word].add(i)
    unique = {word: i.pop() for word, i in owners.items() if len(i) == 1}
    found = 0
    for i, result in enumerate(results):
        for word in words(result.transcript.text):
            if word in unique:
                assert unique[word] == i, (word, result.transcript.text)
                found += 1
    assert found >= 0.85 * len(unique), [r.transcript.text for r in results]
    # first and last words of each utterance: the edges, where a misplaced word would show
    for result, sentence in zip(results, SENTENCES):
        got = words(result.transcript.text)
        assert got and (got[0] == words(sentence)[0] or got[-1] == words(sentence)[-1]), got


def test_emotion_is_the_same_alone_as_in_a_shared_window(utterances, recognizer, decoded):
    """What `listen` computes (each utterance alone) against analyze's windows: the audio
    features are the utterance's own either way, so where the words agree, so does the rest."""
    _, _, results = decoded
    seen: dict[int, list[np.ndarray]] = collections.defaultdict(list)
    original = recognizer.audio_features

    def spy(batch, whisper_frames):
        features = original(batch, whisper_frames)
        for u, f in zip(batch, features):
            seen[u.index].append(f)
        return features

    recognizer.audio_features = spy
    try:
        recognizer.recognize_windows(list(pack(utterances[:6], gap_s=0.5)))
        alone = [recognizer.recognize([u])[0] for u in utterances[:6]]
    finally:
        del recognizer.audio_features
    for index in range(6):
        in_window, by_itself = seen[index]
        assert in_window.shape == by_itself.shape
        np.testing.assert_allclose(in_window, by_itself, atol=1e-5)
    for a, b in zip(alone, results):
        if a.transcript.text == b.transcript.text:
            assert a.label == b.label
            assert np.allclose(list(a.probabilities.values()), list(b.probabilities.values()),
                               atol=1e-3)


# chosen because tiny.en transcribes them the same alone as in a shared window
AGREEMENT = ["Why did you not call me yesterday?",
             "I am so happy to see you again.",
             "I do not like this at all."]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mersa_stream", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_listen_on_a_file_and_analyze_agree(tmp_path, tiny_checkpoint):
    """`listen --input F` (unpaced) and `analyze F` print the same records: an unpaced file is
    decoded in analyze's shared windows. Played in real time (`--speed`), listen decodes each
    utterance alone as it ends: the same utterances and words, punctuation may differ."""
    conv = conversation(AGREEMENT, [1.0, 1.2], lead=0.8)
    wav = write_wav(tmp_path / "conv.wav", conv.audio)
    analyzed = run_cli("analyze", wav, "--format", "jsonl", "--checkpoint", tiny_checkpoint)
    listened = run_cli("listen", "--input", wav, "--quiet", "--checkpoint", tiny_checkpoint)
    paced = run_cli("listen", "--input", wav, "--quiet", "--speed", "50",
                    "--checkpoint", tiny_checkpoint)
    for run in (analyzed, listened, paced):
        assert run.returncode == 0, run.stderr
    a = [json.loads(line) for line in analyzed.stdout.splitlines()]
    b = [r for r in map(json.loads, listened.stdout.splitlines()) if r.get("final", True)]
    c = [r for r in map(json.loads, paced.stdout.splitlines()) if r.get("final", True)]
    assert len(a) == len(AGREEMENT)
    key = ("index", "start", "end", "text", "label")
    assert [[r[k] for k in key] for r in b] == [[r[k] for k in key] for r in a]
    for x, y in zip(a, b):
        for label, p in x["probabilities"].items():
            assert y["probabilities"][label] == pytest.approx(p, abs=1e-4)
    key = ("index", "start", "end")
    assert [[r[k] for k in key] for r in c] == [[r[k] for k in key] for r in a]
    assert [words(r["text"]) for r in c] == [words(r["text"]) for r in a]
