"""`python -m stream.proxy`: many publishers behind one address, over real TCP on loopback.

Publishers are `run_live.py --zmq-connect` processes (and, for the one killed and restarted,
`proxy_publisher.py`, a `MaskPublisher` without a model, to keep the test short), subscribers
`python -m stream.subscribe` processes, the proxy the CLI itself. Every wait is bounded and
synchronised on something the processes print (a subscriber's first `stats/proxy` line proves
its subscriptions are in place at the proxy; `--wait-subscriber` holds each publisher until
they reach it), never on sleeps.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zmq

from pcmanet.config import ConfigError
from stream.run.config import load_live_config
from stream.transport.curve import CurveClientKeys, CurveServerKeys
from stream.transport.keys import client_keys, read_allowed_clients, read_key_pair
from stream.transport.keys import main as keys_main
from stream.transport.proxy import MaskProxy, main
from stream.transport.publish import MaskPublisher
from stream.transport.subscribe import MaskSubscriber
from tests.conftest import REPO
from tests.stream.test_run_live import RUN_LIVE, free_port

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py

WAIT_S = 60.0          # longest wait for any one event (loaded 2-core machines)
FRAMES = 8             # masks each finishing publisher sends


class Proc:
    """A subprocess whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        for name, pipe in (("out", self.popen.stdout), ("err", self.popen.stderr)):
            threading.Thread(target=self._read, args=(name, pipe), daemon=True).start()

    def _read(self, name: str, pipe) -> None:
        for line in pipe:
            (self.out if name == "out" else self.err).append(line.rstrip("\n"))
            self.lines.put((name, line.rstrip("\n")))

    def wait_line(self, pred: Callable[[str, str], bool], timeout_s: float = WAIT_S) -> str:
        """The first new (stream, line) matching `pred`; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                name, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no matching line in {timeout_s} s; stderr: {self.err[-5:]}")
            if pred(name, line):
                return line

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(5)


def json_lines(proc: Proc) -> list[dict]:
    return [json.loads(line) for line in list(proc.out) if line.startswith("{")]


def masks_by_stream(proc: Proc) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for msg in json_lines(proc):
        if msg["topic"].startswith("mask/"):
            seqs.setdefault(msg["stream"], []).append(msg["seq"])
    return seqs


def until(cond: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def light_publisher(front: str, stream: str, frames: int) -> Proc:
    """`MaskPublisher` alone (no model): starts in a fraction of run_live's time."""
    return Proc([sys.executable, str(REPO / "tests/stream/proxy_publisher.py"), front, stream,
                 str(frames)])


def publisher(front: str, stream: str, frames: int) -> Proc:
    """run_live.py --zmq-connect: the real thing."""
    return Proc([*RUN_LIVE, "--demo", "--no-pacing", "--max-frames", str(frames),
                 "--stream", stream, "--zmq-connect", front, "--wait-subscriber", str(WAIT_S),
                 "--set", "live.publish.sndhwm=1000"])   # a loaded machine never drops a mask


@contextmanager
def proxy_cli(*extra: str) -> Iterator[tuple[Proc, str, str]]:
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proc = Proc([sys.executable, "-m", "stream.proxy", "--frontend", front, "--backend", back,
                 "--stats-interval", "0.2", *extra])
    try:
        proc.wait_line(lambda name, line: line.startswith("proxy: publishers connect"))
        yield proc, front, back
    finally:
        proc.stop(signal.SIGKILL)


