"""mersa-stream: speech emotion recognition from sound and words, utterance by utterance."""

__version__ = "0.1.0"
