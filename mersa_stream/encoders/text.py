"""BERT-family text encoder: token states (last_hidden_state) with their mask."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..errors import ModelError


class TextEncoder:
    """`encode(texts)` -> (states (B, T, D), mask (B, T)); an empty text gets an all-False mask."""

    def __init__(self, path: str | Path, max_tokens: int = 64, device: str = "cpu",
                 state_dict: dict[str, torch.Tensor] | None = None):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path), use_safetensors=True)
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
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_tokens, return_tensors="pt")
        empty = torch.tensor([not t.strip() for t in texts])
        batch["attention_mask"][empty] = 0
        batch["attention_mask"][empty, 0] = 1  # the model needs one key; the mask we return is False
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
        with torch.inference_mode():
            return self.forward(texts)

