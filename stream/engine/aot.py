"""The static step compiled ahead of time, by another process (CPU; docs/static_step.md).

Compiling inside the live process starves it: the compiler holds the GIL for most of a minute
(22 FPS over the first 45 s of the demo with a warm inductor cache, 10 FPS cold). So on the
CPU each step variant is built by a child process at the lowest CPU priority
(``python -m stream.engine.aot SPEC PACKAGE``): ``torch.export`` of the step, then AOTInductor
(``aoti_compile_and_package``) into a package in an on-disk cache. The live process only loads
a finished package (a shared library: ~0.1 s) and switches the variant over; until then the
eager step serves frames.

* **Tables are inputs.** The device tables (:class:`~stream.engine.ring.DeviceTables`) are
  passed to the package at every call and updated in place by it; their row count (streams)
  is a dynamic dimension, so adding streams needs no rebuild.
* **Cache key**: a hash of everything the compiled code depends on: the pickled model (weights,
  structure, thresholds), the variant (rows P, audio mode, CIM carry settings), the table shapes
  other than their rows, the sources of ``pcmanet`` and of the step, torch's version and
  the CPU's vector instruction set. A key never names a different graph; a changed input only
  costs a rebuild.
* **A build outlives the run that started it**, like a cache fill: a run that stops after a
  few seconds leaves it to finish at the lowest priority, and the next run loads the package at
  once. A lock file (with the builder's pid) keeps one builder per key on the machine.

Cache folder: ``$PCMANET_LIVE_CACHE/aot``, else ``$XDG_CACHE_HOME/pcmanet-live/aot``, else
``~/.cache/pcmanet-live/aot``. A build's log is ``KEY.log`` there.

**The cache folder is trusted code**: a package is a shared library this process loads, and a
build's input (``KEY.spec.PID``, written by the live process just before it starts the builder)
is a pickle of the model that the builder loads with ``weights_only=False``. So the folder must
belong to the user and be writable by nobody else (it is made with mode 0700); otherwise the
step is not compiled, and one line says how to fix the folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pcmanet.model import PCMANet
from stream.engine.parts import CarryConfig
from stream.engine.ring import DeviceTables
from stream.engine.static import StaticStep

logger = logging.getLogger(__name__)

CACHE_ENV = "PCMANET_LIVE_CACHE"
StepFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
# The code a compiled step comes from (the model, the step, its tables, the build).
_SOURCES = ("pcmanet", "stream/engine/static.py", "stream/engine/ring.py",
            "stream/engine/parts.py", "stream/engine/aot.py")


def cache_dir() -> Path:
    """Where packages, locks and build logs live (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "aot"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pcmanet-live" / "aot"


class TableView:
    """The :class:`DeviceTables` interface the step reads, over tensors passed in as inputs
    (what ``torch.export`` traces: the package then takes the tables at every call)."""

    def __init__(self, names: Sequence[str], tensors: Sequence[Tensor], stages: Sequence[int],
                 masks: int) -> None:
        self.__dict__.update(zip(names, tensors, strict=True))
        self.stages, self.masks = list(stages), masks

    def ring_kv(self, k: int) -> Tensor | None:
        return getattr(self, f"ring_kv_{k}") if k in self.stages else None  # type: ignore[no-any-return]

    def carry_masks(self) -> list[Tensor]:
        return [getattr(self, f"carry_mask_{j}") for j in range(self.masks)]


class TablesAsInputs(nn.Module):
    """``(x (P, 3, S, S), mel (P, 1, 96, 64), control (P, T + 4), tables) -> (logits, keep)``:
    :class:`StaticStep` (static, no host synchronisation) with the tables as an input tuple,
    in :func:`table_names` order."""

    def __init__(self, model: PCMANet, carry: CarryConfig, embed: bool, names: Sequence[str],
                 stages: Sequence[int], masks: int) -> None:
        super().__init__()
        self.model, self.carry, self.embed = model, carry, embed
        self.names, self.stages, self.masks = list(names), list(stages), masks

    def forward(self, x: Tensor, mel: Tensor, control: Tensor,
                tables: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        view = TableView(self.names, tables, self.stages, self.masks)
        step = StaticStep(self.model, view, self.carry, self.embed,  # type: ignore[arg-type]
                          static=True)
        return step(x, mel, control)  # type: ignore[no-any-return]


def table_names(tables: DeviceTables) -> list[str]:
    return [name for name, _ in tables.named_buffers()]


@dataclass(frozen=True)
class Variant:
    """One package: rows P and audio mode (``embed``), for this model, carry and tables."""

    P: int
    embed: bool


class Spec:
    """What a builder needs (pickled to a file for the child) and the cache key it gives.

    Args:
        model: PCMANet in eval mode (on the CPU).
        tables: the engine's device tables (their shapes other than rows, dtypes, layout).
        carry: CIM carry settings.
        options: inductor settings for the build (e.g. ``{"freezing": True}``).
    """

    def __init__(self, model: PCMANet, tables: DeviceTables, carry: CarryConfig,
                 options: dict[str, Any] | None = None) -> None:
        self.model, self.carry, self.options = model, carry, dict(options or {})
        self.names = table_names(tables)
        self.stages, self.masks, self.slots = list(tables.stages), tables.masks, tables.slots
        self.shapes = [(tuple(b.shape[1:]), str(b.dtype)) for _, b in tables.named_buffers()]
        digest = hashlib.sha256(model_digest(model).encode())
        for line in [repr(dataclasses.asdict(carry)), repr(self.names), repr(self.shapes),
                     repr(sorted(self.options.items())), *_environment()]:
            digest.update(line.encode())
        self._base = digest.hexdigest()

    def write(self, path: Path) -> None:
        """The builder's input: the pickled model and what shapes the tables."""
        torch.save({"model": self.model, "carry": dataclasses.asdict(self.carry),
                    "names": self.names, "stages": self.stages, "masks": self.masks,
                    "slots": self.slots, "shapes": self.shapes, "options": self.options}, path)

    def key(self, v: Variant) -> str:
        return hashlib.sha256(f"{self._base}:{v.P}:{int(v.embed)}".encode()).hexdigest()[:24]


def model_digest(model: nn.Module) -> str:
    """A hash of the model's weights, structure and plain attributes (thresholds, sizes): what
    a compiled graph of it bakes in. (``torch.save`` bytes are no key: they hold a random id.)"""
    digest = hashlib.sha256(repr(model).encode())
    for name, t in model.state_dict().items():
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    plain = (bool, int, float, str, type(None))
    for name, module in model.named_modules():
        attrs = sorted((k, v) for k, v in vars(module).items()
                       if isinstance(v, plain) or (isinstance(v, tuple)
                                                   and all(isinstance(e, plain) for e in v)))
        digest.update(f"{name}:{attrs!r}".encode())
    return digest.hexdigest()


def _environment() -> list[str]:
    """Everything outside the model that changes the compiled code: versions, the CPU's vector
    instruction set, our sources."""
    lines = [torch.__version__, sys.version, platform.machine(),
             torch.backends.cpu.get_cpu_capability()]
    root = Path(__file__).resolve().parents[2]
    for name in _SOURCES:
        top = root / name
        for path in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
            lines.append(f"{path.relative_to(root)}:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return lines


def load_package(path: Path) -> Callable[..., Any]:
    """A built package as a callable (a shared library loaded into this process)."""
    from torch._inductor.package.package import AOTICompiledModel

    # The loader torch's own ``aoti_load_package`` ends in, without its device-information
    # check (it builds C++ test programs: ~8 s on 2 cores, and the cache key already holds the
    # CPU's instruction set).
    loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    return AOTICompiledModel(loader)  # type: ignore[no-untyped-call]


def untrusted(folder: Path) -> str | None:
    """Why packages from ``folder`` must not be loaded (None: it is private to this user)."""
    for path in (folder, folder.parent):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            return (f"the compiled-step cache {path} is not private to this user (owner uid "
                    f"{st.st_uid}, mode {st.st_mode & 0o777:o}): its packages are code this "
                    f"process loads; run chmod 700 {path}, or set {CACHE_ENV} to a folder of "
                    "your own")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Builds:
    """The packages of one engine's step variants: found in the cache, being built by a child
    process, or failed. Call :meth:`poll` often (it never waits) and :meth:`wait` to block.

    Args:
        spec: model, tables and carry of the engine.
        folder: the cache folder (default :func:`cache_dir`).
    """

    def __init__(self, spec: Spec, folder: Path | None = None) -> None:
        self.spec, self.folder = spec, folder or cache_dir()
        self.queue: list[Variant] = []            # asked for, not yet handed to a builder
        self.proc: subprocess.Popen[bytes] | None = None
        self.building: list[Variant] = []         # what self.proc builds
        self.failed: dict[Variant, str] = {}      # variant -> why

    def package(self, v: Variant) -> Path:
        return self.folder / f"{self.spec.key(v)}.pt2"

    def ready(self, v: Variant) -> Path | None:
        path = self.package(v)
        return path if path.is_file() else None

    def request(self, variants: Sequence[Variant]) -> None:
        """Build these where no package exists (in the background; see :meth:`poll`)."""
        for v in variants:
            if v not in self.queue and v not in self.building and v not in self.failed \
                    and self.ready(v) is None:
                self.queue.append(v)
        self.poll()

    def poll(self) -> None:
        """Notice a finished builder (its failures), start the next one; never waits."""
        if self.proc is not None and self.proc.poll() is not None:
            rc, self.proc = self.proc.returncode, None
            for v in self.building:
                if self.ready(v) is None:
                    self.failed[v] = self._why(v, rc)
            self.building = []
        if self.proc is None:
            todo = [v for v in self.queue if self.ready(v) is None and not self._locked(v)]
            self.queue = [v for v in self.queue if v not in todo and self.ready(v) is None]
            if todo:
                self._start(todo)

    def pending(self, v: Variant) -> bool:
        """Asked for and neither built nor failed yet (also: built by another process)."""
        return self.ready(v) is None and v not in self.failed and (
            v in self.queue or v in self.building)

    def wait(self, variants: Sequence[Variant], poll_s: float = 0.2) -> None:
        """Block until each of these is built or failed (requests them first)."""
        self.request(variants)
        while any(self.pending(v) for v in variants):
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=poll_s)
            else:
                time.sleep(poll_s)   # another process builds it: wait for its package or lock
            self.poll()

    def _locked(self, v: Variant) -> bool:
        """Another live builder holds this key's lock (a stale lock is removed)."""
        lock = self.folder / f"{self.spec.key(v)}.lock"
        try:
            pid = int(lock.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return False
        if pid and _pid_alive(pid):
            return True
        lock.unlink(missing_ok=True)
        return False

    def _start(self, todo: list[Variant]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.spec.key(todo[0])
        spec_path = self.folder / f"{key}.spec.{os.getpid()}"
        self.spec.write(spec_path)
        args = [sys.executable, "-m", "stream.engine.aot", str(spec_path)]
        for v in todo:
            args += [f"{v.P}:{int(v.embed)}", str(self.package(v))]
        log = open(self.folder / f"{key}.log", "wb")   # noqa: SIM115 (the child's stdout)
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        # A new session: the build finishes even if this run stops (a cache fill).
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                     env=env, start_new_session=True,
                                     preexec_fn=lambda: os.nice(19))
        log.close()
        for v in todo:   # held from now on (the child takes them over, and removes them)
            (self.folder / f"{self.spec.key(v)}.lock").write_text(str(self.proc.pid))
        self.building = todo
        logger.info("building the compiled engine step (%d variant(s)) in process %d at the "
                    "lowest priority; log %s", len(todo), self.proc.pid, log.name)

    def _why(self, v: Variant, rc: int) -> str:
        log = self.folder / f"{self.spec.key(self.building[0])}.log"
        tail = ""
        with contextlib.suppress(OSError):
            lines = [ln for ln in log.read_text(errors="replace").splitlines()
                     if ln.strip() and "Warning" not in ln]
            tail = lines[-1] if lines else ""
        return f"the builder exited with {rc}: {tail} (log {log})"


def build(spec_path: Path, jobs: list[tuple[Variant, Path]]) -> int:
    """The child: export and AOT-compile each variant to its package (atomic rename)."""
    # Trusted: written by the live process into its private cache (module docstring).
    payload = torch.load(spec_path, weights_only=False)
    model: PCMANet = payload["model"].eval()
    carry = CarryConfig(**payload["carry"])
    names, stages, masks, slots = (payload[k] for k in ("names", "stages", "masks", "slots"))
    torch.set_num_threads(1)
    # Example tables for one stream; rows dynamic (ring: streams * slots + 1, per stream:
    # streams + 1).
    tables = tuple(torch.zeros((slots + 1 if n.startswith("ring_") else 2, *shape),
                               dtype=getattr(torch, dtype.split(".")[-1]))
                   for n, (shape, dtype) in zip(names, payload["shapes"], strict=True))
    ring, rows = torch.export.Dim("ring_rows", min=2), torch.export.Dim("stream_rows", min=2)
    dynamic = (None, None, None, tuple({0: ring} if n.startswith("ring_") else {0: rows}
                                       for n in names))
    S = int(tables[names.index("carry_image")].shape[-1])
    T = model.num_frames
    status = 0
    for v, out in jobs:
        t0 = time.perf_counter()
        x, mel = torch.zeros(v.P, 3, S, S), torch.zeros(v.P, 1, 96, 64)
        control = torch.tensor([[slots] * (T + 1) + [1, 1, 0]] * v.P, dtype=torch.int64)
        module = TablesAsInputs(model, carry, v.embed, names, stages, masks).eval()
        try:
            with torch.no_grad():
                program = torch.export.export(module, (x, mel, control, tables),
                                              dynamic_shapes=dynamic, strict=False)
                tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.pt2")
                with torch._inductor.config.patch(payload.get("options") or {}):
                    torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
            os.replace(tmp, out)
            print(f"built P={v.P} embed={v.embed} in {time.perf_counter() - t0:.1f} s: {out}",
                  flush=True)
        except Exception as e:    # the parent reads the last line of the log
            print(f"building P={v.P} embed={v.embed} failed: {type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''}", flush=True)
            status = 1
    return status


def main(argv: list[str]) -> int:
    """``python -m stream.engine.aot SPEC P:EMBED PACKAGE [P:EMBED PACKAGE ...]``."""
    usage = "usage: python -m stream.engine.aot SPEC P:EMBED PACKAGE [P:EMBED PACKAGE ...]"
    if len(argv) < 3 or len(argv) % 2 == 0:
        print(f"error: {usage} (the engine starts it; see docs/static_step.md)", file=sys.stderr)
        return 2
    spec_path, rest = Path(argv[0]), argv[1:]
    if not spec_path.is_file():
        print(f"error: build input {spec_path} not found", file=sys.stderr)
        return 2
    jobs = []
    for tag, out in zip(rest[::2], rest[1::2], strict=True):
        P, _, embed = tag.partition(":")
        if not P.isdigit() or int(P) < 1 or embed not in ("0", "1"):
            print(f"error: variant {tag!r}: expected P:EMBED, e.g. 1:1; {usage}",
                  file=sys.stderr)
            return 2
        jobs.append((Variant(int(P), embed == "1"), Path(out)))
    locks = [out.with_suffix(".lock") for _, out in jobs]
    for lock in locks:
        lock.write_text(str(os.getpid()))
    try:
        return build(spec_path, jobs)
    finally:
        for lock in locks:
            lock.unlink(missing_ok=True)
        spec_path.unlink(missing_ok=True)


if __name__ == "__main__":
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    raise SystemExit(main(sys.argv[1:]))
