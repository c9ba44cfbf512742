"""mersa-stream: speech emotion recognition from sound and words, utterance by utterance.

The Python API (mersa_stream/api.py, README "Python API"): `analyze(path_or_paths, **options)`,
`Recognizer.from_config(...)`, `Stream` (push audio chunks, get results), `EmotionResult`.
Each name is imported when first used: `import mersa_stream` (and so `mersa --help`) stays cheap.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Set before torch or CTranslate2 load (the `mersa` command and the Python API alike). Both bring
# their own OpenMP runtime (two libgomp copies, two thread teams); spinning idle workers of one
# slow the other down on a few cores, worst when the models were loaded in another thread than
# the one using them (start-up: 10x slower first transcriptions seen on 2 cores; the audio
# encoder beside the ASR: ~4x its CPU time). Idle workers sleep instead; throughput within noise
# (docs/benchmarks.md, "Start-up"). A program that loaded torch first keeps its own setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# public name -> the module defining it
_EXPORTS = {
    "analyze": "api",
    "Recognizer": "api",
    "settings": "api",
    "Stream": "stream",
    "EmotionResult": "types",
    "Utterance": "types",
    "Config": "config",
    "MersaError": "errors",
    "ConfigError": "errors",
    "InputError": "errors",
    "ModelError": "errors",
}
__all__ = ["__version__", "analyze", "Recognizer", "settings", "Stream", "EmotionResult",
           "Utterance", "Config", "MersaError", "ConfigError", "InputError", "ModelError"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from .api import Recognizer, analyze, settings
    from .config import Config
    from .errors import ConfigError, InputError, MersaError, ModelError
    from .stream import Stream
    from .types import EmotionResult, Utterance


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mersa_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
