"""The fusion model's configuration, apart from the models themselves (fusion.py) so that the
configuration tree (config.py) and checkpoint headers can be read without importing torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ARCHITECTURES = ("server", "3m-ser", "mersa", "mersa-xattn", "mersa-gated")


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
    # The audio features hold this many encoder layers side by side ((S, layers * dim)); the model
    # learns a weighted sum of them (SUPERB). 1 = one layer, used as it is.
    audio_layers: int = 1
    # Logits are divided by this before the softmax: fitted on held-out speakers after training
    # (temperature scaling, mersa_stream/train/calibration.py); 1.0 = uncalibrated.
    temperature: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)
