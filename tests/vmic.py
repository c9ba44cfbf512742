"""A virtual microphone for tests: PulseAudio in user mode as a child process (see
docs/listen.md, "A virtual microphone"). Audio played with `VirtualMic.play(wav)` into the null
sink "speaker" comes out of the source "vmic" (the default source), paced in real time.

    from tests.vmic import vmic  # noqa: F401  (the fixture)

    def test_x(vmic):
        env = vmic.env            # os.environ + PULSE_SERVER for the app under test
        vmic.play(path)           # blocks until played (paplay -d speaker)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = """\
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=appout
set-default-sink appout
load-module module-null-sink sink_name=speaker format=s16le rate=16000 channels=1 norewinds=1
load-module module-remap-source source_name=vmic master=speaker.monitor
set-default-source vmic
"""


class VirtualMic:
    def __init__(self, folder: Path):
        self.folder = folder
        runtime = folder / "runtime"
        self.dirs = {"XDG_RUNTIME_DIR": runtime, "PULSE_RUNTIME_PATH": runtime / "pulse",
                     "PULSE_STATE_PATH": folder / "state", "XDG_CONFIG_HOME": folder / "config"}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(runtime, 0o700)
        self.server = f"unix:{runtime / 'pulse' / 'native'}"
        self.env = {**os.environ, **{k: str(v) for k, v in self.dirs.items()},
                    "PULSE_SERVER": self.server}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        script = self.folder / "vmic.pa"
        script.write_text(SCRIPT)
        self.log = open(self.folder / "pulseaudio.log", "wb")
        self.process = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1",
             "--disable-shm=yes", "--log-target=stderr"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pulseaudio exited ({self.process.returncode}); see "
                                   f"{self.folder / 'pulseaudio.log'}")
            if self.pactl("info").returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("pulseaudio did not become ready")

    def pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True,
                              timeout=10)

    def recording_clients(self) -> int:
        """How many streams are reading from a source (the app has its microphone open)."""
        out = self.pactl("list", "short", "source-outputs").stdout
        return len([line for line in out.splitlines() if line.strip()])

    def wait_for_recording(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.recording_clients():
                return
            time.sleep(0.1)
        raise TimeoutError("nothing opened the virtual microphone")

    def play(self, wav: Path, wait: bool = True) -> subprocess.Popen:
        """Play `wav` into the mic, paced in real time by the sink's clock."""
        proc = subprocess.Popen(["paplay", "-d", "speaker", str(wav)], env=self.env)
        if wait:
            proc.wait(timeout=600)
        return proc

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()


def _require_pulseaudio() -> None:
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"virtual microphone needs {', '.join(missing)} "
                    "(Debian: pulseaudio pulseaudio-utils; scripts/setup.sh installs them)")


def start_vmic(folder: Path) -> VirtualMic:
    _require_pulseaudio()
    mic = VirtualMic(folder)
    try:
        mic.start()
    except RuntimeError as exc:
        pytest.skip(f"virtual microphone unavailable: {exc}")
    return mic


@pytest.fixture(scope="module")
def vmic(tmp_path_factory):
    mic = start_vmic(tmp_path_factory.mktemp("vmic"))
    yield mic
    mic.stop()


@pytest.fixture
def fresh_vmic(tmp_path):
    """A mic of the test's own (for tests that stop the sound server)."""
    mic = start_vmic(tmp_path / "vmic")
    yield mic
    mic.stop()
