"""BERT-family text encoder: token states (last_hidden_state) with their mask.

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
                 backend: str = "transformers"):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
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
        self.dim = int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]):
        import torch

        if self.backend == "bert":
            batch = self.tokenizer(texts, self.max_tokens)
        else:
            batch = self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt")
        empty = torch.tensor([not t.strip() for t in texts])
        batch["attention_mask"][empty] = 0
        # the model needs one key; the mask we return is False
        batch["attention_mask"][empty, 0] = 1
        return batch, empty

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """With gradients (the self-align trainer); `encode` is the inference entry."""
        batch, empty = self.tokenize(texts)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        mask[empty.to(self.device)] = False
        return states, mask

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        with torch.inference_mode():
            return self.forward(texts)


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
