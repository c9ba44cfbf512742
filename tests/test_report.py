"""The timeline report (`analyze --report`, `mersa report`): drawn from hand-made results and from
a real `mersa analyze` run; the HTML is loaded in a real headless Debian chromium."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import LABELS, conversation, have_espeak, write_wav
from mersa_stream.errors import ConfigError, InputError
from mersa_stream.report import ReportSink, label_colours, read_jsonl, report_kind, write_report
from mersa_stream.sinks import JsonlSink
from mersa_stream.types import EmotionResult, Transcript, Utterance

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

# (channel, start, end, label, confidence, words): a two-channel call
CALL = [
    (0, 0.4, 2.1, "neutral", 0.55, "Thank you for calling, how can I help?"),
    (1, 2.6, 5.0, "anger", 0.92, "My bill is wrong <again> & nobody fixes it!"),
    (0, 5.4, 7.0, "sad", 0.35, "I am sorry to hear that."),
    (1, 7.3, 9.9, "anger", 0.61, "I have called three times."),
    (0, 10.2, 12.0, "neutral", 0.8, "Let me look at it now."),
    (1, 12.4, 14.6, "happy", 0.74, "Oh, thank you, that is great."),
]


def make_result(source: str, index: int, channel, start, end, label, confidence, text,
                final=True):
    others = (1 - confidence) / (len(LABELS) - 1)
    probabilities = {name: others for name in LABELS} | {label: confidence}
    utterance = Utterance(source, index, start, end, np.zeros(16, np.float32), start,
                          channel=channel)
    return EmotionResult(utterance, Transcript(text), label, probabilities, "test-model",
                         final=final)


def run_report(path: Path) -> tuple[ReportSink, io.StringIO]:
    """call.wav finished with CALL (and an interim result before its third), quiet.wav finished
    with no speech, broken.wav never ended (as when it cannot be decoded)."""
    stream = io.StringIO()
    sink = ReportSink(JsonlSink(stream), path, ["call.wav", "quiet.wav", "broken.wav"])
    for index, row in enumerate(CALL):
        if index == 2:
            sink.write(make_result("call.wav", index, *row[:3], "happy", 0.99, "I am", False))
        sink.write(make_result("call.wav", index, *row))
    sink.end_source("call.wav", len(CALL))
    sink.end_source("quiet.wav", 0)
    sink.close()
    return sink, stream


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def open_page(browser, path: Path) -> None:
    """Load the report; nothing may be fetched and nothing may be logged as an error."""
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(path.resolve().as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def marks(browser, section: str):
    return browser.find_elements("css selector", f"section#{section} svg rect.mark")


def screenshot(browser, path: Path) -> np.ndarray:
    from PIL import Image

    browser.save_screenshot(str(path))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def near(image: np.ndarray, colour: str, tolerance: int = 30) -> int:
    """How many pixels are within `tolerance` of `colour` on every channel."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image - rgb) <= tolerance).all(axis=-1).sum())


def test_html_report_in_chromium(tmp_path, browser):
    report_path = tmp_path / "calls.html"
    _, stream = run_report(report_path)
    assert len(stream.getvalue().splitlines()) == len(CALL) + 1  # the run's output: all there
    open_page(browser, report_path)

    call = marks(browser, "f0")
    assert len(call) == len(CALL) and marks(browser, "f1") == [] and marks(browser, "f2") == []
    rows = browser.find_elements("css selector", "section#f0 .transcript tr[id]")
    assert len(rows) == len(CALL)
    assert "<again> & nobody" in rows[1].text  # words shown as written, not as markup
    sections = browser.find_elements("css selector", "section")
    status = [s.find_element("css selector", "p.meta").text for s in sections]
    assert status[0].startswith("complete;") and status[1].startswith("complete: no speech")
    assert status[2].startswith("no results")

    # colour per label, fill opacity rising with confidence, a lane per channel
    fills = {(m.get_attribute("data-label"), m.get_attribute("fill")) for m in call}
    assert len(fills) == len({row[3] for row in CALL}) == len({f for _, f in fills})
    opacity = [float(m.get_attribute("fill-opacity")) for m in call]
    assert np.argsort(opacity).tolist() == np.argsort([row[4] for row in CALL]).tolist()
    y = [float(m.get_attribute("y")) for m in call]
    assert max(y[i] for i, row in enumerate(CALL) if row[0] == 0) < \
        min(y[i] for i, row in enumerate(CALL) if row[0] == 1)

    totals = browser.find_elements("css selector", "section#f0 table.totals tr")
    anger = next(r for r in totals if r.text.startswith("anger")).text.split()
    seconds = sum(row[2] - row[1] for row in CALL if row[3] == "anger")
    assert anger[-3:-1] == ["2", f"{seconds:.1f}"]  # in all: utterances, seconds

    call[1].click()  # a mark leads to its line of the transcript
    assert browser.execute_script("return location.hash") == "#" + rows[1].get_attribute("id")

    image = screenshot(browser, tmp_path / "shot.png")
    assert image.std() > 20  # not a blank page
    assert near(image, label_colours(LABELS)["anger"]) > 200  # the confident anger mark


