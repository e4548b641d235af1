"""The browser viewer (``python -m stream.view``, ``run_live.py --view``).

* ``tiles``: per stream, masks and frames paired by ``seq``, the picture (``draw_overlay``)
  and the figures; the ``Board`` of all streams.
* ``receive``: a subscriber thread per publisher address, and the composer thread.
* ``server``: aiohttp: the page (``static/``), the WebSocket that pushes pictures and
  figures, ``/api/streams``.
* ``cli``: the command line.
"""
