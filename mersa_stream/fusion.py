"""The fusion models (one definition, shared by inference and the trainer).

All take the same batch: text token features (B, T, Dt) with a mask (B, T) and audio frame
features (B, S, Da) with a mask (B, S); mask value True = a real position. A missing modality is a
row whose mask is all False (an empty transcript, a text-only dataset). Every attention gets a
learned always-present "null" key, so a query whose keys are all masked still has a defined output
and a masked position never changes anything.

- ServerModel    SERVER: pooled text + summed audio, concatenated -> MLP (256 -> 64 -> classes).
- ThreeMSerModel 3M-SER: text self-attention (8 heads) -> 128 + LayerNorm; audio -> 128 + LayerNorm;
                 the two sequences concatenated along time -> self-attention -> first position.
- MersaModel     MERSA: as 3M-SER (the self-aligned text encoder is the difference), and with
                 `cross_attention=True` the paper's eq. 3-4: each modality's self-attention plus
                 CrossAtt(Q=text, K=V=audio) and CrossAtt(Q=audio, K=V=text), concatenated along
                 time.
The first position read out is a learned [CLS] token put in front of the concatenated sequence:
unlike the text's own first token it exists when the transcript is empty.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fusion_config import ARCHITECTURES, FusionConfig  # noqa: F401 - defined apart, torch-free


class AttentionBlock(nn.Module):
    """Pre-norm multi-head attention + feed-forward with residuals, masks honoured exactly."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.null_kv = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, kv_mask: torch.Tensor):
        batch = key_value.shape[0]
        kv = torch.cat([self.null_kv.expand(batch, 1, -1), self.norm_kv(key_value)], dim=1)
        keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=kv_mask.device), kv_mask],
                         dim=1)
        attended, _ = self.attn(self.norm_q(query), kv, kv, key_padding_mask=~keep,
                                need_weights=False)
        x = query + self.drop(attended)
        return x + self.drop(self.ff(self.norm_ff(x)))


class LayerMix(nn.Module):
    """SUPERB's learned weighted sum of an encoder's layers, each normalised first (their scales
    differ by an order of magnitude). With one layer it is the identity and has no weights, so
    checkpoints of one-layer features keep their state dict."""

    def __init__(self, layers: int, width: int):
        super().__init__()
        if width % layers:
            raise ValueError(f"audio_dim {width} is not a multiple of audio_layers {layers}")
        self.layers, self.dim = layers, width // layers
        if layers > 1:
            self.weights = nn.Parameter(torch.zeros(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layers == 1:
            return x
        x = F.layer_norm(x.view(*x.shape[:-1], self.layers, self.dim), (self.dim,))
        return (x * torch.softmax(self.weights, 0)[:, None]).sum(-2)


class Projection(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))


def pad_sequences(arrays: Sequence[np.ndarray], dim: int, limit: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's batch format: (B, S, dim) zero-padded float tensor and (B, S) mask, each
    sequence cut to `limit` positions; an empty array gives an all-False row."""
    lengths = [min(len(a), limit) if limit else len(a) for a in arrays]
    longest = max(lengths + [1])
    out = torch.zeros(len(arrays), longest, dim)
    mask = torch.zeros(len(arrays), longest, dtype=torch.bool)
    for i, (a, n) in enumerate(zip(arrays, lengths)):
        if n:
            out[i, :n] = torch.from_numpy(np.asarray(a[:n], np.float32))
            mask[i, :n] = True
    return out, mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class FusionModel(nn.Module):
    """Base: holds the config; subclasses implement
    `forward(text, text_mask, audio, audio_mask)`."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config

    @staticmethod
    def build(config: FusionConfig) -> "FusionModel":
        classes = {"server": ServerModel, "3m-ser": ThreeMSerModel, "mersa": MersaModel,
                   "mersa-xattn": MersaModel, "mersa-gated": GatedMersaModel}
        if config.architecture not in classes:
            raise ValueError(f"unknown architecture {config.architecture!r} "
                             f"(one of {', '.join(ARCHITECTURES)})")
        return classes[config.architecture](config)

    def predict_proba(self, text, text_mask, audio, audio_mask) -> torch.Tensor:
        """Calibrated class probabilities (logits / temperature, softmax)."""
        with torch.inference_mode():
            logits = self(text, text_mask, audio, audio_mask).float()
            return torch.softmax(logits / self.config.temperature, dim=-1)


class ServerModel(FusionModel):
    def __init__(self, config: FusionConfig):
        super().__init__(config)
        self.text_proj = nn.Linear(config.text_dim, config.hidden)
        self.audio_mix = LayerMix(config.audio_layers, config.audio_dim)
        self.audio_proj = nn.Linear(self.audio_mix.dim, config.hidden)
        self.classifier = nn.Sequential(
            nn.Linear(2 * config.hidden, 64), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(64, config.num_classes))

    def forward(self, text, text_mask, audio, audio_mask):
        t = self.text_proj(masked_mean(text, text_mask))
        a = (self.audio_mix(audio) * audio_mask.unsqueeze(-1).to(audio.dtype)).sum(1)
        a = self.audio_proj(a)
        return self.classifier(torch.cat([t, a], dim=-1))


class _SequenceFusion(FusionModel):
    """Shared tail: [CLS] + streams concatenated along time -> self-attention -> classifier."""

    def __init__(self, config: FusionConfig):
        super().__init__(config)
        h = config.hidden
        self.audio_mix = LayerMix(config.audio_layers, config.audio_dim)
        self.audio_proj = Projection(self.audio_mix.dim, h)
        self.cls = nn.Parameter(torch.zeros(1, 1, h))
        nn.init.normal_(self.cls, std=0.02)
        self.fusion = AttentionBlock(h, config.heads, config.attention_dropout)
        self.head = nn.Sequential(nn.LayerNorm(h), nn.Dropout(config.dropout),
                                  nn.Linear(h, config.num_classes))

    def _read_out(self, streams: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        batch = streams[0].shape[0]
        seq = torch.cat([self.cls.expand(batch, 1, -1), *streams], dim=1)
        keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=seq.device), *masks], dim=1)
        cls = self.fusion(seq[:, :1], seq, keep)
        return self.head(cls[:, 0])