def test_png_report(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    path = tmp_path / "calls.png"
    run_report(path)
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    assert image.shape[1] >= 1000 and image.shape[0] >= 400
    assert image.std() > 20
    colours = label_colours(LABELS)
    assert all(near(image, colours[label]) > 100 for label in {row[3] for row in CALL})


def test_report_from_jsonl_keeps_final_results_only(tmp_path, browser):
    results = [make_result("a.wav", i, *row) for i, row in enumerate(CALL)]
    records = [r.to_record() for r in results]
    provisional = dict(records[2], final=False, label="happy")  # a live result, later replaced
    lines = [*records[:2], provisional, dict(records[2], final=True), *records[3:],
             {"file": "a.wav", "complete": True, "utterances": len(CALL)},
             make_result("b.wav", 0, None, 1.0, 2.0, "sad", 0.5, "hm").to_record()]
    jsonl = tmp_path / "out.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))

    report = read_jsonl([jsonl])
    a, b = report.calls
    assert [m.label for m in a.marks] == [row[3] for row in CALL]
    assert [m.channel for m in a.marks] == [row[0] for row in CALL]
    assert a.finished and b.finished is False and [m.channel for m in b.marks] == [0]
    assert report.labels == LABELS and report.models == ["test-model"]

    page = tmp_path / "out.html"
    write_report(report, page)
    open_page(browser, page)
    assert len(marks(browser, "f0")) == len(CALL) and len(marks(browser, "f1")) == 1


def test_bad_report_names_and_lines(tmp_path):
    for name in ("out.txt", "out", "missing-folder/out.html"):
        with pytest.raises(ConfigError, match="^--report "):
            report_kind(tmp_path / name)
    assert report_kind(tmp_path / "Out.HTML") == "html"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "a.wav", "complete": true, "utterances": 0}\n{"file": "a.wav"}\n')
    with pytest.raises(InputError, match=f"^{bad}:2: not a line of"):
        read_jsonl([bad])


def mersa(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mersa_stream", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_cli_refuses_a_bad_report_before_any_file(tmp_path):
    run = mersa("analyze", tmp_path / "none.wav", "--report", tmp_path / "r.pdf")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f"mersa: --report {tmp_path / 'r.pdf'}: give a "
                                               ".html or .png file name"]
    run = mersa("report", tmp_path / "none.jsonl", "--report", tmp_path / "r.html")
    assert run.returncode == 3 and run.stderr.count("\n") == 1 and "none.jsonl" in run.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
@pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng")
def test_analyze_report_through_the_cli(tmp_path, tiny_checkpoint, browser):
    talk = conversation(["I waited an hour and nobody answered the phone.",
                         "I understand, let me fix that for you right now.",
                         "Thank you, that is all I wanted."], [0.9, 1.0], noise_db=-40, seed=3)
    wav = write_wav(tmp_path / "call.wav", talk.audio)
    missing = tmp_path / "missing.wav"
    out, page = tmp_path / "out.jsonl", tmp_path / "call.html"
    run = mersa("analyze", wav, missing, "--checkpoint", tiny_checkpoint, "-f", "jsonl",
                "-o", out, "--report", page)
    assert run.returncode == 3, run.stderr  # the missing file; the report is written all the same
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(talk.spans)
    open_page(browser, page)
    shown = marks(browser, "f0")
    assert len(shown) == len(records)
    assert [m.get_attribute("data-label") for m in shown] == [r["label"] for r in records]
    assert marks(browser, "f1") == [] and "no results" in browser.find_element(
        "css selector", "section#f1 p.meta").text
    assert screenshot(browser, tmp_path / "shot.png").std() > 20

    again = mersa("report", out, "--report", tmp_path / "again.html")
    assert again.returncode == 0, again.stderr
    open_page(browser, tmp_path / "again.html")
    assert len(marks(browser, "f0")) == len(records)


def test_png_without_matplotlib_is_one_line_naming_the_flag(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^--report \S+call\.png: a \.png report needs "
                                          r"matplotlib \(pip install"):
        report_kind(tmp_path / "call.png")
    assert report_kind(tmp_path / "call.html") == "html"


@pytest.mark.slow
@pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng")
def test_a_stopped_run_still_writes_its_report(tmp_path, tiny_checkpoint):
    """SIGTERM mid-file: exit 130, every result already written is in the output and in the
    report, and the file is marked as not finished."""
    import signal
    import time

    talk = conversation(["Where is my parcel?", "It left the depot this morning.",
                         "Then why does the tracking say nothing?"] * 4, [0.7] * 11, seed=5)
    wav = write_wav(tmp_path / "long.wav", talk.audio)
    out, page = tmp_path / "out.jsonl", tmp_path / "long.html"
    process = subprocess.Popen(
        [sys.executable, "-m", "mersa_stream", "analyze", wav, "--checkpoint", tiny_checkpoint,
         "-f", "jsonl", "-o", out, "--report", page, "--no-pack", "--batch-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(written) < len(talk.spans)
    report = page.read_text()
    assert report.count("class='mark'") == len(written)
    assert "not finished" in report


def test_clock_carries_rounding_over_and_shows_hours():
    from mersa_stream.report import clock

    assert [clock(4.44), clock(59.96), clock(3725.5)] == ["0:04.4", "1:00.0", "1:02:05.5"]
    assert clock(6300, tenths=False) == "1:45:00"
