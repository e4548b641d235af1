"""The viewer without a browser: the picture it draws, pairing by seq, its figures over HTTP,
through a CurveZMQ proxy, and its one-line answers to bad input. (The page in a real browser:
test_view_browser.py.)"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream.transport.curve import CurveClientKeys
from stream.transport.frames import FrameOptions
from stream.transport.keys import client_keys, create_keys, server_keys
from stream.transport.messages import MaskHeader, encode_mask
from stream.transport.proxy import MaskProxy
from stream.transport.publish import MaskPublisher
from stream.transport.subscribe import MaskMessage
from stream.viewer.receive import Receivers
from stream.viewer.tiles import Board, compose
from tests.conftest import REPO
from tests.stream.view_helpers import (
    FRAME,
    MASK_BOX,
    Feeder,
    H,
    Lines,
    W,
    frozen_clock,
    get,
    mask_for,
    streams,
    viewer,
    wait_for,
)

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py


def tinted(img: np.ndarray) -> np.ndarray:
    """(h, w, 3) BGR -> (h, w) bool: green clearly above blue and red (draw_overlay's tint)."""
    b, g, r = (img[..., i].astype(int) for i in range(3))
    return g - np.maximum(b, r) > 40


def test_compose_tints_exactly_the_mask_over_the_frame() -> None:
    header = {"threshold": 0.5}
    out = compose(FRAME, (mask_for(MASK_BOX) > 0.5).astype(np.uint8), header)
    t = tinted(out)
    r0, r1, c0, c1 = MASK_BOX
    assert t[r0:r1, c0:c1].all()
    outside = np.ones_like(t)
    outside[r0 - 1:r1 + 1, c0 - 1:c1 + 1] = False          # the outline is drawn on the edge
    assert not t[outside].any()
    assert (out[5, 5] == FRAME[5, 5]).all() and (out[5, W - 5] == FRAME[5, W - 5]).all()


def test_compose_scales_the_mask_to_a_smaller_frame_and_uses_prob16_threshold() -> None:
    small = FRAME[::2, ::2].copy()                            # the publisher's max_side
    prob = mask_for(MASK_BOX) * 0.6                           # prob16: 0.6 inside
    out = compose(small, prob, {"threshold": 0.7})
    assert out.shape == small.shape and not tinted(out).any()  # 0.6 is not above 0.7
    out = compose(small, prob, {"threshold": 0.5})
    r0, r1, c0, c1 = (v // 2 for v in MASK_BOX)
    assert tinted(out)[r0 + 1:r1 - 1, c0 + 1:c1 - 1].all()


def test_compose_draws_a_mask_without_frame_on_black() -> None:
    out = compose(None, (mask_for(MASK_BOX) > 0).astype(np.uint8), {"threshold": 0.5})
    assert out.shape == (H, W, 3) and (out[0, 0] == 0).all() and tinted(out)[60, 80]


def message(kind: str, seq: int, stream: str = "cam0", every: int = 1) -> MaskMessage:
    """A mask or frame message as the subscriber hands it over."""
    if kind == "mask":
        header = MaskHeader(stream=stream, seq=seq, frame_index=seq, t_capture_ns=0,
                            t_audio_start_ns=0, t_audio_end_ns=0, t_publish_ns=10**7,
                            height=H, width=W, encoding="mono8", threshold=0.5,
                            keep_ratio=0.5, model="m").to_dict()
        mask = np.frombuffer(encode_mask(mask_for(MASK_BOX), "mono8"), np.uint8)
        return MaskMessage(f"mask/{stream}", header, (mask.reshape(H, W) > 0).astype(np.uint8),
                           0)
    header = {"stream": stream, "seq": seq, "frame_index": seq, "every": every}
    return MaskMessage(f"frame/{stream}", header, None, 0, image=FRAME.copy())


def test_board_pairs_masks_and_frames_by_seq() -> None:
    now = [100.0]
    board = Board(["tcp://127.0.0.1:1"], clock=lambda: now[0])
    board.on_message(0, message("mask", 0))                  # no frame seen yet: on black
    assert board.compose_pending() == 1
    assert board.pictures({})[0][2]["has_frame"] is False
    board.on_message(0, message("frame", 0))
    board.on_message(0, message("mask", 1))                  # its frame comes after it
    assert board.compose_pending() == 0
    board.on_message(0, message("frame", 1))
    assert board.compose_pending() == 1
    (key, version, info, jpeg), = board.pictures({})
    assert (key, version, info["seq"], info["has_frame"]) == ("cam0", 2, 1, True)
    assert jpeg[:2] == b"\xff\xd8"
    board.on_message(0, message("mask", 5))                  # 3 missed
    board.on_message(0, message("mask", 0))                  # restarted
    fig, = board.figures()
    assert (fig["drops"]["missed"], fig["restarts"], fig["seq"], fig["state"]) == \
        (3, 1, 0, "live")
    now[0] += 5.0
    assert board.figures()[0]["state"] == "reconnecting"
    now[0] += 60.0
    assert board.figures()[0]["state"] == "failed"


def test_board_draws_masks_between_sparse_frames_on_the_latest_frame() -> None:
    board = Board(["tcp://127.0.0.1:1"])
    board.on_message(0, message("mask", 0))
    board.on_message(0, message("frame", 0, every=3))
    board.compose_pending()
    for seq in (1, 2):
        board.on_message(0, message("mask", seq))
        assert board.compose_pending() == 1
        assert board.pictures({"cam0": 0})[0][2] == {"seq": seq, "frame_index": seq,
                                                      "width": W, "height": H,
                                                      "has_frame": True}
    board.on_message(0, message("mask", 3))                  # needs frame 3: waits for it
    assert board.compose_pending() == 0


def test_odd_stats_and_frame_headers_leave_the_figures_working() -> None:
    """Stats headers are only checked for their required keys: the rest is not trusted."""
    board = Board(["tcp://127.0.0.1:1"])
    board.on_message(0, message("mask", 0))
    for counters in ([1, 2], {"frame_ring": "x", "engine": [], "fps_in": "fast"},
                     {"fps_in": float("nan"), "state": "failed", "error": None}):
        board.on_message(0, MaskMessage("stats/cam0", {"stream": "cam0", "t_publish_ns": 1,
                                                       "dropped_at_socket": True,
                                                       "counters": counters}, None, 0))
        fig, = board.figures()
        assert fig["drops"]["total"] == 0 and fig["fps_in"] is None
    assert fig["state"] == "failed" and fig["why"] == "the stream failed"
    odd = message("frame", 0)
    odd.header["every"] = "many"
    board.on_message(0, odd)
    board.on_message(0, message("mask", 1))
    board.on_message(0, message("frame", 1))
    assert board.compose_pending() >= 1


def test_stats_only_senders_get_no_tile() -> None:
    board = Board(["tcp://127.0.0.1:1"])
    board.on_message(0, MaskMessage("stats/proxy", {"stream": "proxy", "t_publish_ns": 1}, None,
                                    0))
    assert board.figures() == []


def test_the_viewer_through_a_curve_proxy(tmp_path: Path) -> None:
    """publisher -> stream.proxy (CurveZMQ, allowed subscribers only) -> viewer process with
    a client key: the stream shows up with its frame, live, its figures filled in."""
    create_keys(tmp_path, clients=["viewer"], publishers=["cam"])
    proxy_keys = server_keys(tmp_path / "server.key_secret", tmp_path / "clients")
    front = server_keys(tmp_path / "server.key_secret", tmp_path / "publishers")
    with MaskProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", frontend_curve=front,
                   backend_curve=proxy_keys, stats_interval_s=0.2) as proxy:
        assert proxy.frontend_endpoint and proxy.backend_endpoint
        pub_keys = client_keys(tmp_path / "server.key", tmp_path / "publisher-cam/cam.key_secret")
        with MaskPublisher(proxy.frontend_endpoint, "hall", connect=True, curve=pub_keys,
                           frames=FrameOptions(), stats_interval_s=0.2,
                           clock=frozen_clock) as pub, \
                Feeder(pub) as feed, \
                viewer([proxy.backend_endpoint], "--server-key", str(tmp_path / "server.key"),
                       "--client-key", str(tmp_path / "client-viewer/viewer.key_secret")) as page:
            feed.set("hall", mask_for(MASK_BOX), FRAME)
            fig = wait_for("the stream with its frame", lambda: (
                s := streams(page).get("hall")) and s["picture"].get("has_frame") and s)
            assert fig["state"] == "live" and fig["keep_ratio"] == 0.75
            assert fig["audio_lag_ms"] == 5.0 and fig["latency_ms"] == 15.0
            assert set(streams(page)) == {"hall"}             # the proxy's stats: no tile


def test_a_client_key_the_publisher_does_not_allow_gets_nothing(tmp_path: Path) -> None:
    create_keys(tmp_path, clients=["viewer"])
    keys = server_keys(tmp_path / "server.key_secret", tmp_path / "clients")
    stranger = CurveClientKeys.generate(keys.public)
    with MaskPublisher("tcp://127.0.0.1:*", "cam0", curve=keys, frames=FrameOptions(),
                       stats_interval_s=0.2, clock=frozen_clock) as pub, Feeder(pub) as feed:
        feed.set("cam0", mask_for(MASK_BOX), FRAME)
        board = Board([pub.endpoint or ""])
        allowed = client_keys(tmp_path / "server.key", tmp_path / "client-viewer/viewer.key_secret")
        ok, refused = Receivers(board, curve=allowed).start(), None
        try:
            wait_for("the allowed viewer's first picture", lambda: board.pictures({}))
            other = Board([pub.endpoint or ""])
            refused = Receivers(other, curve=stranger).start()
            wait_for("the publisher refusing the stranger (its stats say so)",
                     lambda: board.tiles["cam0"].stats.get("curve_denied", 0) >= 1)
            assert other.figures() == [] and other.pictures({}) == []
        finally:
            ok.stop()
            if refused is not None:
                refused.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def view_error(*args: str, env: dict[str, str] | None = None) -> str:
    """Run stream.view with bad input -> its one error line (exit 2, no traceback)."""
    res = subprocess.run([sys.executable, "-m", "stream.view", *args], cwd=REPO, timeout=60,
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["--http", "0.0.0.0:8080"], "--http 0.0.0.0 is reachable from other machines"),
    (["--http", "192.168.1.5:8080"], "set a token with --token SECRET"),
    (["--http", "8080"], "--http '8080': expected HOST:PORT"),
    (["--http", "127.0.0.1:99999"], "expected HOST:PORT"),
    (["--http", "0.0.0.0:8080", "--token", ""], "the token is empty"),
    (["--client-key", "a.key_secret"], "--client-key needs --server-key"),
    (["--server-key", "/nonexistent/server.key"], "/nonexistent/server.key"),
    (["--max-fps", "-1"], "--max-fps -1: must be >= 0"),
    (["--stale-s", "0"], "--stale-s 0: must be > 0"),
    (["--fail-s", "1"], "--fail-s 1: must be more than --stale-s"),
])
def test_bad_input_is_one_error_line(args: list[str], expected: str) -> None:
    assert expected in view_error("tcp://127.0.0.1:5555", *args)


