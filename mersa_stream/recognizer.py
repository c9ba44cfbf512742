"""Utterances -> EmotionResults: ASR, audio features (the checkpoint's audio encoder, run beside
the ASR; or, for the "whisper" kind, the ASR pass's own encoder states), text encoder, fusion
model. Built once from the config and the checkpoint it names.

Start-up: `resolve_models` finds every model and reads the checkpoint's header without loading a
weight or importing torch (what `mersa models` shows, and what `analyze`/`listen` check before they
start); `Recognizer` loads them, the ASR model beside the rest (two threads); `RecognizerLoader`
builds the Recognizer in the background, once it is first needed."""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np

from .asr import WhisperAsr, pick_compute_type, pick_device
from .checkpoint import CheckpointInfo, load_checkpoint, read_checkpoint
from .config import Config
from .encoders.registry import AUDIO_KINDS, resolve_audio
from .errors import ModelError
from .packing import Window, assign_words
from .resolve import ResolvedModel, resolve_asr, resolve_transformers
from .types import EmotionResult, Transcript, Utterance


@dataclass(frozen=True)
class ModelInventory:
    checkpoint: CheckpointInfo  # the header only: the weights are loaded by the Recognizer
    asr: ResolvedModel
    text_encoder: ResolvedModel
    audio_encoder: ResolvedModel | None  # None: the ASR pass's own encoder states


def resolve_models(config: Config) -> ModelInventory:
    checkpoint = read_checkpoint(config.models.checkpoint)
    asr = resolve_asr(config.models.asr)
    text = resolve_transformers(config.models.text_encoder or checkpoint.text_encoder.spec,
                                "text encoder", "--text-encoder")
    name = checkpoint.audio_encoder.kind
    if name not in AUDIO_KINDS:
        raise ModelError(f"{checkpoint.path}: unknown audio encoder kind '{name}'")
    audio = None if AUDIO_KINDS[name].in_asr_pass else resolve_audio(
        name, config.models.audio_encoder or checkpoint.audio_encoder.spec)
    return ModelInventory(checkpoint, asr, text, audio)


CLASSIFY_GROUP = 8  # utterances through the text encoder and the fusion model together


def is_repetitive(text: str, threshold: float = 2.4) -> bool:
    """Whisper's own test for a decoding loop: the text compresses too well."""
    data = text.encode("utf-8")
    return len(data) > 40 and len(data) / len(zlib.compress(data)) > threshold


