"""CurveZMQ authentication end to end: key files from ``python -m stream.keys``, a publisher
that admits only allowed client keys (ZAP), and subscribers with an allowed key, another key,
and no CurveZMQ at all, over real TCP on loopback. Every wait is bounded."""

from __future__ import annotations

import select
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream.transport.curve import CurveClientKeys
from stream.transport.keys import KeyFileError, client_keys, main, server_keys
from stream.transport.publish import MaskPublisher
from stream.transport.sockets import exposure_warning
from stream.transport.subscribe import MaskSubscriber
from stream.transport.subscribe import main as subscribe_main
from tests.stream.test_run_live import RUN_LIVE, free_port

pytestmark = [pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CurveZMQ"),
              pytest.mark.races]
NOTHING_S = 1.5  # how long a refused subscriber is watched for any message


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    assert main([str(tmp_path / "keys"), "--client", "alice", "--client", "bob"]) == 0
    return tmp_path / "keys"


def publishing(pub: MaskPublisher, stop: threading.Event) -> threading.Thread:
    """A thread publishing a small mask every 20 ms until ``stop``."""
    prob = np.zeros((8, 8), np.float32)

    def feed() -> None:
        i = 0
        while not stop.wait(0.02):
            pub.publish(prob, i, time.monotonic_ns(), 0, 0, 1.0, 0.5, "curve-test")
            i += 1

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def allowlisted(keydir: Path) -> Iterator[MaskPublisher]:
    """A publisher admitting alice and bob only, publishing continuously."""
    keys = server_keys(keydir / "server.key_secret", keydir / "clients")
    stop = threading.Event()
    with MaskPublisher("tcp://127.0.0.1:*", curve=keys, stats_interval_s=None) as pub:
        thread = publishing(pub, stop)
        try:
            yield pub
        finally:
            stop.set()
            thread.join(2.0)


def test_keys_cli_writes_certificates(keydir: Path) -> None:
    names = sorted(p.relative_to(keydir).as_posix() for p in keydir.rglob("*") if p.is_file())
    assert names == ["client-alice/alice.key", "client-alice/alice.key_secret",
                     "client-alice/server.key", "client-bob/bob.key", "client-bob/bob.key_secret",
                     "client-bob/server.key", "clients/alice.key", "clients/bob.key",
                     "server.key", "server.key_secret"]
    assert not list((keydir / "clients").glob("*.key_secret"))   # the allow-list: public only
    for secret in keydir.rglob("*.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    keys = server_keys(keydir / "server.key_secret", keydir / "clients")
    alice = client_keys(keydir / "client-alice/server.key",
                        keydir / "client-alice/alice.key_secret")
    assert alice.server_public == keys.public and keys.allowed_clients is not None
    assert alice.public in keys.allowed_clients and len(keys.allowed_clients) == 2
    assert main([str(keydir)]) == 2                               # never overwrites
    assert main([str(keydir / "other"), "--client", "server"]) == 2   # a name taken twice


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: server_keys(d / "nope.key_secret"), "nope.key_secret not found"),
    (lambda d: server_keys(d / "server.key"), "holds no secret key"),
    (lambda d: server_keys(d / "server.key_secret", d / "empty"), "holds no *.key files"),
    (lambda d: server_keys(d / "server.key_secret", d / "missing"), "missing not found"),
    (lambda d: client_keys(d / "garbage.key"), "not a CurveZMQ certificate"),
])
def test_bad_key_files_are_one_clear_line(keydir: Path, make, expected: str) -> None:
    (keydir / "empty").mkdir()
    (keydir / "garbage.key").write_text("hello\n")
    with pytest.raises(KeyFileError) as err:
        make(keydir)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_only_allowed_clients_receive_masks(keydir: Path, allowlisted: MaskPublisher) -> None:
    url = allowlisted.endpoint
    assert url is not None
    alice = client_keys(keydir / "server.key", keydir / "client-alice/alice.key_secret")
    stranger = CurveClientKeys.generate(alice.server_public)    # valid keys, not allowed
    with MaskSubscriber(url, curve=alice, timeout_s=5.0) as ok, \
            MaskSubscriber(url, curve=stranger, timeout_s=NOTHING_S) as refused, \
            MaskSubscriber(url, timeout_s=NOTHING_S) as plain:
        assert ok.recv() is not None and ok.recv() is not None
        assert refused.recv() is None and refused.received == 0
        assert plain.recv() is None and plain.received == 0
        assert ok.recv() is not None                             # still flowing to alice
    assert allowlisted._allow is not None and allowlisted._allow.denied >= 1
    assert allowlisted.auth_mode == "curve+allowlist"


