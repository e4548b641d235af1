"""README's 10-line Python subscriber really works: run as written (only the address changed to
a free port) against ``run_live.py --demo``, it prints 30 masks in order."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.stream.test_run_live import free_port

pytestmark = pytest.mark.races  # two processes and a socket


def readme_subscriber() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Watching the masks"):text.index("## Common flags")]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README's 'Watching the masks' has no python block"
    return code.group(1)


def test_the_readme_subscriber_is_ten_lines() -> None:
    assert len([ln for ln in readme_subscriber().splitlines() if ln.strip()]) <= 10


def test_the_readme_subscriber_prints_the_masks_run_live_publishes() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    code = readme_subscriber()
    assert code.count("tcp://127.0.0.1:5555") == 1
    sub = subprocess.Popen([sys.executable, "-c", code.replace("tcp://127.0.0.1:5555", url)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        live = subprocess.run([sys.executable, str(REPO / "run_live.py"), "--demo", "--zmq", url,
                               "--wait-subscriber", "120", "--max-frames", "90"],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        out, err = sub.communicate(timeout=60)
    finally:
        sub.kill()
    assert live.returncode == 0, live.stderr[-2000:]
    assert sub.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 30, out
    seqs = []
    for line in lines:
        topic, seq, frame_index, area = line.split()
        assert topic == "mask/cam0" and int(frame_index) >= 0 and 0.0 <= float(area) <= 1.0
        seqs.append(int(seq))
    assert seqs == sorted(seqs) and len(set(seqs)) == 30