def test_three_publishers_two_subscribers_and_a_restart() -> None:
    with proxy_cli() as (proxy, front, back):
        subs = [Proc([sys.executable, "-m", "stream.subscribe", back, "--topic", "mask/",
                      "--topic", "stats/proxy", "--json", "--warn-after", "0"])
                for _ in range(2)]
        pubs: list[Proc] = []
        try:
            for sub in subs:   # subscriptions are set in order: stats/proxy proves mask/ too
                sub.wait_line(lambda name, line: '"topic":"stats/proxy"' in line)
            pubs = [publisher(front, "cam0", FRAMES), publisher(front, "cam1", FRAMES),
                    light_publisher(front, "cam2", 100_000)]           # killed mid-run
            until(lambda: all(len(masks_by_stream(s).get("cam2", [])) >= 3 for s in subs),
                  "3 masks of cam2 at both subscribers")
            pubs[2].popen.kill()
            assert pubs[2].popen.wait(10) == -signal.SIGKILL
            for p in pubs[:2]:
                assert p.popen.wait(WAIT_S) == 0, p.err[-5:]
            # all three connections gone at the proxy: whatever they sent has reached it
            stats = subs[0].wait_line(lambda name, line: '"stats/proxy"' in line and
                                      json.loads(line)["publishers_lost"] == 3
                                      and json.loads(line)["publishers"] == 0)
            assert json.loads(stats)["messages_forwarded"] >= 2 * FRAMES + 3
            first_run = {i: masks_by_stream(s)["cam2"] for i, s in enumerate(subs)}
            pubs.append(light_publisher(front, "cam2", FRAMES))            # the restart
            assert pubs[3].popen.wait(WAIT_S) == 0, pubs[3].err[-5:]
            until(lambda: all(len(masks_by_stream(s)["cam2"]) == len(first_run[i]) + FRAMES
                              for i, s in enumerate(subs)), "the restarted cam2's masks")
        finally:
            for p in pubs:
                p.stop(signal.SIGKILL)
            for sub in subs:
                sub.stop(signal.SIGINT)
        t0 = time.monotonic()
        assert proxy.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 2.0
        assert "proxy stopped" in proxy.err[-1]
    for i, sub in enumerate(subs):
        seqs = masks_by_stream(sub)
        assert seqs["cam0"] == list(range(FRAMES)) and seqs["cam1"] == list(range(FRAMES))
        killed = first_run[i]
        assert killed == list(range(len(killed))) and len(killed) >= 3      # a whole prefix
        assert seqs["cam2"] == killed + list(range(FRAMES))              # then the new run
    assert first_run[0] == first_run[1]                  # both saw the same masks of it


@pytest.fixture
def proxy() -> Iterator[MaskProxy]:
    with MaskProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", stats_interval_s=0.1) as p:
        yield p


def publish(pub: MaskPublisher, n: int) -> None:
    for i in range(n):
        pub.publish(np.zeros((4, 4), np.float32), i, time.monotonic_ns(), 0, 0, 1.0, 0.5, "t")


def test_pause_holds_and_resume_releases_in_order(proxy: MaskProxy) -> None:
    assert proxy.frontend_endpoint and proxy.backend_endpoint
    with MaskSubscriber(proxy.backend_endpoint, topic="mask/p", timeout_s=5.0) as sub, \
            MaskPublisher(proxy.frontend_endpoint, "p", connect=True, sndhwm=100,
                          stats_interval_s=None) as pub:
        assert pub.wait_for_subscriber(timeout_s=5.0)
        assert proxy.pause()
        publish(pub, 5)
        assert sub.recv(0.3) is None
        assert proxy.resume()
        got = [sub.recv() for _ in range(5)]
    assert [m.header["seq"] for m in got if m is not None] == [0, 1, 2, 3, 4]


