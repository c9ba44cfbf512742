"""Conversations with known sentence boundaries, for segmentation and transcript benchmarks.

Two kinds, each written as a 16 kHz mono WAV plus a JSON truth file beside it:

- `make_conversation`: espeak-ng sentences in several voices, one after another, with the pauses
  espeak-ng puts inside a sentence at its punctuation ("Come on! Come on! Here, okay?") and gaps
  between sentences drawn from `gap_range` (0.3-1.5 s); optionally noise under all of it.
- `make_ravdess_conversation`: real RAVDESS clips back to back (each with the room silence it was
  recorded with), separated by gaps of faint white noise (-54 dBFS by default). Needs
  ../shared/data/ravdess (or `data_dir`); raises FileNotFoundError naming it where it is absent.

The truth file: {"kind", "audio", "sample_rate", "duration", "noise_db", "seed",
"sentences": [{"text", "start", "end", "voice"}]}, times in seconds, `start`/`end` the bounds of
the sentence's speech (the espeak-ng output trimmed of silence; for RAVDESS the clip's frames
within 35 dB of its loudest).

    .venv/bin/python benchmarks/conversations.py OUT_DIR --sentences 60 --seed 0 --noise-db -50
    .venv/bin/python benchmarks/conversations.py OUT_DIR --ravdess 48 --gap 0.9 --noise-db -54

Also offers the noises the noise-gate tests and benchmark mix in (`noise`: white, pink, brown,
hum, tones).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
ROOT = Path(__file__).resolve().parents[1]
RAVDESS_DIR = ROOT.parent / "shared" / "data" / "ravdess"

# US voices only: espeak-ng's British voices and speeds above ~140 wpm are hard for tiny.en.
VOICES = ("en-us", "en-us+f3", "en-us+m3", "en-us+f4", "en-us-nyc")
SPEED_WPM = 130

# Natural conversational turns; about a third carry sentence-internal pauses (., !, ?) and many
# carry commas, so a segmenter that cuts at every pause breaks them apart.
SENTENCES = (
    "Come on! Come on! Here, okay, you see this?",
    "I told you yesterday, and I am telling you again.",
    "Wait. Where are you going?",
    "Thank you so much for coming tonight.",
    "Honestly, I do not know what to say.",
    "No, no, no. That is not what I meant.",
    "Can you pass me the salt, please?",
    "We should leave before the traffic gets bad.",
    "Really? You did that for me?",
    "I have been waiting here for almost an hour.",
    "Well, that went better than I expected.",
    "Look, I am sorry. I really am.",
    "Do you want to grab some coffee later?",
    "The meeting has been moved to Thursday morning.",
    "Oh my God! Is that a puppy?",
    "She said she would call back after lunch.",
    "Hey! Get back here right now!",
    "I think we need to talk about the budget.",
    "Okay, fine. You win this time.",
    "My brother is moving to Chicago next month.",
    "Stop it. Just stop it. I mean it.",
    "Have you seen my keys anywhere?",
    "It was the best vacation we ever had.",
    "Listen to me, this is important.",
    "Yes! We got the tickets!",
    "I am not angry, I am just tired.",
    "Why would anyone leave the door open all night?",
    "Let me finish. Then you can talk.",
    "The kids are playing in the garden.",
    "Sure, I can help you move on Saturday.",
    "What? No way. You are kidding me.",
    "I lost my wallet on the bus this morning.",
    "Please, sit down. Make yourself at home.",
    "We are going to be late again.",
    "You know what, forget it.",
    "That movie was so boring, I fell asleep.",
    "Hold on. Let me check my calendar.",
    "I can not believe you remembered my birthday.",
    "Turn the music down, please. I am on the phone.",
    "He never listens to anything I say.",
    "Good morning! Did you sleep well?",
    "This soup needs a little more salt.",
    "Wow. Just wow. That was amazing.",
    "I will send you the address tonight.",
    "Are you sure this is the right way?",
    "Nobody told me the party was cancelled.",
    "Slow down! You are driving too fast!",
    "I miss the old days, when we were all together.",
    "Okay, okay. I will do it.",
    "The printer is broken again.",
    "Maybe we should ask someone for directions.",
    "Fine. Do whatever you want.",
    "Did you finish the report for tomorrow?",
    "I am so proud of you, really.",
    "Where did you put the remote control?",
    "Come here. I want to show you something.",
    "It is raining, so take an umbrella.",
    "We won! I can not believe we won!",
    "That is the third time this week.",
    "Please tell me you are joking.",
    "I made dinner, but nobody came home.",
    "Excuse me, is this seat taken?",
    "Right. Let us get started then.",
    "You always say that, and nothing changes.",
)

NOISE_KINDS = ("white", "pink", "brown", "hum", "tones")


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", speed: int = SPEED_WPM) -> np.ndarray:
    """espeak-ng speech as 16 kHz mono float32, trimmed of leading/trailing silence."""
    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(raw), dtype="float32")
    audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[loud[0]:loud[-1] + 1] if len(loud) else audio[:0]


def _scaled(x: np.ndarray, db: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1.0
    return (x * (10 ** (db / 20) / rms)).astype(np.float32)


def noise(kind: str, n: int, db: float, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of `kind` noise at an RMS level of `db` dBFS.

    white/pink/brown: flat, 1/f and 1/f^2 spectra; hum: 50 Hz mains with harmonics; tones: a
    slow melody of pure tones and chords (music-like, with level steps at each note)."""
    if kind in ("white", "pink", "brown"):
        white = rng.standard_normal(n)
        if kind == "white":
            return _scaled(white, db)
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1] if n > 1 else 1.0
        spectrum /= np.sqrt(f) if kind == "pink" else f
        return _scaled(np.fft.irfft(spectrum, n), db)
    t = np.arange(n) / SAMPLE_RATE
    if kind == "hum":
        x = sum(np.sin(2 * np.pi * 50 * h * t + h) / h for h in (1, 2, 3, 5))
        return _scaled(x, db)
    if kind == "tones":
        notes = (220.0, 277.2, 329.6, 440.0, 392.0, 349.2, 293.7, 261.6)
        x = np.zeros(n)
        step = int(0.4 * SAMPLE_RATE)
        for i, start in enumerate(range(0, n, step)):
            seg = t[start:start + step]
            f0 = notes[rng.integers(len(notes))]
            chord = np.sin(2 * np.pi * f0 * seg) + 0.5 * np.sin(2 * np.pi * f0 * 1.5 * seg)
            env = np.minimum(1.0, np.minimum(seg - seg[0], seg[-1] - seg + 1e-3) / 0.02)
            x[start:start + step] = chord * env * (0.5 + 0.5 * (i % 3 == 0))
        return _scaled(x, db)
    raise ValueError(f"noise kind {kind!r}: expected one of {', '.join(NOISE_KINDS)}")


