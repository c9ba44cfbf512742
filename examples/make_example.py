"""Re-create examples/two-speakers.flac: two espeak-ng voices, pauses, light noise.

    .venv/bin/python examples/make_example.py
"""

import io
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

LINES = [
    ("en-us", "I can't believe you did that. This is the third time this week!"),
    ("en-gb+f3", "I'm sorry. I really am. I didn't mean to upset you."),
    ("en-us", "Well, thank you for saying so. Let's just move on."),
    ("en-gb+f3", "Oh, that's wonderful! I'm so happy we could sort it out."),
]


def main() -> None:
    rng = np.random.default_rng(7)
    parts = [np.zeros(8000, np.float32)]
    for voice, text in LINES:
        raw = subprocess.run(["espeak-ng", "-v", voice, "-s", "155", "--stdout", text],
                             check=True, capture_output=True).stdout
        audio, rate = sf.read(io.BytesIO(raw), dtype="float32")
        parts += [0.6 * soxr.resample(audio, rate, 16000).astype(np.float32),
                  np.zeros(int(16000 * rng.uniform(0.7, 1.1)), np.float32)]
    audio = np.concatenate(parts)
    audio += rng.normal(0, 0.003, len(audio)).astype(np.float32)
    out = Path(__file__).with_name("two-speakers.flac")
    sf.write(str(out), audio, 16000, subtype="PCM_16")
    print(f"{out}: {len(audio) / 16000:.1f} s")


if __name__ == "__main__":
    main()
