"""Confidence calibration: expected calibration error, reliability diagrams, temperature scaling.

A trained fusion model is over-confident (its max probability exceeds its accuracy). Temperature
scaling (Guo et al., 2017) divides the logits by one scalar T fitted on held-out examples by
minimising the negative log-likelihood; the argmax, hence every accuracy/F1 figure, is unchanged.
T lives in `FusionConfig.temperature`, so it travels with the checkpoint and `predict_proba`
(runtime) and `fusion_train.predict` (evaluation) both apply it.

Binning (one definition for ECE and the diagram): `bins` equal-width bins over the max
probability, bin i = (i/bins, (i+1)/bins] (the first one also holds 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..fusion import FusionModel
    from .fusion_train import Example

T_MIN, T_MAX = 0.05, 20.0


@dataclass(frozen=True)
class ReliabilityBins:
    edges: np.ndarray  # (bins + 1,) from 0 to 1
    count: np.ndarray  # (bins,) int
    accuracy: np.ndarray  # (bins,) share of correct predictions; NaN where count == 0
    confidence: np.ndarray  # (bins,) mean max probability; NaN where count == 0

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def ece(self) -> float:
        """Sum over bins of |accuracy - confidence| weighted by the bin's share; NaN if empty."""
        if self.total == 0:
            return float("nan")
        used = self.count > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float(np.sum(gaps * self.count[used]) / self.total)


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _probs_labels(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = _as_numpy(probs).astype(np.float64)
    y = _as_numpy(labels).astype(np.int64).reshape(-1)
    if p.size == 0 and len(y) == 0:
        return np.zeros((0, p.shape[-1] if p.ndim == 2 else 1)), y
    if p.ndim != 2 or p.shape[0] != len(y):
        raise ValueError(f"probs must be (N, C) with N = len(labels); got {p.shape} "
                         f"and {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1]})")
    return p, y


def reliability_bins(probs, labels, bins: int = 10) -> ReliabilityBins:
    """Per confidence bin: count, accuracy and mean confidence of the argmax prediction."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    p, y = _probs_labels(probs, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    count = np.zeros(bins, np.int64)
    accuracy = np.full(bins, np.nan)
    confidence = np.full(bins, np.nan)
    if len(y):
        conf = p.max(1)
        correct = (p.argmax(1) == y).astype(np.float64)
        # right-closed bins: conf == edges[i] belongs to bin i-1
        idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, bins - 1)
        count = np.bincount(idx, minlength=bins).astype(np.int64)
        used = count > 0
        accuracy[used] = (np.bincount(idx, weights=correct, minlength=bins)[used] / count[used])
        confidence[used] = (np.bincount(idx, weights=conf, minlength=bins)[used] / count[used])
    return ReliabilityBins(edges, count, accuracy, confidence)


def expected_calibration_error(probs, labels, bins: int = 10) -> float:
    """Standard ECE over `bins` equal-width max-probability bins (NaN for no examples)."""
    return reliability_bins(probs, labels, bins).ece()


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature)."""
    z = _as_numpy(logits).astype(np.float64)
    y = _as_numpy(labels).astype(np.int64).reshape(-1)
    if len(y) == 0:
        return float("nan")
    return float(-_log_softmax(z / temperature)[np.arange(len(y)), y].mean())


def fit_temperature(logits, labels, t_min: float = T_MIN, t_max: float = T_MAX) -> float:
    """The T in [t_min, t_max] minimising the NLL of softmax(logits / T); 1.0 for no examples.

    A bounded 1-D search over log T: a grid (which holds T = 1 exactly), then golden-section
    refinement between the best grid point's neighbours. NLL is convex in 1/T, hence unimodal
    in log T, so this finds the global minimum to ~1e-6 in log T. T = 1 is kept when nothing
    does measurably better (e.g. constant logits)."""
    z = _as_numpy(logits).astype(np.float64)
    y = _as_numpy(labels).astype(np.int64).reshape(-1)
    if len(y) == 0 or z.size == 0:
        return 1.0
    if z.ndim != 2 or z.shape[0] != len(y):
        raise ValueError(f"logits must be (N, C) with N = len(labels); got {z.shape} "
                         f"and {len(y)} labels")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in [0, {z.shape[1]})")
    keep = np.isfinite(z).all(1)
    z, y = z[keep], y[keep]
    if len(y) == 0:
        return 1.0
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        return float(-_log_softmax(z * math.exp(-log_t))[rows, y].mean())

    lo, hi = math.log(t_min), math.log(t_max)
    grid = np.linspace(lo, hi, 41)
    if lo < 0.0 < hi:
        grid = np.unique(np.append(grid, 0.0))
    values = [loss(g) for g in grid]
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > 1e-6:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    log_t, f = min([(grid[best], values[best]), (c, fc), (d, fd)], key=lambda x: x[1])
    if lo <= 0.0 <= hi and loss(0.0) - f <= 1e-9:
        return 1.0
    return float(min(max(math.exp(log_t), t_min), t_max))


def _flatten(examples: Mapping[str, Sequence["Example"]] | Sequence["Example"]) -> list:
    if isinstance(examples, Mapping):
        return [e for v in examples.values() for e in v]
    return list(examples)


def calibrate(model: "FusionModel",
              examples: Mapping[str, Sequence["Example"]] | Sequence["Example"],
              text_dim: int, audio_dim: int, max_audio: int = 1500) -> float:
    """Fit the model's temperature on held-out examples (a list, or several named sets pooled)
    and store it: `model.config = replace(model.config, temperature=T)`. Fitted on the raw
    logits, so an earlier temperature is replaced, not compounded. Returns T (1.0 for none)."""
    from .fusion_train import predict_logits

    pool = _flatten(examples)
    logits = predict_logits(model, pool, text_dim, audio_dim, max_audio=max_audio)
    t = fit_temperature(logits, [e.label for e in pool])
    model.config = replace(model.config, temperature=t)
    return t


def reliability_diagram(probs, labels, path: str | Path, title: str = "Reliability",
                        bins: int = 10) -> Path:
    """A PNG: accuracy per confidence bin (bars) against the diagonal (perfect calibration),
    the gap to each bin's mean confidence, the count above each bar and the ECE in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rb = reliability_bins(probs, labels, bins)
    ece = rb.ece()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.5, 5.5), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot: no global state, no display needed
    ax = fig.add_subplot(1, 1, 1)
    width = 1.0 / bins
    centres = rb.edges[:-1] + width / 2
    used = rb.count > 0
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    ax.bar(centres[used], rb.accuracy[used], width=width, color="#4c72b0", edgecolor="black",
           linewidth=0.6, label="accuracy")
    gap = rb.confidence[used] - rb.accuracy[used]
    ax.bar(centres[used], gap, bottom=rb.accuracy[used], width=width, color="#dd8452",
           alpha=0.45, edgecolor="#c44e52", hatch="//", linewidth=0.6,
           label="gap to confidence")
    for x, acc, conf, n in zip(centres[used], rb.accuracy[used], rb.confidence[used],
                               rb.count[used]):
        ax.text(x, min(max(acc, conf) + 0.015, 0.97), f"n={n}", ha="center", va="bottom",
                fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xticks(rb.edges[::max(1, bins // 5)])
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ece_text = "n/a" if math.isnan(ece) else f"{ece:.3f}"
    ax.set_title(f"{title}\nECE {ece_text} (n={rb.total}, {bins} bins)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