def write_wav(path: Path, audio: np.ndarray) -> Path:
    sf.write(str(path), np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
    return path


def _write(out_dir: Path, name: str, audio: np.ndarray, truth: dict) -> tuple[Path, dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = write_wav(out_dir / f"{name}.wav", audio)
    truth = {"audio": wav.name, "sample_rate": SAMPLE_RATE,
             "duration": round(len(audio) / SAMPLE_RATE, 3), **truth}
    (out_dir / f"{name}.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return wav, truth


def load_truth(wav_path: Path) -> dict:
    return json.loads(Path(wav_path).with_suffix(".json").read_text(encoding="utf-8"))


def make_conversation(out_dir: Path, n_sentences: int = 60, seed: int = 0,
                      noise_db: float | None = None, gap_range: tuple[float, float] = (0.3, 1.5),
                      voices: tuple[str, ...] = VOICES, noise_kind: str = "white",
                      lead_s: float = 0.8, name: str | None = None,
                      texts: tuple[str, ...] | None = None) -> tuple[Path, dict]:
    """Write `n_sentences` espeak-ng sentences (drawn from SENTENCES without repeats until the
    list is used up; `texts`: these, in order), a new voice per sentence, gaps uniform in
    `gap_range`, `noise_db` dBFS of `noise_kind` noise under everything (None: digital silence
    between sentences). Returns the WAV path and the truth dict (also written beside it as JSON)."""
    rng = np.random.default_rng(seed)
    pool = SENTENCES if texts is None else tuple(texts)
    if texts is not None:
        order = np.arange(len(pool))
    else:
        order = np.concatenate([rng.permutation(len(pool))
                                for _ in range(n_sentences // len(pool) + 1)])[:n_sentences]
    parts = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)]
    t, sentences, voice = lead_s, [], -1
    for k, i in enumerate(order):
        voice = (voice + 1 + int(rng.integers(len(voices) - 1))) % len(voices)  # never the same
        speech = speak(pool[i], voices[voice]) * float(rng.uniform(0.35, 0.7))
        end = t + len(speech) / SAMPLE_RATE
        sentences.append({"text": pool[i], "start": round(t, 3), "end": round(end, 3),
                          "voice": voices[voice]})
        gap = lead_s if k == len(order) - 1 else float(rng.uniform(*gap_range))
        parts += [speech, np.zeros(int(round(gap * SAMPLE_RATE)), np.float32)]
        t = end + int(round(gap * SAMPLE_RATE)) / SAMPLE_RATE
    audio = np.concatenate(parts)
    if noise_db is not None:
        audio = audio + noise(noise_kind, len(audio), noise_db, rng)
    name = name or f"conversation-{len(order)}-s{seed}"
    return _write(out_dir, name, audio, {
        "kind": "espeak", "seed": seed, "noise_db": noise_db,
        "noise_kind": noise_kind if noise_db is not None else None,
        "gap_range": list(gap_range), "sentences": sentences})


def _speech_bounds(audio: np.ndarray, floor_db: float = -35.0) -> tuple[int, int]:
    """First and last sample of the 10 ms frames within `floor_db` of the clip's loudest frame."""
    hop = SAMPLE_RATE // 100
    frames = audio[:len(audio) // hop * hop].reshape(-1, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > floor_db)
    return int(loud[0]) * hop, int(loud[-1] + 1) * hop


def make_ravdess_conversation(out_dir: Path, n_clips: int = 48, seed: int = 0,
                              gap_s: float = 0.9, noise_db: float | None = -54.0,
                              data_dir: Path = RAVDESS_DIR,
                              name: str | None = None) -> tuple[Path, dict]:
    """`n_clips` RAVDESS clips (random actors and emotions) back to back, `gap_s` of white noise
    at `noise_db` dBFS between them (None: digital silence). The clips keep their own leading and
    trailing room silence, as a user's recordings would."""
    data_dir = Path(data_dir)
    if not (data_dir / "metadata.csv").is_file():
        raise FileNotFoundError(f"{data_dir / 'metadata.csv'}: RAVDESS data not found")
    with open(data_dir / "metadata.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    picked = [rows[i] for i in rng.choice(len(rows), size=n_clips, replace=n_clips > len(rows))]
    parts, sentences, t = [], [], 0.0
    for k, row in enumerate(picked):
        clip, rate = sf.read(str(data_dir / row["path"]), dtype="float32")
        if clip.ndim > 1:
            clip = clip.mean(axis=1)
        if rate != SAMPLE_RATE:
            clip = soxr.resample(clip, rate, SAMPLE_RATE).astype(np.float32)
        first, last = _speech_bounds(clip)
        sentences.append({"text": row["transcript"], "start": round(t + first / SAMPLE_RATE, 3),
                          "end": round(t + last / SAMPLE_RATE, 3), "voice": f"actor{row['actor']}",
                          "emotion": row["emotion"], "clip": row["path"]})
        parts.append(clip.astype(np.float32))
        t += len(clip) / SAMPLE_RATE
        if k < len(picked) - 1:
            n = int(round(gap_s * SAMPLE_RATE))
            parts.append(noise("white", n, noise_db, rng) if noise_db is not None
                         else np.zeros(n, np.float32))
            t += n / SAMPLE_RATE
    name = name or f"ravdess-{n_clips}-s{seed}"
    return _write(out_dir, name, np.concatenate(parts), {
        "kind": "ravdess", "seed": seed, "noise_db": noise_db, "gap_s": gap_s,
        "sentences": sentences})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--sentences", type=int, default=60, help="espeak-ng sentences")
    parser.add_argument("--ravdess", type=int, default=0, metavar="N",
                        help="instead: N RAVDESS clips back to back")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-db", type=float, default=None,
                        help="noise level in dBFS (espeak: under everything; RAVDESS: in the "
                             "gaps, default -54)")
    parser.add_argument("--noise-kind", choices=NOISE_KINDS, default="white")
    parser.add_argument("--gap", type=float, nargs="+", default=None,
                        help="espeak: MIN MAX gap between sentences (0.3 1.5); RAVDESS: the gap "
                             "(0.9)")
    args = parser.parse_args()
    if args.ravdess:
        wav, truth = make_ravdess_conversation(
            args.out_dir, args.ravdess, args.seed, gap_s=(args.gap or [0.9])[0],
            noise_db=-54.0 if args.noise_db is None else args.noise_db)
    else:
        gap = tuple(args.gap) if args.gap else (0.3, 1.5)
        if len(gap) != 2:
            parser.error("--gap: two values for espeak conversations (MIN MAX)")
        wav, truth = make_conversation(args.out_dir, args.sentences, args.seed, args.noise_db,
                                       gap_range=gap, noise_kind=args.noise_kind)
    print(f"{wav}: {truth['duration']:.1f} s, {len(truth['sentences'])} sentences")


if __name__ == "__main__":
    main()
