"""Text encoder cost per utterance, as the runtime pays it: MiniLM (the default) as the baseline
against other encoders (all-mpnet-base-v2), each with and without conversation context.

MELD dev utterances in dialogue order, encoded one at a time (the recognizer's text encoder sees
one `listen` utterance, or a batch of two in `analyze`) through the runtime's own path
(`TextEncoder(..., backend="auto")`), alone and after its previous `--context` utterances with
speaker marks, read both ways (context mode pair and concat); interleaved rounds, the best of
`--repeats` per setting. Prints ms per utterance and the ratio to MiniLM alone measured in the
same run.

    .venv/bin/python benchmarks/text_encoder_speed.py --threads 1 --count 200 --context 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE = "sentence-transformers/all-MiniLM-L6-v2"


def utterances(data_dir: Path, count: int, k: int) -> tuple[list[str], list[str]]:
    from mersa_stream.context import format_context
    from mersa_stream.train.data import load_meld

    records = load_meld(data_dir, splits=("dev",))[:count]
    return [r.text for r in records], [format_context(r.turns, r.speaker, k) for r in records]


def per_utterance_ms(encoder, texts, contexts, mode: str = "pair") -> float:
    encoder.context_mode = mode  # what the encoder computes; its width does not matter here
    start = time.perf_counter()
    for text, context in zip(texts, contexts):
        encoder.encode([text], [context] if context else None)
    return 1000 * (time.perf_counter() - start) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    parser.add_argument("--encoder", action="append", default=None,
                        help=f"text encoder spec (repeatable; {BASELINE} always runs)")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        sys.exit(f"{args.data_dir}: MELD folder not found (see ../shared/data/README.md)")
    import torch

    from mersa_stream.config import RuntimeConfig
    from mersa_stream.encoders.text import TextEncoder
    from mersa_stream.resolve import resolve_transformers

    torch.set_num_threads(args.threads)
    specs = [BASELINE] + [s for s in (args.encoder or ["all-mpnet-base-v2"]) if s != BASELINE]
    texts, contexts = utterances(args.data_dir, args.count, args.context)
    plain = [""] * len(texts)
    encoders = {s: TextEncoder(resolve_transformers(s, "text encoder", "--encoder").path,
                               RuntimeConfig().text_max_tokens, backend="auto") for s in specs}
    for encoder in encoders.values():  # warm-up
        per_utterance_ms(encoder, texts[:10], contexts[:10])
    best: dict[tuple[str, int, str], float] = {}
    settings = ((0, plain, "pair"), (args.context, contexts, "pair"),
                (args.context, contexts, "concat"))
    for _ in range(args.repeats):
        for spec, encoder in encoders.items():
            for k, ctx, mode in settings:
                ms = per_utterance_ms(encoder, texts, ctx, mode)
                best[spec, k, mode] = min(best.get((spec, k, mode), float("inf")), ms)
    base = best[BASELINE, 0, "pair"]
    print(f"{len(texts)} MELD dev utterances, one at a time, {args.threads} thread(s), "
          f"best of {args.repeats}")
    print("| encoder | model class | context | ms / utterance | x MiniLM alone |")
    print("|---|---|---|---|---|")
    for (spec, k, mode), ms in best.items():
        what = f"{k} ({mode})" if k else "0"
        print(f"| {spec} | {type(encoders[spec].model).__name__} | {what} | {ms:.1f} | "
              f"{ms / base:.2f} |")


if __name__ == "__main__":
    main()
