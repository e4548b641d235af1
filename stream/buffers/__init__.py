"""Buffers: where captured frames and audio wait for the engine, and how they are paired.

Data path: ``stream.capture`` writes into these rings; the pipeline's engine thread reads them.

* ``frames``: the records every stage passes along (``Frame``, ``PairedFrame``)
  and the time unit (``NS_PER_S``).
* ``frame_ring``: ``FrameRing`` (video frames, drop policy, never blocks the producer).
* ``audio_ring``: ``AudioRing`` (16 kHz mono samples with absolute indices and capture times).
* ``mel_ring``: ``MelRing`` (log-mel frames computed incrementally from an ``AudioRing``).
* ``sync``: ``Pairer`` gives each frame its log-mel window (then on to ``stream.engine``);
  ``window_indices`` chooses the model's T-frame window.
"""
