"""`Stream`: audio pushed in any pieces, at any rate, gives the records `listen --input` gives.

The real embedded ASR/text models run here, with a small random fusion checkpoint: texts and
boundaries are real, emotions are not meaningful (but must be the same either way).
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from helpers import (
    content,
    conversation,
    finals,
    have_espeak,
    listen_finals,
    small_checkpoint,
    write_wav,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng to make speech")]

SENTENCES = ["Why did you not call me yesterday?", "I am so happy to see you again."]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    checkpoint = small_checkpoint(folder / "ckpt")
    conv = conversation(SENTENCES, [1.0], lead=0.6, seed=5)
    wav = write_wav(folder / "conv.wav", conv.audio)
    reference = listen_finals(wav, checkpoint)
    assert len(reference) == len(SENTENCES)
    # the file as written (16-bit), which is what `listen --input` read
    import soundfile as sf

    audio, _ = sf.read(str(wav), dtype="int16")
    return {"checkpoint": checkpoint, "audio": audio, "reference": reference}


@pytest.fixture(scope="module")
def setup(data):
    from mersa_stream.config import load_config
    from mersa_stream.recognizer import Recognizer

    config = load_config(None, [], {"models": {"checkpoint": str(data["checkpoint"])}})
    return config, Recognizer(config)


def random_pieces(audio: np.ndarray, rng: np.random.Generator, largest: int):
    """`audio` cut at random places (pieces of 1 sample up to `largest`)."""
    at = 0
    while at < len(audio):
        size = int(rng.integers(1, largest))
        yield audio[at:at + size]
        at += size


def test_random_pieces_give_listen_records(data, setup):
    from mersa_stream.stream import Stream

    config, recognizer = setup
    seen = []
    got = []
    with Stream(recognizer, config, name="pushed", on_result=seen.append) as stream:
        for piece in random_pieces(data["audio"], np.random.default_rng(0), 4000):
            got += stream.push(piece)  # int16, as a client would send PCM
        got += stream.flush()
    records = [r.to_record() for r in got]
    assert [r.to_record() for r in seen] == records  # on_result saw the same, in order
    records = finals(records)
    assert [content(r) for r in records] == [content(r) for r in data["reference"]]
    assert all(r["file"] == "pushed" for r in records)
    for r in records:  # end of speech: when the server had that audio
        assert r["speech_ended_at"] <= r["detected_at"] <= r["emitted_at"]
    assert stream.stats.dropped == 0 and stream.done
    assert stream.flush() == []  # flushing twice is harmless


def test_other_rate_float_pushed_in_real_time_pieces(data, setup):
    """44.1 kHz float input is resampled; results arrive from push() while audio still comes."""
    from mersa_stream.stream import Stream

    config, recognizer = setup
    audio16 = data["audio"].astype(np.float32) / 32768.0
    audio44 = soxr.resample(audio16, 16000, 44100).astype(np.float32)
    stream = Stream(recognizer, config, sample_rate=44100)
    early, piece = [], 4410  # 100 ms
    for at in range(0, len(audio44), piece):
        early += stream.push(audio44[at:at + piece])
    # a little silence, as a live client would go on sending: the first result comes meanwhile
    silence = np.zeros(piece, np.float32)
    for _ in range(100):
        if early:
            break
        early += stream.push(silence)
        stream.listener.stop_requested.wait(0.1)
    rest = stream.flush()
    assert early, "no result before flush()"
    got = finals([r.to_record() for r in early + rest])
    ref = data["reference"]
    assert [g["index"] for g in got] == [r["index"] for r in ref]
    for g, r in zip(got, ref):
        assert abs(g["start"] - r["start"]) <= 0.06 and abs(g["end"] - r["end"]) <= 0.06
        assert g["text"] == r["text"]


def test_bad_input_is_an_input_error(setup):
    from mersa_stream.errors import InputError
    from mersa_stream.stream import Stream

    config, recognizer = setup
    with pytest.raises(InputError, match="sample rate"):
        Stream(recognizer, config, sample_rate=0)
    stream = Stream(recognizer, config)
    with pytest.raises(InputError, match="float32 or int16"):
        stream.push(np.zeros(10, np.int32))
    with pytest.raises(InputError, match="mono"):
        stream.push(np.zeros((10, 2), np.float32))
    assert stream.flush() == []  # nothing said, nothing recognised
    with pytest.raises(InputError, match="after flush"):
        stream.push(np.zeros(10, np.float32))
