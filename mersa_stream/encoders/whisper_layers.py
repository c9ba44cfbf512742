"""The Whisper encoder in PyTorch, loaded from the CTranslate2 `model.bin` of the ASR model, run on
an utterance's true length, every layer's output kept (emotion features).

Why not CTranslate2's own `encode`: it takes 30 s windows only and returns the last layer, which
is tuned for transcription; the middle layers carry more emotion, and a padded window makes an
utterance's features depend on the silence (or, packed, the neighbours) around it
(docs/results.md). The ASR itself stays on CTranslate2.

`model.bin` layout (CTranslate2 `specs/model_spec.py`, `_serialize`): uint32 binary version,
the spec name, uint32 revision, uint32 variable count, then per variable its name, uint8 rank,
uint32 dims, uint8 dtype id, uint32 byte count and the raw bytes; then the aliases. Strings are a
uint16 length (counting a trailing NUL) and the bytes.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

DTYPES = {0: np.float32, 2: np.int16, 3: np.int32, 4: np.float16}
BF16, INT8 = 5, 1
SAMPLE_RATE = 16_000


def _read(f: BinaryIO, fmt: str):
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _read_string(f: BinaryIO) -> str:
    return f.read(_read(f, "<H"))[:-1].decode("utf-8")


def read_ct2_variables(path: str | Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model file whose names start with `prefix` (others are
    skipped without reading), as numpy arrays in their stored type."""
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        version = _read(f, "<I")
        if version < 5:
            raise ModelError(f"{path}: CTranslate2 binary version {version} is too old (need >= 5)")
        spec, _revision = _read_string(f), _read(f, "<I")
        if spec != "WhisperSpec":
            raise ModelError(f"{path}: a {spec} model, not Whisper")
        for _ in range(_read(f, "<I")):
            name = _read_string(f)
            shape = [_read(f, "<I") for _ in range(_read(f, "<B"))]
            dtype, size = _read(f, "<B"), _read(f, "<I")
            if not name.startswith(prefix):
                f.seek(size, 1)
                continue
            if dtype == INT8 or name.endswith("weight_scale"):
                raise ModelError(f"{path}: int8-quantized weights; the emotion encoder needs a "
                                 f"float16/float32 Whisper conversion")
            raw = f.read(size)
            if dtype == BF16:  # bfloat16 = the top half of a float32
                values = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                values = np.frombuffer(raw, DTYPES[dtype])
            out[name] = values.reshape(shape)
    return out


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + GELU feed-forward (Whisper's residual block)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)  # CTranslate2 fuses Q, K, V in this order
        self.out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, 4 * dim)
        self.ffn_out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).chunk(3, dim=-1)
        q, k, v = (t.view(batch, frames, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + self.out(attended)
        return x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))


