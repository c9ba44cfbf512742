"""`mersa serve` with a real `websockets` client: the records of `listen --input`, sessions kept
apart, tokens, start-up refusals, limits and bad input (each closing only its own session).

The real embedded ASR/text models run here with a small random fusion checkpoint: texts and
boundaries are real, emotions are not meaningful (but the same whichever path gives them).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from helpers import (
    MERSA,
    content,
    conversation,
    finals,
    have_espeak,
    listen_finals,
    small_checkpoint,
    word_error_rate,
    write_wav,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng to make speech")]

SENTENCES_A = ["Why did you not call me yesterday?", "I am so happy to see you again."]
SENTENCES_B = ["I do not like this at all.", "Thank you so much for the lovely dinner."]
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    checkpoint = small_checkpoint(folder / "ckpt")
    wav_a = write_wav(folder / "a.wav", conversation(SENTENCES_A, [1.0], lead=0.6, seed=5).audio)
    wav_b = write_wav(folder / "b.wav", conversation(SENTENCES_B, [0.9], lead=0.5, seed=6,
                                                     voices=("en-us",)).audio)
    reference = listen_finals(wav_a, checkpoint)
    assert len(reference) == len(SENTENCES_A)
    return {"checkpoint": checkpoint, "reference": reference,
            "a": sf.read(str(wav_a), dtype="int16")[0], "b": sf.read(str(wav_b), dtype="int16")[0]}


@pytest.fixture(scope="module")
def recognizer(data):
    from mersa_stream.recognizer import Recognizer

    return Recognizer(config_with(data))


def config_with(data, **serve):
    from mersa_stream.config import load_config

    return load_config(None, [], {"models": {"checkpoint": str(data["checkpoint"])},
                                  "serve": {"port": 0, **serve}})


@pytest.fixture
def server_factory(data, recognizer):
    from mersa_stream.serve import ServerThread

    started = []

    def make(token: str = "", **serve):
        started.append(ServerThread(config_with(data, **serve), recognizer, token=token).start())
        return started[-1]

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(data, recognizer):
    from mersa_stream.serve import ServerThread

    running = ServerThread(config_with(data), recognizer).start()
    yield running
    running.stop()


def session(url: str, messages, headers=None):
    """Send `messages` (bytes: audio, dict: JSON text), then read until the server closes.
    Returns (JSON messages received, close code, close reason)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    received = []
    with connect(url, additional_headers=headers, max_size=None, open_timeout=10) as ws:
        try:
            for message in messages:
                ws.send(json.dumps(message) if isinstance(message, dict) else message)
        except ConnectionClosed:
            pass  # closed early: what it said before closing is still read below
        try:
            while True:
                received.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed as closed:
            frame = closed.rcvd
            return received, frame.code if frame else None, frame.reason if frame else None


def pieces(data: bytes, rng: np.random.Generator, largest: int = 9000):
    at = 0
    while at < len(data):
        size = int(rng.integers(1, largest))  # odd sizes too: samples split between messages
        yield data[at:at + size]
        at += size


def as_message_list(audio: np.ndarray, seed: int, encoding: str = "pcm_s16le") -> list:
    raw = audio.astype("<i2").tobytes() if encoding == "pcm_s16le" else \
        (audio.astype(np.float32) / 32768.0).astype("<f4").tobytes()
    return [*pieces(raw, np.random.default_rng(seed)), {"type": "end"}]


# --------------------------------------------------------------------------------- the stream


def test_a_stream_of_speech_gives_listen_records(data, server):
    received, code, reason = session(server.url, as_message_list(data["a"], seed=1))
    assert (code, reason) == (1000, "done")
    *utterances, done = received
    assert all(m["type"] == "utterance" and isinstance(m["final"], bool) for m in utterances)
    utterances = finals(utterances)
    assert done == {"type": "done", "utterances": len(data["reference"])}
    assert [content(m) for m in utterances] == [content(r) for r in data["reference"]]
    assert len({m["file"] for m in utterances}) == 1 and utterances[0]["file"].startswith("ws:")
    for m in utterances:
        assert m["speech_ended_at"] <= m["detected_at"] <= m["emitted_at"]