class Recognizer:
    def __init__(self, config: Config, inventory: ModelInventory | None = None):
        runtime = config.runtime
        self.inventory = inventory or resolve_models(config)
        self.device = pick_device(runtime.device_type)
        # The ASR model (CTranslate2, no torch) loads in a second thread while this one imports
        # torch and loads the rest; both are needed before anything is recognised. Errors come
        # in the order of loading one after the other: checkpoint, ASR, text and audio encoder.
        asr = _Background(lambda: WhisperAsr(
            self.inventory.asr, config.asr, device=self.device,
            compute_type=pick_compute_type(self.device, runtime.compute_type),
            cpu_threads=runtime.cpu_threads), name="mersa-load-asr")
        try:
            # torch.fx.experimental.symbolic_shapes: what the fusion model's first attention
            # call imports (torch._check_with: sympy, ~1 s), imported here, beside the ASR
            # model's loading, instead of on the first utterance
            import torch
            import torch.fx.experimental.symbolic_shapes  # noqa: F401

            from .encoders.text import TextEncoder

            if runtime.cpu_threads:
                torch.set_num_threads(runtime.cpu_threads)
            self.checkpoint = ckpt = load_checkpoint(self.inventory.checkpoint.path,
                                                     self.inventory.checkpoint)
        except BaseException:
            asr.wait()
            raise
        try:
            # -- conversation context (issue 14): read as the checkpoint's text branch was trained
            from .context import ConversationContext

            text_options = ckpt.text_encoder.options or {}
            context_turns = int(text_options.get("context", 0))
            self.conversation = ConversationContext(context_turns)
            self.context_speakers = bool(text_options.get("context_speakers", True))
            self.text_encoder = TextEncoder(
                self.inventory.text_encoder.path, runtime.text_max_tokens, device=self.device,
                state_dict=ckpt.text_encoder_weights, backend="auto",
                context_tokens=text_options.get("context_tokens"),
                context_mode=str(text_options.get("context_mode", "pair"))
                if context_turns else "pair")
            # -- end conversation context
            self.audio_encoder = self._audio_encoder(runtime.audio_encoder_int8)
        finally:
            self.asr = asr.result()
        audio_dim = self.audio_encoder.dim if self.audio_encoder else self.asr.dim
        for role, have, want in (("text encoder", self.text_encoder.dim, ckpt.text_encoder.dim),
                                 ("audio encoder", audio_dim, ckpt.audio_encoder.dim)):
            if have != want:
                raise ModelError(f"{ckpt.path}: the model expects a {want}-d {role}, "
                                 f"the one configured gives {have}-d")
        self.model = ckpt.model.to(self.device).eval()
        # the audio encoder (torch) runs beside the ASR (CTranslate2): neither fills both cores
        # on its own (docs/results.md, "Speed")
        self._audio_worker = ThreadPoolExecutor(1, thread_name_prefix="mersa-audio") \
            if self.audio_encoder is not None else None
        self.labels = ckpt.labels
        self.stage_seconds: Counter[str] = Counter()  # cumulative, per stage (benchmarks, stats)
        self.model_id = ckpt.model_id

    def _audio_encoder(self, int8: bool):
        kind = AUDIO_KINDS[self.checkpoint.audio_encoder.kind]
        if kind.in_asr_pass:
            return None
        encoder = kind.build(self.inventory.audio_encoder, self.device)
        if int8 and hasattr(encoder, "quantize"):  # whisper-layers only
            encoder.quantize()
        return encoder

    def recognize(self, utterances: Sequence[Utterance]) -> list[EmotionResult]:
        """One batch, each utterance in its own Whisper window (listen, and analyze --no-pack)."""
        if not utterances:
            return []
        ahead = self._audio_features_ahead(utterances)
        start = time.perf_counter()
        asr_out = self.asr.transcribe([u.audio for u in utterances])
        asr_time = time.perf_counter() - start
        return self._classify(utterances, [o.transcript for o in asr_out],
                              [o.encoder_states for o in asr_out], asr_time, ahead)

    def recognize_windows(self, windows: Sequence[Window]) -> list[EmotionResult]:
        """One batch of windows of consecutive utterances (see packing.py): one encoder pass and
        one decoding per window, each word given to the utterance that holds its time. The audio
        features are each utterance's own, as in `recognize`."""
        if not windows:
            return []
        utterances = [p.utterance for w in windows for p in w.placements]
        ahead = self._audio_features_ahead(utterances)
        start = time.perf_counter()
        transcripts: list[Transcript] = []
        redo: list[int] = []
        shared = [len(w.placements) > 1 for w in windows]  # only those need word times
        for window, decoded in zip(windows, self.asr.decode_windows([w.audio for w in windows],
                                                                    shared)):
            texts = assign_words(decoded.words, window.placements) \
                if len(window.placements) > 1 else [decoded.text]
            if is_repetitive(decoded.text):  # a decoding loop: each utterance on its own
                redo += range(len(transcripts), len(transcripts) + len(texts))
            transcripts += [Transcript(text, decoded.avg_logprob, decoded.no_speech_prob)
                            for text in texts]
        frames: list[np.ndarray] = [np.zeros((0, self.asr.dim), np.float32)] * len(utterances)
        for i, out in zip(redo, self.asr.transcribe([utterances[i].audio for i in redo])):
            transcripts[i], frames[i] = out.transcript, out.encoder_states
        if self.audio_encoder is None:  # kind "whisper": each utterance's own window's states
            redone = set(redo)
            rest = [i for i in range(len(utterances)) if i not in redone]
            for i, states in zip(rest, self.asr.encoder_states([utterances[i].audio
                                                                for i in rest])):
                frames[i] = states
        return self._classify(utterances, transcripts, frames, time.perf_counter() - start, ahead)

    def audio_features(self, utterances: Sequence[Utterance], whisper_frames: Sequence[np.ndarray]
                       ) -> list[np.ndarray]:
        """The emotion model's audio input: the states of the utterance's own Whisper window
        (kind "whisper"), else the audio encoder on each utterance's own audio; either way the
        same whether it was recognized alone, batched or in a shared window."""
        # rounded to float16 as the trainer's feature cache stores them (train/features.py), so a
        # clip gets the label `mersa evaluate` gives it
        if self.audio_encoder is None:
            return [np.asarray(f, np.float16) for f in whisper_frames]
        return [np.asarray(f, np.float16) for f in
                self.audio_encoder.encode([u.audio for u in utterances])]

    def _audio_features_ahead(self, utterances: Sequence[Utterance]) -> Future | None:
        """The audio encoder started on the utterances' own audio, beside the ASR; None where the
        features come out of the ASR pass itself. The future gives (features, seconds)."""
        if self._audio_worker is None:
            return None

        def timed():
            begun = time.perf_counter()
            return self.audio_features(utterances, ()), time.perf_counter() - begun

        return self._audio_worker.submit(timed)

    def _classify(self, utterances, transcripts, whisper_frames, asr_time, ahead: Future | None
                  ) -> list[EmotionResult]:
        from .fusion import pad_sequences

        clock = time.perf_counter
        if ahead is None:
            audio_frames, audio_time = self.audio_features(utterances, whisper_frames), 0.0
        else:
            audio_frames, audio_time = ahead.result()
        text_time = fusion_time = 0.0
        probs: list[np.ndarray] = [np.zeros(0)] * len(utterances)
        # conversation context (issue 14): each transcript after the earlier ones of its source
        contexts, counts = self.conversation.read_in_order(
            utterances, [t.text for t in transcripts], self.context_speakers) \
            if self.conversation.k else (None, None)
        # a few utterances at a time, of similar length: padding every utterance of 8 windows to
        # the longest one's frames would cost memory (2304-d frames) and time for nothing
        order = sorted(range(len(utterances)), key=lambda i: len(audio_frames[i]))
        for first in range(0, len(order), CLASSIFY_GROUP):
            group = order[first:first + CLASSIFY_GROUP]
            text_start = clock()
            text_states, text_mask = self.text_encoder.encode(
                [transcripts[i].text for i in group],
                [contexts[i] for i in group] if contexts else None)
            fusion_start = clock()
            audio, audio_mask = pad_sequences([audio_frames[i] for i in group],
                                              self.checkpoint.audio_encoder.dim)
            out = self.model.predict_proba(text_states.float(), text_mask, audio.to(self.device),
                                           audio_mask.to(self.device)).cpu().numpy()
            for i, p in zip(group, out):
                probs[i] = p
            text_time += fusion_start - text_start
            fusion_time += clock() - fusion_start
        timings = {"asr": asr_time, "audio_encoder": audio_time,
                   "text_encoder": text_time, "fusion": fusion_time}
        self.stage_seconds.update(timings)
        return [self._result(u, t, p, timings, counts[i] if counts else None)
                for i, (u, t, p) in enumerate(zip(utterances, transcripts, probs))]

    def _result(self, utterance, transcript, probs, timings, context: int | None = None
                ) -> EmotionResult:
        best = int(np.argmax(probs))
        return EmotionResult(
            utterance=utterance, transcript=transcript, label=self.labels[best],
            probabilities={label: float(p) for label, p in zip(self.labels, probs)},
            model_id=self.model_id, timings=dict(timings), context=context)