def test_stats_topic_counts_connections(proxy: MaskProxy) -> None:
    assert proxy.frontend_endpoint and proxy.backend_endpoint
    with MaskSubscriber(proxy.backend_endpoint, topic="stats/proxy", timeout_s=5.0) as sub, \
            MaskPublisher(proxy.frontend_endpoint, "s", connect=True, sndhwm=100,
                          stats_interval_s=None) as pub:
        assert pub.wait_for_subscriber("stats/proxy", timeout_s=5.0)   # connected to it
        deadline = time.monotonic() + 5.0
        msg = sub.recv()
        while msg is not None and (msg.header["publishers"] < 1 or msg.header["published"] < 3
                                   ) and time.monotonic() < deadline:   # an earlier stats went
            msg = sub.recv()
    assert msg is not None and msg.header["v"] == 1 and msg.mask is None
    h = msg.header
    assert h["publishers"] == 1 and h["subscribers"] == 1 and h["auth"]["publishers"] == "none"
    assert h["published"] >= 3 and h["uptime_s"] > 0 and h["paused"] is False


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CurveZMQ")
def test_curve_on_both_sides_admits_only_listed_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert keys_main([str(keys), "--client", "alice", "--publisher", "cam1"]) == 0
    public, secret = read_key_pair(keys / "server.key_secret")
    front = CurveServerKeys(public, secret, read_allowed_clients(keys / "publishers"))
    back = CurveServerKeys(public, secret, read_allowed_clients(keys / "clients"))
    cam1 = client_keys(keys / "publisher-cam1/server.key", keys / "publisher-cam1/cam1.key_secret")
    alice = client_keys(keys / "client-alice/server.key", keys / "client-alice/alice.key_secret")
    stranger = CurveClientKeys.generate(public)
    with MaskProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", frontend_curve=front,
                   backend_curve=back, stats_interval_s=0.1) as p:
        assert p.frontend_endpoint and p.backend_endpoint
        url = p.backend_endpoint
        with MaskSubscriber(url, topic=["mask/", "stats/proxy"], curve=alice,
                            timeout_s=5.0) as ok, \
                MaskSubscriber(url, topic="mask/", curve=stranger, timeout_s=0.5) as refused, \
                MaskPublisher(p.frontend_endpoint, "cam1", connect=True, curve=cam1, sndhwm=100,
                              stats_interval_s=None) as good, \
                MaskPublisher(p.frontend_endpoint, "rogue", connect=True, sndhwm=100,
                              curve=stranger, stats_interval_s=None) as rogue:
            assert good.wait_for_subscriber(timeout_s=5.0)     # alice's subscription
            publish(good, 3)
            publish(rogue, 3)
            seqs, stats = [], None
            deadline = time.monotonic() + WAIT_S
            while (len(seqs) < 3 or stats is None) and time.monotonic() < deadline:
                msg = ok.recv()
                assert msg is not None and msg.topic != "mask/rogue"
                if msg.topic == "mask/cam1":
                    seqs.append(msg.header["seq"])
                elif msg.header["publishers_denied"] and msg.header["subscribers_denied"]:
                    stats = msg.header
            assert refused.recv() is None and refused.received == 0
    assert seqs == [0, 1, 2] and stats is not None
    assert stats["auth"] == {"publishers": "curve+allowlist", "subscribers": "curve+allowlist"}
    assert stats["publishers"] == 1 and stats["subscribers"] == 1
    assert rogue.counters()["published"] == 3         # sent into a link never admitted


@pytest.mark.parametrize(("args", "expected"), [
    (["--frontend", "foo://x"], "cannot bind --frontend foo://x"),
    (["--server-secret", "/nope/server.key_secret"], "server.key_secret not found"),
    (["--subscribers", "/tmp"], "need --server-secret"),
    (["--frontend", "tcp://127.0.0.1:5999", "--backend", "tcp://127.0.0.1:5999"], "must differ"),
])
def test_bad_input_is_one_error_line(args: list[str], expected: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend", f"tcp://127.0.0.1:{free_port()}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err


def test_port_in_use_is_one_error_line(proxy: MaskProxy,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert proxy.frontend_endpoint is not None
    assert main(["--frontend", proxy.frontend_endpoint]) == 2
    assert "is already in use" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "expected"), [
    (["live.publish.connect=tcp://127.0.0.1:5556",
      "live.publish.curve.server_secret_file=s.key_secret"], "server_key_file"),
    (["live.publish.curve.server_key_file=server.key"], "need live.publish.connect"),
    (["live.publish.connect=tcp://127.0.0.1:5556",
      "live.publish.curve.client_secret_file=a.key_secret"], "needs live.publish.curve"),
])
def test_connect_settings_are_checked(override: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_live_config([], override)
