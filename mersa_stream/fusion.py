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
                 CrossAtt(Q=text, K=V=audio) and CrossAtt(Q=audio, K=V=text), concatenated along time.
The first position read out is a learned [CLS] token put in front of the concatenated sequence:
unlike the text's own first token it exists when the transcript is empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

import torch
from torch import nn

ARCHITECTURES = ("server", "3m-ser", "mersa", "mersa-xattn")


@dataclass(frozen=True)
class FusionConfig:
    architecture: str
    text_dim: int
    audio_dim: int
    num_classes: int
    hidden: int = 128
    heads: int = 8
    dropout: float = 0.5
    attention_dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


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
    """Base: holds the config; subclasses implement `forward(text, text_mask, audio, audio_mask)`."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config

    @staticmethod
    def build(config: FusionConfig) -> "FusionModel":
        classes = {"server": ServerModel, "3m-ser": ThreeMSerModel, "mersa": MersaModel,
                   "mersa-xattn": MersaModel}
        if config.architecture not in classes:
            raise ValueError(f"unknown architecture {config.architecture!r} "
                             f"(one of {', '.join(ARCHITECTURES)})")
        return classes[config.architecture](config)

    def predict_proba(self, text, text_mask, audio, audio_mask) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self(text, text_mask, audio, audio_mask).float(), dim=-1)


class ServerModel(FusionModel):
    def __init__(self, config: FusionConfig):
        super().__init__(config)
        self.text_proj = nn.Linear(config.text_dim, config.hidden)
        self.audio_proj = nn.Linear(config.audio_dim, config.hidden)
        self.classifier = nn.Sequential(
            nn.Linear(2 * config.hidden, 64), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(64, config.num_classes))

    def forward(self, text, text_mask, audio, audio_mask):
        t = self.text_proj(masked_mean(text, text_mask))
        a = (audio * audio_mask.unsqueeze(-1).to(audio.dtype)).sum(1)
        a = self.audio_proj(a)
        return self.classifier(torch.cat([t, a], dim=-1))


class _SequenceFusion(FusionModel):
    """Shared tail: [CLS] + streams concatenated along time -> self-attention -> classifier."""

    def __init__(self, config: FusionConfig):
        super().__init__(config)
        h = config.hidden
        self.audio_proj = Projection(config.audio_dim, h)
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
        a = self.audio_proj(audio)
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
        t = self.text_proj(text)
        a = self.audio_proj(audio)
        t_self = self.text_self(t, t, text_mask)
        a_self = self.audio_self(a, a, audio_mask)
        streams, masks = [t_self, a_self], [text_mask, audio_mask]
        if self.cross_attention:
            streams += [self.text_to_audio(t_self, a_self, audio_mask),
                        self.audio_to_text(a_self, t_self, text_mask)]
            masks += [text_mask, audio_mask]
        return self._read_out(streams, masks)
