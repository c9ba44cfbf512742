"""Word error rate of `mersa analyze` against plain faster-whisper on the same recording.

A generated conversation with known sentences (benchmarks/conversations.py: espeak-ng voices,
punctuation pauses, gaps 0.3-1.5 s, optional noise) is transcribed, in one run, by the same loaded
Whisper model with the same beam by:
- faster-whisper `BatchedInferencePipeline.transcribe` (its Silero VAD chunks, batch 8);
- faster-whisper `WhisperModel.transcribe(vad_filter=True)` (sequential, previous text as prompt);
- `mersa analyze` as shipped (config.toml), and with `--no-pack` (one Whisper window per
  utterance); `--gaps` adds the window layout with other longest pauses (runtime.pack_gap_s).

Prints the corpus WER of each (all words of the recordings, punctuation and case ignored; several
conversations pooled, since one tiny.en run on one file moves by +-0.02 with where its windows
fall) and, for mersa, the utterance WER: each utterance's words compared with the sentences it
holds (each sentence going to the utterance its speech overlaps most), so a word given to the
wrong utterance counts as an error (the corpus WER cannot see that).

    .venv/bin/python benchmarks/analyze_wer.py           # 3 x 60 sentences, noise -50 dBFS
    .venv/bin/python benchmarks/analyze_wer.py --seeds 1 --sentences 20 --gaps 0.2 1 30

Target: mersa analyze's corpus WER <= faster-whisper's + 0.01.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the `mersa` command sets it
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from conversations import load_truth, make_conversation  # noqa: E402
from helpers import word_error_rate, words  # noqa: E402


def edits(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level edit distance."""
    d = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hypothesis, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hypothesis)]


def utterance_errors(results, sentences: list[dict]) -> int:
    """Word errors when each utterance's text is scored against the sentences it holds (each
    sentence belongs to the utterance its speech overlaps most): a word given to the wrong
    utterance costs two errors (missing here, extra there), which the corpus WER cannot see."""
    if not results:
        return sum(len(words(s["text"])) for s in sentences)
    held: list[list[str]] = [[] for _ in results]
    for s in sentences:
        overlaps = [min(r.utterance.end, s["end"]) - max(r.utterance.start, s["start"])
                    for r in results]
        held[max(range(len(results)), key=lambda i: overlaps[i])].append(s["text"])
    return sum(edits(words(" ".join(h)), words(r.transcript.text))
               for h, r in zip(held, results))


class Tally:
    """Word errors, reference words, items and wall seconds of one system over the recordings."""

    def __init__(self):
        self.errors = self.utterance_errors = self.reference = self.items = self.wall = 0.0
        self.scored_utterances = False

    def add(self, reference: str, hypothesis: str, items: int, wall: float,
            utterance_errors: float | None = None) -> None:
        n = len(words(reference))
        self.errors += word_error_rate(reference, hypothesis) * n
        self.reference += n
        self.items += items
        self.wall += wall
        if utterance_errors is not None:
            self.utterance_errors += utterance_errors
            self.scored_utterances = True

    @property
    def wer(self) -> float:
        return self.errors / self.reference

    @property
    def utterance_wer(self) -> str:
        return f"{self.utterance_errors / self.reference:.3f}" if self.scored_utterances else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3,
                        help="conversations (seeds 0..N-1); WER pooled over all their words")
    parser.add_argument("--noise-db", type=float, default=-50.0)
    parser.add_argument("--input", nargs="*", default=[],
                        help="WAVs written by conversations.py (their JSON beside them) instead")
    parser.add_argument("--gaps", type=float, nargs="*", default=[],
                        help="also mersa's window layout with these longest pauses (s)")
    parser.add_argument("--baseline-batch-size", type=int, default=8)
    parser.add_argument("--config", default=str(ROOT / "config.toml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="SECTION.KEY=VALUE for mersa (e.g. runtime.cpu_threads=1)")
    args = parser.parse_args()

    from faster_whisper import BatchedInferencePipeline

    from mersa_stream.allocator import cap_mmap_threshold
    from mersa_stream.config import load_config
    from mersa_stream.decode import stream_audio
    from mersa_stream.pipeline import recognize_stream
    from mersa_stream.recognizer import Recognizer

    cap_mmap_threshold()
    if args.input:
        recordings = [(Path(p), load_truth(Path(p))) for p in args.input]
    else:
        folder = Path(tempfile.mkdtemp())
        recordings = [make_conversation(folder, args.sentences, seed, args.noise_db)
                      for seed in range(args.seeds)]
    config = load_config(args.config, args.overrides)
    recognizer = Recognizer(config)
    whisper = recognizer.asr.whisper
    batched = BatchedInferencePipeline(whisper)
    beam, runtime = config.asr.beam_size, config.runtime

    baselines = {
        "faster-whisper BatchedInferencePipeline": lambda path: batched.transcribe(
            str(path), beam_size=beam, batch_size=args.baseline_batch_size)[0],
        "faster-whisper transcribe(vad_filter=True)": lambda path: whisper.transcribe(
            str(path), beam_size=beam, vad_filter=True)[0],
    }
    shipped = ("mersa analyze (shipped: " + (
        f"windows, pauses <= {runtime.pack_gap_s:g} s)" if runtime.pack_windows
        else "one window per utterance)"))
    modes = {shipped: (runtime.pack_windows, runtime.pack_gap_s),
             "mersa analyze --no-pack" if runtime.pack_windows else "mersa analyze --pack":
             (not runtime.pack_windows, runtime.pack_gap_s)}
    modes.update({f"mersa analyze, windows, pauses <= {g:g} s": (True, g) for g in args.gaps})
    tallies = {name: Tally() for name in [*baselines, *modes]}
    seconds = 0.0
    for path, truth in recordings:
        seconds += truth["duration"]
        sentences = truth["sentences"]
        reference = " ".join(s["text"] for s in sentences)
        for name, transcribe in baselines.items():
            start = time.perf_counter()
            segments = list(transcribe(path))
            tallies[name].add(reference, " ".join(s.text for s in segments), len(segments),
                              time.perf_counter() - start)
        for name, (packed, gap) in modes.items():
            start = time.perf_counter()
            results = list(recognize_stream(stream_audio(path), str(path), config.segmenter,
                                            recognizer, runtime.batch_for(packed),
                                            packed=packed, pack_gap_s=gap))
            tallies[name].add(reference, " ".join(r.transcript.text for r in results),
                              len(results), time.perf_counter() - start,
                              utterance_errors(results, sentences))

    sentences = sum(len(t["sentences"]) for _, t in recordings)
    print(f"{len(recordings)} recording(s), {seconds:.1f} s, {sentences} sentences, noise "
          f"{recordings[0][1].get('noise_db')} dBFS; {whisper.model.device} "
          f"{whisper.model.compute_type}, beam {beam}; load average {os.getloadavg()[0]:.1f}")
    print(f"  {'':50s} {'corpus WER':>10s} {'utterance WER':>13s} {'items':>6s} {'wall s':>7s}")
    for name, t in tallies.items():
        print(f"  {name:50s} {t.wer:10.3f} {t.utterance_wer:>13s} {int(t.items):6d} "
              f"{t.wall:7.1f}")
    best = min(tallies[name].wer for name in baselines)
    print(f"mersa analyze (shipped) - best faster-whisper: {tallies[shipped].wer - best:+.3f} "
          "(target <= +0.010)")


if __name__ == "__main__":
    main()
