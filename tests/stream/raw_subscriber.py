"""An independent subscriber for the end-to-end test: pyzmq and json only, docs/design.md 6 as
written (multipart [topic, header, payload]; mono8 = H*W bytes 0/255 row-major).

    python tests/stream/raw_subscriber.py URL TOPIC COUNT OUT.npz TIMEOUT_S

Saves the headers (JSON strings) and the masks (N, H, W) uint8 0/1 it received, in order.
"""

import json
import sys

import numpy as np
import zmq

url, topic, count, out, timeout_s = sys.argv[1:6]
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.RCVTIMEO, int(float(timeout_s) * 1000))
sock.setsockopt(zmq.RCVHWM, 0)  # no limit: a descheduled reader loses nothing on its side
sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
sock.connect(url)
headers, masks = [], []
try:
    while len(headers) < int(count):
        t, h, payload = sock.recv_multipart()
        header = json.loads(h)
        assert t.decode() == topic and header["v"] == 1 and header["encoding"] == "mono8"
        mask = np.frombuffer(payload, np.uint8).reshape(header["height"], header["width"])
        headers.append(json.dumps(header))
        masks.append(mask > 127)
except zmq.Again:
    pass  # timed out: save what arrived
np.savez(out, headers=np.array(headers), masks=np.array(masks))
print(len(headers))
