"""``python -m stream.proxy --frontend URL --backend URL``: many publishers behind one address.

The command only; ``MaskProxy`` and the CLI: :mod:`stream.transport.proxy`.
"""

from stream.transport.proxy import main

if __name__ == "__main__":
    raise SystemExit(main())