class WhisperEncoderModel(nn.Module):
    """Conv front end + sinusoidal positions + blocks + final LayerNorm, as in Whisper."""

    def __init__(self, mels: int, dim: int, heads: int, layers: int, positions: int):
        super().__init__()
        self.conv1 = nn.Conv1d(mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(positions, dim))
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """mel (B, mels, T) -> the states after the embedding, after each block and after the
        final LayerNorm: layers + 2 tensors of (B, ceil(T / 2), dim)."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positions[:x.shape[1]]
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        states.append(self.norm(x))
        return states

    @classmethod
    def from_ct2(cls, variables: dict[str, np.ndarray]) -> "WhisperEncoderModel":
        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(np.asarray(variables[f"encoder/{name}"], np.float32))

        dim, mels, _ = variables["encoder/conv1/weight"].shape
        layers = len({n.split("/")[1] for n in variables
                      if n.split("/")[1].removeprefix("layer_").isdigit()})
        heads = int(variables["encoder/num_heads"])
        positions = variables["encoder/position_encodings/encodings"].shape[0]
        model = cls(mels, dim, heads, layers, positions)
        state = {"conv1.weight": tensor("conv1/weight"), "conv1.bias": tensor("conv1/bias"),
                 "conv2.weight": tensor("conv2/weight"), "conv2.bias": tensor("conv2/bias"),
                 "positions": tensor("position_encodings/encodings"),
                 "norm.weight": tensor("layer_norm/gamma"), "norm.bias": tensor("layer_norm/beta")}
        ct2_names = {"attn_norm": "self_attention/layer_norm", "qkv": "self_attention/linear_0",
                     "out": "self_attention/linear_1", "ffn_norm": "ffn/layer_norm",
                     "ffn_in": "ffn/linear_0", "ffn_out": "ffn/linear_1"}
        for i in range(layers):
            for ours, theirs in ct2_names.items():
                norm = ours.endswith("norm")
                state[f"blocks.{i}.{ours}.weight"] = tensor(f"layer_{i}/{theirs}/"
                                                            f"{'gamma' if norm else 'weight'}")
                state[f"blocks.{i}.{ours}.bias"] = tensor(f"layer_{i}/{theirs}/"
                                                          f"{'beta' if norm else 'bias'}")
        model.load_state_dict(state, strict=True)
        return model.eval()


def quantize_int8(model: nn.Module) -> nn.Module:
    """The model with every Linear layer dynamically quantized to int8 (CPU only): weights int8 per
    output channel, each input's activations quantized on the fly (per tensor). The convolutions,
    LayerNorms and attention stay float32. Per-channel weights: the closer of the two to the float
    features on RAVDESS + EmoDB clips (docs/benchmarks.md, "A cheaper audio encoder")."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's eager quantization is deprecated for torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


class WhisperLayerEncoder:
    """Emotion features: every layer of the Whisper encoder on the utterance's true length,
    concatenated per frame ((frames, layers * dim) float16, 50 frames per second). The fusion model
    learns how to weigh the layers (`FusionConfig.audio_layers`).

    `quantize()`: the Linear layers to int8 (`quantize_int8`; the recognizer's
    `runtime.audio_encoder_int8`); CPU only. The trainer's features always come from the float32
    model."""

    frames_per_second = 50.0

    def __init__(self, model_dir: str | Path, device: str = "cpu"):
        from faster_whisper.feature_extractor import FeatureExtractor

        path = Path(model_dir) / "model.bin"
        if not path.is_file():
            raise ModelError(f"{model_dir}: no model.bin (a CTranslate2 Whisper folder)")
        self.model = WhisperEncoderModel.from_ct2(read_ct2_variables(path)).to(device)
        self.device = device
        self.int8 = False  # see quantize()
        self.mels = self.model.conv1.in_channels
        self.features = FeatureExtractor(feature_size=self.mels)
        self.max_frames = 2 * self.model.positions.shape[0]  # 30 s of mel frames
        self.layers = len(self.model.blocks) + 2
        self.dim = self.layers * self.model.norm.normalized_shape[0]

    def quantize(self) -> None:
        """The Linear layers to int8 (`quantize_int8`), on a CPU; on another device nothing
        changes (torch's dynamic quantization runs on CPUs only)."""
        if self.device == "cpu" and not self.int8:
            self.model, self.int8 = quantize_int8(self.model), True

    def mel(self, audio: np.ndarray) -> torch.Tensor:
        mel = self.features(np.asarray(audio, np.float32))[:, :self.max_frames]
        return torch.from_numpy(np.ascontiguousarray(mel, np.float32))

    def encode(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        # one utterance at a time: Whisper has no attention mask, so padding would leak into
        # every frame; alone, an utterance's features never depend on what it is batched with
        out = []
        with torch.inference_mode():
            for audio in audios:
                states = self.model(self.mel(audio)[None].to(self.device))
                # float16, as the trainer's feature cache stores every feature (train/features.py):
                # what the model was trained and is evaluated on, in half the memory
                out.append(torch.cat(states, dim=-1)[0].to(torch.float16).cpu().numpy())
        return out
