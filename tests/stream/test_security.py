"""Security rules checked on the source itself: no shell, no unpickling outside the one opt-in
AVSBench path, loopback by default; and the recorder's files after SIGTERM."""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import time
import wave
from pathlib import Path

import cv2

from stream.config import LiveConfig
from stream.publish import DEFAULT_URL, exposure_warning
from tests.conftest import REPO
from tests.stream.test_run_live import RUN_LIVE, free_port

PACKAGES = ("pcmanet", "stream", "calib")


def calls(names: tuple[str, ...]) -> list[tuple[Path, ast.Call]]:
    """Every call in the packages' sources whose dotted callee ends with one of ``names``."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(names):
                    out.append((path.relative_to(REPO), node))
    return out


def test_no_shell_commands() -> None:
    shell = [(p, n.lineno) for p, n in calls(("subprocess.run", "subprocess.Popen",
                                              "subprocess.call", "subprocess.check_output"))
             if any(k.arg == "shell" for k in n.keywords)]
    assert not shell, shell
    assert not calls(("os.system", "os.popen")), "a shell command in library code"


def test_torch_load_is_always_weights_only() -> None:
    loads = calls(("torch.load",))
    assert loads
    for path, node in loads:
        kw = {k.arg: k.value for k in node.keywords}
        assert "weights_only" in kw and ast.literal_eval(kw["weights_only"]) is True, \
            f"{path}:{node.lineno}"


def test_pickle_is_read_only_by_the_opt_in_avsbench_path() -> None:
    where = {str(p) for p, _ in calls(("pickle.load", "pickle.loads", "Unpickler"))}
    assert where == {"pcmanet/data/media.py"}, where
    doc = (REPO / "pcmanet/data/media.py").read_text()
    assert "arbitrary code" in doc and "trusted" in doc


def test_publisher_binds_loopback_by_default() -> None:
    assert DEFAULT_URL.startswith("tcp://127.0.0.1:") and exposure_warning(DEFAULT_URL) is None
    assert LiveConfig().publish.zmq == DEFAULT_URL


def test_recording_stays_readable_after_sigterm(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    proc = subprocess.Popen([*RUN_LIVE, "--demo", "--record", str(rec), "--zmq",
                             f"tcp://127.0.0.1:{free_port()}"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (rec / "timeline.jsonl").exists() or \
                (rec / "timeline.jsonl").read_text().count("\n") < 10:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0 and "Traceback" not in err, err
    meta = json.loads((rec / "meta.json").read_text())
    headers = [json.loads(line) for line in (rec / "timeline.jsonl").read_text().splitlines()]
    assert len(headers) == meta["frames_written"] >= 10              # every line whole
    for h in headers:
        name = f"{h['frame_index']:06d}"
        frame = cv2.imread(str(rec / "frames" / f"{name}.jpg"))
        mask = cv2.imread(str(rec / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert frame is not None and frame.ndim == 3 and mask is not None and mask.ndim == 2
    with wave.open(str(rec / "audio.wav")) as w:                     # the header was finalised
        assert w.getframerate() == 16000 and w.getnframes() == meta["audio_samples"] > 0
