"""``python -m stream.keys KEYDIR --client alice``: create CurveZMQ key files.

The command only; reading and writing key files: :mod:`stream.transport.keys`.
"""

from stream.transport.keys import main

if __name__ == "__main__":
    raise SystemExit(main())