def test_subscribe_cli_with_client_key(keydir: Path, allowlisted: MaskPublisher,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    url = allowlisted.endpoint
    assert url is not None
    server = str(keydir / "server.key")
    assert subscribe_main([url, "--server-key", server, "--client-key",
                           str(keydir / "client-bob/bob.key_secret"), "--count", "2",
                           "--timeout", "5"]) == 0
    assert capsys.readouterr().out.count("mask/cam0 seq=") == 2
    # a fresh key pair is not on the list: nothing arrives
    assert subscribe_main([url, "--server-key", server, "--count", "1",
                           "--timeout", str(NOTHING_S)]) == 1
    assert subscribe_main([url, "--server-key", str(keydir / "nope.key")]) == 2
    assert "nope.key not found" in capsys.readouterr().err


@pytest.mark.parametrize(("keys", "expected"), [
    ([], "may require CurveZMQ keys: pass --server-key"),
    (["--server-key", "server.key"], "may admit only allowed clients: pass --client-key"),
])
def test_subscribe_cli_says_keys_may_be_needed(keydir: Path, allowlisted: MaskPublisher,
                                               keys: list[str], expected: str) -> None:
    """A subscriber the CurveZMQ publisher refuses hears nothing: after --warn-after it says
    why on stderr, once, and keeps waiting."""
    assert allowlisted.endpoint is not None
    args = [str(keydir / k) if k.endswith(".key") else k for k in keys]
    proc = subprocess.Popen([sys.executable, "-m", "stream.subscribe", allowlisted.endpoint,
                             "--warn-after", "1", *args], stderr=subprocess.PIPE, text=True,
                            stdout=subprocess.DEVNULL)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 60.0)   # bounded: no hang
        assert ready, "no line on stderr in 60 s"
        line = proc.stderr.readline()                             # the hint is its first line
        assert line.startswith("warning: nothing received from") and expected in line, line
        assert "still waiting" in line and proc.poll() is None      # not an exit
    finally:
        proc.terminate()
        proc.wait(10)


def test_stats_say_curve_is_on_and_count_refusals(keydir: Path) -> None:
    keys = server_keys(keydir / "server.key_secret", keydir / "clients")
    alice = client_keys(keydir / "server.key", keydir / "client-alice/alice.key_secret")
    with MaskPublisher("tcp://127.0.0.1:*", curve=keys, stats_interval_s=0.1) as pub:
        assert pub.endpoint is not None
        with MaskSubscriber(pub.endpoint, curve=CurveClientKeys.generate(keys.public),
                            topic="stats/cam0", timeout_s=NOTHING_S) as refused, \
                MaskSubscriber(pub.endpoint, curve=alice, topic="stats/cam0",
                               timeout_s=5.0) as sub:
            msg = sub.recv()
            deadline = time.monotonic() + 5.0
            while msg is not None and msg.header["curve_denied"] == 0 \
                    and time.monotonic() < deadline:
                msg = sub.recv()
            assert refused.recv(0.1) is None
    assert msg is not None and msg.header["auth"] == "curve+allowlist"
    assert msg.header["curve_denied"] >= 1


def test_exposure_warning_says_whether_curve_is_on() -> None:
    url = "tcp://*:5555"
    plain, enc, allow = (exposure_warning(url), exposure_warning(url, curve=True),
                         exposure_warning(url, curve=True, allowlist=True))
    assert plain is not None and "ALL network interfaces" in plain and "unencrypted" in plain
    assert enc is not None and "CurveZMQ on" in enc and "any client" in enc
    assert allow is not None and "only allowed client keys" in allow


def test_run_live_publishes_to_allowed_clients_only(keydir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "curve.yaml"
    cfg.write_text(f"live:\n  publish:\n    curve: {{server_secret_file: "
                   f"{keydir / 'server.key_secret'}, allowed_clients_dir: {keydir / 'clients'}}}\n")
    url = f"tcp://127.0.0.1:{free_port()}"
    alice = client_keys(keydir / "server.key", keydir / "client-alice/alice.key_secret")
    stranger = CurveClientKeys.generate(alice.server_public)
    with MaskSubscriber(url, curve=alice, topic="mask/sec", timeout_s=60) as ok, \
            MaskSubscriber(url, curve=stranger, topic="mask/sec", timeout_s=0.1) as refused, \
            MaskSubscriber(url, topic="mask/sec", timeout_s=0.1) as plain:
        proc = subprocess.Popen([*RUN_LIVE, "--demo", "--config", str(cfg), "--zmq", url,
                                 "--stream", "sec", "--max-frames", "30", "--wait-subscriber",
                                 "30"], stderr=subprocess.PIPE, text=True)
        try:
            got = [m for m in (ok.recv() for _ in range(20)) if m is not None]
            assert refused.recv() is None and plain.recv() is None
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert "auth curve+allowlist" in err
    assert len(got) == 20 and got[0].mask is not None


def test_run_live_bad_key_file_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([*RUN_LIVE, "--demo", "--max-frames", "1", "--zmq",
                          f"tcp://127.0.0.1:{free_port()}", "--set",
                          f"live.publish.curve.server_secret_file={tmp_path / 'x.key_secret'}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "x.key_secret not found" in lines[0], res.stderr


def test_keys_module_runs_as_a_script(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "stream.keys", str(tmp_path / "k")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and (tmp_path / "k" / "server.key_secret").is_file(), res.stderr
    assert "server_secret_file" in res.stderr
