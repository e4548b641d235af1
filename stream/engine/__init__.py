"""The streaming engine: paired frames in, masks out (docs/design.md section 5).

Data path: ``stream.buffers.sync`` hands it ``PairedFrame``s; its ``EngineResult``s go on to
``stream.transport`` (and the local sinks in ``stream.run``).

* ``engine``: ``StreamingEngine`` (per-frame encode into ``FeatureCache``, decode of the newest
  frame over its T-frame window, CIM carry).
* ``preprocess``: uint8 BGR frames to normalised model input, on the GPU where there is one.
* ``gpu_pipeline``: ``StreamRunner``, CUDA streams for copies in, compute and copies out.
* ``cuda_graphs``: ``GraphedEncoder``, the per-frame encoder replayed from a CUDA graph.
* ``cupy_check``: whether the installed CuPy matches torch's CUDA.
"""
