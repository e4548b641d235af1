"""Every entry point answers bad input in one line: one table, every command, as a user runs it.

Each row runs one command in a subprocess, in an empty folder of its own, and checks what the
user sees and what is left behind: exit code 2, exactly one stderr line, beginning ``error:``
and naming the bad value, no traceback, and no file written (the row's folder stays empty, the
prepared inputs are unchanged, and the outputs the row names do not exist). The rows are checked
before a model is loaded wherever that is possible, so the table is quick; they run four at a
time in threads (a row's outcome depends only on its arguments, never on timing).

``python -m pcmanet.data.synthetic_demo``-style helpers are not user-facing services and are not
listed; ``stream.view`` rows go in :data:`VIEW_ROWS` (see there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, synthetic_s4

TINY = str(REPO / "configs" / "test_tiny.yaml")
RUN_LIVE = str(REPO / "run_live.py")
# The port of a publisher nobody starts: rows that would reach the bind fail before it.
ZMQ = ["--zmq", "tcp://127.0.0.1:5"]


@dataclass(frozen=True)
class Row:
    """One bad input: the command (``run_live.py`` or a ``-m`` module), its arguments (``{in}``
    is the prepared-inputs folder), the texts the error line must hold (the bad value), and the
    outputs that must not exist afterwards (relative to the row's own folder unless absolute)."""

    name: str
    command: str
    args: tuple[str, ...]
    names: tuple[str, ...]
    outputs: tuple[str, ...] = field(default=())


def r(name: str, command: str, args: str, names: str | tuple[str, ...],
      outputs: tuple[str, ...] = ()) -> Row:
    return Row(name, command, tuple(args.split()), (names,) if isinstance(names, str) else names,
               outputs)


LIVE, TRAIN, EVAL = "run_live.py", "pcmanet.train", "pcmanet.evaluate"
SUB, PROXY, KEYS = "stream.subscribe", "stream.proxy", "stream.keys"
BENCH, SOAK = "stream.bench", "stream.soak"
THRESH, OFFSET, BUDGET, SCENE = "calib.threshold", "calib.av_offset", "calib.budget", \
    "calib.scene_eval"
FAMILIES, MERGE = "pcmanet.data.eval_families", "pcmanet.data.merge"
TWIN, PROBE, WINDOWS = "pcmanet.twin_eval", "pcmanet.visual_probe", "pcmanet.window_probe"
LIVE_SCORE = "calib.live_score"
TRAIN_OK = f"--config {TINY} --data-root {{in}}/s4 --task s4"
EVAL_OK = "--checkpoint {in}/model.pt --data-root {in}/s4 --task s4"

ROWS: list[Row] = [
    # run_live.py
    r("live-device", LIVE, "--device cudax --max-frames 1", "--device cudax"),
    r("live-device-type", LIVE, "--device meta --max-frames 1", "meta"),
    r("live-record-proc", LIVE, "--record /proc/x --max-frames 1", "--record /proc/x"),
    r("live-record-file", LIVE, "--record {in}/notes.txt --max-frames 1", "notes.txt"),
    r("live-record-full", LIVE, "--record {in}/full --max-frames 1", "--record {in}/full"),
    r("live-wait-negative", LIVE, "--wait-subscriber -1 --dry-run", "--wait-subscriber -1"),
    r("live-dry-run-missing-video", LIVE, "--video {in}/nope.mp4 --dry-run", "nope.mp4"),
    r("live-missing-video", LIVE, "--video {in}/nope.mp4 --record rec", "nope.mp4", ("rec",)),
    r("live-text-as-video", LIVE, "--video {in}/notes.txt --record rec", "notes.txt", ("rec",)),
    r("live-max-frames", LIVE, "--max-frames 0", "--max-frames 0"),
    r("live-duration", LIVE, "--duration -5", "--duration -5"),
    r("live-duration-nan", LIVE, "--duration nan", "--duration nan"),
    r("live-weights-junk", LIVE, "--weights {in}/junk.pt --max-frames 1", "junk.pt"),
    r("live-weights-missing", LIVE, "--weights {in}/nope.pt --max-frames 1", "nope.pt"),
    r("live-config-key", LIVE, "--config {in}/unknown_key.yaml --dry-run", "frobnicate"),
    r("live-set-value", LIVE, "--set live.engine.threads=0 --dry-run", "live.engine.threads"),
    r("live-encoding", LIVE, "--encoding jpeg --dry-run", "jpeg"),
    r("live-variant", LIVE, "--variant nosuch --dry-run", "nosuch"),
    r("live-stream-name", LIVE, "--stream a/b --dry-run", "a/b"),
    r("live-unknown-flag", LIVE, "--frobnicate --dry-run", "--frobnicate"),
    # pcmanet.train
    r("train-config-missing", TRAIN, "--config {in}/nope.yaml --data-root {in}/s4 --task s4 "
      "--out run", "nope.yaml", ("run",)),
    r("train-data-missing", TRAIN, f"--config {TINY} --data-root {{in}}/nodata --task s4 "
      "--out run", "nodata", ("run",)),
    r("train-task", TRAIN, f"{TRAIN_OK} --task s5 --out run", "s5", ("run",)),
    r("train-max-minutes", TRAIN, f"{TRAIN_OK} --out run --max-minutes 0", "--max-minutes 0",
      ("run",)),
    r("train-device", TRAIN, f"{TRAIN_OK} --out run --device bogus", "--device bogus", ("run",)),
    r("train-override-key", TRAIN, f"{TRAIN_OK} --out run train.frobnicate=1",
      "train.frobnicate", ("run",)),
    r("train-override-type", TRAIN, f"{TRAIN_OK} --out run train.epochs=many", "train.epochs",
      ("run",)),
    r("train-resume-nothing", TRAIN, f"{TRAIN_OK} --out run --resume", "last.pt", ("run",)),
    r("train-resume-bad-config", TRAIN, f"{TRAIN_OK} --out {{in}}/run_badcfg --resume",
      ("config.yaml", "frobnicate")),
    r("train-resume-no-epoch", TRAIN, f"{TRAIN_OK} --out {{in}}/run_noepoch --resume",
      ("last.pt", "epoch")),
    # pcmanet.evaluate
    r("eval-device", EVAL, f"{EVAL_OK} --device bogus --save-masks out", "--device bogus",
      ("out",)),
    r("eval-batch-size", EVAL, f"{EVAL_OK} --batch-size 0 --save-masks out", "--batch-size 0",
      ("out",)),
    r("eval-num-workers", EVAL, f"{EVAL_OK} --num-workers -1 --save-masks out",
      "--num-workers -1", ("out",)),
    r("eval-max-items", EVAL, f"{EVAL_OK} --max-items 0", "--max-items 0"),
    r("eval-image-size", EVAL, f"{EVAL_OK} --image-size 100", "--image-size 100"),
    r("eval-checkpoint-missing", EVAL, "--checkpoint {in}/nope.pt --data-root {in}/s4 --task s4 "
      "--save-masks out", "nope.pt", ("out",)),
    r("eval-checkpoint-junk", EVAL, "--checkpoint {in}/junk.pt --data-root {in}/s4 --task s4 "
      "--save-masks out", "junk.pt", ("out",)),
    r("eval-data-missing", EVAL, "--checkpoint {in}/model.pt --data-root {in}/nodata --task s4 "
      "--save-masks out", "nodata", ("out",)),
    # stream.subscribe
    r("sub-url", SUB, "notaurl", "notaurl"),
    r("sub-count", SUB, "tcp://127.0.0.1:5 --count 0", "--count 0"),
    r("sub-timeout", SUB, "tcp://127.0.0.1:5 --timeout -1", "--timeout -1"),
    r("sub-server-key", SUB, "tcp://127.0.0.1:5 --server-key {in}/nope.key", "nope.key"),
    r("sub-client-key-alone", SUB, "tcp://127.0.0.1:5 --client-key {in}/a.key_secret",
      "--client-key"),
    # stream.proxy
    r("proxy-frontend", PROXY, "--frontend notaurl --backend tcp://127.0.0.1:0", "notaurl"),
    r("proxy-hwm", PROXY, "--hwm -1", "--hwm -1"),
    r("proxy-stats-interval", PROXY, "--stats-interval -1", "--stats-interval -1"),
    r("proxy-secret-missing", PROXY, "--server-secret {in}/nope.key_secret", "nope.key_secret"),
    # stream.keys
    r("keys-folder-is-file", KEYS, "{in}/notes.txt --client alice", "notes.txt"),
    r("keys-client-name", KEYS, "keys --client a/b", "a/b", ("keys",)),
    r("keys-same-names", KEYS, "keys --client alice --client alice", "'alice'", ("keys",)),
    # stream.bench and stream.soak
    r("bench-duration", BENCH, "--duration 0 --json b.json", "--duration 0", ("b.json",)),
    r("bench-source-missing", BENCH, "--source {in}/nope.mp4 --json b.json", "nope.mp4",
      ("b.json",)),
    r("bench-streams", BENCH, "--streams 0 --json b.json", "'0'", ("b.json",)),
    r("bench-device", BENCH, "--device cudax --json b.json", "--device cudax", ("b.json",)),
    r("soak-minutes", SOAK, "--minutes 0 --json s.json", "--minutes 0", ("s.json",)),
    # calib
    r("threshold-data-missing", THRESH, "--data-root {in}/nodata --out t.yaml", "nodata",
      ("t.yaml",)),
    r("threshold-values", THRESH, "--data-root {in}/s4 --thresholds 0.5,2 --out t.yaml",
      "[0.5, 2.0]",
      ("t.yaml",)),
    r("offset-video-missing", OFFSET, "--video {in}/nope.mp4 --out o.yaml", "nope.mp4",
      ("o.yaml",)),
    r("offset-recording-missing", OFFSET, "--recording {in}/norec --out o.yaml", "norec",
      ("o.yaml",)),
    r("offset-pattern-seconds", OFFSET, "--write-pattern p.mp4 --seconds 0", "--seconds 0",
      ("p.mp4",)),
    r("offset-pattern-fps", OFFSET, "--write-pattern p.mp4 --fps -1", "--fps -1", ("p.mp4",)),
    r("budget-target-fps", BUDGET, "--target-fps 0 --out b.yaml", "--target-fps 0", ("b.yaml",)),
    r("budget-sizes", BUDGET, "--target-fps 30 --sizes 100 --out b.yaml", "--sizes 100",
      ("b.yaml",)),
    r("budget-threads", BUDGET, "--target-fps 30 --threads 0 --out b.yaml", "--threads 0",
      ("b.yaml",)),
    r("budget-weights-missing", BUDGET, "--target-fps 30 --weights {in}/nope.pt --out b.yaml",
      "nope.pt", ("b.yaml",)),
    r("scene-shifts", SCENE, "--shifts-ms a,b --json s.json", "a,b", ("s.json",)),
    r("scene-seconds", SCENE, "--seconds 0 --json s.json", "--seconds 0", ("s.json",)),
    r("scene-weights-missing", SCENE, "--weights {in}/nope.pt --json s.json", "nope.pt",
      ("s.json",)),
    # sound families and the tools that score / probe them (issue 22)
    r("families-family", FAMILIES, "--family tempo --out fam", "tempo", ("fam",)),
    r("merge-one-source", MERGE, "--out m {in}/s4", "two sources", ("m",)),
    r("merge-clash", MERGE, "--out m {in}/s4 {in}/s4", "in both", ("m",)),
    r("twin-checkpoint-junk", TWIN, "--checkpoint {in}/junk.pt --data-root {in}/s4", "junk.pt"),
    r("visual-probe-checkpoint-missing", PROBE, "--checkpoint {in}/nope.pt --data-root {in}/s4",
      "nope.pt"),
    r("window-probe-steps", WINDOWS, "--checkpoint {in}/model.pt --data-root {in}/s4 --steps 0 "
      "--save w.pt", "--steps", ("w.pt",)),
    r("window-probe-checkpoint-junk", WINDOWS, "--checkpoint {in}/junk.pt --data-root {in}/s4 "
      "--save w.pt", "junk.pt", ("w.pt",)),
    r("live-score-unknown-flag", LIVE_SCORE, "--data-root {in}/s4 --frobnicate", "--frobnicate"),
]

# stream.view, the browser viewer (more of its refusals: tests/stream/test_view.py).
VIEW = "stream.view"
VIEW_ROWS: list[Row] = [
    r("view-url", VIEW, "notaurl", "notaurl"),
    r("view-http-public", VIEW, "tcp://127.0.0.1:5 --http 0.0.0.0:8080", "0.0.0.0"),
    r("view-http-form", VIEW, "tcp://127.0.0.1:5 --http 8080", "8080"),
    r("view-max-fps", VIEW, "tcp://127.0.0.1:5 --max-fps -1", "--max-fps -1"),
    r("view-server-key", VIEW, "tcp://127.0.0.1:5 --server-key {in}/nope.key", "nope.key"),
]


def command_line(row: Row, inputs: Path) -> list[str]:
    args = [a.replace("{in}", str(inputs)) for a in row.args]
    if row.command == LIVE:
        return [sys.executable, RUN_LIVE, *args, *ZMQ]
    return [sys.executable, "-m", row.command, *args]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the rows point at: a tiny S4 set, a tiny checkpoint, junk and text files, a
    non-empty folder, run folders with a broken config.yaml and a last.pt without its epoch."""
    root = tmp_path_factory.mktemp("inputs")
    s4 = synthetic_s4(tmp_path_factory, "s4", train=2, val=1, test=1, size=64, seed=0)
    (root / "s4").symlink_to(s4, target_is_directory=True)
    make_inputs(root)
    return root


def make_inputs(root: Path) -> None:
    from pcmanet.build import build_pcmanet
    from pcmanet.checkpoint import save_checkpoint
    from pcmanet.config import load_config

    (root / "notes.txt").write_text("not a video, not a folder\n")
    (root / "junk.pt").write_bytes(os.urandom(4096))
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("already here\n")
    (root / "unknown_key.yaml").write_text("live:\n  frobnicate: 1\n")
    cfg = load_config(TINY)
    model = build_pcmanet(cfg.model)
    save_checkpoint(root / "model.pt", model, cfg.model)
    bad = root / "run_badcfg"
    bad.mkdir()
    (bad / "config.yaml").write_text("train:\n  frobnicate: 1\n")
    (bad / "last.pt").write_bytes(b"never read")
    noepoch = root / "run_noepoch"
    noepoch.mkdir()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "extra": {}}, noepoch / "last.pt")


@pytest.fixture(scope="module")
def results(inputs: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every row run once, four at a time: name -> (the finished process, its folder)."""
    before = snapshot(inputs)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    work = tmp_path_factory.mktemp("rows")

    def run(row: Row) -> tuple[str, tuple[subprocess.CompletedProcess[str], Path]]:
        cwd = work / row.name
        cwd.mkdir()
        proc = subprocess.run(command_line(row, inputs), cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        return row.name, (proc, cwd)

    with ThreadPoolExecutor(4) as pool:
        out = dict(pool.map(run, ROWS + VIEW_ROWS))
    assert snapshot(inputs) == before, "a row changed the prepared inputs"
    return out


def test_the_table_covers_every_entry_point() -> None:
    commands = {row.command for row in ROWS}
    assert commands >= {LIVE, TRAIN, EVAL, SUB, PROXY, KEYS, BENCH, THRESH, OFFSET, BUDGET, SCENE}
    assert {row.command for row in VIEW_ROWS} == {VIEW}
    assert len(ROWS) >= 40
    assert len({row.name for row in ROWS + VIEW_ROWS}) == len(ROWS + VIEW_ROWS)


@pytest.mark.parametrize("row", ROWS + VIEW_ROWS, ids=lambda row: row.name)
def test_bad_input_gets_one_error_line_and_leaves_nothing(
        row: Row, inputs: Path,
        results: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    proc, cwd = results[row.name]
    shown = f"$ {' '.join(command_line(row, inputs))}\n{proc.stderr}"
    assert proc.returncode == 2, shown
    assert "Traceback" not in proc.stderr, shown
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    for text in row.names:
        assert text.replace("{in}", str(inputs)) in lines[0], shown
    assert list(cwd.iterdir()) == [], f"{shown}\nleft behind: {list(cwd.iterdir())}"
    for out in row.outputs:
        assert not (cwd / out).exists(), shown
