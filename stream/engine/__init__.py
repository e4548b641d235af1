"""The streaming engine: paired frames in, masks out (docs/design.md section 5).

Data path: ``stream.buffers.sync`` hands it ``PairedFrame``s; its ``EngineResult``s go on to
``stream.transport`` (and the local sinks in ``stream.run``).

* ``batch``: ``BatchedEngine``, the host side of a step for N streams (window choice, carry
  schedule, audio reuse, padding to a bucket); ``engine``: ``StreamingEngine``, one stream
  (and clip mode, the reference).
* ``static``: ``StaticStep``, the fixed-shape step (encode, feature ring, CIM carry, decode);
  ``ring``: the device tables it updates and the host index of each stream's ring;
  ``compiled``: its variants per bucket, eager or ``torch.compile``d.
* ``preprocess``: uint8 BGR frames to normalised model input, on the GPU where there is one.
* ``gpu_pipeline``: ``StreamRunner``, CUDA streams for copies in, compute and copies out.
* ``cuda_graphs``: ``GraphedStep``, the static step replayed from a CUDA graph per bucket.
* ``staging``: ``HostRing``, reused host buffers (pinned, event-guarded on CUDA) for copies.
* ``cupy_check``: whether the installed CuPy matches torch's CUDA.
"""
