"""One command that proves the GPU side (issue 21): CUDA tests, step latency, buckets, overlap,
the live benchmark and AMP training, in <= 8 minutes on one GPU.

    python bench/gpu_proof.py --out DIR                       # on a CUDA machine
    python bench/gpu_proof.py --out DIR --device cpu --quick  # the same code, tiny, on a CPU

Writes DIR/gpu_proof.json (every figure, each section's time and error) and DIR/gpu_proof.md
(the table). Sections (each catches its own failure; the others' figures are kept):

* ``cuda_tests``: ``pytest -m gpu tests`` (the CUDA tests; they skip without a GPU);
* ``step``: one-stream step p50 eager vs graphed, demo / ResNet-50 / PVT-v2-b5, fp32 and bf16;
* ``buckets``: frames/s of the graphed ResNet-50 step (bf16) with P streams, per bucket P;
* ``overlap``: StreamRunner's frames in flight over time and the share of copy time hidden
  under compute (CUDA timing events);
* ``live``: ``python -m stream.bench``: 30 FPS for 60 s, a 240 FPS source, 32 and 64 streams
  at 30 FPS each (CUDA graphs on);
* ``training``: a few AMP (bf16, channels-last) training steps of the demo recipe.

Exits 1 if any section failed (targets missed are reported, not failures: they are figures).
bench/README.md says what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))          # the checkout's packages, not an installed copy

import torch  # noqa: E402

from bench import proof_measure as pm  # noqa: E402
from bench.proof_report import markdown, targets  # noqa: E402

SECTIONS = ("cuda_tests", "step", "buckets", "overlap", "live", "training")
BUDGET_S = 480


def child_env() -> dict[str, str]:
    """The environment of the commands run: this checkout first on PYTHONPATH (then what was
    there, e.g. carried wheels)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path)


class Proof:
    """Where and how large: ``device``, ``quick`` sizes, the output folder."""

    def __init__(self, out: Path, device: torch.device, quick: bool) -> None:
        self.out, self.device, self.quick = out, device, quick
        self.sizes = pm.QUICK if quick else pm.FULL
        self.cuda = device.type == "cuda"

    def run(self, argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        """A command of this checkout (cwd and PYTHONPATH the repository); raises with the
        tail of its output if it fails."""
        proc = subprocess.run(argv, cwd=REPO, env=child_env(), capture_output=True, text=True,
                              timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:4])} ... exited {proc.returncode}: "
                               f"{(proc.stdout + proc.stderr)[-1500:]}")
        return proc


# -- sections ------------------------------------------------------------------------------------
def gpu_test_files() -> list[str]:
    """Test files holding tests marked ``gpu`` (collecting only these keeps the run short and
    independent of what the other test files import)."""
    return sorted(str(f.relative_to(REPO)) for f in (REPO / "tests").rglob("test_*.py")
                  if "pytest.mark.gpu" in f.read_text())


def cuda_tests(p: Proof) -> dict[str, Any]:
    """The tests marked ``gpu`` (pytest, junit XML read back)."""
    xml = p.out / "cuda_tests.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p",
                           "no:cacheprovider", f"--junitxml={xml}", *gpu_test_files()], cwd=REPO,
                          env=child_env(), capture_output=True,
                          text=True, timeout=240)
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    n["passed"] = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    n["files"] = len(gpu_test_files())
    if n["failures"] or n["errors"] or (p.cuda and n["passed"] == 0) or n["tests"] == 0:
        raise RuntimeError(f"CUDA tests: {n}; {proc.stdout[-1500:]}")
    return n


def step(p: Proof) -> dict[str, Any]:
    return pm.step_figures(p.device, p.sizes)


def buckets(p: Proof) -> dict[str, Any]:
    return pm.bucket_figures(p.device, p.sizes, "demo" if p.quick else "resnet50", "bf16")


def overlap(p: Proof) -> dict[str, Any]:
    return pm.overlap_figures(p.device, p.sizes, "demo" if p.quick else "resnet50", "bf16")


def live(p: Proof) -> dict[str, Any]:
    """``stream.bench`` runs; -> per run fps in/out, e2e p50/p99 ms, drops."""
    q = p.quick
    runs = {  # name: (streams, source FPS, seconds measured)
        "fps30": ((1,), 30, 4 if q else 60), "fps240": ((1,), 240, 2 if q else 15),
        "streams": ((2, 3) if q else (32, 64), 30, 4 if q else 15)}
    warmup = 1 if q else 4
    out: dict[str, Any] = {}
    for name, (counts, fps, seconds) in runs.items():
        path = p.out / f"live_{name}.json"
        argv = [sys.executable, "-m", "stream.bench", "--source", "demo", "--duration",
                f"{seconds + warmup}", "--warmup", f"{warmup}", "--json", str(path),
                "--device", p.device.type, "--set", f"live.source.fps={fps}"]
        # CUDA: the graphed step; the CPU stand-in runs eagerly (compiling ahead of time there
        # is bench/step_compile.py's and tests/stream/test_aot_step.py's to prove).
        argv += ["--set", "live.engine.cuda_graphs=true" if p.cuda else "live.engine.compile=off"]
        if counts != (1,):       # one process, one run per count; batches up to every stream
            argv += ["--streams", ",".join(map(str, counts)),
                     "--set", f"live.engine.max_batch={max(counts)}"]
        p.run(argv, timeout_s=len(counts) * (seconds + warmup + 120))
        rep = json.loads(path.read_text())
        if counts == (1,):
            out[name] = _live_figures(rep, fps, seconds)
        else:            # "streams32" and "streams64" (quick: their 2- and 3-stream stand-ins)
            for key, run in zip(("streams32", "streams64"), rep["runs"], strict=True):
                out[key] = _streams_figures(run, fps, seconds)
    return out


