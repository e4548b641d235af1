"""Capture: threads that stamp frames and audio on the pipeline's clock and write them into
``stream.buffers`` (docs/design.md sections 2-3). They never wait on consumers.

* ``base``: ``SourceError`` and the capture thread's lifecycle, shared by every source.
* ``camera``: ``CameraSource`` (OpenCV: camera index, video file, stream URL), which reconnects
  with ``reconnect``'s backoff.
* ``media_file``: ``MediaFileSource`` (PyAV: video and audio of one file, on one clock).
* ``demo``: ``DemoSource`` (the synthetic sounding-objects scene).
* ``mic``: ``MicSource`` (sounddevice), resampling to 16 kHz with ``resample``.
"""
