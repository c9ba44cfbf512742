"""BERT-family text encoder: token states (last_hidden_state) with their mask.

With a conversation context (`encode(texts, contexts)`, see `mersa_stream/context.py`), two ways
(`context_mode`):
- "pair": each text is read as the second segment of a pair whose first is its context, and the
  returned mask keeps only the current utterance's tokens (its first and last special tokens
  included): the context shapes their states but does not reach the model as tokens of its own;
- "concat": each text is read alone (the same states as without context) and every token's state
  is followed by the mean-pooled embedding of the context read alone (zeros without one): the
  states are twice as wide, and the fusion model learns what the context is worth.

Two ways to the same model: transformers (the concrete class the checkpoint's text encoder names in
its config.json, AutoModel for a type not listed), and for a plain BERT the PyTorch copy in
`bert.py`, which does not import transformers at all (`backend="auto"`, the recognizer's choice:
start-up). Both give the same token states; the trainer keeps transformers' own model (it reaches
into its layers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import ModelError

if TYPE_CHECKING:
    import torch

# config.json's model_type -> the class AutoModel maps it to (transformers' MODEL_MAPPING_NAMES),
# imported directly: no sweep through the auto mapping. Other types go through AutoModel.
MODEL_CLASSES = {
    "albert": "AlbertModel",
    "bert": "BertModel",
    "camembert": "CamembertModel",
    "deberta": "DebertaModel",
    "deberta-v2": "DebertaV2Model",
    "distilbert": "DistilBertModel",
    "electra": "ElectraModel",
    "mpnet": "MPNetModel",
    "roberta": "RobertaModel",
    "xlm-roberta": "XLMRobertaModel",
}
BACKENDS = ("transformers", "auto")
CONTEXT_MODES = ("pair", "concat")


def model_class_name(path: str | Path) -> str | None:
    """The transformers class for `path` (its config.json model_type); None: not listed."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return MODEL_CLASSES.get(config.get("model_type")) if isinstance(config, dict) else None


def model_class(path: str | Path):
    """The concrete transformers class for `path`, else AutoModel."""
    import transformers

    name = model_class_name(path)
    return getattr(transformers, name) if name and hasattr(transformers, name) \
        else transformers.AutoModel