class _Background:
    """`make()` run in a daemon thread; `result()` waits for it, and raises what it raised."""

    def __init__(self, make: Callable[[], object], name: str):
        self._make = make
        self._value = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._make()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self._error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        """Wait for it, whatever its outcome (another error is on its way)."""
        self._thread.join()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error  # again at every call: a failed load stays failed
        return self._value


class RecognizerLoader:
    """A Recognizer built in the background from `start()` on (or at the first `get()`), so that
    decoding, segmentation or capture go on while the models load, and a run that never needs
    them (no speech) never loads them. It recognises like the Recognizer it stands for.

    `waiting`: a context entered while `get()` has to wait (a "loading models" spinner)."""

    def __init__(self, config: Config, inventory: ModelInventory | None = None,
                 waiting: Callable[[], ContextManager] = contextlib.nullcontext,
                 build: Callable[[Config, ModelInventory | None], object] = Recognizer):
        self.config, self.inventory, self.waiting, self.build = config, inventory, waiting, build
        self._job: _Background | None = None
        self._recognizer = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None  # start() -> loaded

    @property
    def started(self) -> bool:
        return self._job is not None

    @property
    def ready(self) -> bool:
        return self._recognizer is not None

    def start(self) -> None:
        with self._lock:
            if self._job is None:
                begun = time.perf_counter()

                def make():
                    recognizer = self.build(self.config, self.inventory)
                    self.load_seconds = time.perf_counter() - begun
                    return recognizer

                self._job = _Background(make, name="mersa-load-models")

    def get(self):
        if self._recognizer is None:
            self.start()
            with self.waiting() if not self._job.done else contextlib.nullcontext():
                self._recognizer = self._job.result()
        return self._recognizer

    def recognize(self, utterances: Sequence[Utterance]) -> list[EmotionResult]:
        return self.get().recognize(utterances) if utterances else []

    def recognize_windows(self, windows: Sequence[Window]) -> list[EmotionResult]:
        return self.get().recognize_windows(windows) if windows else []
