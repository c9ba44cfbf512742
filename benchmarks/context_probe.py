"""How much conversation context helps the text features: a linear probe on held-out MELD
*training* dialogues (never MELD dev, which the comparison tables report), for choosing K.

For each text encoder and context size K, the MELD 4-class utterances are encoded as the trainer
does (`TextFeaturizer`, the same feature cache: a later `mersa train` with the same settings reads
them back), each read after its K previous utterances; the current utterance's token states are
mean-pooled and a logistic regression is fitted on the training part of `--split holdout` and
scored on its validation part (10% of the training dialogues).

    .venv/bin/python benchmarks/context_probe.py --context 0,2,4,8 --threads 1
    .venv/bin/python benchmarks/context_probe.py --encoder all-mpnet-base-v2 --context 0,4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pooled(feats) -> "np.ndarray":  # noqa: F821 - numpy imported in main
    import numpy as np

    return np.stack([f.astype(np.float32).mean(0) if len(f) else
                     np.zeros(f.shape[1], np.float32) for f in feats])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    parser.add_argument("--encoder", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--context", default="0,2,4,8", help="comma-separated K values")
    parser.add_argument("--no-speakers", action="store_true", help="no speaker marks")
    parser.add_argument("--mode", default="pair", choices=("pair", "concat"),
                        help="how the encoder reads the context (encoders/text.py)")
    parser.add_argument("--seed", type=int, default=0, help="which dialogues are held out")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        sys.exit(f"{args.data_dir}: MELD folder not found (see ../shared/data/README.md)")
    import numpy as np
    import torch

    from mersa_stream.config import TrainConfig
    from mersa_stream.train.data import LABELS_4, load_meld, make_split
    from mersa_stream.train.features import (
        FeatureCache,
        TextContext,
        TextFeaturizer,
        encode_records,
    )
    from mersa_stream.train.self_align import probe

    torch.set_num_threads(args.threads)
    parts = make_split("meld", load_meld(args.data_dir, splits=("train",)), "holdout",
                       seed=args.seed)
    train, val = parts["train"], parts["val"]
    index = {label: i for i, label in enumerate(LABELS_4)}
    y_train = np.array([index[r.label] for r in train])
    y_val = np.array([index[r.label] for r in val])
    print(f"{args.encoder}: probe on {len(train)} training / {len(val)} held-out training "
          f"utterances (MELD train, seed {args.seed})")
    print("| K | speakers | mode | accuracy | weighted F1 | balanced acc | encoding s |")
    print("|---|---|---|---|---|---|---|")
    tokens = TrainConfig().text_context_tokens
    for k in (int(x) for x in args.context.split(",")):
        context = TextContext(k, tokens, not args.no_speakers, args.mode)
        featurizer = TextFeaturizer(args.encoder, max_tokens=64, context=context)
        cache = FeatureCache()
        start = time.perf_counter()
        x_train = pooled(encode_records(train, featurizer, "text", cache, 64))
        x_val = pooled(encode_records(val, featurizer, "text", cache, 64))
        seconds = time.perf_counter() - start
        m = probe(x_train, y_train, x_val, y_val)
        print(f"| {k} | {'no' if args.no_speakers or not k else 'yes'} | {args.mode} | "
              f"{m['accuracy']:.3f} | "
              f"{m['weighted_f1']:.3f} | {m['balanced_accuracy']:.3f} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