class TextEncoder:
    """`encode(texts)` -> (states (B, T, D), mask (B, T)); an empty text gets an all-False mask.

    `backend`: "transformers" (default), or "auto": a plain BERT (`bert.supported`) without
    transformers, anything else as with "transformers"."""

    def __init__(self, path: str | Path, max_tokens: int = 64, device: str = "cpu",
                 state_dict: dict[str, torch.Tensor] | None = None,
                 backend: str = "transformers", context_tokens: int | None = None,
                 context_mode: str = "pair"):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
        if context_mode not in CONTEXT_MODES:
            raise ValueError(f"context mode {context_mode!r}: one of {', '.join(CONTEXT_MODES)}")
        self.backend = backend
        try:
            if backend == "auto" and _bert_supported(path):
                from .bert import BertEncoder, WordPieceTokenizer

                self.tokenizer = WordPieceTokenizer(path)
                self.model = BertEncoder.from_folder(path)
                self.backend = "bert"
            else:
                self.tokenizer, self.model = _load_transformers(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"text encoder '{path}': cannot load ({str(exc).splitlines()[0]})") \
                from None
        if state_dict:
            missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
            if unexpected:
                raise ModelError(f"text encoder '{path}': checkpoint weights do not fit "
                                 f"(unexpected {unexpected[0]})")
        self.model.eval().to(device)
        self.device = device
        self.max_tokens = max_tokens
        # the most tokens of context before a text (default: the config tree's)
        self.context_tokens = context_tokens or _default_context_tokens()
        self.context_mode = context_mode
        self.hidden = int(self.model.config.hidden_size)
        self.dim = self.hidden * (2 if context_mode == "concat" else 1)

    def tokenize(self, texts: Sequence[str], max_tokens: int | None = None):
        import torch

        max_tokens = max_tokens or self.max_tokens
        if self.backend == "bert":
            batch = self.tokenizer(texts, max_tokens)
        else:
            batch = self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=max_tokens, return_tensors="pt")
        empty = torch.tensor([not t.strip() for t in texts])
        batch["attention_mask"][empty] = 0
        # the model needs one key; the mask we return is False
        batch["attention_mask"][empty, 0] = 1
        return batch, empty

    def tokenize_in_context(self, texts: Sequence[str], contexts: Sequence[str]):
        """Pairs (context, text) where a context is given, else the text alone; each text cut
        to `max_tokens` as alone, each context to its last `context_tokens` tokens. Returns the
        batch, the empty texts and the mask of the current utterance's tokens."""
        import torch

        texts = [_clip_text(t, r, self.max_tokens, keep="start")
                 for t, r in zip(texts, self._rows(texts))]
        contexts = [c if t.strip() else "" for c, t in zip(contexts, texts)]
        cut = [_clip_text(c, r, self.context_tokens, keep="end", specials=False)
               for c, r in zip(contexts, self._rows(contexts))]
        paired = [i for i, c in enumerate(cut) if c.strip()]
        rows = self._rows(texts)
        for i, row in zip(paired, self._rows([texts[i] for i in paired],
                                             [cut[i] for i in paired])):
            rows[i] = row
        pair_rows = set(paired)
        longest = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), longest), self._pad_id(), dtype=torch.long)
        types = torch.zeros((len(rows), longest), dtype=torch.long)
        attention = torch.zeros((len(rows), longest), dtype=torch.long)
        current = torch.zeros((len(rows), longest), dtype=torch.bool)
        for i, (row_ids, row_types, sequence, _) in enumerate(rows):
            n = len(row_ids)
            ids[i, :n], types[i, :n], attention[i, :n] = (torch.tensor(row_ids),
                                                          torch.tensor(row_types), 1)
            if i in pair_rows:  # [CLS] and the last [SEP] belong to the current utterance
                current[i, :n] = torch.tensor([s == 1 for s in sequence])
                current[i, 0] = current[i, n - 1] = True
            else:
                current[i, :n] = True
        empty = torch.tensor([not t.strip() for t in texts])
        attention[empty, 0] = 1  # the model needs one key; the mask we return is False
        batch = {"input_ids": ids, "attention_mask": attention}
        if self._uses_token_types():
            batch["token_type_ids"] = types
        return batch, empty, current

    def _rows(self, firsts: Sequence[str], seconds: Sequence[str] | None = None):
        """Untruncated, unpadded encodings: (ids, token type ids, sequence ids, offsets) each;
        with `seconds`, pairs (seconds[i], firsts[i]): the current text is sequence 1."""
        if self.backend == "bert":
            return self.tokenizer.rows(firsts, seconds)
        if seconds is None:
            enc = self.tokenizer(list(firsts), return_offsets_mapping=True,
                                 return_token_type_ids=True)
        else:
            enc = self.tokenizer(list(seconds), list(firsts), return_offsets_mapping=True,
                                 return_token_type_ids=True)
        return [(enc["input_ids"][i], enc["token_type_ids"][i],
                 [(1 if s == 1 or seconds is None and s == 0 else s) for s in enc.sequence_ids(i)],
                 enc["offset_mapping"][i]) for i in range(len(enc["input_ids"]))]

    def _pad_id(self) -> int:
        return self.tokenizer.pad_id if self.backend == "bert" else self.tokenizer.pad_token_id

    def _uses_token_types(self) -> bool:
        return self.backend == "bert" or "token_type_ids" in self.tokenizer.model_input_names

    def forward(self, texts: Sequence[str], contexts: Sequence[str] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """With gradients (the self-align trainer); `encode` is the inference entry."""
        import torch

        if self.context_mode == "concat":
            states, mask = self._states(texts, None)
            pooled = self.context_embeddings(contexts or [""] * len(texts))
            return torch.cat([states, pooled[:, None, :].expand(-1, states.shape[1], -1)], -1), mask
        return self._states(texts, contexts)

    def _states(self, texts: Sequence[str], contexts: Sequence[str] | None):
        if contexts is not None and any(c.strip() for c in contexts):
            batch, empty, current = self.tokenize_in_context(texts, contexts)
        else:
            (batch, empty), current = self.tokenize(texts), None
        batch = {k: v.to(self.device) for k, v in batch.items()}
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        if current is not None:
            mask &= current.to(self.device)
        mask[empty.to(self.device)] = False
        return states, mask

    def context_embeddings(self, contexts: Sequence[str]) -> torch.Tensor:
        """(B, hidden): each context read alone (its latest `context_tokens` tokens), its token
        states mean-pooled; zeros for an empty one."""
        import torch

        out = torch.zeros(len(contexts), self.hidden, device=self.device)
        given = [i for i, c in enumerate(contexts) if c.strip()]
        if not given:
            return out
        cut = [_clip_text(contexts[i], row, self.context_tokens, keep="end")
               for i, row in zip(given, self._rows([contexts[i] for i in given]))]
        batch, _ = self.tokenize(cut, self.context_tokens)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        states = self.model(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        out[given] = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return out

    def encode(self, texts: Sequence[str], contexts: Sequence[str] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states and mask of `texts`, each read after its context (`contexts[i]`, ""
        for none) where given."""
        import torch

        with torch.inference_mode():
            return self.forward(texts, contexts)


def _clip_text(text: str, row, limit: int, keep: str, specials: bool = True) -> str:
    """`text` cut to its first (keep="start") or last ("end") tokens so that its encoding alone
    has at most `limit` tokens (its special tokens counted when `specials`), cut at a token's
    character offsets."""
    _, _, sequence, offsets = row
    content = [i for i, s in enumerate(sequence) if s is not None]
    room = limit - ((len(sequence) - len(content)) if specials else 0)
    if len(content) <= room:
        return text
    if room <= 0:
        return ""
    if keep == "start":
        return text[:offsets[content[room - 1]][1]]
    return text[offsets[content[-room]][0]:]


def _default_context_tokens() -> int:
    from ..config import TrainConfig

    return TrainConfig.text_context_tokens


def _bert_supported(path: str | Path) -> bool:
    from .bert import supported

    return supported(path)


def _load_transformers(path: str | Path):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return tokenizer, model_class(path).from_pretrained(str(path), use_safetensors=True)