def _live_figures(rep: dict[str, Any], fps: int, seconds: float) -> dict[str, Any]:
    """One stream's ``stream.bench`` report -> its figures."""
    drops = sum(v for k, v in rep["drops"].items() if k != "audio_ring_samples")
    return {"streams": 1, "source_fps": fps, "seconds": seconds, "fps_in": rep["fps_in"],
            "fps_out": rep["fps_out"], "e2e_p50_ms": rep["e2e_ms"]["p50"],
            "e2e_p99_ms": rep["e2e_ms"]["p99"], "drops": drops}


def _streams_figures(run: dict[str, Any], fps: int, seconds: float) -> dict[str, Any]:
    """One run of ``stream.bench --streams`` -> its figures."""
    return {"streams": run["streams"], "source_fps": fps, "seconds": seconds,
            "aggregate_fps_out": run["aggregate_fps_out"],
            # below the source's rate: the sources (demo scenes drawn in this process) lag
            "min_stream_fps_in": min(r["fps_in"] for r in run["per_stream"].values()),
            "min_stream_fps_out": run["min_stream_fps_out"],
            "worst_stream_p99_ms": run["worst_stream_p99_ms"],
            "pooled_p99_ms": run["pooled"]["e2e_ms"]["p99"],
            "mean_batch": run["batch"]["mean_size"]}


def training(p: Proof) -> dict[str, Any]:
    """Synthetic S4 data, then ``pcmanet.train`` for one epoch with bf16 autocast."""
    data, run = p.out / "train_data", p.out / "train_run"
    clips, px = (8, 64) if p.quick else (96, 128)
    p.run([sys.executable, "-m", "pcmanet.data.synthetic", "--out", str(data), "--task", "s4",
           "--train", str(clips), "--val", "2", "--test", "2", "--size", str(px),
           "--seed", "0"], timeout_s=180)
    if p.quick:
        cfg = ["--config", "configs/test_tiny.yaml", "data.num_workers=0", "train.batch_size=4",
               "train.cpu_amp=true"]
    else:
        cfg = ["--config", "configs/demo.yaml", "data.num_workers=4", "data.cache=true",
               "train.batch_size=8"]
    t0 = time.perf_counter()
    proc = p.run([sys.executable, "-m", "pcmanet.train", *cfg[:2], "--data-root", str(data),
                  "--task", "s4", "--out", str(run), "--device", p.device.type,
                  "train.epochs=1", f"data.image_size={px}", "train.amp=true", *cfg[2:]],
                 timeout_s=240)
    wall = time.perf_counter() - t0
    summary = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])
    return {"clips": clips, "image_size": px, "precision": "bf16", "steps": summary["steps"],
            "train_seconds": summary["train_seconds"],
            "steps_per_s": summary["steps"] / max(summary["train_seconds"], 1e-9),
            "wall_seconds": wall}


RUNNERS: dict[str, Callable[[Proof], dict[str, Any]]] = {
    "cuda_tests": cuda_tests, "step": step, "buckets": buckets, "overlap": overlap,
    "live": live, "training": training}


# -- the command ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/gpu_proof.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON and the table")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run (default: all of {SECTIONS})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    if unknown := sorted(set(only) - set(SECTIONS)):
        print(f"error: --only: unknown section(s) {unknown}; choose from {SECTIONS}",
              file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU (use --device cpu --quick)",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    proof = Proof(args.out, torch.device(args.device), args.quick)
    report: dict[str, Any] = {
        "device": args.device, "quick": args.quick, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "host": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "budget_s": BUDGET_S, "sections": {}}
    t_start = time.perf_counter()
    for name in only:
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"ok": False}
        try:
            entry["figures"] = RUNNERS[name](proof)
            entry["ok"] = True
        except Exception as e:  # one failing section must not lose the others' figures
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()[-3000:]
        entry["seconds"] = time.perf_counter() - t0
        report["sections"][name] = entry
        print(f"{name}: {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']:.1f} s",
              file=sys.stderr, flush=True)
        _write(args.out, report, t_start)     # after every section: a killed run keeps them
    report = _write(args.out, report, t_start)
    print(markdown(report))
    return 0 if all(s["ok"] for s in report["sections"].values()) else 1


def _write(out: Path, report: dict[str, Any], t_start: float) -> dict[str, Any]:
    report["seconds"] = time.perf_counter() - t_start
    report["within_budget"] = report["seconds"] <= BUDGET_S
    report["targets"] = targets(report)
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as f:
        json.dump(report, f, indent=1)
    os.replace(f.name, out / "gpu_proof.json")
    (out / "gpu_proof.md").write_text(markdown(report))
    return report


if __name__ == "__main__":
    raise SystemExit(main())