class ThreeMSerModel(_SequenceFusion):
    def __init__(self, config: FusionConfig):
        super().__init__(config)
        heads = config.heads if config.text_dim % config.heads == 0 else 1
        self.text_attention = nn.MultiheadAttention(config.text_dim, heads, batch_first=True,
                                                    dropout=config.attention_dropout)
        self.text_proj = Projection(config.text_dim, config.hidden)
        self.joint = AttentionBlock(config.hidden, config.heads, config.attention_dropout)

    def forward(self, text, text_mask, audio, audio_mask):
        # a row with no text attends to itself only, and is masked out afterwards
        empty = ~text_mask.any(1, keepdim=True)
        key_mask = text_mask | (empty & (torch.arange(text.shape[1], device=text.device) == 0))
        attended, _ = self.text_attention(text, text, text, key_padding_mask=~key_mask,
                                          need_weights=False)
        t = self.text_proj(attended)
        a = self.audio_proj(self.audio_mix(audio))
        seq = torch.cat([t, a], dim=1)
        mask = torch.cat([text_mask, audio_mask], dim=1)
        seq = self.joint(seq, seq, mask)
        return self._read_out([seq], [mask])


class MersaModel(_SequenceFusion):
    def __init__(self, config: FusionConfig):
        super().__init__(config)
        h, heads, drop = config.hidden, config.heads, config.attention_dropout
        self.cross_attention = config.architecture == "mersa-xattn"
        self.text_proj = Projection(config.text_dim, h)
        self.text_self = AttentionBlock(h, heads, drop)
        self.audio_self = AttentionBlock(h, heads, drop)
        if self.cross_attention:
            self.text_to_audio = AttentionBlock(h, heads, drop)  # Q=text, K=V=audio (eq. 3)
            self.audio_to_text = AttentionBlock(h, heads, drop)  # Q=audio, K=V=text (eq. 4)

    def forward(self, text, text_mask, audio, audio_mask):
        return self._fused(*self._encode(text, text_mask, audio, audio_mask))

    def _encode(self, text, text_mask, audio, audio_mask):
        t = self.text_proj(text)
        a = self.audio_proj(self.audio_mix(audio))
        return self.text_self(t, t, text_mask), text_mask, self.audio_self(a, a, audio_mask), \
            audio_mask

    def _fused(self, t_self, text_mask, a_self, audio_mask):
        streams, masks = [t_self, a_self], [text_mask, audio_mask]
        if self.cross_attention:
            streams += [self.text_to_audio(t_self, a_self, audio_mask),
                        self.audio_to_text(a_self, t_self, text_mask)]
            masks += [text_mask, audio_mask]
        return self._read_out(streams, masks)


def masked_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    return masked_mean((x - mean.unsqueeze(1)) ** 2, mask).clamp(min=1e-6).sqrt()


BRANCHES = ("text", "audio", "fused")


class GatedMersaModel(MersaModel):
    """MERSA + cross-attention, plus a text-only head, an audio-only head and a per-utterance
    gate that mixes the three heads' probabilities: where the voice says nothing the model can
    learn to follow the words (and the reverse). A missing modality's head gets no weight.
    `forward` returns log-probabilities (valid logits); `branch_logits` gives every head for the
    trainer's auxiliary losses."""

    def __init__(self, config: FusionConfig):
        super().__init__(replace(config, architecture="mersa-xattn"))
        self.config = config
        h, c = config.hidden, config.num_classes
        self.text_head = nn.Sequential(nn.LayerNorm(h), nn.Dropout(config.dropout), nn.Linear(h, c))
        # mean and std over the frames: the audio read-out a linear probe finds best
        self.audio_head = nn.Sequential(nn.LayerNorm(2 * h), nn.Dropout(config.dropout),
                                        nn.Linear(2 * h, c))
        self.gate = nn.Sequential(nn.LayerNorm(3 * h + 2), nn.Linear(3 * h + 2, h), nn.GELU(),
                                  nn.Linear(h, len(BRANCHES)))

    def branch_logits(self, text, text_mask, audio, audio_mask) -> dict[str, torch.Tensor]:
        t_self, _, a_self, _ = self._encode(text, text_mask, audio, audio_mask)
        t_pool = masked_mean(t_self, text_mask)
        a_pool = torch.cat([masked_mean(a_self, audio_mask), masked_std(a_self, audio_mask)], -1)
        has_text, has_audio = text_mask.any(1), audio_mask.any(1)
        out = {"text": self.text_head(t_pool), "audio": self.audio_head(a_pool),
               "fused": self._fused(t_self, text_mask, a_self, audio_mask)}
        gate_in = torch.cat([t_pool, a_pool, has_text[:, None].float(),
                             has_audio[:, None].float()], -1)
        present = torch.stack([has_text, has_audio, torch.ones_like(has_text)], -1)
        gate = self.gate(gate_in).masked_fill(~present, -torch.inf).log_softmax(-1)
        log_probs = torch.stack([out[b].log_softmax(-1) for b in BRANCHES], 1)
        out["final"] = torch.logsumexp(gate.unsqueeze(-1) + log_probs, dim=1)
        out["gate"] = gate.exp()
        return out

    def forward(self, text, text_mask, audio, audio_mask):
        return self.branch_logits(text, text_mask, audio, audio_mask)["final"]
