import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight fusion checkpoint on the embedded encoders (Whisper tiny.en + MiniLM)."""
    from helpers import small_checkpoint

    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")
