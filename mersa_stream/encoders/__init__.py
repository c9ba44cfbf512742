"""Feature encoders. Text: BERT-family token states. Audio: frame sequences.

Every audio encoder offers `dim`, `frames_per_second` and `encode(audios) -> list[(frames, dim)]`
for 16 kHz mono float32 arrays. The Whisper encoder is not here: its states come out of the
ASR pass itself (see `asr.py`), so the default path runs the audio encoder once.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class AudioEncoder(Protocol):
    dim: int
    frames_per_second: float

    def encode(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]: ...
