"""``python -m stream.view URL [URL ...] --http 127.0.0.1:8080``: the streams live in a
browser, each mask drawn over its frame with the stream's figures.

The command only; the viewer: :mod:`stream.viewer` (CLI in :mod:`stream.viewer.cli`).
"""

from stream.viewer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
