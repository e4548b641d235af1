"""A light publisher for the proxy test: `MaskPublisher` connecting into a proxy, no model.

    python tests/stream/proxy_publisher.py FRONTEND_URL STREAM COUNT

Waits (at most 60 s) until a subscriber behind the proxy wants mask/STREAM, then publishes
COUNT small masks, one every 20 ms (its frame rate), and closes; exit 1 if nobody subscribed.
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from stream.transport.publish import MaskPublisher

url, stream, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
prob = np.zeros((6, 8), np.float32)                                   # (H, W)
with MaskPublisher(url, stream, connect=True, sndhwm=1000, stats_interval_s=None) as pub:
    if not pub.wait_for_subscriber(timeout_s=60.0):
        sys.exit(1)
    for i in range(count):
        pub.publish(prob, i, time.monotonic_ns(), 0, 0, 1.0, 0.5, "proxy-test")
        time.sleep(0.02)