def test_two_concurrent_clients_each_get_only_their_own(data, server):
    results = {}

    def client(name, messages, query):
        results[name] = session(server.url + query, messages)

    threads = [threading.Thread(target=client, args=("a", as_message_list(data["a"], 2), "")),
               # the other one as 32-bit float at 8 kHz
               threading.Thread(target=client, args=(
                   "b", as_message_list(_resample(data["b"], 8000), 3, "f32le"),
                   "?sample_rate=8000&encoding=f32le"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for name, sentences in (("a", SENTENCES_A), ("b", SENTENCES_B)):
        received, code, _ = results[name]
        assert code == 1000
        *utterances, done = received
        utterances = finals(utterances)
        assert done["utterances"] == len(sentences) == len(utterances)
        others = SENTENCES_B if name == "a" else SENTENCES_A
        for sentence, message in zip(sentences, utterances):
            # its own words (tiny.en may slip on one), none of the other client's sentences
            assert word_error_rate(sentence, message["text"]) <= 0.34, (sentence, message)
            assert min(word_error_rate(o, message["text"]) for o in others) >= 0.6, message
    assert [content(m) for m in finals(results["a"][0][:-1])] == \
        [content(r) for r in data["reference"]]
    files = {m["file"] for name in "ab" for m in results[name][0][:-1]}
    assert len(files) == 2


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(audio.astype(np.float32), 16000, rate).astype(np.float32)


# ------------------------------------------------------------------------------------ security


def test_missing_or_wrong_token_gets_401_before_the_upgrade(server_factory):
    from websockets.exceptions import InvalidStatus

    guarded = server_factory(token=TOKEN)
    for url, headers in ((guarded.url, None), (guarded.url + "?token=nope", None),
                         (guarded.url, {"Authorization": "Bearer nope"})):
        with pytest.raises(InvalidStatus) as refused:
            session(url, [{"type": "end"}], headers=headers)
        assert refused.value.response.status_code == 401
    for url, headers in ((guarded.url + f"?token={TOKEN}", None),
                         (guarded.url, {"Authorization": f"Bearer {TOKEN}"})):
        received, code, _ = session(url, [{"type": "end"}], headers=headers)
        assert (received, code) == ([{"type": "done", "utterances": 0}], 1000)
    # a page elsewhere cannot drive the server from its visitors' browsers
    with pytest.raises(InvalidStatus) as refused:
        session(guarded.url + f"?token={TOKEN}", [], headers={"Origin": "http://evil.example"})
    assert refused.value.response.status_code == 403
    other = server_factory(token=TOKEN, origins="https://app.example")  # unless allowed
    received, code, _ = session(other.url + f"?token={TOKEN}", [{"type": "end"}],
                                headers={"Origin": "https://app.example"})
    assert code == 1000


def test_non_loopback_bind_without_token_is_refused_at_start_up():
    env = {k: v for k, v in os.environ.items() if k != "MERSA_TOKEN"}
    proc = subprocess.run([*MERSA, "serve", "--host", "0.0.0.0"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mersa: serve.host '0.0.0.0'"), proc.stderr
    assert "token" in lines[0] and "Traceback" not in proc.stderr


def test_busy_port_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([*MERSA, "serve", "--port", str(port)], capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot bind" in lines[0] and str(port) in lines[0], proc.stderr


def test_page_health_and_unknown_paths(server):
    base = server.http_url
    page = urllib.request.urlopen(base, timeout=10)
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Content-Security-Policy" in page.headers
    assert b"AudioWorklet" in page.read()
    health = json.loads(urllib.request.urlopen(base + "healthz", timeout=10).read())
    assert health["status"] == "ok" and health["models"] == "ready"
    for path, status in (("etc/passwd", 404), ("../config.toml", 404),
                         ("v1/listen?sample_rate=7", 400), ("v1/listen?encoding=mp3", 400)):
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(base + path, timeout=10)
        assert answer.value.code == status, path


# ---------------------------------------------------------------------- limits and bad input


def test_bad_input_closes_only_its_session(data, server_factory):
    limit = 4096
    server = server_factory(max_message_bytes=limit)
    good = {}
    messages = [*_fixed_pieces(data["a"], limit), {"type": "end"}]
    worker = threading.Thread(target=lambda: good.update(result=session(server.url, messages)))
    worker.start()
    rng = np.random.default_rng(7)
    cases = [
        (server.url, [b"\0" * (limit + 2)], 1009, "message of"),
        (server.url + "?encoding=f32le", [rng.bytes(4000)], 1007, "f32le"),
        (server.url, [b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(2000)], 1007, "WAV file"),
        (server.url, [{"type": "stop"}], 1008, "unknown message type"),
        (server.url, ["not json"], 1008, "JSON"),
    ]
    for url, messages, code, fragment in cases:
        received, got_code, reason = session(url, messages)
        assert got_code == code, (messages[0][:20], received, reason)
        assert received[-1]["type"] == "error" and fragment in received[-1]["message"]
    # far beyond the limit: cut off by the WebSocket layer at once, without reading it
    _, got_code, _ = session(server.url, [b"\0" * (3 * limit)])
    assert got_code == 1009
    worker.join(120)
    received, code, _ = good["result"]
    assert code == 1000 and [content(m) for m in finals(received[:-1])] == \
        [content(r) for r in data["reference"]]


def wait_for_no_session(server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while server.server.sessions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.server.sessions == 0


def _fixed_pieces(audio: np.ndarray, size: int) -> list[bytes]:
    raw = audio.astype("<i2").tobytes()
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def test_session_limit_idle_timeout_and_queued_audio(data, server_factory):
    from websockets.sync.client import connect

    server = server_factory(max_sessions=1, idle_timeout_s=1.0, max_queued_audio_s=1.0)
    with connect(server.url):
        received, code, reason = session(server.url, [{"type": "end"}])
        assert code == 1013 and "max_sessions" in reason and received[0]["type"] == "error"
    wait_for_no_session(server)  # the server notices the close a moment later
    received, code, reason = session(server.url, [])  # sends nothing
    assert (code, reason) == (1008, "idle for 1 s")
    # far faster than real time while recognition is busy: more than 1 s waits, then refused
    flood = [data["a"].astype("<i2").tobytes()] * 20
    received, code, reason = session(server.url, flood)
    assert code == 1008 and "max_queued_audio_s" in received[-1]["message"]


# ---------------------------------------------------------------------------- shared batches


def test_calls_from_many_sessions_share_batches_and_get_their_own_results(data, recognizer):
    from mersa_stream.batching import SharedBatcher
    from mersa_stream.config import SegmenterConfig
    from mersa_stream.segmenter import Segmenter

    utterances = []
    for name in ("a", "b"):
        segmenter = Segmenter(SegmenterConfig(), source=name)
        utterances += segmenter.push(data[name].astype(np.float32) / 32768.0)
        utterances += segmenter.flush()
    assert len(utterances) == 4
    alone = [recognizer.recognize([u])[0] for u in utterances]
    batcher = SharedBatcher(recognizer, max_batch=8)
    got: dict[int, list] = {}
    gone = batcher.session()

    def call(i):
        got[i] = batcher.session().recognize([utterances[i]])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    threads[0].start()
    time.sleep(0.05)  # the first call runs alone; the others arrive meanwhile, batched together
    for t in threads[1:]:
        t.start()
    gone.cancel()
    assert gone.recognize(utterances) == []  # a cancelled session costs nothing any more
    for t in threads:
        t.join(60)
    batcher.close()
    for i, u in enumerate(utterances):
        (result,) = got[i]
        assert result.utterance is u
        assert result.transcript.text == alone[i].transcript.text
        assert result.label == alone[i].label
        assert np.allclose(list(result.probabilities.values()),
                           list(alone[i].probabilities.values()), atol=1e-3)
    assert batcher.stats.utterances == 4 and batcher.stats.largest >= 2


def test_shutdown_finishes_open_sessions(data, server_factory):
    """SIGINT/SIGTERM (`stop`): an open session still gets its last utterance and `done`."""
    server = server_factory()
    got = {}
    audio = as_message_list(data["a"], seed=8)[:-1]  # no {"type": "end"}: the server stops first
    client = threading.Thread(target=lambda: got.update(result=session(server.url, audio)))
    client.start()
    time.sleep(1.5)  # every message read (milliseconds), recognition still going on
    server.stop()
    client.join(60)
    received, code, reason = got["result"]
    assert (code, reason) == (1001, "server shutting down")
    *utterances, done = received
    assert [content(m) for m in finals(utterances)] == [content(r) for r in data["reference"]]
    assert done == {"type": "done", "utterances": len(data["reference"])}
