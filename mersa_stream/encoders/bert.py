"""A BERT encoder (transformers' `BertModel`, inference) in plain PyTorch, and its WordPiece
tokenizer on the `tokenizers` library alone: what the recognizer's text encoder needs, without
importing transformers (its modelling stack alone takes ~3-4 s to import on a 2-core CPU; see
docs/benchmarks.md, "Start-up").

Same parameter names as `BertModel` (a checkpoint's self-aligned tensors load into either), the
same operations in the same order (scaled-dot-product attention, exact GELU, post-norm), so the
token states are the same numbers; `tests/test_startup.py` holds both side by side. Only a plain
encoder qualifies (`supported`): absolute positions, GELU, no decoder or cross-attention, a
BERT WordPiece tokenizer. Anything else goes through transformers (`encoders/text.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

TOKENIZER_CLASSES = (None, "BertTokenizer", "BertTokenizerFast")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def supported(folder: str | Path) -> bool:
    """Whether the model in `folder` is a plain BERT encoder this module reproduces exactly."""
    folder = Path(folder)
    config = _json(folder / "config.json")
    tokenizer = _json(folder / "tokenizer_config.json")
    return (config.get("model_type") == "bert"
            and config.get("hidden_act", "gelu") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and not config.get("is_decoder", False)
            and not config.get("add_cross_attention", False)
            and not config.get("chunk_size_feed_forward", 0)
            and config.get("_attn_implementation") in (None, "sdpa")
            and tokenizer.get("tokenizer_class") in TOKENIZER_CLASSES
            and (folder / "tokenizer.json").is_file()
            and (folder / "model.safetensors").is_file())


class WordPieceTokenizer:
    """`BertTokenizer` of transformers 5 called as `tok(texts, padding=True, truncation=True,
    max_length=n, return_tensors="pt")`: the same pipeline built on the same files."""

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors

        folder = Path(folder)
        options = _json(folder / "tokenizer_config.json")
        self.backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.backend.no_truncation()
        self.backend.no_padding()
        self.backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=options.get("tokenize_chinese_chars", True),
            strip_accents=options.get("strip_accents"),
            lowercase=options.get("do_lower_case", True))
        self.backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls, sep = str(options.get("cls_token", "[CLS]")), str(options.get("sep_token", "[SEP]"))
        self.pad_token = str(options.get("pad_token", "[PAD]"))
        ids = {t: self.backend.token_to_id(t) for t in (cls, sep, self.pad_token)}
        if None in ids.values():
            raise ValueError(f"{folder}: special tokens missing from the vocabulary")
        self.backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, ids[cls]), (sep, ids[sep])])
        self.pad_id = ids[self.pad_token]

    def __call__(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        self.backend.enable_truncation(max_length, stride=0, strategy="longest_first",
                                       direction="right")
        self.backend.enable_padding(direction="right", pad_id=self.pad_id, pad_type_id=0,
                                    pad_token=self.pad_token)
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=True)
        return self._tensors(encodings)

    def rows(self, firsts: Sequence[str], seconds: Sequence[str] | None = None) -> list[tuple]:
        """Untruncated, unpadded encodings (ids, type ids, sequence ids, offsets) of `firsts`,
        or of the pairs (seconds[i], firsts[i]); the text of `firsts` is sequence 1 either way
        (what `TextEncoder.tokenize_in_context` expects)."""
        self.backend.no_truncation()
        self.backend.no_padding()
        inputs = list(firsts) if seconds is None else list(zip(seconds, firsts))
        out = []
        for e in self.backend.encode_batch(inputs, add_special_tokens=True):
            sequence = [1 if s is not None and (seconds is None or s == 1) else s
                        for s in e.sequence_ids]
            out.append((e.ids, e.type_ids, sequence, e.offsets))
        return out

    @staticmethod
    def _tensors(encodings) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
                "token_type_ids": torch.tensor([e.type_ids for e in encodings], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in encodings],
                                               dtype=torch.long)}


class _Embeddings(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"],
                                            padding_idx=c.get("pad_token_id", 0))
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.token_type_embeddings = nn.Embedding(c.get("type_vocab_size", 2), c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c.get("layer_norm_eps", 1e-12))
        self.dropout = nn.Dropout(c.get("hidden_dropout_prob", 0.1))
        self.register_buffer("position_ids", torch.arange(c["max_position_embeddings"])[None],
                             persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, :input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.heads = c["num_attention_heads"]
        self.head_size = c["hidden_size"] // self.heads
        self.scaling = self.head_size ** -0.5
        self.query = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.key = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.value = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.dropout_p = c.get("attention_probs_dropout_prob", 0.1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shape = (*x.shape[:-1], -1, self.head_size)
        q, k, v = (layer(x).view(*shape).transpose(1, 2)
                   for layer in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling,
                                             dropout_p=self.dropout_p if self.training else 0.0)
        out = out.reshape(out.shape[0], -1, x.shape[1], self.head_size).transpose(1, 2)
        return out.contiguous().reshape(*x.shape[:-1], -1).contiguous()


class _Residual(nn.Module):
    """`BertSelfOutput` / `BertOutput`: dense, dropout, LayerNorm(x + input)."""

    def __init__(self, c: dict, inner: int):
        super().__init__()
        self.dense = nn.Linear(inner, c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c.get("layer_norm_eps", 1e-12))
        self.dropout = nn.Dropout(c.get("hidden_dropout_prob", 0.1))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Residual(c, c["hidden_size"])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _Residual(c, c["intermediate_size"])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c["num_hidden_layers"]))


class _Pooler(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])


class BertEncoder(nn.Module):
    """`BertModel` for `last_hidden_state`: the same state dict (pooler included, unused)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = SimpleNamespace(**config)
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.pooler = _Pooler(config)

    @classmethod
    def from_folder(cls, folder: str | Path) -> BertEncoder:
        from safetensors.torch import load_file

        folder = Path(folder)
        model = cls(_json(folder / "config.json"))
        state = load_file(str(folder / "model.safetensors"))
        if any(k.startswith("bert.") for k in state):
            state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
        state.pop("embeddings.position_ids", None)
        state.pop("embeddings.token_type_ids", None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("pooler.")] or unexpected:
            raise ValueError(f"{folder}: weights do not fit a BertModel "
                             f"({(missing or unexpected)[0]})")
        return model.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> SimpleNamespace:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            batch, length = attention_mask.shape
            mask = attention_mask.bool()[:, None, None, :].expand(batch, 1, length, length)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return SimpleNamespace(last_hidden_state=x)
