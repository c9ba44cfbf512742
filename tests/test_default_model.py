"""The shipped default through the real runtime: on a flat synthetic voice the words decide, and
the model is not near-certain of what a flat voice cannot show (issue: trustworthy emotion)."""

import pytest

from helpers import have_espeak, speak, trim

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed")]

SENTENCES = {
    "I am so happy, this is the best day of my life!": "happy",
    "I hate you, get out of my house right now!": "anger",
    "My dog died yesterday and I cannot stop crying.": "sad",
    "The meeting is at three o'clock in room four.": "neutral",
    "That's wonderful news, congratulations!": "happy",
    "I'm so sorry for your loss.": "sad",
}


def test_flat_voice_emotional_words_get_the_words_label_without_false_certainty():
    from mersa_stream.config import Config
    from mersa_stream.recognizer import Recognizer
    from mersa_stream.types import Utterance

    recognizer = Recognizer(Config())
    utterances = [Utterance("flat", i, 0.0, 1.0, trim(speak(text, "en-us", 140)) * 0.5, 0.0)
                  for i, text in enumerate(SENTENCES)]
    results = recognizer.recognize(utterances)
    labels = [r.label for r in results]
    assert labels == list(SENTENCES.values()), [r.transcript.text for r in results]
    assert max(r.confidence for r in results) < 0.95
