"""The live runtime (docs/design.md). A frame's path through it, one sub-package per room:

    capture/    sources stamp frames and audio on one clock and write them into the rings
       |
    buffers/    FrameRing, AudioRing -> MelRing; sync pairs each frame with its log-mel window
       |
    engine/     BatchedEngine: preprocess, one static step (feature ring, decode, CIM carry)
       |
    transport/  masks leave over ZeroMQ: messages (schema v1), publisher, subscriber, proxy
    run/        the pipeline assembled as run_live.py runs it: CLI, settings, threads, sinks
    viewer/     the browser viewer: masks drawn over their frames, with each stream's figures
    measure/    latency statistics, the benchmark and the soak run

The rule: top-level modules of ``stream`` are the commands (``python -m stream.bench``,
``stream.soak``, ``stream.subscribe``, ``stream.keys``, ``stream.proxy``, ``stream.view``),
each a few lines that run a ``main`` from a sub-package; the sub-packages are the data path.
Import from the module that defines a name (``from stream.buffers.frame_ring import
FrameRing``): the packages' ``__init__`` files only describe them and import nothing, so a
module loads only what it uses (``python -m stream.subscribe`` stays free of torch).
"""
