"""VGGish audio encoder (Hershey et al. 2017), a PyTorch port of the published model.

Follows the TensorFlow release (`models/research/audioset/vggish`: `vggish_params.py`,
`mel_features.py`, `vggish_slim.py`) and the `torchvggish` port, whose parameter names
this module keeps so that its standard weights file `vggish-10086976.pth` loads with
`strict=True`.

Input features (numpy only, float64 as in `mel_features.py`):
  16 kHz mono float32 -> frames of 400 samples (25 ms) every 160 samples (10 ms), periodic
  Hann window, |rfft| with FFT length 512 -> 64-band HTK mel filterbank 125-7500 Hz
  (mel = 1127 ln(1 + f/700), triangles built in the mel domain from the spectrogram bin
  frequencies, DC bin excluded) -> log(mel + 0.01) -> non-overlapping examples of
  96 frames x 64 bands (0.96 s each; a trailing partial example is dropped, as in VGGish).

  One example needs 400 + 95 * 160 = 15600 samples (0.975 s). Audio shorter than that
  (including anything shorter than 0.96 s, and empty audio) is zero-padded at the end to
  exactly one example, so every audio yields at least one embedding.

Output: the raw 128-d embeddings of the last fully connected layer (after its ReLU).
No PCA / whitening / 8-bit quantisation post-processing is applied (the AudioSet release
applies those separately; they are not part of this encoder).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelError

# vggish_params.py
SAMPLE_RATE = 16000
STFT_WINDOW_SAMPLES = 400  # 0.025 s
STFT_HOP_SAMPLES = 160  # 0.010 s
FFT_LENGTH = 512  # 2 ** ceil(log2(400))
NUM_MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames; examples do not overlap
EMBEDDING_SIZE = 128
MIN_SAMPLES = STFT_WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * STFT_HOP_SAMPLES  # 15600


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as `mel_features.hertz_to_mel`: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(hertz, dtype=np.float64) / 700.0)


def mel_filterbank(
    num_bands: int = NUM_MEL_BANDS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """Triangular HTK mel filterbank, shape (num_bands, num_spectrogram_bins), float64.

    Same weights as `mel_features.spectrogram_to_mel_matrix` (which returns the transpose):
    band edges equally spaced in mel between `lower_hz` and `upper_hz`, triangles of peak 1
    evaluated at the mel value of each spectrogram bin's frequency, DC bin zeroed.
    """
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_hz < upper_hz <= nyquist:
        raise ValueError(f"need 0 <= lower_hz < upper_hz <= {nyquist}, got {lower_hz}, {upper_hz}")
    bins_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_bands + 2)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_mel[None, :] - lower) / (center - lower)
    falling = (upper - bins_mel[None, :]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[:, 0] = 0.0  # HTK excludes the DC component
    return weights


_FILTERBANK = mel_filterbank()
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi / STFT_WINDOW_SAMPLES * np.arange(STFT_WINDOW_SAMPLES))


def _frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Non-padded framing, as `mel_features.frame` (first axis)."""
    count = 1 + (data.shape[0] - window) // hop
    idx = np.arange(window)[None, :] + hop * np.arange(count)[:, None]
    return data[idx]


def log_mel_examples(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono audio -> float32 log-mel examples, shape (num_examples, 96, 64).

    Audio shorter than one example (15600 samples, 0.975 s) is zero-padded to one example.
    """
    data = np.asarray(audio, dtype=np.float64)
    if data.ndim != 1:
        raise ValueError(f"expected 1-D mono audio, got shape {data.shape}")
    if data.shape[0] < MIN_SAMPLES:
        data = np.pad(data, (0, MIN_SAMPLES - data.shape[0]))
    frames = _frame(data, STFT_WINDOW_SAMPLES, STFT_HOP_SAMPLES) * _WINDOW
    spectrogram = np.abs(np.fft.rfft(frames, FFT_LENGTH))
    log_mel = np.log(spectrogram @ _FILTERBANK.T + LOG_OFFSET)
    return _frame(log_mel, EXAMPLE_FRAMES, EXAMPLE_FRAMES).astype(np.float32)


class VGGish(nn.Module):
    """The VGGish network; module names match torchvggish's `VGG` (features / embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1),
                           nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 96, 64) log-mel examples -> (N, 128) embeddings."""
        x = self.features(x)  # (N, 512, 6, 4)
        # Flatten in TensorFlow's (N, H, W, C) order, as torchvggish does, so the
        # converted TF weights of the first fully connected layer line up.
        x = x.permute(0, 2, 3, 1).contiguous()
        return self.embeddings(x.reshape(x.shape[0], -1))


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pth"):
        raise ModelError(
            f"VGGish weights {path.name}: unsupported file type {path.suffix or '(none)'!r} "
            "(expected .safetensors or .pth)"
        )
    if not path.is_file():
        raise ModelError(f"VGGish weights {path.name}: file not found ({path})")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            # The restricted unpickler: tensors and plain containers only, no code runs.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the file's fault
        cause = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelError(f"VGGish weights {path.name}: could not be loaded ({cause})") from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"VGGish weights {path.name}: not a state dict of named tensors")
    return state


def _check_state_dict(
    path: Path, state: Mapping[str, torch.Tensor], expected: dict[str, torch.Size]
) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(
                f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}"
            )
        raise ModelError(
            f"VGGish weights {path.name}: keys do not match VGGish ({'; '.join(parts)})"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise ModelError(
                f"VGGish weights {path.name}: {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(shape)}"
            )
        if not state[key].is_floating_point():
            raise ModelError(
                f"VGGish weights {path.name}: {key} has non-float dtype {state[key].dtype}"
            )


class VGGishEncoder:
    """VGGish as an audio encoder: one raw 128-d embedding (no PCA) per 0.96 s example.

    `weights`: a `.safetensors` file or torchvggish's `.pth` state dict (e.g.
    `vggish-10086976.pth`); `None` builds a randomly initialised network (tests only).
    """

    dim = EMBEDDING_SIZE
    frames_per_second = 1 / 0.96

    def __init__(self, weights: str | Path | None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        if weights is None:
            model = VGGish()
        else:
            path = Path(weights)
            state = _read_state_dict(path)
            with torch.device("meta"):  # skip the random init of 72M parameters
                model = VGGish()
            expected = {k: v.shape for k, v in model.state_dict().items()}
            _check_state_dict(path, state, expected)
            state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
            try:
                model.load_state_dict(state, strict=True, assign=True)
            except RuntimeError as exc:
                cause = " ".join(str(exc).split())[:200]
                raise ModelError(
                    f"VGGish weights {path.name}: does not fit VGGish ({cause})"
                ) from exc
        self.model = model.to(self.device).eval()

    def encode(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each 16 kHz mono audio -> float32 (num_examples, 128); all examples in one batch."""
        examples = [log_mel_examples(a) for a in audios]
        if not examples:
            return []
        counts = [len(e) for e in examples]
        batch = torch.from_numpy(np.concatenate(examples)).unsqueeze(1).to(self.device)
        with torch.inference_mode():
            out = self.model(batch).float().cpu().numpy()
        splits = np.cumsum(counts)[:-1]
        return [np.ascontiguousarray(part, dtype=np.float32) for part in np.split(out, splits)]
