"""wav2vec2 (transformers `Wav2Vec2Model`): 50 frame states per second of 16 kHz audio."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import ModelError


class Wav2Vec2Encoder:
    frames_per_second = 50.0

    def __init__(self, path: str | Path, device: str = "cpu", normalize: bool | None = None):
        from transformers import Wav2Vec2Model

        try:
            self.model = Wav2Vec2Model.from_pretrained(str(path), use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"wav2vec2 model '{path}': cannot load ({str(exc).splitlines()[0]})") \
                from None
        self.model.eval().to(device)
        self.device = device
        self.dim = int(self.model.config.hidden_size)
        # wav2vec2-base was trained on raw audio; large/lv60 models expect zero-mean unit-variance
        self.normalize = normalize if normalize is not None else \
            self.model.config.feat_extract_norm == "layer"

    def encode(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        # one utterance at a time: wav2vec2-base has no attention mask, padding would change it
        out = []
        with torch.inference_mode():
            for audio in audios:
                x = np.asarray(audio, np.float32)
                if len(x) < 400:
                    x = np.pad(x, (0, 400 - len(x)))
                if self.normalize:
                    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
                states = self.model(torch.from_numpy(x)[None].to(self.device)).last_hidden_state
                out.append(states[0].float().cpu().numpy())
        return out
