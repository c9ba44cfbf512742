"""Many files at once: `analyze` over folders and globs, on N local worker processes or on the
actors of a Ray cluster (docs/scale.md).

Every way of running yields the same thing to `cli._analyze_files`: `(path, results)` per file,
`results` iterating that file's results in time order and raising, at its end, the error that
stopped the file (an unreadable file, a bug). One file's results are written together, so the
output stays per file and whole whatever finishes first. Workers run `recognize_file`, the very
function the single-process path runs (pipeline.recognize_file).

Faults: a worker process or actor that dies while on a file is replaced and the file handed out
again; since a file's results reach the output only once they are all in, nothing is lost or
written twice. A file that takes down its worker `MAX_ATTEMPTS` times is reported as failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import secrets
import shutil
import signal
import stat
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .config import Config, with_values
from .errors import ConfigError, InputError, MersaError

# what a folder given to `analyze` is searched for (a glob or a file named outright is taken
# whatever its extension: the user chose it)
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".aif", ".aiff",
    ".caf", ".amr", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".3gp"})
# a file whose worker dies this many times is given up: it is the file that kills them
MAX_ATTEMPTS = 2
RAY_INSTALL = "pip install 'mersa-stream[ray]'"

Say = Callable[[str], None]


# -- which files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    files: list[Path]
    problems: list[str]  # one line per folder or pattern that holds no file


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def _folder_files(folder: Path) -> list[Path]:
    found = [Path(root) / name for root, _, names in os.walk(folder, followlinks=True)
             for name in names if Path(name).suffix.lower() in AUDIO_EXTENSIONS]
    return sorted(found)


def expand_inputs(items: Sequence[Path | str]) -> Inputs:
    """Folders (searched recursively for audio and video files) and glob patterns (`**`
    recursive) become the files they hold, in a stable order; anything else is kept as given,
    so that a missing file is reported by the decoder like any unreadable one."""
    files: list[Path] = []
    problems: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = _folder_files(path)
            if not found:
                problems.append(f"{path}: no audio or video files in this folder")
        elif not path.exists() and _is_pattern(str(item)):
            found = []
            for match in sorted(glob.glob(str(item), recursive=True)):
                found += _folder_files(Path(match)) if Path(match).is_dir() else [Path(match)]
            if not found:
                problems.append(f"{item}: no file matches this pattern")
        else:
            found = [path]
        files += found
    return Inputs(files, problems)


def largest_first(files: Iterable[Path]) -> list[Path]:
    """The order files are handed out in: the longest jobs first, so that the last file to
    finish is a short one and no worker idles long at the end (sizes stand in for durations)."""
    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return -1  # fails at once wherever it runs

    return sorted(files, key=size, reverse=True)


# -- how many workers --------------------------------------------------------------------------


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def planned_workers(config: Config, files: int) -> int:
    """analyze.workers, or (0) as many as the cores hold at runtime.cpu_threads each (one when
    cpu_threads is 0: a worker then takes every core); never more than there are files."""
    workers = config.analyze.workers
    if workers == 0:
        threads = config.runtime.cpu_threads
        workers = max(1, usable_cores() // threads) if threads else 1
    return max(1, min(workers, files))


def worker_config(config: Config, workers: int, cores: int | None = None) -> Config:
    """What each of `workers` processes runs with: the cores shared out when cpu_threads is 0
    (else every worker would start a thread per core, and they would fight over them)."""
    if config.runtime.cpu_threads or workers <= 1:
        return config
    threads = max(1, (cores or usable_cores()) // workers)
    return with_values(config, {"runtime": {"cpu_threads": threads}}, "--workers")


# -- one file ------------------------------------------------------------------------------------


class WorkerError(Exception):
    """An unexpected error raised in a worker, carried back by its class name and message (the
    exception itself may not pickle). `kind` is what `analyze` reports it as."""

    def __init__(self, kind: str, message: str, details: str = ""):
        super().__init__(message)
        self.kind, self.details = kind, details

    def __reduce__(self):
        return WorkerError, (self.kind, str(self), self.details)


@dataclass(frozen=True)
class FileOutcome:
    """What a worker sends back for one file: its results (without their audio: the output never
    needs it) and the error that stopped it, if any."""

    name: str
    results: tuple = ()
    error: BaseException | None = None
    seconds: float = 0.0  # wall time in the worker


def _without_audio(result):
    import numpy as np

    empty = np.zeros(0, np.float32)
    return dataclasses.replace(result, utterance=dataclasses.replace(result.utterance, audio=empty))


def run_file(path: Path, name: str, config: Config, recognizer) -> FileOutcome:
    """One file in a worker: every result it has, then the error that stopped it (as in the
    single-process path, results found before an error are kept). `path` is where the worker
    reads it, `name` how the output and the messages name it."""
    from .pipeline import recognize_file

    begun = time.perf_counter()
    results = []
    error: BaseException | None = None
    try:
        for result in recognize_file(path, config, recognizer, name,
                                     on_speech=getattr(recognizer, "start", None)):
            results.append(_without_audio(result))
    except MersaError as exc:  # named by the worker's path: say the user's
        exc.message = exc.message.replace(str(path), name)
        exc.args = (exc.message,)
        error = exc
    except Exception as exc:  # noqa: BLE001 - a bug: carried to the driver, which reports it
        if os.environ.get("MERSA_DEBUG"):
            traceback.print_exc()
        error = WorkerError(exc.__class__.__name__, str(exc).replace(str(path), name),
                            traceback.format_exc())
    return FileOutcome(name, tuple(results), error, time.perf_counter() - begun)


def outcome_results(outcome: FileOutcome) -> Iterator:
    yield from outcome.results
    if outcome.error is not None:
        raise outcome.error


def _failed(error: BaseException) -> Iterator:
    raise error
    yield  # a generator: the error comes out where the results are read


def start_recognizer(config: Config):
    """A worker's recognizer: its models start loading at once, in the background."""
    from .recognizer import RecognizerLoader, resolve_models

    loader = RecognizerLoader(config, resolve_models(config))
    loader.start()
    return loader


