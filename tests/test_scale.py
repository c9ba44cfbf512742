"""`analyze` over many files at once (scale.py): folders and globs, worker processes, a real local
Ray cluster, and a worker or actor killed mid-file (the test kills it)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from helpers import conversation, have_espeak, write_wav
from mersa_stream.config import Config, load_config
from mersa_stream.scale import (
    SCRATCH_PREFIX,
    expand_inputs,
    largest_first,
    plan_ray,
    planned_workers,
    worker_config,
)

SENTENCES = [
    "I am really happy that you came to visit us this weekend.",
    "The weather was cold and windy all day yesterday.",
    "Nobody told me that the meeting was cancelled.",
    "We should take the early train tomorrow morning.",
]
# one thread per worker: two workers fill the 2-core CI machine, and the figures of every run
# come out of the same arithmetic (the runs are compared record for record)
ONE_THREAD = ("--set", "runtime.cpu_threads=1")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("RAY_ADDRESS", None)
# the test cluster's servers listen on every interface (Ray's way): only callers with the token
ENV.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng")


# -- which files, how many workers (no models) -------------------------------------------------


def test_folders_and_globs_become_their_audio_files(tmp_path):
    for name in ("b.wav", "a.mp3", "sub/c.flac", "sub/deeper/d.MP4", "notes.txt", "sub/e.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * len(name))
    (tmp_path / "empty").mkdir()
    inputs = expand_inputs([tmp_path, f"{tmp_path}/*.wav", f"{tmp_path}/**/*.flac",
                            tmp_path / "missing.wav", tmp_path / "empty", f"{tmp_path}/*.ogg"])
    names = [str(p.relative_to(tmp_path)) for p in inputs.files[:4]]
    assert names == ["a.mp3", "b.wav", "sub/c.flac", "sub/deeper/d.MP4"]  # sorted, recursive
    assert inputs.files[4:] == [tmp_path / "b.wav", tmp_path / "sub/c.flac",
                                tmp_path / "missing.wav"]  # a missing file stays: it fails later
    assert inputs.problems == [f"{tmp_path / 'empty'}: no audio or video files in this folder",
                               f"{tmp_path}/*.ogg: no file matches this pattern"]
    assert largest_first(inputs.files[:4])[0].name == "d.MP4"  # the biggest file first


def test_worker_count_follows_the_cores_and_threads():
    def config(workers: int, threads: int) -> Config:
        return load_config(None, [f"analyze.workers={workers}", f"runtime.cpu_threads={threads}"])

    assert planned_workers(config(0, 0), 100) == 1  # every core for one worker: today's run
    assert planned_workers(config(0, 1), 100) == max(1, len(os.sched_getaffinity(0)))
    assert planned_workers(config(8, 1), 3) == 3  # never more workers than files
    assert worker_config(config(2, 0), 2, cores=8).runtime.cpu_threads == 4  # shared out
    assert worker_config(config(2, 3), 2, cores=8).runtime.cpu_threads == 3  # as configured


def test_ray_plan_fits_the_cluster():
    def plan(resources: dict, *overrides: str, files: int = 100):
        return plan_ray(load_config(None, list(overrides)), resources, files)

    cpu = plan({"CPU": 2.0})
    assert (cpu.actors, cpu.num_cpus, cpu.num_gpus) == (2, 1, 0)  # one 1-thread actor per core
    assert cpu.config.runtime.cpu_threads == 1 and cpu.config.runtime.device_type == "cpu"
    gpu = plan({"CPU": 16.0, "GPU": 2.0})
    assert (gpu.actors, gpu.num_cpus, gpu.num_gpus) == (2, 1, 1)  # one actor per GPU
    assert plan({"CPU": 16.0, "GPU": 2.0}, "runtime.device_type=cpu").actors == 16
    wide = plan({"CPU": 2.0}, "runtime.cpu_threads=4")  # never an actor the cluster cannot place
    assert (wide.actors, wide.num_cpus) == (1, 2)
    assert plan({"CPU": 2.0}, "analyze.workers=5").actors == 2
    assert plan({"CPU": 8.0}, "analyze.workers=3").actors == 3
    assert plan({"CPU": 8.0}, files=2).actors == 2


def test_ray_missing_is_one_line_naming_the_flag(tmp_path):
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no ray here')\n")
    env = {**ENV, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run([sys.executable, "-m", "mersa_stream", "analyze", str(tmp_path),
                          "--ray", "auto"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "mersa: --ray: Ray is not installed; install it with  pip install 'mersa-stream[ray]'"]


# -- real runs: the embedded models on a folder of generated recordings ------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Three one-sentence calls and a longer one (17 s), in a folder and a sub-folder."""
    folder = tmp_path_factory.mktemp("archive")
    (folder / "sub").mkdir()
    write_wav(folder / "long.wav", conversation(SENTENCES, [0.8, 0.8, 0.8], seed=1).audio)
    for i, name in enumerate(("a.wav", "sub/b.wav", "sub/c.wav")):
        write_wav(folder / name, conversation(SENTENCES[i:i + 1], [], seed=2 + i).audio)
    (folder / "notes.txt").write_text("not audio")
    return folder


