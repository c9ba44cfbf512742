"""Feature encoders. Text: BERT-family token states. Audio: frame sequences, one kind per module
(Whisper layers, wav2vec2, VGGish); `registry.py` says what each kind means. The original default's
features, the last Whisper layer, come out of the ASR pass itself (see `asr.py`).
"""
