"""The live page of `mersa serve` in a real headless Chromium (Debian `chromium` + chromedriver,
driven by Selenium): its fake microphone plays a generated WAV, the page streams it to the server,
and utterances with their emotion appear. A screenshot is left in the test's tmp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import conversation, have_espeak, small_checkpoint, write_wav

# Debian's packages (`apt-get install chromium chromium-driver`), else whatever PATH offers
CHROMIUM = Path("/usr/bin/chromium") if Path("/usr/bin/chromium").exists() \
    else Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver") if Path("/usr/bin/chromedriver").exists() \
    else Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng to make speech"),
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs chromium and chromedriver (Debian: apt-get install "
                              "chromium chromium-driver)"),
]
SENTENCES = ["Why did you not call me yesterday?", "I am so happy to see you again."]
TOKEN = "page-token"


@pytest.fixture
def server(tmp_path):
    from mersa_stream.config import load_config
    from mersa_stream.recognizer import Recognizer
    from mersa_stream.serve import ServerThread

    config = load_config(None, [], {"models": {"checkpoint": str(small_checkpoint(
        tmp_path / "ckpt"))}, "serve": {"port": 0}})
    # with a token: the page passes on its own URL's ?token= (a browser cannot send a header)
    running = ServerThread(config, Recognizer(config), token=TOKEN).start()
    yield running
    running.stop()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # the fake microphone plays this file (in a loop)
    wav = write_wav(tmp_path / "mic.wav",
                    conversation(SENTENCES, [1.0], lead=0.6, seed=5).audio)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1100,800", "--use-fake-ui-for-media-stream",
                     "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={wav}",
                     "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_live_page_shows_utterances_with_their_emotion(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.http_url}?token={TOKEN}")
    browser.find_element(By.ID, "start").click()
    wait = WebDriverWait(browser, 90, poll_frequency=0.2)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
               in ("listening", "idle"))
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "listening", \
        browser.find_element(By.ID, "status").text
    rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#utterances li.final"))
    row = rows[-1]  # the oldest: the first sentence
    labels = {"neutral", "happy", "sad", "anger"}  # the test checkpoint's (helpers.LABELS)
    assert row.get_attribute("data-label") in labels
    assert row.find_element(By.CSS_SELECTOR, ".label").text in labels
    assert "call me yesterday" in row.find_element(By.CSS_SELECTOR, ".text").text.lower()
    assert row.find_element(By.CSS_SELECTOR, ".pct").text.endswith("%")
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline .seg")  # the emotion timeline
    browser.save_screenshot(str(tmp_path / "serve-page.png"))
    assert (tmp_path / "serve-page.png").stat().st_size > 10_000

    browser.find_element(By.ID, "start").click()  # stop: the server finishes and says done
    wait.until(lambda d: d.find_element(By.ID, "status-text").text.startswith("stopped"))
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