def mersa(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mersa_stream", "analyze", *map(str, args),
                             *ONE_THREAD, "--format", "jsonl"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **popen)


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return process.returncode, err


def records_by_file(path: Path) -> dict[str, list[dict]]:
    """Each file's result records (timings dropped: wall clock), checking on the way that each
    file's records are contiguous, in time order, and followed by at most one completion."""
    files: dict[str, list[dict]] = {}
    completed: dict[str, int] = {}
    previous = None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        name = record["file"]
        if "complete" in record:
            assert name not in completed and record["utterances"] == len(files.get(name, []))
            completed[name] = record["utterances"]
            continue
        assert name == previous or name not in files, f"{name}: records not contiguous"
        previous = name
        record.pop("timings", None)
        files.setdefault(name, []).append(record)
    for records in files.values():
        assert [r["start"] for r in records] == sorted(r["start"] for r in records)
    if completed:
        assert set(completed) >= set(files)
    return files


@pytest.fixture(scope="module")
def baseline(archive, tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("one") / "one.jsonl"
    code, err = finish(mersa(archive, "--workers", 1, "--output", out))
    assert code == 0, err
    found = records_by_file(out)
    assert sorted(found) == [str(archive / n) for n in ("a.wav", "long.wav", "sub/b.wav",
                                                        "sub/c.wav")]
    assert len(found[str(archive / "long.wav")]) == len(SENTENCES)
    return found


def holder_of(wanted: Callable[[str], bool]) -> int | None:
    """The process that has a file open that `wanted` accepts (a worker mid-file: decoding
    streams it, so it stays open while the file is recognised)."""
    for fds in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(wanted(os.readlink(fd)) for fd in fds.iterdir()):
                return int(fds.parent.name)
        except OSError:  # gone, or not ours to look at
            continue
    return None


def kill_when_open(process: subprocess.Popen, wanted: Callable[[str], bool],
                   timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        pid = holder_of(wanted)
        if pid is not None and pid != process.pid:
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)
    raise AssertionError("no worker ever had the long file open")


@pytest.mark.slow
@needs_espeak
def test_two_workers_give_the_records_of_one_even_when_one_is_killed_mid_file(
        archive, baseline, tmp_path):
    out = tmp_path / "two.jsonl"
    long = str(archive / "long.wav")
    # a glob and a folder: the same files, under the same names, as the folder alone
    run = mersa(f"{archive}/*.wav", archive / "sub", "--workers", 2, "--output", out, "--resume")
    assert kill_when_open(run, lambda target: target == long)
    code, err = finish(run)
    assert code == 0, err
    assert f"{long}: its worker stopped (killed by SIGKILL); redoing it" in err
    assert records_by_file(out) == baseline  # every file once, each with its completion record
    assert sum('"complete": true' in line for line in out.read_text().splitlines()) == 4


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """A real local Ray cluster on 127.0.0.1 with 2 CPUs (the head only), stopped at the end:
    `ray start --block` stops the processes it started when it is terminated."""
    pytest.importorskip("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must fit in 107 bytes
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head",
                             "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2", "--include-dashboard", "false",
                             "--disable-usage-stats", "--temp-dir", temp, "--block"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    try:
        for line in head.stdout:
            if "--block" in line:  # "... will now block forever": the cluster is up
                break
        else:
            pytest.fail("ray start --head did not come up")
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@needs_espeak
def test_ray_cluster_gives_the_same_records_and_survives_a_killed_actor(archive, baseline,
                                                                        ray_cluster, tmp_path):
    out = tmp_path / "ray.jsonl"
    run = mersa(archive, "--ray", ray_cluster, "--output", out, "--resume")
    # an actor decodes its own copy of the file it was sent: kill the one holding long.wav
    killed = kill_when_open(run, lambda target: target.endswith("/long.wav")
                            and f"/{SCRATCH_PREFIX}" in target)
    code, err = finish(run)
    assert code == 0, err
    assert "mersa: ray: 2 worker(s) of 1 CPU each" in err
    assert f"{archive / 'long.wav'}: its Ray worker stopped" in err
    assert records_by_file(out) == baseline
    # the killed actor's copy of the file was removed by the actor that replaced it
    assert not list(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{killed}-*"))
