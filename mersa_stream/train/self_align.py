"""Self-align (paper section IV-A, eq. 1): pull same-emotion utterances together in the text
encoder's embedding space before fusion training.

SapBERT's recipe with the emotion label as the identity: pytorch-metric-learning
`MultiSimilarityLoss` on mean-pooled sentence embeddings with a miner, every batch class-balanced
(`per_class` utterances of each class, so every batch has positives and negatives).

CPU economy: only the top `top_layers` transformer layers are trained (0 = all). The layers below
are frozen, so their output for each training text is computed once and kept in memory; a step
runs only the trainable top. The saved weights are the tensors that changed (those top layers),
which `TextEncoder(state_dict=...)` loads over the base model.

Outputs (a folder): `text_encoder.safetensors`, `align_log.jsonl`, `tsne_before.png`,
`tsne_after.png`, `align.json` (settings + a linear probe on the validation texts, before/after).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import AlignConfig, RuntimeConfig  # AlignConfig: the tree's [align]
from ..errors import ConfigError
from .data import Record


def usable_texts(records: Sequence[Record]) -> list[Record]:
    """Records with a text whose label is unambiguous: a text seen under several labels (RAVDESS's
    two fixed sentences) says nothing about emotion and is left out."""
    seen: dict[str, set] = {}
    for r in records:
        if r.text.strip():
            seen.setdefault(r.text.strip().lower(), set()).add(r.label)
    return [r for r in records if r.text.strip() and len(seen[r.text.strip().lower()]) == 1]


def balanced_batches(labels: Sequence[int], per_class: int, rng: random.Random) -> list[list[int]]:
    """One epoch: as many batches as the data fills; each takes `per_class` of every class
    (small classes are cycled through in a fresh shuffled order)."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    classes = sorted(by_class)
    if len(classes) < 2:
        raise ConfigError("self-align needs at least two classes with text")
    n_batches = max(1, len(labels) // (per_class * len(classes)))
    pools = {c: [] for c in classes}
    out = []
    for _ in range(n_batches):
        batch = []
        for c in classes:
            for _ in range(per_class):
                if not pools[c]:
                    pools[c] = by_class[c][:]
                    rng.shuffle(pools[c])
                batch.append(pools[c].pop())
        rng.shuffle(batch)
        out.append(batch)
    return out


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.unsqueeze(-1).to(states.dtype)
    return (states * w).sum(1) / w.sum(1).clamp(min=1.0)


class SplitEncoder:
    """A BertModel (or MPNetModel) cut in two: frozen bottom (run once, cached) and trainable
    top layers."""

    def __init__(self, model, top_layers: int):
        self.model = model
        n = len(model.encoder.layer)
        self.cut = 0 if top_layers <= 0 or top_layers >= n else n - top_layers
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.encoder.layer[self.cut:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        if self.cut == 0:  # everything trains, embeddings included
            for p in model.parameters():
                p.requires_grad_(True)

    def bottom(self, batch) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(**batch, output_hidden_states=True)
        return out.hidden_states[self.cut]

    def top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * \
            torch.finfo(hidden.dtype).min
        # MPNet's layers take the relative position bias its encoder computes once for all
        extra = {"position_bias": self.model.encoder.compute_position_bias(hidden)} \
            if hasattr(self.model.encoder, "compute_position_bias") else {}
        for layer in self.model.encoder.layer[self.cut:]:
            out = layer(hidden, attention_mask=additive, **extra)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def full(self, batch) -> torch.Tensor:
        return self.model(**batch).last_hidden_state


def embed(encoder, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Mean-pooled sentence embeddings (inference)."""
    out = []
    encoder.model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            states, mask = encoder.encode([texts[i] for i in idx])
            out.append((idx, mean_pool(states, mask).float().numpy()))
    result = np.zeros((len(texts), encoder.dim), np.float32)
    for idx, e in out:
        result[idx] = e
    return result


def probe(train_x, train_y, val_x, val_y) -> dict:
    """Linear probe (logistic regression) on frozen embeddings: how separable the classes are."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(train_x, train_y)
    pred = clf.predict(val_x)
    return {"accuracy": float(accuracy_score(val_y, pred)),
            "weighted_f1": float(f1_score(val_y, pred, average="weighted")),
            "balanced_accuracy": float(balanced_accuracy_score(val_y, pred))}


def tsne_png(x: np.ndarray, y: np.ndarray, labels: Sequence[str], path: Path, title: str,
             seed: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    z = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    for i, label in enumerate(labels):
        sel = y == i
        ax.scatter(z[sel, 0], z[sel, 1], s=6, alpha=0.7, label=f"{label} ({int(sel.sum())})")
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def changed_tensors(model, base_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in model.state_dict().items():
        if name in base_state and not torch.equal(base_state[name], tensor):
            out[name] = tensor.detach().clone().contiguous()
    return out


def self_align(train: Sequence[Record], val: Sequence[Record], labels: list[str],
               encoder, out: Path, config: AlignConfig | None = None, seed: int = 0,
               say: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Fine-tune the text encoder with MultiSimilarityLoss; write the changed tensors to `out`.

    `encoder`: a `TextEncoder`, or the folder of one (read with the runtime's token limit)."""
    from pytorch_metric_learning import losses, miners
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..encoders.text import TextEncoder

    config = config or AlignConfig()
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    index = {label: i for i, label in enumerate(labels)}
    train = usable_texts(train)
    val = usable_texts(val)
    if not train:
        raise ConfigError("self-align: no training utterances with an unambiguous text")
    texts = [r.text for r in train]
    y = [index[r.label] for r in train]
    if not isinstance(encoder, TextEncoder):
        encoder = TextEncoder(encoder, RuntimeConfig().text_max_tokens)
    base_state = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}

    # before: linear probe + t-SNE of the validation texts
    vis = val if val else train
    vis_idx = list(range(len(vis)))
    random.Random(seed).shuffle(vis_idx)
    vis_idx = vis_idx[:config.tsne_points]
    vis_texts = [vis[i].text for i in vis_idx]
    vis_y = np.array([index[vis[i].label] for i in vis_idx])
    report: dict = {"config": config.to_dict(), "seed": seed, "train_texts": len(train),
                    "val_texts": len(val)}

    def snapshot(stage: str) -> None:
        """Linear probe on validation and a t-SNE picture, before or after the alignment."""
        if val:
            report[f"probe_{stage}"] = probe(embed(encoder, texts), y,
                                             embed(encoder, [r.text for r in val]),
                                             [index[r.label] for r in val])
            say(f"self-align: linear probe {stage} {json.dumps(report[f'probe_{stage}'])}")
        if len(vis_texts) >= 5:
            tsne_png(embed(encoder, vis_texts), vis_y, labels, out / f"tsne_{stage}.png",
                     f"text embeddings {stage} self-align")

    snapshot("before")

    split = SplitEncoder(encoder.model, config.top_layers)
    params = [p for p in encoder.model.parameters() if p.requires_grad]
    head = torch.nn.Linear(encoder.dim, len(labels)) if config.ce_weight > 0 else None
    if head is not None:
        params += list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = losses.MultiSimilarityLoss(alpha=config.alpha, beta=config.beta, base=config.base)
    miner = (miners.MultiSimilarityMiner(epsilon=config.miner_epsilon)
             if config.miner == "multisimilarity"
             else miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"))

    # the frozen bottom's output, once per text (the top layers are what trains)
    cached: list[tuple[torch.Tensor, torch.Tensor]] = []
    if split.cut:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        cached = [None] * len(texts)  # type: ignore[list-item]
        for b in tqdm(range(0, len(order), 128), desc="self-align: frozen layers",
                      disable=not progress, leave=False):
            idx = order[b:b + 128]
            batch, _ = encoder.tokenize([texts[i] for i in idx])
            hidden = split.bottom(batch)
            for j, i in enumerate(idx):
                n = int(batch["attention_mask"][j].sum())
                cached[i] = (hidden[j, :n].clone(), batch["attention_mask"][j, :n].clone())

    def forward(idx: list[int]) -> torch.Tensor:
        if split.cut:
            longest = max(len(cached[i][0]) for i in idx)
            hidden = torch.zeros(len(idx), longest, encoder.dim)
            mask = torch.zeros(len(idx), longest, dtype=torch.long)
            for j, i in enumerate(idx):
                n = len(cached[i][0])
                hidden[j, :n], mask[j, :n] = cached[i][0], cached[i][1]
            return mean_pool(split.top(hidden, mask), mask)
        batch, _ = encoder.tokenize([texts[i] for i in idx])
        return mean_pool(split.full(batch), batch["attention_mask"])

    log = open(out / "align_log.jsonl", "w", encoding="utf-8")
    step = 0
    try:
        for epoch in range(1, config.epochs + 1):
            encoder.model.train()
            plan = balanced_batches(y, config.per_class, rng)
            total = 0.0
            bar = tqdm(plan, desc=f"self-align epoch {epoch}/{config.epochs}",
                       disable=not progress, leave=False, dynamic_ncols=True)
            for idx in bar:
                emb = forward(idx)
                target = torch.tensor([y[i] for i in idx])
                loss = loss_fn(emb, target, miner(emb, target))
                if head is not None:
                    loss = loss + config.ce_weight * torch.nn.functional.cross_entropy(head(emb),
                                                                                      target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                total += value
                step += 1
                bar.set_postfix(loss=f"{value:.3f}")
            row = {"epoch": epoch, "steps": len(plan), "loss": total / max(1, len(plan)),
                   "seconds": time.perf_counter() - start}
            log.write(json.dumps(row) + "\n")
            log.flush()
            say(f"self-align epoch {epoch}: loss {row['loss']:.4f} ({row['seconds']:.0f} s)")
    finally:
        log.close()
    encoder.model.eval()
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    weights = changed_tensors(encoder.model, base_state)
    save_file(weights, str(out / "text_encoder.safetensors"))
    snapshot("after")
    report["changed_tensors"] = len(weights)
    report["changed_mb"] = sum(t.numel() * t.element_size() for t in weights.values()) / 2 ** 20
    report["seconds"] = time.perf_counter() - start
    (out / "align.json").write_text(json.dumps(report, indent=2) + "\n")
    return out


def align_for_run(opts, config: AlignConfig, out: Path, say=print) -> Path:
    """The self-align stage of `mersa train`: train texts of the run's dataset (+ --text-data),
    with the run's seed and text token limit."""
    from ..encoders.text import TextEncoder
    from ..resolve import resolve_transformers
    from .data import labels_for, load_dataset, make_split
    from .pipeline import load_run_records

    labels = labels_for(opts.dataset, opts.classes)
    parts = make_split(opts.dataset, load_run_records(opts), opts.split, opts.fold, opts.folds,
                       opts.split_seed)
    train, val = list(parts["train"]), list(parts["val"])
    for t in opts.text_data:
        records = load_dataset(t.dataset, t.data_dir, opts.classes)
        parts = make_split(t.dataset, records, "official" if t.dataset == "meld" else "random",
                           seed=opts.split_seed)
        train += parts["train"]
        val += parts["val"]
    path = resolve_transformers(opts.text_encoder, "text encoder", "--text-encoder").path
    encoder = TextEncoder(path, opts.text_max_tokens)
    return self_align(train, val, labels, encoder, out, config, seed=opts.train.seed, say=say)
