#!/usr/bin/env python3
"""PCMANet Live: ``python run_live.py --camera 0 --mic default`` (see ``stream/run/app.py``)."""

import sys

from stream.engine.compiled import exit_code
from stream.run.app import main

if __name__ == "__main__":
    sys.exit(exit_code(main()))
