"""Run: the live pipeline assembled, as ``run_live.py`` runs it (docs/design.md sections 3-7).

Data path: ``pipeline`` wires ``stream.capture`` -> ``stream.buffers`` -> ``stream.engine`` ->
``stream.transport``, and hands each result to the local sinks here as well.

* ``app``: ``run_live.py``'s CLI (``main``) and the functions ``stream.measure`` reuses.
* ``config``: ``LiveConfig``, the ``live:`` YAML settings, validated.
* ``pipeline``: ``LivePipeline``: the engine thread (pairing, engine), then publishing and the
  sinks in the caller's thread.
* ``overlay``: the ``--show`` window; ``record``: ``--record DIR``.
"""
