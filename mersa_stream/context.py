"""Conversation context for the text branch: the previous utterances of the same conversation.

An emotion in conversation depends on what was just said ("Oh really?" after good news or bad),
so the text encoder may read the current utterance together with up to K earlier ones
(`[runtime] text_context`; 0 = the utterance alone, the paper's setting). The earlier turns form
the first segment of a text pair and the current utterance the second (`encoders/text.py`); only
the current utterance's tokens go on to the fusion model, so the context changes what its words
mean without becoming words of their own.

Speaker turns are marked where they are known: the current utterance's speaker is "A", the others
"B", "C" ... in order of appearance. The trainer knows MELD's speakers; the runtime knows only
the channel (a stereo call: one party per channel) and otherwise marks nothing.

`ConversationContext` is the runtime's memory: the last K transcripts of each conversation
(a file, a stream, a server session: the utterances' `source`), both parties' turns together,
marked by channel where channels are kept apart (`analyze --channels split`).
"""

from __future__ import annotations

import string
import threading
from dataclasses import dataclass
from typing import Hashable, Sequence

# The most earlier turns a record or a conversation keeps; `text_context` may not exceed it.
MAX_CONTEXT = 8
# Conversations remembered at once: a long-running server forgets the least recently heard
# (a session that ends without `forget` does not stay in memory for ever).
MAX_CONVERSATIONS = 4096


@dataclass(frozen=True)
class Turn:
    """One earlier utterance: its words and who said them ("" = unknown)."""
    text: str
    speaker: str = ""


def format_context(turns: Sequence[Turn], speaker: str = "", k: int | None = None) -> str:
    """The last `k` turns (all when None) as one line, oldest first, each marked with its
    speaker relative to the current one ("A:" the same speaker, "B:", "C:" ... others) where
    both are known; empty turns are left out."""
    turns = [t for t in turns if t.text.strip()]
    if k is not None:
        turns = turns[-k:] if k > 0 else []
    names: dict[str, str] = {speaker: "A"} if speaker else {}
    parts = []
    for t in turns:
        if speaker and t.speaker:
            if t.speaker not in names:
                names[t.speaker] = _letter(len(names))
            parts.append(f"{names[t.speaker]}: {t.text.strip()}")
        else:
            parts.append(t.text.strip())
    return " ".join(parts)


def _letter(i: int) -> str:
    return string.ascii_uppercase[i] if i < 26 else f"S{i}"


class ConversationContext:
    """The last `k` transcripts of each conversation, kept per key (a file, a stream, a server
    session), in utterance order.

    `context(key, index, speaker)` gives the text the encoder reads before utterance `index` (the
    turns of lower index) and how many turns it holds; `add(key, index, text, speaker)` records
    the utterance once it is transcribed. Recognising an index again (`listen`'s speculative
    recognition, then the final one) replaces its turn instead of adding a second. Thread-safe: a
    server answers several sessions at once."""

    def __init__(self, k: int):
        if not 0 <= k <= MAX_CONTEXT:
            raise ValueError(f"text context {k}: 0 .. {MAX_CONTEXT}")
        self.k = k
        self._turns: dict[Hashable, dict[int, Turn]] = {}
        self._lock = threading.Lock()

    def turns(self, key: Hashable, before: int | None = None) -> tuple[Turn, ...]:
        """The kept turns of `key` (those of index < `before`), oldest first."""
        with self._lock:
            kept = self._turns.get(key, {})
            return tuple(kept[i] for i in sorted(kept) if before is None or i < before)[-self.k:] \
                if self.k else ()

    def context(self, key: Hashable, index: int | None = None, speaker: str = ""
                ) -> tuple[str, int]:
        turns = self.turns(key, index)
        return format_context(turns, speaker), len(turns)

    def add(self, key: Hashable, index: int, text: str, speaker: str = "") -> None:
        if self.k == 0:
            return
        with self._lock:
            kept = self._turns.pop(key, {})  # re-inserted last: the most recently heard
            self._turns[key] = kept
            while len(self._turns) > MAX_CONVERSATIONS:
                del self._turns[next(iter(self._turns))]
            kept.pop(index, None)
            if text.strip():
                kept[index] = Turn(text.strip(), speaker)
            # a few more than k: a late speculative result may still replace one of them
            for old in sorted(kept)[:-(self.k + 4)]:
                del kept[old]

    def read_in_order(self, utterances, texts: Sequence[str], speakers: bool = True
                      ) -> tuple[list[str], list[int]]:
        """The context of each of a batch's utterances (`types.Utterance`: its source is the
        conversation, its channel the speaker where channels are split), each recorded once read,
        so a later utterance of the batch reads the earlier ones. Returns the contexts and how
        many turns each holds (what the records report)."""
        contexts, counts = [], []
        for utterance, text in zip(utterances, texts):
            channel = getattr(utterance, "channel", None)
            speaker = f"channel {channel}" if speakers and channel is not None else ""
            context, count = self.context(utterance.source, utterance.index, speaker)
            contexts.append(context)
            counts.append(count)
            self.add(utterance.source, utterance.index, text, speaker)
        return contexts, counts

    def forget(self, key: Hashable) -> None:
        """The conversation ended (a file done, a session closed)."""
        with self._lock:
            self._turns.pop(key, None)
