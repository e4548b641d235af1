"""Run: the live pipeline assembled, as ``run_live.py`` runs it (docs/design.md sections 3-7).

Data path: ``pipeline`` wires ``stream.capture`` -> ``stream.buffers`` -> ``stream.engine`` ->
``stream.transport``, and hands each result to the local sinks here as well.

* ``app``: ``run_live.py``'s CLI (``main``) and the functions ``stream.measure`` reuses.
* ``config``: ``LiveConfig``, the ``live:`` YAML settings, validated.
* ``multi``: ``MultiPipeline``, the one pipeline: lanes (one per stream), the engine thread
  (round-robin scheduling, pairing, batched steps), then publishing and the sinks in the
  caller's thread; ``pipeline``: ``LivePipeline``, that pipeline with one lane;
  ``results``: what they share (summary, errors, publishing a result, fault counts).
* ``overlay``: the ``--show`` window; ``record``: ``--record DIR``.
"""
