"""``python -m stream.subscribe URL --topic mask/cam0``: print the masks a publisher sends
(docs/design.md section 6).

The command only; the client (``MaskSubscriber``) and the CLI: :mod:`stream.transport.subscribe`.
"""

from stream.transport.subscribe import main

if __name__ == "__main__":
    raise SystemExit(main())
