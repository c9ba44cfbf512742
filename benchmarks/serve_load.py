"""Load on `mersa serve`: N concurrent real-time streams against one server.

Starts `mersa serve --port 0` as its own process, builds one espeak-ng recording (several voices
and pauses, light noise), then for each N runs N WebSocket clients at once, each sending the
recording in real time (100 ms messages, paced by the wall clock; starts spread over 1 s) and
`{"type": "end"}`. Per utterance, "first-record latency" is from the moment the client sent the
message holding the end of that speech to the moment the first record with that audio arrived
(interim or final; client side: everything the user waits for). An utterance is lost when a
client gets fewer final records than a lone client got (N = 1, the baseline of the same run).
Also: the server's RSS after each level and its peak, the shared batches' sizes (/healthz), and
the server's CPU seconds per second of audio (what bounds N on idle cores, whatever else runs).

    .venv/bin/python benchmarks/serve_load.py                      # N = 1, 2, 3, 4, 6, 8
    .venv/bin/python benchmarks/serve_load.py --levels 1,2,4 --seconds 30 --checkpoint default

Target (issue 16): the largest N with p95 first-record latency <= 1.5 s and nothing lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from listen_latency import build_recording  # noqa: E402

TARGET_P95 = 1.5
MESSAGE_S = 0.1
RATE = 16000


def start_server(args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-c", "from mersa_stream.cli import main; main()", "serve",
               "--port", "0", "--checkpoint", args.checkpoint,
               "--set", "serve.max_sessions=256", *sum((["--set", s] for s in args.set), [])]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stderr.readline()
    found = re.search(r"ws://[^ ]+:(\d+)/v1/listen", line)
    if not found:
        proc.kill()
        raise SystemExit(f"server did not start: {line}{proc.stderr.read()}")
    port = found.group(1)
    http = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + 300
    while json.loads(urllib.request.urlopen(http).read())["models"] != "ready":
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the server's models did not load: {proc.stderr.read()}")
        time.sleep(0.2)
    return proc, port


def memory(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) in MiB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def client(url: str, pcm: bytes, delay: float) -> dict:
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    step = int(MESSAGE_S * RATE) * 2
    first: dict[tuple[int, float], float] = {}
    finals: dict[int, dict] = {}
    done = None
    async with connect(url, max_size=None) as ws:
        t0 = time.time()

        async def receive():
            nonlocal done
            async for text in ws:
                message, now = json.loads(text), time.time()
                if message["type"] == "utterance":
                    # the first record carrying this audio (an interim record of a shorter
                    # stretch, superseded when speech resumed, does not count)
                    first.setdefault((message["index"], message["end"]), now)
                    if message.get("final", True):
                        finals[message["index"]] = message
                elif message["type"] == "done":
                    done = message

        reader = asyncio.create_task(receive())
        for i, at in enumerate(range(0, len(pcm), step)):
            # message i holds audio up to (i + 1) * MESSAGE_S: sent when that has been spoken
            await asyncio.sleep(max(0.0, t0 + (i + 1) * MESSAGE_S - time.time()))
            await ws.send(pcm[at:at + step])
        await ws.send(json.dumps({"type": "end"}))
        await reader
    latencies = []
    for index, record in finals.items():
        sent = t0 + math.ceil(record["end"] / MESSAGE_S - 1e-9) * MESSAGE_S
        latencies.append(first[index, record["end"]] - sent)
    return {"finals": len(finals), "done": done, "latencies": latencies,
            "server_total": [r["latency"]["total"] for r in finals.values()]}


async def level(url: str, pcm: bytes, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return await asyncio.gather(*(client(url, pcm, float(rng.uniform(0, 1.0)))
                                  for _ in range(n)))


def batches(port: str) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,3,4,6,8")
    parser.add_argument("--seconds", type=float, default=30.0, help="recording length")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--set", action="append", default=[], help="server --set (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    audio, sentences = build_recording(args.seconds / 60, seed=1)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    print(f"recording: {len(audio) / RATE:.1f} s, {sentences} sentences; "
          f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    proc, port = start_server(args)
    url = f"ws://127.0.0.1:{port}/v1/listen"
    rows, expected, best, passing = [], None, 0, True
    try:
        for n in [int(x) for x in args.levels.split(",")]:
            before = batches(port)
            began, cpu_before = time.time(), cpu_seconds(proc.pid)
            results = asyncio.run(level(url, pcm, n, seed=n))
            wall = time.time() - began
            after = batches(port)
            # the server's CPU per second of audio streamed: what bounds N on idle cores
            cpu_share = (cpu_seconds(proc.pid) - cpu_before) / (n * len(audio) / RATE)
            if expected is None:  # the lone client is the baseline
                expected = results[0]["finals"]
            latencies = [x for r in results for x in r["latencies"]]
            lost = sum(max(0, expected - r["finals"]) for r in results)
            lost += sum(r["done"] is None or r["done"]["utterances"] != r["finals"]
                        for r in results)
            p50, p95 = np.percentile(latencies, 50), np.percentile(latencies, 95)
            server_p95 = np.percentile([x for r in results for x in r["server_total"]], 95)
            used = after["batched_utterances"] - before["batched_utterances"]
            made = max(1, after["batches"] - before["batches"])
            row = {"n": n, "utterances": len(latencies), "lost": lost, "p50": round(p50, 3),
                   "p95": round(p95, 3), "server_p95": round(float(server_p95), 3),
                   "mean_batch": round(used / made, 2),
                   "recognitions_per_utterance": round(used / max(1, len(latencies)), 2),
                   "cpu_per_audio_s": round(cpu_share, 3), "wall_s": round(wall, 1),
                   "load": round(os.getloadavg()[0], 2), **{k: round(v) for k, v in
                                                            memory(proc.pid).items()}}
            rows.append(row)
            ok = p95 <= TARGET_P95 and lost == 0
            passing = passing and ok  # every level up to this one passed
            best = n if passing else best
            base = rows[0]["p95"]
            print(f"N={n:3d}  utterances {len(latencies):4d}  lost {lost}  first-record p50 "
                  f"{p50:.3f} s  p95 {p95:.3f} s (x{p95 / base:.2f} of N=1; server-side p95 "
                  f"{server_p95:.3f})  mean batch {row['mean_batch']} "
                  f"({row['recognitions_per_utterance']} recognitions per utterance)  "
                  f"server CPU {cpu_share:.2f} s per audio s  "
                  f"RSS {row['VmRSS']} MiB (peak {row['VmHWM']})  load {row['load']}  "
                  f"{'ok' if ok else 'over'}",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"largest N with p95 <= {TARGET_P95} s and nothing lost: {best}")
    share = min(r["cpu_per_audio_s"] for r in rows)
    cores = os.cpu_count()
    print(f"server CPU per stream: {share:.2f} s per audio s -> at most {cores / share:.1f} "
          f"real-time streams on {cores} idle cores (an upper bound: no queueing)")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
