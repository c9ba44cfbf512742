"""`mersa listen`: the live path gives what `analyze` gives; signals, overflow, device errors.

The real embedded ASR/text models run here, with a small random fusion checkpoint
(`small_checkpoint`): texts and boundaries are real, emotions are not meaningful.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import conversation, have_espeak, small_checkpoint, words, write_wav
from mersa_stream.types import SAMPLE_RATE

pytest_plugins = ["vmic"]  # the `vmic` and `fresh_vmic` fixtures

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng to make speech")]

MERSA = [sys.executable, "-c", "from mersa_stream.cli import main; main()"]
# chosen because tiny.en transcribes them the same whatever the sub-frame alignment of the audio
SENTENCES = ["Why did you not call me yesterday?",
             "I am so happy to see you again.",
             "I do not like this at all."]
BOUNDARY_TOLERANCE = 0.3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("listen")
    checkpoint = small_checkpoint(folder / "ckpt")
    conv = conversation(SENTENCES, [1.0, 1.2], lead=0.8)
    wav = write_wav(folder / "conv.wav", conv.audio)
    proc = subprocess.run([*MERSA, "analyze", str(wav), "--format", "jsonl",
                           "--checkpoint", str(checkpoint)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    reference = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(reference) == len(SENTENCES)
    return {"folder": folder, "checkpoint": checkpoint, "wav": wav, "conv": conv,
            "reference": reference}


def read_jsonl(text: str) -> list[dict]:
    assert text == "" or text.endswith("\n"), "last line is incomplete"
    return [json.loads(line) for line in text.splitlines()]


def finals(records: list[dict]) -> list[dict]:
    """The final records (interim ones, `final` false, come before the final of their index)."""
    assert all(isinstance(r["final"], bool) for r in records)
    return [r for r in records if r["final"]]


def assert_same_utterances(got: list[dict], reference: list[dict], aligned: bool) -> None:
    """Same count and texts; boundaries within the tolerance (after aligning the first start
    when the source's time 0 is not the file's, as with a microphone)."""
    assert len(got) == len(reference), [g["text"] for g in got]
    offset = got[0]["start"] - reference[0]["start"] if aligned else 0.0
    for g, r in zip(got, reference):
        assert abs(g["start"] - offset - r["start"]) <= BOUNDARY_TOLERANCE, (g, r)
        assert abs(g["end"] - offset - r["end"]) <= BOUNDARY_TOLERANCE, (g, r)
        assert words(g["text"]) == words(r["text"]), (g["text"], r["text"])
        for key in ("speech_ended_at", "detected_at", "emitted_at", "latency", "timings"):
            assert key in g
        assert g["speech_ended_at"] <= g["detected_at"] <= g["emitted_at"]
        assert abs(g["latency"]["total"] - (g["emitted_at"] - g["speech_ended_at"])) < 0.01


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mersa: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------- (a) virtual microphone


def test_live_microphone_matches_analyze(data, vmic):
    proc = subprocess.Popen([*MERSA, "listen", "--quiet", "--max-utterances", "3",
                             "--max-duration", "60", "--checkpoint", str(data["checkpoint"])],
                            env=vmic.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        vmic.wait_for_recording()  # the mic is open (models may still be loading: audio waits)
        # a source-output exists before its audio flows: 2 s of silence first, so the sound
        # server's start-up cannot swallow the first words (seen: "Why did you" lost)
        vmic.play(write_wav(data["folder"] / "mic.wav",
                            np.concatenate([np.zeros(2 * SAMPLE_RATE, np.float32),
                                            data["conv"].audio])))
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err.strip() == ""  # --quiet: no ALSA/JACK noise, no chatter
    got = finals(read_jsonl(out))
    assert_same_utterances(got, data["reference"], aligned=True)
    assert all(g["file"].startswith("mic:") for g in got)


# ------------------------------------------------------------------------------ (b) file source


def test_file_source_matches_analyze(data):
    out_file = data["folder"] / "file-source.jsonl"
    out_file.write_text("")  # --output appends
    proc = subprocess.run([*MERSA, "listen", "--input", str(data["wav"]), "--quiet", "--stats",
                           "--output", str(out_file), "--checkpoint", str(data["checkpoint"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(proc.stdout)
    got = finals(records)
    assert_same_utterances(got, data["reference"], aligned=False)
    assert read_jsonl(out_file.read_text()) == records
    assert "3 detected, 3 emitted, 0 dropped" in proc.stderr
    assert "total" in proc.stderr and "asr" in proc.stderr


# ------------------------------------------------------------------------------- (c) SIGTERM


def test_sigterm_mid_stream_keeps_every_finished_utterance(data):
    out_file = data["folder"] / "sigterm.jsonl"
    speed = 0.5  # half real time: the models load while the file plays, with room to spare
    proc = subprocess.Popen([*MERSA, "listen", "--input", str(data["wav"]), "--speed", str(speed),
                             "--quiet", "--output", str(out_file),
                             "--checkpoint", str(data["checkpoint"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out_file.exists() and out_file.read_text()):
            time.sleep(0.05)
        assert out_file.read_text(), "no utterance emitted"
        # the first sentence is out; stop in the middle of the second (3.8-5.6 s of audio): when
        # that is comes from the first record (its speech ended `latency.total` before emission)
        first = read_jsonl(out_file.read_text())[0]
        playback_start = first["emitted_at"] - first["latency"]["total"] - first["end"] / speed
        time.sleep(max(0.0, playback_start + 4.7 / speed - time.time()))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    records = read_jsonl(out_file.read_text())
    assert read_jsonl(out) == records
    got = finals(records)
    ref = data["reference"]
    assert len(got) == 2, got
    assert_same_utterances(got[:1], ref[:1], aligned=False)
    # the utterance in flight was closed at the stop and recognised, not lost
    assert abs(got[1]["start"] - ref[1]["start"]) <= BOUNDARY_TOLERANCE
    assert got[1]["end"] < ref[1]["end"]


# ------------------------------------------------------------------------------- (d) overflow


class SlowRecognizer:
    """The real recognizer, made slow: every call sleeps first."""

    def __init__(self, real, delay: float):
        self.real, self.delay, self.calls = real, delay, 0

    def recognize(self, utterances):
        self.calls += 1
        time.sleep(self.delay)
        return self.real.recognize(utterances)


@pytest.fixture(scope="module")
def recognizer(data):
    from mersa_stream.config import load_config
    from mersa_stream.recognizer import Recognizer

    return Recognizer(load_config(None, [], {"models": {"checkpoint": str(data["checkpoint"])}}))


@pytest.fixture(scope="module")
def six(data):
    # pauses and lead of 1 s: shorter ones (0.6/0.5 s before issue 12) are within the merge gap
    # now (one utterance; the last one closed by the end of input, which never drops)
    conv = conversation(["Good morning.", "Where are you?", "Come here now.", "That is mine.",
                         "Thank you so much.", "See you later."], [1.0] * 5, lead=1.0, seed=3)
    return write_wav(data["folder"] / "six.wav", conv.audio)


@pytest.mark.parametrize("policy, emitted, dropped", [
    ("drop-oldest", [0, 4, 5], [1, 2, 3]),
    ("drop-newest", [0, 1, 2], [3, 4, 5]),
    ("block", [0, 1, 2, 3, 4, 5], []),
])
def test_slow_recognizer_overflow_policy(data, recognizer, six, policy, emitted, dropped):
    import io

    from mersa_stream.config import load_config
    from mersa_stream.listen import Listener
    from mersa_stream.sinks import JsonlSink
    from mersa_stream.sources import FileSource

    cfg = load_config(None, [f"listen.overflow={policy}", "listen.queue_size=2"],
                      {"models": {"checkpoint": str(data["checkpoint"])}})
    # 20x real time: all six utterances close while the first one is being recognised
    source = FileSource(six, speed=20.0)
    slow = SlowRecognizer(recognizer, delay=1.0)
    stream = io.StringIO()
    stats = Listener(cfg, slow, source, [JsonlSink(stream)]).run()
    records = finals(read_jsonl(stream.getvalue()))
    assert stats.detected == 6
    assert [r["index"] for r in records] == emitted
    assert stats.emitted_indices == emitted and stats.processed == len(emitted)
    assert sorted(stats.dropped_indices) == dropped and stats.dropped == len(dropped)
    assert slow.calls == len(emitted)
    assert stats.max_queue <= 2
    # one latency per utterance: the records carry the very figures --stats summarises
    for stage in ("total", "endpoint", "queue", "recognize", "emit"):
        assert [r["latency"][stage] for r in records] == \
            pytest.approx(stats.latencies[stage], abs=1e-4)
    if policy == "block":
        # the reader waited for recognition: 6 slow calls take longer than the paced audio
        assert stats.wall_seconds >= 6 * 1.0


def test_unpaced_file_never_drops(data, recognizer, six):
    """A file read as fast as possible waits for recognition instead of dropping."""
    from mersa_stream.config import load_config
    from mersa_stream.listen import Listener

    cfg = load_config(None, ["listen.overflow=drop-oldest", "listen.queue_size=1"],
                      {"models": {"checkpoint": str(data["checkpoint"])}})
    from mersa_stream.sources import FileSource

    stats = Listener(cfg, SlowRecognizer(recognizer, 0.05), FileSource(six)).run()
    assert stats.detected == 6 and stats.processed == 6 and stats.dropped == 0


def test_speculative_recognition_gives_the_same_results_once(data, recognizer):
    """Recognition starts at tail_ms of silence; the close re-uses it: every hit saves a call,
    every miss costs one, and the records are those without speculation (and analyze's).
    Speculation needs an idle worker, so how many hits a run gets depends on the machine's speed;
    played in real time, the first utterance (worker surely idle) is always one."""
    import io

    from mersa_stream.config import load_config
    from mersa_stream.listen import Listener
    from mersa_stream.sinks import JsonlSink
    from mersa_stream.sources import FileSource

    runs = {}
    for speculate in (True, False):
        cfg = load_config(None, [f"listen.speculate={str(speculate).lower()}"],
                          {"models": {"checkpoint": str(data["checkpoint"])}})
        counting = SlowRecognizer(recognizer, delay=0.0)
        stream = io.StringIO()
        source = FileSource(data["wav"], speed=1.0)
        stats = Listener(cfg, counting, source, [JsonlSink(stream)]).run()
        runs[speculate] = (stats, counting.calls, finals(read_jsonl(stream.getvalue())))
    (spec, spec_calls, spec_records), (plain, plain_calls, plain_records) = runs[True], runs[False]
    assert spec.speculation_hits >= 1
    assert spec_calls == len(SENTENCES) - spec.speculation_hits + spec.speculated
    assert plain.speculated == 0 and plain_calls == len(SENTENCES)
    assert_same_utterances(spec_records, data["reference"], aligned=False)
    stable = ("index", "start", "end", "text", "label", "probabilities")
    assert [{k: r[k] for k in stable} for r in spec_records] == \
        [{k: r[k] for k in stable} for r in plain_records]
    assert sum(r["latency"]["queue"] == 0.0 for r in spec_records) >= spec.speculation_hits


# -------------------------------------------------------------------------- (e) device errors


def test_device_index_missing_exits_5(data, vmic):
    proc = subprocess.run([*MERSA, "listen", "--device", "99", "--checkpoint",
                           str(data["checkpoint"])], env=vmic.env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 5
    assert_one_line_error(proc.stderr, "99")
    assert proc.stdout == ""


def test_no_sound_server_exits_5(data, tmp_path):
    if Path("/dev/snd").exists():
        pytest.skip("this machine has a sound card: a default input may exist")
    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path / 'nothing-here'}"}
    proc = subprocess.run([*MERSA, "listen", "--checkpoint", str(data["checkpoint"])], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5
    assert_one_line_error(proc.stderr, "no audio input device")


def test_device_lost_mid_run_exits_5_and_keeps_results(data, fresh_vmic):
    out_file = data["folder"] / "lost.jsonl"
    # not --quiet: "mersa: listening on ..." on stderr says the models are loaded
    proc = subprocess.Popen([*MERSA, "listen", "--output", str(out_file),
                             "--checkpoint", str(data["checkpoint"])], env=fresh_vmic.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stderr.readline()
        assert ready.startswith("mersa: listening on mic:"), ready
        player = fresh_vmic.play(data["wav"], wait=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out_file.exists() and out_file.read_text()):
            time.sleep(0.05)
        time.sleep(1.0)  # into the second sentence (3.8-5.6 s)
        fresh_vmic.stop()  # the "microphone" is gone
        player.wait(timeout=10)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5, err
    assert_one_line_error(err, "lost")
    records = read_jsonl(out_file.read_text())
    assert read_jsonl(out) == records
    got = finals(records)
    # the first utterance, and the one cut short by the loss, both made it out
    assert len(got) == 2, got
    assert words(got[0]["text"]) == words(data["reference"][0]["text"])
    cut, whole = got[1], data["reference"][1]
    assert cut["end"] - cut["start"] < whole["end"] - whole["start"]


# ------------------------------------------------------------- (f) interim and final records


@pytest.fixture(scope="module")
def paused(data):
    """A sentence with inner pauses (~0.5 s at its full stops), then 6.5 s of silence."""
    conv = conversation(["Stop it. Just stop it. I mean it."], [], lead=0.5, seed=5)
    trailing = np.random.default_rng(5).normal(0, 10 ** (-45 / 20), 6 * SAMPLE_RATE)
    audio = np.concatenate([conv.audio, trailing.astype(np.float32)])
    return write_wav(data["folder"] / "paused.wav", audio)


def test_interim_records_then_the_final_one(data, recognizer, paused):
    """Played paced, an utterance's first record comes at its pause (interim, `final` false),
    its final record when it closes (same index); one final, every interim before it and never
    longer than it; the `first` latency is the interim's."""
    import io

    from mersa_stream.config import load_config
    from mersa_stream.listen import FIRST, Listener
    from mersa_stream.sinks import JsonlSink
    from mersa_stream.sources import FileSource

    # a 6 s merge gap (4 s of wall time at speed 1.5): the speculative recognition surely ends
    # while the pause still runs, even on a loaded machine where one begun at an inner pause
    # (void) runs first
    cfg = load_config(None, ["segmenter.merge_gap_ms=6000"],
                      {"models": {"checkpoint": str(data["checkpoint"])}})
    stream = io.StringIO()
    stats = Listener(cfg, recognizer, FileSource(paused, speed=1.5), [JsonlSink(stream)]).run()
    records = read_jsonl(stream.getvalue())
    final = finals(records)
    assert [r["index"] for r in final] == [0]
    assert stats.processed == 1 and stats.interim == len(records) - 1 >= 1, \
        (stats.speculated, stats.speculation_hits, stats.latencies)
    final_at = {r["index"]: (i, r) for i, r in enumerate(records) if r["final"]}
    for i, r in enumerate(records):
        if r["final"]:
            continue
        j, last = final_at[r["index"]]
        assert i < j and r["start"] == last["start"] and r["end"] <= last["end"]
    # the pause after each utterance outlasts its recognition: an interim of the final audio
    for index, (j, last) in final_at.items():
        same = [r for r in records[:j] if not r["final"] and r["index"] == index
                and (r["end"], r["text"], r["label"]) == (last["end"], last["text"], last["label"])]
        assert same, index
        assert same[-1]["emitted_at"] <= last["emitted_at"]
    assert words(final[0]["text"]) == words("Stop it. Just stop it. I mean it.")
    (first,), (total,) = stats.latencies[FIRST], stats.latencies["total"]
    assert total >= 4.0 > first  # the final waits for the merge gap; the interim does not
    assert first == pytest.approx(same[-1]["latency"]["total"], abs=0.01)


def test_interim_records_can_be_turned_off(data, recognizer, paused):
    import io

    from mersa_stream.config import load_config
    from mersa_stream.listen import Listener
    from mersa_stream.sinks import JsonlSink
    from mersa_stream.sources import FileSource

    cfg = load_config(None, ["listen.interim=false"],
                      {"models": {"checkpoint": str(data["checkpoint"])}})
    stream = io.StringIO()
    stats = Listener(cfg, recognizer, FileSource(paused, speed=4.0), [JsonlSink(stream)]).run()
    records = read_jsonl(stream.getvalue())
    assert stats.interim == 0 and [r["final"] for r in records] == [True]