def test_a_bad_url_and_a_busy_port_are_one_error_line() -> None:
    assert "cannot connect to 'notaurl'" in view_error("notaurl")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = view_error("tcp://127.0.0.1:5555", "--http", f"127.0.0.1:{port}")
    assert f"--http 127.0.0.1:{port}: cannot listen there" in line


def test_the_token_guards_the_data_and_foreign_pages_are_refused() -> None:
    with viewer(["tcp://127.0.0.1:5555"], "--token", "s3cret") as page:
        assert get(page + "api/streams")[0] == 401
        assert get(page + "api/streams?token=wrong")[0] == 401
        assert get(page + "api/streams?token=s3cret") == (200, b'{"streams": []}')
        status, body = get(page + "api/streams",
                           headers={"Authorization": "Bearer s3cret"})
        assert status == 200
        status, body = get(page)                                # the page itself: no data
        assert status == 200 and b"view.js" in body
        assert get(page + "ws?token=s3cret", {"Origin": "http://evil.example"})[0] == 403
        assert get(page + "ws")[0] == 401


def test_run_live_view_refuses_an_exposed_address_and_a_proxy_link() -> None:
    def run_live(*args: str) -> str:
        res = subprocess.run([sys.executable, str(REPO / "run_live.py"), *args, "--dry-run"],
                             cwd=REPO, timeout=120, capture_output=True, text=True)
        assert res.returncode == 2, res
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        return lines[0]

    assert "--view 0.0.0.0 is reachable from other machines" in run_live("--view",
                                                                         "0.0.0.0:8080")
    assert "run python -m stream.view" in run_live("--view", "127.0.0.1:0", "--zmq-connect",
                                                   "tcp://127.0.0.1:5556")


@pytest.mark.slow
def test_run_live_view_serves_the_demo(tmp_path: Path) -> None:
    """run_live.py --demo --view: the demo stream shows up, with its frames, live."""
    proc = subprocess.Popen([sys.executable, str(REPO / "run_live.py"), "--demo", "--view",
                             "127.0.0.1:0", "--zmq", f"tcp://127.0.0.1:{free_port()}",
                             "--duration", "120"], cwd=REPO, text=True,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        page, lines = None, Lines(proc.stderr)
        while page is None and time.monotonic() < deadline:
            line = lines.next(deadline - time.monotonic())
            assert line, "run_live ended, or took 120 s, before serving the viewer"
            if line.startswith("viewer on "):
                page = line.split()[2]
        assert page is not None
        fig = wait_for("the demo stream with its frames", lambda: (
            s := streams(page).get("cam0")) and s["picture"].get("has_frame") and s, 60)
        assert fig["state"] == "live" and fig["masks"] >= 1
    finally:
        proc.terminate()
        proc.wait(30)