@dataclass
class _Job:
    path: Path
    attempts: int = 0


def _gave_up(how: str) -> Iterator:
    return _failed(WorkerError("WorkerLost", f"its worker stopped {MAX_ATTEMPTS} times while on "
                               f"this file ({how})"))


# -- N local processes -------------------------------------------------------------------------


def _worker_main(conn, config: Config) -> None:
    """A worker process: load the models, then recognise the files sent until told to stop."""
    # Ctrl-C reaches the whole process group; the driver decides what stops (it terminates
    # the workers), so a worker never dies half-way through sending a file's results.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recognizer = None
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the driver is gone
            return
        if job is None:
            return
        try:
            recognizer = recognizer or start_recognizer(config)
        except MersaError as exc:  # a model that cannot be found here: the run stops
            conn.send(FileOutcome(str(job), error=exc))
            continue
        conn.send(run_file(Path(job), str(job), config, recognizer))


@dataclass
class _Worker:
    process: object
    conn: object
    job: _Job | None = None


def _how_it_ended(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


# the thread pools of the native libraries a worker loads (OpenMP: CTranslate2 and torch;
# OpenBLAS/MKL: numpy), sized when each library loads, which in a spawned worker is before any
# of our code runs: hence set in the environment it starts with (as Ray does for its actors)
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _thread_limits(threads: int) -> Iterator[None]:
    """The environment a worker is spawned with: `threads` for each native pool the user left
    unset."""
    unset = [name for name in _THREAD_VARIABLES if name not in os.environ] if threads else []
    os.environ.update({name: str(threads) for name in unset})
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


class LocalPool:
    """`workers` processes (spawned: a forked copy of torch's and CTranslate2's thread pools is
    unsafe), each with its own loaded recognizer; one file at a time each, largest first."""

    def __init__(self, config: Config, workers: int, say: Say):
        import multiprocessing

        self.config, self.size, self.say = config, workers, say
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []

    def __enter__(self) -> "LocalPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close(graceful=exc[0] is None)

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker_main, args=(child, self.config),
                                       name="mersa-worker", daemon=True)
        with _thread_limits(self.config.runtime.cpu_threads):
            process.start()
        child.close()
        worker = _Worker(process, parent)
        self.workers.append(worker)
        return worker

    def run(self, files: Sequence[Path]) -> Iterator[tuple[Path, Iterator]]:
        from multiprocessing.connection import wait

        pending = deque(_Job(path) for path in largest_first(files))
        for _ in range(min(self.size, len(pending))):
            self._start()
        while pending or any(w.job for w in self.workers):
            for worker in self.workers:
                if worker.job is None and pending:
                    worker.job = pending.popleft()
                    worker.job.attempts += 1
                    try:
                        worker.conn.send(str(worker.job.path))
                    except OSError:
                        pass  # it died idle: its sentinel says so below
            busy = [w for w in self.workers if w.job is not None]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.conn in ready:
                    try:
                        outcome = worker.conn.recv()
                    except (EOFError, OSError):
                        outcome = None  # died while sending: the sentinel says how
                    if outcome is not None:
                        job, worker.job = worker.job, None
                        yield job.path, outcome_results(outcome)
                        continue
                if worker.process.sentinel in ready or worker.conn in ready:
                    lost = self._replace(worker, pending)
                    if lost is not None:
                        yield lost

    def _replace(self, worker: _Worker, pending: deque) -> tuple[Path, Iterator] | None:
        """A worker died: its file goes back to the front of the queue (or is given up), and a
        new worker takes its place while files are left."""
        worker.process.join(5)
        how = _how_it_ended(worker.process)
        worker.conn.close()
        self.workers.remove(worker)
        job = worker.job
        lost = None
        if job.attempts >= MAX_ATTEMPTS:
            lost = (job.path, _gave_up(how))
        else:
            self.say(f"{job.path}: its worker stopped ({how}); redoing it on a new worker")
            pending.appendleft(job)
        if pending:
            self._start()
        return lost

    def close(self, graceful: bool = True) -> None:
        for worker in self.workers:
            if graceful:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            else:
                worker.process.terminate()
        for worker in self.workers:
            worker.process.join(10 if graceful else 5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers = []


# -- a Ray cluster -----------------------------------------------------------------------------


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray: Ray is not installed; install it with  {RAY_INSTALL}") \
            from None
    return ray


# an actor's copy of the file it is on lives in a folder named by its process: one killed
# mid-file leaves it behind, and the next actor on that node removes it
SCRATCH_PREFIX = "mersa-ray-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def remove_dead_scratch(folder: Path | None = None) -> None:
    for scratch in Path(folder or tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"):
        pid = scratch.name[len(SCRATCH_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(scratch, ignore_errors=True)


class FileWorker:
    """A Ray actor: the models loaded once, then files sent to it as bytes (the cluster's nodes
    need not see the driver's disks), written to a private temporary folder and recognised."""

    def __init__(self, config: Config):
        remove_dead_scratch()
        self.config = config
        self.recognizer = None
        self.failure: MersaError | None = None
        try:
            self.recognizer = start_recognizer(config)
        except MersaError as exc:  # reported with the first file: the run stops then
            self.failure = exc

    def run(self, name: str, data: bytes) -> FileOutcome:
        if self.failure is not None:
            return FileOutcome(name, error=self.failure)
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as folder:
            # the file's own name: its extension helps the decoder, and errors read naturally
            path = Path(folder) / (Path(name).name or "input")
            path.write_bytes(data)
            return run_file(path, name, self.config, self.recognizer)


def _read_for_shipping(path: Path) -> bytes:
    """The bytes of a file, or the InputError the decoder would raise for it."""
    from .decode import check_readable

    check_readable(path)
    if not stat.S_ISREG(path.stat().st_mode):
        raise InputError(f"{path}: not a regular file (a Ray worker needs the file's bytes)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


@dataclass
class RayPlan:
    """Actors and what each holds: GPU actors where the cluster has GPUs (and the models may
    use them), else runtime.cpu_threads cores each (1 when 0: Ray counts cores per actor)."""

    actors: int
    num_cpus: int
    num_gpus: int
    config: Config = field(repr=False)


def plan_ray(config: Config, resources: dict, files: int) -> RayPlan:
    """`resources`: the cluster's (ray.cluster_resources()). Never more actors than it holds
    now: an actor it cannot place would keep the file sent to it waiting for ever."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0)) if config.runtime.device_type != "cpu" else 0
    if gpus:
        capacity, num_cpus, num_gpus = min(gpus, cpus), 1, 1
    else:
        threads = min(config.runtime.cpu_threads or 1, cpus)
        capacity, num_cpus, num_gpus = cpus // threads, threads, 0
        config = with_values(config, {"runtime": {"cpu_threads": threads,
                                                  "device_type": "cpu"}}, "--ray")
    actors = min(config.analyze.workers or capacity, capacity, files)
    return RayPlan(max(1, actors), num_cpus, num_gpus, config)


def absolute_model_paths(config: Config) -> Config:
    """Model folders named relative to the driver's working directory, made absolute: an actor
    runs elsewhere (on a cluster, every node must hold them at that path, or use built-in and
    embedded models)."""
    models = {key: str(Path(value).resolve())
              for key, value in dataclasses.asdict(config.models).items()
              if value and not Path(value).is_absolute() and Path(value).exists()}
    return with_values(config, {"models": models}, "--ray") if models else config


def _starts_a_cluster(address: str) -> bool:
    return address == "auto" and not os.environ.get("RAY_ADDRESS")


def _token_for_a_new_cluster(address: str) -> None:
    """Ray's servers listen on every interface: a cluster started for this run takes only
    callers holding its token (a fresh one, known to this process and the cluster's). Set
    before Ray is imported: it reads its configuration once."""
    if _starts_a_cluster(address) and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def check_ray(address: str) -> None:
    """Before anything is written: Ray installed, and the cluster's address answering."""
    _token_for_a_new_cluster(address)
    import_ray()
    if address != "auto":
        check_reachable(address)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A cluster address that answers, or a one-line ConfigError: Ray itself would retry a dead
    address for minutes, printing a warning every few seconds."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray {address}: expected HOST:PORT (the head's address) or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(f"--ray {address}: cannot join the cluster (nothing answers there: "
                          f"{exc.strerror or exc})") from None


class RayPool:
    """One actor per worker slot on the cluster at `address` ("auto": RAY_ADDRESS, else a
    cluster started for this run); files streamed to them, results streamed back."""

    def __init__(self, config: Config, address: str, say: Say):
        _token_for_a_new_cluster(address)
        self.ray = import_ray()
        self.config, self.address, self.say = absolute_model_paths(config), address, say
        self.actors: list = []

    def __enter__(self) -> "RayPool":
        ray = self.ray
        local = _starts_a_cluster(self.address)
        try:
            # a cluster started for this run needs no dashboard; one joined keeps its own
            ray.init(address=None if self.address == "auto" else self.address,
                     log_to_driver=bool(os.environ.get("MERSA_DEBUG")), logging_level="ERROR",
                     **({"include_dashboard": False} if local else {}))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "no answer"
            raise ConfigError(f"--ray {self.address}: cannot join the cluster ({reason})") \
                from None
        return self

    def __exit__(self, *exc) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        self.ray.shutdown()

    def _actor(self, plan: RayPlan):
        # no restarts by Ray: a lost actor's file is redone here, where it is counted
        remote = self.ray.remote(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
                                 max_restarts=0)(FileWorker)
        actor = remote.remote(plan.config)
        self.actors.append(actor)
        return actor

    def run(self, files: Sequence[Path]) -> Iterator[tuple[Path, Iterator]]:
        ray = self.ray
        plan = plan_ray(self.config, ray.cluster_resources(), len(files))
        self.say(f"ray: {plan.actors} worker(s) of {plan.num_cpus} CPU"
                 + (f" + {plan.num_gpus} GPU" if plan.num_gpus else "") + " each")
        pending = deque(_Job(path) for path in largest_first(files))
        idle = [self._actor(plan) for _ in range(plan.actors)]
        running: dict = {}  # object ref -> (actor, job)
        while pending or running:
            while idle and pending:
                job = pending.popleft()
                try:
                    data = _read_for_shipping(job.path)
                except InputError as exc:
                    yield job.path, _failed(exc)
                    continue
                job.attempts += 1
                actor = idle.pop()
                running[actor.run.remote(str(job.path), data)] = (actor, job)
            if not running:
                continue
            # a timeout, so that a signal (Ctrl-C) is handled while nothing finishes
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                actor, job = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    lost = self._replace(actor, job, plan, pending, idle, exc)
                    if lost is not None:
                        yield lost
                    continue
                except ray.exceptions.RayError as exc:
                    outcome = FileOutcome(str(job.path), error=WorkerError(
                        exc.__class__.__name__, str(exc).strip().splitlines()[0][:160]))
                idle.append(actor)
                yield job.path, outcome_results(outcome)

    def _replace(self, actor, job: _Job, plan: RayPlan, pending: deque, idle: list,
                 exc: BaseException) -> tuple[Path, Iterator] | None:
        how = f"{exc.__class__.__name__}"
        self.ray.kill(actor)
        self.actors.remove(actor)
        lost = None
        if job.attempts >= MAX_ATTEMPTS:
            lost = (job.path, _gave_up(how))
        else:
            self.say(f"{job.path}: its Ray worker stopped ({how}); redoing it on a new one")
            pending.appendleft(job)
        if pending:
            idle.append(self._actor(plan))
        return lost


# -- the entry point -----------------------------------------------------------------------------


def file_results(files: Sequence[Path], config: Config, recognizer, say: Say,
                 track: Callable[[Path, Iterable], Iterable] | None = None
                 ) -> Iterator[tuple[Path, Iterator]]:
    """(path, results) for every file: in this process, one file after the other and each
    result as soon as it exists (one worker, today's behaviour, `recognizer` being this
    process's); on local worker processes; or on a Ray cluster (analyze.ray)."""
    from .pipeline import recognize_file

    if not files:  # all done already (--resume): no cluster, no workers
        return
    if config.analyze.ray:
        with RayPool(config, config.analyze.ray, say) as pool:
            yield from pool.run(files)
        return
    workers = planned_workers(config, len(files))
    if workers <= 1:
        for path in files:
            yield path, recognize_file(path, config, recognizer, str(path), track,
                                       on_speech=getattr(recognizer, "start", None))
        return
    with LocalPool(worker_config(config, workers), workers, say) as pool:
        yield from pool.run(files)

